"use client";

import { useState } from "react";
import { RunwireClient } from "runwire";
import { RunView as SharedRunView } from "../../shared/run-view.jsx";

export function RunView({ url, runId }) {
  // Created once per mount, on the server too: creating a client neither loads the .wasm nor
  // connects; useRun subscribes once the component is mounted in the browser.
  const [client] = useState(
    () => new RunwireClient({ url, token: () => fetch(`/api/token?run=${encodeURIComponent(runId)}`).then((r) => r.text()) }),
  );
  return <SharedRunView client={client} runId={runId} />;
}
