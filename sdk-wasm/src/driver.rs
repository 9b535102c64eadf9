//! Runs the state machine in the browser: feeds it inputs from sockets, timers and page events,
//! and carries out its effects (connect, send, arm timers, call the app).
//!
//! No `RefCell` borrow is held while app code runs, so callbacks may call back into the client
//! (unsubscribe from `onEvent`, close from `onStateChange`) freely.

use alloc::rc::{Rc, Weak};
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};

use js_sys::Function;
use runwire_protocol::EndReason;
use wasm_bindgen::prelude::*;

use crate::RunState;
use crate::callback::{ClientToken, Held};
use crate::decode::Field;
use crate::machine::{ClientError, Effect, Input, Kind, Machine, Timer, TokenReason};
use crate::registry::SubId;
use crate::transport::{Sink, SseTransport, Transport, WsTransport};
use crate::url::RelayUrl;
use crate::wire::Ended;

/// Where the token comes from.
#[derive(Debug)]
pub enum TokenSource {
    /// A fixed token.
    Fixed(String),
    /// A function returning a token or a promise of one, called with what it must cover.
    Provider(Function),
}

/// The app's callbacks for one subscription.
#[derive(Debug)]
pub struct SubCallbacks {
    /// `onEvent`: events with a typed name.
    pub on_event: Option<Function>,
    /// `onOtherEvent`: events with any other name.
    pub on_other_event: Option<Function>,
    /// `onState`.
    pub on_state: Option<Function>,
    /// `onEnd`.
    pub on_end: Option<Function>,
    /// `stateEvery: "frame"`: `onState` at most once per animation frame, with the latest state.
    pub state_per_frame: bool,
    /// `token`: the subscription's own token provider.
    pub token: Option<Function>,
}

/// What a subscription handle can still read after the subscription ended.
#[derive(Debug, Default)]
pub struct SubCell {
    /// Why it ended, once it has.
    pub ended: RefCell<Option<Ended>>,
    /// The last seq delivered when it ended.
    pub last_seq: Cell<Option<u64>>,
    /// The state it ended with.
    pub state: RefCell<Option<Rc<RunState>>>,
}

#[derive(Debug)]
struct SubRecord {
    id: SubId,
    callbacks: SubCallbacks,
    cell: Rc<SubCell>,
    /// The node objects of the last state handed to `onState`, reused in the next one.
    nodes: crate::js::NodeObjects,
    /// The state changed since `onState` was last called (`stateEvery: "frame"`).
    state_pending: bool,
}

#[derive(Debug, Default)]
struct App {
    state_listener: Option<Function>,
    error_listener: Option<Function>,
    subs: Vec<SubRecord>,
    next_id: SubId,
}

#[derive(Debug, Default)]
struct Io {
    transport: Option<Transport<Inner>>,
    /// The client's timers and page listeners, until `close()`.
    waker: Option<Waker>,
    /// The frame being dispatched, as the object `JSON.parse` made: what `onEvent` receives.
    frame: Option<JsValue>,
    /// The pending `onState`s are called before the next frame (`stateEvery: "frame"`).
    state_flush: bool,
}

/// A client's shared state. The app's handle owns the only strong reference; sockets, timers and
/// tasks hold weak ones, so freeing the handle frees everything.
#[derive(Debug)]
pub struct Inner {
    machine: RefCell<Machine>,
    io: RefCell<Io>,
    app: RefCell<App>,
    url: RelayUrl,
    token: TokenSource,
    /// The `debug` option: called with what the client does (never with a token).
    debug: Option<Function>,
    _alive: ClientToken,
}

impl Inner {
    /// A client with its timers; page listeners are attached by [`attach_page_listeners`].
    pub fn new(
        machine: Machine,
        url: RelayUrl,
        token: TokenSource,
        debug: Option<Function>,
    ) -> Rc<Self> {
        Rc::new_cyclic(|weak| Self {
            machine: RefCell::new(machine),
            io: RefCell::new(Io {
                waker: Some(Waker::new(weak.clone())),
                ..Io::default()
            }),
            app: RefCell::new(App::default()),
            url,
            token,
            debug,
            _alive: ClientToken::default(),
        })
    }

    /// Tells the `debug` logger, if any.
    fn debug(&self, message: &str, detail: &JsValue) {
        if let Some(f) = &self.debug {
            crate::js::call2(f, &message.into(), detail);
        }
    }

    /// The state machine, read-only.
    pub fn machine(&self) -> core::cell::Ref<'_, Machine> {
        self.machine.borrow()
    }

    /// Sets the `onStateChange` listener (one: the package's layer keeps its own list).
    pub fn set_state_listener(&self, f: Function) {
        if !self.machine.borrow().is_shut() {
            self.app.borrow_mut().state_listener = Some(f);
        }
    }

    /// Sets the `onError` listener (one, as above).
    pub fn set_error_listener(&self, f: Function) {
        if !self.machine.borrow().is_shut() {
            self.app.borrow_mut().error_listener = Some(f);
        }
    }

    /// Registers a subscription's callbacks; returns its id and its cell.
    pub fn add_sub(&self, callbacks: SubCallbacks) -> (SubId, Rc<SubCell>) {
        let mut app = self.app.borrow_mut();
        app.next_id = app.next_id.wrapping_add(1);
        let id = app.next_id;
        let cell = Rc::new(SubCell::default());
        app.subs.push(SubRecord {
            id,
            callbacks,
            cell: cell.clone(),
            nodes: crate::js::NodeObjects::default(),
            state_pending: false,
        });
        (id, cell)
    }

    /// Drops every app callback and page listener: after `close()` nothing is called again.
    pub fn release(&self) {
        // Cancels every timer and removes the page listeners.
        let waker = self.io.borrow_mut().waker.take();
        drop(waker);
        let mut app = self.app.borrow_mut();
        app.state_listener = None;
        app.error_listener = None;
        app.subs.clear();
    }
}

/// Feeds `input` to the state machine and carries out what it asks.
pub fn dispatch(inner: &Rc<Inner>, input: Input<'_>) {
    let effects = inner
        .machine
        .borrow_mut()
        .handle(input, js_sys::Date::now());
    for effect in effects {
        execute(inner, effect);
    }
}

/// How the transports reach the client.
impl Sink for Inner {
    fn input(self: Rc<Self>, input: Input<'_>) {
        dispatch(&self, input);
    }

    fn frame(self: Rc<Self>, text: &JsValue) {
        dispatch_frame(&self, text);
    }
}

/// Dispatches a text frame (a JS string): parsed by `JSON.parse`, decoded field by field, and
/// kept at hand as the object `onEvent` receives.
pub fn dispatch_frame(inner: &Rc<Inner>, text: &JsValue) {
    inner.debug("received", text);
    let frame = crate::js::parse(text).and_then(|object| {
        let frame = crate::js::decode_frame(&object);
        inner.io.borrow_mut().frame = Some(object);
        frame
    });
    dispatch(inner, Input::Frame(frame));
    inner.io.borrow_mut().frame = None;
}

fn execute(inner: &Rc<Inner>, effect: Effect) {
    // An app callback may have closed the client while this dispatch's effects run: start
    // nothing new after that.
    let starts = matches!(
        effect,
        Effect::FetchToken { .. } | Effect::Connect(_) | Effect::Send(_) | Effect::SetTimer(..)
    );
    if starts && inner.machine.borrow().is_shut() {
        return;
    }
    match effect {
        Effect::FetchToken { req, reason, own } => fetch_token(inner, req, reason, own),
        Effect::Connect(kind) => connect(inner, kind),
        Effect::Disconnect => {
            let old = inner.io.borrow_mut().transport.take();
            drop(old);
        }
        Effect::Send(frame) => {
            if inner.debug.is_some() {
                // With its token: the package's `debug` wrapper redacts it before the app's
                // logger sees it.
                inner.debug("sent", &crate::transport::frame_text(&frame));
            }
            if let Some(t) = inner.io.borrow_mut().transport.as_mut() {
                t.send(frame);
            }
        }
        Effect::SetTimer(timer, ms) => {
            if timer == Timer::Backoff {
                inner.debug("reconnecting in ms", &ms.into());
            }
            if let Some(w) = &inner.io.borrow().waker {
                arm(&w.js, timer as u16, f64::from(ms));
            }
        }
        Effect::ClearTimer(timer) => {
            if let Some(w) = &inner.io.borrow().waker {
                disarm(&w.js, timer as u16);
            }
        }
        Effect::State {
            state,
            previous,
            reason,
            code,
        } => {
            let change = crate::js::object();
            change.set_str(Field::State, state.as_str());
            change.set_str(Field::Previous, previous.as_str());
            change.set_str(Field::Reason, &reason);
            change.put_num(Field::Code, code.map(f64::from));
            inner.debug("state", &change);
            let listener = inner.app.borrow().state_listener.clone();
            if let Some(f) = listener {
                crate::js::call1(&f, &change);
            }
        }
        Effect::Event(sub, known) => {
            fn pick(known: bool) -> impl Fn(&SubCallbacks) -> Option<&Function> {
                move |c| {
                    if known {
                        c.on_event.as_ref()
                    } else {
                        c.on_other_event.as_ref()
                    }
                }
            }
            let Some(f) = sub_callback(inner, sub, pick(known)) else {
                return;
            };
            let Some(event) = inner.io.borrow().frame.clone() else {
                return;
            };
            crate::js::call1(&f, &event);
        }
        Effect::RunState(sub, state) => {
            // Built with the app's records borrowed, called after: the callback may subscribe.
            let call = {
                let mut app = inner.app.borrow_mut();
                let Some(record) = app.subs.iter_mut().find(|s| s.id == sub) else {
                    return;
                };
                let Some(f) = &record.callbacks.on_state else {
                    return;
                };
                if record.callbacks.state_per_frame {
                    record.state_pending = true;
                    None
                } else {
                    Some((f.clone(), record.nodes.state_to_js(&state)))
                }
            };
            match call {
                Some((f, state)) => {
                    crate::js::call1(&f, &state);
                }
                None => schedule_state_flush(inner),
            }
        }
        Effect::End {
            sub,
            reason,
            last_seq,
            state,
        } => {
            let record = {
                let mut app = inner.app.borrow_mut();
                app.subs
                    .iter()
                    .position(|s| s.id == sub)
                    .map(|i| app.subs.swap_remove(i))
            };
            let Some(mut record) = record else { return };
            record.cell.last_seq.set(last_seq);
            // A state held back for the next frame is the run's last: it comes before `onEnd`,
            // unless the app itself stopped listening.
            if let (true, Some(f), Some(state)) = (
                record.state_pending && !reason.is(EndReason::Unsubscribed),
                &record.callbacks.on_state,
                &state,
            ) {
                crate::js::call1(f, &record.nodes.state_to_js(state));
            }
            *record.cell.state.borrow_mut() = state;
            let name = JsValue::from_str(reason.as_str());
            *record.cell.ended.borrow_mut() = Some(reason);
            if let Some(f) = record.callbacks.on_end {
                crate::js::call1(&f, &name);
            }
        }
        Effect::Error(e) => report(inner, &e),
    }
}

/// Arranges for [`flush_states`] to run before the next frame, once however many states wait.
fn schedule_state_flush(inner: &Rc<Inner>) {
    let mut io = inner.io.borrow_mut();
    if !io.state_flush {
        if let Some(w) = &io.waker {
            arm(&w.js, STATE_FLUSH, -1.0);
            io.state_flush = true;
        }
    }
}

/// Calls `onState` once for each subscription whose state changed since its last call, with the
/// state as it is now.
fn flush_states(inner: &Rc<Inner>) {
    inner.io.borrow_mut().state_flush = false;
    loop {
        // Built with the records borrowed, called after: the callback may (un)subscribe or close.
        let call = {
            let machine = inner.machine.borrow();
            let mut app = inner.app.borrow_mut();
            let Some(record) = app.subs.iter_mut().find(|s| s.state_pending) else {
                break;
            };
            record.state_pending = false;
            let (Some(f), Some(run)) = (
                &record.callbacks.on_state,
                machine.registry().run_of(record.id),
            ) else {
                continue;
            };
            (f.clone(), record.nodes.state_to_js(&run.state))
        };
        crate::js::call1(&call.0, &call.1);
    }
}

fn report(inner: &Rc<Inner>, e: &ClientError) {
    let Some(listener) = inner.app.borrow().error_listener.clone() else {
        return;
    };
    let obj = crate::js::object();
    obj.set_str(Field::Code, &e.code);
    obj.set_str(Field::Message, &e.message);
    obj.put_str(Field::Run, &e.run);
    obj.put_num(Field::Seq, e.seq.map(|s| s as f64));
    crate::js::call1(&listener, &obj);
}

fn sub_callback(
    inner: &Rc<Inner>,
    sub: SubId,
    pick: impl Fn(&SubCallbacks) -> Option<&Function>,
) -> Option<Function> {
    let app = inner.app.borrow();
    let record = app.subs.iter().find(|s| s.id == sub)?;
    pick(&record.callbacks).cloned()
}

fn connect(inner: &Rc<Inner>, kind: Kind) {
    let old = inner.io.borrow_mut().transport.take();
    drop(old);
    let sink = Rc::downgrade(inner);
    let transport = match kind {
        Kind::WebSocket => WsTransport::open(&inner.url.websocket, sink)
            .map(Transport::WebSocket)
            .ok(),
        Kind::Sse => Some(Transport::Sse(SseTransport::new(
            inner.url.http_base.clone(),
            sink,
        ))),
    };
    match transport {
        Some(t) => inner.io.borrow_mut().transport = Some(t),
        None => dispatch(
            inner,
            Input::Closed {
                code: 1006,
                reason: "could not open the connection",
            },
        ),
    }
}

// `askToken`: calls provider `f` with `context` (`{ reason, runs }`: why a token is asked for,
// and the run ids it must cover), or takes `f` itself (a fixed token), and answers request `req`
// through the client's waker `w` (below): `w.f(19, [req, token])`, or `w.f(20, [req, why])` when
// the provider threw, rejected, or gave anything but a non-empty string; always from a microtask,
// never from inside this call. One callback per client rather than one per request:
// wasm-bindgen's code for a closure called once is left out of the `.wasm`.
#[wasm_bindgen(inline_js = "export function askToken(f, context, w, req) {
  const on = (ok, v) => w.f(ok ? 19 : 20, [req, v]);
  let p;
  try {
    p = typeof f == 'function' ? f(context) : f;
  } catch (e) {
    p = Promise.reject(e);
  }
  Promise.resolve(p).then(
    (t) => (typeof t == 'string' && t ? on(1, t) : on(0, 'the token provider did not return a string')),
    (e) => {
      let why = 'unknown error';
      try {
        why = typeof e == 'string' ? e : typeof e.message == 'string' ? e.message : why;
      } catch {}
      on(0, why);
    },
  );
}")]
extern "C" {
    #[wasm_bindgen(js_name = askToken)]
    fn ask_token(provider: &JsValue, context: &JsValue, w: &WakerJs, req: u32);
}

/// Asks the client's token provider, or the own provider of a run's app subscription, for a
/// token; the answer comes back as [`Input::Token`] for `req`.
fn fetch_token(inner: &Rc<Inner>, req: u32, reason: TokenReason, own: Option<(String, SubId)>) {
    let runs = js_sys::Array::new();
    let provider = match own {
        Some((run, sub)) => {
            runs.push(&run.into());
            sub_callback(inner, sub, |c| c.token.as_ref())
        }
        None => {
            for run in inner.machine().connection_runs() {
                runs.push(&run.into());
            }
            None
        }
    };
    let context = crate::js::object();
    context.set_str(Field::Reason, reason.as_str());
    context.set(Field::Runs, &runs);
    inner.debug("token", &context);
    let provider: JsValue = match (provider, &inner.token) {
        (Some(f), _) => f.into(),
        (None, TokenSource::Provider(f)) => f.into(),
        (None, TokenSource::Fixed(t)) => t.into(),
    };
    // The answer comes back through the client's waker, as `what` 19 (a token) or 20 (why there
    // is none) with `[req, text]`. Not borrowed while the provider runs: it may call the client.
    let waker = inner.io.borrow().waker.as_ref().map(|w| w.js.clone());
    if let Some(w) = waker {
        ask_token(&provider, &context, &w, req);
    }
}

// A client's timers, page events and token answers, reported to one function, `f(what, value)`:
// `what` below 16 is a timer that fired (`arm` sets timer `what`, replacing it, to fire after `ms`
// milliseconds, or before the next frame is painted when `ms` is negative: after 16 ms on a global
// without frames); 16 and 17: the browser went online or offline; 18: the page became visible
// (the listeners are on the global object and the document, if any, once `listenPage` is called;
// a global that is not an event target, a server runtime, gets none); 19 and 20: a token provider
// answered (`askToken` above). `stop` cancels the timers, removes the listeners, and makes `f` do
// nothing, for the answers still on their way.
#[wasm_bindgen(inline_js = "export function waker(f) { return { f, t: {} }; }
export function arm(w, id, ms) {
  disarm(w, id);
  const fire = () => { delete w.t[id]; w.f(id); };
  w.t[id] = ms < 0 && typeof requestAnimationFrame == 'function'
    ? [cancelAnimationFrame, requestAnimationFrame(fire)]
    : [clearTimeout, setTimeout(fire, ms < 0 ? 16 : ms)];
}
export function disarm(w, id) {
  const t = w.t[id];
  if (t) {
    delete w.t[id];
    const [cancel, handle] = t;
    cancel(handle); // as a function: cancelAnimationFrame and clearTimeout refuse another `this`
  }
}
export function listenPage(w) {
  const g = globalThis;
  const d = typeof g.document == 'object' ? g.document : null;
  const on = [
    [g, 'online', () => w.f(16)],
    [g, 'offline', () => w.f(17)],
    [d, 'visibilitychange', () => d.visibilityState === 'visible' && w.f(18)],
  ].filter((l) => l[0]);
  const each = (m) => {
    for (const [t, e, h] of on) try { t[m](e, h); } catch {}
  };
  each('addEventListener');
  w.off = () => each('removeEventListener');
}
export function stop(w) {
  w.f = () => {};
  for (const id in w.t) disarm(w, id);
  w.off?.();
}")]
extern "C" {
    #[derive(Debug, Clone)]
    type WakerJs;
    #[wasm_bindgen(js_name = waker)]
    fn new_waker(f: &Function) -> WakerJs;
    fn arm(w: &WakerJs, id: u16, ms: f64);
    fn disarm(w: &WakerJs, id: u16);
    #[wasm_bindgen(js_name = listenPage)]
    fn listen_page(w: &WakerJs);
    fn stop(w: &WakerJs);
}

/// What the waker calls for the state flush; the machine's timers are their index in
/// [`Timer::ALL`].
const STATE_FLUSH: u16 = 6;

/// A client's timers and page listeners, with the one callback they call; dropping it cancels
/// and removes them.
///
/// Its callback takes `(what, value)`, `value` being a token answer's `[req, text]`: the
/// signature of a connection's callback (`transport.rs`), since wasm-bindgen links a call shim
/// for each closure signature.
#[derive(Debug)]
struct Waker {
    js: WakerJs,
    _f: Held<dyn FnMut(u16, JsValue)>,
}

impl Waker {
    fn new(inner: Weak<Inner>) -> Self {
        let f = Held::new(Closure::<dyn FnMut(u16, JsValue)>::new(
            move |what: u16, value: JsValue| {
                let Some(inner) = inner.upgrade() else {
                    return;
                };
                let input = match what {
                    STATE_FLUSH => return flush_states(&inner),
                    16 => Input::Online,
                    17 => Input::Offline,
                    18 => Input::Visible,
                    19 | 20 => {
                        let a: &js_sys::Array = value.unchecked_ref();
                        let req = a.get(0).as_f64().unwrap_or_default() as u32;
                        let text = a.get(1).as_string().unwrap_or_default();
                        let token = if what == 19 { Ok(text) } else { Err(text) };
                        Input::Token { req, token }
                    }
                    t => match Timer::ALL.get(usize::from(t)) {
                        Some(&t) => Input::Timer(t),
                        None => return,
                    },
                };
                dispatch(&inner, input);
            },
        ));
        let js = new_waker(f.function());
        Self { js, _f: f }
    }
}

impl Drop for Waker {
    fn drop(&mut self) {
        stop(&self.js);
    }
}

/// Reconnects at once when the browser comes online or the page becomes visible, and marks the
/// connection as reconnecting as soon as the browser goes offline (a socket can take minutes to
/// notice).
pub fn attach_page_listeners(inner: &Rc<Inner>) {
    if let Some(w) = &inner.io.borrow().waker {
        listen_page(&w.js);
    }
}
