//! [`RunState`]: a run's current snapshot, the fold of its events.
//!
//! The relay folds every accepted event, so a late joiner gets the snapshot instead of the whole
//! history; the browser SDK runs the same fold over the events it receives, so both sides always
//! agree on what a run looks like.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::{LogLevel, RunEvent};

/// Most nodes a [`RunState`] tracks. Events for further node keys still flow to subscribers but
/// are not folded into the snapshot, and [`RunState::nodes_truncated`] says so. This bounds the
/// snapshot a publisher can make the relay hold and send to every late joiner.
pub const MAX_NODES: usize = 2048;

/// Longest text a [`RunState`] keeps at the run level (`workflow`, `current_node`, `error`,
/// `failed_node`, `cancel_reason`), in bytes. Longer text is cut at a character boundary and ends
/// with [`TRUNCATED_TEXT`], the whole within this many bytes.
pub const MAX_TEXT: usize = 1024;

/// Largest `result` a [`RunState`] keeps, as compact JSON bytes. A larger one is replaced by
/// [`truncated_marker`].
pub const MAX_RESULT: usize = 64 * 1024;

/// Largest `error` or `output_summary` a node keeps: the node that appeared `n`-th (1-based) keeps
/// at most `min(MAX_NODE_VALUE, NODE_VALUES_BUDGET / n)` bytes of each (text cut like
/// [`MAX_TEXT`], JSON replaced by [`truncated_marker`]). The first nodes keep 4 KiB each, the
/// 100th 327 bytes; the sum over [`MAX_NODES`] nodes stays bounded (a harmonic series).
pub const MAX_NODE_VALUE: usize = 4 * 1024;

/// See [`MAX_NODE_VALUE`].
pub const NODE_VALUES_BUDGET: usize = 32 * 1024;

/// The most a [`RunState`] serializes to (compact JSON), whatever its events: what the caps on
/// every kept value and on the nodes add up to, with [`MAX_NODES`] nodes of 256-byte keys.
pub const MAX_STATE_BYTES: usize = 1536 * 1024;

/// What a cut text ends with.
pub const TRUNCATED_TEXT: &str = "…";

/// Key of the object that stands for a JSON value too large to keep: `{"$truncated":true}`.
pub const TRUNCATED_KEY: &str = "$truncated";

/// That object's JSON text.
pub const TRUNCATED_VALUE: &str = r#"{"$truncated":true}"#;

/// The value kept instead of a `result` or `output_summary` that is over its cap.
pub fn truncated_marker() -> Value {
    let mut m = serde_json::Map::new();
    m.insert(TRUNCATED_KEY.to_owned(), Value::Bool(true));
    Value::Object(m)
}

/// What [`RunState::fold`] did with an event.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Folded {
    /// Whether the event was applied (false: its seq was already folded).
    pub applied: bool,
    /// How many of its values were over their cap and kept cut or as a marker.
    pub capped: u32,
}

/// Where a run is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// No `run.started` yet.
    #[default]
    Pending,
    /// Started, not ended.
    Running,
    /// Ended with `run.completed`.
    Completed,
    /// Ended with `run.failed`.
    Failed,
    /// Ended with `run.cancelled`.
    Cancelled,
}

impl RunStatus {
    /// Whether the run has ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

/// Where a node is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeStatus {
    /// Mentioned, not started.
    #[default]
    Pending,
    /// Started, not ended.
    Running,
    /// Ended with `node.completed`.
    Completed,
    /// Ended with `node.failed`.
    Failed,
    /// Will not run (`node.skipped`); counts as done.
    Skipped,
}

/// One node of a run.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeState<V = Value> {
    /// The node's key within the workflow.
    pub key: String,
    /// Where the node is.
    pub status: NodeStatus,
    /// Last reported progress, 0 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    /// `ts` of its `node.started`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// `ts` of its `node.completed`, `node.failed` or `node.skipped`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// As reported by `node.completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// As reported by `node.failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// As reported by `node.completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_summary: Option<V>,
}

/// A run's current snapshot.
///
/// `V` holds its opaque values (`result`, `output_summary`), as in [`RunEvent`]: JSON values in
/// the relay, [`JsonText`] in the browser SDK.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunState<V = Value> {
    /// Seq of the last event folded in (0: none yet).
    pub seq: u64,
    /// Where the run is.
    pub status: RunStatus,
    /// From `run.started`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow: Option<String>,
    /// From `run.started` or `run.completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_count: Option<u32>,
    /// From `run.progress`; 100 once completed.
    pub progress: f64,
    /// From `run.progress`, else the node most recently started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_node: Option<String>,
    /// Nodes in the order they first appeared.
    #[serde(default)]
    pub nodes: Vec<NodeState<V>>,
    /// More than [`MAX_NODES`] nodes appeared; the rest are not in `nodes`.
    #[serde(default, skip_serializing_if = "core::ops::Not::not")]
    pub nodes_truncated: bool,
    /// `ts` of `run.started` (else of the first event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    /// `ts` of the terminal event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// From `run.completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// From `run.failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// From `run.failed`: the node that failed the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_node: Option<String>,
    /// From `run.cancelled`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_reason: Option<String>,
    /// From `run.completed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<V>,
    /// `log` events seen.
    pub log_count: u64,
    /// `log` events at level `warning`.
    pub warning_count: u64,
    /// `log` events at level `error`.
    pub error_count: u64,
}

impl<V> RunState<V> {
    /// The same state with its opaque values passed through `f` (from JSON values to their text,
    /// for example).
    pub fn map_opaque<W>(self, mut f: impl FnMut(V) -> W) -> RunState<W> {
        let nodes = self.nodes.into_iter().map(|n| NodeState {
            key: n.key,
            status: n.status,
            progress: n.progress,
            started_at: n.started_at,
            finished_at: n.finished_at,
            duration_ms: n.duration_ms,
            error: n.error,
            output_summary: n.output_summary.map(&mut f),
        });
        RunState {
            seq: self.seq,
            status: self.status,
            workflow: self.workflow,
            node_count: self.node_count,
            progress: self.progress,
            current_node: self.current_node,
            nodes: nodes.collect(),
            nodes_truncated: self.nodes_truncated,
            started_at: self.started_at,
            finished_at: self.finished_at,
            duration_ms: self.duration_ms,
            error: self.error,
            failed_node: self.failed_node,
            cancel_reason: self.cancel_reason,
            result: self.result.map(f),
            log_count: self.log_count,
            warning_count: self.warning_count,
            error_count: self.error_count,
        }
    }
}

impl<V: Opaque> RunState<V> {
    /// Folds one event in. Events at or below [`RunState::seq`] are ignored, so replays and
    /// duplicates are harmless; returns whether the event was applied.
    ///
    /// Once the run has ended its status is fixed: a late `node.*` event still updates its node,
    /// but cannot make the run `running` again.
    pub fn apply(&mut self, seq: u64, ts: &str, event: &RunEvent<V>) -> bool {
        self.fold(seq, ts, event).applied
    }

    /// [`RunState::apply`], also saying how many values were capped. Values are kept within the
    /// caps of [`MAX_TEXT`], [`MAX_RESULT`] and [`MAX_NODE_VALUE`], so that a state never grows
    /// past [`MAX_STATE_BYTES`]; the event itself is not changed.
    pub fn fold(&mut self, seq: u64, ts: &str, event: &RunEvent<V>) -> Folded {
        let mut capped = 0;
        let applied = self.fold_capped(seq, ts, event, &mut capped);
        Folded { applied, capped }
    }

    fn fold_capped(&mut self, seq: u64, ts: &str, event: &RunEvent<V>, capped: &mut u32) -> bool {
        if seq <= self.seq {
            return false;
        }
        self.seq = seq;
        if self.started_at.is_none() {
            self.started_at = Some(ts.to_owned());
        }
        let ended = self.status.is_terminal();
        match event {
            RunEvent::RunStarted(e) => {
                if !ended {
                    self.status = RunStatus::Running;
                }
                self.started_at = Some(ts.to_owned());
                if let Some(w) = &e.workflow {
                    self.workflow = Some(cap_text(w, MAX_TEXT, capped));
                }
                if e.node_count.is_some() {
                    self.node_count = e.node_count;
                }
            }
            RunEvent::RunProgress(e) => {
                self.mark_running();
                self.progress = e.progress;
                if let Some(n) = &e.current_node {
                    self.current_node = Some(cap_text(n, MAX_TEXT, capped));
                }
            }
            RunEvent::RunCompleted(e) => {
                self.end(RunStatus::Completed, ts);
                self.progress = 100.0;
                self.current_node = None;
                self.duration_ms = e.total_duration_ms;
                if e.node_count.is_some() {
                    self.node_count = e.node_count;
                }
                self.result = e.result.as_ref().map(|r| r.capped(MAX_RESULT, capped));
            }
            RunEvent::RunFailed(e) => {
                self.end(RunStatus::Failed, ts);
                self.error = Some(cap_text(&e.error, MAX_TEXT, capped));
                self.failed_node = e.node_key.as_ref().map(|k| cap_text(k, MAX_TEXT, capped));
            }
            RunEvent::RunCancelled(e) => {
                self.end(RunStatus::Cancelled, ts);
                self.cancel_reason = e.reason.as_ref().map(|r| cap_text(r, MAX_TEXT, capped));
            }
            RunEvent::NodeStarted(e) => {
                self.mark_running();
                if !ended {
                    self.current_node = Some(cap_text(&e.node_key, MAX_TEXT, capped));
                }
                if let Some((_, node)) = self.node_mut(&e.node_key) {
                    node.status = NodeStatus::Running;
                    node.started_at = Some(ts.to_owned());
                }
            }
            RunEvent::NodeProgress(e) => {
                self.mark_running();
                if let Some((_, node)) = self.node_mut(&e.node_key) {
                    if node.status == NodeStatus::Pending {
                        node.status = NodeStatus::Running;
                    }
                    node.progress = Some(e.progress);
                }
            }
            RunEvent::NodeCompleted(e) => {
                self.mark_running();
                if let Some((cap, node)) = self.node_mut(&e.node_key) {
                    node.status = NodeStatus::Completed;
                    node.progress = Some(100.0);
                    node.finished_at = Some(ts.to_owned());
                    node.duration_ms = e.duration_ms;
                    node.output_summary = e.output_summary.as_ref().map(|v| v.capped(cap, capped));
                }
            }
            RunEvent::NodeFailed(e) => {
                self.mark_running();
                if let Some((cap, node)) = self.node_mut(&e.node_key) {
                    node.status = NodeStatus::Failed;
                    node.finished_at = Some(ts.to_owned());
                    node.error = Some(cap_text(&e.error, cap, capped));
                }
            }
            RunEvent::NodeSkipped(e) => {
                self.mark_running();
                if let Some((_, node)) = self.node_mut(&e.node_key) {
                    node.status = NodeStatus::Skipped;
                    node.finished_at = Some(ts.to_owned());
                }
            }
            RunEvent::Log(e) => {
                self.log_count += 1;
                match e.level {
                    LogLevel::Warning => self.warning_count += 1,
                    LogLevel::Error => self.error_count += 1,
                    LogLevel::Debug | LogLevel::Info => {}
                }
            }
            RunEvent::Other { .. } => {}
        }
        true
    }

    /// The node with `key`, if the state tracks it.
    pub fn node(&self, key: &str) -> Option<&NodeState<V>> {
        self.nodes.iter().find(|n| n.key == key)
    }

    fn mark_running(&mut self) {
        if self.status == RunStatus::Pending {
            self.status = RunStatus::Running;
        }
    }

    fn end(&mut self, status: RunStatus, ts: &str) {
        if !self.status.is_terminal() {
            self.status = status;
            self.finished_at = Some(ts.to_owned());
        }
    }

    /// The node with `key`, added when new, with the cap of its values (see [`MAX_NODE_VALUE`]).
    fn node_mut(&mut self, key: &str) -> Option<(usize, &mut NodeState<V>)> {
        // Most events concern a recently started node: search from the end.
        let i = match self.nodes.iter().rposition(|n| n.key == key) {
            Some(i) => i,
            None if self.nodes.len() >= MAX_NODES => {
                self.nodes_truncated = true;
                return None;
            }
            None => {
                self.nodes.push(NodeState {
                    key: key.to_owned(),
                    ..NodeState::default()
                });
                self.nodes.len() - 1
            }
        };
        let cap = MAX_NODE_VALUE.min(NODE_VALUES_BUDGET / (i + 1));
        Some((cap, &mut self.nodes[i]))
    }
}

/// `text`, or when it is longer than `cap` bytes its longest head that fits with
/// [`TRUNCATED_TEXT`] after it.
fn cap_text(text: &str, cap: usize, capped: &mut u32) -> String {
    if text.len() <= cap {
        return text.to_owned();
    }
    *capped += 1;
    let mut end = cap.saturating_sub(TRUNCATED_TEXT.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    // `get`, not indexing: `end` is a char boundary, and the browser SDK's `.wasm` then ships no
    // slicing panic (whose message formatting is most of its cost).
    let mut kept = text.get(..end).unwrap_or_default().to_owned();
    kept.push_str(TRUNCATED_TEXT);
    kept
}

/// An opaque value of an event or a state (`result`, `output_summary`, `metadata`): any JSON,
/// which the fold only caps and moves.
pub trait Opaque: Clone + Default {
    /// `self`, or the marker `{"$truncated":true}` (see [`truncated_marker`]) when its compact
    /// JSON is longer than `cap` bytes, counted in `capped`.
    fn capped(&self, cap: usize, capped: &mut u32) -> Self;
}

/// An opaque value held as its compact JSON text. The browser SDK holds values this way: the
/// fold only moves them and the page parses them, so no JSON tree code ships in its `.wasm`. The
/// text's length is the compact JSON's length the relay measures.
///
/// It serializes as the JSON value it holds (and deserializes from any JSON value), so that a
/// state holding text serializes as one holding values does.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonText(pub String);

impl Serialize for JsonText {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let value: Value = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        value.serialize(s)
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(d)?;
        serde_json::to_string(&value)
            .map(JsonText)
            .map_err(serde::de::Error::custom)
    }
}

impl Opaque for JsonText {
    fn capped(&self, cap: usize, capped: &mut u32) -> Self {
        if self.0.len() <= cap {
            return self.clone();
        }
        *capped += 1;
        Self(TRUNCATED_VALUE.to_owned())
    }
}

/// With `json-values` (the relay's build), a value is measured as `serde_json` writes it.
#[cfg(feature = "json-values")]
impl Opaque for Value {
    fn capped(&self, cap: usize, capped: &mut u32) -> Self {
        if json_len(self, cap).is_some() {
            self.clone()
        } else {
            *capped += 1;
            truncated_marker()
        }
    }
}

/// Without `json-values`, a value is held as its JSON text in a `Value::String` and measured as
/// that text (as [`JsonText`] is); the marker is text too.
#[cfg(not(feature = "json-values"))]
impl Opaque for Value {
    fn capped(&self, cap: usize, capped: &mut u32) -> Self {
        match self {
            Value::String(text) if text.len() > cap => {
                *capped += 1;
                Value::String(TRUNCATED_VALUE.to_owned())
            }
            _ => self.clone(),
        }
    }
}

/// The length of `value`'s compact JSON (as `serde_json` writes it), or `None` as soon as it is
/// known to exceed `limit`: a large value is not walked, nor serialized, to the end.
#[cfg(feature = "json-values")]
pub fn json_len(value: &Value, limit: usize) -> Option<usize> {
    fn walk(v: &Value, budget: &mut usize) -> Option<()> {
        let mut take = |n: usize| -> Option<()> {
            *budget = budget.checked_sub(n)?;
            Some(())
        };
        match v {
            Value::Null => take(4),
            Value::Bool(b) => take(if *b { 4 } else { 5 }),
            Value::Number(n) => take(alloc::format!("{n}").len()),
            Value::String(s) => take(string_len(s)),
            Value::Array(items) => {
                take(2 + items.len().saturating_sub(1))?;
                items.iter().try_for_each(|i| walk(i, budget))
            }
            Value::Object(map) => {
                take(2 + map.len().saturating_sub(1))?;
                for (k, v) in map {
                    // `"key":`
                    budget.checked_sub(string_len(k) + 1).map(|b| *budget = b)?;
                    walk(v, budget)?;
                }
                Some(())
            }
        }
    }
    let mut budget = limit;
    walk(value, &mut budget)?;
    Some(limit - budget)
}

/// A JSON string's length with its quotes and escapes.
#[cfg(feature = "json-values")]
fn string_len(s: &str) -> usize {
    2 + s
        .bytes()
        .map(|b| match b {
            b'"' | b'\\' | 0x08 | 0x0c | b'\n' | b'\r' | b'\t' => 2,
            0..=0x1f => 6,
            _ => 1,
        })
        .sum::<usize>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::{format, string::ToString, vec::Vec};
    use serde_json::json;

    fn ev(name: &str, data: Value) -> RunEvent {
        RunEvent::parse(name, &data).unwrap()
    }

    /// The marker's text, as the SDK keeps it, is the marker.
    #[test]
    fn the_truncated_marker_text_is_the_marker() {
        assert_eq!(
            serde_json::from_str::<Value>(TRUNCATED_VALUE).unwrap(),
            truncated_marker()
        );
    }

    #[test]
    fn folds_a_run() {
        let mut s = RunState::default();
        assert!(s.apply(
            1,
            "t1",
            &ev("run.started", json!({"workflow":"w","node_count":2}))
        ));
        assert_eq!(s.status, RunStatus::Running);
        s.apply(2, "t2", &ev("node.started", json!({"node_key":"a"})));
        s.apply(
            3,
            "t3",
            &ev("node.progress", json!({"node_key":"a","progress":50})),
        );
        assert_eq!(s.node("a").unwrap().progress, Some(50.0));
        assert_eq!(s.current_node.as_deref(), Some("a"));
        s.apply(
            4,
            "t4",
            &ev("node.completed", json!({"node_key":"a","duration_ms":7})),
        );
        s.apply(
            5,
            "t5",
            &ev("node.failed", json!({"node_key":"b","error":"x"})),
        );
        s.apply(
            6,
            "t6",
            &ev("log", json!({"level":"warning","message":"m"})),
        );
        s.apply(7, "t7", &ev("custom.thing", json!({})));
        s.apply(
            8,
            "t8",
            &ev(
                "run.completed",
                json!({"total_duration_ms":9,"result":{"ok":true}}),
            ),
        );
        assert_eq!(s.seq, 8);
        assert_eq!(s.status, RunStatus::Completed);
        assert_eq!(s.progress, 100.0);
        assert_eq!(s.duration_ms, Some(9));
        assert_eq!(s.result, Some(json!({"ok":true})));
        assert_eq!(s.finished_at.as_deref(), Some("t8"));
        assert_eq!((s.log_count, s.warning_count, s.error_count), (1, 1, 0));
        let keys: Vec<_> = s.nodes.iter().map(|n| n.key.as_str()).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(s.node("a").unwrap().status, NodeStatus::Completed);
        assert_eq!(s.node("a").unwrap().duration_ms, Some(7));
        assert_eq!(s.node("b").unwrap().error.as_deref(), Some("x"));
    }

    #[test]
    fn folds_a_skipped_node() {
        let mut s = RunState::default();
        s.apply(1, "t1", &ev("node.started", json!({"node_key":"a"})));
        s.apply(
            2,
            "t2",
            &ev("node.skipped", json!({"node_key":"b","reason":"branch"})),
        );
        assert_eq!(s.status, RunStatus::Running);
        let b = s.node("b").unwrap();
        assert_eq!(b.status, NodeStatus::Skipped);
        assert_eq!(b.finished_at.as_deref(), Some("t2"));
        // the node most recently started stays the current one
        assert_eq!(s.current_node.as_deref(), Some("a"));
        assert_eq!(serde_json::to_value(b).unwrap()["status"], json!("skipped"));
    }

    #[test]
    fn ignores_replays_and_keeps_terminal_status() {
        let mut s = RunState::default();
        s.apply(
            1,
            "t",
            &ev("run.failed", json!({"error":"e","node_key":"n"})),
        );
        assert!(!s.apply(1, "t", &ev("run.started", json!({}))));
        assert!(s.apply(2, "t", &ev("node.started", json!({"node_key":"late"}))));
        assert!(s.apply(3, "t", &ev("run.completed", json!({}))));
        assert_eq!(s.status, RunStatus::Failed);
        assert_eq!(s.error.as_deref(), Some("e"));
        assert_eq!(s.failed_node.as_deref(), Some("n"));
    }

    #[test]
    fn bounds_nodes() {
        let mut s = RunState::default();
        for i in 0..(MAX_NODES as u64 + 10) {
            s.apply(
                i + 1,
                "t",
                &ev("node.started", json!({ "node_key": format!("n{i}") })),
            );
        }
        assert_eq!(s.nodes.len(), MAX_NODES);
        assert!(s.nodes_truncated);
    }

    #[cfg(feature = "json-values")]
    #[test]
    fn measures_json_as_serde_json_writes_it() {
        let values = [
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(-17),
            json!(u64::MAX),
            json!(1.5),
            json!(1e300),
            json!(-0.000001),
            json!(""),
            json!("plain"),
            json!("quote \" backslash \\ newline \n tab \t bell \u{7} del \u{7f} é 😀"),
            json!([]),
            json!({}),
            json!([1, "a", null, [], {}]),
            json!({"a": 1, "b\"c": [true, {"d": "e\u{1}"}], "": ""}),
        ];
        for v in values {
            let text = serde_json::to_string(&v).unwrap();
            assert_eq!(json_len(&v, usize::MAX), Some(text.len()), "{text}");
            assert_eq!(json_len(&v, text.len()), Some(text.len()), "{text}");
            assert_eq!(json_len(&v, text.len() - 1), None, "{text}");
        }
    }

    /// Without `json-values`, a value held as its JSON text in a `Value::String` is measured as
    /// text; the marker is text too.
    #[cfg(not(feature = "json-values"))]
    #[test]
    fn caps_values_held_as_text_in_a_string() {
        let mut s = RunState::default();
        let within = Value::String(format!(
            r#"{{"note":"{}"}}"#,
            "x".repeat(MAX_NODE_VALUE - 20)
        ));
        let f = s.fold(
            1,
            "t",
            &ev(
                "node.completed",
                json!({"node_key": "a", "output_summary": within}),
            ),
        );
        assert_eq!(f.capped, 0);
        assert_eq!(s.node("a").unwrap().output_summary, Some(within));
        let big = Value::String(format!(r#"{{"all":"{}"}}"#, "x".repeat(MAX_RESULT)));
        let f = s.fold(2, "t", &ev("run.completed", json!({ "result": big })));
        assert_eq!(f.capped, 1);
        assert_eq!(
            s.result,
            Some(Value::String(r#"{"$truncated":true}"#.into()))
        );
    }

    /// Held as [`JsonText`] (the browser SDK's representation), whatever the features, a value is
    /// measured as its text; the marker is text too, and a state of text serializes as one of
    /// values does.
    #[test]
    fn caps_values_held_as_json_text() {
        fn text(v: Value) -> JsonText {
            JsonText(v.to_string())
        }
        let mut s = RunState::<JsonText>::default();
        let within = json!({"note": "x".repeat(MAX_NODE_VALUE - 20)});
        assert_eq!(within.to_string().len(), MAX_NODE_VALUE - 9);
        let e = ev(
            "node.completed",
            json!({"node_key": "a", "output_summary": within}),
        );
        let f = s.fold(1, "t", &e.map_opaque(text));
        assert_eq!(f.capped, 0);
        assert_eq!(s.node("a").unwrap().output_summary, Some(text(within)));
        let big = json!({"all": "x".repeat(MAX_RESULT)});
        let f = s.fold(
            2,
            "t",
            &ev("run.completed", json!({ "result": big })).map_opaque(text),
        );
        assert_eq!(f.capped, 1);
        assert_eq!(s.result, Some(JsonText(r#"{"$truncated":true}"#.into())));
        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["result"], json!({"$truncated": true}));
        assert_eq!(
            json["nodes"][0]["output_summary"]["note"]
                .as_str()
                .unwrap()
                .len(),
            MAX_NODE_VALUE - 20
        );
        let back: RunState<JsonText> = serde_json::from_value(json).unwrap();
        assert_eq!(back, s);
        assert!(serde_json::to_value(JsonText("{".into())).is_err());
    }

    #[cfg(feature = "json-values")]
    #[test]
    fn caps_kept_values_and_counts_them() {
        let big = "x".repeat(1 << 20);
        let mut s = RunState::default();
        let f = s.fold(
            1,
            "t",
            &ev("run.started", json!({"workflow": "é".repeat(600)})),
        );
        assert_eq!(
            f,
            Folded {
                applied: true,
                capped: 1
            }
        );
        let w = s.workflow.as_deref().unwrap();
        assert!(
            w.len() <= MAX_TEXT && w.ends_with(TRUNCATED_TEXT),
            "{}",
            w.len()
        );
        assert!(w.starts_with("éé"));
        let f = s.fold(
            2,
            "t",
            &ev(
                "node.completed",
                json!({"node_key":"a","output_summary":{"blob": big}}),
            ),
        );
        assert_eq!(f.capped, 1);
        assert_eq!(
            s.node("a").unwrap().output_summary,
            Some(truncated_marker())
        );
        // within its cap: kept as it is
        let small = json!({"rows": 3, "note": "x".repeat(MAX_NODE_VALUE - 40)});
        let f = s.fold(
            3,
            "t",
            &ev(
                "node.completed",
                json!({"node_key":"a","output_summary": small}),
            ),
        );
        assert_eq!(f.capped, 0);
        assert_eq!(s.node("a").unwrap().output_summary, Some(small));
        let f = s.fold(
            4,
            "t",
            &ev("node.failed", json!({"node_key":"b","error": big})),
        );
        assert_eq!(f.capped, 1);
        let e = s.node("b").unwrap().error.as_deref().unwrap();
        assert!(e.len() <= MAX_NODE_VALUE.min(NODE_VALUES_BUDGET / 2));
        assert!(e.ends_with(TRUNCATED_TEXT));
        let f = s.fold(
            5,
            "t",
            &ev("run.completed", json!({"result": {"all": big}})),
        );
        assert_eq!(f.capped, 1);
        assert_eq!(s.result, Some(truncated_marker()));
        assert_eq!(
            serde_json::to_string(&s.result).unwrap(),
            r#"{"$truncated":true}"#
        );
        // a replay is not applied, so nothing is capped either
        let f = s.fold(
            5,
            "t",
            &ev("run.completed", json!({"result": {"all": big}})),
        );
        assert_eq!(
            f,
            Folded {
                applied: false,
                capped: 0
            }
        );
        assert!(serde_json::to_string(&s).unwrap().len() < 16 * 1024);
    }

    #[test]
    fn later_nodes_keep_smaller_values() {
        let mut s = RunState::default();
        let caps: Vec<usize> = (1..=200u64)
            .map(|i| {
                let key = format!("n{i}");
                s.apply(
                    i,
                    "t",
                    &ev(
                        "node.failed",
                        json!({"node_key": key, "error": "e".repeat(5000)}),
                    ),
                );
                s.node(&key).unwrap().error.as_ref().unwrap().len()
            })
            .collect();
        assert_eq!(&caps[..8], &[MAX_NODE_VALUE; 8]);
        assert_eq!(caps[99], NODE_VALUES_BUDGET / 100);
        assert!(caps.windows(2).all(|w| w[0] >= w[1]));
    }

    /// The largest state any events can make: every node there may be, with the longest keys,
    /// every value just within its cap, and every run-level field set.
    #[test]
    fn no_events_make_a_state_larger_than_the_total_cap() {
        let ts = "2026-11-22T03:00:01.200Z";
        let mut s = RunState::default();
        let mut seq = 0;
        let mut next = || {
            seq += 1;
            seq
        };
        for i in 0..MAX_NODES {
            let cap = MAX_NODE_VALUE.min(NODE_VALUES_BUDGET / (i + 1));
            let key = format!("{i:0>256}");
            let summary = "s".repeat(cap - 2); // a JSON string: its quotes fill the cap
            s.apply(
                next(),
                ts,
                &ev(
                    "node.completed",
                    json!({"node_key": key,
                "duration_ms": u64::MAX, "output_summary": summary}),
                ),
            );
            s.apply(
                next(),
                ts,
                &ev(
                    "node.failed",
                    json!({"node_key": key, "error": "e".repeat(cap)}),
                ),
            );
            let n = s.nodes.last().unwrap();
            assert_eq!(
                (n.error.as_ref().unwrap().len(), n.output_summary.is_some()),
                (cap, true)
            );
        }
        let text = "t".repeat(MAX_TEXT);
        s.apply(
            next(),
            ts,
            &ev(
                "run.started",
                json!({"workflow": text, "node_count": u32::MAX}),
            ),
        );
        s.apply(
            next(),
            ts,
            &ev(
                "run.progress",
                json!({"progress": 99.99999, "current_node": text}),
            ),
        );
        s.apply(
            next(),
            ts,
            &ev(
                "run.failed",
                json!({"error": text, "node_key": "k".repeat(256)}),
            ),
        );
        s.apply(next(), ts, &ev("run.cancelled", json!({"reason": text})));
        let result = "r".repeat(MAX_RESULT - 2);
        s.apply(
            next(),
            ts,
            &ev(
                "run.completed",
                json!({"result": result,
            "total_duration_ms": u64::MAX}),
            ),
        );
        for _ in 0..3 {
            s.apply(
                next(),
                ts,
                &ev("log", json!({"level":"error","message":"m"})),
            );
        }
        s.apply(
            next(),
            ts,
            &ev("node.started", json!({"node_key": "one too many"})),
        );
        assert!(s.nodes_truncated);
        assert!(s.result.is_some() && s.cancel_reason.is_some() && s.current_node.is_none());
        let size = serde_json::to_string(&s).unwrap().len();
        assert!(size <= MAX_STATE_BYTES, "{size} > {MAX_STATE_BYTES}");
        assert!(
            size > MAX_STATE_BYTES * 3 / 4,
            "the bound is tight enough to mean something: {size}"
        );
    }

    #[test]
    fn many_large_publishes_leave_a_small_state() {
        let big = "x".repeat(1 << 20);
        let mut s = RunState::default();
        for i in 0..48u64 {
            let name = ["node.completed", "node.failed", "run.progress"][i as usize % 3];
            let data = match name {
                "node.completed" => json!({"node_key": format!("n{i}"), "output_summary": big}),
                "node.failed" => json!({"node_key": format!("n{i}"), "error": big}),
                _ => json!({"progress": 1, "current_node": big}),
            };
            assert_eq!(s.fold(i + 1, "t", &ev(name, data)).capped, 1);
        }
        let size = serde_json::to_string(&s).unwrap().len();
        assert!(size < 64 * 1024, "{size}");
    }

    #[test]
    fn serializes_compactly() {
        let v = serde_json::to_value(RunState::<Value>::default()).unwrap();
        assert_eq!(
            v,
            json!({"seq":0,"status":"pending","progress":0.0,"nodes":[],"log_count":0,"warning_count":0,"error_count":0})
        );
    }
}
