//! `event-broadcaster`: the Fastify EventBroadcaster that runwire replaces.
//!
//! Its events are `{type, executionId, workflowId, timestamp, data}`:
//!
//! | `type` | runwire event | from `data` |
//! | --- | --- | --- |
//! | `execution:started` | `run.started` | `workflow` = `workflowId` when a string and not given |
//! | `execution:progress` | `run.progress` | `progress` (a percentage) |
//! | `execution:completed` | `run.completed` | `result` |
//! | `execution:failed` | `run.failed` | `error` (a string, or an object's `message`) |
//! | `execution:cancelled` | `run.cancelled` | `reason` |
//! | `agent:started` | `node.started` | `node_key` = `agentId` |
//! | `agent:progress` | `node.progress` | `node_key` = `agentId`, `progress` |
//! | `agent:completed` | `node.completed` | `node_key` = `agentId`, `output_summary` = `result` |
//! | `agent:failed` | `node.failed` | `node_key` = `agentId`, `error` |
//!
//! The event's data is the EventBroadcaster's `data` object (a non-object under `value`) with the
//! envelope's `executionId`, `workflowId` and `timestamp` added as `execution_id`, `workflow_id`
//! and `timestamp`. Other `execution:*` / `agent:*` types, and agent events without an `agentId`
//! or progress without a number, become `custom`; a terminal event whose data does not fit still
//! ends the run ([`super::fit`]).

use std::collections::HashMap;

use axum::Json;
use axum::extract::State;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use axum::http::HeaderMap;
use axum::response::Response;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use runwire_protocol::token::Scope;
use runwire_protocol::{CloseCode, Envelope, is_valid_run_id};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tokio::time::{Instant, sleep_until, timeout};

use super::{custom, error_text, fit, id_text, on_live_event};
use crate::auth::request_token;
use crate::broker::{BrokerHealth, NewEvent, RunId, now_ts};
use crate::error::AuthError;
use crate::hub::{ConnHandle, Inbox, Outbound};
use crate::state::AppState;
use crate::transport::ApiQuery;
use crate::transport::extract::AllowedOrigin;
use crate::transport::subscription::{Emit, Subscription};
use crate::transport::ws::upgrade::Upgrade;

/// Maps an event in the EventBroadcaster's shape; `None` when `value` is not one (no `type` of
/// `execution:…` or `agent:…`).
pub fn map_message(value: &Value) -> Option<NewEvent> {
    let obj = value.as_object()?;
    let (family, what) = obj.get("type")?.as_str()?.split_once(':')?;
    if !matches!(family, "execution" | "agent") {
        return None;
    }
    let mut data = match obj.get("data") {
        Some(Value::Object(d)) => d.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(other) => Map::from_iter([("value".to_owned(), other.clone())]),
    };
    for (from, to) in [
        ("executionId", "execution_id"),
        ("workflowId", "workflow_id"),
        ("timestamp", "timestamp"),
    ] {
        if let Some(v) = obj.get(from) {
            data.entry(to).or_insert_with(|| v.clone());
        }
    }
    let name = match (family, what) {
        ("execution", "started") => {
            if let Some(w @ Value::String(_)) = obj.get("workflowId") {
                data.entry("workflow").or_insert_with(|| w.clone());
            }
            "run.started"
        }
        ("execution", "progress") => "run.progress",
        ("execution", "completed") => "run.completed",
        ("execution", "failed") => "run.failed",
        ("execution", "cancelled" | "canceled") => "run.cancelled",
        ("agent", "started") => "node.started",
        ("agent", "progress") => "node.progress",
        ("agent", "completed") => "node.completed",
        ("agent", "failed") => "node.failed",
        _ => return Some(custom(value)),
    };
    let node_key = if family == "agent" {
        let Some(key) = id_text(data.get("agentId")) else {
            return Some(custom(value));
        };
        data.insert("node_key".into(), key.clone().into());
        Some(key)
    } else {
        None
    };
    if name == "node.completed" {
        if let Some(result) = data.get("result").cloned() {
            data.entry("output_summary").or_insert(result);
        }
    }
    let error = matches!(name, "run.failed" | "node.failed")
        .then(|| error_text(data.get("error")).unwrap_or_else(|| format!("{family} failed")));
    if let Some(error) = &error {
        data.entry("error").or_insert_with(|| error.clone().into());
    }
    if matches!(name, "run.progress" | "node.progress") {
        // A progress that is not a percentage is kept, as custom, rather than guessed at.
        return Some(NewEvent::parse(name, Value::Object(data)).unwrap_or_else(|_| custom(value)));
    }
    Some(fit(
        name,
        data,
        value,
        node_key.as_deref(),
        error.as_deref(),
    ))
}

/// Largest client frame, as the EventBroadcaster allowed.
pub const MAX_CLIENT_FRAME: usize = 1024 * 1024;

/// The EventBroadcaster's event for a runwire event: the table above read backwards (`node.skipped`
/// → `agent:skipped`; other names as they are), `data` without the fields the mapping added. A
/// message of the EventBroadcaster's that did not fit its event's shape was kept whole under
/// `payload`, and goes out as it came.
pub fn broadcaster_message(envelope: &Envelope) -> Value {
    if let Some(Value::Object(original)) = envelope.data.get("payload") {
        let theirs = (original.get("type").and_then(Value::as_str))
            .is_some_and(|t| t.starts_with("execution:") || t.starts_with("agent:"));
        if theirs && original.contains_key("executionId") {
            let mut out = original.clone();
            out.insert("executionId".into(), envelope.run.clone().into());
            return Value::Object(out);
        }
    }
    let kind = match envelope.event.as_str() {
        "run.started" => "execution:started",
        "run.progress" => "execution:progress",
        "run.completed" => "execution:completed",
        "run.failed" => "execution:failed",
        "run.cancelled" => "execution:cancelled",
        "node.started" => "agent:started",
        "node.progress" => "agent:progress",
        "node.completed" => "agent:completed",
        "node.failed" => "agent:failed",
        "node.skipped" => "agent:skipped",
        other => other,
    };
    let mut data = envelope.data.clone();
    let mut workflow_id = Value::Null;
    let mut timestamp = Value::String(envelope.ts.clone());
    if let Value::Object(d) = &mut data {
        d.remove("execution_id");
        if let Some(w) = d.remove("workflow_id") {
            workflow_id = w;
        } else if let Some(w) = d.get("workflow") {
            workflow_id = w.clone();
        }
        if let Some(t) = d.remove("timestamp") {
            timestamp = t;
        }
        if kind.starts_with("agent:") {
            if let Some(key) = d.get("node_key").cloned() {
                d.entry("agentId").or_insert(key);
            }
        }
    }
    json!({
        "type": kind,
        "executionId": envelope.run,
        "workflowId": workflow_id,
        "timestamp": timestamp,
        "data": data,
    })
}

/// `GET /api/ws/health`.
pub async fn health(State(state): State<AppState>) -> Json<Value> {
    let up = state.broker.health() == BrokerHealth::Up;
    Json(json!({
        "status": if up { "ok" } else { "degraded" },
        // Every WebSocket open on this relay, whatever its endpoint.
        "connections": state.metrics.ws_connections.get() + state.metrics.executions_connections.get(),
    }))
}

/// `GET /api/ws`: the EventBroadcaster's socket. The token (`?token=` or `Authorization: Bearer`)
/// is a subscribe token; it decides which executions a client may subscribe to.
pub async fn socket(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<TokenQuery>,
    headers: HeaderMap,
    ws: Upgrade,
    _: AllowedOrigin,
) -> Response {
    let token = request_token(&headers, q.token.as_deref()).map(str::to_owned);
    ws.on_upgrade(MAX_CLIENT_FRAME, move |rx, tx| {
        tokio::spawn(serve_socket(state, tx, rx, token));
    })
}

/// `?token=` on `/api/ws`.
#[derive(Debug, Default, Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// One `/api/ws` connection over `tx` / `rx`.
///
/// Client frames: `{"type":"subscribe"|"unsubscribe","executionId"}` (answered
/// `{"type":"subscribed"|"unsubscribed","executionId"}`, or `{"type":"error","executionId",
/// "message"}` when the token does not cover it) and `{"type":"ping"}` (answered
/// `{"type":"pong","timestamp"}`). Each subscribed execution's events follow from then on, as
/// [`broadcaster_message`] gives them, until its terminal event. The relay pings every
/// `--ping-interval` and closes 4009 after `--idle-timeout` without hearing from the client, 4001
/// when the token expires, 1012 at shutdown; a refused token closes 4002 (4001 if expired).
pub async fn serve_socket<W, R>(state: AppState, mut tx: W, mut rx: R, token: Option<String>)
where
    W: Sink<Message, Error = axum::Error> + Unpin + Send,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin + Send,
{
    state.metrics.executions_connections.inc();
    let (handle, inbox) = ConnHandle::new(state.next_conn_id(), state.config.queue_capacity);
    let mut subs: HashMap<RunId, Subscription> = HashMap::new();
    let code = session(&state, &mut tx, &mut rx, token, &handle, inbox, &mut subs).await;
    for run in subs.into_keys() {
        state.hub.unregister(&run, handle.id);
        state.broker.unwatch(run);
    }
    if let Some(code) = code {
        let frame = CloseFrame {
            code: code.code(),
            reason: Utf8Bytes::from_static(code.reason()),
        };
        let _ = timeout(state.config.write_timeout, async {
            tx.send(Message::Close(Some(frame))).await?;
            tx.close().await
        })
        .await;
    }
    state.metrics.executions_connections.dec();
}

/// `None`: the client is gone.
#[allow(clippy::too_many_lines)]
async fn session<W, R>(
    state: &AppState,
    tx: &mut W,
    rx: &mut R,
    token: Option<String>,
    handle: &ConnHandle,
    mut inbox: Inbox,
    subs: &mut HashMap<RunId, Subscription>,
) -> Option<CloseCode>
where
    W: Sink<Message, Error = axum::Error> + Unpin + Send,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin + Send,
{
    let config = &state.config;
    if state.websockets_over_cap() {
        return Some(CloseCode::TooManyConnections);
    }
    let claims = match state
        .verifier
        .verify(token.as_deref(), Scope::Subscribe, None)
    {
        Ok(c) => c,
        Err(e) => return Some(e.close_code()),
    };
    let expires_at = state.verifier.clock().expiry_instant(claims.exp);
    let mut last_heard = Instant::now();
    let mut next_ping = last_heard + config.ping_interval;
    let mut stop = state.shutdown_flag();
    let mut out: Vec<(RunId, Emit)> = Vec::new();
    let mut replies: Vec<Value> = Vec::new();
    loop {
        let mut sends: Vec<Value> = std::mem::take(&mut replies);
        for (run, item) in out.drain(..) {
            match item {
                Emit::Control(_) => {}
                Emit::Event(ev) => {
                    if let Ok(envelope) = serde_json::from_str::<Envelope>(ev.frame.as_str()) {
                        state.metrics.events_delivered.inc();
                        sends.push(broadcaster_message(&envelope));
                    }
                }
                Emit::End(_) => {
                    if subs.remove(&run).is_some() {
                        state.hub.unregister(&run, handle.id);
                        state.broker.unwatch(run);
                    }
                }
            }
        }
        for v in sends {
            if let Err(end) = send(tx, state, Message::Text(v.to_string().into())).await {
                return end;
            }
        }
        let deadline = next_ping.min(expires_at);
        let mut subscribe: Option<RunId> = None;
        tokio::select! {
            biased;
            () = stopping(&mut stop) => return Some(CloseCode::ServiceRestart),
            () = sleep_until(deadline) => {
                let now = Instant::now();
                if expires_at <= now {
                    return Some(CloseCode::TokenExpired);
                }
                if now.duration_since(last_heard) >= config.idle_timeout {
                    return Some(CloseCode::IdleTimeout);
                }
                next_ping = now + config.ping_interval;
                if let Err(end) = send(tx, state, Message::Ping(Default::default())).await {
                    return end;
                }
            }
            msg = rx.next() => match msg {
                None | Some(Ok(Message::Close(_)) | Err(_)) => return None,
                Some(Ok(Message::Text(text))) => {
                    last_heard = Instant::now();
                    let frame: Value = serde_json::from_str(text.as_str()).unwrap_or_default();
                    let id = id_text(frame.get("executionId"));
                    match (frame.get("type").and_then(Value::as_str), id) {
                        (Some("ping"), _) => replies.push(json!({"type": "pong", "timestamp": now_ts()})),
                        (Some("subscribe"), Some(id)) => {
                            if !is_valid_run_id(&id) || !claims.allows_run(&id) {
                                state.metrics.auth_failed(AuthError::WrongRun.failure());
                                replies.push(json!({"type": "error", "executionId": id, "message": "not allowed to subscribe to this execution"}));
                            } else if subs.contains_key(id.as_str()) {
                                replies.push(json!({"type": "subscribed", "executionId": id}));
                            } else if subs.len() >= config.max_subscriptions {
                                replies.push(json!({"type": "error", "executionId": id, "message": "too many subscriptions"}));
                            } else {
                                subscribe = Some(id.into());
                            }
                        }
                        (Some("unsubscribe"), Some(id)) => {
                            if let Some((run, _)) = subs.remove_entry(id.as_str()) {
                                state.hub.unregister(&run, handle.id);
                                state.broker.unwatch(run);
                            }
                            replies.push(json!({"type": "unsubscribed", "executionId": id}));
                        }
                        _ => replies.push(json!({"type": "error", "message": "expected {\"type\":\"subscribe\"|\"unsubscribe\",\"executionId\"} or {\"type\":\"ping\"}"})),
                    }
                }
                Some(Ok(Message::Binary(_))) => return Some(CloseCode::ProtocolError),
                Some(Ok(Message::Ping(payload))) => {
                    last_heard = Instant::now();
                    if let Err(end) = send(tx, state, Message::Pong(payload)).await {
                        return end;
                    }
                }
                Some(Ok(_)) => last_heard = Instant::now(),
            },
            item = inbox.recv() => {
                let Some(item) = item else { return Some(CloseCode::SlowConsumer) };
                let (run, resync) = match item {
                    Outbound::Event(ev) => {
                        let run = ev.run.clone();
                        let mut emitted = Vec::new();
                        let resync = match subs.get_mut(&run) {
                            Some(sub) => on_live_event(state, sub, &ev, &mut emitted).is_err(),
                            None => false,
                        };
                        out.extend(emitted.into_iter().map(|e| (run.clone(), e)));
                        (run, resync)
                    }
                    Outbound::Resync(run) => (run, true),
                };
                if let Some(sub) = subs.get_mut(&run).filter(|_| resync) {
                    let mut emitted = Vec::new();
                    let _ = sub.resync(&*state.broker, &run, &mut emitted).await;
                    out.extend(emitted.into_iter().map(|e| (run.clone(), e)));
                }
            }
        }
        if let Some(run) = subscribe {
            state.hub.register(&run, handle);
            let watched = state.broker.watch(run.clone()).await;
            let snapshot = match watched {
                Ok(()) => state.broker.snapshot(run.clone(), None).await.ok(),
                Err(_) => None,
            };
            let Some(snapshot) = snapshot else {
                state.hub.unregister(&run, handle.id);
                state.broker.unwatch(run.clone());
                replies.push(
                    json!({"type": "error", "executionId": &*run, "message": "broker unavailable"}),
                );
                continue;
            };
            let mut sub = Subscription::default();
            let mut emitted = Vec::new();
            sub.on_snapshot(&run, snapshot, None, None, false, &mut emitted);
            subs.insert(run.clone(), sub);
            replies.push(json!({"type": "subscribed", "executionId": &*run}));
            out.extend(emitted.into_iter().map(|e| (run.clone(), e)));
        }
    }
}

/// Writes `msg`. `Err` ends the session: `None` when the socket is gone, 4008 for a write that took
/// longer than `--write-timeout` (counted as a slow-consumer close).
async fn send<W>(tx: &mut W, state: &AppState, msg: Message) -> Result<(), Option<CloseCode>>
where
    W: Sink<Message, Error = axum::Error> + Unpin + Send,
{
    match timeout(state.config.write_timeout, tx.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(None),
        Err(_) => {
            state.metrics.slow_consumer_closes.inc();
            Err(Some(CloseCode::SlowConsumer))
        }
    }
}

async fn stopping(flag: &mut tokio::sync::watch::Receiver<bool>) {
    // An error means the relay state is gone: stop as well.
    let _ = flag.wait_for(|stopping| *stopping).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What the broadcaster sends for event `seq` of run `e1`.
    fn outgoing(seq: u64, event: &str, ts: &str, data: Value) -> Value {
        broadcaster_message(&Envelope {
            run: "e1".into(),
            seq,
            event: event.into(),
            ts: ts.into(),
            data,
        })
    }

    fn mapped(v: Value) -> (String, Value) {
        let ev = map_message(&v).expect("claimed");
        (ev.name().to_owned(), ev.data)
    }

    fn envelope(kind: &str, data: Value) -> Value {
        json!({"type": kind, "executionId": "e1", "workflowId": "wf", "timestamp": "2026-11-29T10:00:00.000Z", "data": data})
    }

    #[test]
    fn events_go_out_in_the_broadcasters_shape() {
        let original = envelope(
            "agent:completed",
            json!({"agentId": "a1", "result": "text"}),
        );
        let ev = map_message(&original).unwrap();
        let out = outgoing(3, ev.name(), "2026-11-29T10:00:05.000Z", ev.data.clone());
        assert_eq!(out["type"], "agent:completed");
        assert_eq!(out["executionId"], "e1");
        assert_eq!(out["workflowId"], "wf");
        assert_eq!(out["timestamp"], "2026-11-29T10:00:00.000Z");
        assert_eq!(out["data"]["agentId"], "a1");
        assert_eq!(out["data"]["result"], "text");
        // an event published the runwire way
        let out = outgoing(
            4,
            "node.skipped",
            "2026-11-29T10:00:06.000Z",
            json!({"node_key": "b"}),
        );
        assert_eq!(
            out,
            json!({"type":"agent:skipped","executionId":"e1","workflowId":null,"timestamp":"2026-11-29T10:00:06.000Z","data":{"node_key":"b","agentId":"b"}})
        );
    }

    #[test]
    fn a_message_kept_under_payload_goes_out_as_it_came() {
        let original = envelope(
            "agent:failed",
            json!({"agentId": "a1", "error": {"message": "timeout"}}),
        );
        let ev = map_message(&original).unwrap();
        assert_eq!(ev.data["payload"], original);
        let out = outgoing(2, ev.name(), "2026-11-29T10:00:05.000Z", ev.data.clone());
        assert_eq!(out, original);
    }

    #[test]
    fn every_type() {
        let (name, data) = mapped(envelope("execution:started", json!({})));
        assert_eq!(name, "run.started");
        assert_eq!(
            data,
            json!({"execution_id":"e1","workflow_id":"wf","workflow":"wf","timestamp":"2026-11-29T10:00:00.000Z"})
        );
        let (name, data) = mapped(envelope("execution:progress", json!({"progress": 40})));
        assert_eq!(
            (name.as_str(), &data["progress"]),
            ("run.progress", &json!(40))
        );
        let (name, data) = mapped(envelope(
            "execution:completed",
            json!({"result": {"ok": true}}),
        ));
        assert_eq!(
            (name.as_str(), &data["result"]),
            ("run.completed", &json!({"ok": true}))
        );
        let (name, data) = mapped(envelope("execution:failed", json!({"error": "quota"})));
        assert_eq!(
            (name.as_str(), &data["error"]),
            ("run.failed", &json!("quota"))
        );
        let (name, _) = mapped(envelope("execution:cancelled", json!({"reason": "user"})));
        assert_eq!(name, "run.cancelled");
        let (name, data) = mapped(envelope(
            "agent:started",
            json!({"agentId": "a1", "agentName": "Writer"}),
        ));
        assert_eq!(name, "node.started");
        assert_eq!(
            (&data["node_key"], &data["agentName"]),
            (&json!("a1"), &json!("Writer"))
        );
        let (name, data) = mapped(envelope(
            "agent:progress",
            json!({"agentId": "a1", "progress": 55.5}),
        ));
        assert_eq!(
            (name.as_str(), &data["progress"]),
            ("node.progress", &json!(55.5))
        );
        let (name, data) = mapped(envelope(
            "agent:completed",
            json!({"agentId": "a1", "result": "text"}),
        ));
        assert_eq!(
            (name.as_str(), &data["output_summary"]),
            ("node.completed", &json!("text"))
        );
        let (name, data) = mapped(envelope(
            "agent:failed",
            json!({"agentId": "a1", "error": {"message": "rate limited"}}),
        ));
        assert_eq!(name, "node.failed");
        assert_eq!(data["error"], "rate limited");
        assert_eq!(data["node_key"], "a1");
    }

    #[test]
    fn terminal_events_that_do_not_fit_still_end_the_run() {
        let msg = envelope("execution:failed", json!({}));
        let (name, data) = mapped(msg);
        assert_eq!(
            (name.as_str(), &data["error"]),
            ("run.failed", &json!("execution failed"))
        );
        let msg = envelope("execution:completed", json!({"node_count": -1}));
        let (name, data) = mapped(msg.clone());
        assert_eq!(
            (name.as_str(), data),
            ("run.completed", json!({"payload": msg}))
        );
        let msg = envelope("execution:completed", json!("done"));
        let (name, data) = mapped(msg);
        assert_eq!(
            (name.as_str(), &data["value"]),
            ("run.completed", &json!("done"))
        );
        let msg = json!({"type":"execution:cancelled"});
        assert_eq!(mapped(msg).0, "run.cancelled");
    }

    #[test]
    fn malformed_and_partial_events() {
        for msg in [
            envelope("agent:started", json!({})),
            envelope("agent:completed", json!({"agentName": "no id"})),
            envelope("execution:progress", json!({"progress": 140})),
            envelope("execution:progress", json!({})),
            envelope(
                "agent:progress",
                json!({"agentId": "a", "progress": "half"}),
            ),
            envelope("execution:paused", json!({})),
            envelope("agent:", json!({})),
        ] {
            let (name, data) = mapped(msg.clone());
            assert_eq!((name.as_str(), data), ("custom", msg));
        }
        for v in [
            json!({"type":"node"}),
            json!({"type":"job:started"}),
            json!({"type":7}),
            json!(null),
        ] {
            assert!(map_message(&v).is_none(), "{v}");
        }
    }
}
