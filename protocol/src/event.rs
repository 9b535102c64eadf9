//! Run events: names, typed data, validation, and the envelope they travel in.
//!
//! A publisher sends an event name and a JSON `data` object. Known names have a typed shape that is
//! checked on the way in; any other well-formed name is carried through untouched, so new event
//! kinds reach browsers before every component knows about them.

use alloc::borrow::ToOwned;
use alloc::format;
use alloc::string::{String, ToString};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest accepted run id, in bytes.
pub const MAX_RUN_ID_LEN: usize = 128;
/// Longest accepted event name, in bytes (`[a-z][a-z0-9_.:-]{0,63}`).
pub const MAX_EVENT_NAME_LEN: usize = 64;
/// Longest accepted node key, in bytes.
pub const MAX_NODE_KEY_LEN: usize = 256;

/// Whether `run` is a valid run id: 1 to 128 bytes of `[A-Za-z0-9_.:-]`.
///
/// Run ids appear in URL paths, Redis keys and channel names, so the alphabet is kept small.
pub fn is_valid_run_id(run: &str) -> bool {
    !run.is_empty()
        && run.len() <= MAX_RUN_ID_LEN
        && run
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Whether `name` is a valid event name: `[a-z][a-z0-9_.:-]{0,63}`.
pub fn is_valid_event_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.first() {
        Some(b) if b.is_ascii_lowercase() => {}
        _ => return false,
    }
    bytes.len() <= MAX_EVENT_NAME_LEN
        && bytes[1..].iter().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b':' | b'-')
        })
}

/// Why an event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The name does not match `[a-z][a-z0-9_.:-]{0,63}`.
    #[error("invalid event name {0:?}: expected [a-z][a-z0-9_.:-]{{0,63}}")]
    InvalidName(String),
    /// A known event's data does not have that event's shape.
    #[error("invalid data for {event}: {reason}")]
    InvalidData {
        /// The event name.
        event: String,
        /// What is wrong, in words.
        reason: String,
    },
}

/// `run.started`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunStarted {
    /// Name of the workflow being run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// How many nodes the run will execute, when known up front.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_count: Option<u32>,
}

/// `run.progress`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunProgress {
    /// Overall progress, 0 to 100.
    pub progress: f64,
    /// The node currently executing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_node: Option<String>,
}

/// `run.completed`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunCompleted<V = Value> {
    /// Wall time of the whole run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_duration_ms: Option<u64>,
    /// Nodes executed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_count: Option<u32>,
    /// The run's result, any JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<V>,
}

/// `run.failed`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunFailed {
    /// What went wrong.
    pub error: String,
    /// The node that failed the run, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_key: Option<String>,
}

/// `run.cancelled`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunCancelled {
    /// Why the run was cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `node.started`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeStarted {
    /// The node's key within the workflow.
    pub node_key: String,
}

/// `node.progress`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeProgress {
    /// The node's key within the workflow.
    pub node_key: String,
    /// The node's progress, 0 to 100.
    pub progress: f64,
}

/// `node.completed`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeCompleted<V = Value> {
    /// The node's key within the workflow.
    pub node_key: String,
    /// How long the node ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// A short summary of the node's output, any JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_summary: Option<V>,
}

/// `node.failed`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeFailed {
    /// The node's key within the workflow.
    pub node_key: String,
    /// What went wrong.
    pub error: String,
}

/// `node.skipped`: the node will not run (a branch not taken, a condition not met).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeSkipped {
    /// The node's key within the workflow.
    pub node_key: String,
    /// Why the node was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Severity of a `log` event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Diagnostic detail.
    Debug,
    /// Ordinary progress.
    #[default]
    Info,
    /// Something worth a look.
    #[serde(alias = "warn")]
    Warning,
    /// Something failed.
    Error,
}

/// `log`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Log<V = Value> {
    /// Severity.
    pub level: LogLevel,
    /// The log line.
    pub message: String,
    /// The node that logged it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_key: Option<String>,
    /// Structured extras, any JSON.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<V>,
}

/// A run event with its data parsed into the shape its name promises.
///
/// `V` holds its opaque values (`result`, `output_summary`, `metadata`): JSON values in the
/// relay, [`JsonText`](crate::JsonText) in the browser SDK.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // each variant is documented by the struct it carries
pub enum RunEvent<V = Value> {
    RunStarted(RunStarted),
    RunProgress(RunProgress),
    RunCompleted(RunCompleted<V>),
    RunFailed(RunFailed),
    RunCancelled(RunCancelled),
    NodeStarted(NodeStarted),
    NodeProgress(NodeProgress),
    NodeCompleted(NodeCompleted<V>),
    NodeFailed(NodeFailed),
    NodeSkipped(NodeSkipped),
    Log(Log<V>),
    /// Any other valid name: carried through untouched.
    Other {
        /// The event name.
        name: String,
    },
}

/// The event names runwire knows the shape of.
pub const KNOWN_EVENTS: [&str; 11] = [
    "run.started",
    "run.progress",
    "run.completed",
    "run.failed",
    "run.cancelled",
    "node.started",
    "node.progress",
    "node.completed",
    "node.failed",
    "node.skipped",
    "log",
];

/// Whether `name` ends a run: `run.completed`, `run.failed` or `run.cancelled`.
pub fn is_terminal_event(name: &str) -> bool {
    matches!(name, "run.completed" | "run.failed" | "run.cancelled")
}

impl RunEvent {
    /// Checks `name` and parses `data` into the typed shape for known names.
    ///
    /// `data` is borrowed: the relay forwards the publisher's JSON as it came (extra fields
    /// included), and only needs the typed view to validate and to fold the run state.
    /// A missing `data` is the same as `{}`.
    pub fn parse(name: &str, data: &Value) -> Result<Self, EventError> {
        if !is_valid_event_name(name) {
            return Err(EventError::InvalidName(name.to_owned()));
        }
        let empty = Value::Object(serde_json::Map::new());
        let data = if data.is_null() { &empty } else { data };
        let event = match name {
            "run.started" => Self::RunStarted(typed(name, data)?),
            "run.progress" => {
                let p: RunProgress = typed(name, data)?;
                check_percent(name, p.progress)?;
                Self::RunProgress(p)
            }
            "run.completed" => Self::RunCompleted(typed(name, data)?),
            "run.failed" => Self::RunFailed(typed(name, data)?),
            "run.cancelled" => Self::RunCancelled(typed(name, data)?),
            "node.started" => {
                let n: NodeStarted = typed(name, data)?;
                check_node_key(name, &n.node_key)?;
                Self::NodeStarted(n)
            }
            "node.progress" => {
                let n: NodeProgress = typed(name, data)?;
                check_node_key(name, &n.node_key)?;
                check_percent(name, n.progress)?;
                Self::NodeProgress(n)
            }
            "node.completed" => {
                let n: NodeCompleted = typed(name, data)?;
                check_node_key(name, &n.node_key)?;
                Self::NodeCompleted(n)
            }
            "node.failed" => {
                let n: NodeFailed = typed(name, data)?;
                check_node_key(name, &n.node_key)?;
                Self::NodeFailed(n)
            }
            "node.skipped" => {
                let n: NodeSkipped = typed(name, data)?;
                check_node_key(name, &n.node_key)?;
                Self::NodeSkipped(n)
            }
            "log" => Self::Log(typed(name, data)?),
            _ => Self::Other {
                name: name.to_owned(),
            },
        };
        Ok(event)
    }
}

impl<V> RunEvent<V> {
    /// The same event with its opaque values passed through `f` (from JSON values to their text,
    /// for example).
    pub fn map_opaque<W>(self, f: impl FnOnce(V) -> W) -> RunEvent<W> {
        match self {
            Self::RunStarted(e) => RunEvent::RunStarted(e),
            Self::RunProgress(e) => RunEvent::RunProgress(e),
            Self::RunCompleted(e) => RunEvent::RunCompleted(RunCompleted {
                total_duration_ms: e.total_duration_ms,
                node_count: e.node_count,
                result: e.result.map(f),
            }),
            Self::RunFailed(e) => RunEvent::RunFailed(e),
            Self::RunCancelled(e) => RunEvent::RunCancelled(e),
            Self::NodeStarted(e) => RunEvent::NodeStarted(e),
            Self::NodeProgress(e) => RunEvent::NodeProgress(e),
            Self::NodeCompleted(e) => RunEvent::NodeCompleted(NodeCompleted {
                node_key: e.node_key,
                duration_ms: e.duration_ms,
                output_summary: e.output_summary.map(f),
            }),
            Self::NodeFailed(e) => RunEvent::NodeFailed(e),
            Self::NodeSkipped(e) => RunEvent::NodeSkipped(e),
            Self::Log(e) => RunEvent::Log(Log {
                level: e.level,
                message: e.message,
                node_key: e.node_key,
                metadata: e.metadata.map(f),
            }),
            Self::Other { name } => RunEvent::Other { name },
        }
    }

    /// The event's name.
    pub fn name(&self) -> &str {
        match self {
            Self::RunStarted(_) => "run.started",
            Self::RunProgress(_) => "run.progress",
            Self::RunCompleted(_) => "run.completed",
            Self::RunFailed(_) => "run.failed",
            Self::RunCancelled(_) => "run.cancelled",
            Self::NodeStarted(_) => "node.started",
            Self::NodeProgress(_) => "node.progress",
            Self::NodeCompleted(_) => "node.completed",
            Self::NodeFailed(_) => "node.failed",
            Self::NodeSkipped(_) => "node.skipped",
            Self::Log(_) => "log",
            Self::Other { name } => name,
        }
    }

    /// Whether this event ends the run.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::RunCompleted(_) | Self::RunFailed(_) | Self::RunCancelled(_)
        )
    }
}

fn typed<T: serde::de::DeserializeOwned>(name: &str, data: &Value) -> Result<T, EventError> {
    if !data.is_object() {
        return Err(EventError::InvalidData {
            event: name.to_owned(),
            reason: "data must be a JSON object".to_owned(),
        });
    }
    T::deserialize(data).map_err(|e| EventError::InvalidData {
        event: name.to_owned(),
        reason: e.to_string(),
    })
}

fn check_percent(name: &str, progress: f64) -> Result<(), EventError> {
    if progress.is_finite() && (0.0..=100.0).contains(&progress) {
        Ok(())
    } else {
        Err(EventError::InvalidData {
            event: name.to_owned(),
            reason: format!("progress must be between 0 and 100, got {progress}"),
        })
    }
}

fn check_node_key(name: &str, key: &str) -> Result<(), EventError> {
    if key.is_empty() || key.len() > MAX_NODE_KEY_LEN {
        Err(EventError::InvalidData {
            event: name.to_owned(),
            reason: format!("node_key must be 1 to {MAX_NODE_KEY_LEN} bytes"),
        })
    } else {
        Ok(())
    }
}

/// One event as it travels to subscribers: the body of the `event` server frame, and the `data:`
/// of an SSE message.
///
/// `{"type":"event","run":"r1","seq":7,"event":"node.completed","ts":"2026-…Z","data":{…}}`
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The run the event belongs to.
    pub run: String,
    /// Per-run sequence number assigned by the broker: starts at 1 and grows by 1, with no gaps.
    pub seq: u64,
    /// The event name.
    pub event: String,
    /// When the relay accepted the event, RFC 3339 in UTC with milliseconds.
    pub ts: String,
    /// The event's data as the publisher sent it (`{}` when it sent none).
    #[serde(default)]
    pub data: Value,
}

impl Envelope {
    /// The JSON text of the `event` frame, `"type":"event"` first. This is the one encoding of an
    /// event that every subscriber shares.
    pub fn to_frame_json(&self) -> String {
        #[derive(Serialize)]
        struct Frame<'a> {
            r#type: &'static str,
            #[serde(flatten)]
            envelope: &'a Envelope,
        }
        serde_json::to_string(&Frame {
            r#type: "event",
            envelope: self,
        })
        .expect("an envelope of JSON values always serializes")
    }

    /// The typed view of this event.
    pub fn typed(&self) -> Result<RunEvent, EventError> {
        RunEvent::parse(&self.event, &self.data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names() {
        for ok in ["log", "run.started", "a", "custom:thing-1_x.y"] {
            assert!(is_valid_event_name(ok), "{ok}");
        }
        let long = "a".repeat(65);
        for bad in ["", "Run", "1a", "a b", "a/b", "é", long.as_str()] {
            assert!(!is_valid_event_name(bad), "{bad}");
        }
        assert!(is_valid_event_name(&"a".repeat(64)));
    }

    #[test]
    fn run_ids() {
        assert!(is_valid_run_id("42"));
        assert!(is_valid_run_id("run_01H:x-y.z"));
        assert!(!is_valid_run_id(""));
        assert!(!is_valid_run_id("a/b"));
        assert!(!is_valid_run_id("a b"));
        assert!(!is_valid_run_id(&"a".repeat(129)));
    }

    #[test]
    fn typed_parse() {
        let e = RunEvent::parse("node.failed", &json!({"node_key":"n1","error":"boom"})).unwrap();
        assert_eq!(
            e,
            RunEvent::NodeFailed(NodeFailed {
                node_key: "n1".into(),
                error: "boom".into()
            })
        );
        // extra fields are fine, missing required ones are not
        RunEvent::parse("node.started", &json!({"node_key":"n","extra":1})).unwrap();
        assert!(matches!(
            RunEvent::parse("node.started", &json!({})),
            Err(EventError::InvalidData { .. })
        ));
        assert!(RunEvent::parse("node.progress", &json!({"node_key":"n","progress":101})).is_err());
        assert!(RunEvent::parse("run.progress", &json!({"progress":-1})).is_err());
        assert!(RunEvent::parse("log", &json!({"level":"loud","message":"x"})).is_err());
        assert_eq!(
            RunEvent::parse("node.skipped", &json!({"node_key":"n"})).unwrap(),
            RunEvent::NodeSkipped(NodeSkipped {
                node_key: "n".into(),
                reason: None
            })
        );
        assert!(RunEvent::parse("node.skipped", &json!({"reason":"x"})).is_err());
        assert!(RunEvent::parse("log", &json!("text")).is_err());
        assert!(RunEvent::parse("run.started", &Value::Null).is_ok());
        assert_eq!(
            RunEvent::parse("my.thing", &json!([1, 2])).unwrap(),
            RunEvent::Other {
                name: "my.thing".into()
            }
        );
        assert!(matches!(
            RunEvent::parse("Bad", &json!({})),
            Err(EventError::InvalidName(_))
        ));
    }

    #[test]
    fn terminal() {
        for name in KNOWN_EVENTS {
            let data =
                json!({"error":"e","node_key":"n","progress":1,"message":"m","level":"info"});
            let e = RunEvent::parse(name, &data).unwrap();
            assert_eq!(e.name(), name);
            assert_eq!(e.is_terminal(), is_terminal_event(name));
        }
    }

    #[test]
    fn envelope_frame_json() {
        let env = Envelope {
            run: "r1".into(),
            seq: 7,
            event: "log".into(),
            ts: "2026-01-01T00:00:00.000Z".into(),
            data: json!({"level":"info","message":"hi"}),
        };
        let text = env.to_frame_json();
        assert!(
            text.starts_with(r#"{"type":"event","run":"r1","seq":7"#),
            "{text}"
        );
        let back: crate::ServerFrame = serde_json::from_str(&text).unwrap();
        assert_eq!(back, crate::ServerFrame::Event(env));
    }
}
