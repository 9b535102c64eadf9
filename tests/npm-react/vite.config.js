import { defineConfig } from "vite";

// No plugin: esbuild compiles the TSX (tsconfig "jsx": "react-jsx"), and the same way the run's
// markup shared with the packaging tests' React apps (../pkg/shared/run-section.jsx), which lies
// outside this app: its `react/jsx-runtime` is this app's React.
export default defineConfig({
  esbuild: { jsx: "automatic" },
  resolve: { dedupe: ["react"] },
});
