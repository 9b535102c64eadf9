// Per-run tokens that expire while the run goes on: the relay ends a subscription when its own
// token expires, and the client must refresh it first, again and again, without losing or
// repeating an event. The tokens are minted here (the relay runs with a secret of ours) and live
// one second (plus the relay's 5 s of leeway).

import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createHmac, randomBytes } from "node:crypto";
import { startRelay, relayState, startRun } from "../e2e/lib.mjs";
import { RunwireClient, ready } from "runwire";

const SECRET = randomBytes(32).toString("hex");

/** An HS256 subscribe token with `claims`, expiring `ttl` seconds from now. */
function mint(claims, ttl) {
  const now = Math.floor(Date.now() / 1000);
  const part = (v) => Buffer.from(JSON.stringify(v)).toString("base64url");
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part({ scope: "subscribe", iat: now, exp: now + ttl, ...claims })}`;
  return `${body}.${createHmac("sha256", SECRET).update(body).digest("base64url")}`;
}

let relay;
before(async () => {
  assert.equal(typeof WebSocket, "function", "this test needs Node >= 22 (global WebSocket)");
  await ready();
  relay = await startRelay(["--secret", SECRET]);
});
after(async () => {
  await relay?.stop();
});

test("a run followed with one-second tokens of its own: refreshed before each expires, every seq once", { timeout: 120_000 }, async () => {
  const run = await startRun(relay);

  const client = new RunwireClient({
    url: `${relay.url.replace(/^http/, "ws")}/v1/ws`,
    // The connection's token names no run: only the run's own tokens give access to it.
    token: () => mint({ sub: "node" }, 600),
    transport: "websocket",
  });
  const errors = [];
  client.onError((e) => errors.push(e));
  const states = [];
  client.onStateChange((c) => states.push(c.state));
  const asks = [];
  const seqs = [];
  const ended = new Promise((resolve) =>
    client.subscribe(run, {
      since: 0,
      token: ({ runs, reason }) => {
        asks.push(reason);
        return mint({ run: runs[0] }, 1);
      },
      onEvent: (ev) => seqs.push(ev.seq),
      onOtherEvent: (ev) => seqs.push(ev.seq),
      onEnd: resolve,
    }),
  );
  const reason = await ended;
  const truth = await relayState(relay.url, run);
  client.close();

  assert.equal(reason, truth.state.status);
  assert.deepEqual(seqs, Array.from({ length: truth.seq }, (_, i) => i + 1), "every seq once, in order");
  assert.equal(asks[0], "connect");
  const refreshes = asks.filter((r) => r === "refresh").length;
  assert.ok(refreshes >= 3, `asked for ${refreshes} fresh tokens: ${asks.join(" ")}`);
  assert.deepEqual(asks.slice(1), Array(asks.length - 1).fill("refresh"), "never refused");
  assert.deepEqual(errors, []);
  assert.deepEqual(states, ["connecting", "open", "closed"], "one connection throughout");
});
