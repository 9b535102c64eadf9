//! runwire's browser client: follows workflow runs live from a runwire relay.
//!
//! A thin `#[wasm_bindgen]` facade (this file) over plain Rust modules:
//! - [`machine`]: the client state machine, free of I/O (connection states, reconnects, resume,
//!   heartbeats, token refresh, transport fallback);
//! - [`registry`]: subscriptions, ordering and deduplication by seq;
//! - [`wire`], [`decode`]: frames, and the rules that read them from parsed JSON (JS objects in
//!   the browser, `serde_json` values in native tests);
//! - [`backoff`]: reconnect delays;
//! - [`url`]: relay addresses;
//! - [`js`]: frames and states as JS objects;
//! - [`driver`], [`transport`], [`callback`]: the browser side (sockets, `fetch` streams, timers,
//!   page events), where every JS callback is owned and released on drop. The transports' calls
//!   of browser APIs, and the reading and parsing of event streams, are JS (`src/transport.js`,
//!   tested in Node by `tests/transport.test.mjs`): the `.wasm` learns only what they receive.
//!
//! Imports run one way: the state machine knows no transport, transports know the client only as
//! a [`transport::Sink`], and the driver, which runs the machine, owns the transports.
//!
//! The state machine and its helpers are tested natively with `cargo test`; the browser side by
//! the `wasm-bindgen-test` suites under `tests/`.
//!
//! The crate is `no_std`. With the default feature `std` it links the standard library like any
//! other crate (its panic handler and allocator). The npm package is built without it: then a
//! panic aborts without formatting a message and a small allocator is used, which keeps
//! `core::fmt` and `dlmalloc` out of the `.wasm` (see [`bare`]).
#![no_std]
#![deny(missing_docs)]

extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod backoff;
#[cfg(all(target_arch = "wasm32", not(feature = "std"), not(test)))]
pub mod bare;
pub mod callback;
pub mod decode;
pub mod driver;
pub mod js;
pub mod machine;
pub mod registry;
pub mod transport;
pub mod url;
pub mod wire;

use alloc::rc::Rc;

use js_sys::Function;
use runwire_protocol::JsonText;
use wasm_bindgen::prelude::*;

pub use callback::{live_callbacks, live_clients};

use crate::backoff::Backoff;
use crate::decode::Field;
use crate::driver::{Inner, SubCallbacks, SubCell, TokenSource, dispatch};
use crate::machine::{Config, Input, Machine, TransportMode};
use crate::registry::SubId;
use crate::url::RelayUrl;

/// A run's state as the SDK holds it: opaque values (`result`, `output_summary`) as their JSON
/// text, which the page parses (see [`JsonText`]).
pub type RunState = runwire_protocol::RunState<JsonText>;
/// A node of a [`RunState`].
pub type NodeState = runwire_protocol::NodeState<JsonText>;
/// A run event as the SDK decodes it, opaque values as their JSON text.
pub type RunEvent = runwire_protocol::RunEvent<JsonText>;
/// A frame the SDK sends (it sends no `ping` id).
pub type ClientFrame = runwire_protocol::ClientFrame<JsonText>;

#[wasm_bindgen(typescript_custom_section)]
const TS_TYPES: &'static str = include_str!("types.d.ts");

/// A connection to a runwire relay, shared by any number of run subscriptions.
#[wasm_bindgen]
#[derive(Debug)]
pub struct RunwireClient {
    inner: Rc<Inner>,
}

#[wasm_bindgen]
impl RunwireClient {
    /// Creates a client. Nothing connects until the first `subscribe`.
    ///
    /// The options are those the package's layer (`npm/src/client.ts`, the only caller: apps
    /// cannot import this module) has checked, with the messages apps see, before the module is
    /// even loaded; they are not checked twice. A value out of shape all the same reads as its
    /// default (a `url` that is not a relay's still throws), and nothing here panics on it.
    #[wasm_bindgen(constructor)]
    pub fn new(
        #[wasm_bindgen(unchecked_param_type = "RunwireClientOptions")] options: JsValue,
    ) -> Result<RunwireClient, JsValue> {
        let get = |key| js::option(&options, key);
        let url = RelayUrl::parse(&get(Field::Url))?;
        let token = get(Field::Token);
        let token = match token.as_string() {
            Some(t) => TokenSource::Fixed(t),
            None => TokenSource::Provider(token.unchecked_into()),
        };
        let defaults = Backoff::default();
        let ms = |key| {
            get(key)
                .as_f64()
                .filter(|n| n.is_finite())
                .map(|n| n.clamp(0.0, f64::from(u32::MAX)) as u32)
        };
        let transport = match get(Field::Transport).as_string().as_deref() {
            Some("websocket") => TransportMode::WebSocket,
            Some("sse") => TransportMode::Sse,
            _ => TransportMode::Auto,
        };
        let cfg = Config {
            backoff: Backoff::new(
                ms(Field::MinReconnectDelayMs).unwrap_or(defaults.min_ms),
                ms(Field::MaxReconnectDelayMs).unwrap_or(defaults.max_ms),
            ),
            max_attempts: ms(Field::MaxReconnectAttempts),
            transport,
            static_token: matches!(token, TokenSource::Fixed(_)),
        };
        let debug = get(Field::Debug);
        let debug = debug.is_function().then(|| debug.unchecked_into());
        let seed = (js_sys::Math::random() * 9_007_199_254_740_992.0) as u64;
        let inner = Inner::new(Machine::new(cfg, seed), url, token, debug);
        driver::attach_page_listeners(&inner);
        Ok(Self { inner })
    }

    /// Calls `listener({ state, previous, reason, code? })` on every connection state change. One
    /// listener: a second call replaces the first (the package's layer keeps its own list).
    #[wasm_bindgen(js_name = onStateChange)]
    pub fn on_state_change(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(change: StateChange) => void")] listener: Function,
    ) {
        self.inner.set_state_listener(listener);
    }

    /// Calls `listener({ code, message, run?, seq? })` when the relay sends something the client
    /// cannot use (a malformed frame, an event whose data does not match its name) or the token
    /// provider fails. The client carries on; nothing is thrown into the app. One listener, as for
    /// `onStateChange`.
    #[wasm_bindgen(js_name = onError)]
    pub fn on_error(
        &self,
        #[wasm_bindgen(unchecked_param_type = "(error: RunwireError) => void")] listener: Function,
    ) {
        self.inner.set_error_listener(listener);
    }

    /// Follows run `run`. Connects on the first subscription. The run id and the options are
    /// checked by the package's layer, as the client's options are; after `close()` this throws.
    pub fn subscribe(
        &self,
        run: &str,
        #[wasm_bindgen(unchecked_param_type = "SubscribeOptions")] handlers: JsValue,
    ) -> Result<Subscription, JsError> {
        if self.inner.machine().is_shut() {
            return Err(JsError::new("RunwireClient: the client is closed"));
        }
        let get = |key| js::option(&handlers, key);
        let callback = |key| {
            let v = get(key);
            v.is_function().then(|| v.unchecked_into::<Function>())
        };
        let callbacks = SubCallbacks {
            on_event: callback(Field::OnEvent),
            on_other_event: callback(Field::OnOtherEvent),
            on_state: callback(Field::OnState),
            on_end: callback(Field::OnEnd),
            state_per_frame: get(Field::StateEvery) == "frame",
            token: callback(Field::Token),
        };
        let since = get(Field::Since).as_f64().map(|s| s as u64);
        let wants_state = callbacks.on_state.is_some();
        let own_token = callbacks.token.is_some();
        let (id, cell) = self.inner.add_sub(callbacks);
        dispatch(
            &self.inner,
            Input::Subscribe {
                id,
                run,
                since,
                wants_state,
                own_token,
            },
        );
        Ok(Subscription {
            inner: self.inner.clone(),
            id,
            cell,
        })
    }

    /// The connection state.
    #[wasm_bindgen(getter, unchecked_return_type = "ConnectionState")]
    pub fn state(&self) -> JsValue {
        self.inner.machine().state().as_str().into()
    }

    /// The transport of the open connection: `"websocket"`, `"sse"`, or `undefined`.
    #[wasm_bindgen(getter, unchecked_return_type = "\"websocket\" | \"sse\" | undefined")]
    pub fn transport(&self) -> JsValue {
        let machine = self.inner.machine();
        machine
            .transport()
            .map_or(JsValue::UNDEFINED, |k| k.as_str().into())
    }

    /// Drops the connection and connects again at once, without waiting for a backoff delay, then
    /// resumes every subscription from its last event (nothing is lost or repeated). After the
    /// client gave up (`closed` with subscriptions left, e.g. after `maxReconnectAttempts`), it
    /// starts again. Does nothing without subscriptions or after `close()`.
    pub fn reconnect(&self) {
        if !self.inner.machine().is_shut() {
            dispatch(&self.inner, Input::Reconnect);
        }
    }

    /// Ends every subscription (`onEnd("unsubscribed")`), closes the connection and releases every
    /// callback. The client cannot be used again.
    pub fn close(&self) {
        dispatch(&self.inner, Input::Close);
        self.inner.release();
    }
}

/// Freeing the client (`free()`, `using`, or garbage collection of the JS object) closes it once
/// no subscription handle refers to it either.
impl Drop for RunwireClient {
    fn drop(&mut self) {
        if Rc::strong_count(&self.inner) == 1 {
            dispatch(&self.inner, Input::Close);
            self.inner.release();
        }
    }
}

/// One `subscribe` call: read its position, or end it. Holding it keeps the client alive.
#[wasm_bindgen]
#[derive(Debug)]
pub struct Subscription {
    inner: Rc<Inner>,
    id: SubId,
    cell: Rc<SubCell>,
}

#[wasm_bindgen]
impl Subscription {
    /// The run's state as folded so far (`undefined` before the first snapshot).
    #[wasm_bindgen(getter, unchecked_return_type = "RunState | undefined")]
    pub fn state(&self) -> JsValue {
        let state = if self.cell.ended.borrow().is_some() {
            self.cell.state.borrow().clone()
        } else {
            let machine = self.inner.machine();
            machine
                .registry()
                .run_of(self.id)
                .filter(|r| r.last_seq.is_some())
                .map(|r| r.state.clone())
        };
        state.map_or(JsValue::UNDEFINED, |s| js::state_to_js(&s))
    }

    /// Seq of the last event delivered (or of the snapshot); `undefined` before the first one.
    #[wasm_bindgen(getter, js_name = lastSeq, unchecked_return_type = "number | undefined")]
    pub fn last_seq(&self) -> JsValue {
        let seq = if self.cell.ended.borrow().is_some() {
            self.cell.last_seq.get()
        } else {
            let machine = self.inner.machine();
            machine.registry().run_of(self.id).and_then(|r| r.last_seq)
        };
        seq.map_or(JsValue::UNDEFINED, |s| JsValue::from_f64(s as f64))
    }

    /// Why the subscription ended, or `undefined` while it is active.
    #[wasm_bindgen(getter, unchecked_return_type = "EndReason | undefined")]
    pub fn ended(&self) -> JsValue {
        let ended = self.cell.ended.borrow();
        ended
            .as_ref()
            .map_or(JsValue::UNDEFINED, |r| r.as_str().into())
    }

    /// Stops following the run: `onEnd("unsubscribed")` is called, then nothing else.
    pub fn unsubscribe(&self) {
        dispatch(&self.inner, Input::Unsubscribe(self.id));
    }
}
