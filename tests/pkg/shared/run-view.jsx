// What the server-rendered React apps (React 18, Next.js) render: `runId` followed with
// `client`, and the client's connection state above it.
import { useConnectionState, useRun } from "runwire/react";
import { RunSection } from "./run-section.jsx";

export function RunView({ client, runId }) {
  const run = useRun(client, runId);
  const header = useConnectionState(client);
  return (
    <main>
      <p id="header-connection">{header}</p>
      <RunSection runId={runId} run={run} />
    </main>
  );
}
