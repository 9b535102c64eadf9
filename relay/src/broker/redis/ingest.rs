//! Ingest: Redis Pub/Sub messages that workers of existing systems already publish, turned into
//! run events. `docs/redis.md` documents the mapping; this module is its single implementation.
//!
//! - The run id is what the pattern's first `*` matched in the channel name
//!   (`workflow-run:*` + `workflow-run:42` → run `42`; `execution:*:events` +
//!   `execution:abc:events` → run `abc`).
//! - A JSON object with a string `event` (the `execution:*:events` shape
//!   `{"event","execution_id","node_key","data","timestamp"}`) becomes that event, with `data` as
//!   its data and the top-level `node_key` added to it when `data` has none. Names are normalized:
//!   `node_started` → `node.started`, `execution_completed` / `workflow_failed` → `run.completed`
//!   / `run.failed`, and so on; another valid event name is carried as it is.
//! - A JSON object with a string `status` (the `workflow-run:*` shape) whose status is terminal
//!   (`Success`/`Completed` → `run.completed`, `Failure`/`Failed`/`Error` → `run.failed`,
//!   `Cancelled` → `run.cancelled`, any case) becomes that terminal event with the payload as its
//!   data, as it came (`run.failed` gains an `error` taken from `error`/`message` when missing).
//! - Anything else (another status, a payload that does not fit the event's shape, non-JSON)
//!   becomes a `custom` event whose data is the payload's JSON (non-JSON text: a JSON string).
//!
//! Every relay started with `--ingest` pattern-subscribes, but only the one holding the ingest
//! lease (`lease_loop`) appends what it receives (`ingest_loop`), so each message becomes one
//! event however many relays run.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use runwire_protocol::{event::KNOWN_EVENTS, is_valid_event_name, is_valid_run_id};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::{Shared, pause, ttl_ms};
use crate::broker::{BrokerError, NewEvent, RunId};
use crate::hub::lock;

/// The name unknown payloads are carried under.
pub const CUSTOM_EVENT: &str = "custom";

/// What the pattern's first `*` matched in `channel`, if `channel` matches `pattern`.
///
/// Patterns use Redis' glob syntax; `*` and `?` are understood here, other characters match
/// themselves (the relay refuses patterns with `[` or `\` at start-up).
pub fn run_from_channel<'c>(pattern: &str, channel: &'c str) -> Option<&'c str> {
    let star = pattern.find('*')?;
    let (head, tail) = (&pattern[..star], &pattern[star + 1..]);
    if !glob(head.as_bytes(), channel.as_bytes().get(..head.len())?) {
        return None;
    }
    let rest = &channel[head.len()..];
    // The shortest capture after which the rest of the pattern matches.
    (0..=rest.len())
        .filter(|&n| rest.is_char_boundary(n))
        .find(|&n| glob(tail.as_bytes(), &rest.as_bytes()[n..]))
        .map(|n| &rest[..n])
}

/// Whether a pattern is one [`run_from_channel`] understands.
pub fn check_pattern(pattern: &str) -> Result<(), String> {
    if !pattern.contains('*') {
        return Err(format!(
            "ingest pattern {pattern:?} has no `*` to take the run id from"
        ));
    }
    if pattern.contains(['[', ']', '\\']) {
        return Err(format!(
            "ingest pattern {pattern:?}: only `*` and `?` wildcards are supported"
        ));
    }
    Ok(())
}

fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        Some((b'?', rest)) => !text.is_empty() && glob(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && glob(rest, &text[1..]),
    }
}

/// Maps one message's payload to a run event (see the module docs). Never fails: what does not
/// fit is carried as a `custom` event. A message in the shape of a compatibility layer that is on
/// is mapped by that layer first.
pub fn map_payload(payload: &[u8], compat: crate::compat::Layers) -> NewEvent {
    let value = match serde_json::from_slice::<Value>(payload) {
        Ok(v) => v,
        Err(_) => Value::String(String::from_utf8_lossy(payload).into_owned()),
    };
    if let Some(ev) = crate::compat::map_message(compat, &value) {
        return ev;
    }
    if let Value::Object(obj) = &value {
        if let Some(name) = obj.get("event").and_then(Value::as_str) {
            if let Some(ev) = map_named(name, obj) {
                return ev;
            }
        } else if let Some(status) = obj.get("status").and_then(Value::as_str) {
            if let Some(ev) = map_status(status, obj) {
                return ev;
            }
        }
    }
    custom(value)
}

fn custom(value: Value) -> NewEvent {
    NewEvent::parse(CUSTOM_EVENT, value).expect("custom events take any data")
}

fn map_named(name: &str, obj: &Map<String, Value>) -> Option<NewEvent> {
    let name = normalize_name(name)?;
    let mut data = obj
        .get("data")
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    if let (Value::Object(d), Some(key @ Value::String(_))) = (&mut data, obj.get("node_key")) {
        d.entry("node_key").or_insert_with(|| key.clone());
    }
    NewEvent::parse(&name, data).ok()
}

/// `node_started` → `node.started`, `execution.failed` → `run.failed`; another valid name as it
/// is; `None` for a name that is not a valid event name at all.
fn normalize_name(name: &str) -> Option<String> {
    let lower = name.trim().to_ascii_lowercase();
    let dotted = lower.replacen('_', ".", 1);
    for candidate in [&lower, &dotted] {
        if KNOWN_EVENTS.contains(&candidate.as_str()) {
            return Some(candidate.clone());
        }
        for alias in ["execution.", "workflow.", "workflow_run.", "job."] {
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

fn map_status(status: &str, obj: &Map<String, Value>) -> Option<NewEvent> {
    let name = match status.to_ascii_lowercase().as_str() {
        "success" | "succeeded" | "completed" | "complete" => "run.completed",
        "failure" | "failed" | "error" => "run.failed",
        "cancelled" | "canceled" => "run.cancelled",
        _ => return None,
    };
    let mut data = obj.clone();
    if name == "run.failed" && !data.get("error").is_some_and(Value::is_string) {
        let error = obj
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or(status)
            .to_owned();
        data.insert("error".into(), Value::String(error));
    }
    match NewEvent::parse(name, Value::Object(data)) {
        Ok(ev) => Some(ev),
        // The payload's fields clash with the event's shape (say a `result` that is fine but a
        // `node_count` that is text): the run still ends, with the payload kept whole under
        // `payload`.
        Err(_) => {
            let mut data = Map::new();
            data.insert("payload".into(), Value::Object(obj.clone()));
            if name == "run.failed" {
                data.insert("error".into(), Value::String(status.to_owned()));
            }
            NewEvent::parse(name, Value::Object(data)).ok()
        }
    }
}

/// Ingested messages waiting to be appended. When full, the Pub/Sub reader waits, which delays
/// live delivery on this relay rather than dropping messages.
pub(super) const INGEST_QUEUE: usize = 4096;
/// Largest ingested message, like the largest publish request body; larger ones are dropped.
pub(super) const MAX_INGEST_PAYLOAD: usize = 1024 * 1024;
/// Ingested messages appended per round.
const INGEST_BATCH: usize = 512;

pub(super) struct IngestMsg {
    pub(super) channel: String,
    pub(super) pattern: String,
    pub(super) payload: Vec<u8>,
}

/// Takes and keeps the ingest lease when it is free.
pub(super) async fn lease_loop(shared: Arc<Shared>, mut stop: watch::Receiver<()>) {
    let lease = shared.config.ingest_lease;
    let key = format!("{}:ingest-lease", shared.config.key_prefix);
    loop {
        let started = Instant::now();
        let mut invocation = shared.scripts.lease.prepare_invoke();
        invocation
            .key(&key)
            .arg(&shared.relay_id)
            .arg(ttl_ms(lease));
        let mut conn = shared.conn.clone();
        let held: Result<i64, _> = shared.call(invocation.invoke_async(&mut conn)).await;
        match held {
            // Trust the lease for less than it lasts in Redis, counted from before the request:
            // this relay stops ingesting before another can take over.
            Ok(1) => *lock(&shared.ingest_until) = Some(started + lease * 3 / 4),
            Ok(_) => *lock(&shared.ingest_until) = None,
            // Unknown: keep the deadline, which lapses by itself.
            Err(_) => {}
        }
        if !pause(&mut stop, lease / 4).await {
            return;
        }
    }
}

/// Appends ingested messages, grouped into one publish per run per round.
pub(super) async fn ingest_loop(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<IngestMsg>,
    mut stop: watch::Receiver<()>,
) {
    loop {
        let first = tokio::select! {
            _ = stop.changed() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        let mut batch = vec![first];
        while batch.len() < INGEST_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        if !shared.is_ingest_leader() {
            shared
                .stats
                .ingest_dropped
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            continue;
        }
        let mut runs: Vec<(RunId, Vec<NewEvent>)> = Vec::new();
        for msg in batch {
            let run =
                run_from_channel(&msg.pattern, &msg.channel).filter(|run| is_valid_run_id(run));
            let Some(run) = run else {
                tracing::debug!(channel = msg.channel, "ingest: no valid run id in channel");
                shared.stats.ingest_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let event = map_payload(&msg.payload, shared.config.compat);
            match runs.iter_mut().find(|(r, _)| &**r == run) {
                Some((_, events)) => events.push(event),
                None => runs.push((run.into(), vec![event])),
            }
        }
        let publishes = runs.into_iter().map(|(run, mut events)| {
            // A terminal event ends the batch: what follows it would be refused anyway.
            if let Some(end) = events.iter().position(|e| e.typed.is_terminal()) {
                let extra = events.len() - end - 1;
                shared
                    .stats
                    .ingest_dropped
                    .fetch_add(extra as u64, Ordering::Relaxed);
                events.truncate(end + 1);
            }
            let shared = shared.clone();
            async move {
                let n = events.len() as u64;
                match shared.publish(run.clone(), events).await {
                    Ok(_) => shared.stats.ingested.fetch_add(n, Ordering::Relaxed),
                    Err(BrokerError::RunFinished(_)) => {
                        tracing::debug!(run = %run, "ingest: the run has already ended");
                        shared.stats.ingest_dropped.fetch_add(n, Ordering::Relaxed)
                    }
                    Err(e) => {
                        tracing::warn!(run = %run, error = %e, "ingest: message not appended");
                        shared.stats.ingest_dropped.fetch_add(n, Ordering::Relaxed)
                    }
                };
            }
        });
        futures_util::future::join_all(publishes).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn takes_the_run_from_the_first_star() {
        assert_eq!(
            run_from_channel("workflow-run:*", "workflow-run:42"),
            Some("42")
        );
        assert_eq!(
            run_from_channel("execution:*:events", "execution:ab-1:events"),
            Some("ab-1")
        );
        assert_eq!(
            run_from_channel("execution:*:events", "execution:a:b:events"),
            Some("a:b")
        );
        assert_eq!(run_from_channel("execution:*:events", "execution:a"), None);
        assert_eq!(run_from_channel("workflow-run:*", "other:42"), None);
        assert_eq!(run_from_channel("w?:*", "wx:7"), Some("7"));
        assert!(check_pattern("a:*").is_ok());
        assert!(check_pattern("a:b").is_err());
        assert!(check_pattern("a:[ab]:*").is_err());
    }

    fn mapped(payload: &Value) -> (String, Value) {
        let ev = map_payload(payload.to_string().as_bytes(), Default::default());
        (ev.name().to_owned(), ev.data)
    }

    #[test]
    fn maps_execution_events() {
        let (name, data) = mapped(&json!({
            "event": "node_started", "execution_id": "e1", "node_key": "fetch",
            "data": {"attempt": 1}, "timestamp": "2026-01-01T00:00:00Z"
        }));
        assert_eq!(name, "node.started");
        assert_eq!(data, json!({"attempt": 1, "node_key": "fetch"}));
        let (name, _) = mapped(&json!({"event": "execution_completed", "data": {}}));
        assert_eq!(name, "run.completed");
        let (name, data) = mapped(&json!({"event": "workflow.failed", "data": {"error": "x"}}));
        assert_eq!((name.as_str(), data), ("run.failed", json!({"error": "x"})));
        let (name, data) = mapped(&json!({"event": "node.progress", "node_key": "n",
            "data": {"progress": 30}}));
        assert_eq!(
            (name.as_str(), data),
            ("node.progress", json!({"progress": 30, "node_key": "n"}))
        );
        // an unknown but valid name passes through with its data
        let (name, data) = mapped(&json!({"event": "cache.hit", "data": {"k": 1}}));
        assert_eq!((name.as_str(), data), ("cache.hit", json!({"k": 1})));
        // a known name whose data does not fit, or an invalid name: custom with the raw JSON
        let raw = json!({"event": "node.started", "data": {}});
        assert_eq!(mapped(&raw), (CUSTOM_EVENT.into(), raw));
        let raw = json!({"event": "Not A Name!", "data": {}});
        assert_eq!(mapped(&raw), (CUSTOM_EVENT.into(), raw));
    }

    #[test]
    fn maps_workflow_run_statuses() {
        let raw = json!({"status": "Success", "result": {"rows": 3}, "workflow_id": 9});
        assert_eq!(mapped(&raw), ("run.completed".into(), raw));
        let (name, data) = mapped(&json!({"status": "Failure", "message": "boom"}));
        assert_eq!(name, "run.failed");
        assert_eq!(
            data,
            json!({"status": "Failure", "message": "boom", "error": "boom"})
        );
        let (name, data) = mapped(&json!({"status": "FAILURE", "error": "bad"}));
        assert_eq!(
            (name.as_str(), data),
            ("run.failed", json!({"status": "FAILURE", "error": "bad"}))
        );
        let (name, data) = mapped(&json!({"status": "Success", "node_count": "many"}));
        assert_eq!(name, "run.completed");
        assert_eq!(
            data,
            json!({"payload": {"status": "Success", "node_count": "many"}})
        );
        let raw = json!({"status": "Running", "step": 2});
        assert_eq!(mapped(&raw), (CUSTOM_EVENT.into(), raw));
    }

    #[test]
    fn carries_anything_else_as_custom() {
        assert_eq!(mapped(&json!([1, 2])), (CUSTOM_EVENT.into(), json!([1, 2])));
        let ev = map_payload(b"plain text", Default::default());
        assert_eq!(ev.name(), CUSTOM_EVENT);
        assert_eq!(ev.data, json!("plain text"));
    }
}
