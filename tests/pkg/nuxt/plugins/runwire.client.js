// One client for every page, created in the browser only: `useNuxtApp().$runwire` is undefined
// during server rendering, which useRun and useConnectionState accept.
import { RunwireClient } from "runwire";

export default defineNuxtPlugin(() => {
  const relay = new URL(useRuntimeConfig().public.relayUrl);
  const client = new RunwireClient({
    url: `ws://${relay.host}/v1/ws`,
    // A token for every run: this client follows whichever run a page asks for.
    token: () => $fetch("/api/token", { responseType: "text" }),
  });
  return { provide: { runwire: client } };
});
