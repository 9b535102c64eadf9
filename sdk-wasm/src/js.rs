//! Frames and states as JS objects: frames are parsed by the browser's `JSON.parse` and read
//! field by field, states are built as plain objects. Keeping JSON parsing and printing out of
//! the `.wasm` keeps it small, and the parsed frame object is the very object `onEvent` receives.
//!
//! Event data is checked against its name's shape with the same rules as
//! `runwire_protocol::RunEvent::parse` (the browser test suite compares the two on a table).

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;
use runwire_protocol::event::{
    LogLevel, NodeCompleted, NodeFailed, NodeProgress, NodeSkipped, NodeStarted, RunCancelled,
    RunCompleted, RunFailed, RunProgress, RunStarted,
};
use runwire_protocol::{NodeState, NodeStatus, RunEvent, RunState, RunStatus, is_valid_event_name};
use serde_json::Value;
use wasm_bindgen::prelude::*;

use crate::wire::{Ended, EventFrame, Frame};

/// The property names read and written, in the order of the key table in the JS helpers below.
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
enum Field {
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
}

// One small getter and setter, by key index, instead of a generated accessor per property: the
// names live once in the JS table, and the `.wasm` imports four functions rather than fifty.
#[wasm_bindgen(
    inline_js = "const K = 'type run seq event ts data state epoch reason code message heartbeat_ms expires_at workflow node_count progress current_node total_duration_ms result error node_key duration_ms output_summary level status nodes nodes_truncated key started_at finished_at failed_node cancel_reason log_count warning_count error_count'.split(' ');
export function get(o, k) { return o[K[k]]; }
export function set(o, k, v) { o[K[k]] = v; }"
)]
extern "C" {
    /// Any JS object (a parsed frame, its data, a state), read and written by [`Field`].
    #[derive(Debug)]
    pub type Obj;

    #[wasm_bindgen(js_name = get)]
    fn get_key(o: &Obj, k: u32) -> JsValue;
    #[wasm_bindgen(js_name = set)]
    fn set_value(o: &Obj, k: u32, v: &JsValue);
    #[wasm_bindgen(js_name = set)]
    fn set_str(o: &Obj, k: u32, v: &str);
    #[wasm_bindgen(js_name = set)]
    fn set_num(o: &Obj, k: u32, v: f64);
}

impl Obj {
    fn get(&self, k: Field) -> JsValue {
        get_key(self, k as u32)
    }
    fn set(&self, k: Field, v: &JsValue) {
        set_value(self, k as u32, v);
    }
    fn set_str(&self, k: Field, v: &str) {
        set_str(self, k as u32, v);
    }
    fn set_num(&self, k: Field, v: f64) {
        set_num(self, k as u32, v);
    }
}

#[wasm_bindgen]
extern "C" {
    #[wasm_bindgen(js_namespace = JSON, js_name = parse, catch)]
    fn json_parse(text: &JsValue) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_namespace = JSON, js_name = stringify, catch)]
    fn json_stringify(v: &JsValue) -> Result<JsValue, JsValue>;
    #[wasm_bindgen(js_namespace = Array, js_name = isArray)]
    fn is_array(v: &JsValue) -> bool;
}

/// Parses JSON text held in a JS string.
pub fn parse(text: &JsValue) -> Result<JsValue, String> {
    json_parse(text).map_err(|e| crate::driver::describe(&e))
}

fn obj(v: &JsValue) -> &Obj {
    v.unchecked_ref()
}

fn is_plain_object(v: &JsValue) -> bool {
    v.is_object() && !is_array(v)
}

fn string(v: JsValue, what: &str) -> Result<String, String> {
    v.as_string()
        .ok_or_else(|| [what, " must be a string"].concat())
}

fn opt_string(v: JsValue, what: &str) -> Result<Option<String>, String> {
    if v.is_undefined() || v.is_null() {
        Ok(None)
    } else {
        string(v, what).map(Some)
    }
}

/// A non-negative integer no larger than `max`.
fn uint(v: &JsValue, what: &str, max: f64) -> Result<u64, String> {
    match v.as_f64() {
        Some(n) if n >= 0.0 && n % 1.0 == 0.0 && n <= max => Ok(n as u64),
        _ => Err([what, " must be a non-negative integer"].concat()),
    }
}

fn opt_uint(v: JsValue, what: &str, max: f64) -> Result<Option<u64>, String> {
    if v.is_undefined() || v.is_null() {
        Ok(None)
    } else {
        uint(&v, what, max).map(Some)
    }
}

const U32: f64 = u32::MAX as f64;
const U64: f64 = 18_446_744_073_709_551_615.0;

fn percent(v: JsValue, what: &str) -> Result<f64, String> {
    match v.as_f64() {
        Some(p) if (0.0..=100.0).contains(&p) => Ok(p),
        Some(_) => Err([what, " must be between 0 and 100"].concat()),
        None => Err([what, " must be a number"].concat()),
    }
}

fn node_key(d: &Obj) -> Result<String, String> {
    let key = string(d.get(Field::NodeKey), "node_key")?;
    if key.is_empty() || key.len() > runwire_protocol::event::MAX_NODE_KEY_LEN {
        return Err("node_key must be 1 to 256 bytes".to_owned());
    }
    Ok(key)
}

/// An opaque JSON value (a run's `result`, a node's `output_summary`), kept as its JSON text in a
/// `Value::String`: the fold only moves these values, so they are never turned into a tree inside
/// the `.wasm` (no map or number code ships for them). [`opaque_to_js`] parses the text back.
fn opt_value(v: JsValue) -> Option<Value> {
    if v.is_undefined() || v.is_null() {
        return None;
    }
    // Values come from `JSON.parse`, so `JSON.stringify` cannot fail on them.
    json_stringify(&v).ok()?.as_string().map(Value::String)
}

/// The JS value of an opaque value made by [`opt_value`].
fn opaque_to_js(v: &Value) -> JsValue {
    match v {
        Value::String(text) => json_parse(&JsValue::from_str(text)).unwrap_or(JsValue::NULL),
        _ => JsValue::NULL,
    }
}

/// Checks `data` against the shape of event `name` (see `RunEvent::parse`).
pub fn typed_event(name: &str, data: &JsValue) -> Result<RunEvent, String> {
    typed_event_inner(name, data).map_err(|e| {
        if e.starts_with("invalid") {
            e
        } else {
            ["invalid data for ", name, ": ", &e].concat()
        }
    })
}

fn typed_event_inner(name: &str, data: &JsValue) -> Result<RunEvent, String> {
    if !is_valid_event_name(name) {
        return Err(["invalid event name \"", name, "\""].concat());
    }
    let empty;
    let data = if data.is_undefined() || data.is_null() {
        empty = JsValue::from(js_sys::Object::new());
        &empty
    } else {
        data
    };
    let known = runwire_protocol::event::KNOWN_EVENTS.contains(&name);
    if known && !is_plain_object(data) {
        return Err(["invalid data for ", name, ": data must be a JSON object"].concat());
    }
    let d = obj(data);
    let typed = match name {
        "run.started" => RunEvent::RunStarted(RunStarted {
            workflow: opt_string(d.get(Field::Workflow), "workflow")?,
            node_count: opt_uint(d.get(Field::NodeCount), "node_count", U32)?.map(|n| n as u32),
        }),
        "run.progress" => RunEvent::RunProgress(RunProgress {
            progress: percent(d.get(Field::Progress), "progress")?,
            current_node: opt_string(d.get(Field::CurrentNode), "current_node")?,
        }),
        "run.completed" => RunEvent::RunCompleted(RunCompleted {
            total_duration_ms: opt_uint(d.get(Field::TotalDurationMs), "total_duration_ms", U64)?,
            node_count: opt_uint(d.get(Field::NodeCount), "node_count", U32)?.map(|n| n as u32),
            result: opt_value(d.get(Field::Result)),
        }),
        "run.failed" => RunEvent::RunFailed(RunFailed {
            error: string(d.get(Field::Error), "error")?,
            node_key: opt_string(d.get(Field::NodeKey), "node_key")?,
        }),
        "run.cancelled" => RunEvent::RunCancelled(RunCancelled {
            reason: opt_string(d.get(Field::Reason), "reason")?,
        }),
        "node.started" => RunEvent::NodeStarted(NodeStarted {
            node_key: node_key(d)?,
        }),
        "node.progress" => RunEvent::NodeProgress(NodeProgress {
            node_key: node_key(d)?,
            progress: percent(d.get(Field::Progress), "progress")?,
        }),
        "node.completed" => RunEvent::NodeCompleted(NodeCompleted {
            node_key: node_key(d)?,
            duration_ms: opt_uint(d.get(Field::DurationMs), "duration_ms", U64)?,
            output_summary: opt_value(d.get(Field::OutputSummary)),
        }),
        "node.failed" => RunEvent::NodeFailed(NodeFailed {
            node_key: node_key(d)?,
            error: string(d.get(Field::Error), "error")?,
        }),
        "node.skipped" => RunEvent::NodeSkipped(NodeSkipped {
            node_key: node_key(d)?,
            reason: opt_string(d.get(Field::Reason), "reason")?,
        }),
        "log" => RunEvent::Log(runwire_protocol::event::Log {
            level: match d.get(Field::Level).as_string().as_deref() {
                Some("debug") => LogLevel::Debug,
                Some("info") => LogLevel::Info,
                Some("warning" | "warn") => LogLevel::Warning,
                Some("error") => LogLevel::Error,
                _ => {
                    return Err(
                        "invalid data for log: level must be debug, info, warning or error"
                            .to_owned(),
                    );
                }
            },
            message: string(d.get(Field::Message), "message")?,
            node_key: opt_string(d.get(Field::NodeKey), "node_key")?,
            // Not part of the fold; the app reads it from the event object.
            metadata: None,
        }),
        _ => RunEvent::Other {
            name: name.to_owned(),
        },
    };
    Ok(typed)
}

/// Decodes a frame object from `JSON.parse`, by the rules of [`crate::wire::decode_json`].
pub fn decode_frame(v: &JsValue) -> Result<Frame, String> {
    if !is_plain_object(v) {
        return Err("frame is not a JSON object".to_owned());
    }
    let f = obj(v);
    let ty = string(f.get(Field::Type), "type")?;
    let run = || string(f.get(Field::Run), "run");
    let frame = match ty.as_str() {
        "event" => {
            let name = string(f.get(Field::Event), "event")?;
            Frame::Event(EventFrame {
                run: run()?,
                seq: uint(&f.get(Field::Seq), "seq", U64)?,
                typed: typed_event(&name, &f.get(Field::Data)),
                name,
                ts: string(f.get(Field::Ts), "ts")?,
            })
        }
        "welcome" => Frame::Welcome {
            heartbeat_ms: uint(&f.get(Field::HeartbeatMs), "heartbeat_ms", U64)?,
            expires_at: uint(&f.get(Field::ExpiresAt), "expires_at", U64)?,
        },
        "subscribed" | "reset" => {
            let run = run()?;
            let seq = uint(&f.get(Field::Seq), "seq", U64)?;
            let state = state_from_js(&f.get(Field::State))?;
            let epoch = string(f.get(Field::Epoch), "epoch")?;
            let expires_at = opt_uint(f.get(Field::ExpiresAt), "expires_at", U64)?;
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
            run: run()?,
            reason: Ended::parse(&string(f.get(Field::Reason), "reason")?),
        },
        "error" => Frame::Error {
            code: string(f.get(Field::Code), "code")?,
            message: f.get(Field::Message).as_string().unwrap_or_default(),
            run: opt_string(f.get(Field::Run), "run")?,
        },
        "pong" => Frame::Pong,
        _ => Frame::Other,
    };
    Ok(frame)
}

fn opt_ts(v: JsValue) -> Option<String> {
    v.as_string()
}

/// A run state from its JSON object (a `subscribed`/`reset` snapshot).
pub fn state_from_js(v: &JsValue) -> Result<RunState, String> {
    if !is_plain_object(v) {
        return Err("state must be a JSON object".to_owned());
    }
    let s = obj(v);
    let status = match s.get(Field::Status).as_string().as_deref() {
        Some("pending") | None => RunStatus::Pending,
        Some("running") => RunStatus::Running,
        Some("completed") => RunStatus::Completed,
        Some("failed") => RunStatus::Failed,
        Some("cancelled") => RunStatus::Cancelled,
        Some(other) => return Err(["unknown run status \"", other, "\""].concat()),
    };
    let mut nodes = Vec::new();
    let list = s.get(Field::Nodes);
    if is_array(&list) {
        let list: js_sys::Array = list.unchecked_into();
        for n in list.iter().take(runwire_protocol::state::MAX_NODES) {
            let o = obj(&n);
            nodes.push(NodeState {
                key: o.get(Field::Key).as_string().unwrap_or_default(),
                status: match o.get(Field::Status).as_string().as_deref() {
                    Some("running") => NodeStatus::Running,
                    Some("completed") => NodeStatus::Completed,
                    Some("failed") => NodeStatus::Failed,
                    Some("skipped") => NodeStatus::Skipped,
                    _ => NodeStatus::Pending,
                },
                progress: o.get(Field::Progress).as_f64(),
                started_at: opt_ts(o.get(Field::StartedAt)),
                finished_at: opt_ts(o.get(Field::FinishedAt)),
                duration_ms: o.get(Field::DurationMs).as_f64().map(|n| n as u64),
                error: o.get(Field::Error).as_string(),
                output_summary: opt_value(o.get(Field::OutputSummary)),
            });
        }
    }
    let count = |v: JsValue| v.as_f64().map_or(0, |n| n as u64);
    Ok(RunState {
        seq: count(s.get(Field::Seq)),
        status,
        workflow: s.get(Field::Workflow).as_string(),
        node_count: s.get(Field::NodeCount).as_f64().map(|n| n as u32),
        progress: s.get(Field::Progress).as_f64().unwrap_or(0.0),
        current_node: s.get(Field::CurrentNode).as_string(),
        nodes,
        nodes_truncated: s.get(Field::NodesTruncated).is_truthy(),
        started_at: opt_ts(s.get(Field::StartedAt)),
        finished_at: opt_ts(s.get(Field::FinishedAt)),
        duration_ms: s.get(Field::DurationMs).as_f64().map(|n| n as u64),
        error: s.get(Field::Error).as_string(),
        failed_node: s.get(Field::FailedNode).as_string(),
        cancel_reason: s.get(Field::CancelReason).as_string(),
        result: opt_value(s.get(Field::Result)),
        log_count: count(s.get(Field::LogCount)),
        warning_count: count(s.get(Field::WarningCount)),
        error_count: count(s.get(Field::ErrorCount)),
    })
}

/// A run state as the plain object the app receives (the same shape as its JSON).
pub fn state_to_js(state: &RunState) -> JsValue {
    NodeObjects::default().state_to_js(state)
}

/// The node objects of the last state built, so that the next state reuses those of the nodes
/// that did not change: one event changes one node, and a run may have hundreds. Apps see
/// structural sharing, as immutable-update libraries do (an unchanged node is the same object
/// from one state to the next), which is also what lets React skip re-rendering it.
#[derive(Debug, Default)]
pub struct NodeObjects {
    nodes: Vec<NodeState>,
    objects: Vec<JsValue>,
}

impl NodeObjects {
    /// `state` as the plain object the app receives, reusing unchanged node objects.
    pub fn state_to_js(&mut self, state: &RunState) -> JsValue {
        let nodes = js_sys::Array::new();
        for (i, n) in state.nodes.iter().enumerate() {
            if self.nodes.get(i) != Some(n) {
                let o = node_to_js(n);
                if i < self.nodes.len() {
                    self.nodes[i] = n.clone();
                    self.objects[i] = o;
                } else {
                    self.nodes.push(n.clone());
                    self.objects.push(o);
                }
            }
            nodes.push(&self.objects[i]);
        }
        self.nodes.truncate(state.nodes.len());
        self.objects.truncate(state.nodes.len());
        state_object(state, &nodes)
    }
}

fn node_to_js(n: &NodeState) -> JsValue {
    let no: Obj = js_sys::Object::new().unchecked_into();
    no.set_str(Field::Key, &n.key);
    no.set_str(
        Field::Status,
        match n.status {
            NodeStatus::Pending => "pending",
            NodeStatus::Running => "running",
            NodeStatus::Completed => "completed",
            NodeStatus::Failed => "failed",
            NodeStatus::Skipped => "skipped",
        },
    );
    if let Some(p) = n.progress {
        no.set_num(Field::Progress, p);
    }
    if let Some(t) = &n.started_at {
        no.set_str(Field::StartedAt, t);
    }
    if let Some(t) = &n.finished_at {
        no.set_str(Field::FinishedAt, t);
    }
    if let Some(d) = n.duration_ms {
        no.set_num(Field::DurationMs, d as f64);
    }
    if let Some(e) = &n.error {
        no.set_str(Field::Error, e);
    }
    if let Some(v) = &n.output_summary {
        no.set(Field::OutputSummary, &opaque_to_js(v));
    }
    no.into()
}

fn state_object(state: &RunState, nodes: &js_sys::Array) -> JsValue {
    let o: Obj = js_sys::Object::new().unchecked_into();
    o.set_num(Field::Seq, state.seq as f64);
    o.set_str(
        Field::Status,
        match state.status {
            RunStatus::Pending => "pending",
            RunStatus::Running => "running",
            RunStatus::Completed => "completed",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        },
    );
    if let Some(w) = &state.workflow {
        o.set_str(Field::Workflow, w);
    }
    if let Some(n) = state.node_count {
        o.set_num(Field::NodeCount, f64::from(n));
    }
    o.set_num(Field::Progress, state.progress);
    if let Some(c) = &state.current_node {
        o.set_str(Field::CurrentNode, c);
    }
    o.set(Field::Nodes, nodes);
    if state.nodes_truncated {
        o.set(Field::NodesTruncated, &JsValue::from_bool(true));
    }
    if let Some(t) = &state.started_at {
        o.set_str(Field::StartedAt, t);
    }
    if let Some(t) = &state.finished_at {
        o.set_str(Field::FinishedAt, t);
    }
    if let Some(d) = state.duration_ms {
        o.set_num(Field::DurationMs, d as f64);
    }
    if let Some(e) = &state.error {
        o.set_str(Field::Error, e);
    }
    if let Some(n) = &state.failed_node {
        o.set_str(Field::FailedNode, n);
    }
    if let Some(r) = &state.cancel_reason {
        o.set_str(Field::CancelReason, r);
    }
    if let Some(r) = &state.result {
        o.set(Field::Result, &opaque_to_js(r));
    }
    o.set_num(Field::LogCount, state.log_count as f64);
    o.set_num(Field::WarningCount, state.warning_count as f64);
    o.set_num(Field::ErrorCount, state.error_count as f64);
    o.into()
}

#[cfg(test)]
mod tests {
    use std::string::String;
    use std::vec::Vec;

    /// The JS key table lists `Field`'s variants, in the same order (a variant's index is its key).
    #[test]
    fn the_js_key_table_matches_field() {
        let src = include_str!("js.rs");
        let table: Vec<&str> = src
            .split("const K = '")
            .nth(1)
            .and_then(|rest| rest.split('\'').next())
            .expect("the key table")
            .split(' ')
            .collect();
        let variants: Vec<String> = src
            .split("enum Field {")
            .nth(1)
            .and_then(|rest| rest.split('}').next())
            .expect("enum Field")
            .split(',')
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .map(|v| {
                let mut snake = String::new();
                for (i, c) in v.chars().enumerate() {
                    if c.is_ascii_uppercase() && i > 0 {
                        snake.push('_');
                    }
                    snake.push(c.to_ascii_lowercase());
                }
                snake
            })
            .collect();
        assert_eq!(table, variants);
    }
}
