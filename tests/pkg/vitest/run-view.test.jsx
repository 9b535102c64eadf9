// A component using useRun, imported and rendered in jsdom as an app's unit tests do: with no
// relay to reach, it renders its initial values, keeps trying in the background, and unmounts
// cleanly.
import { act } from "react";
import { createRoot } from "react-dom/client";
import { renderToString } from "react-dom/server";
import { afterEach, expect, test, vi } from "vitest";
import { RunwireClient } from "runwire";
import { RunView } from "./run-view.jsx";

globalThis.IS_REACT_ACT_ENVIRONMENT = true;

// Nothing listens on port 1 of the loopback address: every connection attempt is refused.
const options = { url: "ws://127.0.0.1:1/v1/ws", token: "not-a-token", transport: "websocket" };
const clients = [];
afterEach(() => clients.splice(0).forEach((c) => c.close()));

function client() {
  const c = new RunwireClient(options);
  clients.push(c);
  return c;
}

test("server rendering shows the initial values", () => {
  const html = renderToString(<RunView client={client()} runId="run-1" />);
  expect(html).toContain('<p id="status">none</p>');
  expect(html).toContain('<ol id="events"></ol>');
});

test("mounting without a relay does not crash, and unmounting ends the subscription", async () => {
  const errors = vi.spyOn(console, "error");
  const c = client();
  const root = createRoot(document.body.appendChild(document.createElement("div")));
  await act(async () => root.render(<RunView client={c} runId="run-1" />));
  expect(document.querySelector("#status").textContent).toBe("none");
  expect(document.querySelectorAll("#events li")).toHaveLength(0);
  // The client loads its module and tries the relay; refused, it backs off and tries again.
  await act(() =>
    vi.waitFor(() => expect(document.querySelector("#connection").textContent).toBe("reconnecting"), { timeout: 10_000 }),
  );
  await act(async () => root.unmount());
  expect(errors).not.toHaveBeenCalled();
});
