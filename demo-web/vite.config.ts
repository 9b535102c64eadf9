import { defineConfig } from "vite";

// The page is served by the relay itself (`runwire demo`), so every URL is same-origin.
// In `vite dev`, /demo and /v1 are proxied to a relay on RUNWIRE_URL (default 127.0.0.1:3101).
const relay = process.env.RUNWIRE_URL ?? "http://127.0.0.1:3101";

export default defineConfig({
  build: { target: "es2022" },
  // The package fetches its .wasm with `new URL(…, import.meta.url)`; pre-bundling would move the
  // module away from the file (see the package README).
  optimizeDeps: { exclude: ["runwire"] },
  server: {
    proxy: {
      "/demo": relay,
      "/v1": { target: relay, ws: true },
    },
  },
});
