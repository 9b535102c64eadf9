import { useState } from "react";
import { RunwireClient } from "runwire";
import { RunView as SharedRunView } from "../shared/run-view.jsx";

// Rendered on the server (server.jsx) and hydrated in the browser (client.jsx) with the same
// props. The client is created on the server too: that neither loads the .wasm nor connects.
export function RunView({ relay, runId }) {
  const [client] = useState(() => {
    const url = new URL(relay);
    return new RunwireClient({
      url: `ws://${url.host}/v1/ws`,
      token: () => fetch(new URL(`/demo/token?run=${encodeURIComponent(runId)}`, url)).then((r) => r.text()),
    });
  });
  return <SharedRunView client={client} runId={runId} />;
}
