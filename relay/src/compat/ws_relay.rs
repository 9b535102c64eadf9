//! `ws-relay`: the Node `ws` + Redis relay that runwire replaces.
//!
//! Its workers `PUBLISH workflow-run:<runId>` JSON messages, which its browsers received exactly
//! as published:
//! - `{"type":"node","nodeId":"…","status":"Running"|"Success"|"Failed"|"Skipped",…}` →
//!   `node.started` / `node.completed` / `node.failed` / `node.skipped`, with the message as the
//!   event's data plus `node_key` (the `nodeId`) and, for `node.failed`, an `error` string (from
//!   `error`, else `message`, else the status) when the message has none. A node message never
//!   ends a run.
//! - `{"type":"workflow","status":"Running"|"Success"|"Failure","error"?:…,"timestamp":<ms>}` →
//!   `run.started` / `run.completed` / `run.failed` (also `Cancelled` → `run.cancelled`), with
//!   the message as the event's data (`run.failed` gains an `error` string likewise).
//!
//! Its tokens are not JWTs: `base64url(JSON payload) + "." + base64url(HMAC-SHA256(payloadSegment,
//! secret))`, the payload `{"v":1,"runId","userId","iat","exp"}`. [`verify_legacy_token`] reads
//! them as a subscribe token for `runId` with `sub` = `userId`, under the same expiry rules as
//! JWTs; the relay's [`crate::auth::Verifier`] asks it when this layer is on.
//!
//! Statuses are matched in any case. The message's fields, `timestamp` included, stay in the data.
//! A message whose fields clash with the event's shape (an `error` that is an object, say) still
//! becomes that event, with the message whole under `payload` ([`super::fit`]); a `node` message
//! without a usable `nodeId`, or with another status, becomes `custom`.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use hmac::{Hmac, Mac};
use runwire_protocol::token::{Claims, LEEWAY_SECS, MAX_TOKEN_LEN, Scope, TokenError};
use runwire_protocol::{CloseCode, Envelope};
use serde_json::{Map, Value, json};
use sha2::Sha256;
use tokio::time::{Instant, sleep_until, timeout};

use super::{custom, error_text, fit, id_text, on_live_event};
use crate::broker::{NewEvent, RunId};
use crate::hub::{ConnHandle, Inbox, Outbound};
use crate::state::AppState;
use crate::transport::subscription::{Emit, Subscription};

/// Where the relay's workers publish; ingested automatically with this layer and a Redis.
pub const CHANNEL_PATTERN: &str = "workflow-run:*";

/// Maps a message in this relay's shape; `None` when `value` is not one (no `type` of `node` or
/// `workflow`).
pub fn map_message(value: &Value) -> Option<NewEvent> {
    let obj = value.as_object()?;
    match obj.get("type")?.as_str()? {
        "node" => Some(map_node(obj, value)),
        "workflow" => Some(map_workflow(obj, value)),
        _ => None,
    }
}

fn status(obj: &Map<String, Value>) -> Option<String> {
    obj.get("status")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
}

/// `error`, else `message`, else the status as sent.
fn failure_text(obj: &Map<String, Value>) -> String {
    error_text(obj.get("error"))
        .or_else(|| {
            obj.get("message")
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .or_else(|| obj.get("status").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| "failed".to_owned())
}

fn map_node(obj: &Map<String, Value>, value: &Value) -> NewEvent {
    let Some(node_key) = id_text(obj.get("nodeId")) else {
        return custom(value);
    };
    let name = match status(obj).as_deref() {
        Some("running" | "started") => "node.started",
        Some("success" | "succeeded" | "completed") => "node.completed",
        Some("failed" | "failure" | "error") => "node.failed",
        Some("skipped") => "node.skipped",
        _ => return custom(value),
    };
    let mut data = obj.clone();
    data.insert("node_key".into(), node_key.clone().into());
    let error = (name == "node.failed").then(|| failure_text(obj));
    if let Some(error) = &error {
        data.entry("error").or_insert_with(|| error.clone().into());
    }
    fit(name, data, value, Some(&node_key), error.as_deref())
}

fn map_workflow(obj: &Map<String, Value>, value: &Value) -> NewEvent {
    let name = match status(obj).as_deref() {
        Some("running" | "started") => "run.started",
        Some("success" | "succeeded" | "completed") => "run.completed",
        Some("failure" | "failed" | "error") => "run.failed",
        Some("cancelled" | "canceled") => "run.cancelled",
        _ => return custom(value),
    };
    let mut data = obj.clone();
    let error = (name == "run.failed").then(|| failure_text(obj));
    if let Some(error) = &error {
        data.entry("error").or_insert_with(|| error.clone().into());
    }
    fit(name, data, value, None, error.as_deref())
}

/// Verifies a two-part `v:1` token against each of `secrets` in turn (constant-time compares) at
/// `now` (Unix seconds), and reads it as a subscribe token for its `runId`.
pub fn verify_legacy_token<S: AsRef<[u8]>>(
    token: &str,
    secrets: &[S],
    now: u64,
) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let Some((payload_b64, sig_b64)) = token.split_once('.') else {
        return Err(TokenError::Malformed);
    };
    if sig_b64.contains('.') {
        return Err(TokenError::Malformed);
    }
    // Node's `base64url` has no padding; tolerate it anyway.
    let sig = URL_SAFE_NO_PAD
        .decode(sig_b64.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed)?;
    let signed_by_one = secrets.iter().any(|secret| {
        Hmac::<Sha256>::new_from_slice(secret.as_ref()).is_ok_and(|mut mac| {
            mac.update(payload_b64.as_bytes());
            mac.verify_slice(&sig).is_ok()
        })
    });
    if !signed_by_one {
        return Err(TokenError::BadSignature);
    }
    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64.trim_end_matches('='))
        .map_err(|_| TokenError::Malformed)?;
    let payload: Value = serde_json::from_slice(&payload).map_err(|_| TokenError::Malformed)?;
    let secs = |field: &str| payload.get(field).and_then(Value::as_u64);
    let (Some(1), Some(run), Some(exp)) = (secs("v"), id_text(payload.get("runId")), secs("exp"))
    else {
        return Err(TokenError::Malformed);
    };
    // One real run: never `*` (which a JWT may use for every run).
    if !runwire_protocol::is_valid_run_id(&run) {
        return Err(TokenError::Malformed);
    }
    if exp.saturating_add(LEEWAY_SECS) <= now {
        return Err(TokenError::Expired);
    }
    Ok(Claims {
        exp,
        iat: secs("iat"),
        sub: id_text(payload.get("userId")),
        run: Some(run),
        scope: Scope::Subscribe,
        ..Claims::default()
    })
}

/// How long after a workflow's terminal message the socket closes with 1000 "Run finished", as
/// the Node relay did: long enough for the browser to take the message in.
pub const FINISH_GRACE: Duration = Duration::from_secs(1);

/// How a legacy socket ends.
#[derive(Debug, PartialEq, Eq)]
enum End {
    /// A close frame with this code and reason.
    Close(u16, &'static str),
    /// Dropped without a close frame: the client stopped answering pings.
    Terminate,
    /// The client is gone.
    Gone,
}

impl End {
    fn code(code: CloseCode) -> Self {
        Self::Close(code.code(), code.reason())
    }
}

/// The message the Node relay's browsers expect for a runwire event: the worker's message as it
/// was published, when the event came from one; otherwise the same shape built from the event.
pub fn legacy_message(envelope: &Envelope) -> Value {
    let data = &envelope.data;
    let from_worker = |v: &Value| {
        matches!(
            v.get("type").and_then(Value::as_str),
            Some("node" | "workflow")
        )
    };
    // A message kept whole under `payload` (its fields did not fit the event's shape).
    if let Some(payload) = data.get("payload").filter(|p| from_worker(p)) {
        return payload.clone();
    }
    if from_worker(data) {
        let mut message = data.clone();
        if let Some(m) = message.as_object_mut() {
            if m.contains_key("nodeId") {
                m.remove("node_key");
            }
        }
        return message;
    }
    let node_key = data.get("node_key").cloned().unwrap_or_default();
    let node = |status: &str| json!({"type": "node", "nodeId": node_key, "status": status});
    let workflow = |status: &str| json!({"type": "workflow", "status": status});
    let mut message = match envelope.event.as_str() {
        "node.started" => node("Running"),
        "node.completed" => node("Success"),
        "node.failed" => node("Failed"),
        "node.skipped" => node("Skipped"),
        "run.started" => workflow("Running"),
        "run.completed" => workflow("Success"),
        "run.failed" => workflow("Failure"),
        "run.cancelled" => workflow("Cancelled"),
        // Anything else (logs, progress, custom messages) as its data.
        _ => return data.clone(),
    };
    if let Some(error) = data.get("error") {
        message["error"] = error.clone();
    }
    if let Ok(t) = humantime::parse_rfc3339(&envelope.ts) {
        let ms = t
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        message["timestamp"] = ms.into();
    }
    message
}

/// `/ws/executions` in the Node relay's wire format, for a connection whose socket halves are
/// `tx` and `rx` (generic, so tests drive it over channels with paused time).
///
/// `{"type":"connected","runId"}` first, then each of the run's messages as
/// [`legacy_message`] gives it; `{"type":"socket","status":"token_expired"}` and a 4001 close
/// when the token expires, `{"type":"socket","status":"idle_timeout"}` and a 4009 close after
/// `--idle-timeout` without a message either way (pongs do not count), 1000 "Run finished"
/// [`FINISH_GRACE`] after the run's terminal message (at once for a run that had already ended),
/// and a ping every `--ping-interval`: a socket that has not answered the previous one by then is
/// dropped without a close frame. No replay: like the Node relay, only messages from the
/// connection on.
pub async fn serve_legacy<W, R>(state: AppState, mut tx: W, mut rx: R, token: Option<String>)
where
    W: Sink<Message, Error = axum::Error> + Unpin + Send,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin + Send,
{
    state.metrics.executions_connections.inc();
    let handle_id = state.next_conn_id();
    let (handle, inbox) = ConnHandle::new(handle_id, state.config.queue_capacity);
    let mut watched = None;
    let end = legacy_session(
        &state,
        &mut tx,
        &mut rx,
        token,
        &handle,
        inbox,
        &mut watched,
    )
    .await;
    if let Some(run) = watched {
        state.hub.unregister(&run, handle.id);
        state.broker.unwatch(run);
    }
    match end {
        End::Close(code, reason) => {
            let frame = CloseFrame {
                code,
                reason: Utf8Bytes::from_static(reason),
            };
            let _ = timeout(state.config.write_timeout, async {
                tx.send(Message::Close(Some(frame))).await?;
                tx.close().await
            })
            .await;
        }
        End::Terminate | End::Gone => {}
    }
    state.metrics.executions_connections.dec();
}

async fn stopping(flag: &mut tokio::sync::watch::Receiver<bool>) {
    // An error means the relay state is gone: stop as well.
    let _ = flag.wait_for(|stopping| *stopping).await;
}

async fn send_json<W>(tx: &mut W, state: &AppState, v: &Value) -> Result<(), End>
where
    W: Sink<Message, Error = axum::Error> + Unpin + Send,
{
    send(tx, state, Message::Text(v.to_string().into())).await
}

/// Writes `msg`; a write that takes longer than `--write-timeout` closes the socket as a slow
/// consumer, and is counted as one.
async fn send<W>(tx: &mut W, state: &AppState, msg: Message) -> Result<(), End>
where
    W: Sink<Message, Error = axum::Error> + Unpin + Send,
{
    match timeout(state.config.write_timeout, tx.send(msg)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Gone),
        Err(_) => {
            state.metrics.slow_consumer_closes.inc();
            Err(End::code(CloseCode::SlowConsumer))
        }
    }
}

#[allow(clippy::too_many_lines)]
async fn legacy_session<W, R>(
    state: &AppState,
    tx: &mut W,
    rx: &mut R,
    token: Option<String>,
    handle: &ConnHandle,
    mut inbox: Inbox,
    watched: &mut Option<RunId>,
) -> End
where
    W: Sink<Message, Error = axum::Error> + Unpin + Send,
    R: Stream<Item = Result<Message, axum::Error>> + Unpin + Send,
{
    let config = &state.config;
    if state.websockets_over_cap() {
        return End::code(CloseCode::TooManyConnections);
    }
    let claims = match state
        .verifier
        .verify(token.as_deref(), Scope::Subscribe, None)
    {
        Ok(c) => c,
        Err(e) => return End::code(e.close_code()),
    };
    let Some(run) = claims.single_run().map(RunId::from) else {
        return End::code(CloseCode::Forbidden);
    };
    state.hub.register(&run, handle);
    *watched = Some(run.clone());
    if state.broker.watch(run.clone()).await.is_err() {
        return End::code(CloseCode::InternalError);
    }
    let mut sub = Subscription::default();
    let mut out = Vec::new();
    match state.broker.snapshot(run.clone(), None).await {
        Ok(snapshot) => sub.on_snapshot(&run, snapshot, None, None, false, &mut out),
        Err(_) => return End::code(CloseCode::InternalError),
    }
    let connected = json!({"type": "connected", "runId": &*run});
    if let Err(end) = send_json(tx, state, &connected).await {
        return end;
    }
    let expires_at = state.verifier.clock().expiry_instant(claims.exp);
    let mut finish_at: Option<Instant> = None;
    let mut last_message = Instant::now();
    let mut next_ping = last_message + config.ping_interval;
    let mut awaiting_pong = false;
    let mut stop = state.shutdown_flag();
    loop {
        for item in out.drain(..) {
            match item {
                Emit::Control(_) => {}
                Emit::Event(ev) => {
                    let Ok(envelope) = serde_json::from_str::<Envelope>(ev.frame.as_str()) else {
                        continue;
                    };
                    if let Err(end) = send_json(tx, state, &legacy_message(&envelope)).await {
                        return end;
                    }
                    state.metrics.events_delivered.inc();
                    last_message = Instant::now();
                }
                Emit::End(_) => {
                    finish_at.get_or_insert(Instant::now() + FINISH_GRACE);
                }
            }
        }
        let idle_at = last_message + config.idle_timeout;
        let deadline = [Some(expires_at), finish_at, Some(idle_at)]
            .into_iter()
            .flatten()
            .fold(next_ping, Instant::min);
        tokio::select! {
            biased;
            () = stopping(&mut stop) => return End::code(CloseCode::ServiceRestart),
            () = sleep_until(deadline) => {
                let now = Instant::now();
                if finish_at.is_some_and(|at| at <= now) {
                    return End::Close(1000, "Run finished");
                }
                if expires_at <= now {
                    let notice = json!({"type": "socket", "status": "token_expired"});
                    let _ = send_json(tx, state, &notice).await;
                    return End::code(CloseCode::TokenExpired);
                }
                if idle_at <= now {
                    let notice = json!({"type": "socket", "status": "idle_timeout"});
                    let _ = send_json(tx, state, &notice).await;
                    return End::code(CloseCode::IdleTimeout);
                }
                if next_ping <= now {
                    if awaiting_pong {
                        return End::Terminate;
                    }
                    awaiting_pong = true;
                    next_ping = now + config.ping_interval;
                    if let Err(end) = send(tx, state, Message::Ping(Default::default())).await {
                        return end;
                    }
                }
            }
            msg = rx.next() => match msg {
                None | Some(Ok(Message::Close(_)) | Err(_)) => return End::Gone,
                Some(Ok(Message::Pong(_))) => awaiting_pong = false,
                Some(Ok(Message::Ping(payload))) => {
                    last_message = Instant::now();
                    if let Err(end) = send(tx, state, Message::Pong(payload)).await {
                        return end;
                    }
                }
                // The Node relay read nothing from browsers; a message still shows it is alive.
                Some(Ok(_)) => last_message = Instant::now(),
            },
            item = inbox.recv() => {
                let Some(item) = item else { return End::code(CloseCode::SlowConsumer) };
                let resync = match item {
                    Outbound::Event(ev) if ev.run == run => {
                        on_live_event(state, &mut sub, &ev, &mut out).is_err()
                    }
                    Outbound::Event(_) => false,
                    Outbound::Resync(_) => true,
                };
                if resync {
                    let _ = sub.resync(&*state.broker, &run, &mut out).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapped(v: Value) -> (String, Value) {
        let ev = map_message(&v).expect("claimed");
        (ev.name().to_owned(), ev.data)
    }

    const NOW: u64 = 1_800_000_000;

    /// The token route's algorithm, written out.
    fn legacy_token(payload: &Value, secret: &[u8]) -> String {
        let segment = URL_SAFE_NO_PAD.encode(payload.to_string());
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(segment.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{segment}.{sig}")
    }

    #[test]
    fn legacy_tokens() {
        let payload = json!({"v":1,"runId":"run_42","userId":"u7","iat":NOW,"exp":NOW + 300});
        let t = legacy_token(&payload, b"short");
        let claims = verify_legacy_token(&t, &[b"other".as_slice(), b"short"], NOW).unwrap();
        assert_eq!(claims.run.as_deref(), Some("run_42"));
        assert_eq!(claims.sub.as_deref(), Some("u7"));
        assert_eq!(claims.scope, Scope::Subscribe);
        assert_eq!((claims.exp, claims.iat), (NOW + 300, Some(NOW)));
        assert_eq!(
            verify_legacy_token(&t, &[b"other"], NOW),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify_legacy_token::<&[u8]>(&t, &[], NOW),
            Err(TokenError::BadSignature)
        );
        // expiry with the JWT leeway
        assert!(verify_legacy_token(&t, &[b"short"], NOW + 300 + LEEWAY_SECS - 1).is_ok());
        assert_eq!(
            verify_legacy_token(&t, &[b"short"], NOW + 300 + LEEWAY_SECS),
            Err(TokenError::Expired)
        );
        // a tampered payload keeps the old signature
        let (_, sig) = t.split_once('.').unwrap();
        let forged =
            URL_SAFE_NO_PAD.encode(json!({"v":1,"runId":"other","exp":NOW + 300}).to_string());
        assert_eq!(
            verify_legacy_token(&format!("{forged}.{sig}"), &[b"short"], NOW),
            Err(TokenError::BadSignature)
        );
        for bad in [
            json!({"v":2,"runId":"r","exp":NOW + 300}),
            json!({"v":1,"exp":NOW + 300}),
            json!({"v":1,"runId":"r"}),
            json!({"v":1,"runId":"r","exp":"soon"}),
            json!({"v":1,"runId":"*","exp":NOW + 300}),
            json!({"v":1,"runId":"a/b","exp":NOW + 300}),
            json!([1]),
        ] {
            let t = legacy_token(&bad, b"short");
            assert_eq!(
                verify_legacy_token(&t, &[b"short"], NOW),
                Err(TokenError::Malformed),
                "{bad}"
            );
        }
        for junk in ["", "a", "a.b.c", ".", "é.é", "a.!!"] {
            let e = verify_legacy_token(junk, &[b"short"], NOW).unwrap_err();
            assert!(
                matches!(e, TokenError::Malformed | TokenError::BadSignature),
                "{junk}: {e:?}"
            );
        }
        let huge = format!("{}.x", "a".repeat(MAX_TOKEN_LEN));
        assert_eq!(
            verify_legacy_token(&huge, &[b"short"], NOW),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn node_statuses() {
        for (status, name) in [
            ("Running", "node.started"),
            ("Success", "node.completed"),
            ("Failed", "node.failed"),
            ("Skipped", "node.skipped"),
            ("SUCCESS", "node.completed"),
        ] {
            let msg = json!({"type":"node","nodeId":"fetch","status":status,"timestamp":1_764_000_000_000u64});
            let (got, data) = mapped(msg);
            assert_eq!(got, name, "{status}");
            assert_eq!(data["node_key"], "fetch");
            assert_eq!(data["timestamp"], 1_764_000_000_000u64);
            assert_eq!(data["nodeId"], "fetch");
        }
        let (_, data) =
            mapped(json!({"type":"node","nodeId":"n","status":"Failed","error":"boom"}));
        assert_eq!(data["error"], "boom");
        let (_, data) = mapped(json!({"type":"node","nodeId":"n","status":"Failed"}));
        assert_eq!(data["error"], "Failed");
        let (name, data) = mapped(json!({"type":"node","nodeId":3,"status":"Running"}));
        assert_eq!(
            (name.as_str(), &data["node_key"]),
            ("node.started", &json!("3"))
        );
    }

    #[test]
    fn a_node_status_never_ends_the_run() {
        for status in [
            "Success",
            "Failed",
            "Failure",
            "Skipped",
            "Running",
            "Cancelled",
            "x",
        ] {
            for msg in [
                json!({"type":"node","nodeId":"n","status":status}),
                json!({"type":"node","status":status}),
                json!({"type":"node","nodeId":"n","status":status,"error":{"code":1}}),
                json!({"type":"node","nodeId":"n","status":status,"duration_ms":"slow"}),
            ] {
                let ev = map_message(&msg).unwrap();
                assert!(!ev.typed.is_terminal(), "{msg}");
            }
        }
    }

    #[test]
    fn workflow_statuses() {
        let msg = json!({"type":"workflow","status":"Running","timestamp":5});
        assert_eq!(mapped(msg.clone()), ("run.started".into(), msg));
        let msg = json!({"type":"workflow","status":"Success","timestamp":6});
        assert_eq!(mapped(msg.clone()), ("run.completed".into(), msg));
        let (name, data) =
            mapped(json!({"type":"workflow","status":"Failure","error":"db down","timestamp":7}));
        assert_eq!(name, "run.failed");
        assert_eq!(
            data,
            json!({"type":"workflow","status":"Failure","error":"db down","timestamp":7})
        );
        let (name, data) = mapped(json!({"type":"workflow","status":"Failure"}));
        assert_eq!(
            (name.as_str(), &data["error"]),
            ("run.failed", &json!("Failure"))
        );
        let (name, _) = mapped(json!({"type":"workflow","status":"cancelled"}));
        assert_eq!(name, "run.cancelled");
    }

    #[test]
    fn terminal_messages_that_do_not_fit_still_end_the_run() {
        let msg =
            json!({"type":"workflow","status":"Failure","error":{"message":"boom","stack":"…"}});
        let (name, data) = mapped(msg.clone());
        assert_eq!(name, "run.failed");
        assert_eq!(data, json!({"error":"boom","payload":msg}));
        let msg = json!({"type":"workflow","status":"Success","node_count":"three"});
        let (name, data) = mapped(msg.clone());
        assert_eq!(
            (name.as_str(), data),
            ("run.completed", json!({"payload":msg}))
        );
        let msg = json!({"type":"node","nodeId":"n","status":"Failed","error":{"message":"e"}});
        let (name, data) = mapped(msg.clone());
        assert_eq!(name, "node.failed");
        assert_eq!(data, json!({"node_key":"n","error":"e","payload":msg}));
    }

    #[test]
    fn malformed_and_partial_messages() {
        for msg in [
            json!({"type":"node","status":"Success"}),
            json!({"type":"node","nodeId":"","status":"Success"}),
            json!({"type":"node","nodeId":{"a":1},"status":"Success"}),
            json!({"type":"node","nodeId":"n"}),
            json!({"type":"node","nodeId":"n","status":7}),
            json!({"type":"node","nodeId":"n","status":"Pending"}),
            json!({"type":"workflow"}),
            json!({"type":"workflow","status":"Queued"}),
            json!({"type":"node","nodeId":"k".repeat(300),"status":"Running"}),
        ] {
            let (name, data) = mapped(msg.clone());
            assert_eq!((name.as_str(), data), ("custom", msg));
        }
        // not this relay's shape at all
        for v in [
            json!({"type":"other"}),
            json!({"status":"Success"}),
            json!([1]),
            json!("x"),
            json!({"type":1}),
        ] {
            assert!(map_message(&v).is_none(), "{v}");
        }
    }
}
