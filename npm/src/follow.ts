/**
 * What the React and Vue bindings share: following one run for a `useRun` hook. Each binding
 * keeps its own state holder (React state, Vue refs) and only wires these handlers to it.
 */
import type {
  AnyRunEvent,
  EndReason,
  RunState,
  RunwireClient,
  RunwireError,
  SubscribeOptions,
  Subscription,
} from "./index.js";

/** Options of `useRun`. */
export interface UseRunOptions {
  /** Replay retained events after this seq first; `0` (default) replays the run from its start. */
  since?: number;
  /** Events kept in `events`, oldest dropped first (default 1000). */
  maxEvents?: number;
  /**
   * `"event"` (default): `state` after every event. `"frame"`: at most once per animation frame,
   * with the latest state (see `SubscribeOptions.stateEvery`).
   */
  stateEvery?: SubscribeOptions["stateEvery"];
}

/** What following a run reports. */
export interface FollowHandlers {
  onEvent(ev: AnyRunEvent): void;
  onState(state: RunState): void;
  onEnd(reason: EndReason): void;
  /** Errors about this run or the connection; a `subscribe` that throws comes here too. */
  onError(error: RunwireError): void;
}

/** Follows `run` on `client` until the returned function is called. */
export function followRun(
  client: RunwireClient,
  run: string,
  options: Required<Pick<UseRunOptions, "since" | "stateEvery">>,
  h: FollowHandlers,
): () => void {
  const onError = (error: RunwireError) => {
    if (error.run === undefined || error.run === run) h.onError(error);
  };
  client.onError(onError);
  let subscription: Subscription | undefined;
  try {
    subscription = client.subscribe(run, {
      since: options.since,
      stateEvery: options.stateEvery,
      onEvent: h.onEvent,
      onOtherEvent: h.onEvent,
      onState: h.onState,
      onEnd: h.onEnd,
    });
  } catch (e) {
    h.onError({ code: "subscribe", message: e instanceof Error ? e.message : String(e) });
  }
  return () => {
    try {
      subscription?.unsubscribe();
      subscription?.free();
      client.offError(onError);
    } catch {
      // The client was freed already; its subscriptions and listeners went with it.
    }
  };
}

/** `events` with `ev` appended, keeping the last `max`. */
export function appendEvent(events: readonly AnyRunEvent[], ev: AnyRunEvent, max: number): readonly AnyRunEvent[] {
  const next = events.length >= max ? events.slice(events.length - max + 1) : events.slice();
  next.push(ev);
  return next;
}
