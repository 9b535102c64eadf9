//! `GET /v1/runs/{run}/events`: Server-Sent Events for one run.
//!
//! The stream opens with `event: subscribed` (or `reset`) carrying the run's state, then the
//! replay after `Last-Event-ID`/`?since=`, then live events (`id:` seq, `event:` name, `data:` the
//! event frame, the same bytes WebSocket subscribers get). It ends after the terminal event with
//! `event: unsubscribed`, after `--sse-max-duration`, or at shutdown with `event: close`.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt as _;
use runwire_protocol::token::Claims;
use runwire_protocol::{CloseCode, ServerFrame};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_stream::wrappers::ReceiverStream;

use crate::broker::{BrokerError, RunId, Slot};
use crate::error::ApiError;
use crate::hub::{ConnHandle, Inbox, Outbound};
use crate::state::AppState;
use crate::transport::ApiQuery;
use crate::transport::extract::{AllowedOrigin, Authorized, Subscribe};
use crate::transport::subscription::{Emit, Subscription};

/// Chunks buffered between the stream task and the HTTP body; a client that lets this fill up
/// for `--write-timeout` is dropped.
const BODY_BUFFER: usize = 16;

/// Query parameters of the SSE endpoint (besides `?token=`, which [`Authorized`] reads).
#[derive(Debug, Default, Deserialize)]
pub struct SseQuery {
    since: Option<u64>,
    epoch: Option<String>,
}

/// `GET /v1/runs/{run}/events`.
pub async fn stream(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<SseQuery>,
    _: AllowedOrigin,
    Authorized { run, claims, .. }: Authorized<Subscribe>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let since = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(q.since);
    let (tx, rx) = mpsc::channel::<Bytes>(BODY_BUFFER);
    let Some(task) =
        SseTask::open(state, run.into(), &claims, since, q.epoch.as_deref(), tx).await?
    else {
        // Nothing newer will ever come: 204 tells EventSource to stop reconnecting.
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    tokio::spawn(task.run());
    Ok(event_stream(rx))
}

/// A `text/event-stream` response whose body is what `rx` yields, unbuffered by proxies.
pub(crate) fn event_stream(rx: mpsc::Receiver<Bytes>) -> Response {
    let body = Body::from_stream(ReceiverStream::new(rx).map(Ok::<_, Infallible>));
    let mut response = Response::new(body);
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    // Tell nginx-style proxies not to buffer the stream.
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

/// Undoes a stream's registrations when it ends, however it ends.
pub(crate) struct Release {
    state: AppState,
    run: RunId,
    conn: u64,
    _slot: Option<Slot>,
}

impl Release {
    /// Registers a new stream of `run` with the hub and has the broker bring the run's live
    /// events to this relay, holding `slot` until the stream ends. The stream reads its events
    /// from the returned inbox.
    pub(crate) async fn watch(
        state: &AppState,
        run: &RunId,
        slot: Option<Slot>,
    ) -> Result<(Inbox, Self), BrokerError> {
        let (handle, inbox) = ConnHandle::new(state.next_conn_id(), state.config.queue_capacity);
        state.hub.register(run, &handle);
        let release = Self {
            state: state.clone(),
            run: run.clone(),
            conn: handle.id,
            _slot: slot,
        };
        // Dropped on failure, which undoes the registrations.
        state.broker.watch(run.clone()).await?;
        Ok((inbox, release))
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        self.state.hub.unregister(&self.run, self.conn);
        self.state.broker.unwatch(self.run.clone());
    }
}

/// One SSE stream: the subscription, and the task that writes it to the response body.
///
/// It writes to a channel rather than to the response, so that tests drive it, and its timers,
/// with paused time.
pub struct SseTask {
    state: AppState,
    run: RunId,
    sub: Subscription,
    inbox: Inbox,
    tx: mpsc::Sender<Bytes>,
    /// The snapshot and replay, written first.
    first: Vec<Emit>,
    /// Reused for every live event, so delivering one allocates nothing.
    scratch: Vec<Emit>,
    /// When the token expires (plus the leeway): the stream ends with a 4001 `close` event.
    expires_at: Instant,
    _release: Release,
}

impl std::fmt::Debug for SseTask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SseTask")
            .field("run", &self.run)
            .finish_non_exhaustive()
    }
}

/// A control message. `subscribed` and `reset` carry an `id:` so that an EventSource that
/// reconnects resumes from there (and a finished run then answers 204): the seq their state is at,
/// or, when `replay_from` (the first replayed event's seq) follows them, the seq just before it.
/// An `id:` must never be ahead of the events delivered: a stream cut right after `subscribed`
/// would otherwise resume past the replay it never got.
fn control(frame: &ServerFrame, replay_from: Option<u64>) -> Bytes {
    let (name, id) = match frame {
        ServerFrame::Subscribed { seq, .. } => ("subscribed", Some(*seq)),
        ServerFrame::Reset { seq, .. } => ("reset", Some(*seq)),
        ServerFrame::Unsubscribed { .. } => ("unsubscribed", None),
        _ => ("message", None),
    };
    let id = id.map(|seq| replay_from.map_or(seq, |first| seq.min(first.saturating_sub(1))));
    let id = id.map(|seq| format!("id: {seq}\n")).unwrap_or_default();
    Bytes::from(format!("{id}event: {name}\ndata: {}\n\n", frame.to_json()))
}

/// The last message of a stream the relay ends on purpose.
fn close_event(code: CloseCode) -> Bytes {
    let data = serde_json::json!({"type": "close", "code": code.code(), "reason": code.reason()});
    Bytes::from(format!("event: close\ndata: {data}\n\n"))
}

impl SseTask {
    /// Subscribes to `run` for a client whose token has `claims`, resuming after `since` of
    /// `epoch` when given, and takes a stream slot of the token's workspace. `None`: the run is
    /// finished and the client has all of it. The stream is written to `tx` once [`Self::run`]
    /// runs.
    pub async fn open(
        state: AppState,
        run: RunId,
        claims: &Claims,
        since: Option<u64>,
        epoch: Option<&str>,
        tx: mpsc::Sender<Bytes>,
    ) -> Result<Option<Self>, ApiError> {
        let slot = match claims.ws.as_deref() {
            Some(ws) => Some(
                state
                    .broker
                    .stream_slot(ws.into(), state.config.sse_max_per_workspace)
                    .await?,
            ),
            None => None,
        };
        let (inbox, release) = Release::watch(&state, &run, slot).await?;
        let snapshot = state.broker.snapshot(run.clone(), since).await?;
        let same_epoch = super::subscription::same_epoch(epoch, &snapshot.epoch);
        if snapshot.state.status.is_terminal()
            && same_epoch
            && since.is_some_and(|s| s >= snapshot.head)
        {
            return Ok(None);
        }
        let mut sub = Subscription::default();
        let mut first = Vec::new();
        sub.on_snapshot(&run, snapshot, since, epoch, true, &mut first);
        let expires_at = state.verifier.clock().expiry_instant(claims.exp);
        Ok(Some(Self {
            state,
            run,
            sub,
            inbox,
            tx,
            first,
            scratch: Vec::new(),
            expires_at,
            _release: release,
        }))
    }

    /// Writes the stream until it ends: the run's end, the token's expiry, `--sse-max-duration`,
    /// shutdown, a client gone or too slow.
    pub async fn run(mut self) {
        let metrics = self.state.metrics.clone();
        metrics.sse_connections.inc();
        metrics.subscriptions.inc();
        let mut first = std::mem::take(&mut self.first);
        self.drive(&mut first).await;
        metrics.subscriptions.dec();
        metrics.sse_connections.dec();
    }

    async fn drive(&mut self, first: &mut Vec<Emit>) {
        let config = &self.state.config;
        let deadline = Instant::now() + config.sse_max_duration;
        let mut heartbeat =
            tokio::time::interval_at(Instant::now() + config.sse_heartbeat, config.sse_heartbeat);
        let stop = self.state.shutting_down();
        tokio::pin!(stop);
        // A reconnect hint for EventSource, then the snapshot and replay.
        if !self.write(Bytes::from_static(b"retry: 1000\n\n")).await || !self.emit(first).await {
            return;
        }
        loop {
            tokio::select! {
                biased;
                () = &mut stop => {
                    self.write(close_event(CloseCode::ServiceRestart)).await;
                    return;
                }
                () = sleep_until(self.expires_at) => {
                    self.write(close_event(CloseCode::TokenExpired)).await;
                    return;
                }
                () = self.tx.closed() => return,
                () = sleep_until(deadline) => return,
                _ = heartbeat.tick() => {
                    if !self.write(Bytes::from_static(b": hb\n\n")).await {
                        return;
                    }
                }
                item = self.inbox.recv() => {
                    // None: the queue overflowed (slow consumer).
                    let Some(item) = item else { return };
                    if !self.on_outbound(item).await {
                        return;
                    }
                }
            }
        }
    }

    /// False when the stream is over.
    async fn on_outbound(&mut self, item: Outbound) -> bool {
        let mut out = std::mem::take(&mut self.scratch);
        let needs_resync = match item {
            Outbound::Event(ev) => {
                let resync = self.sub.on_event(&ev, &mut out).is_err();
                // Nothing in `out`: the replay sent this event already.
                if !resync && !out.is_empty() {
                    self.state
                        .metrics
                        .delivery_latency
                        .observe_since(ev.published);
                }
                resync
            }
            Outbound::Resync(_) => true,
        };
        if needs_resync {
            let resynced = self.sub.resync(&*self.state.broker, &self.run, &mut out);
            if let Err(e) = resynced.await {
                tracing::debug!(run = %self.run, error = %e, "sse resync failed");
            }
        }
        let open = self.emit(&mut out).await;
        out.clear();
        self.scratch = out;
        open
    }

    /// Writes and empties `out`; false when the stream is over.
    async fn emit(&mut self, out: &mut Vec<Emit>) -> bool {
        let mut items = out.drain(..).peekable();
        while let Some(item) = items.next() {
            let (bytes, end) = match item {
                Emit::Control(frame) => {
                    let replay_from = match items.peek() {
                        Some(Emit::Event(ev)) => Some(ev.seq),
                        _ => None,
                    };
                    (control(&frame, replay_from), false)
                }
                Emit::Event(ev) => {
                    self.state.metrics.events_delivered.inc();
                    (ev.sse(), false)
                }
                Emit::End(reason) => {
                    let frame = ServerFrame::Unsubscribed {
                        run: self.run.to_string(),
                        reason,
                    };
                    (control(&frame, None), true)
                }
            };
            if !self.write(bytes).await || end {
                return false;
            }
        }
        true
    }

    async fn write(&mut self, bytes: Bytes) -> bool {
        match timeout(self.state.config.write_timeout, self.tx.send(bytes)).await {
            Ok(Ok(())) => true,
            Ok(Err(_)) => false,
            Err(_) => {
                self.state.metrics.slow_consumer_closes.inc();
                false
            }
        }
    }
}
