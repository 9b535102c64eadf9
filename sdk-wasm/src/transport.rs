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
//! reports what a connection receives through one callback per connection (`listener`). In JS
//! they cost a fraction of their size as Rust in the `.wasm` (wasm-bindgen's binding for each
//! browser call, the UTF-8 and line handling, the promise steps): docs/benchmarks.md, section 6.

use alloc::rc::{Rc, Weak};
use alloc::string::String;
use alloc::vec::Vec;

use wasm_bindgen::prelude::*;
use web_sys::WebSocket;

use crate::ClientFrame;
use crate::callback::Held;
use crate::machine::Input;
use crate::url::RelayUrl;

// The browser side of both transports: what each receives comes back through one callback,
// `on(what, value)`, whose values transport.js lists.
#[wasm_bindgen(module = "/src/transport.js")]
extern "C" {
    /// A WebSocket to `url`, reporting to `on`; throws on an invalid URL.
    #[wasm_bindgen(js_name = openSocket, catch)]
    fn open_socket(url: &str, on: &js_sys::Function) -> Result<WebSocket, JsValue>;
    /// Detaches the socket's handlers and closes it, unless it is closing or closed.
    #[wasm_bindgen(js_name = closeSocket)]
    fn close_socket(ws: &WebSocket);
    /// `fetch` of a run's event stream with `token` (if not empty), read and parsed in JS and
    /// reported to `on`; returns the function that aborts it.
    #[wasm_bindgen(js_name = openEvents)]
    fn open_events(url: &str, token: &str, on: &js_sys::Function) -> js_sys::Function;
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

/// The callback a socket or a stream (of `run`) reports to; it turns what transport.js says
/// into the client's inputs. transport.js calls it no more once the connection is dropped.
fn listener<S: Sink>(sink: Weak<S>, run: String) -> Held<dyn FnMut(u16, JsValue)> {
    Held::new(Closure::new(move |what: u16, value: JsValue| {
        let Some(client) = sink.upgrade() else {
            return;
        };
        let run = run.as_str();
        let input = match what {
            0 => Input::Opened,
            1 => return client.frame(&value),
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
    }))
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
    _on: Held<dyn FnMut(u16, JsValue)>,
}

impl WsTransport {
    /// Opens a socket to `url`; what it receives goes to `sink`.
    pub fn open<S: Sink>(url: &str, sink: Weak<S>) -> Result<Self, JsValue> {
        let on = listener(sink, String::new());
        let ws = open_socket(url, on.function())?;
        Ok(Self { ws, _on: on })
    }

    fn send(&self, frame: &ClientFrame) {
        // A socket that is closing throws; its close event follows and drives the reconnect.
        let _ = self
            .ws
            .send_with_str(&crate::wire::encode_client_frame(frame));
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
    url: Rc<RelayUrl>,
    token: Option<String>,
    streams: Vec<(String, Stream)>,
    sink: Weak<S>,
}

/// A running stream; dropping it aborts the request and silences its callback.
#[derive(Debug)]
struct Stream {
    abort: js_sys::Function,
    _on: Held<dyn FnMut(u16, JsValue)>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        let _ = self.abort.call0(&JsValue::NULL);
    }
}

impl<S: Sink> SseTransport<S> {
    /// A transport with no stream yet.
    pub fn new(url: Rc<RelayUrl>, sink: Weak<S>) -> Self {
        Self {
            url,
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
                let url = self.url.events(&run, since, epoch.as_deref());
                let token = token.or_else(|| self.token.clone()).unwrap_or_default();
                let on = listener(self.sink.clone(), run.clone());
                let abort = open_events(&url, &token, on.function());
                self.streams.push((run, Stream { abort, _on: on }));
            }
            ClientFrame::Unsubscribe { run } => self.streams.retain(|(r, _)| *r != run),
            ClientFrame::Ping { .. } => {}
        }
    }
}
