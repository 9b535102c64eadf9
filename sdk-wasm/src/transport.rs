//! The two transports, as the driver sees them: open, send a frame, drop to close. What they
//! receive goes to a [`Sink`], the only thing they know of the client.
//!
//! - WebSocket: one socket for every run; frames as JSON text.
//! - SSE: one `fetch` stream of `/v1/runs/{run}/events` per run. `subscribe` opens a stream,
//!   `unsubscribe` aborts it, `auth` sets the token for the streams opened after it. Unlike
//!   `EventSource`, `fetch` can send the token in an `Authorization` header (never in the URL),
//!   sees every event name, and leaves reconnecting to the client.

use alloc::rc::{Rc, Weak};
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::Cell;

use js_sys::Uint8Array;
use wasm_bindgen::prelude::*;
use web_sys::{AbortController, AbortSignal, CloseEvent, WebSocket};

use crate::ClientFrame;
use crate::callback::{Held, settle};
use crate::decode::{Field, Json};
use crate::machine::Input;
use crate::sse::{SseItem, SseParser};
use crate::url::RelayUrl;

// The browser calls each transport makes, one import each instead of one per property set.
#[wasm_bindgen(inline_js = "export function fetchEvents(url, token, signal) {
  const headers = { Accept: 'text/event-stream' };
  if (token) headers.Authorization = 'Bearer ' + token;
  return fetch(url, { headers, signal });
}
export function openSocket(url, onopen, onmessage, onclose) {
  const ws = new WebSocket(url);
  ws.onopen = onopen;
  ws.onmessage = (e) => onmessage(e.data);
  ws.onclose = onclose;
  return ws;
}
export function closeSocket(ws) {
  ws.onopen = ws.onmessage = ws.onclose = null;
  if (ws.readyState <= 1) ws.close(1000); // CONNECTING or OPEN
}")]
extern "C" {
    /// `fetch` (of windows and workers alike) of a run's event stream, with the token, if not
    /// empty, in an `Authorization` header. An invalid URL or token rejects the promise.
    #[wasm_bindgen(js_name = fetchEvents)]
    fn fetch_events(url: &str, token: &str, signal: Option<&AbortSignal>) -> js_sys::Promise;
    /// A WebSocket to `url` with its handlers (`on_message` is called with the message's data);
    /// throws on an invalid URL.
    #[wasm_bindgen(js_name = openSocket, catch)]
    fn open_socket(
        url: &str,
        on_open: &js_sys::Function,
        on_message: &js_sys::Function,
        on_close: &js_sys::Function,
    ) -> Result<WebSocket, JsValue>;
    /// Detaches the socket's handlers and closes it, unless it is closing or closed.
    #[wasm_bindgen(js_name = closeSocket)]
    fn close_socket(ws: &WebSocket);
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

/// The client behind `sink`, unless it is gone or `live` says the transport was dropped.
fn client<S: Sink>(sink: &Weak<S>, live: &Cell<bool>) -> Option<Rc<S>> {
    sink.upgrade().filter(|_| live.get())
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

/// A WebSocket with its four handlers; dropping it detaches them and closes the socket.
#[derive(Debug)]
pub struct WsTransport {
    ws: WebSocket,
    /// False once dropped: the rest of a batch being dispatched is then ignored.
    live: Rc<Cell<bool>>,
    _on_open: Held<dyn FnMut()>,
    _on_message: Held<dyn FnMut(JsValue)>,
    _on_close: Held<dyn FnMut(CloseEvent)>,
}

impl WsTransport {
    /// Opens a socket to `url`; what it receives goes to `sink`.
    pub fn open<S: Sink>(url: &str, sink: Weak<S>) -> Result<Self, JsValue> {
        let weak = sink.clone();
        let on_open = Held::new(Closure::<dyn FnMut()>::new(move || {
            if let Some(client) = weak.upgrade() {
                client.input(Input::Opened);
            }
        }));
        let weak = sink.clone();
        let live = Rc::new(Cell::new(true));
        let live_here = live.clone();
        let on_message = Held::new(Closure::<dyn FnMut(JsValue)>::new(move |data: JsValue| {
            if !data.is_string() {
                return;
            }
            // Several frames, one per line (the `auth` frame asked for batches).
            let lines = data.unchecked_ref::<js_sys::JsString>().split("\n");
            for line in lines.iter() {
                // An app callback may have closed the client or dropped this connection.
                let Some(client) = client(&weak, &live_here) else {
                    return;
                };
                client.frame(&line);
            }
        }));
        let weak = sink;
        let on_close = Held::new(Closure::<dyn FnMut(CloseEvent)>::new(
            move |e: CloseEvent| {
                if let Some(client) = weak.upgrade() {
                    let reason = e.reason();
                    client.input(Input::Closed {
                        code: e.code(),
                        reason: &reason,
                    });
                }
            },
        ));
        let ws = open_socket(
            url,
            on_open.function(),
            on_message.function(),
            on_close.function(),
        )?;
        Ok(Self {
            ws,
            live,
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
        })
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
        self.live.set(false);
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

/// A running stream; dropping it aborts the request and silences its task.
#[derive(Debug)]
struct Stream {
    abort: Option<AbortController>,
    live: Rc<Cell<bool>>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.live.set(false);
        if let Some(a) = &self.abort {
            a.abort();
        }
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
                let stream = self.start(run.clone(), url, token);
                self.streams.push((run, stream));
            }
            ClientFrame::Unsubscribe { run } => self.streams.retain(|(r, _)| *r != run),
            ClientFrame::Ping { .. } => {}
        }
    }

    fn start(&self, run: String, url: String, token: String) -> Stream {
        let live = Rc::new(Cell::new(true));
        let abort = AbortController::new().ok();
        let signal = abort.as_ref().map(AbortController::signal);
        let reader = StreamReader {
            run,
            sink: self.sink.clone(),
            live: live.clone(),
            parser: SseParser::default(),
            any_frame: false,
        };
        let response = fetch_events(&url, &token, signal.as_ref());
        settle(&response, move |r| reader.response(r));
        Stream { abort, live }
    }
}

enum StreamEnd {
    /// The stream ended without saying the run is over.
    Eof,
    /// 204: the run is over and nothing newer is left.
    Finished,
    /// 403.
    Forbidden,
    /// The connection failed: a WebSocket close code with the same meaning.
    Closed(u16),
}

/// A stream's reading, from its response to its end: each step is called when the promise it
/// waited for settles.
struct StreamReader<S: Sink> {
    run: String,
    sink: Weak<S>,
    live: Rc<Cell<bool>>,
    parser: SseParser,
    /// A frame arrived on this stream.
    any_frame: bool,
}

impl<S: Sink> StreamReader<S> {
    /// `fetch` answered (or failed).
    fn response(self, response: Result<JsValue, JsValue>) {
        let Ok(response) = response else {
            return self.end(StreamEnd::Closed(1006));
        };
        let response: web_sys::Response = response.unchecked_into();
        let status = response.status();
        if matches!(status, 200 | 204) {
            if let Some(client) = client(&self.sink, &self.live) {
                client.input(Input::Opened);
            }
        }
        match status {
            200 => {}
            204 => return self.end(StreamEnd::Finished),
            401 => return self.end(StreamEnd::Closed(4002)),
            403 => return self.end(StreamEnd::Forbidden),
            429 => return self.end(StreamEnd::Closed(4029)),
            _ => return self.end(StreamEnd::Closed(1006)),
        }
        let Some(body) = response.body() else {
            return self.end(StreamEnd::Closed(1006));
        };
        self.read(body.get_reader().unchecked_into());
    }

    /// Waits for the next chunk.
    fn read(self, reader: web_sys::ReadableStreamDefaultReader) {
        let chunk = reader.read();
        settle(&chunk, move |chunk| self.chunk(reader, chunk));
    }

    /// A chunk arrived (or the stream ended or failed).
    fn chunk(
        mut self,
        reader: web_sys::ReadableStreamDefaultReader,
        chunk: Result<JsValue, JsValue>,
    ) {
        let Ok(chunk) = chunk else {
            return self.end(StreamEnd::Closed(1006));
        };
        if chunk.field(Field::Done).is_truthy() {
            // A stream that ends before saying anything is a failure, not a reason to reopen
            // it at once (which could spin).
            let end = if self.any_frame {
                StreamEnd::Eof
            } else {
                StreamEnd::Closed(1006)
            };
            return self.end(end);
        }
        let bytes = Uint8Array::new(&chunk.field(Field::Value)).to_vec();
        let items = match self.parser.feed(&bytes) {
            Ok(items) => items,
            Err(_) => return self.end(StreamEnd::Closed(1006)),
        };
        for item in items {
            let Some(client) = client(&self.sink, &self.live) else {
                return self.end(StreamEnd::Eof);
            };
            match item {
                SseItem::Comment => client.input(Input::Alive),
                SseItem::Message { event, data } if event == "close" => {
                    // The relay is going away: {"type":"close","code":1012,...}
                    let code = crate::js::parse(&JsValue::from_str(&data))
                        .ok()
                        .and_then(|v| v.field(Field::Code).as_f64())
                        .filter(|c| (1000.0..5000.0).contains(c))
                        .map_or(1012, |c| c as u16);
                    return self.end(StreamEnd::Closed(code));
                }
                SseItem::Message { data, .. } => {
                    self.any_frame = true;
                    client.frame(&JsValue::from_str(&data));
                }
            }
        }
        self.read(reader);
    }

    /// The stream is over: tells the client, unless the stream was dropped or the client is gone.
    fn end(self, end: StreamEnd) {
        if !self.live.get() {
            return;
        }
        let Some(client) = self.sink.upgrade() else {
            return;
        };
        let run = &self.run;
        let input = match end {
            StreamEnd::Eof => Input::StreamEnded {
                run,
                finished: false,
            },
            StreamEnd::Finished => Input::StreamEnded {
                run,
                finished: true,
            },
            StreamEnd::Forbidden => Input::StreamForbidden { run },
            StreamEnd::Closed(code) => Input::Closed { code, reason: "" },
        };
        client.input(input);
    }
}
