"use client";

import { useState } from "react";
import { RunwireClient } from "runwire";
import { useConnectionState, useRun } from "runwire/react";

export function RunView({ url, runId }) {
  // Created once per mount, on the server too: creating a client neither loads the .wasm nor
  // connects; useRun subscribes once the component is mounted in the browser.
  const [client] = useState(
    () => new RunwireClient({ url, token: () => fetch(`/api/token?run=${encodeURIComponent(runId)}`).then((r) => r.text()) }),
  );
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
