//! WebSocket transports: `/v1/ws` (many runs per socket, `auth` frame) and `/ws/executions`
//! (one run per socket, taken from the token).
//!
//! One task per connection runs a `select!` loop over: the client's frames, the connection's
//! bounded outbound queue (fed by the hub), one timer for all of the connection's deadlines (auth
//! timeout, token expiry, subscription tokens' expiry, ping, unanswered ping and idle check) and
//! the relay's shutdown. Handlers answer without awaiting writes; the loop writes their frames out
//! after each step, so what an idle connection keeps in memory is little more than its state. The
//! relay frames the WebSocket itself (`codec`, after the handshake in `upgrade`): the client's
//! frames come from a reader that holds bytes only while a frame is incomplete, and the relay's go
//! to the socket's own write buffer. The loop is generic over the reading and writing ends so that
//! tests drive it over channels with paused time.
//!
//! A connection whose task waits with nothing of its own to write has live events written to its
//! socket by the hub directly (`hub`), which spares it a wake-up per event; everything else goes
//! through the queue and the loop.
//!
//! Exactly-once delivery: each subscription remembers its run's epoch and the last seq it sent.
//! It registers with the hub before taking the broker's snapshot, so live events that race with
//! the snapshot are queued, and then dropped if their seq is already covered. A live event that
//! skips a seq, or comes from another epoch, makes the subscription take a fresh snapshot from its
//! last seq instead (replay, or `reset` when the history is gone).

pub mod codec;
mod outbox;
pub mod upgrade;

use std::collections::BTreeMap;
use std::pin::Pin;
use std::task::Poll;
use std::time::{Duration, SystemTime};

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use axum::response::Response;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use runwire_protocol::token::{self, ANY_RUN, Claims, Scope};
use runwire_protocol::{
    ClientFrame, CloseCode, EndReason, ErrorCode, PROTOCOL_VERSION, ServerFrame, is_valid_run_id,
};
use serde::Deserialize;
use tokio::time::{Instant, Sleep, sleep_until, timeout};

use crate::broker::RunId;
use crate::error::AuthError;
use crate::hub::{Inbox, Next, Outbound};
use crate::metrics::Gauge;
use crate::state::AppState;
use crate::transport::ApiQuery;
use crate::transport::extract::AllowedOrigin;
use crate::transport::subscription::{Emit, Subscription};

use codec::ReadError;
use outbox::Outbox;
use upgrade::Upgrade;

/// Largest frame a client may send; larger ones close the socket with 1009.
pub const MAX_INBOUND_FRAME: usize = 64 * 1024;
/// Queued items a connection writes before it flushes the socket, so a burst becomes one write.
const WRITE_BATCH: usize = 64;
/// A ping tick this much past its time counts as missed: the next one is a full interval later.
const LATE_TICK: Duration = Duration::from_millis(5);

/// Query parameters of both WebSocket endpoints.
#[derive(Debug, Default, Deserialize)]
pub struct WsQuery {
    /// A token instead of an `auth` frame.
    pub token: Option<String>,
    /// `/ws/executions`: resume after this seq.
    pub since: Option<u64>,
    /// `/ws/executions`: the epoch `since` belongs to.
    pub epoch: Option<String>,
}

/// `GET /v1/ws`.
pub async fn multi(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<WsQuery>,
    ws: Upgrade,
    _: AllowedOrigin,
) -> Response {
    upgrade(state, q, ws, Mode::Multi)
}

/// `GET /ws/executions`.
pub async fn executions(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<WsQuery>,
    ws: Upgrade,
    _: AllowedOrigin,
) -> Response {
    upgrade(state, q, ws, Mode::Single)
}

fn upgrade(state: AppState, q: WsQuery, ws: Upgrade, mode: Mode) -> Response {
    // The relay's own framing (`codec`) rather than a WebSocket library's: an idle connection then
    // holds no read or write buffer, and no reading and writing halves around a shared stream
    // (docs/benchmarks.md). The client's frames are read as they arrive, each held only until it is
    // whole; the relay's frames go to the socket's own write buffer (`transport::listener`), which
    // gathers a burst into one `send()` and is freed once written out.
    //
    // The connection runs in a task of its own, spawned here, so that the handshake's task ends at
    // once. The connection's future is `run`'s own, not an `async` block around it: such a block
    // would keep the moved-out socket and query as well.
    ws.on_upgrade(MAX_INBOUND_FRAME, move |rx, tx| {
        let socket = tx.socket().clone();
        let conn = Conn::new(state, mode, tx);
        conn.inbox.set_socket(socket, false);
        tokio::spawn(conn.run(rx, q));
    })
}

/// Which endpoint a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `/v1/ws`: many runs, `subscribe` frames.
    Multi,
    /// `/ws/executions`: the token's one run, closed after its terminal event.
    Single,
}

/// How the loop ends.
enum Exit {
    /// Close with this code.
    Close(CloseCode),
    /// The client closed with this code (if any): the same code goes back (RFC 6455, 5.5.1).
    Echo(Option<u16>),
    /// The socket is gone (the connection ended, or a write failed): nothing more to send.
    Gone,
}

/// A `subscribe` still to be done: it asks the broker, so the loop awaits it between frames.
struct Subscribe {
    run: String,
    since: Option<u64>,
    epoch: Option<String>,
    /// The subscription's own token, checked instead of the connection's.
    token: Option<String>,
}

/// What a connection keeps of its token: the runs it covers, as [`Claims::allows_run`] and
/// [`Claims::single_run`] read them. The rest of the claims is read once, when the token is
/// accepted; kept whole, they would cost every connection's task ~120 bytes more.
#[derive(Debug)]
struct Grant {
    /// `run` and the entries of `runs`.
    runs: Box<[Box<str>]>,
    /// `runs` holds [`ANY_RUN`]: every run.
    any: bool,
}

impl Grant {
    fn new(claims: &Claims) -> Self {
        Self {
            runs: claims.run_ids().map(Box::from).collect(),
            any: claims.runs.iter().flatten().any(|r| r == ANY_RUN),
        }
    }

    fn allows_run(&self, run: &str) -> bool {
        self.any || self.runs.iter().any(|r| **r == *run)
    }

    fn single_run(&self) -> Option<&str> {
        token::single_run(self.runs.iter().map(|r| &**r))
    }
}

/// One WebSocket connection.
///
/// Most connections are idle most of the time, so what one holds while it waits is what limits
/// how many a relay can keep open. The handlers therefore never await a write: they put frames in
/// `outbox`, which the loop writes out after each step, and only the broker calls are awaited.
/// The connection's deadlines (auth, token expiry, ping and idle check) share one timer.
pub struct Conn<W> {
    state: AppState,
    mode: Mode,
    tx: W,
    /// The connection's id; the hub's handle on it is made from `inbox` when it subscribes.
    id: u64,
    inbox: Inbox,
    /// The runs the connection's token covers, once one is accepted.
    grant: Option<Grant>,
    /// Until a token is accepted (`grant` is `None`), when the connection closes with 4004;
    /// after, when the token expires (plus the leeway): the connection closes with 4001. One
    /// field for both, as every field here is part of every idle connection's memory.
    token_deadline: Option<Instant>,
    // The subscriptions live in `inbox` (`Inbox::subs`), where the hub can check a live event
    // against them and write it directly.
    /// The subscriptions started with a token of their own, and when that token expires (plus
    /// the leeway): they end with `token_expired` then, unless resubscribed with a fresh token,
    /// and a refreshed connection token that does not cover their run leaves them alone. A
    /// subset of `subs`' keys, so bounded by `max_subscriptions`, and most often empty (a
    /// `BTreeMap` allocates nothing then).
    own_token: BTreeMap<RunId, Instant>,
    /// Frames written since the last flush (at most `WRITE_BATCH` queued events' at a time);
    /// emptied and freed by every flush.
    outbox: Outbox,
    /// `/ws/executions`: the subscription to the token's run that the loop starts with.
    first: Option<Box<Subscribe>>,
    /// Set when a handler decides the connection must close.
    exit: Option<Exit>,
    /// A direct write left bytes pending on the socket: the next flush sends them.
    unflushed: bool,
    /// The client reads batched frames (`auth` with `batch: true`): the outbox joins text frames.
    batch: bool,
}

impl<W> std::fmt::Debug for Conn<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// The close code for a read error that the client caused, if it did; other errors (a reset
/// connection, say) leave nothing to close.
fn read_error_close(e: &axum::Error) -> Option<CloseCode> {
    ReadError::of(e).and_then(ReadError::close_code)
}

impl<W> Conn<W>
where
    W: Sink<Message, Error = axum::Error> + Unpin + Send,
{
    /// A connection writing to `tx`.
    pub fn new(state: AppState, mode: Mode, tx: W) -> Self {
        let id = state.next_conn_id();
        let inbox = Inbox::new(state.config.queue_capacity);
        Self {
            state,
            mode,
            tx,
            id,
            inbox,
            grant: None,
            token_deadline: None,
            own_token: BTreeMap::new(),
            first: None,
            outbox: Outbox::default(),
            exit: None,
            unflushed: false,
            batch: false,
        }
    }

    fn gauge(&self) -> &Gauge {
        match self.mode {
            Mode::Multi => &self.state.metrics.ws_connections,
            Mode::Single => &self.state.metrics.executions_connections,
        }
    }

    /// Runs the connection until it closes. The connection counts as open, and its query
    /// (`?token=`) is handled, from this call on.
    pub fn run<R>(mut self, mut rx: R, query: WsQuery) -> impl Future<Output = ()> + Send
    where
        R: Stream<Item = Result<Message, axum::Error>> + Unpin + Send,
    {
        self.gauge().inc();
        // Done before the future is built, so the query is not kept in it for the connection's
        // lifetime.
        match self.start(query) {
            Ok(first) => self.first = first,
            Err(exit) => self.exit = Some(exit),
        }
        async move {
            let exit = match self.exit.take() {
                Some(exit) => exit,
                None => self.drive(&mut rx).await,
            };
            // Nothing more is written directly: the close goes last.
            self.inbox.hold();
            let frame = match exit {
                Exit::Close(code) => {
                    tracing::debug!(conn = self.id, code = code.code(), "closed");
                    Some(Some(CloseFrame {
                        code: code.code(),
                        reason: Utf8Bytes::from_static(code.reason()),
                    }))
                }
                Exit::Echo(code) => Some(code.map(|code| CloseFrame {
                    code,
                    reason: Utf8Bytes::default(),
                })),
                Exit::Gone => None,
            };
            if let Some(frame) = frame {
                let _ = timeout(self.state.config.write_timeout, async {
                    self.tx.send(Message::Close(frame)).await?;
                    self.tx.close().await
                })
                .await;
            }
            let subs = std::mem::take(&mut *self.inbox.subs());
            let runs: Vec<RunId> = subs.keys().cloned().collect();
            for run in runs {
                self.release(&run);
            }
            self.gauge().dec();
        }
    }

    /// Admits the connection and takes `?token=`; on `/ws/executions`, the subscription to the
    /// token's run that the loop then starts with.
    fn start(&mut self, query: WsQuery) -> Result<Option<Box<Subscribe>>, Exit> {
        if self.state.websockets_over_cap() {
            // Closed after the upgrade, not refused before it: browsers only see close codes.
            return Err(Exit::Close(CloseCode::TooManyConnections));
        }
        self.token_deadline = Some(Instant::now() + self.state.config.auth_timeout);
        if let Some(token) = query.token.as_deref() {
            self.authenticate(token).map_err(Exit::Close)?;
        } else if self.mode == Mode::Single {
            self.state.metrics.auth_failed(AuthError::Missing.failure());
            return Err(Exit::Close(CloseCode::TokenInvalid));
        }
        if self.mode == Mode::Multi {
            return Ok(None);
        }
        let grant = self.grant.as_ref().expect("authenticated above");
        let Some(run) = grant.single_run().map(str::to_owned) else {
            return Err(Exit::Close(CloseCode::Forbidden));
        };
        Ok(Some(Box::new(Subscribe {
            run,
            since: query.since,
            epoch: query.epoch,
            token: None,
        })))
    }

    /// The nearest of the connection's deadlines.
    fn next_deadline(&self, next_ping: Instant) -> Instant {
        [self.token_deadline, self.own_token_expiry()]
            .into_iter()
            .flatten()
            .fold(next_ping, Instant::min)
    }

    async fn drive<R>(&mut self, rx: &mut R) -> Exit
    where
        R: Stream<Item = Result<Message, axum::Error>> + Unpin + Send,
    {
        // One timer for every deadline of the connection, the writes' included (see `flush`).
        let timer = sleep_until(Instant::now() + self.state.config.ping_interval);
        tokio::pin!(timer);
        if let Some(sub) = self.first.take() {
            Box::pin(self.subscribe(*sub)).await;
        }
        self.flush(timer.as_mut()).await;
        let mut stop = self.state.shutdown_flag();
        let mut last_heard = Instant::now();
        let mut next_ping = last_heard + self.state.config.ping_interval;
        // Whether the last ping is unanswered. Anything heard from the client after it answers it:
        // a pong, or any frame, which proves the peer alive just as well; so does a frame heard in
        // the same instant the ping went out.
        let mut ping_unanswered = false;
        loop {
            if let Some(exit) = self.exit.take() {
                return exit;
            }
            if self.inbox.is_slow() {
                return Exit::Close(CloseCode::SlowConsumer);
            }
            if *stop.borrow_and_update() {
                return Exit::Close(CloseCode::ServiceRestart);
            }
            {
                let deadline = self.next_deadline(next_ping);
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
            }
            tokio::select! {
                biased;
                // `changed` rather than `wait_for`, whose future is larger; the flag is also read
                // above, before the first wait. An error means the relay state, and so the
                // flag's sender, is gone: stop as well.
                changed = stop.changed() => if changed.is_err() || *stop.borrow_and_update() {
                    return Exit::Close(CloseCode::ServiceRestart);
                },
                () = &mut timer => {
                    self.inbox.hold();
                    let now = Instant::now();
                    if self.token_deadline.is_some_and(|at| at <= now) {
                        return Exit::Close(match self.grant {
                            Some(_) => CloseCode::TokenExpired,
                            None => CloseCode::AuthTimeout,
                        });
                    }
                    if self.own_token_expiry().is_some_and(|at| at <= now) {
                        self.end_expired(now);
                        self.flush(timer.as_mut()).await;
                    }
                    if next_ping <= now {
                        // A dead peer (a laptop closed, a NAT entry dropped) answers nothing:
                        // its ping has been unanswered for a full interval by the next tick.
                        if ping_unanswered {
                            self.state.metrics.ping_timeouts.inc();
                            return Exit::Close(CloseCode::IdleTimeout);
                        }
                        // The idle timeout is checked at each ping.
                        let config = &self.state.config;
                        if now.duration_since(last_heard) >= config.idle_timeout {
                            return Exit::Close(CloseCode::IdleTimeout);
                        }
                        // A late tick delays the ones after it rather than bursting.
                        next_ping = if now > next_ping + LATE_TICK {
                            now + config.ping_interval
                        } else {
                            next_ping + config.ping_interval
                        };
                        self.push(Message::Ping(bytes::Bytes::new()));
                        ping_unanswered = last_heard < now;
                        self.flush(timer.as_mut()).await;
                    }
                }
                msg = rx.next() => match msg {
                    None => return Exit::Gone,
                    Some(Ok(Message::Close(frame))) => {
                        return Exit::Echo(frame.map(|frame| frame.code));
                    }
                    Some(Err(e)) => {
                        tracing::debug!(conn = self.id, error = %e, "read failed");
                        return read_error_close(&e).map_or(Exit::Gone, Exit::Close);
                    }
                    Some(Ok(msg)) => {
                        self.inbox.hold();
                        last_heard = Instant::now();
                        ping_unanswered = false;
                        if let Some(sub) = self.on_message(msg) {
                            // Boxed: the connection's future would otherwise be as large as
                            // this rare step's, for its whole life.
                            Box::pin(self.subscribe(sub)).await;
                        }
                        self.flush(timer.as_mut()).await;
                    }
                },
                next = self.inbox.recv_or_flush() => {
                    let item = match next {
                        Next::Item(item) => item,
                        Next::Slow => return Exit::Close(CloseCode::SlowConsumer),
                        Next::Flush => {
                            self.unflushed = true;
                            self.flush(timer.as_mut()).await;
                            continue;
                        }
                    };
                    let mut next = Some(item);
                    // One clock read for the batch's delivery latencies, not one per event.
                    let now = SystemTime::now();
                    // Reused for the batch's events, and only as long as the batch: kept in the
                    // connection, it would be part of every idle connection's memory.
                    let mut out = Vec::new();
                    for _ in 0..WRITE_BATCH {
                        let Some(item) = next.take().or_else(|| self.inbox.try_recv()) else {
                            break;
                        };
                        if let Some(run) = self.on_outbound(item, now, &mut out) {
                            // Boxed, as `subscribe` is: a rare step.
                            Box::pin(self.resync(&run)).await;
                        }
                        if self.exit.is_some() {
                            break;
                        }
                    }
                    self.flush(timer.as_mut()).await;
                }
            }
        }
    }

    /// Queues a frame for the next flush; nothing once the connection is closing.
    fn push(&mut self, msg: Message) {
        if self.exit.is_none() {
            self.outbox.push(msg);
        }
    }

    /// Writes the outbox and flushes the socket; a failure ends the connection.
    ///
    /// Each write may take `--write-timeout`, timed by the connection's own `timer` (the loop
    /// re-arms it to the connection's next deadline afterwards), which is armed only when a write
    /// does not complete at once, and armed afresh after each write that does: a timer of the
    /// flush's own would be part of the connection's future, and so of every idle connection's
    /// memory. For the same reason the whole flush is one `poll_fn` over the connection's fields,
    /// rather than futures that hold a message each.
    async fn flush(&mut self, mut timer: Pin<&mut Sleep>) {
        let write_timeout = self.state.config.write_timeout;
        let must_flush = std::mem::take(&mut self.unflushed) || !self.outbox.is_empty();
        let mut armed = false;
        let outcome = std::future::poll_fn(|cx| {
            loop {
                if !self.outbox.is_empty() {
                    match Pin::new(&mut self.tx).poll_ready(cx) {
                        Poll::Ready(Ok(())) => {
                            let Some(msg) = self.outbox.next_message(self.batch) else {
                                continue;
                            };
                            if Pin::new(&mut self.tx).start_send(msg).is_err() {
                                return Poll::Ready(Err(Exit::Gone));
                            }
                            // A write went through: the next one has a write timeout of its own.
                            armed = false;
                            continue;
                        }
                        Poll::Ready(Err(_)) => return Poll::Ready(Err(Exit::Gone)),
                        Poll::Pending => {}
                    }
                } else if must_flush {
                    match Pin::new(&mut self.tx).poll_flush(cx) {
                        Poll::Ready(Ok(())) => return Poll::Ready(Ok(())),
                        Poll::Ready(Err(_)) => return Poll::Ready(Err(Exit::Gone)),
                        Poll::Pending => {}
                    }
                } else {
                    return Poll::Ready(Ok(()));
                }
                // The write waits for the socket: within the write timeout.
                if !armed {
                    timer.as_mut().reset(Instant::now() + write_timeout);
                    armed = true;
                }
                return timer
                    .as_mut()
                    .poll(cx)
                    .map(|()| Err(Exit::Close(CloseCode::SlowConsumer)));
            }
        })
        .await;
        // Freed, not kept: an idle connection holds no outbox.
        self.outbox.release();
        if let Err(exit) = outcome {
            // Counted here unless the hub already found the queue full and counted it.
            if matches!(exit, Exit::Close(_)) && !self.inbox.is_slow() {
                self.state.metrics.slow_consumer_closes.inc();
            }
            self.exit = Some(exit);
        }
    }

    fn send(&mut self, frame: &ServerFrame) {
        self.push(Message::Text(frame.to_json().into()));
    }

    fn error(&mut self, code: ErrorCode, message: impl Into<String>, run: Option<&str>) {
        self.send(&ServerFrame::Error {
            code,
            message: message.into(),
            run: run.map(str::to_owned),
        });
    }

    /// First authentication: a refused token closes the connection.
    fn authenticate(&mut self, token: &str) -> Result<(), CloseCode> {
        let claims = self
            .state
            .verifier
            .verify(Some(token), Scope::Subscribe, None)
            .map_err(AuthError::close_code)?;
        self.accept_claims(claims);
        Ok(())
    }

    fn accept_claims(&mut self, claims: Claims) {
        let clock = self.state.verifier.clock();
        self.token_deadline = Some(clock.expiry_instant(claims.exp));
        let exp = claims.exp;
        tracing::debug!(conn = self.id, sub = ?claims.sub, "authenticated");
        self.grant = Some(Grant::new(&claims));
        if self.mode == Mode::Multi {
            let welcome = ServerFrame::Welcome {
                conn: format!("{:x}", self.id),
                heartbeat_ms: self.state.config.ping_interval.as_millis() as u64,
                expires_at: exp,
                protocol: PROTOCOL_VERSION,
            };
            self.send(&welcome);
        }
    }

    /// Handles a client frame; a `subscribe` is returned for the loop to carry out.
    fn on_message(&mut self, msg: Message) -> Option<Subscribe> {
        match msg {
            Message::Text(text) => {
                if text.len() > MAX_INBOUND_FRAME {
                    self.exit = Some(Exit::Close(CloseCode::MessageTooBig));
                    return None;
                }
                match parse_frame(text.as_str()) {
                    Ok(frame) => return self.on_frame(frame),
                    Err((code, message)) => self.error(code, message, None),
                }
            }
            Message::Binary(_) => self.exit = Some(Exit::Close(CloseCode::ProtocolError)),
            // Answered in order with the connection's other frames.
            Message::Ping(payload) => self.push(Message::Pong(payload)),
            // A pong only proves the client is alive.
            Message::Pong(_) | Message::Close(_) => {}
        }
        None
    }

    fn on_frame(&mut self, frame: ClientFrame) -> Option<Subscribe> {
        match frame {
            ClientFrame::Ping { id } => self.send(&ServerFrame::Pong { id }),
            ClientFrame::Auth { token, batch } if self.grant.is_none() => {
                self.batch = batch;
                self.inbox.set_batch(batch);
                if let Err(code) = self.authenticate(&token) {
                    self.exit = Some(Exit::Close(code));
                }
            }
            ClientFrame::Auth { token, .. } => self.refresh(&token),
            _ if self.grant.is_none() => {
                self.error(
                    ErrorCode::NotAuthenticated,
                    "send an auth frame first",
                    None,
                );
            }
            _ if self.mode == Mode::Single => {
                self.error(
                    ErrorCode::UnknownFrame,
                    "this socket follows one run; use /v1/ws to subscribe",
                    None,
                );
            }
            ClientFrame::Subscribe {
                run,
                since,
                epoch,
                token,
            } => {
                return Some(Subscribe {
                    run,
                    since,
                    epoch,
                    token,
                });
            }
            ClientFrame::Unsubscribe { run } => {
                let removed = self.inbox.subs().remove_entry(run.as_str());
                if let Some((run, _)) = removed {
                    self.release(&run);
                }
                self.send(&ServerFrame::Unsubscribed {
                    run,
                    reason: EndReason::Unsubscribed,
                });
            }
        }
        None
    }

    /// A later `auth` frame: replace the token in place.
    fn refresh(&mut self, token: &str) {
        match self
            .state
            .verifier
            .verify(Some(token), Scope::Subscribe, None)
        {
            Err(e) => {
                let message = format!(
                    "token refresh refused: {e}; the previous token stays in force until it expires"
                );
                self.error(ErrorCode::AuthFailed, message, None);
            }
            Ok(claims) => {
                let lost: Vec<RunId> = self
                    .inbox
                    .subs()
                    .keys()
                    .filter(|run| !claims.allows_run(run) && !self.own_token.contains_key(*run))
                    .cloned()
                    .collect();
                self.accept_claims(claims);
                for run in lost {
                    self.end(&run, EndReason::Forbidden);
                }
            }
        }
    }

    async fn subscribe(&mut self, sub: Subscribe) {
        let Subscribe {
            run,
            since,
            epoch,
            token,
        } = sub;
        if !is_valid_run_id(&run) {
            let message = "invalid run id: 1 to 128 bytes of [A-Za-z0-9_.:-]";
            self.error(ErrorCode::BadRequest, message, Some(&run));
            return;
        }
        // The subscription token's `exp`, when it has one.
        let mut own_exp = None;
        let allowed = match &token {
            // Counted as a refusal by `verify` when it fails.
            Some(token) => {
                match self
                    .state
                    .verifier
                    .verify(Some(token), Scope::Subscribe, Some(&run))
                {
                    Ok(claims) => {
                        own_exp = Some(claims.exp);
                        true
                    }
                    Err(_) => false,
                }
            }
            None => {
                let grant = self.grant.as_ref().expect("subscribe needs auth");
                let allowed = grant.allows_run(&run);
                if !allowed {
                    self.state
                        .metrics
                        .auth_failed(AuthError::WrongRun.failure());
                }
                allowed
            }
        };
        if !allowed {
            // A refused resubscribe ends the subscription it would have replaced.
            let removed = self.inbox.subs().remove_entry(run.as_str());
            if let Some((run, _)) = removed {
                self.release(&run);
            }
            if self.mode == Mode::Single {
                self.exit = Some(Exit::Close(CloseCode::Forbidden));
            } else {
                self.send(&ServerFrame::Unsubscribed {
                    run,
                    reason: EndReason::Forbidden,
                });
            }
            return;
        }
        let existing = {
            let subs = self.inbox.subs();
            let existing = subs.get_key_value(run.as_str()).map(|(run, _)| run.clone());
            (existing, subs.len())
        };
        let run: RunId = match existing {
            // A second subscribe to the same run starts it over from the client's `since`.
            (Some(existing), _) => existing,
            (None, count) => {
                if count >= self.state.config.max_subscriptions {
                    let message = format!(
                        "at most {} subscriptions per connection",
                        self.state.config.max_subscriptions
                    );
                    self.error(ErrorCode::TooManySubscriptions, message, Some(&run));
                    return;
                }
                let run: RunId = run.into();
                // Register before the snapshot: events that race with it wait in the queue.
                self.state.hub.register(&run, &self.inbox.handle(self.id));
                if let Err(e) = self.state.broker.watch(run.clone()).await {
                    self.state.hub.unregister(&run, self.id);
                    self.state.broker.unwatch(run.clone());
                    self.error(ErrorCode::BrokerUnavailable, e.to_string(), Some(&run));
                    return;
                }
                self.state.metrics.subscriptions.inc();
                run
            }
        };
        self.inbox
            .subs()
            .insert(run.clone(), Subscription::default());
        match own_exp {
            Some(exp) => {
                let at = self.state.verifier.clock().expiry_instant(exp);
                self.own_token.insert(run.clone(), at);
            }
            None => {
                self.own_token.remove(&run);
            }
        }
        match self.state.broker.snapshot(run.clone(), since).await {
            Ok(snapshot) => {
                let mut out = Vec::new();
                if let Some(sub) = self.inbox.subs().get_mut(&run) {
                    sub.on_snapshot(&run, snapshot, since, epoch.as_deref(), true, &mut out);
                }
                if let Some(exp) = own_exp {
                    tell_expiry(&mut out, exp);
                }
                self.emit(&run, &mut out);
            }
            Err(e) => {
                self.inbox.subs().remove(&run);
                self.release(&run);
                self.error(ErrorCode::BrokerUnavailable, e.to_string(), Some(&run));
            }
        }
    }

    /// Writes and empties `out`.
    fn emit(&mut self, run: &RunId, out: &mut Vec<Emit>) {
        for item in out.drain(..) {
            match item {
                Emit::Control(frame) => self.send(&frame),
                Emit::Event(ev) => {
                    self.push(Message::Text(ev.frame.clone()));
                    self.state.metrics.events_delivered.inc();
                }
                Emit::End(reason) => self.end(run, reason),
            }
        }
    }

    /// Handles a queued item taken at `now` (where its delivery latency ends); a run that needs a
    /// fresh snapshot is returned for the loop to resync.
    /// `out` is scratch space, left empty.
    fn on_outbound(
        &mut self,
        item: Outbound,
        now: SystemTime,
        out: &mut Vec<Emit>,
    ) -> Option<RunId> {
        match item {
            Outbound::Event(ev) => {
                let sent = match self.inbox.subs().get_mut(&ev.run) {
                    Some(sub) => sub.on_event(&ev, out).is_ok(),
                    // Unsubscribed since it was queued.
                    None => return None,
                };
                if sent {
                    // Nothing in `out`: the replay sent this event already.
                    if !out.is_empty() {
                        self.state
                            .metrics
                            .delivery_latency
                            .observe_between(ev.published, now);
                    }
                    self.emit(&ev.run, out);
                }
                out.clear();
                (!sent).then(|| ev.run.clone())
            }
            Outbound::Resync(run) => Some(run),
        }
    }

    /// Catches a subscription up from its last seq after a gap or an epoch change.
    async fn resync(&mut self, run: &RunId) {
        let Some((since, epoch)) = self.inbox.subs().get(run).map(|sub| {
            let (since, epoch) = sub.resync_point();
            (since, epoch.map(str::to_owned))
        }) else {
            return;
        };
        match self.state.broker.snapshot(run.clone(), since).await {
            Ok(snapshot) => {
                let mut out = Vec::new();
                if let Some(sub) = self.inbox.subs().get_mut(run) {
                    sub.on_snapshot(run, snapshot, since, epoch.as_deref(), false, &mut out);
                }
                self.emit(run, &mut out);
            }
            // The broker resyncs every subscription again once it is back.
            Err(e) => tracing::debug!(conn = self.id, %run, error = %e, "resync failed"),
        }
    }

    /// Ends a subscription and tells the client why; a single-run socket then closes.
    fn end(&mut self, run: &RunId, reason: EndReason) {
        let removed = self.inbox.subs().remove(run).is_some();
        if removed {
            self.release(run);
        }
        if self.mode == Mode::Single {
            if self.exit.is_none() {
                // The run finished (1000: done), or a refreshed token no longer covers it.
                let code = match reason {
                    EndReason::Forbidden => CloseCode::Forbidden,
                    _ => CloseCode::Normal,
                };
                self.exit = Some(Exit::Close(code));
            }
            return;
        }
        self.send(&ServerFrame::Unsubscribed {
            run: run.to_string(),
            reason,
        });
    }

    /// Ends the subscriptions whose own token has expired by `now`.
    fn end_expired(&mut self, now: Instant) {
        let expired: Vec<RunId> = self
            .own_token
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(run, _)| run.clone())
            .collect();
        for run in expired {
            tracing::debug!(conn = self.id, %run, "subscription token expired");
            self.end(&run, EndReason::TokenExpired);
        }
        // `end` released them; this covers a run ended some other way meanwhile.
        self.own_token.retain(|_, at| *at > now);
    }

    /// The earliest expiry of the subscriptions' own tokens.
    fn own_token_expiry(&self) -> Option<Instant> {
        self.own_token.values().min().copied()
    }

    fn release(&mut self, run: &RunId) {
        self.own_token.remove(run);
        self.state.hub.unregister(run, self.id);
        self.state.broker.unwatch(run.clone());
        self.state.metrics.subscriptions.dec();
    }
}

/// Tells the client when the subscription's own token expires, in the `subscribed` or `reset`
/// that answers its `subscribe`, so that it can resubscribe with a fresh one before then.
fn tell_expiry(out: &mut [Emit], exp: u64) {
    for item in out {
        if let Emit::Control(frame) = item {
            if let ServerFrame::Subscribed { expires_at, .. }
            | ServerFrame::Reset { expires_at, .. } = frame.as_mut()
            {
                *expires_at = Some(exp);
            }
        }
    }
}

/// Parses a client frame, telling malformed JSON from an unknown `type` from bad fields.
pub fn parse_frame(text: &str) -> Result<ClientFrame, (ErrorCode, String)> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| (ErrorCode::BadFrame, format!("invalid JSON: {e}")))?;
    let Some(kind) = value
        .get("type")
        .and_then(|t| t.as_str())
        .map(str::to_owned)
    else {
        return Err((
            ErrorCode::BadFrame,
            "a frame is a JSON object with a string \"type\"".to_owned(),
        ));
    };
    if !matches!(kind.as_str(), "auth" | "subscribe" | "unsubscribe" | "ping") {
        let shown: String = kind.chars().take(64).collect();
        return Err((
            ErrorCode::UnknownFrame,
            format!("unknown frame type {shown:?}"),
        ));
    }
    serde_json::from_value(value)
        .map_err(|e| (ErrorCode::BadRequest, format!("invalid {kind} frame: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_grant_covers_the_runs_its_claims_do() {
        let claims = |run: Option<&str>, runs: Option<&[&str]>| Claims {
            run: run.map(str::to_owned),
            runs: runs.map(|runs| runs.iter().map(|r| (*r).to_owned()).collect()),
            sub: Some("user".to_owned()),
            ..Claims::default()
        };
        let cases = [
            claims(Some("a"), None),
            claims(None, Some(&["a"])),
            claims(None, Some(&["a", "b"])),
            claims(Some("a"), Some(&["b"])),
            claims(Some("a"), Some(&["a"])),
            claims(None, Some(&["*"])),
            claims(None, Some(&["*", "a"])),
            claims(Some("*"), None),
            claims(Some("a"), Some(&["*"])),
            claims(None, Some(&[])),
            claims(None, None),
        ];
        for claims in &cases {
            let grant = Grant::new(claims);
            for run in ["a", "b", "c", "*"] {
                assert_eq!(
                    grant.allows_run(run),
                    claims.allows_run(run),
                    "{run} under {claims:?}"
                );
            }
            assert_eq!(grant.single_run(), claims.single_run(), "{claims:?}");
        }
    }

    #[test]
    fn tells_frame_errors_apart() {
        assert!(matches!(parse_frame("{"), Err((ErrorCode::BadFrame, _))));
        assert!(matches!(parse_frame("[1]"), Err((ErrorCode::BadFrame, _))));
        assert!(matches!(
            parse_frame(r#"{"type":"x"}"#),
            Err((ErrorCode::UnknownFrame, _))
        ));
        assert!(matches!(
            parse_frame(r#"{"type":"subscribe"}"#),
            Err((ErrorCode::BadRequest, _))
        ));
        assert!(matches!(
            parse_frame(r#"{"type":"subscribe","run":"r","since":-1}"#),
            Err((ErrorCode::BadRequest, _))
        ));
        assert_eq!(
            parse_frame(r#"{"type":"ping"}"#).unwrap(),
            ClientFrame::Ping { id: None }
        );
    }
}
