//! The client state machine, free of I/O: inputs in (app calls, transport signals, timers),
//! effects out (connect, send, set a timer, call the app). The browser driver (`driver.rs`) runs
//! the effects; the tests here run them by hand, with full control over time and failures.
//!
//! Connection states as the app sees them:
//! `closed → connecting → open`, then on a drop `open → reconnecting → open`; a first connection
//! that fails goes `connecting → reconnecting`; giving up goes `… → closed` with the reason.

use alloc::borrow::ToOwned;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;

use runwire_protocol::{CloseCode, EndReason, ErrorCode, Reconnect, RunStatus};

use crate::backoff::{Backoff, Jitter};
use crate::registry::{Check, Listener, Phase, Registry, RunSub, SubId};
use crate::wire::{Ended, EventFrame, Frame};
use crate::{ClientFrame, RunState};

/// How long a connection attempt (token, socket, `welcome`) may take before it counts as failed.
pub const ATTEMPT_TIMEOUT_MS: u32 = 10_000;
/// How long the connection stays up after the last subscription ended, so that an app that
/// switches from one run to the next keeps its socket.
pub const LINGER_MS: u32 = 1_500;
/// The relay's default SSE heartbeat (`: hb` comments); SSE streams announce no interval.
pub const SSE_HEARTBEAT_MS: u32 = 15_000;
// The relay's error codes the client acts on (any other is reported and otherwise ignored).
const TOO_MANY_SUBSCRIPTIONS: &str = ErrorCode::TooManySubscriptions.as_str();
const BROKER_UNAVAILABLE: &str = ErrorCode::BrokerUnavailable.as_str();
const AUTH_FAILED: &str = ErrorCode::AuthFailed.as_str();

/// WebSocket attempts that must fail before `transport: "auto"` tries SSE.
pub const WS_FAILURES_BEFORE_SSE: u32 = 2;

/// The connection state the app sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// First connection since `closed`.
    Connecting,
    /// Authenticated; subscriptions flow.
    Open,
    /// Lost the connection (or never got one); retrying.
    Reconnecting,
    /// Not connected and not trying.
    Closed,
}

impl ConnState {
    /// The name the app sees.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Open => "open",
            Self::Reconnecting => "reconnecting",
            Self::Closed => "closed",
        }
    }
}

/// Which transports the client may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TransportMode {
    /// WebSocket, falling back to SSE when WebSocket keeps failing.
    #[default]
    Auto,
    /// WebSocket only.
    WebSocket,
    /// SSE only.
    Sse,
}

/// A transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One WebSocket to `/v1/ws` for every run.
    WebSocket,
    /// One `/v1/runs/{run}/events` stream per run.
    Sse,
}

impl Kind {
    /// The name the app sees.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WebSocket => "websocket",
            Self::Sse => "sse",
        }
    }
}

/// Why the token provider is asked for a token (the app's provider sees it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenReason {
    /// To connect (or to start a subscription, for a run's own provider).
    Connect,
    /// The connection's token (or, for a run's own provider, the run's token) expires soon, or
    /// the relay ended a run's subscription because its token expired.
    Refresh,
    /// The relay refused the last token (a run, or the connection): a fresh one is needed.
    Refused,
}

impl TokenReason {
    /// The name the app sees.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connect => "connect",
            Self::Refresh => "refresh",
            Self::Refused => "refused",
        }
    }
}

/// The client's timers; setting one replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// Wait before the next connection attempt.
    Backoff,
    /// Deadline of the current connection attempt.
    Attempt,
    /// Heartbeat tick: ping when quiet, give up when still quiet.
    Liveness,
    /// Fetch a fresh token before the current one expires.
    Refresh,
    /// Fetch a fresh token for the runs with their own whose token expires soonest.
    RunRefresh,
    /// Close the idle connection.
    Linger,
}

impl Timer {
    /// Every timer; the driver names each by its index.
    pub const ALL: [Timer; 6] = [
        Self::Backoff,
        Self::Attempt,
        Self::Liveness,
        Self::Refresh,
        Self::RunRefresh,
        Self::Linger,
    ];
}

/// Client settings that shape the state machine.
#[derive(Debug, Clone, Default)]
pub struct Config {
    /// Reconnect delay bounds.
    pub backoff: Backoff,
    /// Failed reconnect attempts after which the client gives up; `None`: never.
    pub max_attempts: Option<u32>,
    /// Allowed transports.
    pub transport: TransportMode,
    /// The token is a fixed string: asking again yields the same token.
    pub static_token: bool,
}

/// Something the state machine is told.
// Inputs are built, handed over by value and consumed at once; boxing the frame would cost an
// allocation per event for nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Input<'a> {
    /// The app subscribed.
    Subscribe {
        /// The new app subscription.
        id: SubId,
        /// The run.
        run: &'a str,
        /// Replay retained events after this seq first.
        since: Option<u64>,
        /// The subscription has an `onState` callback.
        wants_state: bool,
        /// The subscription has a token provider of its own.
        own_token: bool,
    },
    /// The app unsubscribed.
    Unsubscribe(SubId),
    /// The app closed the client.
    Close,
    /// The token provider answered request `req`.
    Token {
        /// The request id from [`Effect::FetchToken`].
        req: u32,
        /// The token, or why there is none.
        token: Result<String, String>,
    },
    /// The transport is connected (WebSocket open; SSE: a stream answered).
    Opened,
    /// A frame (a WebSocket message, or an SSE message's data), or why it could not be decoded.
    Frame(Result<Frame, String>),
    /// Bytes arrived that carry no frame (an SSE heartbeat comment): the connection is alive.
    Alive,
    /// The transport closed or failed, with a WebSocket close code (1006 when dropped).
    Closed {
        /// The close code.
        code: u16,
        /// The close reason, possibly empty.
        reason: &'a str,
    },
    /// SSE: a run's stream ended. `finished`: the relay answered 204 (nothing newer, run over).
    StreamEnded {
        /// The run.
        run: &'a str,
        /// The run is over and nothing is left to send.
        finished: bool,
    },
    /// SSE: the relay refused a run's stream (403).
    StreamForbidden {
        /// The run.
        run: &'a str,
    },
    /// A timer fired.
    Timer(Timer),
    /// The browser went online.
    Online,
    /// The browser went offline.
    Offline,
    /// The page became visible.
    Visible,
    /// The app asked for a new connection now (`reconnect()`).
    Reconnect,
}

/// A problem reported to the app's `onError` hook; the client carries on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientError {
    /// `bad_frame`, `invalid_event`, `token_provider`, or a relay error code.
    pub code: String,
    /// Human-readable detail.
    pub message: String,
    /// The run concerned, if any.
    pub run: Option<String>,
    /// The event concerned, if any.
    pub seq: Option<u64>,
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Ask a token provider; answer with [`Input::Token`] carrying `req`.
    FetchToken {
        /// Request id.
        req: u32,
        /// Why.
        reason: TokenReason,
        /// The run of a subscription's own provider, and that app subscription; `None`: the
        /// client's provider, for the runs that rely on the connection's token
        /// ([`Machine::connection_runs`]).
        own: Option<(String, SubId)>,
    },
    /// Open a connection of this kind (dropping any previous one).
    Connect(Kind),
    /// Drop the connection, if any.
    Disconnect,
    /// Send a frame on the connection.
    Send(ClientFrame),
    /// Arm a timer (replacing it).
    SetTimer(Timer, u32),
    /// Disarm a timer.
    ClearTimer(Timer),
    /// Tell the app the connection state changed.
    State {
        /// The new state.
        state: ConnState,
        /// The state before.
        previous: ConnState,
        /// Why.
        reason: String,
        /// The close code behind it, if any.
        code: Option<u16>,
    },
    /// Hand the event in the current frame to app subscription `sub`; `known`: its name is one
    /// of the typed ones (`onEvent`), else it goes to `onOtherEvent`.
    Event(SubId, bool),
    /// Hand a run state to app subscription `sub`.
    RunState(SubId, Rc<RunState>),
    /// App subscription `sub` ended; `last_seq` and `state` (JSON) are where it stopped.
    End {
        /// The app subscription.
        sub: SubId,
        /// Why it ended.
        reason: Ended,
        /// Seq of the last event delivered, if any.
        last_seq: Option<u64>,
        /// The run state it ended with, if it had one.
        state: Option<Rc<RunState>>,
    },
    /// Report a problem to the app.
    Error(ClientError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnPhase {
    /// No connection and none wanted.
    Idle,
    /// Waiting for the backoff timer.
    Waiting,
    /// Waiting for the token provider.
    Token,
    /// Transport connecting.
    Connecting,
    /// WebSocket open, `auth` sent, waiting for `welcome`.
    Authenticating,
    /// Ready.
    Open,
}

/// What the connection's outstanding token request is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Connect,
    Refresh,
    /// A run relying on the connection's token was refused.
    Refused,
}

/// The client state machine.
#[derive(Debug)]
pub struct Machine {
    cfg: Config,
    state: ConnState,
    phase: ConnPhase,
    kind: Kind,
    /// SSE worked after WebSocket did not: stay on SSE.
    sse_sticky: bool,
    /// WebSocket attempts in a row that failed before `welcome`.
    ws_failures: u32,
    /// Failed attempts since the last successful connection.
    failures: u32,
    token: Option<String>,
    /// Request ids, for the connection's token and the runs' own.
    last_req: u32,
    /// The connection's token request, if one is outstanding.
    token_req: Option<(u32, Purpose)>,
    /// The last close was a token close and a fresh token was asked for: another one is final.
    fresh_token_retry: bool,
    heartbeat_ms: u32,
    /// A frame arrived since the last liveness tick.
    seen: bool,
    /// A ping is out; the next quiet tick is fatal.
    probing: bool,
    linger_armed: bool,
    /// `close()` was called: nothing ever starts again.
    shut: bool,
    /// Wire unsubscribes whose `unsubscribed` answer is still due, per run.
    pending_unsub: Vec<String>,
    registry: Registry,
    jitter: Jitter,
    out: Vec<Effect>,
}

impl Machine {
    /// A client in state `closed`, nothing subscribed.
    pub fn new(cfg: Config, seed: u64) -> Self {
        Self {
            kind: match cfg.transport {
                TransportMode::Sse => Kind::Sse,
                _ => Kind::WebSocket,
            },
            cfg,
            state: ConnState::Closed,
            phase: ConnPhase::Idle,
            sse_sticky: false,
            ws_failures: 0,
            failures: 0,
            token: None,
            last_req: 0,
            token_req: None,
            fresh_token_retry: false,
            heartbeat_ms: SSE_HEARTBEAT_MS,
            seen: false,
            probing: false,
            linger_armed: false,
            shut: false,
            pending_unsub: Vec::new(),
            registry: Registry::default(),
            jitter: Jitter::new(seed),
            out: Vec::new(),
        }
    }

    /// The connection state.
    pub fn state(&self) -> ConnState {
        self.state
    }

    /// The transport of the current (or last) connection, when connected.
    pub fn transport(&self) -> Option<Kind> {
        (self.phase == ConnPhase::Open).then_some(self.kind)
    }

    /// Whether `close()` was called.
    pub fn is_shut(&self) -> bool {
        self.shut
    }

    /// The subscriptions.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The token in force, for the transport (SSE sends it with every stream).
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    /// Feeds one input; returns what to do, in order. `now_ms` is wall-clock Unix time in ms.
    pub fn handle(&mut self, input: Input<'_>, now_ms: f64) -> Vec<Effect> {
        if self.shut && !matches!(input, Input::Close) {
            return Vec::new();
        }
        match input {
            Input::Subscribe {
                id,
                run,
                since,
                wants_state,
                own_token,
            } => {
                let listener = Listener {
                    id,
                    wants_state,
                    own_token,
                };
                self.subscribe(run, listener, since);
            }
            Input::Unsubscribe(id) => self.unsubscribe(id),
            Input::Close => self.close(),
            Input::Token { req, token } => self.token_answer(req, token, now_ms),
            Input::Opened => self.opened(),
            Input::Frame(frame) => {
                self.seen = true;
                self.frame(frame, now_ms);
            }
            Input::Alive => self.seen = true,
            Input::Closed { code, reason } => {
                if self.phase != ConnPhase::Idle && self.phase != ConnPhase::Waiting {
                    self.failed(code, close_reason(code, reason));
                }
            }
            Input::StreamEnded { run, finished } => self.stream_ended(run, finished),
            Input::StreamForbidden { run } => self.refused(run),
            Input::Timer(t) => self.timer(t, now_ms),
            Input::Online | Input::Visible => self.wake(),
            Input::Offline => {
                if !matches!(self.phase, ConnPhase::Idle | ConnPhase::Waiting) {
                    self.failed(1006, "offline");
                }
            }
            Input::Reconnect => self.reconnect_now(),
        }
        self.check_linger();
        core::mem::take(&mut self.out)
    }

    fn set_state(&mut self, state: ConnState, reason: &str, code: Option<u16>) {
        if state != self.state {
            let previous = core::mem::replace(&mut self.state, state);
            self.out.push(Effect::State {
                state,
                previous,
                reason: reason.to_owned(),
                code,
            });
        }
    }

    fn subscribe(&mut self, run: &str, listener: Listener, since: Option<u64>) {
        let Listener {
            id, wants_state, ..
        } = listener;
        if self.registry.add(run, listener, since) {
            if self.can_subscribe() {
                self.send_subscribe(run);
            }
        } else if let Some(r) = self.registry.run_mut(run) {
            // Joining a run already followed: start from the state the client has.
            if r.last_seq.is_some() && wants_state {
                self.out.push(Effect::RunState(id, r.state.clone()));
            }
        }
        if self.phase == ConnPhase::Idle {
            self.failures = 0;
            self.set_state(ConnState::Connecting, "subscribe", None);
            self.start_attempt();
        }
    }

    fn unsubscribe(&mut self, id: SubId) {
        let ended = self.registry.run_of(id).map(ended_at);
        let Some(removed) = self.registry.remove(id) else {
            return;
        };
        let (last_seq, state) = ended.unwrap_or_default();
        self.out.push(Effect::End {
            sub: id,
            reason: EndReason::Unsubscribed.into(),
            last_seq,
            state,
        });
        if removed.run_dropped
            && !matches!(removed.phase, Phase::Idle | Phase::Waiting | Phase::Token)
            && self.can_subscribe()
        {
            if self.kind == Kind::WebSocket {
                self.pending_unsub.push(removed.run.clone());
            }
            self.out
                .push(Effect::Send(ClientFrame::Unsubscribe { run: removed.run }));
        }
    }

    fn close(&mut self) {
        if self.shut {
            return;
        }
        self.end_all(EndReason::Unsubscribed.into());
        self.stop();
        self.shut = true;
        self.set_state(ConnState::Closed, "client closed", None);
    }

    /// Drops the connection and every timer; back to idle.
    fn stop(&mut self) {
        if self.phase != ConnPhase::Idle {
            self.out.push(Effect::Disconnect);
        }
        for t in Timer::ALL {
            self.out.push(Effect::ClearTimer(t));
        }
        self.linger_armed = false;
        self.phase = ConnPhase::Idle;
        self.token_req = None;
        self.registry.disconnected();
        self.pending_unsub.clear();
    }

    fn can_subscribe(&self) -> bool {
        match self.phase {
            ConnPhase::Open => true,
            // SSE opens a stream per subscription: subscribing is how it connects.
            ConnPhase::Connecting => self.kind == Kind::Sse,
            _ => false,
        }
    }

    fn send_subscribe(&mut self, run: &str) {
        let Some(r) = self.registry.run_mut(run) else {
            return;
        };
        let token = match (r.token_provider(), &r.token) {
            (None, _) => None,
            (Some(_), Some(token)) => Some(token.clone()),
            // Its own token first.
            (Some(_), None) => {
                r.phase = Phase::Token;
                if r.token_req.is_none() {
                    self.ask_run_token(run, TokenReason::Connect);
                }
                return;
            }
        };
        r.phase = Phase::Requested;
        // The answer tells when the token it carries expires.
        r.refresh_at = None;
        let (since, epoch) = r.resume_point();
        self.out.push(Effect::Send(ClientFrame::Subscribe {
            run: run.to_owned(),
            since,
            epoch,
            token,
        }));
    }

    /// The runs `pick` selects, by name: the loops over them change the registry.
    fn runs_where(&self, pick: fn(&RunSub) -> bool) -> Vec<String> {
        self.registry
            .runs()
            .iter()
            .filter(|r| pick(r))
            .map(|r| r.run.clone())
            .collect()
    }

    fn next_req(&mut self) -> u32 {
        self.last_req = self.last_req.wrapping_add(1);
        self.last_req
    }

    /// The runs the connection's token must cover: those without a token of their own.
    pub fn connection_runs(&self) -> impl Iterator<Item = &str> {
        self.registry
            .runs()
            .iter()
            .filter(|r| r.token_provider().is_none())
            .map(|r| r.run.as_str())
    }

    /// Asks the client's token provider for the connection's token.
    fn ask_token(&mut self, purpose: Purpose, reason: TokenReason) {
        let req = self.next_req();
        self.token_req = Some((req, purpose));
        self.out.push(Effect::FetchToken {
            req,
            reason,
            own: None,
        });
    }

    /// Asks the own token provider of `run`.
    fn ask_run_token(&mut self, run: &str, reason: TokenReason) {
        let req = self.next_req();
        let Some(r) = self.registry.run_mut(run) else {
            return;
        };
        r.token_req = Some(req);
        let own = r.token_provider().map(|sub| (run.to_owned(), sub));
        self.out.push(Effect::FetchToken { req, reason, own });
    }

    /// The relay refused `run` (`unsubscribed {forbidden}`, or 403 on SSE): ask the provider
    /// behind its token for a fresh one once and subscribe again; refused again before it was
    /// accepted once more, the subscription ends.
    fn refused(&mut self, run: &str) {
        let static_token = self.cfg.static_token;
        let Some(r) = self.registry.run_mut(run) else {
            return;
        };
        let own = r.token_provider().is_some();
        if r.retried || (static_token && !own) {
            return self.end_run(run, EndReason::Forbidden.into());
        }
        r.retried = true;
        r.phase = Phase::Token;
        if own {
            r.token = None;
            self.ask_run_token(run, TokenReason::Refused);
        } else if !matches!(
            self.token_req,
            Some((_, Purpose::Refresh | Purpose::Refused))
        ) {
            // A refresh already on its way serves as well.
            self.ask_token(Purpose::Refused, TokenReason::Refused);
        }
    }

    /// The runs waiting for a connection token that did not come: their retry is spent.
    fn end_refused(&mut self) {
        for run in self.runs_where(waits_for_connection_token) {
            self.end_run(&run, EndReason::Forbidden.into());
        }
    }

    /// Subscribes the runs that waited for a token, now that it came.
    fn subscribe_refused(&mut self) {
        for run in self.runs_where(waits_for_connection_token) {
            self.send_subscribe(&run);
        }
    }

    /// A run's own provider answered.
    fn run_token_answer(&mut self, req: u32, token: Result<String, String>, now_ms: f64) {
        let can_subscribe = self.can_subscribe();
        let Some(r) = self
            .registry
            .runs_mut()
            .iter_mut()
            .find(|r| r.token_req == Some(req))
        else {
            return;
        };
        r.token_req = None;
        let run = r.run.clone();
        match token {
            Ok(token) => {
                r.token = Some(token);
                // Live: a refresh before the token in force expires. Subscribing again from the
                // last seq delivered hands the subscription to the new token without a gap; the
                // relay's replay overlaps what is already delivered, which is dropped.
                if (r.phase == Phase::Token && can_subscribe) || r.phase == Phase::Live {
                    self.send_subscribe(&run);
                }
            }
            Err(message) => {
                let (retried, expired) = (r.retried, r.expired);
                match r.phase {
                    // The token in force holds a while yet: try again in a few seconds.
                    Phase::Live => r.refresh_at = Some(now_ms + TOKEN_RETRY_MS),
                    // Asked for again on the next connection.
                    Phase::Token => r.phase = Phase::Idle,
                    _ => {}
                }
                self.report("token_provider", message, Some(run.clone()), None);
                if expired {
                    self.end_run(&run, EndReason::TokenExpired.into());
                } else if retried {
                    self.end_run(&run, EndReason::Forbidden.into());
                }
                self.arm_run_refresh(now_ms);
            }
        }
    }

    /// A slot freed on the connection: ask again for the first subscription refused for lack of
    /// one.
    fn subscribe_waiting(&mut self) {
        let waiting = self
            .registry
            .runs()
            .iter()
            .find(|r| r.phase == Phase::Waiting)
            .map(|r| r.run.clone());
        if let Some(run) = waiting {
            self.send_subscribe(&run);
        }
    }

    fn subscribe_all(&mut self) {
        for run in self.runs_where(|r| r.phase == Phase::Idle) {
            self.send_subscribe(&run);
        }
    }

    fn start_attempt(&mut self) {
        self.phase = ConnPhase::Token;
        self.out
            .push(Effect::SetTimer(Timer::Attempt, ATTEMPT_TIMEOUT_MS));
        let reason = if self.fresh_token_retry {
            TokenReason::Refused
        } else {
            TokenReason::Connect
        };
        self.ask_token(Purpose::Connect, reason);
    }

    fn next_kind(&self) -> Kind {
        match self.cfg.transport {
            TransportMode::WebSocket => Kind::WebSocket,
            TransportMode::Sse => Kind::Sse,
            TransportMode::Auto if self.sse_sticky => Kind::Sse,
            // WebSocket keeps failing: alternate with SSE until one of them works.
            TransportMode::Auto
                if self.ws_failures >= WS_FAILURES_BEFORE_SSE && self.kind == Kind::WebSocket =>
            {
                Kind::Sse
            }
            TransportMode::Auto => Kind::WebSocket,
        }
    }

    fn token_answer(&mut self, req: u32, token: Result<String, String>, now_ms: f64) {
        let purpose = match self.token_req {
            Some((id, purpose)) if id == req => purpose,
            _ => return self.run_token_answer(req, token, now_ms),
        };
        self.token_req = None;
        match (purpose, token) {
            (Purpose::Connect, Ok(token)) if self.phase == ConnPhase::Token => {
                self.token = Some(token.clone());
                self.kind = self.next_kind();
                self.phase = ConnPhase::Connecting;
                self.out.push(Effect::Connect(self.kind));
                if self.kind == Kind::Sse {
                    self.out.push(Effect::Send(ClientFrame::Auth {
                        token,
                        batch: false,
                    }));
                    self.subscribe_all();
                }
            }
            (Purpose::Connect, Err(message)) if self.phase == ConnPhase::Token => {
                self.report("token_provider", message, None, None);
                self.failed(1006, "token provider failed");
            }
            (Purpose::Refresh | Purpose::Refused, Ok(token)) if self.phase == ConnPhase::Open => {
                self.token = Some(token.clone());
                self.out.push(Effect::Send(ClientFrame::Auth {
                    token,
                    batch: false,
                }));
                // After the `auth` frame, which the relay handles first.
                self.subscribe_refused();
            }
            (Purpose::Refresh | Purpose::Refused, Err(message))
                if self.phase == ConnPhase::Open =>
            {
                self.report("token_provider", message, None, None);
                self.end_refused();
                if purpose == Purpose::Refresh {
                    self.out
                        .push(Effect::SetTimer(Timer::Refresh, TOKEN_RETRY_MS as u32));
                }
            }
            _ => {}
        }
    }

    fn opened(&mut self) {
        match (self.phase, self.kind) {
            (ConnPhase::Connecting, Kind::WebSocket) => {
                self.phase = ConnPhase::Authenticating;
                if let Some(token) = self.token.clone() {
                    // Several frames per message: a replay of thousands of events arrives in a
                    // few messages instead of thousands (each costs the browser ~0.1 ms).
                    self.out
                        .push(Effect::Send(ClientFrame::Auth { token, batch: true }));
                }
            }
            (ConnPhase::Connecting, Kind::Sse) => {
                self.sse_sticky = self.cfg.transport == TransportMode::Auto;
                self.became_open(SSE_HEARTBEAT_MS);
            }
            _ => {}
        }
    }

    fn became_open(&mut self, heartbeat_ms: u32) {
        self.phase = ConnPhase::Open;
        self.failures = 0;
        self.fresh_token_retry = false;
        if self.kind == Kind::WebSocket {
            self.ws_failures = 0;
        }
        self.heartbeat_ms = heartbeat_ms.max(100);
        self.seen = false;
        self.probing = false;
        self.out.push(Effect::ClearTimer(Timer::Attempt));
        self.out
            .push(Effect::SetTimer(Timer::Liveness, self.heartbeat_ms));
        self.set_state(ConnState::Open, "connected", None);
        self.subscribe_all();
    }

    fn schedule_refresh(&mut self, expires_at: u64, now_ms: f64) {
        if self.cfg.static_token || expires_at == 0 {
            return;
        }
        let delay = refresh_delay(expires_at, now_ms);
        self.out
            .push(Effect::SetTimer(Timer::Refresh, delay as u32));
    }

    /// A run's subscription was answered, with when its own token expires if it has one: ask
    /// its provider for a fresh token before then.
    fn schedule_run_refresh(&mut self, run: &str, expires_at: Option<u64>, now_ms: f64) {
        let Some(r) = self.registry.run_mut(run) else {
            return;
        };
        r.refresh_at = match expires_at {
            Some(exp) if r.token_provider().is_some() => Some(now_ms + refresh_delay(exp, now_ms)),
            _ => None,
        };
        self.arm_run_refresh(now_ms);
    }

    /// Arms [`Timer::RunRefresh`] for the live run whose token is due for refresh first.
    fn arm_run_refresh(&mut self, now_ms: f64) {
        let next = self
            .registry
            .runs()
            .iter()
            .filter(|r| r.phase == Phase::Live)
            .filter_map(|r| r.refresh_at)
            .reduce(f64::min);
        self.out.push(match next {
            Some(at) => Effect::SetTimer(Timer::RunRefresh, (at - now_ms).max(0.0) as u32),
            None => Effect::ClearTimer(Timer::RunRefresh),
        });
    }

    /// Asks the providers of the live runs whose refresh is due.
    fn refresh_runs(&mut self, now_ms: f64) {
        let due: Vec<String> = self
            .registry
            .runs_mut()
            .iter_mut()
            .filter(|r| r.phase == Phase::Live && r.refresh_at.is_some_and(|at| at <= now_ms))
            .map(|r| {
                r.refresh_at = None;
                r.run.clone()
            })
            .collect();
        for run in due {
            if self
                .registry
                .run_mut(&run)
                .is_some_and(|r| r.token_req.is_none())
            {
                self.ask_run_token(&run, TokenReason::Refresh);
            }
        }
        self.arm_run_refresh(now_ms);
    }

    /// The relay ended `run`'s subscription because its own token expired: ask its provider for
    /// a fresh one at once (unless a refresh is already on its way) and subscribe again from the
    /// last seq delivered.
    fn token_expired(&mut self, run: &str, now_ms: f64) {
        let Some(r) = self.registry.run_mut(run) else {
            return;
        };
        if r.token_provider().is_none() {
            // Only a run's own token expires this way; treat anything else as a refusal.
            return self.refused(run);
        }
        r.phase = Phase::Token;
        r.token = None;
        r.refresh_at = None;
        r.expired = true;
        if r.token_req.is_none() {
            self.ask_run_token(run, TokenReason::Refresh);
        }
        self.arm_run_refresh(now_ms);
    }

    fn grace_ms(&self) -> u32 {
        (self.heartbeat_ms / 2).clamp(1_000, 10_000)
    }

    fn frame(&mut self, frame: Result<Frame, String>, now_ms: f64) {
        if matches!(self.phase, ConnPhase::Idle | ConnPhase::Waiting) {
            return;
        }
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                self.report(ErrorCode::BadFrame.as_str(), e, None, None);
                return;
            }
        };
        match frame {
            Frame::Welcome {
                heartbeat_ms,
                expires_at,
            } => {
                if self.phase == ConnPhase::Authenticating {
                    self.became_open(heartbeat_ms.min(u64::from(u32::MAX)) as u32);
                }
                if self.phase == ConnPhase::Open {
                    self.schedule_refresh(expires_at, now_ms);
                }
            }
            Frame::Event(ev) => self.event(ev),
            Frame::Subscribed {
                run,
                seq,
                state,
                epoch,
                expires_at,
            } => {
                let Some(r) = self.registry.run_mut(&run) else {
                    return;
                };
                if r.phase != Phase::Requested {
                    return;
                }
                if r.on_subscribed(seq, state, epoch) {
                    self.emit_state(&run);
                }
                self.schedule_run_refresh(&run, expires_at, now_ms);
            }
            Frame::Reset {
                run,
                seq,
                state,
                epoch,
                expires_at,
            } => {
                let Some(r) = self.registry.run_mut(&run) else {
                    return;
                };
                if matches!(r.phase, Phase::Idle | Phase::Token) {
                    return;
                }
                let answer = r.phase == Phase::Requested;
                r.on_reset(seq, state, epoch);
                self.emit_state(&run);
                // A `reset` that answers a `subscribe` says when its token expires; one in the
                // middle of a subscription changes nothing about it.
                if answer {
                    self.schedule_run_refresh(&run, expires_at, now_ms);
                }
            }
            Frame::Unsubscribed { run, reason } => {
                // Either way a slot on the connection is free again.
                self.subscribe_waiting();
                if reason.is(EndReason::Unsubscribed) {
                    if let Some(i) = self.pending_unsub.iter().position(|r| *r == run) {
                        // The answer to our own unsubscribe of an earlier subscription.
                        self.pending_unsub.swap_remove(i);
                        return;
                    }
                }
                if reason.is(EndReason::Forbidden) {
                    self.refused(&run);
                } else if reason.is(EndReason::TokenExpired) {
                    self.token_expired(&run, now_ms);
                } else {
                    self.end_run(&run, reason);
                }
            }
            Frame::Error { code, message, run } => {
                let refused = (code == TOO_MANY_SUBSCRIPTIONS)
                    .then(|| run.clone())
                    .flatten();
                self.report(&code, message, run, None);
                match code.as_str() {
                    BROKER_UNAVAILABLE => {
                        self.failed(CloseCode::InternalError.code(), "relay broker unavailable")
                    }
                    AUTH_FAILED if self.phase == ConnPhase::Open => {
                        // The refreshed token was refused; the old one holds until it expires.
                        self.out
                            .push(Effect::SetTimer(Timer::Refresh, TOKEN_RETRY_MS as u32));
                    }
                    TOO_MANY_SUBSCRIPTIONS => {
                        // Wait for a slot: the subscription stays, and is asked for again when
                        // another one on this connection ends.
                        if let Some(r) = refused.and_then(|run| self.registry.run_mut(&run)) {
                            if r.phase == Phase::Requested {
                                r.phase = Phase::Waiting;
                            }
                        }
                    }
                    _ => {}
                }
            }
            Frame::Pong | Frame::Other => {}
        }
    }

    fn event(&mut self, env: EventFrame) {
        let Some(r) = self.registry.run_mut(&env.run) else {
            return;
        };
        match r.check(env.seq) {
            Check::InOrder => {}
            Check::Duplicate | Check::NotReady => return,
            Check::Gap => {
                if r.phase == Phase::Live {
                    let run = r.run.clone();
                    self.send_subscribe(&run);
                }
                return;
            }
        }
        r.last_seq = Some(env.seq);
        let typed = match env.typed {
            Ok(t) => t,
            Err(e) => {
                let state = Rc::make_mut(&mut r.state);
                state.seq = state.seq.max(env.seq);
                self.report("invalid_event", e, Some(env.run), Some(env.seq));
                return;
            }
        };
        // The app's copies of the previous state are gone by now, so this does not clone.
        Rc::make_mut(&mut r.state).apply(env.seq, &env.ts, &typed);
        let known = !matches!(typed, crate::RunEvent::Other { .. });
        for l in &r.listeners {
            self.out.push(Effect::Event(l.id, known));
            if l.wants_state {
                self.out.push(Effect::RunState(l.id, r.state.clone()));
            }
        }
        if let Some(reason) = EndReason::for_terminal_event(&env.name) {
            self.end_run(&env.run, reason.into());
        }
    }

    fn emit_state(&mut self, run: &str) {
        let Some(r) = self.registry.runs().iter().find(|r| r.run == run) else {
            return;
        };
        for l in r.listeners.iter().filter(|l| l.wants_state) {
            self.out.push(Effect::RunState(l.id, r.state.clone()));
        }
    }

    fn end_run(&mut self, run: &str, reason: Ended) {
        let Some(r) = self.registry.runs().iter().find(|r| r.run == run) else {
            return;
        };
        let (last_seq, state) = ended_at(r);
        for l in self.registry.drop_run(run) {
            self.out.push(Effect::End {
                sub: l.id,
                reason: reason.clone(),
                last_seq,
                state: state.clone(),
            });
        }
    }

    fn end_all(&mut self, reason: Ended) {
        for run in self.runs_where(|_| true) {
            self.end_run(&run, reason.clone());
        }
    }

    fn stream_ended(&mut self, run: &str, finished: bool) {
        let Some(r) = self.registry.run_mut(run) else {
            return;
        };
        if finished {
            let reason = match r.state.status {
                RunStatus::Failed => EndReason::Failed,
                RunStatus::Cancelled => EndReason::Cancelled,
                _ => EndReason::Completed,
            };
            self.end_run(run, reason.into());
        } else if self.can_subscribe() {
            // The relay ended the stream (its maximum duration): pick it up where it stopped.
            self.send_subscribe(run);
        }
    }

    fn report(&mut self, code: &str, message: String, run: Option<String>, seq: Option<u64>) {
        self.out.push(Effect::Error(ClientError {
            code: code.to_owned(),
            message,
            run,
            seq,
        }));
    }

    fn timer(&mut self, t: Timer, now_ms: f64) {
        match t {
            Timer::Backoff if self.phase == ConnPhase::Waiting => self.start_attempt(),
            Timer::Attempt
                if matches!(
                    self.phase,
                    ConnPhase::Token | ConnPhase::Connecting | ConnPhase::Authenticating
                ) =>
            {
                self.failed(1006, "connect timeout");
            }
            Timer::Liveness if self.phase == ConnPhase::Open => {
                if self.seen {
                    self.seen = false;
                    self.probing = false;
                    self.out
                        .push(Effect::SetTimer(Timer::Liveness, self.heartbeat_ms));
                } else if !self.probing {
                    self.probe();
                } else {
                    self.failed(1006, "heartbeat timeout");
                }
            }
            Timer::Refresh if self.phase == ConnPhase::Open && !self.cfg.static_token => {
                self.ask_token(Purpose::Refresh, TokenReason::Refresh);
            }
            Timer::RunRefresh if self.phase == ConnPhase::Open => self.refresh_runs(now_ms),
            Timer::Linger if self.registry.is_empty() && self.phase != ConnPhase::Idle => {
                self.stop();
                self.set_state(ConnState::Closed, "idle", None);
            }
            _ => {}
        }
    }

    /// Asks the relay for a sign of life; the connection is dead if none comes within the grace.
    fn probe(&mut self) {
        self.probing = true;
        self.seen = false;
        if self.kind == Kind::WebSocket {
            self.out.push(Effect::Send(ClientFrame::Ping { id: None }));
        }
        self.out
            .push(Effect::SetTimer(Timer::Liveness, self.grace_ms()));
    }

    /// The browser came online or the page became visible: retry now instead of waiting, and
    /// check that an open connection still answers.
    fn wake(&mut self) {
        match self.phase {
            ConnPhase::Waiting => {
                self.out.push(Effect::ClearTimer(Timer::Backoff));
                self.start_attempt();
            }
            ConnPhase::Open if !self.probing => self.probe(),
            ConnPhase::Idle if !self.registry.is_empty() => {
                self.failures = 0;
                self.set_state(ConnState::Connecting, "online", None);
                self.start_attempt();
            }
            _ => {}
        }
    }

    /// Drops the connection, if any, and connects again at once (no backoff wait), resuming every
    /// subscription. Also starts again after the client gave up. Nothing to do without
    /// subscriptions.
    fn reconnect_now(&mut self) {
        if self.registry.is_empty() {
            return;
        }
        match self.phase {
            ConnPhase::Idle => {
                self.failures = 0;
                self.fresh_token_retry = false;
                self.set_state(ConnState::Connecting, "reconnect", None);
            }
            ConnPhase::Waiting => self.out.push(Effect::ClearTimer(Timer::Backoff)),
            ConnPhase::Token
            | ConnPhase::Connecting
            | ConnPhase::Authenticating
            | ConnPhase::Open => {
                self.drop_connection();
                self.set_state(ConnState::Reconnecting, "reconnect", None);
            }
        }
        self.start_attempt();
    }

    /// Drops the connection and the timers that belong to it; its subscriptions wait for the
    /// next one.
    fn drop_connection(&mut self) {
        self.out.push(Effect::Disconnect);
        for t in [
            Timer::Attempt,
            Timer::Liveness,
            Timer::Refresh,
            Timer::RunRefresh,
        ] {
            self.out.push(Effect::ClearTimer(t));
        }
        self.probing = false;
        self.registry.disconnected();
        self.pending_unsub.clear();
    }

    /// The connection (or the attempt) failed with close `code`: reconnect or give up.
    fn failed(&mut self, code: u16, reason: &str) {
        // Only a transport that was actually tried counts against it (not a token failure).
        let tried = matches!(
            self.phase,
            ConnPhase::Connecting | ConnPhase::Authenticating
        );
        self.drop_connection();
        self.out.push(Effect::ClearTimer(Timer::Backoff));
        self.token_req = None;
        if tried {
            match self.kind {
                Kind::WebSocket if code == 1006 => self.ws_failures += 1,
                Kind::Sse => self.sse_sticky = false,
                Kind::WebSocket => {}
            }
        }
        if self.registry.is_empty() {
            self.phase = ConnPhase::Idle;
            self.set_state(ConnState::Closed, "idle", Some(code));
            return;
        }
        let delay = match CloseCode::reconnect_for(code) {
            Reconnect::Never => {
                let forbidden = code == CloseCode::Forbidden.code();
                return self.give_up(reason, Some(code), forbidden);
            }
            Reconnect::WithFreshToken => {
                if self.cfg.static_token || self.fresh_token_retry {
                    return self.give_up(reason, Some(code), true);
                }
                self.fresh_token_retry = true;
                0
            }
            Reconnect::Immediately => {
                (f64::from(self.cfg.backoff.min_ms) * self.jitter.unit()) as u32
            }
            Reconnect::Backoff => {
                let unit = self.jitter.unit();
                self.cfg.backoff.delay(self.failures, unit)
            }
        };
        self.failures += 1;
        if self.cfg.max_attempts.is_some_and(|max| self.failures > max) {
            return self.give_up("max reconnect attempts", Some(code), false);
        }
        self.set_state(ConnState::Reconnecting, reason, Some(code));
        self.phase = ConnPhase::Waiting;
        self.out.push(Effect::SetTimer(Timer::Backoff, delay));
    }

    /// Stops trying. Subscriptions stay (a later `subscribe` or `online` starts again), except
    /// when access was refused: those end with `forbidden`.
    fn give_up(&mut self, reason: &str, code: Option<u16>, forbidden: bool) {
        if forbidden {
            self.end_all(EndReason::Forbidden.into());
        }
        self.stop();
        self.failures = 0;
        self.fresh_token_retry = false;
        self.set_state(ConnState::Closed, reason, code);
    }

    fn check_linger(&mut self) {
        let want = self.registry.is_empty() && self.phase != ConnPhase::Idle;
        if want && !self.linger_armed {
            self.out.push(Effect::SetTimer(Timer::Linger, LINGER_MS));
        } else if !want && self.linger_armed {
            self.out.push(Effect::ClearTimer(Timer::Linger));
        }
        self.linger_armed = want;
    }
}

/// How long before asking again when a token provider failed to refresh a token still in force.
const TOKEN_RETRY_MS: f64 = 5_000.0;

/// When to refresh a token that expires at `expires_at` (Unix seconds), from `now_ms`: after 80 %
/// of its remaining life, and not sooner than in a second.
fn refresh_delay(expires_at: u64, now_ms: f64) -> f64 {
    let remaining = expires_at as f64 * 1000.0 - now_ms;
    (remaining * 0.8).clamp(1_000.0, f64::from(i32::MAX as u32))
}

fn close_reason(code: u16, reason: &str) -> &str {
    if !reason.is_empty() {
        reason
    } else if let Some(c) = CloseCode::from_code(code) {
        c.reason()
    } else {
        "connection lost"
    }
}

/// A run that relies on the connection's token and waits for a fresh one.
fn waits_for_connection_token(r: &RunSub) -> bool {
    r.phase == Phase::Token && r.token_provider().is_none()
}

fn ended_at(r: &RunSub) -> (Option<u64>, Option<Rc<RunState>>) {
    (r.last_seq, r.last_seq.map(|_| r.state.clone()))
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
