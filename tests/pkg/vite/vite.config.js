import { defineConfig } from "vite";

// The dev server pre-bundles dependencies into node_modules/.vite/deps, where the `.wasm` that
// runwire finds next to its JS (`new URL(…, import.meta.url)`) is not: runwire is served as it is.
// `vite build` needs none of this.
export default defineConfig({
  optimizeDeps: { exclude: ["runwire"] },
});
