//! Frames and states as JS objects: frames are parsed by the browser's `JSON.parse` and read
//! field by field, states are built as plain objects. Keeping JSON parsing and printing out of
//! the `.wasm` keeps it small, and the parsed frame object is the very object `onEvent` receives.
//!
//! Frames are read by the rules of [`crate::decode`], which native tests run on `serde_json`
//! values; this module gives them JS values to read.

use alloc::borrow::ToOwned;
use alloc::string::String;
use alloc::vec::Vec;
use runwire_protocol::{JsonText, NodeStatus, RunStatus};

use crate::{NodeState, RunEvent, RunState};
use wasm_bindgen::prelude::*;

use crate::decode::{Field, Json};
use crate::wire::Frame;

// One small getter and setter, by key index, instead of a generated accessor per property: the
// names live once in the JS table, and the `.wasm` imports four functions rather than fifty.
#[wasm_bindgen(
    inline_js = "const K = 'type run seq event ts data state epoch reason code message heartbeat_ms expires_at workflow node_count progress current_node total_duration_ms result error node_key duration_ms output_summary level status nodes nodes_truncated key started_at finished_at failed_node cancel_reason log_count warning_count error_count previous runs url token minReconnectDelayMs maxReconnectDelayMs maxReconnectAttempts transport debug stateEvery onEvent onOtherEvent onState onEnd since'.split(' ');
export function get(o, k) { return o?.[K[k]]; }
export function str(o, k) { const v = o?.[K[k]]; if (typeof v == 'string') return v; }
export function num(o, k) { const v = o?.[K[k]]; if (typeof v == 'number') return v; }
export function absent(o, k) { return o?.[K[k]] == null; }
export function option(o, k) { try { return o[K[k]]; } catch {} }
export function set(o, k, v) { o[K[k]] = v; }
export function must(k, rule) { return K[k] + rule; }
export function call1(f, a) { try { f(a); } catch {} }
export function call2(f, a, b) { try { f(a, b); } catch {} }"
)]
extern "C" {
    /// Any JS value (a parsed frame, its data, a state), read and written by [`Field`]; reading a
    /// property of `undefined` or `null` gives `undefined`.
    #[derive(Debug)]
    pub type Obj;

    #[wasm_bindgen(js_name = get)]
    fn get_key(o: &Obj, k: u32) -> JsValue;
    #[wasm_bindgen(js_name = str)]
    fn get_str(o: &JsValue, k: u32) -> Option<String>;
    #[wasm_bindgen(js_name = num)]
    fn get_num(o: &JsValue, k: u32) -> Option<f64>;
    #[wasm_bindgen(js_name = absent)]
    fn is_absent_key(o: &JsValue, k: u32) -> bool;
    #[wasm_bindgen(js_name = option)]
    fn get_option(o: &JsValue, k: u32) -> JsValue;
    #[wasm_bindgen(js_name = must)]
    fn must_text(k: u32, rule: &str) -> String;
    /// Calls `f(a)`; an exception it throws is its own.
    pub fn call1(f: &js_sys::Function, a: &JsValue);
    /// Calls `f(a, b)`, as [`call1`].
    pub fn call2(f: &js_sys::Function, a: &JsValue, b: &JsValue);
    #[wasm_bindgen(js_name = set)]
    fn set_value(o: &Obj, k: u32, v: &JsValue);
    #[wasm_bindgen(js_name = set)]
    fn set_str(o: &Obj, k: u32, v: &str);
    #[wasm_bindgen(js_name = set)]
    fn set_num(o: &Obj, k: u32, v: f64);
}

/// Property `k` of any JS value, as `Reflect.get` reads it from an object, with `undefined` for
/// anything else and when reading throws (a getter's exception): for the app's options, whose
/// values may be anything, and exceptions.
pub fn option(v: &JsValue, k: Field) -> JsValue {
    get_option(v, k as u32)
}

/// A new empty object.
pub fn object() -> Obj {
    js_sys::Object::new().unchecked_into()
}

impl Obj {
    /// Sets property `k` to a string, if there is one. Not inlined: one call per optional
    /// property is less code than a branch around each setter.
    #[inline(never)]
    pub fn put_str(&self, k: Field, v: &Option<String>) {
        if let Some(v) = v {
            self.set_str(k, v);
        }
    }
    /// Sets property `k` to a number, if there is one (not inlined, as [`Obj::put_str`]).
    #[inline(never)]
    pub fn put_num(&self, k: Field, v: Option<f64>) {
        if let Some(v) = v {
            self.set_num(k, v);
        }
    }
    /// Sets property `k`.
    pub fn set(&self, k: Field, v: &JsValue) {
        set_value(self, k as u32, v);
    }
    /// Sets property `k` to a string.
    pub fn set_str(&self, k: Field, v: &str) {
        set_str(self, k as u32, v);
    }
    /// Sets property `k` to a number.
    pub fn set_num(&self, k: Field, v: f64) {
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
    json_parse(text).map_err(|e| describe(&e))
}

/// A JS exception as text.
pub fn describe(e: &JsValue) -> String {
    if let Some(s) = e.as_string() {
        return s;
    }
    option(e, Field::Message)
        .as_string()
        .unwrap_or_else(|| "unknown error".to_owned())
}

/// JS values read by the client's decoding rules ([`crate::decode`]).
impl Json for JsValue {
    fn field(&self, k: Field) -> Self {
        get_key(self.unchecked_ref(), k as u32)
    }

    fn str_field(&self, k: Field) -> Option<String> {
        get_str(self, k as u32)
    }

    fn num_field(&self, k: Field) -> Option<f64> {
        get_num(self, k as u32)
    }

    fn absent_field(&self, k: Field) -> bool {
        is_absent_key(self, k as u32)
    }

    fn must(k: Field, rule: &str) -> String {
        must_text(k as u32, rule)
    }

    fn is_absent(&self) -> bool {
        self.is_null_or_undefined()
    }

    fn is_plain_object(&self) -> bool {
        self.is_object() && !is_array(self)
    }

    fn as_string(&self) -> Option<String> {
        JsValue::as_string(self)
    }

    fn as_f64(&self) -> Option<f64> {
        JsValue::as_f64(self)
    }

    fn is_truthy(&self) -> bool {
        JsValue::is_truthy(self)
    }

    fn array_len(&self) -> Option<usize> {
        is_array(self).then(|| self.unchecked_ref::<js_sys::Array>().length() as usize)
    }

    fn item(&self, i: usize) -> Self {
        self.unchecked_ref::<js_sys::Array>().get(i as u32)
    }

    fn json_text(&self) -> Option<String> {
        // Values come from `JSON.parse`, so `JSON.stringify` cannot fail on them.
        json_stringify(self).ok()?.as_string()
    }
}

/// Decodes a frame object from `JSON.parse`.
pub fn decode_frame(v: &JsValue) -> Result<Frame, String> {
    crate::decode::frame(v)
}

/// Checks `data` against the shape of event `name` (see `RunEvent::parse`).
pub fn typed_event(name: &str, data: &JsValue) -> Result<RunEvent, String> {
    crate::decode::typed_event(name, data)
}

/// A run state from its JSON object (a `subscribed`/`reset` snapshot).
pub fn state_from_js(v: &JsValue) -> Result<RunState, String> {
    crate::decode::state(v)
}

/// The JS value of an opaque value kept as its JSON text (see [`Json::json_text`]).
fn opaque_to_js(v: &JsonText) -> JsValue {
    json_parse(&JsValue::from_str(&v.0)).unwrap_or(JsValue::NULL)
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
    let no = object();
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
    no.put_num(Field::Progress, n.progress);
    no.put_str(Field::StartedAt, &n.started_at);
    no.put_str(Field::FinishedAt, &n.finished_at);
    no.put_num(Field::DurationMs, n.duration_ms.map(|v| v as f64));
    no.put_str(Field::Error, &n.error);
    if let Some(v) = &n.output_summary {
        no.set(Field::OutputSummary, &opaque_to_js(v));
    }
    no.into()
}

fn state_object(state: &RunState, nodes: &js_sys::Array) -> JsValue {
    let o = object();
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
    o.put_str(Field::Workflow, &state.workflow);
    o.put_num(Field::NodeCount, state.node_count.map(f64::from));
    o.set_num(Field::Progress, state.progress);
    o.put_str(Field::CurrentNode, &state.current_node);
    o.set(Field::Nodes, nodes);
    if state.nodes_truncated {
        o.set(Field::NodesTruncated, &JsValue::from_bool(true));
    }
    o.put_str(Field::StartedAt, &state.started_at);
    o.put_str(Field::FinishedAt, &state.finished_at);
    o.put_num(Field::DurationMs, state.duration_ms.map(|v| v as f64));
    o.put_str(Field::Error, &state.error);
    o.put_str(Field::FailedNode, &state.failed_node);
    o.put_str(Field::CancelReason, &state.cancel_reason);
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
    use std::vec::Vec;

    use runwire_protocol::{JsonText, NodeStatus};

    use crate::NodeState;
    use crate::decode::Field;

    /// Any field that differs makes a node a new one (its object is rebuilt for `onState`).
    #[test]
    fn nodes_differ_by_any_field() {
        let a = NodeState {
            key: "a".into(),
            output_summary: Some(JsonText(r#"{"rows":1}"#.into())),
            ..NodeState::default()
        };
        assert!(a == a.clone());
        let changes: [fn(&mut NodeState); 8] = [
            |n| n.key = "b".into(),
            |n| n.status = NodeStatus::Running,
            |n| n.progress = Some(5.0),
            |n| n.started_at = Some("t".into()),
            |n| n.finished_at = Some("t".into()),
            |n| n.duration_ms = Some(1),
            |n| n.error = Some("e".into()),
            |n| n.output_summary = Some(JsonText(r#"{"rows":2}"#.into())),
        ];
        for (i, change) in changes.into_iter().enumerate() {
            let mut b = a.clone();
            change(&mut b);
            assert!(a != b, "change {i}");
        }
    }

    /// The JS key table lists the names of `Field`'s variants, in order (an index is its key).
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
        let fields: Vec<&str> = Field::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(table, fields);
        for (i, f) in Field::ALL.into_iter().enumerate() {
            assert_eq!(f as usize, i, "{f:?}");
        }
    }
}
