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

use serde_json::{Map, Value};

use super::{custom, error_text, fit, id_text};
use crate::broker::NewEvent;

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapped(v: Value) -> (String, Value) {
        let ev = map_message(&v).expect("claimed");
        (ev.name().to_owned(), ev.data)
    }

    fn envelope(kind: &str, data: Value) -> Value {
        json!({"type": kind, "executionId": "e1", "workflowId": "wf", "timestamp": "2026-11-29T10:00:00.000Z", "data": data})
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
