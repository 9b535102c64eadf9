import { defineConfig } from "vite";

// No plugin: esbuild compiles the TSX (tsconfig "jsx": "react-jsx").
export default defineConfig({});
