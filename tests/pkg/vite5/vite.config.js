import { defineConfig } from "vite";
import { fileURLToPath } from "node:url";

// The Vite 6 app (../vite: its index.html and script), built by Vite 5 into this folder's dist/.
export default defineConfig({
  root: fileURLToPath(new URL("../vite", import.meta.url)),
  build: { outDir: fileURLToPath(new URL("dist", import.meta.url)), emptyOutDir: true },
});
