// What bench/sdk/throughput.mjs (in Chromium) and bench/sdk/compare.mjs (in Node) share: their
// command-line options and figures, and the in-memory pass, with the events it plays and a socket
// that stands in for the relay. The pass's functions are self-contained, so that throughput.mjs
// can also hand their source to the page.

/**
 * The positive integer after `--name` in `args` (removed from it with its value), or `fallback`.
 */
export function option(args, name, fallback) {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const n = Number(args[i + 1]);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} takes a positive integer`);
  args.splice(i, 2);
  return n;
}

/** The middle value (of an even count, the upper of the two middle ones). */
export const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
/** A figure rounded, with thousands separators. */
export const fmt = (n) => Math.round(n).toLocaleString("en-US");

/** A mix of typed events as a worker sends them: the run starts, nodes start, report, log, finish. */
export function eventAt(i, EVENTS) {
  if (i === 1) return { event: "run.started", data: { workflow: "bench", node_count: 50 } };
  if (i === EVENTS) return { event: "run.completed", data: { total_duration_ms: i, result: { events: i } } };
  const node_key = `n${Math.floor(i / 4) % 50}`;
  switch (i % 4) {
    case 0:
      return { event: "node.started", data: { node_key } };
    case 1:
      return { event: "node.progress", data: { node_key, progress: i % 100 } };
    case 2:
      return { event: "log", data: { level: "info", message: `event ${i}`, node_key } };
    default:
      return { event: "node.completed", data: { node_key, duration_ms: i, output_summary: { rows: i } } };
  }
}

/**
 * A socket that plays the relay from memory, installed as the global `WebSocket`: it answers
 * `auth` with `welcome` and `subscribe` with an empty run's `subscribed` (then calls
 * `MemorySocket.subscribed(run)`); the events are handed to `MemorySocket.current.onmessage` by
 * the caller. The last one opened is `MemorySocket.current`.
 */
export class MemorySocket {
  constructor() {
    this.readyState = 0;
    this.onopen = this.onmessage = this.onclose = null;
    MemorySocket.current = this;
    setTimeout(() => {
      this.readyState = 1;
      this.onopen?.();
    });
  }
  send(text) {
    const f = JSON.parse(text);
    if (f.type === "auth") {
      this.deliver({ type: "welcome", conn: "m", heartbeat_ms: 600000, expires_at: Math.floor(Date.now() / 1000) + 3600, protocol: 1 });
    } else if (f.type === "subscribe") {
      const empty = { seq: 0, status: "pending", progress: 0, nodes: [], log_count: 0, warning_count: 0, error_count: 0 };
      this.deliver({ type: "subscribed", run: f.run, seq: 0, state: empty, epoch: "e1" }, () => MemorySocket.subscribed(f.run));
    }
  }
  deliver(frame, then) {
    const data = JSON.stringify(frame);
    setTimeout(() => {
      this.onmessage?.({ data });
      then?.();
    });
  }
  close() {
    this.readyState = 3;
  }
}

/**
 * Follows every run with one client; resolves when all have ended ("completed") with the count,
 * the time from the first event to the last, and what went wrong. withState: false (no onState),
 * "event" or "frame" (its stateEvery).
 */
export function follow(client, runs, withState) {
  const errors = [];
  client.onError((e) => errors.push(e.code + ": " + e.message));
  let count = 0, first = 0, lastAt = 0, ended = 0, outOfOrder = 0, states = 0, stale = 0;
  return new Promise((done, fail) => {
    const timer = setTimeout(() => { client.close(); fail(new Error("timed out after " + count + " events")); }, 120000);
    for (const run of runs) {
      let last = 0, lastState = 0;
      client.subscribe(run, {
        since: 0,
        stateEvery: withState || "event",
        onEvent: (ev) => {
          lastAt = performance.now();
          if (count++ === 0) first = lastAt;
          if (ev.seq !== last + 1) outOfOrder++;
          last = ev.seq;
        },
        onState: withState ? (s) => { if (s.seq > 0) states++; lastState = s.seq; } : undefined,
        onEnd: (reason) => {
          if (reason !== "completed") errors.push(run + " ended: " + reason);
          if (withState && lastState !== last) stale++;
          if (++ended === runs.length) {
            clearTimeout(timer);
            client.close();
            done({ count, ms: lastAt - first, outOfOrder, states, stale, errors });
          }
        },
      });
    }
  });
}

/**
 * The in-memory pass: a client of class `Client` (the package's or the glue's `RunwireClient`)
 * talks to a MemorySocket, which hands it `events` events of each run, interleaved, as fast as it
 * takes them; resolves as `follow` does.
 */
export async function inMemory(Client, { runs, events, withState }) {
  const frames = runs.map((run) => Array.from({ length: events }, (_, k) => JSON.stringify({
    type: "event", run, seq: k + 1, ts: "2026-11-22T08:00:00.000Z", ...eventAt(k + 1, events),
  })));
  const real = globalThis.WebSocket;
  globalThis.WebSocket = MemorySocket;
  try {
    let subscribed = 0;
    const ready = new Promise((ok) => { MemorySocket.subscribed = () => { if (++subscribed === runs.length) ok(); }; });
    const client = new Client({ url: "ws://memory.invalid/v1/ws", token: "t", transport: "websocket" });
    const result = follow(client, runs, withState);
    await ready;
    const socket = MemorySocket.current;
    for (let k = 0; k < events; k++) {
      for (const list of frames) socket.onmessage?.({ data: list[k] });
    }
    return await result;
  } finally {
    globalThis.WebSocket = real;
  }
}
