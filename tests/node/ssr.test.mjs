// The packed package on a server (scripts/test-npm.sh runs this file in Node 20 and Node >= 22):
// importing `runwire`, `runwire/react` and `runwire/vue` has no side effects, a client can be
// created there, and `useRun` renders its initial values with react-dom/server and Vue's
// renderToString, without touching the network, `WebSocket` or the `.wasm`.

import { test } from "node:test";
import assert from "node:assert/strict";

// Every way out: a call to any of these during the tests below is a failure.
const touched = [];
globalThis.fetch = (...args) => {
  touched.push(`fetch ${args[0]}`);
  throw new Error("fetch called");
};
globalThis.WebSocket = class {
  constructor(url) {
    touched.push(`WebSocket ${url}`);
    throw new Error("WebSocket called");
  }
};
for (const name of ["compile", "compileStreaming", "instantiate", "instantiateStreaming"]) {
  const original = WebAssembly[name];
  WebAssembly[name] = function (...args) {
    touched.push(`WebAssembly.${name}`);
    return original.apply(this, args);
  };
}
WebAssembly.Module = new Proxy(WebAssembly.Module, {
  construct(target, args) {
    touched.push("new WebAssembly.Module");
    return new target(...args);
  },
});
const getBuiltinModule = process.getBuiltinModule;
process.getBuiltinModule = (id) => {
  touched.push(`getBuiltinModule ${id}`);
  return getBuiltinModule.call(process, id);
};

const runwire = await import("runwire");
const react = await import("runwire/react");
const vue = await import("runwire/vue");

test("importing runwire, runwire/react and runwire/vue touches nothing", () => {
  assert.equal(typeof runwire.RunwireClient, "function");
  assert.equal(typeof runwire.ready, "function");
  assert.equal(typeof react.useRun, "function");
  assert.equal(typeof vue.useRun, "function");
  assert.deepEqual(touched, []);
});

function client() {
  return new runwire.RunwireClient({
    url: "ws://127.0.0.1:9/v1/ws",
    token: () => {
      touched.push("token provider");
      return "t";
    },
  });
}

test("a client created on the server does not throw, load or connect", () => {
  const c = client();
  const changes = [];
  c.onStateChange((ch) => changes.push(ch.state));
  assert.equal(c.state, "closed");
  assert.equal(c.transport, undefined);
  // Invalid options are refused at once, module or not.
  assert.throws(() => new runwire.RunwireClient({ url: "nope", token: "t" }), /url must start with ws/);
  assert.throws(() => c.subscribe("bad run id!", {}), /invalid run id/);
  assert.throws(() => c.subscribe("run_1", { token: "a-string" }), /`token` must be a function/);
  assert.throws(() => new runwire.RunwireClient({ url: "ws://h/v1/ws", token: "t", debug: 1 }), /`debug`/);
  c.close();
  assert.deepEqual(changes, []);
  assert.throws(() => c.subscribe("run_1", {}), /closed/);
  assert.deepEqual(touched, []);
});

test("every option is checked by the package, with the message apps see", () => {
  // The WebAssembly client does not check them again (sdk-wasm/src/lib.rs): these checks are
  // the only ones, made before the module is loaded.
  const ok = { url: "ws://h/v1/ws", token: "t" };
  const refused = [
    [null, /options must be an object/],
    ["ws://h/v1/ws", /options must be an object/],
    [{ token: "t" }, /`url` must be a string/],
    [{ ...ok, url: "ftp://h/v1/ws" }, /url must start with ws:\/\/ or wss:\/\//],
    [{ ...ok, url: "wss:///v1/ws" }, /url has no host/],
    [{ url: ok.url }, /`token` must be a string or a function/],
    [{ ...ok, token: 7 }, /`token` must be a string or a function/],
    [{ ...ok, minReconnectDelayMs: -1 }, /`minReconnectDelayMs` must be a non-negative number/],
    [{ ...ok, maxReconnectDelayMs: NaN }, /`maxReconnectDelayMs` must be a non-negative number/],
    [{ ...ok, maxReconnectAttempts: "3" }, /`maxReconnectAttempts` must be a non-negative number/],
    [{ ...ok, debug: "yes" }, /`debug` must be a boolean or a function/],
    [{ ...ok, transport: "carrier-pigeon" }, /`transport` must be "auto", "websocket" or "sse"/],
  ];
  for (const [options, message] of refused) {
    assert.throws(() => new runwire.RunwireClient(options), message, JSON.stringify(options));
  }
  for (const options of [
    ok,
    { ...ok, url: "HTTPS://h:1/v1/ws", token: () => "t" },
    { ...ok, minReconnectDelayMs: 0, maxReconnectDelayMs: Infinity, maxReconnectAttempts: null },
    { ...ok, transport: "sse", debug: false },
  ]) {
    new runwire.RunwireClient(options).close();
  }
  const c = new runwire.RunwireClient(ok);
  const subscribeRefused = [
    ["", {}, /invalid run id/],
    ["r".repeat(129), {}, /invalid run id/],
    ["run 1", {}, /invalid run id/],
    ["run_1", { stateEvery: "sometimes" }, /`stateEvery` must be "event" or "frame"/],
    ["run_1", { since: -1 }, /`since` must be a non-negative integer/],
    ["run_1", { since: 2.5 }, /`since` must be a non-negative integer/],
    ["run_1", { token: "a-string" }, /`token` must be a function/],
  ];
  for (const [run, options, message] of subscribeRefused) {
    assert.throws(() => c.subscribe(run, options), message, `${run} ${JSON.stringify(options)}`);
  }
  c.close();
});

test("useRun renders its initial values with react-dom/server", async () => {
  const { createElement: h } = await import("react");
  const { renderToString } = await import("react-dom/server");
  const c = client();
  function View() {
    const r = react.useRun(c, "run_1");
    const conn = react.useConnectionState(c);
    return h(
      "p",
      null,
      [
        r.connection,
        conn,
        r.isConnected,
        r.isReconnecting,
        r.state === undefined,
        r.events.length,
        r.error === undefined,
        r.ended === undefined,
      ].join(" "),
    );
  }
  const html = renderToString(h(View));
  assert.equal(html, "<p>closed closed false false true 0 true true</p>");
  c.close();
  assert.deepEqual(touched, []);
});

test("useRun renders its initial values with Vue's renderToString", async () => {
  const { createSSRApp, h } = await import("vue");
  const { renderToString } = await import("vue/server-renderer");
  const c = client();
  const app = createSSRApp({
    setup() {
      const r = vue.useRun(c, "run_1");
      const conn = vue.useConnectionState(c);
      return () =>
        h(
          "p",
          [
            r.connection.value,
            conn.value,
            r.isConnected.value,
            r.isReconnecting.value,
            r.state.value === undefined,
            r.events.value.length,
            r.error.value === undefined,
            r.ended.value === undefined,
          ].join(" "),
        );
    },
  });
  const html = await renderToString(app);
  assert.equal(html, "<p>closed closed false false true 0 true true</p>");
  c.close();
  assert.deepEqual(touched, []);
});

test("a subscription made before the module is ready can be ended before it starts", async () => {
  const c = client();
  const changes = [];
  c.onStateChange((ch) => changes.push(`${ch.previous}->${ch.state}`));
  const ends = [];
  const sub = c.subscribe("run_1", { onEnd: (r) => ends.push(r) });
  assert.equal(c.state, "connecting");
  assert.equal(sub.run, "run_1");
  assert.equal(sub.ended, undefined);
  sub.unsubscribe();
  assert.deepEqual(ends, ["unsubscribed"]);
  assert.equal(sub.ended, "unsubscribed");
  assert.equal(c.state, "closed");
  assert.deepEqual(changes, ["closed->connecting", "connecting->closed"]);
  c.close();
  // Subscribing started loading the module (read from disk); nothing connected.
  await runwire.ready();
  assert.deepEqual(
    touched.filter((t) => !t.startsWith("getBuiltinModule node:fs") && !t.startsWith("WebAssembly")),
    [],
  );
  assert.ok(touched.includes("getBuiltinModule node:fs"), touched.join(", "));
});
