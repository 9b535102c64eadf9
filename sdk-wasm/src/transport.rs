//! The two transports, as the driver sees them: open, send a frame, drop to close. What they
//! receive goes to a [`Sink`], the only thing they know of the client.
//!
//! - WebSocket: one socket for every run; frames as JSON text.
//! - SSE: one `fetch` stream of `/v1/runs/{run}/events` per run. `subscribe` opens a stream,
//!   `unsubscribe` aborts it, `auth` sets the token for the streams opened after it. Unlike
//!   `EventSource`, `fetch` can send the token in an `Authorization` header (never in the URL),
//!   sees every event name, and leaves reconnecting to the client.
//!
//! The browser calls and the event stream's reading and parsing are in `transport.js`, which
//! reports what a connection receives through one callback per connection (`Listener`). In JS
//! they cost a fraction of their size as Rust in the `.wasm` (wasm-bindgen's binding for each
//! browser call, the UTF-8 and line handling, the promise steps): docs/benchmarks.md, section 6.

use alloc::rc::{Rc, Weak};
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::Cell;

use wasm_bindgen::prelude::*;
use web_sys::WebSocket;

use crate::ClientFrame;
use crate::callback::Held;
use crate::machine::Input;

// The browser side of both transports: what each receives comes back through one callback,
// `on(what, value)`, whose values transport.js lists.
#[wasm_bindgen(module = "/src/transport.js")]
extern "C" {
    /// A WebSocket to `url`, reporting to `on`; throws on an invalid URL.
    #[wasm_bindgen(js_name = openSocket, catch)]
    fn open_socket(url: &JsValue, on: &js_sys::Function) -> Result<WebSocket, JsValue>;
    #[wasm_bindgen(js_name = frameText)]
    fn frame_text_of(
        kind: &str,
        run: Option<&str>,
        token: Option<&str>,
        since: Option<f64>,
        epoch: Option<&str>,
        batch: Option<bool>,
    ) -> JsValue;
    #[wasm_bindgen(js_name = sendText)]
    fn send_text(ws: &WebSocket, text: &JsValue);
    /// Detaches the socket's handlers and closes it, unless it is closing or closed.
    #[wasm_bindgen(js_name = closeSocket)]
    fn close_socket(ws: &WebSocket);
    /// `fetch` of the event stream of `run` under `base`, from `since` in `epoch`, with `token`
    /// (if not empty), read and parsed in JS and reported to `on`; returns the function that
    /// aborts it.
    #[wasm_bindgen(js_name = openEvents)]
    fn open_events(
        base: &JsValue,
        run: &str,
        since: Option<f64>,
        epoch: Option<&str>,
        token: &str,
        on: &js_sys::Function,
    ) -> js_sys::Function;
}

/// The JSON text of `frame`, as a JS string (ping ids are never sent by the SDK and are left
/// out). Seqs are numbers in JS, exact up to 2^53.
pub fn frame_text(frame: &ClientFrame) -> JsValue {
    match frame {
        ClientFrame::Auth { token, batch } => {
            frame_text_of("auth", None, Some(token), None, None, batch.then_some(true))
        }
        ClientFrame::Subscribe {
            run,
            since,
            epoch,
            token,
        } => frame_text_of(
            "subscribe",
            Some(run),
            token.as_deref(),
            since.map(|s| s as f64),
            epoch.as_deref(),
            None,
        ),
        ClientFrame::Unsubscribe { run } => {
            frame_text_of("unsubscribe", Some(run), None, None, None, None)
        }
        ClientFrame::Ping { .. } => frame_text_of("ping", None, None, None, None, None),
    }
}

/// Where a transport delivers what it receives: the client. Transports hold it weakly, so that a
/// socket or a stream never keeps a freed client alive, and each delivery first checks that the
/// client is still there.
pub trait Sink: 'static {
    /// Feeds `input` to the client's state machine.
    fn input(self: Rc<Self>, input: Input<'_>);
    /// Feeds a text frame (a JS string) to the client.
    fn frame(self: Rc<Self>, text: &JsValue);
}

/// The callback a socket or a stream (of `run`) reports to, which turns what transport.js says
/// into the client's inputs; dropping it silences it, even in the middle of a batch of frames (an
/// app callback may drop the connection). transport.js calls it no more once the connection is
/// dropped.
#[derive(Debug)]
struct Listener {
    live: Rc<Cell<bool>>,
    on: Held<dyn FnMut(u16, JsValue)>,
}

impl Listener {
    fn new<S: Sink>(sink: Weak<S>, run: String) -> Self {
        let live = Rc::new(Cell::new(true));
        let live_here = live.clone();
        let on = Held::new(Closure::new(move |what: u16, value: JsValue| {
            let Some(client) = sink.upgrade() else {
                return;
            };
            let run = run.as_str();
            let input = match what {
                0 => Input::Opened,
                1 => {
                    // One call per batch: a call from JS costs more than reading an array.
                    let frames: &js_sys::Array = value.unchecked_ref();
                    for i in 0..frames.length() {
                        if !live_here.get() {
                            return;
                        }
                        client.clone().frame(&frames.get(i));
                    }
                    return;
                }
                2 => Input::Alive,
                3 | 4 => Input::StreamEnded {
                    run,
                    finished: what == 4,
                },
                5 => Input::StreamForbidden { run },
                code => {
                    let reason = value.as_string().unwrap_or_default();
                    return client.input(Input::Closed {
                        code,
                        reason: &reason,
                    });
                }
            };
            client.input(input);
        }));
        Self { live, on }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.live.set(false);
    }
}

/// The connection in use.
#[derive(Debug)]
pub enum Transport<S: Sink> {
    /// A WebSocket.
    WebSocket(WsTransport),
    /// SSE streams.
    Sse(SseTransport<S>),
}

impl<S: Sink> Transport<S> {
    /// Sends a frame (for SSE: acts on it).
    pub fn send(&mut self, frame: ClientFrame) {
        match self {
            Self::WebSocket(t) => t.send(&frame),
            Self::Sse(t) => t.send(frame),
        }
    }
}

/// A WebSocket with its handler; dropping it detaches the handler and closes the socket.
#[derive(Debug)]
pub struct WsTransport {
    ws: WebSocket,
    _on: Listener,
}

impl WsTransport {
    /// Opens a socket to `url`; what it receives goes to `sink`.
    pub fn open<S: Sink>(url: &JsValue, sink: Weak<S>) -> Result<Self, JsValue> {
        let on = Listener::new(sink, String::new());
        let ws = open_socket(url, on.on.function())?;
        Ok(Self { ws, _on: on })
    }

    fn send(&self, frame: &ClientFrame) {
        send_text(&self.ws, &frame_text(frame));
    }
}

impl Drop for WsTransport {
    fn drop(&mut self) {
        close_socket(&self.ws);
    }
}

/// SSE streams, one per run.
#[derive(Debug)]
pub struct SseTransport<S: Sink> {
    /// The relay's HTTP base (`RelayUrl::http_base`), under which each run's stream is.
    base: JsValue,
    token: Option<String>,
    streams: Vec<(String, Stream)>,
    sink: Weak<S>,
}

/// A running stream; dropping it aborts the request and silences its callback.
#[derive(Debug)]
struct Stream {
    abort: js_sys::Function,
    _on: Listener,
}

impl Drop for Stream {
    fn drop(&mut self) {
        crate::js::call1(&self.abort, &JsValue::UNDEFINED);
    }
}

impl<S: Sink> SseTransport<S> {
    /// A transport with no stream yet, for the relay at HTTP base `base`.
    pub fn new(base: JsValue, sink: Weak<S>) -> Self {
        Self {
            base,
            token: None,
            streams: Vec::new(),
            sink,
        }
    }

    fn send(&mut self, frame: ClientFrame) {
        match frame {
            ClientFrame::Auth { token, .. } => self.token = Some(token),
            ClientFrame::Subscribe {
                run,
                since,
                epoch,
                token,
            } => {
                self.streams.retain(|(r, _)| *r != run);
                let token = token.or_else(|| self.token.clone()).unwrap_or_default();
                let on = Listener::new(self.sink.clone(), run.clone());
                let abort = open_events(
                    &self.base,
                    &run,
                    since.map(|s| s as f64),
                    epoch.as_deref(),
                    &token,
                    on.on.function(),
                );
                self.streams.push((run, Stream { abort, _on: on }));
            }
            ClientFrame::Unsubscribe { run } => self.streams.retain(|(r, _)| *r != run),
            ClientFrame::Ping { .. } => {}
        }
    }
}
