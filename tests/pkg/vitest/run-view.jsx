import { useRun } from "runwire/react";

export function RunView({ client, runId }) {
  const { state, events, connection, error } = useRun(client, runId);
  return (
    <section>
      <p id="connection">{connection}</p>
      <p id="status">{state?.status ?? "none"}</p>
      <p id="error">{error?.code ?? ""}</p>
      <ol id="events">
        {events.map((ev) => (
          <li key={ev.seq}>{ev.event}</li>
        ))}
      </ol>
    </section>
  );
}
