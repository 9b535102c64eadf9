/** Connection states, in the order they can occur: `closed → connecting → open`, `open → reconnecting → open`, `… → closed`. */
export type ConnectionState = "connecting" | "open" | "reconnecting" | "closed";

/** Passed to `onStateChange` listeners. */
export interface StateChange {
  state: ConnectionState;
  previous: ConnectionState;
  /** Why: "subscribe", "connected", "connection lost", "heartbeat timeout", "idle", "client closed", "max reconnect attempts", a close reason… */
  reason: string;
  /** The WebSocket close code behind the change, if any. */
  code?: number;
}

/** What a token provider is asked for. */
export interface TokenContext {
  /**
   * The runs the token must cover. For the client's provider: the runs of the subscriptions that
   * rely on the connection's token (those without a `token` of their own), possibly none; for a
   * subscription's own provider: its run.
   */
  runs: string[];
  /**
   * `"connect"`: to connect (or to start a subscription); `"refresh"`: the token (the
   * connection's, or the subscription's own) expires soon, or the relay ended the subscription
   * because its own token expired; `"refused"`: the relay refused the last token (a subscription came back
   * `forbidden`, or the connection's token was rejected), so a fresh one is needed.
   */
  reason: "connect" | "refresh" | "refused";
}

/** A token, or a function returning one (or a promise of one). Functions are called again on every reconnect, before the token expires, and when the relay refuses it, with what it must cover. */
export type TokenProvider = string | ((context: TokenContext) => string | Promise<string>);

export interface RunwireClientOptions {
  /** The relay's WebSocket endpoint, e.g. "wss://relay.example/v1/ws". SSE streams are derived from it. */
  url: string;
  token: TokenProvider;
  /** Shortest reconnect delay (default 500). */
  minReconnectDelayMs?: number;
  /** Longest reconnect delay (default 20000). */
  maxReconnectDelayMs?: number;
  /** Failed reconnect attempts after which the client goes to "closed" (default: unlimited). */
  maxReconnectAttempts?: number;
  /** "auto" (default): WebSocket, falling back to SSE when WebSocket keeps failing. */
  transport?: "auto" | "websocket" | "sse";
  /**
   * Logs what the client does: state changes, frames sent and received (tokens redacted), token
   * requests, reconnect delays. `true`: to `console.debug`; a function: to it.
   */
  debug?: boolean | ((message: string, detail?: unknown) => void);
  /**
   * Where the `.wasm` comes from, if this client is the first to need it (see `ready()`): its
   * URL, its bytes, a `Response` (or a promise of one, as `fetch` returns), or a compiled
   * `WebAssembly.Module`. Default: `runwire_sdk_bg.wasm` next to the package's JS (bundlers copy
   * it as an asset); in Node it is read from disk.
   */
  wasm?: string | URL | Response | PromiseLike<Response> | BufferSource | WebAssembly.Module;
}

export interface RunStartedData { workflow?: string; node_count?: number; [extra: string]: unknown }
export interface RunProgressData { progress: number; current_node?: string; [extra: string]: unknown }
export interface RunCompletedData { total_duration_ms?: number; node_count?: number; result?: unknown; [extra: string]: unknown }
export interface RunFailedData { error: string; node_key?: string; [extra: string]: unknown }
export interface RunCancelledData { reason?: string; [extra: string]: unknown }
export interface NodeStartedData { node_key: string; [extra: string]: unknown }
export interface NodeProgressData { node_key: string; progress: number; [extra: string]: unknown }
export interface NodeCompletedData { node_key: string; duration_ms?: number; output_summary?: unknown; [extra: string]: unknown }
export interface NodeFailedData { node_key: string; error: string; [extra: string]: unknown }
export interface NodeSkippedData { node_key: string; reason?: string; [extra: string]: unknown }
export type LogLevel = "debug" | "info" | "warning" | "error";
export interface LogData { level: LogLevel; message: string; node_key?: string; metadata?: unknown; [extra: string]: unknown }

/** The data of each event name runwire knows the shape of. */
export interface RunEventDataMap {
  "run.started": RunStartedData;
  "run.progress": RunProgressData;
  "run.completed": RunCompletedData;
  "run.failed": RunFailedData;
  "run.cancelled": RunCancelledData;
  "node.started": NodeStartedData;
  "node.progress": NodeProgressData;
  "node.completed": NodeCompletedData;
  "node.failed": NodeFailedData;
  "node.skipped": NodeSkippedData;
  "log": LogData;
}

export type KnownEventName = keyof RunEventDataMap;

/** One event as delivered to `onEvent`. */
export interface RunEventOf<N extends string, D> {
  type: "event";
  run: string;
  /** Per-run sequence number: 1, 2, 3… with no gaps. */
  seq: number;
  event: N;
  /** When the relay accepted the event (RFC 3339, UTC). */
  ts: string;
  data: D;
}

/** What `onEvent` receives, discriminated by `event`: `if (ev.event === "node.failed") ev.data.error` is a string. */
export type RunwireEvent = { [N in KnownEventName]: RunEventOf<N, RunEventDataMap[N]> }[KnownEventName];

/**
 * An event whose name is not one of the typed ones (`custom.thing`): handed to `onOtherEvent` as
 * it came. Kept apart from `onEvent` so that `RunwireEvent` stays a union TypeScript can narrow.
 */
export type OtherRunEvent = RunEventOf<string, unknown>;

export type RunStatus = "pending" | "running" | "completed" | "failed" | "cancelled";
export type NodeStatus = "pending" | "running" | "completed" | "failed" | "skipped";

export interface NodeState {
  key: string;
  status: NodeStatus;
  progress?: number;
  started_at?: string;
  finished_at?: string;
  duration_ms?: number;
  error?: string;
  output_summary?: unknown;
}

/** A run's snapshot, folded from its events (the same fold the relay runs). */
export interface RunState {
  seq: number;
  status: RunStatus;
  workflow?: string;
  node_count?: number;
  progress: number;
  current_node?: string;
  nodes: NodeState[];
  nodes_truncated?: boolean;
  started_at?: string;
  finished_at?: string;
  duration_ms?: number;
  error?: string;
  failed_node?: string;
  cancel_reason?: string;
  result?: unknown;
  log_count: number;
  warning_count: number;
  error_count: number;
}

/**
 * Why a subscription ended. A newer relay may send a reason this client does not know: it ends
 * the subscription all the same and is passed on as it came.
 */
export type EndReason = "completed" | "failed" | "cancelled" | "forbidden" | "unsubscribed" | "token_expired" | (string & {});

export interface SubscribeOptions {
  /** Every event with a typed name, once, in seq order, across reconnects. */
  onEvent?: (ev: RunwireEvent) => void;
  /** Every event with another name (delivered in the same seq order, interleaved with `onEvent`). */
  onOtherEvent?: (ev: OtherRunEvent) => void;
  /** The folded state after every event, snapshot and reset (see `stateEvery`). */
  onState?: (state: RunState) => void;
  /**
   * How often `onState` is called. `"event"` (default): after every event, snapshot and reset.
   * `"frame"`: at most once per animation frame, with the latest state, which saves building the
   * states nobody sees when events come faster than the screen refreshes. Browsers pause frames
   * in hidden tabs: the latest state then comes when the tab is shown again. A run's last state
   * still comes at once, before `onEnd`.
   */
  stateEvery?: "event" | "frame";
  /** Called once when the subscription ends. */
  onEnd?: (reason: EndReason) => void;
  /** Replay the retained events after this seq first (0: from the start). Default: the current snapshot, then live events. */
  since?: number;
  /**
   * A token provider for this run alone, called with `{ runs: [run], reason }` before the
   * subscription starts and when the relay refuses its token. The token travels with the
   * `subscribe` frame, so one connection carries runs that each have their own token. Without
   * it, the connection's token must cover the run.
   */
  token?: (context: TokenContext) => string | Promise<string>;
}

/** Reported to `onError`; the client carries on. */
export interface RunwireError {
  /** "bad_frame", "invalid_event", "token_provider", "wasm_load", or a relay error code ("too_many_subscriptions", …, or one a newer relay added). */
  code: string;
  message: string;
  run?: string;
  seq?: number;
}
