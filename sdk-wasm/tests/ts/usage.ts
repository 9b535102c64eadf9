// Type-checked against the generated declarations by scripts/test-sdk.sh: the API as an app uses it.
import init, {
  RunwireClient,
  type ConnectionState,
  type EndReason,
  type RunState,
  type OtherRunEvent,
  type RunwireEvent,
  type StateChange,
} from "./runwire_sdk.js";

export async function usage(runId: string): Promise<void> {
  await init();
  const client = new RunwireClient({
    url: "wss://relay.example/v1/ws",
    token: async () => (await fetch(`/api/runs/${runId}/token`)).text(),
    minReconnectDelayMs: 500,
    maxReconnectDelayMs: 20000,
    maxReconnectAttempts: 10,
    transport: "auto",
  });
  new RunwireClient({ url: "wss://relay.example/v1/ws", token: "a-static-token", transport: "sse" });

  client.onStateChange(({ state, previous, reason, code }: StateChange) => {
    const now: ConnectionState = state;
    const before: "connecting" | "open" | "reconnecting" | "closed" = previous;
    const why: string = reason;
    const closeCode: number | undefined = code;
    void [now, before, why, closeCode];
  });
  client.onError((error) => {
    const what: string = error.code;
    const seq: number | undefined = error.seq;
    void [what, seq];
  });

  const seen: RunwireEvent[] = [];
  const sub = client.subscribe(runId, {
    onEvent: (ev) => {
      seen.push(ev);
      const seq: number = ev.seq;
      if (ev.event === "node.failed") {
        const error: string = ev.data.error;
        const node: string = ev.data.node_key;
        // @ts-expect-error node.failed carries no progress
        const progress: number = ev.data.progress;
        void [error, node, progress];
      }
      if (ev.event === "run.progress") {
        const progress: number = ev.data.progress;
        void progress;
      }
      if (ev.event === "log") {
        const level: "debug" | "info" | "warning" | "error" = ev.data.level;
        void level;
      }
      switch (ev.event) {
        case "run.completed": {
          const ms: number | undefined = ev.data.total_duration_ms;
          void ms;
          break;
        }
        default:
          break;
      }
      void seq;
    },
    onOtherEvent: (ev: OtherRunEvent) => {
      const name: string = ev.event;
      const data: unknown = ev.data;
      void [name, data];
    },
    onState: (state: RunState) => {
      const status: "pending" | "running" | "completed" | "failed" | "cancelled" = state.status;
      const keys: string[] = state.nodes.map((n) => n.key);
      void [status, keys];
    },
    onEnd: (reason: EndReason) => {
      // The known reasons, or one a newer relay added.
      const known: EndReason = "forbidden";
      const r: string = reason;
      void [known, r];
    },
  });
  const state: RunState | undefined = sub.state;
  const lastSeq: number | undefined = sub.lastSeq;
  const connection: ConnectionState = client.state;
  void [state, lastSeq, connection];
  const reconnected: void = client.reconnect();
  void reconnected;
  sub.unsubscribe();
  const framed = client.subscribe(runId, { stateEvery: "frame", onState: (s: RunState) => void s });
  framed.unsubscribe();
  // @ts-expect-error "event" or "frame"
  client.subscribe(runId, { stateEvery: "second" });
  client.close();

  // @ts-expect-error not a transport
  new RunwireClient({ url: "wss://relay.example/v1/ws", token: "t", transport: "carrier-pigeon" });
  // @ts-expect-error the token is required
  new RunwireClient({ url: "wss://relay.example/v1/ws" });

  // Token providers are told what the token must cover; a subscription may have its own.
  const scoped = new RunwireClient({
    url: "wss://relay.example/v1/ws",
    token: ({ runs, reason }) => `${runs.join(",")}:${reason}`,
    debug: (message: string, detail?: unknown) => void [message, detail],
  });
  scoped.subscribe(runId, {
    token: async ({ runs: [run], reason }) => (await fetch(`/api/runs/${run}/token?why=${reason}`)).text(),
  });
  // @ts-expect-error a subscription's token is a provider, not a string
  scoped.subscribe(runId, { token: "t" });
  // @ts-expect-error reasons are connect, refresh or refused
  new RunwireClient({ url: "wss://relay.example/v1/ws", token: ({ reason }) => (reason === "retry" ? "a" : "b") });
}
