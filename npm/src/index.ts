/**
 * runwire: watch workflow runs live from a runwire relay.
 *
 * The client itself is Rust compiled to WebAssembly. Importing this module has no side effects:
 * the module is loaded once, the first time a client connects (or when the app calls `ready()`),
 * and clients can be created and subscribed to before that (see `client.ts`). This layer also
 * adds the few things TypeScript expresses better than Rust: helpers over the typed event map.
 */
import type { KnownEventName, OtherRunEvent, RunEventDataMap, RunwireEvent } from "../wasm/runwire_sdk.js";

export { RunwireClient, Subscription } from "./client.js";
export { ready, type WasmSource } from "./load.js";
export type {
  ConnectionState,
  EndReason,
  KnownEventName,
  LogData,
  LogLevel,
  NodeCompletedData,
  NodeFailedData,
  NodeProgressData,
  NodeSkippedData,
  NodeStartedData,
  NodeState,
  NodeStatus,
  OtherRunEvent,
  RunCancelledData,
  RunCompletedData,
  RunEventDataMap,
  RunEventOf,
  RunFailedData,
  RunProgressData,
  RunStartedData,
  RunState,
  RunStatus,
  RunwireClientOptions,
  RunwireError,
  RunwireEvent,
  StateChange,
  SubscribeOptions,
  TokenContext,
  TokenProvider,
} from "../wasm/runwire_sdk.js";

/** The data of event `N`: `EventData<"node.failed">` is `NodeFailedData`. */
export type EventData<N extends KnownEventName> = RunEventDataMap[N];

/** The event named `N`, as `onEvent` delivers it. */
export type EventOf<N extends KnownEventName> = Extract<RunwireEvent, { event: N }>;

/** Any event a subscription delivers: a typed one, or one with another name. */
export type AnyRunEvent = RunwireEvent | OtherRunEvent;

/** Every event name whose data runwire knows the shape of. */
export const KNOWN_EVENTS: readonly KnownEventName[] = [
  "run.started",
  "run.progress",
  "run.completed",
  "run.failed",
  "run.cancelled",
  "node.started",
  "node.progress",
  "node.completed",
  "node.failed",
  "node.skipped",
  "log",
];

/**
 * Narrows an event by name, including events that came through `onOtherEvent`:
 * `if (isEvent(ev, "log")) ev.data.level` is a `LogLevel`.
 */
export function isEvent<N extends KnownEventName>(ev: AnyRunEvent, name: N): ev is EventOf<N> {
  return ev.event === name;
}
