//! The rules by which the client reads the relay's frames, over any parsed JSON: the browser's
//! `JSON.parse` objects (`js.rs`, the production path: no JSON parser ships in the `.wasm`) and
//! `serde_json` values (native tests, through [`crate::wire::decode_json`]). One set of rules, so
//! the native tests exercise what browsers run.
//!
//! They are those of `docs/protocol.md` for clients: unknown frame types are ignored, unknown
//! error codes reported as they are, an unknown `unsubscribed` reason ends the subscription all
//! the same, and event data is checked against its name's shape as
//! `runwire_protocol::RunEvent::parse` checks it (compared on a table in the tests below and in the
//! browser suite), any other well-formed name being carried through.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;

use runwire_protocol::event::{
    LogLevel, MAX_NODE_KEY_LEN, NodeCompleted, NodeFailed, NodeProgress, NodeSkipped, NodeStarted,
    RunCancelled, RunCompleted, RunFailed, RunProgress, RunStarted,
};
use runwire_protocol::state::MAX_NODES;
use runwire_protocol::{JsonText, NodeStatus, RunStatus, is_valid_event_name};

use serde_json::Value;

use crate::wire::{Ended, EventFrame, Frame};
use crate::{NodeState, RunEvent, RunState};

/// The property names read (and, in `js.rs`, written). A variant's index is its key in the JS key
/// table, so the names live once in JS and the `.wasm` holds no string for them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
#[allow(missing_docs)] // each variant is the property of the same name: in snake_case for frames
// and states, in camelCase for the app's options (from `Url` on), read with `js::option`
pub enum Field {
    Type,
    Run,
    Seq,
    Event,
    Ts,
    Data,
    State,
    Epoch,
    Reason,
    Code,
    Message,
    HeartbeatMs,
    ExpiresAt,
    Workflow,
    NodeCount,
    Progress,
    CurrentNode,
    TotalDurationMs,
    Result,
    Error,
    NodeKey,
    DurationMs,
    OutputSummary,
    Level,
    Status,
    Nodes,
    NodesTruncated,
    Key,
    StartedAt,
    FinishedAt,
    FailedNode,
    CancelReason,
    LogCount,
    WarningCount,
    ErrorCount,
    Previous,
    Runs,
    Url,
    Token,
    MinReconnectDelayMs,
    MaxReconnectDelayMs,
    MaxReconnectAttempts,
    Transport,
    Debug,
    StateEvery,
    OnEvent,
    OnOtherEvent,
    OnState,
    OnEnd,
    Since,
}

impl Field {
    /// Every field, in key order.
    pub const ALL: [Field; 50] = [
        Self::Type,
        Self::Run,
        Self::Seq,
        Self::Event,
        Self::Ts,
        Self::Data,
        Self::State,
        Self::Epoch,
        Self::Reason,
        Self::Code,
        Self::Message,
        Self::HeartbeatMs,
        Self::ExpiresAt,
        Self::Workflow,
        Self::NodeCount,
        Self::Progress,
        Self::CurrentNode,
        Self::TotalDurationMs,
        Self::Result,
        Self::Error,
        Self::NodeKey,
        Self::DurationMs,
        Self::OutputSummary,
        Self::Level,
        Self::Status,
        Self::Nodes,
        Self::NodesTruncated,
        Self::Key,
        Self::StartedAt,
        Self::FinishedAt,
        Self::FailedNode,
        Self::CancelReason,
        Self::LogCount,
        Self::WarningCount,
        Self::ErrorCount,
        Self::Previous,
        Self::Runs,
        Self::Url,
        Self::Token,
        Self::MinReconnectDelayMs,
        Self::MaxReconnectDelayMs,
        Self::MaxReconnectAttempts,
        Self::Transport,
        Self::Debug,
        Self::StateEvery,
        Self::OnEvent,
        Self::OnOtherEvent,
        Self::OnState,
        Self::OnEnd,
        Self::Since,
    ];

    /// The property name. Only native code uses it: the `.wasm` reads properties by index.
    pub fn name(self) -> &'static str {
        match self {
            Self::Type => "type",
            Self::Run => "run",
            Self::Seq => "seq",
            Self::Event => "event",
            Self::Ts => "ts",
            Self::Data => "data",
            Self::State => "state",
            Self::Epoch => "epoch",
            Self::Reason => "reason",
            Self::Code => "code",
            Self::Message => "message",
            Self::HeartbeatMs => "heartbeat_ms",
            Self::ExpiresAt => "expires_at",
            Self::Workflow => "workflow",
            Self::NodeCount => "node_count",
            Self::Progress => "progress",
            Self::CurrentNode => "current_node",
            Self::TotalDurationMs => "total_duration_ms",
            Self::Result => "result",
            Self::Error => "error",
            Self::NodeKey => "node_key",
            Self::DurationMs => "duration_ms",
            Self::OutputSummary => "output_summary",
            Self::Level => "level",
            Self::Status => "status",
            Self::Nodes => "nodes",
            Self::NodesTruncated => "nodes_truncated",
            Self::Key => "key",
            Self::StartedAt => "started_at",
            Self::FinishedAt => "finished_at",
            Self::FailedNode => "failed_node",
            Self::CancelReason => "cancel_reason",
            Self::LogCount => "log_count",
            Self::WarningCount => "warning_count",
            Self::ErrorCount => "error_count",
            Self::Previous => "previous",
            Self::Runs => "runs",
            Self::Url => "url",
            Self::Token => "token",
            Self::MinReconnectDelayMs => "minReconnectDelayMs",
            Self::MaxReconnectDelayMs => "maxReconnectDelayMs",
            Self::MaxReconnectAttempts => "maxReconnectAttempts",
            Self::Transport => "transport",
            Self::Debug => "debug",
            Self::StateEvery => "stateEvery",
            Self::OnEvent => "onEvent",
            Self::OnOtherEvent => "onOtherEvent",
            Self::OnState => "onState",
            Self::OnEnd => "onEnd",
            Self::Since => "since",
        }
    }
}

/// A parsed JSON value, as much of it as the rules read. JS semantics: a missing property and
/// `null` are both absent, and [`Json::is_truthy`] is JavaScript's truthiness.
pub trait Json: Sized {
    /// Property `k` of an object; absent on anything else.
    fn field(&self, k: Field) -> Self;
    /// Property `k`, if it is a string: one step where the browser path would otherwise make
    /// the property a JS value, read it and drop it.
    fn str_field(&self, k: Field) -> Option<String> {
        self.field(k).as_string()
    }
    /// Property `k`, if it is a number (as [`Json::str_field`]).
    fn num_field(&self, k: Field) -> Option<f64> {
        self.field(k).as_f64()
    }
    /// Property `k` is absent (as [`Json::str_field`]): asked after an optional property was not
    /// of its type, which is most often because it is absent.
    fn absent_field(&self, k: Field) -> bool {
        self.field(k).is_absent()
    }
    /// The message that property `k` must be as `rule` says (" must be a string"): built where
    /// the property names are, so the `.wasm` holds none of them.
    fn must(k: Field, rule: &str) -> String;
    /// `undefined` or `null`.
    fn is_absent(&self) -> bool;
    /// An object that is not an array.
    fn is_plain_object(&self) -> bool;
    /// The string, if this is one.
    fn as_string(&self) -> Option<String>;
    /// The number, if this is one.
    fn as_f64(&self) -> Option<f64>;
    /// JavaScript's truthiness.
    fn is_truthy(&self) -> bool;
    /// The number of items, if this is an array.
    fn array_len(&self) -> Option<usize>;
    /// Item `i` of an array.
    fn item(&self, i: usize) -> Self;
    /// This value's JSON text: an opaque value (a run's `result`, a node's `output_summary`) is
    /// kept as text ([`JsonText`]); `js.rs` parses it back.
    fn json_text(&self) -> Option<String>;
}

const U32: f64 = u32::MAX as f64;
const U64: f64 = 18_446_744_073_709_551_615.0;

/// Reads the properties of one object by the rules, and keeps the message of the first rule
/// broken: a frame or an event's data is read whole, then accepted or refused once, instead of
/// a check and an early return after each property.
struct Reader<'a, J> {
    o: &'a J,
    error: Option<String>,
}

impl<'a, J: Json> Reader<'a, J> {
    fn new(o: &'a J) -> Self {
        Self { o, error: None }
    }

    /// Notes that property `k` breaks `rule`, unless an earlier one already did.
    fn fail(&mut self, k: Field, rule: &str) {
        if self.error.is_none() {
            self.error = Some(J::must(k, rule));
        }
    }

    /// Keeps the error of a value read by other rules, unless an earlier one came first.
    fn take<T: Default>(&mut self, v: Result<T, String>) -> T {
        v.unwrap_or_else(|e| {
            self.error.get_or_insert(e);
            T::default()
        })
    }

    /// `v` if every property read was as the rules want, else the first one's message.
    fn done<T>(self, v: T) -> Result<T, String> {
        match self.error {
            None => Ok(v),
            Some(e) => Err(e),
        }
    }

    fn string(&mut self, k: Field) -> String {
        let s = self.o.str_field(k);
        if s.is_none() {
            self.fail(k, NOT_STRING);
        }
        s.unwrap_or_default()
    }

    fn opt_string(&mut self, k: Field) -> Option<String> {
        let s = self.o.str_field(k);
        if s.is_none() && !self.o.absent_field(k) {
            self.fail(k, NOT_STRING);
        }
        s
    }

    /// A non-negative integer no larger than `max`.
    fn uint(&mut self, k: Field, max: f64) -> u64 {
        match self.o.num_field(k) {
            Some(n) if is_uint(n, max) => n as u64,
            _ => {
                self.fail(k, NOT_UINT);
                0
            }
        }
    }

    /// As [`Reader::uint`], or absent.
    fn opt_uint(&mut self, k: Field, max: f64) -> Option<u64> {
        match self.o.num_field(k) {
            Some(n) if is_uint(n, max) => Some(n as u64),
            None if self.o.absent_field(k) => None,
            _ => {
                self.fail(k, NOT_UINT);
                None
            }
        }
    }

    fn percent(&mut self, k: Field) -> f64 {
        match self.o.num_field(k) {
            Some(p) if (0.0..=100.0).contains(&p) => p,
            Some(_) => {
                self.fail(k, " must be between 0 and 100");
                0.0
            }
            None => {
                self.fail(k, " must be a number");
                0.0
            }
        }
    }

    fn node_key(&mut self) -> String {
        let key = self.o.str_field(Field::NodeKey);
        match &key {
            None => self.fail(Field::NodeKey, NOT_STRING),
            Some(k) if k.is_empty() || k.len() > MAX_NODE_KEY_LEN => {
                self.fail(Field::NodeKey, " must be 1 to 256 bytes");
            }
            Some(_) => {}
        }
        key.unwrap_or_default()
    }
}

/// `n` is a non-negative integer no larger than `max`.
fn is_uint(n: f64, max: f64) -> bool {
    n >= 0.0 && n % 1.0 == 0.0 && n <= max
}

const NOT_STRING: &str = " must be a string";
const NOT_UINT: &str = " must be a non-negative integer";

/// An opaque JSON value, kept as its JSON text: the fold only moves these values, so they are
/// never turned into a tree inside the `.wasm`.
fn opt_value<J: Json>(v: J) -> Option<JsonText> {
    if v.is_absent() {
        return None;
    }
    v.json_text().map(JsonText)
}

/// Checks `data` (absent: `{}`) against the shape of event `name` (see `RunEvent::parse`).
pub fn typed_event<J: Json>(name: &str, d: &J) -> Result<RunEvent, String> {
    if !is_valid_event_name(name) {
        return Err(join(&["invalid event name \"", name, "\""]));
    }
    let mut r = Reader::new(d);
    // Absent data reads as `{}`: every property of it is absent. Any other data of a typed event
    // must be an object, which comes before what its properties are (an event of another name is
    // carried through below, whatever its data).
    if !d.is_absent() && !d.is_plain_object() {
        r.fail(Field::Data, " must be a JSON object");
    }
    let typed = match name {
        "run.started" => RunEvent::RunStarted(RunStarted {
            workflow: r.opt_string(Field::Workflow),
            node_count: r.opt_uint(Field::NodeCount, U32).map(|n| n as u32),
        }),
        "run.progress" => RunEvent::RunProgress(RunProgress {
            progress: r.percent(Field::Progress),
            current_node: r.opt_string(Field::CurrentNode),
        }),
        "run.completed" => RunEvent::RunCompleted(RunCompleted {
            total_duration_ms: r.opt_uint(Field::TotalDurationMs, U64),
            node_count: r.opt_uint(Field::NodeCount, U32).map(|n| n as u32),
            result: opt_value(d.field(Field::Result)),
        }),
        "run.failed" => RunEvent::RunFailed(RunFailed {
            error: r.string(Field::Error),
            node_key: r.opt_string(Field::NodeKey),
        }),
        "run.cancelled" => RunEvent::RunCancelled(RunCancelled {
            reason: r.opt_string(Field::Reason),
        }),
        "node.started" => RunEvent::NodeStarted(NodeStarted {
            node_key: r.node_key(),
        }),
        "node.progress" => RunEvent::NodeProgress(NodeProgress {
            node_key: r.node_key(),
            progress: r.percent(Field::Progress),
        }),
        "node.completed" => RunEvent::NodeCompleted(NodeCompleted {
            node_key: r.node_key(),
            duration_ms: r.opt_uint(Field::DurationMs, U64),
            output_summary: opt_value(d.field(Field::OutputSummary)),
        }),
        "node.failed" => RunEvent::NodeFailed(NodeFailed {
            node_key: r.node_key(),
            error: r.string(Field::Error),
        }),
        "node.skipped" => RunEvent::NodeSkipped(NodeSkipped {
            node_key: r.node_key(),
            reason: r.opt_string(Field::Reason),
        }),
        "log" => RunEvent::Log(runwire_protocol::event::Log {
            level: match d.str_field(Field::Level).as_deref() {
                Some("debug") => LogLevel::Debug,
                Some("info") => LogLevel::Info,
                Some("warning" | "warn") => LogLevel::Warning,
                Some("error") => LogLevel::Error,
                _ => {
                    r.fail(Field::Level, " must be debug, info, warning or error");
                    LogLevel::Info
                }
            },
            message: r.string(Field::Message),
            node_key: r.opt_string(Field::NodeKey),
            // Not part of the fold; the app reads it from the event object.
            metadata: None,
        }),
        _ => {
            return Ok(RunEvent::Other {
                name: name.to_owned(),
            });
        }
    };
    r.done(typed)
        .map_err(|e| join(&["invalid data for ", name, ": ", &e]))
}

/// Decodes a parsed frame.
pub fn frame<J: Json>(f: &J) -> Result<Frame, String> {
    if !f.is_plain_object() {
        return Err("frame is not a JSON object".to_owned());
    }
    let mut r = Reader::new(f);
    let ty = r.string(Field::Type);
    let frame = match ty.as_str() {
        "event" => {
            let name = r.string(Field::Event);
            Frame::Event(EventFrame {
                run: r.string(Field::Run),
                seq: r.uint(Field::Seq, U64),
                typed: typed_event(&name, &f.field(Field::Data)),
                name,
                ts: r.string(Field::Ts),
            })
        }
        "welcome" => Frame::Welcome {
            heartbeat_ms: r.uint(Field::HeartbeatMs, U64),
            expires_at: r.uint(Field::ExpiresAt, U64),
        },
        "subscribed" | "reset" => {
            let run = r.string(Field::Run);
            let seq = r.uint(Field::Seq, U64);
            let state = r.take(state(&f.field(Field::State)));
            let epoch = r.string(Field::Epoch);
            let expires_at = r.opt_uint(Field::ExpiresAt, U64);
            if ty == "reset" {
                Frame::Reset {
                    run,
                    seq,
                    state,
                    epoch,
                    expires_at,
                }
            } else {
                Frame::Subscribed {
                    run,
                    seq,
                    state,
                    epoch,
                    expires_at,
                }
            }
        }
        "unsubscribed" => Frame::Unsubscribed {
            run: r.string(Field::Run),
            reason: Ended::named(r.string(Field::Reason)),
        },
        "error" => Frame::Error {
            code: r.string(Field::Code),
            message: f.str_field(Field::Message).unwrap_or_default(),
            run: r.opt_string(Field::Run),
        },
        "pong" => Frame::Pong,
        _ => Frame::Other,
    };
    r.done(frame)
}

/// The texts as one.
fn join(parts: &[&str]) -> String {
    let mut s = String::new();
    for p in parts {
        s.push_str(p);
    }
    s
}

/// A run state from its JSON object (a `subscribed`/`reset` snapshot). The relay built it, so
/// only its status is checked; anything else out of shape reads as absent.
pub fn state<J: Json>(s: &J) -> Result<RunState, String> {
    if !s.is_plain_object() {
        return Err(J::must(Field::State, " must be a JSON object"));
    }
    let status = match s.str_field(Field::Status).as_deref() {
        Some("pending") | None => RunStatus::Pending,
        Some("running") => RunStatus::Running,
        Some("completed") => RunStatus::Completed,
        Some("failed") => RunStatus::Failed,
        Some("cancelled") => RunStatus::Cancelled,
        Some(other) => return Err(join(&["unknown run status \"", other, "\""])),
    };
    let list = s.field(Field::Nodes);
    let nodes = (0..list.array_len().unwrap_or(0).min(MAX_NODES))
        .map(|i| list.item(i))
        .map(|o| NodeState {
            key: o.str_field(Field::Key).unwrap_or_default(),
            status: match o.str_field(Field::Status).as_deref() {
                Some("running") => NodeStatus::Running,
                Some("completed") => NodeStatus::Completed,
                Some("failed") => NodeStatus::Failed,
                Some("skipped") => NodeStatus::Skipped,
                _ => NodeStatus::Pending,
            },
            progress: o.num_field(Field::Progress),
            started_at: o.str_field(Field::StartedAt),
            finished_at: o.str_field(Field::FinishedAt),
            duration_ms: o.num_field(Field::DurationMs).map(|n| n as u64),
            error: o.str_field(Field::Error),
            output_summary: opt_value(o.field(Field::OutputSummary)),
        })
        .collect();
    let count = |k| s.num_field(k).map_or(0, |n| n as u64);
    Ok(RunState {
        seq: count(Field::Seq),
        status,
        workflow: s.str_field(Field::Workflow),
        node_count: s.num_field(Field::NodeCount).map(|n| n as u32),
        progress: s.num_field(Field::Progress).unwrap_or(0.0),
        current_node: s.str_field(Field::CurrentNode),
        nodes,
        nodes_truncated: s.field(Field::NodesTruncated).is_truthy(),
        started_at: s.str_field(Field::StartedAt),
        finished_at: s.str_field(Field::FinishedAt),
        duration_ms: s.num_field(Field::DurationMs).map(|n| n as u64),
        error: s.str_field(Field::Error),
        failed_node: s.str_field(Field::FailedNode),
        cancel_reason: s.str_field(Field::CancelReason),
        result: opt_value(s.field(Field::Result)),
        log_count: count(Field::LogCount),
        warning_count: count(Field::WarningCount),
        error_count: count(Field::ErrorCount),
    })
}

/// `serde_json` values read with the JS semantics the browser path has.
impl Json for Value {
    fn field(&self, k: Field) -> Self {
        self.get(k.name()).cloned().unwrap_or(Value::Null)
    }

    fn must(k: Field, rule: &str) -> String {
        [k.name(), rule].concat()
    }

    fn is_absent(&self) -> bool {
        self.is_null()
    }

    fn is_plain_object(&self) -> bool {
        self.is_object()
    }

    fn as_string(&self) -> Option<String> {
        self.as_str().map(str::to_owned)
    }

    fn as_f64(&self) -> Option<f64> {
        Value::as_f64(self)
    }

    fn is_truthy(&self) -> bool {
        match self {
            Value::Null => false,
            Value::Bool(b) => *b,
            Value::Number(n) => n.as_f64().is_some_and(|n| n != 0.0),
            Value::String(s) => !s.is_empty(),
            Value::Array(_) | Value::Object(_) => true,
        }
    }

    fn array_len(&self) -> Option<usize> {
        self.as_array().map(Vec::len)
    }

    fn item(&self, i: usize) -> Self {
        self.get(i).cloned().unwrap_or(Value::Null)
    }

    fn json_text(&self) -> Option<String> {
        serde_json::to_string(self).ok()
    }
}

#[cfg(test)]
mod tests {
    use std::string::ToString;

    use runwire_protocol::EndReason;
    use serde_json::json;

    use super::*;

    /// The SDK keeps opaque values (`result`, `output_summary`) as their JSON text: the value it
    /// stands for.
    fn opaque(v: JsonText) -> Value {
        serde_json::from_str(&v.0).unwrap()
    }

    /// The browser suite's table (`tests/event-data-cases.json`: known names with data of every
    /// shape, and names this client has no shape for, which are carried through whatever their
    /// data), read by the same rules from `serde_json` values.
    #[test]
    fn event_data_is_checked_as_the_protocol_checks_it() {
        let cases: Vec<(String, Value)> =
            serde_json::from_str(include_str!("../tests/event-data-cases.json")).unwrap();
        for (name, data) in &cases {
            let name = name.as_str();
            let want = runwire_protocol::RunEvent::parse(name, data).map(|mut e| {
                if let runwire_protocol::RunEvent::Log(l) = &mut e {
                    l.metadata = None; // not decoded for the fold
                }
                e
            });
            let got = typed_event(name, data).map(|e| e.map_opaque(opaque));
            match (&want, &got) {
                (Ok(w), Ok(g)) => assert_eq!(w, g, "{name} {data}"),
                (Err(_), Err(e)) => assert!(e.starts_with("invalid"), "{name} {data}: {e}"),
                _ => panic!("{name} {data}: protocol {want:?}, sdk {got:?}"),
            }
        }
    }

    #[test]
    fn frames_out_of_shape_are_errors() {
        for bad in [
            json!({"type":"event","run":"r","seq":-1,"event":"log","ts":"t"}),
            json!({"type":"event","run":"r","seq":1.5,"event":"log","ts":"t"}),
            json!({"type":"event","run":"r","seq":1,"ts":"t"}),
            json!({"type":"welcome","heartbeat_ms":"1","expires_at":1}),
            json!({"run":"r"}),
            json!({"type":7}),
            json!([1]),
            json!("event"),
            json!({"type":"subscribed","run":"r","seq":1,"epoch":"e","state":"x"}),
            json!({"type":"subscribed","run":"r","seq":1,"epoch":"e","state":{"status":"paused"}}),
            json!({"type":"unsubscribed","run":"r","reason":7}),
            json!({"type":"error","message":"m"}),
            json!({"type":"error","code":"c","run":3}),
        ] {
            assert!(frame(&bad).is_err(), "{bad}");
        }
    }

    /// The messages the app's `onError` gets, word for word: each names the property (from
    /// [`Json::must`]; the browser suite checks that JS builds the same ones).
    #[test]
    fn errors_name_the_property() {
        let event = |name, data: Value| typed_event(name, &data).unwrap_err();
        assert_eq!(
            event("node.progress", json!({"node_key":"n","progress":101})),
            "invalid data for node.progress: progress must be between 0 and 100"
        );
        assert_eq!(
            event("node.started", json!({"node_key":""})),
            "invalid data for node.started: node_key must be 1 to 256 bytes"
        );
        assert_eq!(
            event("run.started", json!([1])),
            "invalid data for run.started: data must be a JSON object"
        );
        assert_eq!(
            event("log", json!({"level":"loud","message":"m"})),
            "invalid data for log: level must be debug, info, warning or error"
        );
        assert_eq!(
            event("node.completed", json!({"node_key":"n","duration_ms":-1})),
            "invalid data for node.completed: duration_ms must be a non-negative integer"
        );
        assert_eq!(
            frame(&json!({"type":"reset","run":"r","seq":1,"epoch":"e","state":3})),
            Err("state must be a JSON object".to_owned())
        );
        assert_eq!(
            frame(&json!({"type":"event","run":"r","seq":1,"ts":"t"})),
            Err("event must be a string".to_owned())
        );
    }

    /// With several properties out of shape, the message names the first one read, in the
    /// order the protocol lists them.
    #[test]
    fn the_first_property_out_of_shape_is_named() {
        let err = |v: Value| frame(&v).unwrap_err();
        assert_eq!(err(json!({"run": 5})), "type must be a string");
        assert_eq!(
            err(json!({"type":"event","seq":-1})),
            "event must be a string"
        );
        assert_eq!(
            err(json!({"type":"event","event":"log","seq":-1})),
            "run must be a string"
        );
        assert_eq!(
            err(json!({"type":"event","event":"log","run":"r","seq":-1})),
            "seq must be a non-negative integer"
        );
        assert_eq!(
            err(json!({"type":"welcome","heartbeat_ms":"x","expires_at":"y"})),
            "heartbeat_ms must be a non-negative integer"
        );
        assert_eq!(
            err(json!({"type":"subscribed","run":"r","seq":1,"state":3,"epoch":5})),
            "state must be a JSON object"
        );
        assert_eq!(
            err(json!({"type":"reset","run":"r","seq":1,"state":{},"epoch":5,"expires_at":-1})),
            "epoch must be a string"
        );
        let event = |name, data: Value| typed_event(name, &data).unwrap_err();
        assert_eq!(
            event("node.failed", json!({"node_key":"","error":5})),
            "invalid data for node.failed: node_key must be 1 to 256 bytes"
        );
        assert_eq!(
            event("log", json!({"level":"loud","message":5,"node_key":7})),
            "invalid data for log: level must be debug, info, warning or error"
        );
        assert_eq!(
            event(
                "run.completed",
                json!({"total_duration_ms":-1,"node_count":-1})
            ),
            "invalid data for run.completed: total_duration_ms must be a non-negative integer"
        );
    }

    /// What a newer relay may send: a reason, an error code, an event or a frame type this client
    /// does not know, or fields it does not know.
    #[test]
    fn frames_of_a_newer_relay_are_read_as_the_protocol_says() {
        assert_eq!(
            frame(&json!({"type":"unsubscribed","run":"r","reason":"archived"})),
            Ok(Frame::Unsubscribed {
                run: "r".into(),
                reason: Ended::named("archived".into())
            })
        );
        for reason in [
            EndReason::Completed,
            EndReason::Failed,
            EndReason::Cancelled,
            EndReason::Unsubscribed,
            EndReason::Forbidden,
        ] {
            assert_eq!(
                frame(&json!({"type":"unsubscribed","run":"r","reason":reason.as_str()})),
                Ok(Frame::Unsubscribed {
                    run: "r".into(),
                    reason: reason.into()
                })
            );
        }
        assert_eq!(
            frame(&json!({"type":"error","code":"quota_exceeded","message":"m","run":"r"})),
            Ok(Frame::Error {
                code: "quota_exceeded".into(),
                message: "m".into(),
                run: Some("r".into())
            })
        );
        assert_eq!(
            frame(&json!({"type":"error","code":"broker_unavailable"})),
            Ok(Frame::Error {
                code: "broker_unavailable".into(),
                message: String::new(),
                run: None
            })
        );
        assert_eq!(
            frame(&json!({"type":"presence","run":"r","who":["a"]})),
            Ok(Frame::Other)
        );
        assert_eq!(
            frame(
                &json!({"type":"welcome","heartbeat_ms":25000,"expires_at":9,"protocol":2,"region":"eu"})
            ),
            Ok(Frame::Welcome {
                heartbeat_ms: 25_000,
                expires_at: 9
            })
        );
        let Ok(Frame::Event(e)) = frame(
            &json!({"type":"event","run":"r","seq":4,"event":"run.paused","ts":"t","data":{"by":"u"},"trace":"x"}),
        ) else {
            panic!()
        };
        assert_eq!((e.seq, e.name.as_str()), (4, "run.paused"));
        assert_eq!(
            e.typed,
            Ok(RunEvent::Other {
                name: "run.paused".into()
            })
        );
        // Data that does not fit a known name is reported with the frame, not instead of it.
        let Ok(Frame::Event(e)) = frame(
            &json!({"type":"event","run":"r","seq":2,"event":"node.failed","ts":"t","data":{"node_key":"n"}}),
        ) else {
            panic!()
        };
        assert_eq!(
            e.typed,
            Err("invalid data for node.failed: error must be a string".into())
        );
    }

    /// A snapshot reads back as the state the protocol serialized, with unknown statuses of nodes
    /// read as pending and the node list bounded.
    #[test]
    fn states_read_back_as_the_protocol_wrote_them() {
        let mut state = runwire_protocol::RunState::default();
        let events = [
            ("run.started", json!({"workflow":"etl","node_count":2})),
            ("node.started", json!({"node_key":"a"})),
            (
                "node.completed",
                json!({"node_key":"a","duration_ms":7,"output_summary":{"rows":[1,2]}}),
            ),
            ("node.failed", json!({"node_key":"b","error":"x"})),
            ("log", json!({"level":"warning","message":"m"})),
            ("run.failed", json!({"error":"boom","node_key":"b"})),
        ];
        for (i, (name, data)) in events.iter().enumerate() {
            let e = runwire_protocol::RunEvent::parse(name, data).unwrap();
            state.apply(i as u64 + 1, "2026-01-01T00:00:00.000Z", &e);
        }
        let back = super::state(&serde_json::to_value(&state).unwrap()).unwrap();
        assert_eq!(back.map_opaque(opaque), state);

        let nodes: Vec<Value> = (0..MAX_NODES + 5)
            .map(|i| json!({"key": i.to_string(), "status": "resting"}))
            .collect();
        let s =
            super::state(&json!({"status":"running","nodes":nodes,"nodes_truncated":1})).unwrap();
        assert_eq!(s.nodes.len(), MAX_NODES);
        assert!(s.nodes.iter().all(|n| n.status == NodeStatus::Pending));
        assert!(s.nodes_truncated);
        assert_eq!(s.status, RunStatus::Running);
    }

    #[test]
    fn values_read_with_javascript_semantics() {
        assert!(json!({"a":1}).field(Field::Run).is_absent());
        assert!(json!(null).field(Field::Run).is_absent());
        assert!(json!([1]).field(Field::Run).is_absent());
        for (v, truthy) in [
            (json!(null), false),
            (json!(false), false),
            (json!(0), false),
            (json!(""), false),
            (json!(true), true),
            (json!(2), true),
            (json!("x"), true),
            (json!([]), true),
            (json!({}), true),
        ] {
            assert_eq!(v.is_truthy(), truthy, "{v}");
        }
        assert!(!json!([1]).is_plain_object());
    }
}
