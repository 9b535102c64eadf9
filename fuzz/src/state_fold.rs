//! The RunState fold over a sequence of arbitrary events (known names with fields of any type,
//! unknown names, seqs in any order, duplicates).
//!
//! Invariants: never panics, and after every step:
//! - an event is applied iff its seq is above the state's, and the state's seq is the largest seen;
//! - a refused event leaves the state as it was, and applying an event twice changes nothing;
//! - once the run has ended, its status and end time never change;
//! - at most `MAX_NODES` nodes, with distinct keys, `nodes_truncated` once more appeared;
//! - `log_count >= warning_count + error_count`;
//! - progress values stay within 0..=100;
//! - the state survives a round trip through its JSON, as subscribers receive it (floats within
//!   one part in 10^15: serde_json's default float parsing is not exact).
use arbitrary::{Arbitrary, Unstructured};
use runwire_protocol::event::KNOWN_EVENTS;
use runwire_protocol::state::MAX_NODES;
use runwire_protocol::{RunEvent, RunState};
use serde_json::{Map, Number, Value};

use crate::same;

const FIELDS: [&str; 16] = [
    "node_key",
    "progress",
    "workflow",
    "node_count",
    "current_node",
    "error",
    "reason",
    "result",
    "total_duration_ms",
    "duration_ms",
    "output_summary",
    "level",
    "message",
    "attempt",
    "data",
    "node",
];
const LEVELS: [&str; 5] = ["debug", "info", "warning", "error", "fatal"];

#[derive(Debug, Arbitrary)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Percent(u8),
    Key(u8),
    Level(u8),
    Str(String),
    List(Vec<Json>),
}

impl Json {
    fn value(&self, depth: u8) -> Value {
        match self {
            Self::Null => Value::Null,
            Self::Bool(b) => Value::Bool(*b),
            Self::Int(n) => Value::from(*n),
            Self::Float(f) => Number::from_f64(*f).map_or(Value::Null, Value::Number),
            Self::Percent(p) => Value::from(f64::from(*p) / 2.0),
            // A few node keys, so events meet the same nodes again.
            Self::Key(k) => Value::from(format!("n{}", k % 8)),
            Self::Level(l) => Value::from(LEVELS[usize::from(*l) % LEVELS.len()]),
            Self::Str(s) => Value::from(s.as_str()),
            Self::List(items) if depth < 3 => {
                Value::Array(items.iter().take(8).map(|j| j.value(depth + 1)).collect())
            }
            Self::List(_) => Value::Null,
        }
    }
}

#[derive(Debug, Arbitrary)]
struct Step {
    /// Absolute seq, or a step from the current one (including back, for replays).
    seq: SeqChoice,
    /// Index into the known names; past their end, an unknown name.
    name: u8,
    fields: Vec<(u8, Json)>,
    /// Many nodes at once, to reach `MAX_NODES`.
    burst: u16,
}

#[derive(Debug, Arbitrary)]
enum SeqChoice {
    Next,
    Delta(i8),
    At(u64),
}

/// Runs the target on one input (read as arbitrary steps, like libFuzzer's typed targets).
pub fn run(data: &[u8]) {
    let Ok(steps) = Vec::<Step>::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let mut state = RunState::default();
    let mut ts = 0u64;
    for step in steps.iter().take(256) {
        let name = KNOWN_EVENTS
            .get(usize::from(step.name))
            .copied()
            .unwrap_or("custom.x");
        let mut data = Map::new();
        for (field, value) in step.fields.iter().take(8) {
            data.insert(
                FIELDS[usize::from(*field) % FIELDS.len()].into(),
                value.value(0),
            );
        }
        let Ok(event) = RunEvent::parse(name, &Value::Object(data)) else {
            continue;
        };
        let seq = match step.seq {
            SeqChoice::Next => state.seq.saturating_add(1),
            SeqChoice::Delta(d) => state.seq.saturating_add_signed(i64::from(d)),
            SeqChoice::At(s) => s,
        };
        ts += 1;
        let stamp = format!("t{ts}");
        apply_checked(&mut state, seq, &stamp, &event);
        // Many node keys in a row, each folded like any event.
        if step.burst > 0 && name == "node.started" {
            for i in 0..u64::from(step.burst % 4096) {
                let data = serde_json::json!({ "node_key": format!("b{i}") });
                let event = RunEvent::parse(name, &data).expect("a valid node.started");
                let seq = state.seq.saturating_add(1);
                state.apply(seq, &stamp, &event);
            }
        }
    }
}

fn apply_checked(state: &mut RunState, seq: u64, ts: &str, event: &RunEvent) {
    let before = state.clone();
    let applied = state.apply(seq, ts, event);
    assert_eq!(
        applied,
        seq > before.seq,
        "applied at seq {seq} over {}",
        before.seq
    );
    if !applied {
        assert_eq!(*state, before, "a refused event changed the state");
        return;
    }
    assert_eq!(state.seq, seq);
    let after = state.clone();
    assert!(!state.apply(seq, ts, event), "the same seq applied twice");
    assert_eq!(*state, after, "a duplicate changed the state");

    if before.status.is_terminal() {
        assert_eq!(state.status, before.status, "an ended run changed status");
        assert_eq!(state.finished_at, before.finished_at);
    }
    if state.status.is_terminal() {
        assert!(state.finished_at.is_some(), "an ended run has an end time");
    }
    assert!(state.nodes.len() <= MAX_NODES);
    let mut keys: Vec<&str> = state.nodes.iter().map(|n| n.key.as_str()).collect();
    keys.sort_unstable();
    keys.dedup();
    assert_eq!(keys.len(), state.nodes.len(), "duplicate node keys");
    assert!(
        before.nodes.len() <= state.nodes.len(),
        "nodes are never forgotten"
    );
    assert!(!before.nodes_truncated || state.nodes_truncated);
    assert!(state.log_count >= state.warning_count + state.error_count);
    assert!(
        (0.0..=100.0).contains(&state.progress),
        "run progress {}",
        state.progress
    );
    for node in &state.nodes {
        if let Some(p) = node.progress {
            assert!((0.0..=100.0).contains(&p), "node progress {p}");
        }
    }
    let json = serde_json::to_string(&*state).expect("a state serializes");
    let back: RunState = serde_json::from_str(&json).expect("its JSON parses");
    let (a, b) = (serde_json::to_value(&*state), serde_json::to_value(&back));
    assert!(same(&a.unwrap(), &b.unwrap()), "round trip of {json}");
}
