// The compatibility layers end to end, from Node >= 22, against the relay binary with a Redis of
// its own: workers publish exactly as the replaced systems' workers do (Redis PUBLISH over a raw
// RESP socket, HTTP POST bodies in their shapes), tokens are minted as their token routes mint
// them, and each run is watched at the same time by a raw client behaving as that system's
// browser code does and through the packed `runwire` package, which must see typed events and a
// folded state in which only the workflow's own message ends the run.

import { test, before, after, afterEach } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { connect, createServer } from "node:net";
import { spawnRunwire, waitFor } from "../e2e/lib.mjs";
import { RunwireClient, ready } from "runwire";

const REDIS_SERVER = process.env.REDIS_SERVER ?? "redis-server";
const SECRET = "compat-test-secret-of-at-least-32-bytes!";
/** The Node relay's secret, shorter than 32 bytes as it was: it verifies only its `v:1` tokens. */
const LEGACY_SECRET = "node-relay-secret";
const PATIENCE = 10_000;

const b64url = (data) => Buffer.from(data).toString("base64url");
const now = () => Math.floor(Date.now() / 1000);

/** An HS256 JWT as a backend signs it ([tokens.md](../../docs/tokens.md)). */
function jwt(claims) {
  const iat = now();
  const head = b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }));
  const body = b64url(JSON.stringify({ iat, exp: iat + 300, ...claims }));
  const sig = createHmac("sha256", SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

/** The Node relay's token route: base64url(JSON payload) + "." + base64url(HMAC-SHA256(payloadSegment, secret)). */
function legacyToken(runId, userId, secret = LEGACY_SECRET) {
  const iat = now();
  const payload = b64url(JSON.stringify({ v: 1, runId, userId, iat, exp: iat + 300 }));
  return `${payload}.${createHmac("sha256", secret).update(payload).digest("base64url")}`;
}

async function freePort() {
  const server = createServer();
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  const { port } = server.address();
  await new Promise((ok) => server.close(ok));
  return port;
}

/** A raw RESP client on a `net` socket: one command at a time, as a worker's Redis client sends it. */
async function respClient(port) {
  const socket = connect(port, "127.0.0.1");
  await new Promise((ok, fail) => socket.once("connect", ok).once("error", fail));
  let buffer = "";
  let waiting = null;
  socket.setEncoding("utf8");
  socket.on("data", (d) => {
    buffer += d;
    const end = buffer.indexOf("\r\n");
    if (end >= 0 && waiting) {
      const line = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const w = waiting;
      waiting = null;
      w(line);
    }
  });
  return {
    /** Sends one command as a RESP array of bulk strings; resolves with the one-line reply (`:1`, `+PONG`). */
    command(...args) {
      const frame = `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join("")}`;
      return new Promise((ok) => {
        waiting = ok;
        socket.write(frame);
      });
    },
    close: () => socket.destroy(),
  };
}

/** `redis-server` of our own on a free loopback port, nothing persisted. */
async function startRedis() {
  const port = await freePort();
  const child = spawn(REDIS_SERVER, ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  const spawned = await new Promise((ok) => {
    child.once("spawn", () => ok(null));
    child.once("error", (e) => ok(e));
  });
  if (spawned) throw new Error(`${REDIS_SERVER} could not be started (scripts/install-deps.sh test): ${spawned.message}`);
  let log = "";
  child.stdout.on("data", (d) => (log = (log + d).slice(-4000)));
  const deadline = Date.now() + PATIENCE;
  for (;;) {
    try {
      const c = await respClient(port);
      const pong = await c.command("PING");
      c.close();
      if (pong === "+PONG") break;
    } catch {
      // not listening yet
    }
    if (child.exitCode !== null || Date.now() > deadline) throw new Error(`redis-server did not start on ${port}\n${log}`);
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    url: `redis://127.0.0.1:${port}`,
    port,
    async stop() {
      if (child.exitCode !== null) return;
      const exited = new Promise((ok) => child.once("exit", ok));
      child.kill("SIGTERM");
      await exited;
    },
  };
}

/** `runwire serve` on 127.0.0.1:0 with the given layers and env; resolves once it is ready. */
async function startServe(args, env = {}) {
  const relay = await spawnRunwire(["serve", "--addr", "127.0.0.1:0", "--secret", SECRET, ...args], {
    PATH: process.env.PATH,
    RUST_LOG: process.env.RUST_LOG ?? "warn",
    ...env,
  });
  // Redis ingest runs once /ready answers 200.
  await until(async () => (await fetch(`${relay.url}/ready`)).status === 200, "the relay's ingest").catch((e) => {
    e.message += `\n${relay.output()}`;
    throw e;
  });
  return { ...relay, ws: relay.url.replace(/^http/, "ws") };
}

/** Resolves when `predicate()` holds (checked every 10 ms); fails with `what` after PATIENCE. */
const until = (predicate, what) => waitFor(predicate, what, { ms: PATIENCE, every: 10 });

/**
 * A test against a relay of its own with the compatibility `layers` and `env`, on the emptied
 * Redis; the relay is stopped after it, passed or failed.
 */
function relayTest(name, layers, env, body) {
  test(name, { timeout: 30_000 }, async () => {
    await flushRedis();
    const relay = await startServe([...layers.flatMap((l) => ["--compat", l]), "--redis", redis.url], env);
    try {
      await body(relay);
    } finally {
      await relay.stop();
    }
  });
}

/** A browser's raw WebSocket: every message parsed, and the close. */
function rawSocket(url) {
  const ws = new WebSocket(url);
  const seen = { frames: [], close: null, open: false };
  ws.addEventListener("open", () => (seen.open = true));
  ws.addEventListener("message", (e) => seen.frames.push(JSON.parse(e.data)));
  ws.addEventListener("close", (e) => (seen.close = { code: e.code, reason: e.reason }));
  opened.add(() => ws.close());
  return { ws, seen, send: (v) => ws.send(JSON.stringify(v)) };
}

/** What an EventSource does, with fetch streaming: `{id, event, data}` per message until the stream ends. */
async function eventSource(url) {
  const res = await fetch(url, { headers: { accept: "text/event-stream" } });
  const seen = { status: res.status, type: res.headers.get("content-type"), messages: [], ended: false };
  if (!res.ok) return seen;
  seen.done = (async () => {
    const decoder = new TextDecoder();
    let text = "";
    for await (const chunk of res.body) {
      text += decoder.decode(chunk, { stream: true });
      let cut;
      while ((cut = text.indexOf("\n\n")) >= 0) {
        const block = text.slice(0, cut);
        text = text.slice(cut + 2);
        const m = { data: [] };
        for (const line of block.split("\n")) {
          if (line.startsWith(":")) continue; // heartbeat comment
          const i = line.indexOf(":");
          const [field, value] = i < 0 ? [line, ""] : [line.slice(0, i), line.slice(i + 1).replace(/^ /, "")];
          if (field === "data") m.data.push(value);
          else if (field === "id" || field === "event") m[field] = value;
        }
        if (m.data.length) seen.messages.push({ id: m.id, event: m.event ?? "message", data: JSON.parse(m.data.join("\n")) });
      }
    }
    seen.ended = true;
  })();
  seen.done.catch(() => {}); // awaited by the test; a relay stopped early must not be an unhandled rejection
  return seen;
}

/**
 * The same run through the SDK: typed events, other events, the folded state after each event,
 * and the end. `subscribed` resolves once the relay has confirmed the subscription.
 */
function sdkWatch(relay, run) {
  const logs = [];
  const client = new RunwireClient({
    url: `${relay.ws}/v1/ws`,
    token: () => jwt({ sub: "user-7", run, scope: "subscribe" }),
    transport: "websocket",
    debug: (message, detail) => logs.push(`${message} ${typeof detail === "string" ? detail : JSON.stringify(detail)}`),
  });
  opened.add(() => client.close());
  const errors = [];
  client.onError((e) => errors.push(e));
  const w = { client, errors, typed: [], other: [], states: [], state: null, ended: null };
  client.subscribe(run, {
    since: 0,
    onEvent: (ev) => w.typed.push(ev),
    onOtherEvent: (ev) => w.other.push(ev),
    onState: (s) => {
      w.states.push(s);
      w.state = s;
    },
    onEnd: (reason) => (w.ended = reason),
  });
  w.subscribed = until(() => logs.some((l) => l.includes('"type":"subscribed"')), `the SDK's subscription to ${run}`);
  w.names = () => w.typed.map((e) => e.event);
  /** Closes the client; it must have reported no error. */
  w.close = () => {
    client.close();
    assert.deepEqual(errors, []);
  };
  w.nodes = () => Object.fromEntries((w.state?.nodes ?? []).map((n) => [n.key, n.status]));
  return w;
}

/** Fails at once when the subscription has ended before the workflow's own terminal message was sent. */
function notEnded(w) {
  assert.equal(w.ended, null, `the run ended before its workflow message (${w.names().join(", ")})`);
  return true;
}

/** The run's state as the relay folded it. */
async function relayState(relay, run) {
  const res = await fetch(`${relay.url}/v1/runs/${run}`, { headers: { authorization: `Bearer ${jwt({ run })}` } });
  assert.equal(res.status, 200);
  return (await res.json()).state;
}

let redis;
let publisher;
/** What each test opened (clients, sockets): closed after it, passed or failed. */
const opened = new Set();
afterEach(() => {
  for (const close of opened) close();
  opened.clear();
});
before(async () => {
  assert.equal(typeof WebSocket, "function", "this test needs Node >= 22 (global WebSocket)");
  await ready();
  redis = await startRedis();
  publisher = await respClient(redis.port);
});
after(async () => {
  publisher?.close();
  await redis?.stop();
});

const wsRelayTest = "ws-relay: PUBLISH workflow-run:<id>, v:1 tokens, the raw /ws/executions socket and the SDK";
relayTest(wsRelayTest, ["ws-relay"], { EXECUTION_STREAM_SIGNING_SECRET: LEGACY_SECRET }, async (relay) => {
  const run = "42";
  const browser = rawSocket(`${relay.ws}/ws/executions?token=${legacyToken(run, "user-7")}`);
  await until(() => browser.seen.frames.length >= 1, "the connected frame");
  assert.deepEqual(browser.seen.frames[0], { type: "connected", runId: run });
  const sdk = sdkWatch(relay, run);
  await sdk.subscribed;

  const publish = async (message) => {
    const reply = await publisher.command("PUBLISH", `workflow-run:${run}`, JSON.stringify(message));
    assert.notEqual(reply, ":0", "the relay listens on workflow-run:<id>");
  };
  const ms = Date.now();
  const nodeMessages = [
    { type: "workflow", status: "Running", timestamp: ms },
    { type: "node", nodeId: "fetch", status: "Running", timestamp: ms + 1 },
    { type: "node", nodeId: "fetch", status: "Success", timestamp: ms + 2 },
    { type: "node", nodeId: "branch", status: "Skipped", timestamp: ms + 3 },
    { type: "node", nodeId: "store", status: "Running", timestamp: ms + 4 },
    { type: "node", nodeId: "store", status: "Failed", error: { message: "disk full" }, timestamp: ms + 5 },
    // no nodeId: kept as custom, and a node's Success never ends the run
    { type: "node", status: "Success", timestamp: ms + 6 },
    { type: "node", nodeId: "notify", status: "Running", timestamp: ms + 7 },
  ];
  for (const m of nodeMessages) await publish(m);
  await until(() => notEnded(sdk) && sdk.typed.length + sdk.other.length === nodeMessages.length, "the node messages through the SDK");
  await until(() => browser.seen.frames.length === 1 + nodeMessages.length, "the node messages on the raw socket");
  // Mid-run: nodes running, completed, skipped, failed; nothing has ended the run.
  assert.equal(sdk.ended, null, "a node message ended the SDK's subscription");
  assert.equal(browser.seen.close, null, "a node message closed the raw socket");
  assert.equal(sdk.state.status, "running");
  assert.deepEqual(sdk.nodes(), { fetch: "completed", branch: "skipped", store: "failed", notify: "running" });
  assert.deepEqual(sdk.names(), ["run.started", "node.started", "node.completed", "node.skipped", "node.started", "node.failed", "node.started"]);
  assert.deepEqual(sdk.other.map((e) => [e.seq, e.event, e.data]), [[7, "custom", nodeMessages[6]]]);

  const end = { type: "workflow", status: "Failure", error: "store failed", timestamp: ms + 9 };
  await publish(end);
  await until(() => sdk.ended !== null, "the SDK's end");
  await until(() => browser.seen.close !== null, "the raw socket's close");
  // The browser saw each message exactly as published, then 1000 "Run finished".
  assert.deepEqual(browser.seen.frames.slice(1), [...nodeMessages, end]);
  assert.deepEqual(browser.seen.close, { code: 1000, reason: "Run finished" });
  // The SDK: typed events in seq order with the worker's fields, the run ended by the workflow message.
  assert.equal(sdk.ended, "failed");
  assert.deepEqual(sdk.names().slice(-2), ["node.started", "run.failed"]);
  assert.deepEqual([...sdk.typed, ...sdk.other].map((e) => e.seq).sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  const failedNode = sdk.typed.find((e) => e.event === "node.failed");
  assert.equal(failedNode.data.node_key, "store");
  assert.equal(failedNode.data.error, "disk full");
  assert.equal(sdk.typed.find((e) => e.event === "node.completed").data.timestamp, ms + 2);
  assert.equal(sdk.typed.at(-1).data.error, "store failed");
  assert.equal(sdk.state.status, "failed");
  assert.equal(sdk.state.error, "store failed");
  assert.deepEqual(sdk.nodes(), { fetch: "completed", branch: "skipped", store: "failed", notify: "running" });
  // The SDK's fold agrees with the relay's; the v:1 token reads the same state.
  assert.deepEqual(sdk.state, await relayState(relay, run));
  const viaLegacy = await fetch(`${relay.url}/v1/runs/${run}`, { headers: { authorization: `Bearer ${legacyToken(run, "user-7")}` } });
  assert.equal(viaLegacy.status, 200);
  // A token the route did not sign is refused before anything is sent.
  const forged = rawSocket(`${relay.ws}/ws/executions?token=${legacyToken(run, "user-7", "another-secret")}`);
  await until(() => forged.seen.close !== null, "the forged token's close");
  assert.equal(forged.seen.close.code, 4002);
  assert.deepEqual(forged.seen.frames, []);
  sdk.close();
});

relayTest("sse-stream: PUBLISH execution:<id>:events, the plan's EventSource route and the SDK", ["sse-stream"], {}, async (relay) => {
  const run = "x1";
  const token = jwt({ sub: "user-7", run, scope: "subscribe", ws: "w1" });
  const es = await eventSource(`${relay.url}/api/v1/workspaces/w1/executions/${run}/stream?token=${token}`);
  assert.equal(es.status, 200);
  assert.match(es.type, /^text\/event-stream/);
  const sdk = sdkWatch(relay, run);
  await sdk.subscribed;

  const ts = "2026-11-29T10:00:00Z";
  const publish = async (event, node_key, data) => {
    const message = { event, execution_id: run, node_key, data, timestamp: ts };
    const reply = await publisher.command("PUBLISH", `execution:${run}:events`, JSON.stringify(message));
    assert.notEqual(reply, ":0", "the relay listens on execution:<id>:events");
  };
  await publish("execution.started", null, {});
  await publish("node.started", "http_1", {});
  await publish("node.completed", "http_1", { node_key: "http_1", duration_ms: 234, output_summary: { status: 200 } });
  await publish("node_started", "db", {});
  await publish("node_failed", "db", { error: "refused" });
  await publish("node.skipped", "mail", {});
  await publish("node.started", "report", {});
  await until(() => notEnded(sdk) && sdk.typed.length === 7, "the node events through the SDK");
  await until(() => es.messages.length === 7, "the node events on the stream");
  assert.equal(sdk.ended, null, "a node event ended the SDK's subscription");
  assert.equal(es.ended, false, "a node event ended the stream");
  assert.equal(sdk.state.status, "running");
  assert.deepEqual(sdk.nodes(), { http_1: "completed", db: "failed", mail: "skipped", report: "running" });

  // a terminal event without the `error` its shape requires still ends the run
  await publish("execution.failed", null, {});
  await until(() => sdk.ended !== null, "the SDK's end");
  await es.done;
  assert.deepEqual(sdk.names(), ["run.started", "node.started", "node.completed", "node.started", "node.failed", "node.skipped", "node.started", "run.failed"]);
  assert.deepEqual(sdk.other, []);
  assert.equal(sdk.typed[2].data.duration_ms, 234);
  assert.equal(sdk.typed[4].data.error, "refused");
  assert.equal(sdk.typed[7].data.error, "execution failed");
  assert.equal(sdk.ended, "failed");
  assert.equal(sdk.state.status, "failed");
  assert.deepEqual(sdk.nodes(), { http_1: "completed", db: "failed", mail: "skipped", report: "running" });
  assert.deepEqual(sdk.state, await relayState(relay, run));
  // What the plan's browser saw: seq ids, the plan's names, the fields as published.
  assert.deepEqual(
    es.messages.map((m) => [m.id, m.event]),
    [
      ["1", "execution.started"],
      ["2", "node.started"],
      ["3", "node.completed"],
      ["4", "node.started"],
      ["5", "node.failed"],
      ["6", "node.skipped"],
      ["7", "node.started"],
      ["8", "execution.failed"],
    ],
  );
  assert.deepEqual(es.messages[2].data, { node_key: "http_1", duration_ms: 234, output_summary: { status: 200 }, timestamp: ts });
  assert.deepEqual(es.messages[7].data, { error: "execution failed", timestamp: ts });
  // EventSource's reconnect after the end gets 204 and stops; another workspace gets 403.
  const again = await fetch(`${relay.url}/api/v1/workspaces/w1/executions/${run}/stream`, {
    headers: { accept: "text/event-stream", authorization: `Bearer ${token}`, "last-event-id": "8" },
  });
  assert.equal(again.status, 204);
  assert.equal((await eventSource(`${relay.url}/api/v1/workspaces/w2/executions/${run}/stream?token=${token}`)).status, 403);
  sdk.close();
});

const httpTest = "event-broadcaster and socketio-gateway: HTTP publish bodies, the raw /api/ws socket and the SDK";
relayTest(httpTest, ["event-broadcaster", "socketio-gateway"], {}, async (relay) => {
  const post = async (run, body) => {
    const res = await fetch(`${relay.url}/v1/runs/${run}/events`, {
      method: "POST",
      headers: { "content-type": "application/json", authorization: `Bearer ${jwt({ sub: "backend", run, scope: "publish" })}` },
      body: JSON.stringify(body),
    });
    assert.equal(res.status, 200, `${JSON.stringify(body)} → ${await res.text()}`);
  };

  // The EventBroadcaster: its browser subscribes by executionId on /api/ws.
  const run = "e1";
  const browser = rawSocket(`${relay.ws}/api/ws?token=${jwt({ sub: "user-7", run, scope: "subscribe" })}`);
  await until(() => browser.seen.open, "the /api/ws socket");
  browser.send({ type: "subscribe", executionId: run });
  await until(() => browser.seen.frames.length >= 1, "subscribed");
  assert.deepEqual(browser.seen.frames[0], { type: "subscribed", executionId: run });
  const sdk = sdkWatch(relay, run);
  await sdk.subscribed;
  const ts = "2026-11-29T10:00:01.000Z";
  const envelope = (type, data) => ({ type, executionId: run, workflowId: "wf-9", timestamp: ts, data });
  const bodies = [
    envelope("execution:started", {}),
    envelope("agent:started", { agentId: "writer", agentName: "Writer" }),
    envelope("agent:started", { agentId: "critic" }),
    envelope("execution:progress", { progress: 50 }),
    envelope("agent:completed", { agentId: "writer", result: "draft" }),
    // an error object does not fit node.failed's text: kept whole, and sent back as it came
    envelope("agent:failed", { agentId: "critic", error: { message: "timeout" } }),
    // no agentId: custom, and it ends nothing
    envelope("agent:completed", { result: "orphan" }),
    envelope("agent:started", { agentId: "editor" }),
  ];
  for (const b of bodies) await post(run, b);
  await until(() => notEnded(sdk) && sdk.typed.length + sdk.other.length === bodies.length, "the agent events through the SDK");
  await until(() => browser.seen.frames.length === 1 + bodies.length, "the agent events on /api/ws");
  assert.equal(sdk.ended, null, "an agent event ended the SDK's subscription");
  assert.equal(sdk.state.status, "running");
  assert.deepEqual(sdk.nodes(), { writer: "completed", critic: "failed", editor: "running" });
  assert.equal(sdk.state.progress, 50);
  await post(run, envelope("execution:completed", { result: { words: 120 } }));
  await until(() => sdk.ended !== null, "the SDK's end");
  await until(() => browser.seen.frames.length === 2 + bodies.length, "the last event on /api/ws");
  assert.equal(sdk.ended, "completed");
  assert.deepEqual(sdk.names(), ["run.started", "node.started", "node.started", "run.progress", "node.completed", "node.failed", "node.started", "run.completed"]);
  assert.deepEqual(sdk.other.map((e) => [e.seq, e.event]), [[7, "custom"]]);
  assert.equal(sdk.typed[5].data.error, "timeout");
  assert.equal(sdk.state.status, "completed");
  assert.deepEqual(sdk.state.result, { words: 120 });
  assert.equal(sdk.state.workflow, "wf-9");
  assert.deepEqual(sdk.state, await relayState(relay, run));
  const frames = browser.seen.frames.slice(1);
  for (const f of frames) assert.equal(f.executionId, run, JSON.stringify(f));
  assert.deepEqual(
    frames.map((f) => f.type),
    ["execution:started", "agent:started", "agent:started", "execution:progress", "agent:completed", "agent:failed", "custom", "agent:started", "execution:completed"],
  );
  // the EventBroadcaster's own fields come back as they were sent
  for (const f of frames.filter((f) => f.type !== "custom")) {
    assert.deepEqual([f.workflowId, f.timestamp], ["wf-9", ts], JSON.stringify(f));
  }
  assert.deepEqual(frames[1].data, { agentId: "writer", agentName: "Writer", node_key: "writer" });
  assert.deepEqual(frames[5], bodies[5]);
  // the message the layer could not map, as it came
  assert.deepEqual(frames[6].data.data, { result: "orphan" });
  assert.deepEqual(frames[3].data, { progress: 50 });
  assert.equal(browser.seen.close, null, "/api/ws stays open after an execution ends");
  browser.ws.close();
  sdk.close();

  // The Socket.IO gateway's emits, as Socket.IO arrays and as objects, watched through the SDK.
  const g = "g1";
  const gsdk = sdkWatch(relay, g);
  await gsdk.subscribed;
  const emits = [
    ["status", { executionId: g, status: "running" }],
    ["nodeStatus", { executionId: g, nodeId: "a", status: "running" }],
    { event: "nodeStatus", data: { executionId: g, nodeId: "a", status: "completed", output: { rows: 3 } } },
    ["nodeStatus", { executionId: g, nodeId: "b", status: "skipped" }],
    ["nodeStatus", { executionId: g, nodeId: "c", status: "running" }],
    ["nodeStatus", { executionId: g, nodeId: "c", status: "failed", error: "bad input" }],
    { event: "log", data: { executionId: g, log: { id: "l1", nodeId: "a", level: "warning", message: "slow", createdAt: ts } } },
    // `result` and `error` do not end the run: the final `status` does
    ["result", { executionId: g, result: { ok: false } }],
    ["error", { executionId: g, error: "c failed" }],
    ["nodeStatus", { executionId: g, nodeId: "d", status: "running" }],
  ];
  for (const e of emits) await post(g, e);
  await until(() => notEnded(gsdk) && gsdk.typed.length + gsdk.other.length === emits.length, "the gateway's emits through the SDK");
  assert.equal(gsdk.ended, null, "a node status, result or error ended the run");
  assert.equal(gsdk.state.status, "running");
  assert.deepEqual(gsdk.nodes(), { a: "completed", b: "skipped", c: "failed", d: "running" });
  await post(g, ["status", { executionId: g, status: "failed", error: "c failed" }]);
  await until(() => gsdk.ended !== null, "the SDK's end");
  assert.equal(gsdk.ended, "failed");
  assert.deepEqual(gsdk.names(), ["run.started", "node.started", "node.completed", "node.skipped", "node.started", "node.failed", "log", "log", "node.started", "run.failed"]);
  assert.deepEqual(gsdk.other.map((e) => [e.seq, e.event]), [[8, "result"]]);
  assert.equal(gsdk.state.status, "failed");
  assert.equal(gsdk.state.error, "c failed");
  assert.equal(gsdk.state.warning_count, 1);
  assert.equal(gsdk.state.error_count, 1);
  assert.deepEqual(gsdk.nodes(), { a: "completed", b: "skipped", c: "failed", d: "running" });
  assert.deepEqual(gsdk.state, await relayState(relay, g));
  gsdk.close();
});

/** Each test's relay starts on an empty Redis. */
async function flushRedis() {
  assert.equal(await publisher.command("FLUSHALL"), "+OK");
}
