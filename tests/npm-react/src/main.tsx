import { StrictMode, useState } from "react";
import { createRoot } from "react-dom/client";
import { RunwireClient } from "runwire";
import { useConnectionState, useRun } from "runwire/react";

const client = new RunwireClient({
  url: `ws://${location.host}/v1/ws`,
  token: () => fetch("/demo/token").then((r) => r.text()),
});

function Run({ runId }: { runId: string }) {
  const { state, events, connection, error, ended } = useRun(client, runId);
  return (
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
  );
}

function Header() {
  return <p id="header-connection">{useConnectionState(client)}</p>;
}

function App() {
  const [runId, setRunId] = useState(() => new URLSearchParams(location.search).get("run") ?? "");
  const [draft, setDraft] = useState("");
  return (
    <main>
      <Header />
      <input id="run-input" value={draft} onChange={(e) => setDraft(e.target.value)} />
      <button id="follow" onClick={() => setRunId(draft)}>follow</button>
      <button id="none" onClick={() => setRunId("")}>none</button>
      {runId ? <Run key="run" runId={runId} /> : <p id="idle">idle</p>}
    </main>
  );
}

createRoot(document.getElementById("root")!).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
