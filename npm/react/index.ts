/**
 * React bindings: `useRun` follows one run for as long as the component is mounted,
 * `useConnectionState` tracks the client's connection.
 *
 * Subscriptions live in effects, so StrictMode's mount → unmount → mount ends the first
 * subscription before the second starts, and callbacks of an ended subscription are ignored:
 * a run is never followed twice by one hook and no event is shown twice. Effects do not run during
 * server rendering, and the hydrating render uses the server's values: `useRun` then returns its
 * initial values (no state, no events, connection `"closed"`).
 */
import { useCallback, useEffect, useState, useSyncExternalStore } from "react";
import type {
  AnyRunEvent,
  ConnectionState,
  EndReason,
  RunState,
  RunwireClient,
  RunwireError,
} from "../src/index.js";
import { appendEvent, followRun, type UseRunOptions } from "../src/follow.js";

export type { UseRunOptions };

/** What `useRun` returns. */
export interface UseRunResult {
  /** The run's folded state; `undefined` until the first snapshot. */
  state: RunState | undefined;
  /** Events in seq order, each once (the last `maxEvents`). */
  events: readonly AnyRunEvent[];
  /** The client's connection state. */
  connection: ConnectionState;
  /** `connection === "open"`. */
  isConnected: boolean;
  /** `connection === "reconnecting"`: the connection dropped and the client is getting it back. */
  isReconnecting: boolean;
  /** The last error about this run (or the connection), if any. */
  error: RunwireError | undefined;
  /** Why the subscription ended (`completed`, `failed`, `forbidden`…), while it has. */
  ended: EndReason | undefined;
}

interface Followed {
  key: string | null;
  state: RunState | undefined;
  events: readonly AnyRunEvent[];
  error: RunwireError | undefined;
  ended: EndReason | undefined;
}

const EMPTY: readonly AnyRunEvent[] = [];

function initial(key: string | null): Followed {
  return { key, state: undefined, events: EMPTY, error: undefined, ended: undefined };
}

/** What `useConnection` returns. */
export interface ConnectionStatus {
  /** The client's connection state (`"closed"` during server rendering and hydration). */
  connection: ConnectionState;
  /** `connection === "open"`. */
  isConnected: boolean;
  /** `connection === "reconnecting"`. */
  isReconnecting: boolean;
}

/** The connection state of `client` with its two common questions answered, for a status badge. */
export function useConnection(client: RunwireClient | null | undefined): ConnectionStatus {
  const connection = useConnectionState(client);
  return status(connection);
}

function status(connection: ConnectionState): ConnectionStatus {
  return { connection, isConnected: connection === "open", isReconnecting: connection === "reconnecting" };
}

/**
 * The connection state of `client`, re-rendering on every change (`"closed"` during server
 * rendering and hydration).
 */
export function useConnectionState(client: RunwireClient | null | undefined): ConnectionState {
  const subscribe = useCallback(
    (notify: () => void) => {
      if (!client) return () => {};
      const listener = () => notify();
      client.onStateChange(listener);
      return () => {
        try {
          client.offStateChange(listener);
        } catch {
          // The client was freed already; its listeners went with it.
        }
      };
    },
    [client],
  );
  const snapshot = () => {
    try {
      return client ? client.state : "closed";
    } catch {
      return "closed";
    }
  };
  return useSyncExternalStore(subscribe, snapshot, () => "closed");
}

/**
 * Follows run `runId` on `client` while the component is mounted; `null` follows nothing.
 * Changing `runId` ends the old subscription and starts a new one.
 */
export function useRun(
  client: RunwireClient | null | undefined,
  runId: string | null | undefined,
  options: UseRunOptions = {},
): UseRunResult {
  const { since = 0, maxEvents = 1000, stateEvery = "event" } = options;
  const key = client && runId ? runId : null;
  const connection = useConnectionState(client);
  const [followed, setFollowed] = useState<Followed>(() => initial(key));

  useEffect(() => {
    setFollowed(initial(key));
    if (!client || !key) return;
    let active = true;
    const update = (f: (prev: Followed) => Followed) => {
      if (active) setFollowed((prev) => (prev.key === key ? f(prev) : prev));
    };
    const stop = followRun(client, key, { since, stateEvery }, {
      onEvent: (ev) => update((p) => ({ ...p, events: appendEvent(p.events, ev, maxEvents) })),
      onState: (state) => update((p) => ({ ...p, state })),
      onEnd: (ended) => update((p) => ({ ...p, ended })),
      onError: (error) => update((p) => ({ ...p, error })),
    });
    return () => {
      active = false;
      stop();
    };
  }, [client, key, since, maxEvents, stateEvery]);

  const current = followed.key === key ? followed : initial(key);
  return {
    state: current.state,
    events: current.events,
    ...status(connection),
    error: current.error,
    ended: current.ended,
  };
}
