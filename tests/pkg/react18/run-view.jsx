import { useState } from "react";
import { RunwireClient } from "runwire";
import { useConnectionState, useRun } from "runwire/react";

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
  const { state, events, connection, error, ended } = useRun(client, runId);
  const header = useConnectionState(client);
  return (
    <main>
      <p id="header-connection">{header}</p>
      <section id="run" data-run={runId}>
        <p id="connection">{connection}</p>
        <p id="status">{state?.status ?? "none"}</p>
        <p id="ended">{ended ?? ""}</p>
        <p id="error">{error?.code ?? ""}</p>
        <ol id="events">
          {events.map((ev) => (
            <li key={ev.seq} data-seq={ev.seq} data-run={ev.run}>
              {ev.event}
            </li>
          ))}
        </ol>
      </section>
    </main>
  );
}
