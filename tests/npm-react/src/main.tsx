import { StrictMode, useState } from "react";
import { createRoot } from "react-dom/client";
import { RunwireClient } from "runwire";
import { useConnectionState, useRun } from "runwire/react";
import { RunSection } from "../../pkg/shared/run-section.jsx";

const client = new RunwireClient({
  url: `ws://${location.host}/v1/ws`,
  token: () => fetch("/demo/token").then((r) => r.text()),
});

function Run({ runId }: { runId: string }) {
  return <RunSection runId={runId} run={useRun(client, runId)} />;
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
