// Compiles against the published types of `runwire`, `runwire/react` and `runwire/vue`.
// Every `@ts-expect-error` line is a misuse that must keep failing to compile.

import { ref } from "vue";
import {
  RunwireClient,
  isEvent,
  ready,
  type AnyRunEvent,
  type ConnectionState,
  type EventData,
  type EventOf,
  type LogLevel,
  type RunState,
  type RunwireEvent,
} from "runwire";
import { useConnection, useConnectionState, useRun } from "runwire/react";
import {
  useRun as useRunVue,
  useConnection as useConnectionVue,
  useConnectionState as useConnectionStateVue,
} from "runwire/vue";

const client = new RunwireClient({
  url: "wss://relay.example/v1/ws",
  token: async () => (await fetch("/api/runwire-token")).text(),
  maxReconnectDelayMs: 10_000,
  transport: "auto",
});

// A discriminated union: each case sees its own data.
function describe(ev: RunwireEvent): string {
  switch (ev.event) {
    case "node.failed":
      return `${ev.data.node_key}: ${ev.data.error.toUpperCase()}`;
    case "node.progress":
      return `${ev.data.node_key} ${ev.data.progress.toFixed(0)}%`;
    case "log": {
      const level: LogLevel = ev.data.level;
      return `[${level}] ${ev.data.message}`;
    }
    case "run.failed":
      return ev.data.error;
    default:
      return ev.event;
  }
}

const sub = client.subscribe("run_42", {
  since: 0,
  onEvent: (ev) => {
    describe(ev);
    // @ts-expect-error `error` is only on failure events; the union must be narrowed first.
    ev.data.error.toUpperCase();
  },
  onOtherEvent: (ev) => ev.event.startsWith("custom."),
  onState: (state: RunState) => state.nodes.map((n) => n.status),
  onEnd: (reason) => reason === "completed",
});
const seq: number | undefined = sub.lastSeq;
sub.unsubscribe();

// Helpers over the event map.
function failedNode(ev: AnyRunEvent): string | undefined {
  if (isEvent(ev, "node.failed")) return ev.data.error;
  // @ts-expect-error not an event name runwire knows.
  isEvent(ev, "node.exploded");
  return undefined;
}
const data: EventData<"node.completed"> = { node_key: "train", duration_ms: 1200 };
const started: EventOf<"run.started">["event"] = "run.started";

// @ts-expect-error the token is a string or a provider function, not a number.
new RunwireClient({ url: "wss://relay.example/v1/ws", token: 42 });

// Loading the module: where from, or not at all until a client needs it.
const loaded: Promise<void> = ready(new URL("https://cdn.example/runwire_sdk_bg.wasm"));
void ready(new Uint8Array([0, 97, 115, 109]));
new RunwireClient({ url: "wss://relay.example/v1/ws", token: "t", wasm: "/static/runwire_sdk_bg.wasm", debug: true });
// A provider per run, told what it covers.
client.subscribe("run_7", { token: ({ runs: [run], reason }) => fetch(`/api/runs/${run}/ws-token?${reason}`).then((r) => r.text()) });

// @ts-expect-error handlers see typed events: no such field on the data.
client.subscribe("r", { onEvent: (ev) => ev.data.nonexistent.length });

// React.
function ReactRun(): string {
  const { state, events, connection, error, isConnected, isReconnecting } = useRun(client, "run_42", { maxEvents: 200 });
  const c: ConnectionState = connection;
  const badge: boolean = useConnection(client).isConnected && isConnected && !isReconnecting;
  void badge;
  const header: ConnectionState = useConnectionState(client);
  // @ts-expect-error runId is a string (or null), not a number.
  useRun(client, 42);
  useRun(client, "run_42", { stateEvery: "frame" });
  // @ts-expect-error "event" or "frame".
  useRun(client, "run_42", { stateEvery: "second" });
  return `${state?.status} ${events.length} ${c} ${header} ${error?.code}`;
}

// Vue: runId may be a ref or a getter.
const runId = ref<string | null>("run_42");
const vue = useRunVue(client, runId);
useRunVue(client, () => runId.value);
const status: string | undefined = vue.state.value?.status;
const count: number = vue.events.value.length;
const conn: ConnectionState = useConnectionStateVue(client).value;
const online: boolean = useConnectionVue(client).isConnected.value && !vue.isReconnecting.value;
// @ts-expect-error the returned refs are read-only.
vue.state.value = undefined;

export { describe, failedNode, data, started, seq, ReactRun, status, count, conn, online, loaded };
