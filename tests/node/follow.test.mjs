// The packed package as a client in Node >= 22 (its global WebSocket), with the same API as in a
// browser: it follows a live run of a relay started here, through a TCP proxy that this test
// cuts mid-run, and must see every seq exactly once, in order, across the reconnect.

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer, connect } from "node:net";
import { startRelay, relayState, startRun, waitFor } from "../e2e/lib.mjs";
import { RunwireClient, ready } from "runwire";

/** A TCP proxy to `target` (host:port) whose connections `cut()` drops, as a failing network would. */
async function startProxy(target) {
  const [host, port] = [target.slice(0, target.lastIndexOf(":")), Number(target.slice(target.lastIndexOf(":") + 1))];
  const sockets = new Set();
  const server = createServer((down) => {
    const up = connect(port, host);
    for (const s of [down, up]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {});
    }
    down.pipe(up).pipe(down);
  });
  await new Promise((ok) => server.listen(0, "127.0.0.1", ok));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    /** Drops every open connection; returns how many there were. */
    cut() {
      const n = sockets.size;
      for (const s of sockets) s.destroy();
      return n;
    },
    async stop() {
      this.cut();
      await new Promise((ok) => server.close(ok));
    },
  };
}

let relay;
let proxy;
before(async () => {
  assert.equal(typeof WebSocket, "function", "this test needs Node >= 22 (global WebSocket)");
  await ready();
  relay = await startRelay();
  proxy = await startProxy(relay.url.replace(/^http:\/\//, ""));
});
after(async () => {
  await proxy?.stop();
  await relay?.stop();
});

test("Node follows a live run and sees every seq once across a forced reconnect", { timeout: 120_000 }, async () => {
  const run = await startRun(relay);

  const client = new RunwireClient({
    url: `${proxy.url.replace(/^http/, "ws")}/v1/ws`,
    token: async () => (await fetch(`${relay.url}/demo/token?run=${run}`)).text(),
    transport: "websocket",
    minReconnectDelayMs: 50,
    maxReconnectDelayMs: 200,
  });
  const states = [];
  client.onStateChange((c) => states.push(c.state));
  const errors = [];
  client.onError((e) => errors.push(e));
  const seqs = [];
  let cuts = 0;
  const ended = new Promise((resolve) => {
    client.subscribe(run, {
      since: 0,
      onEvent: (ev) => seqs.push(ev.seq),
      onOtherEvent: (ev) => seqs.push(ev.seq),
      onEnd: resolve,
    });
  });
  // Cut the connection once a few events have arrived, while the run goes on.
  await waitFor(() => seqs.length >= 3, "three events", { ms: 30_000 });
  cuts += proxy.cut();
  const reason = await ended;
  const truth = await relayState(relay.url, run);
  client.close();

  assert.ok(cuts > 0, "the connection was cut");
  assert.ok(["completed", "failed"].includes(reason), `ended with ${reason}`);
  assert.equal(reason, truth.state.status);
  assert.deepEqual(seqs, Array.from({ length: truth.seq }, (_, i) => i + 1));
  assert.ok(states.includes("reconnecting"), `states: ${states.join(" ")}`);
  assert.deepEqual(errors, []);
});

test("one connection carries runs with tokens of their own; a refused one is asked for again once", { timeout: 120_000 }, async () => {
  const [a, b] = [await startRun(relay), await startRun(relay)];
  const tokenFor = async (run) => (await fetch(`${relay.url}/demo/token?run=${run}`)).text();
  const issued = new Set();
  const mint = async (run) => {
    const t = await tokenFor(run);
    issued.add(t);
    return t;
  };
  const clientAsks = [];
  const ownAsks = [];
  const logs = [];
  const client = new RunwireClient({
    url: `${relay.url.replace(/^http/, "ws")}/v1/ws`,
    // The connection's token covers the runs without a token of their own: here, `a`.
    token: (context) => {
      clientAsks.push(context);
      return mint(a);
    },
    transport: "websocket",
    debug: (message, detail) => logs.push([message, detail]),
  });
  const errors = [];
  client.onError((e) => errors.push(e));
  const states = [];
  client.onStateChange((c) => states.push(c.state));
  const follow = (run, options = {}) => {
    const seqs = [];
    const ended = new Promise((resolve) =>
      client.subscribe(run, { since: 0, onEvent: (ev) => seqs.push(ev.seq), onOtherEvent: (ev) => seqs.push(ev.seq), onEnd: resolve, ...options }),
    );
    return { seqs, ended };
  };
  const fa = follow(a);
  const fb = follow(b, {
    // The first token is for the wrong run: the relay refuses it, the provider is asked again.
    token: (context) => {
      ownAsks.push(context);
      return mint(ownAsks.length === 1 ? a : b);
    },
  });
  const [endA, endB] = await Promise.all([fa.ended, fb.ended]);
  client.close();
  for (const [run, f, end] of [[a, fa, endA], [b, fb, endB]]) {
    const truth = await relayState(relay.url, run);
    assert.equal(end, truth.state.status, run);
    assert.deepEqual(f.seqs, Array.from({ length: truth.seq }, (_, i) => i + 1), run);
  }
  assert.deepEqual(clientAsks, [{ runs: [a], reason: "connect" }]);
  assert.deepEqual(ownAsks, [
    { runs: [b], reason: "connect" },
    { runs: [b], reason: "refused" },
  ]);
  assert.deepEqual(errors, []);
  assert.deepEqual(states.filter((s) => s === "open"), ["open"], "one connection throughout");
  // The debug logger saw frames both ways, and never a token.
  const text = logs.map(([m, d]) => `${m} ${typeof d === "string" ? d : JSON.stringify(d)}`).join("\n");
  assert.match(text, /sent \{"type":"auth","token":"\[redacted\]"/);
  assert.match(text, /sent \{"type":"subscribe","run":"[^"]+","token":"\[redacted\]"/);
  assert.match(text, /received \{"type":"welcome"/);
  for (const t of issued) assert.ok(!text.includes(t), "a token reached the debug logger");
});
