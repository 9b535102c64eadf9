//! `sse-stream`: the SSE streaming plan that runwire replaces.
//!
//! Its workers publish `{"event","execution_id","node_key","data","timestamp"}` on Redis
//! `execution:<id>:events`; an object with a string `event` and an `execution_id` is in its shape.
//! The name is normalized (`node_started` → `node.started`, `execution.completed` /
//! `execution_failed` → `run.completed` / `run.failed`, `execution.started` → `run.started`);
//! another valid event name is carried as it is, an invalid one makes the message `custom`. The
//! event's data is the message's `data` object (a non-object under `value`) with the top-level
//! `node_key` and `timestamp` added when it has none. A terminal event whose data does not fit
//! (`execution.failed` without an `error`) still ends the run: `error` is taken from `data.error`
//! or `data.message`, else `"execution failed"`, and the data kept under `payload`
//! ([`super::fit`]). A node event without a node key becomes `custom`.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use runwire_protocol::event::{KNOWN_EVENTS, is_terminal_event};
use runwire_protocol::token::{Claims, Scope};
use runwire_protocol::{Envelope, is_valid_event_name};
use serde_json::{Map, Value};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until, timeout};

use super::{custom, error_text, fit, on_live_event};
use crate::broker::{Event, NewEvent, RunId};
use crate::error::{ApiError, AuthError};
use crate::hub::{Inbox, Outbound};
use crate::state::AppState;
use crate::transport::ApiQuery;
use crate::transport::extract::{AllowedOrigin, TokenQuery, authorize};
use crate::transport::sse::{Release, event_stream};
use crate::transport::subscription::{Emit, Subscription};

/// Where the plan's workers publish; ingested automatically with this layer and a Redis.
pub const CHANNEL_PATTERN: &str = "execution:*:events";

/// `node_started` → `node.started`, `execution.failed` → `run.failed`; another valid name as it
/// is; `None` for a name that is not a valid event name.
pub fn normalize_name(name: &str) -> Option<String> {
    let lower = name.trim().to_ascii_lowercase();
    let dotted = lower.replacen('_', ".", 1);
    for candidate in [&lower, &dotted] {
        if KNOWN_EVENTS.contains(&candidate.as_str()) {
            return Some(candidate.clone());
        }
        for alias in ["execution.", "workflow."] {
            if let Some(rest) = candidate.strip_prefix(alias) {
                let run = format!("run.{rest}");
                if KNOWN_EVENTS.contains(&run.as_str()) {
                    return Some(run);
                }
            }
        }
    }
    is_valid_event_name(name).then(|| name.to_owned())
}

/// Maps a message in the plan's shape; `None` when `value` is not one.
pub fn map_message(value: &Value) -> Option<NewEvent> {
    let obj = value.as_object()?;
    let raw_name = obj.get("event")?.as_str()?;
    if !obj.contains_key("execution_id") {
        return None;
    }
    let Some(name) = normalize_name(raw_name) else {
        return Some(custom(value));
    };
    let mut data = match obj.get("data") {
        Some(Value::Object(d)) => d.clone(),
        None | Some(Value::Null) => Map::new(),
        Some(other) => Map::from_iter([("value".to_owned(), other.clone())]),
    };
    for field in ["node_key", "timestamp"] {
        if let Some(v) = obj.get(field).filter(|v| !v.is_null()) {
            data.entry(field).or_insert_with(|| v.clone());
        }
    }
    let node_key = data
        .get("node_key")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let error = (name == "run.failed" || name == "node.failed").then(|| {
        error_text(data.get("error"))
            .or_else(|| {
                data.get("message")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| {
                if name == "run.failed" {
                    "execution failed".to_owned()
                } else {
                    "node failed".to_owned()
                }
            })
    });
    if let Some(error) = &error {
        data.entry("error").or_insert_with(|| error.clone().into());
    }
    if is_terminal_event(&name) || name.starts_with("node.") {
        return Some(fit(
            &name,
            data,
            value,
            node_key.as_deref(),
            error.as_deref(),
        ));
    }
    Some(NewEvent::parse(&name, Value::Object(data)).unwrap_or_else(|_| custom(value)))
}

/// The plan's event name for a runwire event: `run.*` → `execution.*`, others as they are.
pub fn plan_event_name(name: &str) -> String {
    match name.strip_prefix("run.") {
        Some(rest) => format!("execution.{rest}"),
        None => name.to_owned(),
    }
}

/// The `data:` the plan's browsers expect: the event's own fields (for a message kept whole under
/// `payload`, the `data` it was published with).
pub fn plan_data(data: &Value) -> Value {
    if let Some(Value::Object(original)) = data.get("payload") {
        if original.contains_key("execution_id") {
            if let Some(own) = original.get("data").filter(|d| d.is_object()) {
                return own.clone();
            }
        }
    }
    data.clone()
}

/// One SSE message in the plan's format: `id:` the seq, `event:` the plan's name, `data:` the
/// event's own fields.
fn plan_message(ev: &Event) -> Option<Bytes> {
    let envelope: Envelope = serde_json::from_str(ev.frame.as_str()).ok()?;
    Some(Bytes::from(format!(
        "id: {}\nevent: {}\ndata: {}\n\n",
        envelope.seq,
        plan_event_name(&envelope.event),
        plan_data(&envelope.data)
    )))
}

/// Chunks buffered between the stream task and the HTTP body, as on runwire's own SSE.
const BODY_BUFFER: usize = 16;

/// The plan's route's execution (`{execution}`, as a run) and a subscribe token for it whose
/// `ws` claim is the route's `{workspace}`.
///
/// In order, as [`Authorized`](crate::transport::extract::Authorized) checks runwire's own
/// routes: a malformed query is a 400 `invalid_query`; an execution id that is not a valid run id
/// a 400 `invalid_run`; then the token is verified, and a refusal, or a token for another
/// workspace, is counted and answered 401 or 403.
#[derive(Debug)]
pub struct PlanAuthorized {
    /// The workspace of the path, the token's `ws` claim.
    pub workspace: String,
    /// The execution of the path, a valid run id.
    pub execution: String,
    /// The token's claims.
    pub claims: Claims,
}

impl FromRequestParts<AppState> for PlanAuthorized {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ApiQuery(query) = ApiQuery::<TokenQuery>::from_request_parts(parts, state).await?;
        let path = Path::<(String, String)>::from_request_parts(parts, state)
            .await
            .ok();
        let (workspace, execution) = path.map(|Path(p)| p).unzip();
        let (execution, claims) = authorize(
            parts,
            state,
            &query,
            execution,
            Scope::Subscribe,
            "invalid execution id",
        )?;
        let workspace = workspace.unwrap_or_default();
        if claims.ws.as_deref() != Some(workspace.as_str()) {
            state.metrics.auth_failed(AuthError::WrongRun.failure());
            return Err(AuthError::WrongRun.into());
        }
        Ok(Self {
            workspace,
            execution,
            claims,
        })
    }
}

/// `GET /api/v1/workspaces/{workspace}/executions/{execution}/stream`: the plan's route.
///
/// A subscribe token covering `{execution}` whose `ws` claim is `{workspace}` (else 403). The
/// stream replays the run's retained events (after `Last-Event-ID` when the browser reconnects),
/// then sends live ones, in the plan's format (`plan_message`), with a `: hb` comment every
/// `--sse-heartbeat`; it ends after the run's terminal event, when the token expires, after
/// `--sse-max-duration` and at shutdown. A browser reconnecting after the end gets 204, which
/// stops `EventSource`.
pub async fn stream(
    State(state): State<AppState>,
    ApiQuery(_): ApiQuery<TokenQuery>,
    _: AllowedOrigin,
    PlanAuthorized {
        workspace,
        execution,
        claims,
    }: PlanAuthorized,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let since = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let slot = state
        .broker
        .stream_slot(workspace.into(), state.config.sse_max_per_workspace)
        .await?;
    let run: RunId = execution.into();
    let (inbox, release) = Release::watch(&state, &run, Some(slot)).await?;
    // From the start of the run unless resuming: the plan's browsers render every event.
    let snapshot = state
        .broker
        .snapshot(run.clone(), Some(since.unwrap_or(0)))
        .await?;
    if snapshot.state.status.is_terminal() && since.is_some_and(|s| s >= snapshot.head) {
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let mut sub = Subscription::default();
    let mut first = Vec::new();
    sub.on_snapshot(
        &run,
        snapshot,
        Some(since.unwrap_or(0)),
        None,
        false,
        &mut first,
    );
    let (tx, rx) = mpsc::channel::<Bytes>(BODY_BUFFER);
    let expires_at = state.verifier.clock().expiry_instant(claims.exp);
    tokio::spawn(plan_stream(
        state, run, sub, inbox, tx, expires_at, first, release,
    ));
    Ok(event_stream(rx))
}

#[allow(clippy::too_many_arguments)]
async fn plan_stream(
    state: AppState,
    run: RunId,
    mut sub: Subscription,
    mut inbox: Inbox,
    tx: mpsc::Sender<Bytes>,
    expires_at: Instant,
    mut out: Vec<Emit>,
    _release: Release,
) {
    state.metrics.sse_connections.inc();
    let config = &state.config;
    let write_timeout = config.write_timeout;
    let metrics = &state.metrics;
    // False when the stream is over; a write that takes longer than `--write-timeout` ends it as
    // a slow consumer's.
    let write = |bytes: Bytes| {
        let tx = tx.clone();
        async move {
            match timeout(write_timeout, tx.send(bytes)).await {
                Ok(result) => result.is_ok(),
                Err(_) => {
                    metrics.slow_consumer_closes.inc();
                    false
                }
            }
        }
    };
    let deadline = Instant::now() + config.sse_max_duration;
    let mut heartbeat =
        tokio::time::interval_at(Instant::now() + config.sse_heartbeat, config.sse_heartbeat);
    let stop = state.shutting_down();
    tokio::pin!(stop);
    let mut open = write(Bytes::from_static(b"retry: 1000\n\n")).await;
    while open {
        for item in out.drain(..) {
            match item {
                // The plan has no snapshot or reset messages.
                Emit::Control(_) => {}
                Emit::Event(ev) => {
                    if let Some(bytes) = plan_message(&ev) {
                        state.metrics.events_delivered.inc();
                        open = open && write(bytes).await;
                    }
                }
                Emit::End(_) => open = false,
            }
        }
        if !open {
            break;
        }
        tokio::select! {
            biased;
            () = &mut stop => break,
            () = sleep_until(expires_at) => break,
            () = tx.closed() => break,
            () = sleep_until(deadline) => break,
            _ = heartbeat.tick() => open = write(Bytes::from_static(b": hb\n\n")).await,
            item = inbox.recv() => {
                let Some(item) = item else { break };
                let resync = match item {
                    Outbound::Event(ev) => on_live_event(&state, &mut sub, &ev, &mut out).is_err(),
                    Outbound::Resync(_) => true,
                };
                if resync {
                    let _ = sub.resync(&*state.broker, &run, &mut out).await;
                }
            }
        }
    }
    state.metrics.sse_connections.dec();
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapped(v: Value) -> (String, Value) {
        let ev = map_message(&v).expect("claimed");
        (ev.name().to_owned(), ev.data)
    }

    fn msg(event: &str, node_key: Value, data: Value) -> Value {
        json!({"event": event, "execution_id": "x1", "node_key": node_key, "data": data, "timestamp": "2026-11-29T10:00:00Z"})
    }

    #[test]
    fn the_plans_names_and_data_on_the_way_out() {
        assert_eq!(plan_event_name("run.completed"), "execution.completed");
        assert_eq!(plan_event_name("node.failed"), "node.failed");
        assert_eq!(plan_event_name("custom"), "custom");
        let d = json!({"node_key":"n","duration_ms":3});
        assert_eq!(plan_data(&d), d);
        // a message kept whole: the fields it was published with
        let m = msg(
            "execution.failed",
            json!(null),
            json!({"error": {"code": 7}}),
        );
        let ev = map_message(&m).unwrap();
        assert_eq!(plan_data(&ev.data), json!({"error": {"code": 7}}));
    }

    #[test]
    fn the_plans_events() {
        let (name, data) = mapped(msg("node.started", json!("http_1"), json!({})));
        assert_eq!(name, "node.started");
        assert_eq!(
            data,
            json!({"node_key": "http_1", "timestamp": "2026-11-29T10:00:00Z"})
        );
        let (name, data) = mapped(msg(
            "node.completed",
            json!("http_1"),
            json!({"duration_ms": 234, "output_summary": {"status": 200}, "completed_at": "2026-11-29T10:00:01Z"}),
        ));
        assert_eq!(name, "node.completed");
        assert_eq!(data["duration_ms"], 234);
        assert_eq!(data["completed_at"], "2026-11-29T10:00:01Z");
        let (name, data) = mapped(msg("node_failed", json!("db"), json!({"error": "refused"})));
        assert_eq!(
            (name.as_str(), &data["error"]),
            ("node.failed", &json!("refused"))
        );
        // (the plan's name, node key, data) → runwire's name
        let names = [
            (
                (
                    "execution.completed",
                    json!(null),
                    json!({"total_duration_ms": 900}),
                ),
                "run.completed",
            ),
            (("execution_started", json!(null), json!({})), "run.started"),
            (("node.skipped", json!("b"), json!({})), "node.skipped"),
        ];
        for ((event, node_key, data), name) in names {
            assert_eq!(mapped(msg(event, node_key, data)).0, name, "{event}");
        }
        let (name, data) = mapped(msg("cache.hit", json!(null), json!({"k": 1})));
        assert_eq!((name.as_str(), &data["k"]), ("cache.hit", &json!(1)));
    }

    #[test]
    fn terminal_events_that_do_not_fit_still_end_the_run() {
        // without an `error`: `message`, else "execution failed"
        for (data, error) in [
            (json!({}), "execution failed"),
            (json!({"message": "oom"}), "oom"),
        ] {
            let (name, data) = mapped(msg("execution.failed", json!(null), data));
            assert_eq!(
                (name.as_str(), &data["error"]),
                ("run.failed", &json!(error))
            );
        }
        let m = msg(
            "execution.failed",
            json!(null),
            json!({"error": {"code": 7}}),
        );
        let (name, data) = mapped(m.clone());
        assert_eq!(name, "run.failed");
        assert_eq!(data, json!({"error": "{\"code\":7}", "payload": m}));
        let m = msg(
            "execution.completed",
            json!(null),
            json!({"total_duration_ms": "long"}),
        );
        let (name, data) = mapped(m.clone());
        assert_eq!(
            (name.as_str(), data),
            ("run.completed", json!({"payload": m}))
        );
    }

    #[test]
    fn malformed_and_partial_messages() {
        for m in [
            msg("node.started", json!(null), json!({})),
            msg("node.completed", json!(7), json!({})),
            msg("Not A Name!", json!("n"), json!({})),
            msg("log", json!(null), json!({"level": "loud", "message": "m"})),
            msg("node.progress", json!("n"), json!({"progress": 300})),
        ] {
            let ev = map_message(&m).unwrap();
            assert!(!ev.typed.is_terminal(), "{m}");
            assert_eq!((ev.name(), &ev.data), ("custom", &m), "{m}");
        }
        for v in [
            json!({"event": "node.started"}),
            json!({"execution_id": "x"}),
            json!({"event": 1, "execution_id": "x"}),
        ] {
            assert!(map_message(&v).is_none(), "{v}");
        }
    }
}
