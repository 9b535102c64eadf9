// The page the bundler tests share (webpack, Vite 5 and 6 build and dev server, the import-map
// page): the plain client, no framework. It follows `?run=` from the relay at `?relay=` (default:
// the page's own origin) and shows the run as tests/e2e's apps do: #connection, #status, #ended,
// #error and one `#events li` per event, in markup of its own, so that each app's index.html only
// loads this script its own way.
import { RunwireClient } from "runwire";

document.body.insertAdjacentHTML(
  "beforeend",
  `<section id="run">
    <p id="connection"></p>
    <p id="status">none</p>
    <p id="ended"></p>
    <p id="error"></p>
    <ol id="events"></ol>
  </section>`,
);

const params = new URLSearchParams(location.search);
const relay = new URL(params.get("relay") ?? location.origin);
const run = params.get("run") ?? "";
const $ = (id) => document.getElementById(id);

const client = new RunwireClient({
  url: `${relay.protocol === "https:" ? "wss" : "ws"}://${relay.host}/v1/ws`,
  token: () => fetch(new URL(`/demo/token?run=${encodeURIComponent(run)}`, relay)).then((r) => r.text()),
});
client.onStateChange(({ state }) => ($("connection").textContent = state));
client.onError((e) => ($("error").textContent = e.code));

$("run").dataset.run = run;
$("connection").textContent = client.state;
const show = (ev) => {
  const li = document.createElement("li");
  li.dataset.seq = String(ev.seq);
  li.dataset.run = ev.run;
  li.textContent = ev.event;
  $("events").append(li);
};
client.subscribe(run, {
  since: 0,
  onEvent: show,
  onOtherEvent: show,
  onState: (state) => ($("status").textContent = state.status),
  onEnd: (reason) => ($("ended").textContent = reason),
});
