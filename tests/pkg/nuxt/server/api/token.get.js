// The app's token endpoint: a real one checks that the user may watch the run and mints a
// token for it; here the demo relay mints it (for every run when none is asked for).
export default defineEventHandler(async (event) => {
  const run = getQuery(event).run;
  const relay = useRuntimeConfig(event).public.relayUrl;
  return $fetch(`${relay}/demo/token`, { query: run ? { run: String(run) } : {}, responseType: "text" });
});
