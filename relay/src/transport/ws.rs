//! WebSocket transports: `/v1/ws` (many runs per socket, `auth` frame) and `/ws/executions`
//! (one run per socket, taken from the token).
//!
//! One task per connection runs a `select!` loop over: the client's frames, the connection's
//! bounded outbound queue (fed by the hub), the ping timer, the token's expiry, the slow-consumer
//! signal and the relay's shutdown. The loop is generic over the socket's halves so that tests
//! drive it over channels with paused time.
//!
//! Exactly-once delivery: each subscription remembers its run's epoch and the last seq it sent.
//! It registers with the hub before taking the broker's snapshot, so live events that race with
//! the snapshot are queued, and then dropped if their seq is already covered. A live event that
//! skips a seq, or comes from another epoch, makes the subscription take a fresh snapshot from its
//! last seq instead (replay, or `reset` when the history is gone).

use std::collections::HashMap;

use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use runwire_protocol::token::{Claims, Scope};
use runwire_protocol::{
    ClientFrame, CloseCode, EndReason, ErrorCode, PROTOCOL_VERSION, ServerFrame, is_valid_run_id,
};
use serde::Deserialize;
use tokio::time::{Instant, sleep_until, timeout};

use crate::AppState;
use crate::broker::RunId;
use crate::error::{ApiError, AuthError};
use crate::hub::{ConnHandle, Inbox, Outbound};
use crate::metrics::Gauge;
use crate::transport::ApiQuery;
use crate::transport::follow::{Emit, Follow};

/// Largest frame a client may send; larger ones close the socket with 1009.
pub const MAX_INBOUND_FRAME: usize = 64 * 1024;
/// Queued items a connection writes before it flushes the socket, so a burst becomes one write.
const WRITE_BATCH: usize = 64;

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
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    upgrade(state, q, &headers, ws, Mode::Multi)
}

/// `GET /ws/executions`.
pub async fn executions(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<WsQuery>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    upgrade(state, q, &headers, ws, Mode::Single)
}

fn upgrade(
    state: AppState,
    q: WsQuery,
    headers: &HeaderMap,
    ws: WebSocketUpgrade,
    mode: Mode,
) -> Response {
    let origin = headers.get("origin").and_then(|o| o.to_str().ok());
    if !state.config.origin_allowed(origin) {
        return ApiError::Origin.into_response();
    }
    ws.max_message_size(MAX_INBOUND_FRAME)
        .max_frame_size(MAX_INBOUND_FRAME)
        // Small buffers: most sockets are idle most of the time, and memory per idle connection
        // is what limits how many a relay holds. Client frames are small (an `auth` is ~350 B) and
        // the read buffer grows for a larger one; 512 B instead of 4 KiB took an idle subscribed
        // connection from ~11.0 KB to ~7.4 KB (docs/benchmarks.md). Writes up to 8 KiB are
        // gathered into one syscall, so a burst of small events costs one write, not one per frame.
        .read_buffer_size(512)
        .write_buffer_size(8 * 1024)
        .on_upgrade(move |socket: WebSocket| async move {
            let (tx, rx) = socket.split();
            Conn::new(state, mode, tx).run(rx, q).await;
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
    /// The socket is gone (client closed, or a write failed): nothing more to send.
    Gone,
}

/// One WebSocket connection.
pub struct Conn<W> {
    state: AppState,
    mode: Mode,
    tx: W,
    handle: ConnHandle,
    inbox: Inbox,
    claims: Option<Claims>,
    expires_at: Option<Instant>,
    subs: HashMap<RunId, Follow>,
    /// Reused for every live event, so delivering one allocates nothing.
    scratch: Vec<Emit>,
    /// Set when a handler decides the connection must close.
    exit: Option<Exit>,
}

impl<W> std::fmt::Debug for Conn<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.handle.id)
            .field("mode", &self.mode)
            .field("subs", &self.subs.len())
            .finish_non_exhaustive()
    }
}

fn too_big(e: &axum::Error) -> bool {
    // tungstenite reports its size limits as a capacity error "… too long: N > MAX".
    e.to_string().contains("too long")
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl<W> Conn<W>
where
    W: Sink<Message, Error = axum::Error> + Unpin + Send,
{
    /// A connection writing to `tx`.
    pub fn new(state: AppState, mode: Mode, tx: W) -> Self {
        let id = state.next_conn_id();
        let (handle, inbox) = ConnHandle::new(id, state.config.queue_capacity);
        Self {
            state,
            mode,
            tx,
            handle,
            inbox,
            claims: None,
            expires_at: None,
            subs: HashMap::new(),
            scratch: Vec::new(),
            exit: None,
        }
    }

    fn gauge(&self) -> &Gauge {
        match self.mode {
            Mode::Multi => &self.state.metrics.ws_connections,
            Mode::Single => &self.state.metrics.executions_connections,
        }
    }

    /// Runs the connection until it closes.
    pub async fn run<R>(mut self, mut rx: R, query: WsQuery)
    where
        R: Stream<Item = Result<Message, axum::Error>> + Unpin + Send,
    {
        self.gauge().inc();
        let m = &self.state.metrics;
        let open = m.ws_connections.get() + m.executions_connections.get();
        let exit = if open > self.state.config.max_connections as i64 {
            // Closed after the upgrade, not refused before it: browsers only see close codes.
            Exit::Close(CloseCode::TooManyConnections)
        } else {
            self.drive(&mut rx, query).await
        };
        if let Exit::Close(code) = exit {
            let frame = CloseFrame {
                code: code.code(),
                reason: Utf8Bytes::from_static(code.reason()),
            };
            let _ = timeout(self.state.config.write_timeout, async {
                self.tx.send(Message::Close(Some(frame))).await?;
                self.tx.close().await
            })
            .await;
            tracing::debug!(conn = self.handle.id, code = code.code(), "closed");
        }
        for run in std::mem::take(&mut self.subs).into_keys() {
            self.release(&run);
        }
        self.gauge().dec();
    }

    async fn drive<R>(&mut self, rx: &mut R, query: WsQuery) -> Exit
    where
        R: Stream<Item = Result<Message, axum::Error>> + Unpin + Send,
    {
        let config = &self.state.config;
        let (ping_every, idle_timeout) = (config.ping_interval, config.idle_timeout);
        let mut auth_deadline = Some(Instant::now() + config.auth_timeout);
        if let Some(token) = query.token.as_deref() {
            auth_deadline = None;
            if let Err(code) = self.authenticate(token).await {
                return Exit::Close(code);
            }
        } else if self.mode == Mode::Single {
            self.state.metrics.auth_failed(AuthError::Missing.failure());
            return Exit::Close(CloseCode::TokenInvalid);
        }
        if self.mode == Mode::Single {
            let claims = self.claims.as_ref().expect("authenticated above");
            let Some(run) = claims.single_run().map(str::to_owned) else {
                return Exit::Close(CloseCode::Forbidden);
            };
            self.subscribe(run, query.since, query.epoch).await;
        }
        self.flush().await;
        let mut last_heard = Instant::now();
        let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stop = self.state.shutting_down();
        tokio::pin!(stop);
        loop {
            if let Some(exit) = self.exit.take() {
                return exit;
            }
            if self.inbox.is_slow() {
                return Exit::Close(CloseCode::SlowConsumer);
            }
            tokio::select! {
                biased;
                () = &mut stop => return Exit::Close(CloseCode::ServiceRestart),
                () = sleep_until_opt(self.expires_at) => return Exit::Close(CloseCode::TokenExpired),
                () = sleep_until_opt(auth_deadline) => return Exit::Close(CloseCode::AuthTimeout),
                _ = ping.tick() => {
                    if last_heard.elapsed() >= idle_timeout {
                        return Exit::Close(CloseCode::IdleTimeout);
                    }
                    self.write(Message::Ping(bytes::Bytes::new())).await;
                    self.flush().await;
                }
                msg = rx.next() => match msg {
                    None | Some(Ok(Message::Close(_))) => return Exit::Gone,
                    Some(Err(e)) if too_big(&e) => return Exit::Close(CloseCode::MessageTooBig),
                    Some(Err(e)) => {
                        tracing::debug!(conn = self.handle.id, error = %e, "read failed");
                        return Exit::Gone;
                    }
                    Some(Ok(msg)) => {
                        last_heard = Instant::now();
                        let was_authed = self.claims.is_some();
                        self.on_message(msg).await;
                        if !was_authed && self.claims.is_some() {
                            auth_deadline = None;
                        }
                        self.flush().await;
                    }
                },
                item = self.inbox.recv() => {
                    // None: the hub found the queue full.
                    let Some(item) = item else { return Exit::Close(CloseCode::SlowConsumer) };
                    self.on_outbound(item).await;
                    for _ in 1..WRITE_BATCH {
                        match self.inbox.try_recv() {
                            Some(item) => self.on_outbound(item).await,
                            None => break,
                        }
                        if self.exit.is_some() {
                            break;
                        }
                    }
                    self.flush().await;
                }
            }
        }
    }

    /// Writes a message without flushing; a failure ends the connection.
    async fn write(&mut self, msg: Message) {
        if self.exit.is_some() {
            return;
        }
        match timeout(self.state.config.write_timeout, self.tx.feed(msg)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => self.exit = Some(Exit::Gone),
            Err(_) => self.exit = Some(Exit::Close(CloseCode::SlowConsumer)),
        }
    }

    async fn flush(&mut self) {
        if self.exit.is_some() {
            return;
        }
        match timeout(self.state.config.write_timeout, self.tx.flush()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => self.exit = Some(Exit::Gone),
            Err(_) => {
                if !self.inbox.is_slow() {
                    self.state.metrics.slow_consumer_closes.inc();
                }
                self.exit = Some(Exit::Close(CloseCode::SlowConsumer));
            }
        }
    }

    async fn send(&mut self, frame: &ServerFrame) {
        self.write(Message::Text(frame.to_json().into())).await;
    }

    async fn error(&mut self, code: ErrorCode, message: impl Into<String>, run: Option<&str>) {
        self.send(&ServerFrame::Error {
            code,
            message: message.into(),
            run: run.map(str::to_owned),
        })
        .await;
    }

    /// First authentication: a refused token closes the connection.
    async fn authenticate(&mut self, token: &str) -> Result<(), CloseCode> {
        let claims = self
            .state
            .verifier
            .verify(Some(token), Scope::Subscribe, None)
            .map_err(AuthError::close_code)?;
        self.accept_claims(claims).await;
        Ok(())
    }

    async fn accept_claims(&mut self, claims: Claims) {
        let clock = self.state.verifier.clock();
        self.expires_at = Some(clock.expiry_instant(claims.exp));
        let exp = claims.exp;
        tracing::debug!(conn = self.handle.id, sub = ?claims.sub, "authenticated");
        self.claims = Some(claims);
        if self.mode == Mode::Multi {
            let welcome = ServerFrame::Welcome {
                conn: format!("{:x}", self.handle.id),
                heartbeat_ms: self.state.config.ping_interval.as_millis() as u64,
                expires_at: exp,
                protocol: PROTOCOL_VERSION,
            };
            self.send(&welcome).await;
        }
    }

    async fn on_message(&mut self, msg: Message) {
        match msg {
            Message::Text(text) => {
                if text.len() > MAX_INBOUND_FRAME {
                    self.exit = Some(Exit::Close(CloseCode::MessageTooBig));
                    return;
                }
                match parse_frame(text.as_str()) {
                    Ok(frame) => self.on_frame(frame).await,
                    Err((code, message)) => self.error(code, message, None).await,
                }
            }
            Message::Binary(_) => self.exit = Some(Exit::Close(CloseCode::ProtocolError)),
            // tungstenite answers pings itself; a pong only proves the client is alive.
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => {}
        }
    }

    async fn on_frame(&mut self, frame: ClientFrame) {
        match frame {
            ClientFrame::Ping { id } => self.send(&ServerFrame::Pong { id }).await,
            ClientFrame::Auth { token } if self.claims.is_none() => {
                if let Err(code) = self.authenticate(&token).await {
                    self.exit = Some(Exit::Close(code));
                }
            }
            ClientFrame::Auth { token } => self.refresh(&token).await,
            _ if self.claims.is_none() => {
                self.error(
                    ErrorCode::NotAuthenticated,
                    "send an auth frame first",
                    None,
                )
                .await;
            }
            _ if self.mode == Mode::Single => {
                self.error(
                    ErrorCode::UnknownFrame,
                    "this socket follows one run; use /v1/ws to subscribe",
                    None,
                )
                .await;
            }
            ClientFrame::Subscribe { run, since, epoch } => self.subscribe(run, since, epoch).await,
            ClientFrame::Unsubscribe { run } => {
                if let Some((run, _)) = self.subs.remove_entry(run.as_str()) {
                    self.release(&run);
                }
                self.send(&ServerFrame::Unsubscribed {
                    run,
                    reason: EndReason::Unsubscribed,
                })
                .await;
            }
        }
    }

    /// A later `auth` frame: replace the token in place.
    async fn refresh(&mut self, token: &str) {
        match self
            .state
            .verifier
            .verify(Some(token), Scope::Subscribe, None)
        {
            Err(e) => {
                let message = format!(
                    "token refresh refused: {e}; the previous token stays in force until it expires"
                );
                self.error(ErrorCode::AuthFailed, message, None).await;
            }
            Ok(claims) => {
                let lost: Vec<RunId> = self
                    .subs
                    .keys()
                    .filter(|run| !claims.allows_run(run))
                    .cloned()
                    .collect();
                self.accept_claims(claims).await;
                for run in lost {
                    self.end(&run, EndReason::Forbidden).await;
                }
            }
        }
    }

    async fn subscribe(&mut self, run: String, since: Option<u64>, epoch: Option<String>) {
        if !is_valid_run_id(&run) {
            let message = "invalid run id: 1 to 128 bytes of [A-Za-z0-9_.:-]";
            self.error(ErrorCode::BadRequest, message, Some(&run)).await;
            return;
        }
        let claims = self.claims.as_ref().expect("subscribe needs auth");
        if !claims.allows_run(&run) {
            self.state
                .metrics
                .auth_failed(AuthError::WrongRun.failure());
            if self.mode == Mode::Single {
                self.exit = Some(Exit::Close(CloseCode::Forbidden));
            } else {
                self.send(&ServerFrame::Unsubscribed {
                    run,
                    reason: EndReason::Forbidden,
                })
                .await;
            }
            return;
        }
        let run: RunId = match self.subs.get_key_value(run.as_str()) {
            // A second subscribe to the same run starts it over from the client's `since`.
            Some((existing, _)) => existing.clone(),
            None => {
                if self.subs.len() >= self.state.config.max_subscriptions {
                    let message = format!(
                        "at most {} subscriptions per connection",
                        self.state.config.max_subscriptions
                    );
                    self.error(ErrorCode::TooManySubscriptions, message, Some(&run))
                        .await;
                    return;
                }
                let run: RunId = run.into();
                // Register before the snapshot: events that race with it wait in the queue.
                self.state.hub.register(&run, &self.handle);
                if let Err(e) = self.state.broker.watch(run.clone()).await {
                    self.state.hub.unregister(&run, self.handle.id);
                    self.state.broker.unwatch(run.clone());
                    self.error(ErrorCode::BrokerUnavailable, e.to_string(), Some(&run))
                        .await;
                    return;
                }
                self.state.metrics.subscriptions.inc();
                run
            }
        };
        self.subs.insert(run.clone(), Follow::default());
        match self.state.broker.snapshot(run.clone(), since).await {
            Ok(snapshot) => {
                let mut out = Vec::new();
                if let Some(follow) = self.subs.get_mut(&run) {
                    follow.on_snapshot(&run, snapshot, since, epoch.as_deref(), true, &mut out);
                }
                self.emit(&run, &mut out).await;
            }
            Err(e) => {
                self.subs.remove(&run);
                self.release(&run);
                self.error(ErrorCode::BrokerUnavailable, e.to_string(), Some(&run))
                    .await;
            }
        }
    }

    /// Sends and empties `out`.
    async fn emit(&mut self, run: &RunId, out: &mut Vec<Emit>) {
        for item in out.drain(..) {
            match item {
                Emit::Control(frame) => self.send(&frame).await,
                Emit::Event(ev) => {
                    self.write(Message::Text(ev.frame.clone())).await;
                    self.state.metrics.events_delivered.inc();
                }
                Emit::End(reason) => self.end(run, reason).await,
            }
        }
    }

    async fn on_outbound(&mut self, item: Outbound) {
        let run = match item {
            Outbound::Event(ev) => {
                let Some(follow) = self.subs.get_mut(&ev.run) else {
                    return; // unsubscribed since it was queued
                };
                let mut out = std::mem::take(&mut self.scratch);
                let sent = follow.on_event(&ev, &mut out).is_ok();
                if sent {
                    self.emit(&ev.run, &mut out).await;
                }
                self.scratch = out;
                if sent {
                    return;
                }
                ev.run.clone()
            }
            Outbound::Resync(run) => run,
        };
        self.resync(&run).await;
    }

    /// Catches a subscription up from its last seq after a gap or an epoch change.
    async fn resync(&mut self, run: &RunId) {
        let Some(follow) = self.subs.get(run) else {
            return;
        };
        let (since, epoch) = follow.resync_point();
        let epoch = epoch.map(str::to_owned);
        match self.state.broker.snapshot(run.clone(), since).await {
            Ok(snapshot) => {
                let mut out = Vec::new();
                if let Some(follow) = self.subs.get_mut(run) {
                    follow.on_snapshot(run, snapshot, since, epoch.as_deref(), false, &mut out);
                }
                self.emit(run, &mut out).await;
            }
            // The broker resyncs every subscription again once it is back.
            Err(e) => tracing::debug!(conn = self.handle.id, %run, error = %e, "resync failed"),
        }
    }

    /// Ends a subscription and tells the client why; a single-run socket then closes.
    async fn end(&mut self, run: &RunId, reason: EndReason) {
        if self.subs.remove(run).is_some() {
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
        })
        .await;
    }

    fn release(&self, run: &RunId) {
        self.state.hub.unregister(run, self.handle.id);
        self.state.broker.unwatch(run.clone());
        self.state.metrics.subscriptions.dec();
    }
}

/// Parses a client frame, telling malformed JSON from an unknown `type` from bad fields.
fn parse_frame(text: &str) -> Result<ClientFrame, (ErrorCode, String)> {
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
