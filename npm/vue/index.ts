/**
 * Vue bindings: `useRun` follows a run for the lifetime of the calling component (or effect
 * scope); `runId` may be a ref or a getter, and switching it ends the old subscription before
 * the new one starts. `useConnectionState` tracks the client's connection.
 */
import {
  getCurrentScope,
  onScopeDispose,
  shallowRef,
  toValue,
  watch,
  type MaybeRefOrGetter,
  type Ref,
} from "vue";
import type {
  AnyRunEvent,
  ConnectionState,
  EndReason,
  RunState,
  RunwireClient,
  RunwireError,
} from "../src/index.js";

/** Options of `useRun`. */
export interface UseRunOptions {
  /** Replay retained events after this seq first; `0` (default) replays the run from its start. */
  since?: number;
  /** Events kept in `events`, oldest dropped first (default 1000). */
  maxEvents?: number;
}

/** What `useRun` returns: read-only refs. */
export interface UseRunResult {
  /** The run's folded state; `undefined` until the first snapshot. */
  state: Readonly<Ref<RunState | undefined>>;
  /** Events in seq order, each once (the last `maxEvents`). */
  events: Readonly<Ref<readonly AnyRunEvent[]>>;
  /** The client's connection state. */
  connection: Readonly<Ref<ConnectionState>>;
  /** The last error about this run (or the connection), if any. */
  error: Readonly<Ref<RunwireError | undefined>>;
  /** Why the subscription ended (`completed`, `failed`, `forbidden`…), while it has. */
  ended: Readonly<Ref<EndReason | undefined>>;
}

type MaybeClient = RunwireClient | null | undefined;

function stateOf(client: MaybeClient): ConnectionState {
  try {
    return client ? client.state : "closed";
  } catch {
    return "closed";
  }
}

/** The connection state of `client` (which may be a ref), as a ref. */
export function useConnectionState(client: MaybeRefOrGetter<MaybeClient>): Readonly<Ref<ConnectionState>> {
  const connection = shallowRef<ConnectionState>(stateOf(toValue(client)));
  const stop = watch(
    () => toValue(client),
    (c, _old, onCleanup) => {
      connection.value = stateOf(c);
      if (!c) return;
      const listener = () => {
        connection.value = stateOf(c);
      };
      c.onStateChange(listener);
      onCleanup(() => {
        try {
          c.offStateChange(listener);
        } catch {
          // The client was freed already; its listeners went with it.
        }
      });
    },
    { immediate: true },
  );
  if (getCurrentScope()) onScopeDispose(stop);
  return connection;
}

/** Follows run `runId` (a string, ref or getter; `null` follows nothing) on `client`. */
export function useRun(
  client: MaybeRefOrGetter<MaybeClient>,
  runId: MaybeRefOrGetter<string | null | undefined>,
  options: UseRunOptions = {},
): UseRunResult {
  const { since = 0, maxEvents = 1000 } = options;
  const state = shallowRef<RunState | undefined>();
  const events = shallowRef<readonly AnyRunEvent[]>([]);
  const error = shallowRef<RunwireError | undefined>();
  const ended = shallowRef<EndReason | undefined>();
  const connection = useConnectionState(client);

  const stop = watch(
    () => [toValue(client), toValue(runId)] as const,
    ([c, run], _old, onCleanup) => {
      state.value = undefined;
      events.value = [];
      error.value = undefined;
      ended.value = undefined;
      if (!c || !run) return;
      let active = true;
      const onError = (e: RunwireError) => {
        if (active && (e.run === undefined || e.run === run)) error.value = e;
      };
      const onEvent = (ev: AnyRunEvent) => {
        if (!active) return;
        const prev = events.value;
        const next = prev.length >= maxEvents ? prev.slice(prev.length - maxEvents + 1) : prev.slice();
        next.push(ev);
        events.value = next;
      };
      c.onError(onError);
      let subscription: ReturnType<RunwireClient["subscribe"]> | undefined;
      try {
        subscription = c.subscribe(run, {
          since,
          onEvent,
          onOtherEvent: onEvent,
          onState: (s) => {
            if (active) state.value = s;
          },
          onEnd: (reason) => {
            if (active) ended.value = reason;
          },
        });
      } catch (e) {
        error.value = { code: "subscribe", message: e instanceof Error ? e.message : String(e) };
      }
      onCleanup(() => {
        active = false;
        try {
          subscription?.unsubscribe();
          subscription?.free();
          c.offError(onError);
        } catch {
          // The client was freed already; its subscriptions went with it.
        }
      });
    },
    { immediate: true },
  );
  if (getCurrentScope()) onScopeDispose(stop);
  return { state, events, connection, error, ended };
}
