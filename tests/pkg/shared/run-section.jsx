// The run as the React apps show it (React 18 server-rendered and hydrated, Next.js, and
// tests/npm-react): #connection, #status, #ended, #error and one `#events li` per event, the
// markup the tests read, from what `useRun` returns. It imports nothing, so that tests/npm-react
// (another npm project) can use it with its own React.
export function RunSection({ runId, run: { state, events, connection, error, ended } }) {
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
