/// <reference lib="esnext.disposable" preserve="true" />
/**
 * The client the app holds. It can be created and subscribed to before the WebAssembly module is
 * loaded (at module scope, during server rendering): until the module is ready it keeps the
 * subscriptions and listeners it is given, starts loading the module on the first `subscribe`,
 * and hands everything over, in order, once it is. Afterwards every call goes straight to the
 * WebAssembly client.
 */
import {
  RunwireClient as WasmClient,
  type Subscription as WasmSubscription,
} from "../wasm/runwire_sdk.js";
import type {
  ConnectionState,
  EndReason,
  RunState,
  RunwireClientOptions,
  RunwireError,
  StateChange,
  SubscribeOptions,
} from "../wasm/runwire_sdk.js";
import { isReady, ready } from "./load.js";

type StateListener = (change: StateChange) => void;
type ErrorListener = (error: RunwireError) => void;

/**
 * The app's listeners and the connection state it has been told, kept apart from the client
 * object: the WebAssembly client holds the two functions that feed it, and must not hold the
 * client object itself (which would then never be garbage-collected).
 */
class Listeners {
  state: ConnectionState = "closed";
  readonly onState = new Set<StateListener>();
  readonly onError = new Set<ErrorListener>();

  /** A state change, told once: the WebAssembly client repeats the `connecting` announced early. */
  change(change: StateChange): void {
    if (change.state === this.state) return;
    const told = { ...change, previous: this.state };
    this.state = change.state;
    for (const f of [...this.onState]) {
      try {
        f(told);
      } catch {
        // A listener's exception is its own; the others are still told.
      }
    }
  }

  error(error: RunwireError): void {
    for (const f of [...this.onError]) {
      try {
        f(error);
      } catch {
        // As above.
      }
    }
  }
}

/** A connection to a runwire relay, shared by any number of run subscriptions. */
export class RunwireClient {
  readonly #options: RunwireClientOptions;
  readonly #listeners = new Listeners();
  #inner: WasmClient | undefined;
  /** Subscriptions made before the module was ready, in order. */
  #pending: Subscription[] = [];
  #closed = false;
  #freed = false;

  /**
   * Creates a client. Nothing connects (and nothing is loaded) until the first `subscribe`.
   * Throws on invalid options.
   */
  constructor(options: RunwireClientOptions) {
    checkOptions(options);
    this.#options = { ...options, debug: logger(options.debug) };
    if (isReady()) this.#start();
  }

  /** Builds the WebAssembly client and hands it what was asked before it existed. */
  #start(): void {
    if (this.#inner || this.#closed || this.#freed) return;
    const listeners = this.#listeners;
    let inner: WasmClient;
    try {
      inner = new WasmClient(this.#options);
    } catch (e) {
      this.#fail("options", e);
      return;
    }
    this.#inner = inner;
    inner.onStateChange((change) => listeners.change(change));
    inner.onError((error) => listeners.error(error));
    const pending = this.#pending;
    this.#pending = [];
    for (const sub of pending) sub._start(inner);
  }

  /** Loads the module (once for every client), then starts this client. */
  #load(): void {
    ready(this.#options.wasm).then(
      () => this.#start(),
      (e: unknown) => this.#fail("wasm_load", e),
    );
  }

  #fail(code: string, e: unknown): void {
    const message = e instanceof Error ? e.message : String(e);
    this.#listeners.error({ code, message: `RunwireClient: ${message}` });
    this.#listeners.change({ state: "closed", previous: this.#listeners.state, reason: message });
  }

  #live(): WasmClient | undefined {
    if (this.#freed) throw new Error("RunwireClient: the client was freed");
    return this.#inner;
  }

  /** Calls `listener({ state, previous, reason, code? })` on every connection state change. */
  onStateChange(listener: (change: StateChange) => void): void {
    if (!this.#closed) this.#listeners.onState.add(listener);
  }

  /** Removes a listener added with `onStateChange`. */
  offStateChange(listener: (change: StateChange) => void): void {
    this.#listeners.onState.delete(listener);
  }

  /**
   * Calls `listener({ code, message, run?, seq? })` when the relay sends something the client
   * cannot use (a malformed frame, an event whose data does not match its name), the token
   * provider fails, or the WebAssembly module cannot be loaded (`wasm_load`). The client carries
   * on; nothing is thrown into the app.
   */
  onError(listener: (error: RunwireError) => void): void {
    if (!this.#closed) this.#listeners.onError.add(listener);
  }

  /** Removes a listener added with `onError`. */
  offError(listener: (error: RunwireError) => void): void {
    this.#listeners.onError.delete(listener);
  }

  /**
   * Follows run `run`. Connects on the first subscription (loading the WebAssembly module first
   * if need be). Throws on an invalid run id or options, or after `close()`.
   */
  subscribe(run: string, options: SubscribeOptions = {}): Subscription {
    const inner = this.#live();
    if (this.#closed) throw new Error("RunwireClient: the client is closed");
    checkSubscribe(run, options);
    if (inner) return new Subscription(run, inner.subscribe(run, options));
    const sub = new Subscription(run, undefined, options, () => {
      this.#pending = this.#pending.filter((s) => s !== sub);
      this.#announce();
    });
    this.#pending.push(sub);
    this.#announce();
    this.#load();
    return sub;
  }

  /** Before the module is ready: `connecting` while subscriptions wait for it. */
  #announce(): void {
    if (this.#inner) return;
    const state = this.#pending.length > 0 && !this.#closed ? "connecting" : "closed";
    const reason = state === "connecting" ? "subscribe" : this.#closed ? "client closed" : "idle";
    this.#listeners.change({ state, previous: this.#listeners.state, reason });
  }

  /** The connection state. */
  get state(): ConnectionState {
    const inner = this.#live();
    return inner ? inner.state : this.#listeners.state;
  }

  /** The transport of the open connection: `"websocket"`, `"sse"`, or `undefined`. */
  get transport(): "websocket" | "sse" | undefined {
    return this.#live()?.transport;
  }

  /**
   * Drops the connection and connects again at once, without waiting for a backoff delay, then
   * resumes every subscription from its last event (nothing is lost or repeated). After the
   * client gave up (`closed` with subscriptions left, e.g. after `maxReconnectAttempts`), it
   * starts again. Does nothing without subscriptions or after `close()`.
   */
  reconnect(): void {
    const inner = this.#live();
    if (inner) inner.reconnect();
    else if (this.#pending.length > 0 && !this.#closed) this.#load();
  }

  /**
   * Ends every subscription (`onEnd("unsubscribed")`), closes the connection and releases every
   * callback. The client cannot be used again.
   */
  close(): void {
    const inner = this.#live();
    if (this.#closed) return;
    this.#closed = true;
    if (inner) {
      inner.close();
    } else {
      const pending = this.#pending;
      this.#pending = [];
      for (const sub of pending) sub._end("unsubscribed");
      this.#announce();
    }
    this.#listeners.onState.clear();
    this.#listeners.onError.clear();
  }

  /**
   * Releases the client. Subscription handles still held keep it running until they are freed
   * too; without any, it closes.
   */
  free(): void {
    if (this.#freed) return;
    const inner = this.#inner;
    if (inner) {
      this.#inner = undefined;
      inner.free();
    } else {
      this.close();
    }
    this.#freed = true;
  }

  /** `using client = new RunwireClient(…)` frees it at the end of the block. */
  [Symbol.dispose](): void {
    this.free();
  }
}

/** One `subscribe` call: read its position, or end it. */
export class Subscription {
  /** The run followed. */
  readonly run: string;
  #inner: WasmSubscription | undefined;
  #options: SubscribeOptions | undefined;
  #cancel: (() => void) | undefined;
  #ended: EndReason | undefined;
  #freed = false;

  /** @internal Made by `RunwireClient.subscribe`. */
  constructor(run: string, inner?: WasmSubscription, options?: SubscribeOptions, cancel?: () => void) {
    this.run = run;
    this.#inner = inner;
    this.#options = options;
    this.#cancel = cancel;
  }

  /** @internal The module is ready: subscribe for real. */
  _start(client: WasmClient): void {
    const options = this.#options;
    this.#options = undefined;
    this.#cancel = undefined;
    if (!options) return;
    try {
      this.#inner = client.subscribe(this.run, options);
    } catch {
      // Checked already when it was asked for; the client was closed since.
      this._end("unsubscribed");
      return;
    }
    if (this.#freed) this.#inner.free();
  }

  /** @internal Ended before it started. */
  _end(reason: EndReason): void {
    const onEnd = this.#options?.onEnd;
    this.#options = undefined;
    this.#cancel = undefined;
    this.#ended = reason;
    onEnd?.(reason);
  }

  /** The run's state as folded so far (`undefined` before the first snapshot). */
  get state(): RunState | undefined {
    return this.#inner?.state;
  }

  /** Seq of the last event delivered (or of the snapshot); `undefined` before the first one. */
  get lastSeq(): number | undefined {
    return this.#inner?.lastSeq;
  }

  /** Why the subscription ended, or `undefined` while it is active. */
  get ended(): EndReason | undefined {
    return this.#inner ? this.#inner.ended : this.#ended;
  }

  /** Stops following the run: `onEnd("unsubscribed")` is called, then nothing else. */
  unsubscribe(): void {
    if (this.#inner) {
      this.#inner.unsubscribe();
    } else if (this.#options) {
      const cancel = this.#cancel;
      this._end("unsubscribed");
      cancel?.();
    }
  }

  /** Releases the handle; the subscription itself goes on until `unsubscribe()` or its end. */
  free(): void {
    if (this.#freed) return;
    this.#freed = true;
    this.#inner?.free();
  }

  /** `using sub = client.subscribe(…)` frees the handle at the end of the block. */
  [Symbol.dispose](): void {
    this.free();
  }
}

const RUN_ID = /^[A-Za-z0-9_.:-]{1,128}$/;

/**
 * The checks of the client's options, made before the module is loaded. They are the only ones:
 * the WebAssembly class reads what this layer, its only caller, hands it.
 */
function checkOptions(options: RunwireClientOptions): void {
  if (typeof options !== "object" || options === null) {
    throw new Error("RunwireClient: options must be an object");
  }
  if (typeof options.url !== "string") throw new Error("RunwireClient: `url` must be a string");
  const m = /^(wss?|https?):\/\/([^/?#]*)/i.exec(options.url);
  if (!m) throw new Error(`RunwireClient: url must start with ws:// or wss://, got "${options.url}"`);
  if (!m[2]) throw new Error(`RunwireClient: url has no host: "${options.url}"`);
  if (typeof options.token !== "string" && typeof options.token !== "function") {
    throw new Error("RunwireClient: `token` must be a string or a function returning one");
  }
  for (const name of ["minReconnectDelayMs", "maxReconnectDelayMs", "maxReconnectAttempts"] as const) {
    const v = options[name];
    if (v != null && !(typeof v === "number" && v >= 0)) {
      throw new Error(`RunwireClient: \`${name}\` must be a non-negative number`);
    }
  }
  const debug = options.debug;
  if (debug !== undefined && typeof debug !== "boolean" && typeof debug !== "function") {
    throw new Error("RunwireClient: `debug` must be a boolean or a function");
  }
  const t = options.transport;
  if (t !== undefined && t !== "auto" && t !== "websocket" && t !== "sse") {
    throw new Error(
      `RunwireClient: \`transport\` must be "auto", "websocket" or "sse", got "${String(t)}"`,
    );
  }
}

/** The checks of a run id and a subscription's options (the only ones, as above). */
function checkSubscribe(run: string, options: SubscribeOptions): void {
  if (typeof run !== "string" || !RUN_ID.test(run)) {
    throw new Error(`RunwireClient: invalid run id "${run}" (1 to 128 of A-Z a-z 0-9 _ . : -)`);
  }
  const every = options?.stateEvery;
  if (every !== undefined && every !== "event" && every !== "frame") {
    throw new Error('RunwireClient: `stateEvery` must be "event" or "frame"');
  }
  const since = options?.since;
  if (since !== undefined && !(typeof since === "number" && since >= 0 && Number.isInteger(since))) {
    throw new Error("RunwireClient: `since` must be a non-negative integer");
  }
  const token = options?.token;
  if (token !== undefined && typeof token !== "function") {
    throw new Error("RunwireClient: a subscription's `token` must be a function returning one");
  }
}

const TOKEN = /"token":"(?:[^"\\]|\\.)*"/g;

/**
 * The `debug` option as the WebAssembly client takes it: a function, which never passes a token
 * on (frames sent carry them: they are replaced by `[redacted]` here).
 */
function logger(
  debug: RunwireClientOptions["debug"],
): ((message: string, detail?: unknown) => void) | undefined {
  if (!debug) return undefined;
  const log = typeof debug === "function" ? debug : (m: string, d?: unknown) => console.debug(`runwire: ${m}`, d);
  return (message, detail) => {
    try {
      log(message, typeof detail === "string" ? detail.replace(TOKEN, '"token":"[redacted]"') : detail);
    } catch {
      // A logger's exception is its own.
    }
  };
}
