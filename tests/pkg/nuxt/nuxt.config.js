// The relay's address is runtime config: `NUXT_PUBLIC_RELAY_URL` sets it when the server starts.
export default defineNuxtConfig({
  compatibilityDate: "2025-07-15",
  devtools: { enabled: false },
  telemetry: false,
  runtimeConfig: { public: { relayUrl: "http://127.0.0.1:8080" } },
});
