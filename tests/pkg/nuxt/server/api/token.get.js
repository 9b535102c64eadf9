// The app's token endpoint: a real one checks that the user may watch the run and mints a
// token for it; here the demo relay mints it.
export default defineEventHandler(async (event) => {
  const run = String(getQuery(event).run ?? "");
  const relay = useRuntimeConfig(event).public.relayUrl;
  return $fetch(`${relay}/demo/token`, { query: { run }, responseType: "text" });
});
