// The runwire demo page: follows one simulated run live through the public API of `runwire`.

import { RunwireClient, isEvent, type AnyRunEvent, type ConnectionState, type RunState, type Subscription } from "runwire";
import { GraphView, formatMs, parseGraph } from "./graph";
import "./style.css";

interface DemoRun {
  run: string;
  started_at: string;
}

const $ = <T extends Element = HTMLElement>(id: string) => document.querySelector<T>(`[data-testid="${id}"]`)!;
const relayUrl = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/ws`;

// One token covers every demo run; the client asks again on every reconnect and before expiry.
async function fetchToken(): Promise<string> {
  const res = await fetch("/demo/token");
  if (!res.ok) throw new Error(`/demo/token answered ${res.status}`);
  return res.text();
}

const client = newClient();
let subscription: Subscription | undefined;
let current: string | undefined;
let graph: GraphView | undefined;
let state: RunState | undefined;
let lastSeq = 0;
let eventCount = 0;
let cut = false;
const statuses = new Map<string, RunState["status"]>();
let runs: DemoRun[] = [];

function newClient(): RunwireClient {
  const c = new RunwireClient({ url: relayUrl, token: fetchToken, minReconnectDelayMs: 250, maxReconnectDelayMs: 4000 });
  c.onStateChange((change) => showConnection(change.state));
  c.onError((e) => console.warn("runwire:", e.code, e.message));
  return c;
}

// ---- connection indicator ------------------------------------------------------------------

function showConnection(s: ConnectionState): void {
  const label =
    s === "open" ? "Connected" : s === "closed" ? "Disconnected" : s === "connecting" ? "Connecting…" : "Reconnecting…";
  const conn = $("connection");
  conn.dataset.state = s;
  conn.querySelector("span")!.textContent = label;
}

// ---- following a run -----------------------------------------------------------------------

function follow(run: string, since = 0): void {
  subscription?.unsubscribe();
  subscription?.free();
  if (run !== current) {
    current = run;
    resetRunView(run);
    history.replaceState(null, "", `#run=${encodeURIComponent(run)}`);
  }
  subscription = client.subscribe(run, {
    since,
    onEvent: onEvent,
    onOtherEvent: onEvent,
    onState: (s) => {
      state = s;
      const changed = statuses.get(run) !== s.status;
      statuses.set(run, s.status);
      render();
      if (changed) renderRuns();
    },
  });
  renderRuns();
}

function resetRunView(run: string): void {
  state = undefined;
  graph = undefined;
  lastSeq = 0;
  eventCount = 0;
  $("graph").replaceChildren();
  $("log").replaceChildren();
  $("run-id").textContent = run;
  render();
}

function onEvent(ev: AnyRunEvent): void {
  lastSeq = ev.seq;
  eventCount++;
  if (isEvent(ev, "run.started")) {
    const nodes = parseGraph(ev.data.graph);
    if (nodes) graph = new GraphView($<SVGSVGElement>("graph"), nodes);
  }
  appendLog(ev);
}

// ---- the log pane --------------------------------------------------------------------------

function describe(ev: AnyRunEvent): { level: string; node?: string; text: string } {
  if (isEvent(ev, "log")) return { level: ev.data.level, node: ev.data.node_key, text: ev.data.message };
  if (isEvent(ev, "run.started")) return { level: "run", text: `Run started: ${ev.data.workflow ?? "workflow"}` };
  if (isEvent(ev, "run.progress")) return { level: "run", text: `Progress ${Math.round(ev.data.progress)}%` };
  if (isEvent(ev, "run.completed"))
    return { level: "ok", text: `Run completed in ${formatMs(ev.data.total_duration_ms ?? 0)}` };
  if (isEvent(ev, "run.failed")) return { level: "error", node: ev.data.node_key, text: `Run failed: ${ev.data.error}` };
  if (isEvent(ev, "run.cancelled")) return { level: "warning", text: `Run cancelled${ev.data.reason ? `: ${ev.data.reason}` : ""}` };
  if (isEvent(ev, "node.started")) return { level: "node", node: ev.data.node_key, text: "Node started" };
  if (isEvent(ev, "node.progress"))
    return { level: "node", node: ev.data.node_key, text: `Node at ${Math.round(ev.data.progress)}%` };
  if (isEvent(ev, "node.completed"))
    return { level: "ok", node: ev.data.node_key, text: `Node completed in ${formatMs(ev.data.duration_ms ?? 0)}` };
  if (isEvent(ev, "node.failed")) return { level: "error", node: ev.data.node_key, text: `Node failed: ${ev.data.error}` };
  if (isEvent(ev, "node.skipped"))
    return { level: "node", node: ev.data.node_key, text: `Node skipped${ev.data.reason ? `: ${ev.data.reason}` : ""}` };
  return { level: "node", text: `${ev.event} ${JSON.stringify(ev.data)}` };
}

function appendLog(ev: AnyRunEvent): void {
  const log = $("log");
  const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 24;
  const { level, node, text } = describe(ev);
  const li = document.createElement("li");
  li.dataset.seq = String(ev.seq);
  li.dataset.event = ev.event;
  li.className = `lvl-${level}${ev.event === "log" ? "" : " lifecycle"}`;
  const time = document.createElement("time");
  time.textContent = ev.ts.slice(11, 23);
  const seq = document.createElement("span");
  seq.className = "seq";
  seq.textContent = `#${ev.seq}`;
  const badge = document.createElement("span");
  badge.className = "lvl";
  badge.textContent = ev.event === "log" ? level : ev.event;
  const msg = document.createElement("span");
  msg.className = "msg";
  if (node) {
    const n = document.createElement("b");
    n.textContent = node;
    msg.append(n, " ");
  }
  msg.append(text);
  li.append(time, seq, badge, msg);
  log.append(li);
  if (stick) log.scrollTop = log.scrollHeight;
}

// ---- rendering the run ---------------------------------------------------------------------

function render(): void {
  const s = state;
  const status = s?.status ?? "pending";
  const badge = $("run-status");
  badge.dataset.status = status;
  badge.textContent = status;
  $("workflow").textContent = s?.workflow ?? (current ? "Waiting for the first event…" : "Waiting for a run…");
  const progress = s ? (status === "completed" ? 100 : s.progress) : 0;
  $("progress").style.width = `${progress}%`;
  $("progress").dataset.status = status;
  $("progress-text").textContent = `${Math.round(progress)}%`;
  const now = Date.now();
  const started = s?.started_at ? Date.parse(s.started_at) : undefined;
  $("duration").textContent =
    s?.duration_ms !== undefined ? formatMs(s.duration_ms) : started !== undefined ? formatMs(now - started) : "—";
  const done = s?.nodes.filter((n) => n.status === "completed" || n.status === "skipped").length ?? 0;
  $("node-count").textContent = s?.node_count ? `${done} / ${s.node_count}` : "—";
  $("event-count").textContent = String(eventCount);
  $("warnings").textContent = String(s?.warning_count ?? 0);
  $("errors").textContent = String(s?.error_count ?? 0);
  const err = $("run-error");
  err.hidden = !s?.error;
  err.textContent = s?.error ?? "";
  graph?.update(s?.nodes ?? [], now);
}

// ---- recent runs ---------------------------------------------------------------------------

async function refreshRuns(): Promise<void> {
  try {
    const res = await fetch("/demo/runs");
    if (!res.ok) return;
    runs = (await res.json()) as DemoRun[];
  } catch {
    return;
  }
  await refreshStatuses();
  if (!current && runs.length) {
    const wanted = new URLSearchParams(location.hash.slice(1)).get("run");
    follow(runs.find((r) => r.run === wanted)?.run ?? runs[0].run);
  }
  renderRuns();
}

// The run followed gets its status from its live state; the others from the relay's run API.
let listToken: Promise<string> | undefined;
async function refreshStatuses(): Promise<void> {
  listToken ??= fetchToken();
  const token = await listToken.catch(() => undefined);
  if (!token) {
    listToken = undefined;
    return;
  }
  await Promise.all(
    runs
      .filter((r) => r.run !== current && statuses.get(r.run) !== "completed" && statuses.get(r.run) !== "failed")
      .map(async (r) => {
        const res = await fetch(`/v1/runs/${encodeURIComponent(r.run)}`, { headers: { authorization: `Bearer ${token}` } });
        if (res.status === 401) listToken = undefined;
        if (res.ok) statuses.set(r.run, ((await res.json()) as { state: RunState }).state.status);
      })
      .map((p) => p.catch(() => {})),
  );
}

function renderRuns(): void {
  const ul = $("runs");
  ul.replaceChildren(
    ...runs.map((r) => {
      const li = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.run = r.run;
      button.classList.toggle("selected", r.run === current);
      const status = statuses.get(r.run) ?? "pending";
      const dot = document.createElement("span");
      dot.className = "dot";
      dot.dataset.status = status;
      const id = document.createElement("span");
      id.className = "id";
      id.textContent = r.run;
      const when = document.createElement("span");
      when.className = "when";
      when.textContent = `${status} · ${new Date(r.started_at).toLocaleTimeString()}`;
      button.append(dot, id, when);
      button.addEventListener("click", () => follow(r.run));
      li.append(button);
      return li;
    }),
  );
}

// ---- buttons -------------------------------------------------------------------------------

let toastTimer: ReturnType<typeof setTimeout> | undefined;
function toast(text: string): void {
  const t = $("toast");
  t.textContent = text;
  t.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (t.hidden = true), 3500);
}

$("start").addEventListener("click", async () => {
  const res = await fetch("/demo/runs", { method: "POST" });
  if (res.status === 429) return toast("8 runs are already active — wait for one to finish.");
  if (!res.ok) return toast(`Could not start a run (${res.status}).`);
  const run = (await res.json()) as DemoRun;
  runs = [run, ...runs.filter((r) => r.run !== run.run)];
  follow(run.run);
});

// Cuts the connection: the client drops its socket and connects again at once, then resumes the
// run after the last event it delivered, so the log catches up without repeating anything.
$<HTMLButtonElement>("cut").addEventListener("click", () => {
  if (cut || !current) return;
  cut = true;
  $<HTMLButtonElement>("cut").disabled = true;
  const from = lastSeq;
  client.onStateChange(function resumed(change) {
    if (change.state !== "open") return;
    client.offStateChange(resumed);
    cut = false;
    $<HTMLButtonElement>("cut").disabled = false;
    toast(`Reconnected — resumed after event #${from}.`);
  });
  client.reconnect();
});

$<HTMLInputElement>("show-lifecycle").addEventListener("change", (e) => {
  $("log").classList.toggle("logs-only", !(e.target as HTMLInputElement).checked);
});

// ---- start ---------------------------------------------------------------------------------

showConnection(client.state);
void refreshRuns();
setInterval(() => void refreshRuns(), 2500);
setInterval(() => state?.status === "running" && render(), 250);
