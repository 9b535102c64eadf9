//! `GET /v1/runs/{run}/events`: Server-Sent Events for one run.
//!
//! The stream opens with `event: subscribed` (or `reset`) carrying the run's state, then the
//! replay after `Last-Event-ID`/`?since=`, then live events (`id:` seq, `event:` name, `data:` the
//! event frame, the same bytes WebSocket subscribers get). It ends after the terminal event with
//! `event: unsubscribed`, after `--sse-max-duration`, or at shutdown with `event: close`.

use std::convert::Infallible;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt as _;
use runwire_protocol::token::Scope;
use runwire_protocol::{CloseCode, ServerFrame, is_valid_run_id};
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_stream::wrappers::ReceiverStream;

use crate::AppState;
use crate::auth::request_token;
use crate::broker::{RunId, Slot};
use crate::error::ApiError;
use crate::hub::{ConnHandle, Inbox, Outbound};
use crate::transport::ApiQuery;
use crate::transport::follow::{Emit, Follow};

/// Chunks buffered between the stream task and the HTTP body; a client that lets this fill up
/// for `--write-timeout` is dropped.
const BODY_BUFFER: usize = 16;

/// Query parameters of the SSE endpoint.
#[derive(Debug, Default, Deserialize)]
pub struct SseQuery {
    token: Option<String>,
    since: Option<u64>,
    epoch: Option<String>,
}

/// `GET /v1/runs/{run}/events`.
pub async fn stream(
    State(state): State<AppState>,
    Path(run): Path<String>,
    ApiQuery(q): ApiQuery<SseQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if !crate::transport::origin_allowed(&state.config, &headers) {
        return Err(ApiError::Origin);
    }
    if !is_valid_run_id(&run) {
        return Err(ApiError::bad_request("invalid_run", "invalid run id"));
    }
    let token = request_token(&headers, q.token.as_deref());
    let claims = state.verifier.verify(token, Scope::Subscribe, Some(&run))?;
    let since = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .or(q.since);
    let slot = match claims.ws.as_deref() {
        Some(ws) => Some(
            state
                .broker
                .stream_slot(ws.into(), state.config.sse_max_per_workspace)
                .await?,
        ),
        None => None,
    };
    let run: RunId = run.into();
    let (handle, inbox) = ConnHandle::new(state.next_conn_id(), state.config.queue_capacity);
    state.hub.register(&run, &handle);
    let release = Release {
        state: state.clone(),
        run: run.clone(),
        conn: handle.id,
        _slot: slot,
    };
    state.broker.watch(run.clone()).await?;
    let snapshot = state.broker.snapshot(run.clone(), since).await?;
    let same_epoch = super::follow::same_epoch(q.epoch.as_deref(), &snapshot.epoch);
    if snapshot.state.status.is_terminal()
        && same_epoch
        && since.is_some_and(|s| s >= snapshot.head)
    {
        // Nothing newer will ever come: 204 tells EventSource to stop reconnecting.
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let mut follow = Follow::default();
    let mut first = Vec::new();
    follow.on_snapshot(&run, snapshot, since, q.epoch.as_deref(), true, &mut first);
    let (tx, rx) = mpsc::channel::<Bytes>(BODY_BUFFER);
    let task = SseTask {
        state: state.clone(),
        run,
        follow,
        inbox,
        tx,
        scratch: Vec::new(),
        expires_at: state.verifier.clock().expiry_instant(claims.exp),
        _release: release,
    };
    tokio::spawn(task.run(first));
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
    pub(crate) state: AppState,
    pub(crate) run: RunId,
    pub(crate) conn: u64,
    pub(crate) _slot: Option<Slot>,
}

impl Drop for Release {
    fn drop(&mut self) {
        self.state.hub.unregister(&self.run, self.conn);
        self.state.broker.unwatch(self.run.clone());
    }
}

struct SseTask {
    state: AppState,
    run: RunId,
    follow: Follow,
    inbox: Inbox,
    tx: mpsc::Sender<Bytes>,
    /// Reused for every live event, so delivering one allocates nothing.
    scratch: Vec<Emit>,
    /// When the token expires (plus the leeway): the stream ends with a 4001 `close` event.
    expires_at: Instant,
    _release: Release,
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
    async fn run(mut self, mut first: Vec<Emit>) {
        let metrics = self.state.metrics.clone();
        metrics.sse_connections.inc();
        metrics.subscriptions.inc();
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
            Outbound::Event(ev) => self.follow.on_event(&ev, &mut out).is_err(),
            Outbound::Resync(_) => true,
        };
        if needs_resync {
            let (since, epoch) = self.follow.resync_point();
            let epoch = epoch.map(str::to_owned);
            match self.state.broker.snapshot(self.run.clone(), since).await {
                Ok(snapshot) => self.follow.on_snapshot(
                    &self.run,
                    snapshot,
                    since,
                    epoch.as_deref(),
                    false,
                    &mut out,
                ),
                // The broker resyncs every subscription again once it is back.
                Err(e) => tracing::debug!(run = %self.run, error = %e, "sse resync failed"),
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
