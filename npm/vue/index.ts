/**
 * Vue bindings: `useRun` follows a run for the lifetime of the calling component (or effect
 * scope); `runId` may be a ref or a getter, and switching it ends the old subscription before
 * the new one starts. `useConnectionState` tracks the client's connection.
 *
 * In a component, both start following once it is mounted: never during server rendering, and
 * after hydration, so the first render in the browser shows what the server rendered (no state,
 * no events, and the connection state the client had then, `closed` on a fresh page).
 */
import {
  computed,
  getCurrentInstance,
  getCurrentScope,
  onMounted,
  onScopeDispose,
  shallowRef,
  toValue,
  watch,
  type MaybeRefOrGetter,
  type Ref,
  type WatchStopHandle,
} from "vue";
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

/** What `useRun` returns: read-only refs. */
export interface UseRunResult {
  /** The run's folded state; `undefined` until the first snapshot. */
  state: Readonly<Ref<RunState | undefined>>;
  /** Events in seq order, each once (the last `maxEvents`). */
  events: Readonly<Ref<readonly AnyRunEvent[]>>;
  /** The client's connection state. */
  connection: Readonly<Ref<ConnectionState>>;
  /** `connection === "open"`. */
  isConnected: Readonly<Ref<boolean>>;
  /** `connection === "reconnecting"`: the connection dropped and the client is getting it back. */
  isReconnecting: Readonly<Ref<boolean>>;
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

/**
 * Calls `start` once the calling component is mounted (or at once outside a component), and the
 * handle it returns when the scope is disposed.
 */
function whenMounted(start: () => WatchStopHandle): void {
  let stop: WatchStopHandle | undefined;
  let disposed = false;
  const run = () => {
    if (!disposed) stop = start();
  };
  if (getCurrentInstance()) onMounted(run);
  else run();
  if (getCurrentScope()) {
    onScopeDispose(() => {
      disposed = true;
      stop?.();
    });
  }
}

/** What `useConnection` returns: read-only refs. */
export interface ConnectionStatus {
  /** The client's connection state. */
  connection: Readonly<Ref<ConnectionState>>;
  /** `connection === "open"`. */
  isConnected: Readonly<Ref<boolean>>;
  /** `connection === "reconnecting"`. */
  isReconnecting: Readonly<Ref<boolean>>;
}

/** The connection state of `client` with its two common questions answered, for a status badge. */
export function useConnection(client: MaybeRefOrGetter<MaybeClient>): ConnectionStatus {
  return status(useConnectionState(client));
}

function status(connection: Readonly<Ref<ConnectionState>>): ConnectionStatus {
  return {
    connection,
    isConnected: computed(() => connection.value === "open"),
    isReconnecting: computed(() => connection.value === "reconnecting"),
  };
}

/** The connection state of `client` (which may be a ref), as a ref. */
export function useConnectionState(client: MaybeRefOrGetter<MaybeClient>): Readonly<Ref<ConnectionState>> {
  const connection = shallowRef<ConnectionState>(stateOf(toValue(client)));
  whenMounted(() =>
    watch(
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
    ),
  );
  return connection;
}

/** Follows run `runId` (a string, ref or getter; `null` follows nothing) on `client`. */
export function useRun(
  client: MaybeRefOrGetter<MaybeClient>,
  runId: MaybeRefOrGetter<string | null | undefined>,
  options: UseRunOptions = {},
): UseRunResult {
  const { since = 0, maxEvents = 1000, stateEvery = "event" } = options;
  const state = shallowRef<RunState | undefined>();
  const events = shallowRef<readonly AnyRunEvent[]>([]);
  const error = shallowRef<RunwireError | undefined>();
  const ended = shallowRef<EndReason | undefined>();
  const connection = useConnectionState(client);

  whenMounted(() =>
    watch(
      () => [toValue(client), toValue(runId)] as const,
      ([c, run], _old, onCleanup) => {
        state.value = undefined;
        events.value = [];
        error.value = undefined;
        ended.value = undefined;
        if (!c || !run) return;
        let active = true;
        const stop = followRun(c, run, { since, stateEvery }, {
          onEvent: (ev) => {
            if (active) events.value = appendEvent(events.value, ev, maxEvents);
          },
          onState: (s) => {
            if (active) state.value = s;
          },
          onEnd: (reason) => {
            if (active) ended.value = reason;
          },
          onError: (e) => {
            if (active) error.value = e;
          },
        });
        onCleanup(() => {
          active = false;
          stop();
        });
      },
      { immediate: true },
    ),
  );
  return { state, events, ...status(connection), error, ended };
}
