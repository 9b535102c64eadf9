// A server component: it reads the relay's address at request time and renders the client
// component, which Next.js renders on the server too, then hydrates in the browser.
import { RunView } from "./run-view";

export default async function Page({ searchParams }) {
  const { run = "" } = await searchParams;
  const relay = new URL(process.env.RELAY_URL ?? "http://127.0.0.1:8080");
  return <RunView url={`ws://${relay.host}/v1/ws`} runId={run} />;
}
