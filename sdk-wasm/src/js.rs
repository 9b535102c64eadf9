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
    LogLevel, NodeCompleted, NodeFailed, NodeProgress, NodeStarted, RunCancelled, RunCompleted,
    RunFailed, RunProgress, RunStarted,
};
use runwire_protocol::{
    EndReason, NodeState, NodeStatus, RunEvent, RunState, RunStatus, is_valid_event_name,
};
use serde_json::Value;
use wasm_bindgen::prelude::*;

use crate::wire::{EventFrame, Frame};

#[wasm_bindgen]
extern "C" {
    /// Any JS object, read and written through property getters and setters (the property names
    /// live in the JS glue, so no key strings cross into wasm).
    #[derive(Debug)]
    pub type Obj;

    #[wasm_bindgen(method, getter, js_name = type)]
    fn type_(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn run(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn seq(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn event(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn ts(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn data(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn state(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn epoch(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn reason(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn code(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn message(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn heartbeat_ms(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn expires_at(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn workflow(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn node_count(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn progress(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn current_node(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn total_duration_ms(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn result(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn error(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn node_key(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn duration_ms(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn output_summary(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn level(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn metadata(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn status(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn nodes(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn nodes_truncated(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn key(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn started_at(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn finished_at(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn failed_node(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn cancel_reason(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn log_count(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn warning_count(this: &Obj) -> JsValue;
    #[wasm_bindgen(method, getter)]
    fn error_count(this: &Obj) -> JsValue;

    #[wasm_bindgen(method, setter, js_name = seq)]
    fn set_seq(this: &Obj, v: f64);
    #[wasm_bindgen(method, setter, js_name = status)]
    fn set_status(this: &Obj, v: &str);
    #[wasm_bindgen(method, setter, js_name = workflow)]
    fn set_workflow(this: &Obj, v: &str);
    #[wasm_bindgen(method, setter, js_name = node_count)]
    fn set_node_count(this: &Obj, v: f64);
    #[wasm_bindgen(method, setter, js_name = progress)]
    fn set_progress(this: &Obj, v: f64);
    #[wasm_bindgen(method, setter, js_name = current_node)]
    fn set_current_node(this: &Obj, v: &str);
    #[wasm_bindgen(method, setter, js_name = nodes)]
    fn set_nodes(this: &Obj, v: &js_sys::Array);
    #[wasm_bindgen(method, setter, js_name = nodes_truncated)]
    fn set_nodes_truncated(this: &Obj, v: bool);
    #[wasm_bindgen(method, setter, js_name = started_at)]
    fn set_started_at(this: &Obj, v: &str);
    #[wasm_bindgen(method, setter, js_name = finished_at)]
    fn set_finished_at(this: &Obj, v: &str);
    #[wasm_bindgen(method, setter, js_name = duration_ms)]
    fn set_duration_ms(this: &Obj, v: f64);
    #[wasm_bindgen(method, setter, js_name = error)]
    fn set_error(this: &Obj, v: &str);
    #[wasm_bindgen(method, setter, js_name = failed_node)]
    fn set_failed_node(this: &Obj, v: &str);
    #[wasm_bindgen(method, setter, js_name = cancel_reason)]
    fn set_cancel_reason(this: &Obj, v: &str);
    #[wasm_bindgen(method, setter, js_name = result)]
    fn set_result(this: &Obj, v: &JsValue);
    #[wasm_bindgen(method, setter, js_name = log_count)]
    fn set_log_count(this: &Obj, v: f64);
    #[wasm_bindgen(method, setter, js_name = warning_count)]
    fn set_warning_count(this: &Obj, v: f64);
    #[wasm_bindgen(method, setter, js_name = error_count)]
    fn set_error_count(this: &Obj, v: f64);
    #[wasm_bindgen(method, setter, js_name = key)]
    fn set_key(this: &Obj, v: &str);
    #[wasm_bindgen(method, setter, js_name = output_summary)]
    fn set_output_summary(this: &Obj, v: &JsValue);

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
    let key = string(d.node_key(), "node_key")?;
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
            workflow: opt_string(d.workflow(), "workflow")?,
            node_count: opt_uint(d.node_count(), "node_count", U32)?.map(|n| n as u32),
        }),
        "run.progress" => RunEvent::RunProgress(RunProgress {
            progress: percent(d.progress(), "progress")?,
            current_node: opt_string(d.current_node(), "current_node")?,
        }),
        "run.completed" => RunEvent::RunCompleted(RunCompleted {
            total_duration_ms: opt_uint(d.total_duration_ms(), "total_duration_ms", U64)?,
            node_count: opt_uint(d.node_count(), "node_count", U32)?.map(|n| n as u32),
            result: opt_value(d.result()),
        }),
        "run.failed" => RunEvent::RunFailed(RunFailed {
            error: string(d.error(), "error")?,
            node_key: opt_string(d.node_key(), "node_key")?,
        }),
        "run.cancelled" => RunEvent::RunCancelled(RunCancelled {
            reason: opt_string(d.reason(), "reason")?,
        }),
        "node.started" => RunEvent::NodeStarted(NodeStarted {
            node_key: node_key(d)?,
        }),
        "node.progress" => RunEvent::NodeProgress(NodeProgress {
            node_key: node_key(d)?,
            progress: percent(d.progress(), "progress")?,
        }),
        "node.completed" => RunEvent::NodeCompleted(NodeCompleted {
            node_key: node_key(d)?,
            duration_ms: opt_uint(d.duration_ms(), "duration_ms", U64)?,
            output_summary: opt_value(d.output_summary()),
        }),
        "node.failed" => RunEvent::NodeFailed(NodeFailed {
            node_key: node_key(d)?,
            error: string(d.error(), "error")?,
        }),
        "log" => RunEvent::Log(runwire_protocol::event::Log {
            level: match d.level().as_string().as_deref() {
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
            message: string(d.message(), "message")?,
            node_key: opt_string(d.node_key(), "node_key")?,
            // Not part of the fold; the app reads it from the event object.
            metadata: None,
        }),
        _ => RunEvent::Other {
            name: name.to_owned(),
        },
    };
    Ok(typed)
}

/// Decodes a frame object from `JSON.parse`.
pub fn decode_frame(v: &JsValue) -> Result<Frame, String> {
    if !is_plain_object(v) {
        return Err("frame is not a JSON object".to_owned());
    }
    let f = obj(v);
    let ty = f.type_().as_string().unwrap_or_default();
    let run = || string(f.run(), "run");
    let frame = match ty.as_str() {
        "event" => {
            let name = string(f.event(), "event")?;
            Frame::Event(EventFrame {
                run: run()?,
                seq: uint(&f.seq(), "seq", U64)?,
                typed: typed_event(&name, &f.data()),
                name,
                ts: string(f.ts(), "ts")?,
            })
        }
        "welcome" => Frame::Welcome {
            heartbeat_ms: uint(&f.heartbeat_ms(), "heartbeat_ms", U64)?,
            expires_at: uint(&f.expires_at(), "expires_at", U64)?,
        },
        "subscribed" | "reset" => {
            let run = run()?;
            let seq = uint(&f.seq(), "seq", U64)?;
            let state = state_from_js(&f.state())?;
            let epoch = string(f.epoch(), "epoch")?;
            if ty == "reset" {
                Frame::Reset {
                    run,
                    seq,
                    state,
                    epoch,
                }
            } else {
                Frame::Subscribed {
                    run,
                    seq,
                    state,
                    epoch,
                }
            }
        }
        "unsubscribed" => Frame::Unsubscribed {
            run: run()?,
            reason: match f.reason().as_string().as_deref() {
                Some("completed") => EndReason::Completed,
                Some("failed") => EndReason::Failed,
                Some("cancelled") => EndReason::Cancelled,
                Some("unsubscribed") => EndReason::Unsubscribed,
                Some("forbidden") => EndReason::Forbidden,
                _ => return Err("unsubscribed: unknown reason".to_owned()),
            },
        },
        "error" => Frame::Error {
            code: string(f.code(), "code")?,
            message: f.message().as_string().unwrap_or_default(),
            run: opt_string(f.run(), "run")?,
        },
        "pong" => Frame::Pong,
        other => return Err(["unknown frame type \"", other, "\""].concat()),
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
    let status = match s.status().as_string().as_deref() {
        Some("pending") | None => RunStatus::Pending,
        Some("running") => RunStatus::Running,
        Some("completed") => RunStatus::Completed,
        Some("failed") => RunStatus::Failed,
        Some("cancelled") => RunStatus::Cancelled,
        Some(other) => return Err(["unknown run status \"", other, "\""].concat()),
    };
    let mut nodes = Vec::new();
    let list = s.nodes();
    if is_array(&list) {
        let list: js_sys::Array = list.unchecked_into();
        for n in list.iter().take(runwire_protocol::state::MAX_NODES) {
            let o = obj(&n);
            nodes.push(NodeState {
                key: o.key().as_string().unwrap_or_default(),
                status: match o.status().as_string().as_deref() {
                    Some("running") => NodeStatus::Running,
                    Some("completed") => NodeStatus::Completed,
                    Some("failed") => NodeStatus::Failed,
                    _ => NodeStatus::Pending,
                },
                progress: o.progress().as_f64(),
                started_at: opt_ts(o.started_at()),
                finished_at: opt_ts(o.finished_at()),
                duration_ms: o.duration_ms().as_f64().map(|n| n as u64),
                error: o.error().as_string(),
                output_summary: opt_value(o.output_summary()),
            });
        }
    }
    let count = |v: JsValue| v.as_f64().map_or(0, |n| n as u64);
    Ok(RunState {
        seq: count(s.seq()),
        status,
        workflow: s.workflow().as_string(),
        node_count: s.node_count().as_f64().map(|n| n as u32),
        progress: s.progress().as_f64().unwrap_or(0.0),
        current_node: s.current_node().as_string(),
        nodes,
        nodes_truncated: s.nodes_truncated().is_truthy(),
        started_at: opt_ts(s.started_at()),
        finished_at: opt_ts(s.finished_at()),
        duration_ms: s.duration_ms().as_f64().map(|n| n as u64),
        error: s.error().as_string(),
        failed_node: s.failed_node().as_string(),
        cancel_reason: s.cancel_reason().as_string(),
        result: opt_value(s.result()),
        log_count: count(s.log_count()),
        warning_count: count(s.warning_count()),
        error_count: count(s.error_count()),
    })
}

/// A run state as the plain object the app receives (the same shape as its JSON).
pub fn state_to_js(state: &RunState) -> JsValue {
    let o: Obj = js_sys::Object::new().unchecked_into();
    o.set_seq(state.seq as f64);
    o.set_status(match state.status {
        RunStatus::Pending => "pending",
        RunStatus::Running => "running",
        RunStatus::Completed => "completed",
        RunStatus::Failed => "failed",
        RunStatus::Cancelled => "cancelled",
    });
    if let Some(w) = &state.workflow {
        o.set_workflow(w);
    }
    if let Some(n) = state.node_count {
        o.set_node_count(f64::from(n));
    }
    o.set_progress(state.progress);
    if let Some(c) = &state.current_node {
        o.set_current_node(c);
    }
    let nodes = js_sys::Array::new();
    for n in &state.nodes {
        let no: Obj = js_sys::Object::new().unchecked_into();
        no.set_key(&n.key);
        no.set_status(match n.status {
            NodeStatus::Pending => "pending",
            NodeStatus::Running => "running",
            NodeStatus::Completed => "completed",
            NodeStatus::Failed => "failed",
        });
        if let Some(p) = n.progress {
            no.set_progress(p);
        }
        if let Some(t) = &n.started_at {
            no.set_started_at(t);
        }
        if let Some(t) = &n.finished_at {
            no.set_finished_at(t);
        }
        if let Some(d) = n.duration_ms {
            no.set_duration_ms(d as f64);
        }
        if let Some(e) = &n.error {
            no.set_error(e);
        }
        if let Some(v) = &n.output_summary {
            no.set_output_summary(&opaque_to_js(v));
        }
        nodes.push(&no);
    }
    o.set_nodes(&nodes);
    if state.nodes_truncated {
        o.set_nodes_truncated(true);
    }
    if let Some(t) = &state.started_at {
        o.set_started_at(t);
    }
    if let Some(t) = &state.finished_at {
        o.set_finished_at(t);
    }
    if let Some(d) = state.duration_ms {
        o.set_duration_ms(d as f64);
    }
    if let Some(e) = &state.error {
        o.set_error(e);
    }
    if let Some(n) = &state.failed_node {
        o.set_failed_node(n);
    }
    if let Some(r) = &state.cancel_reason {
        o.set_cancel_reason(r);
    }
    if let Some(r) = &state.result {
        o.set_result(&opaque_to_js(r));
    }
    o.set_log_count(state.log_count as f64);
    o.set_warning_count(state.warning_count as f64);
    o.set_error_count(state.error_count as f64);
    o.into()
}
