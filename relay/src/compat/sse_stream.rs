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

use runwire_protocol::event::{KNOWN_EVENTS, is_terminal_event};
use runwire_protocol::is_valid_event_name;
use serde_json::{Map, Value};

use super::{custom, error_text, fit};
use crate::broker::NewEvent;

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
        let (name, _) = mapped(msg(
            "execution.completed",
            json!(null),
            json!({"total_duration_ms": 900}),
        ));
        assert_eq!(name, "run.completed");
        let (name, _) = mapped(msg("execution_started", json!(null), json!({})));
        assert_eq!(name, "run.started");
        let (name, _) = mapped(msg("node.skipped", json!("b"), json!({})));
        assert_eq!(name, "node.skipped");
        let (name, data) = mapped(msg("cache.hit", json!(null), json!({"k": 1})));
        assert_eq!((name.as_str(), &data["k"]), ("cache.hit", &json!(1)));
    }

    #[test]
    fn terminal_events_that_do_not_fit_still_end_the_run() {
        let (name, data) = mapped(msg("execution.failed", json!(null), json!({})));
        assert_eq!(
            (name.as_str(), &data["error"]),
            ("run.failed", &json!("execution failed"))
        );
        let (name, data) = mapped(msg(
            "execution.failed",
            json!(null),
            json!({"message": "oom"}),
        ));
        assert_eq!(
            (name.as_str(), &data["error"]),
            ("run.failed", &json!("oom"))
        );
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
