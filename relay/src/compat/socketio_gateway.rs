//! `socketio-gateway`: the Socket.IO execution gateway that runwire replaces.
//!
//! Its backend emitted `(name, payload)` pairs; published to runwire they are either Socket.IO's
//! own array `["status", {…}]` or an object `{"event": "status", "data": {…}}`. Every payload
//! carries an `executionId`, which is how they are told apart from runwire's own events.
//!
//! | emit | runwire event |
//! | --- | --- |
//! | `status {executionId, status}` | `running` → `run.started`, `completed` → `run.completed`, `failed` → `run.failed` (`error` from the payload's `error`, else `"failed"`), `cancelled` → `run.cancelled`; `pending` and others → `custom` |
//! | `log {executionId, log: {id, nodeId?, level, message, metadata?, createdAt}}` | `log`, data the `log` object with `node_key` = `nodeId` |
//! | `result {executionId, result}` | `result`, data the payload: the run ends with its `status`, not here |
//! | `error {executionId, error}` | `log` at level `error`, `message` the error's text, the error under `error` |
//! | `nodeStatus {executionId, nodeId, status, output?}` | `running` → `node.started`, `completed` → `node.completed` (`output_summary` = `output`), `failed` → `node.failed`, `skipped` → `node.skipped`; others → `custom` |
//!
//! `result` and `error` do not end the run: the gateway also sends the final `status`, and a run
//! ends exactly once. Every payload's fields stay in the event's data.

use serde_json::{Map, Value};

use super::{custom, error_text, fit, id_text};
use crate::broker::NewEvent;

/// The gateway's emit names.
const NAMES: [&str; 5] = ["status", "log", "result", "error", "nodeStatus"];

/// Maps an emit in the gateway's shape; `None` when `value` is not one.
pub fn map_message(value: &Value) -> Option<NewEvent> {
    let (name, payload) = match value {
        Value::Array(items) if items.len() == 2 => (items[0].as_str()?, items[1].as_object()?),
        Value::Object(obj) => (obj.get("event")?.as_str()?, obj.get("data")?.as_object()?),
        _ => return None,
    };
    if !NAMES.contains(&name) || !payload.contains_key("executionId") {
        return None;
    }
    let execution_id = payload.get("executionId").cloned().unwrap_or_default();
    let mut data = payload.clone();
    data.insert("execution_id".into(), execution_id.clone());
    let status = payload
        .get("status")
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase);
    let failure = || error_text(payload.get("error")).unwrap_or_else(|| "failed".to_owned());
    Some(match name {
        "status" => {
            let event = match status.as_deref() {
                Some("running" | "started") => "run.started",
                Some("completed" | "success") => "run.completed",
                Some("failed" | "error") => "run.failed",
                Some("cancelled" | "canceled") => "run.cancelled",
                _ => return Some(custom(value)),
            };
            let error = (event == "run.failed").then(failure);
            if let Some(error) = &error {
                data.entry("error").or_insert_with(|| error.clone().into());
            }
            fit(event, data, value, None, error.as_deref())
        }
        "log" => {
            let Some(Value::Object(log)) = payload.get("log") else {
                return Some(custom(value));
            };
            let mut data = log.clone();
            data.insert("execution_id".into(), execution_id.clone());
            if let Some(node) = id_text(log.get("nodeId")) {
                data.entry("node_key").or_insert_with(|| node.into());
            }
            NewEvent::parse("log", Value::Object(data)).unwrap_or_else(|_| custom(value))
        }
        "result" => {
            NewEvent::parse("result", Value::Object(data)).unwrap_or_else(|_| custom(value))
        }
        "error" => {
            let message = failure();
            let mut log = Map::new();
            log.insert("level".into(), "error".into());
            log.insert("message".into(), message.into());
            log.insert("execution_id".into(), execution_id.clone());
            if let Some(e) = payload.get("error") {
                log.insert("error".into(), e.clone());
            }
            NewEvent::parse("log", Value::Object(log)).unwrap_or_else(|_| custom(value))
        }
        _ => {
            // nodeStatus
            let Some(node_key) = id_text(payload.get("nodeId")) else {
                return Some(custom(value));
            };
            let event = match status.as_deref() {
                Some("running" | "started") => "node.started",
                Some("completed" | "success") => "node.completed",
                Some("failed" | "error") => "node.failed",
                Some("skipped") => "node.skipped",
                _ => return Some(custom(value)),
            };
            data.insert("node_key".into(), node_key.clone().into());
            if event == "node.completed" {
                if let Some(output) = payload.get("output") {
                    data.entry("output_summary")
                        .or_insert_with(|| output.clone());
                }
            }
            let error = (event == "node.failed").then(failure);
            if let Some(error) = &error {
                data.entry("error").or_insert_with(|| error.clone().into());
            }
            fit(event, data, value, Some(&node_key), error.as_deref())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn mapped(v: Value) -> (String, Value) {
        let ev = map_message(&v).expect("claimed");
        (ev.name().to_owned(), ev.data)
    }

    #[test]
    fn statuses() {
        for (status, name) in [
            ("running", "run.started"),
            ("completed", "run.completed"),
            ("failed", "run.failed"),
        ] {
            let (got, data) = mapped(json!(["status", {"executionId": "e1", "status": status}]));
            assert_eq!(got, name);
            assert_eq!(data["execution_id"], "e1");
        }
        let (name, data) = mapped(
            json!({"event": "status", "data": {"executionId": "e1", "status": "failed", "error": "timeout"}}),
        );
        assert_eq!(
            (name.as_str(), &data["error"]),
            ("run.failed", &json!("timeout"))
        );
        let msg = json!(["status", {"executionId": "e1", "status": "pending"}]);
        assert_eq!(mapped(msg.clone()), ("custom".into(), msg));
    }

    #[test]
    fn logs_results_and_errors() {
        let (name, data) = mapped(json!(["log", {"executionId": "e1", "log": {
            "id": "l1", "nodeId": "n1", "level": "warning", "message": "slow", "createdAt": "2026-11-29T10:00:00Z"
        }}]));
        assert_eq!(name, "log");
        assert_eq!(
            data,
            json!({"id":"l1","nodeId":"n1","node_key":"n1","level":"warning","message":"slow","createdAt":"2026-11-29T10:00:00Z","execution_id":"e1"})
        );
        let (name, data) = mapped(json!(["result", {"executionId": "e1", "result": [1, 2]}]));
        assert_eq!((name.as_str(), &data["result"]), ("result", &json!([1, 2])));
        let (name, data) =
            mapped(json!(["error", {"executionId": "e1", "error": {"message": "boom"}}]));
        assert_eq!(name, "log");
        assert_eq!(data["level"], "error");
        assert_eq!(data["message"], "boom");
        assert_eq!(data["error"], json!({"message": "boom"}));
        // neither ends a run
        assert!(
            !map_message(&json!(["result", {"executionId": "e1"}]))
                .unwrap()
                .typed
                .is_terminal()
        );
        assert!(
            !map_message(&json!(["error", {"executionId": "e1"}]))
                .unwrap()
                .typed
                .is_terminal()
        );
    }

    #[test]
    fn node_statuses() {
        for (status, name) in [
            ("running", "node.started"),
            ("completed", "node.completed"),
            ("failed", "node.failed"),
            ("skipped", "node.skipped"),
        ] {
            let (got, data) = mapped(
                json!(["nodeStatus", {"executionId": "e1", "nodeId": "n1", "status": status, "output": {"rows": 1}}]),
            );
            assert_eq!(got, name);
            assert_eq!(data["node_key"], "n1");
        }
        let (_, data) = mapped(
            json!(["nodeStatus", {"executionId": "e1", "nodeId": "n1", "status": "completed", "output": {"rows": 1}}]),
        );
        assert_eq!(data["output_summary"], json!({"rows": 1}));
        let (_, data) = mapped(
            json!(["nodeStatus", {"executionId": "e1", "nodeId": "n1", "status": "failed"}]),
        );
        assert_eq!(data["error"], "failed");
    }

    #[test]
    fn malformed_and_partial_emits() {
        for msg in [
            json!(["nodeStatus", {"executionId": "e1", "status": "completed"}]),
            json!(["nodeStatus", {"executionId": "e1", "nodeId": "n", "status": "queued"}]),
            json!(["nodeStatus", {"executionId": "e1", "nodeId": "n"}]),
            json!(["log", {"executionId": "e1", "log": "text"}]),
            json!(["log", {"executionId": "e1", "log": {"level": "loud", "message": "m"}}]),
            json!(["log", {"executionId": "e1"}]),
            json!(["status", {"executionId": "e1"}]),
        ] {
            let ev = map_message(&msg).unwrap();
            assert!(!ev.typed.is_terminal(), "{msg}");
            assert_eq!((ev.name(), &ev.data), ("custom", &msg));
        }
        for v in [
            json!(["status", {"status": "completed"}]),
            json!(["other", {"executionId": "e1"}]),
            json!(["status"]),
            json!(["status", "x"]),
            json!({"event": "log", "data": {"level": "info", "message": "m"}}),
            json!({"event": "status"}),
        ] {
            assert!(map_message(&v).is_none(), "{v}");
        }
    }
}
