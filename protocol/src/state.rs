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
pub struct NodeState {
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
    pub output_summary: Option<Value>,
}

/// A run's current snapshot.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunState {
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
    pub nodes: Vec<NodeState>,
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
    pub result: Option<Value>,
    /// `log` events seen.
    pub log_count: u64,
    /// `log` events at level `warning`.
    pub warning_count: u64,
    /// `log` events at level `error`.
    pub error_count: u64,
}

impl RunState {
    /// Folds one event in. Events at or below [`RunState::seq`] are ignored, so replays and
    /// duplicates are harmless; returns whether the event was applied.
    ///
    /// Once the run has ended its status is fixed: a late `node.*` event still updates its node,
    /// but cannot make the run `running` again.
    pub fn apply(&mut self, seq: u64, ts: &str, event: &RunEvent) -> bool {
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
                if e.workflow.is_some() {
                    self.workflow.clone_from(&e.workflow);
                }
                if e.node_count.is_some() {
                    self.node_count = e.node_count;
                }
            }
            RunEvent::RunProgress(e) => {
                self.mark_running();
                self.progress = e.progress;
                if e.current_node.is_some() {
                    self.current_node.clone_from(&e.current_node);
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
                self.result.clone_from(&e.result);
            }
            RunEvent::RunFailed(e) => {
                self.end(RunStatus::Failed, ts);
                self.error = Some(e.error.clone());
                self.failed_node.clone_from(&e.node_key);
            }
            RunEvent::RunCancelled(e) => {
                self.end(RunStatus::Cancelled, ts);
                self.cancel_reason.clone_from(&e.reason);
            }
            RunEvent::NodeStarted(e) => {
                self.mark_running();
                if !ended {
                    self.current_node = Some(e.node_key.clone());
                }
                if let Some(node) = self.node_mut(&e.node_key) {
                    node.status = NodeStatus::Running;
                    node.started_at = Some(ts.to_owned());
                }
            }
            RunEvent::NodeProgress(e) => {
                self.mark_running();
                if let Some(node) = self.node_mut(&e.node_key) {
                    if node.status == NodeStatus::Pending {
                        node.status = NodeStatus::Running;
                    }
                    node.progress = Some(e.progress);
                }
            }
            RunEvent::NodeCompleted(e) => {
                self.mark_running();
                if let Some(node) = self.node_mut(&e.node_key) {
                    node.status = NodeStatus::Completed;
                    node.progress = Some(100.0);
                    node.finished_at = Some(ts.to_owned());
                    node.duration_ms = e.duration_ms;
                    node.output_summary.clone_from(&e.output_summary);
                }
            }
            RunEvent::NodeFailed(e) => {
                self.mark_running();
                if let Some(node) = self.node_mut(&e.node_key) {
                    node.status = NodeStatus::Failed;
                    node.finished_at = Some(ts.to_owned());
                    node.error = Some(e.error.clone());
                }
            }
            RunEvent::NodeSkipped(e) => {
                self.mark_running();
                if let Some(node) = self.node_mut(&e.node_key) {
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
    pub fn node(&self, key: &str) -> Option<&NodeState> {
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

    fn node_mut(&mut self, key: &str) -> Option<&mut NodeState> {
        // Most events concern a recently started node: search from the end.
        if let Some(i) = self.nodes.iter().rposition(|n| n.key == key) {
            return Some(&mut self.nodes[i]);
        }
        if self.nodes.len() >= MAX_NODES {
            self.nodes_truncated = true;
            return None;
        }
        self.nodes.push(NodeState {
            key: key.to_owned(),
            ..NodeState::default()
        });
        self.nodes.last_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::{format, vec::Vec};
    use serde_json::json;

    fn ev(name: &str, data: Value) -> RunEvent {
        RunEvent::parse(name, &data).unwrap()
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

    #[test]
    fn serializes_compactly() {
        let v = serde_json::to_value(RunState::default()).unwrap();
        assert_eq!(
            v,
            json!({"seq":0,"status":"pending","progress":0.0,"nodes":[],"log_count":0,"warning_count":0,"error_count":0})
        );
    }
}
