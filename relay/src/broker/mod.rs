//! The broker: where a run's events are sequenced, retained and folded, and how they reach every
//! relay that has a subscriber for the run.
//!
//! [`memory::MemoryBroker`] keeps everything in this process. A distributed broker implements the
//! same [`Broker`] trait; the rest of the relay does not know which one it runs on.
//!
//! The contract every implementation keeps:
//! - `publish` assigns each event the run's next seq (1, 2, 3… with no gaps), retains it, folds it
//!   into the run's [`RunState`], and only then answers `Ok`. An event is never accepted and then
//!   lost: when the broker cannot keep it, `publish` fails and nothing is appended.
//! - Every accepted event is handed to [`Hub::deliver`] of every relay that `watch`es the run,
//!   in seq order per run.
//! - `snapshot` answers the head seq, the state at that seq and, when asked, the retained events
//!   after a seq. Subscriptions register with the hub *before* taking the snapshot and drop live
//!   events at or below the snapshot's head, so nothing falls between the two.
//! - When a run's history is lost and its seqs may start again (eviction, a store that lost its
//!   data), the run gets a new epoch, and the broker calls [`Hub::resync`] so that subscriptions
//!   reset instead of silently dropping the new, lower seqs as duplicates.

pub mod memory;
pub mod redis;
pub mod supervisor;

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use runwire_protocol::{Envelope, RunEvent, RunState};
use serde_json::Value;

pub use crate::hub::Hub;

/// A run id, shared cheaply between the broker, the hub and connections.
pub type RunId = Arc<str>;

/// An event a publisher sent, validated and not yet sequenced.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The typed view, used to fold the run state.
    pub typed: RunEvent,
    /// The data as the publisher sent it; it goes on the wire unchanged.
    pub data: Value,
}

impl NewEvent {
    /// Validates `name` and `data` (see [`RunEvent::parse`]).
    pub fn parse(name: &str, data: Value) -> Result<Self, runwire_protocol::EventError> {
        let typed = RunEvent::parse(name, &data)?;
        let data = if data.is_null() {
            Value::Object(serde_json::Map::new())
        } else {
            data
        };
        Ok(Self { typed, data })
    }

    /// The event name.
    pub fn name(&self) -> &str {
        self.typed.name()
    }
}

/// An accepted event, encoded once and shared by every subscriber on this relay.
#[derive(Debug)]
pub struct Event {
    /// The run.
    pub run: RunId,
    /// The run's epoch the seq belongs to.
    pub epoch: Arc<str>,
    /// Its seq within the run.
    pub seq: u64,
    /// Whether it ends the run.
    pub terminal: bool,
    /// The event name.
    pub name: Box<str>,
    /// The `event` frame's JSON: what WebSocket subscribers receive and SSE's `data:`.
    pub frame: Utf8Bytes,
    /// The SSE message, built from `frame` the first time an SSE subscriber needs it.
    sse: OnceLock<Bytes>,
    /// When it was published: by this relay's clock, or the `ts` another relay stamped it with.
    /// Where `runwire_delivery_latency_seconds` starts.
    pub published: Option<SystemTime>,
}

impl Event {
    /// Encodes an event. This is the one place an event is serialized.
    pub fn encode(run: RunId, epoch: Arc<str>, seq: u64, ts: String, event: &NewEvent) -> Self {
        let envelope = Envelope {
            run: run.to_string(),
            seq,
            event: event.name().to_owned(),
            ts,
            data: event.data.clone(),
        };
        Self {
            frame: envelope.to_frame_json().into(),
            run,
            epoch,
            seq,
            terminal: event.typed.is_terminal(),
            name: event.name().into(),
            sse: OnceLock::new(),
            published: Some(SystemTime::now()),
        }
    }

    /// Wraps an `event` frame that was encoded elsewhere (by another relay, say) without
    /// re-encoding it. Fails when `frame` is not an event frame.
    pub fn from_frame(epoch: Arc<str>, frame: String) -> Result<Self, serde_json::Error> {
        #[derive(serde::Deserialize)]
        struct Head<'a> {
            #[serde(borrow)]
            run: std::borrow::Cow<'a, str>,
            seq: u64,
            #[serde(borrow)]
            event: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            ts: Option<std::borrow::Cow<'a, str>>,
        }
        let head: Head<'_> = serde_json::from_str(&frame)?;
        let published = (head.ts.as_deref()).and_then(|ts| humantime::parse_rfc3339(ts).ok());
        let (run, seq, name): (RunId, u64, Box<str>) = (
            head.run.as_ref().into(),
            head.seq,
            head.event.as_ref().into(),
        );
        Ok(Self {
            terminal: runwire_protocol::event::is_terminal_event(&name),
            run,
            epoch,
            seq,
            name,
            frame: frame.into(),
            sse: OnceLock::new(),
            published,
        })
    }

    /// The SSE message: `id:` the seq, `event:` the name, `data:` the frame JSON.
    pub fn sse(&self) -> Bytes {
        self.sse
            .get_or_init(|| {
                let frame = self.frame.as_str();
                let mut out = String::with_capacity(frame.len() + self.name.len() + 40);
                out.push_str("id: ");
                out.push_str(&self.seq.to_string());
                out.push_str("\nevent: ");
                out.push_str(&self.name);
                out.push_str("\ndata: ");
                // JSON text from serde has no raw newlines, so one `data:` line holds it.
                out.push_str(frame);
                out.push_str("\n\n");
                Bytes::from(out)
            })
            .clone()
    }
}

/// What `snapshot` found about the events after the asked-for seq.
#[derive(Debug, Clone)]
pub enum Replay {
    /// No `since` was given.
    NotAsked,
    /// The retained events with `since < seq <= head`, in order (empty when `since >= head`).
    Events(Vec<Arc<Event>>),
    /// The retained history no longer reaches back to `since + 1`: the subscriber must reset.
    Gap,
}

/// A run's current snapshot.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The run's epoch.
    pub epoch: Arc<str>,
    /// The run's head seq (0: no events yet).
    pub head: u64,
    /// The state at `head`.
    pub state: Arc<RunState>,
    /// The events after `since`, when asked.
    pub replay: Replay,
}

/// How the broker is doing, for `/health` and `/ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerHealth {
    /// Accepting publishes and delivering events.
    Up,
    /// Cannot reach its store: publishes are refused until it is back.
    Down,
    /// Publishes and deliveries work, but a background duty (say ingesting Pub/Sub messages) is
    /// not being done until its task has restarted. Not ready for new clients.
    Degraded,
}

impl BrokerHealth {
    /// `"up"`, `"down"` or `"degraded"`, for `/health` and `/ready`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Degraded => "degraded",
        }
    }
}

/// Why the broker refused.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BrokerError {
    /// The broker's store is unreachable; nothing was appended.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The run already ended; nothing was appended.
    #[error("run {0} has already finished")]
    RunFinished(RunId),
    /// The broker holds as many runs as it may and none can be evicted.
    #[error("too many runs held; retry later")]
    TooManyRuns,
    /// The workspace's concurrent stream limit is reached.
    #[error("concurrent stream limit reached")]
    LimitReached,
}

/// Holds one slot of a concurrency limit; dropping it frees the slot.
pub struct Slot(#[allow(dead_code)] Box<dyn Send + Sync>);

impl Slot {
    /// A slot that frees itself by dropping `guard`.
    pub fn new(guard: impl Send + Sync + 'static) -> Self {
        Self(Box::new(guard))
    }
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Slot")
    }
}

/// A broker. See the module docs for the contract.
pub trait Broker: Send + Sync + 'static {
    /// `"memory"`, `"redis"`…, for `/health` and logs.
    fn kind(&self) -> &'static str;

    /// Appends `events` to `run` in order, all or none, and returns them sequenced.
    fn publish(
        &self,
        run: RunId,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'_, Result<Vec<Arc<Event>>, BrokerError>>;

    /// The run's head, state and, with `since`, the retained events after it.
    fn snapshot(
        &self,
        run: RunId,
        since: Option<u64>,
    ) -> BoxFuture<'_, Result<Snapshot, BrokerError>>;

    /// A local subscriber watches `run`: make sure its live events reach this relay's hub.
    /// Resolves once they do. Called once per subscription; every call, also one that failed, is
    /// balanced by one [`Broker::unwatch`].
    fn watch(&self, run: RunId) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// A local subscription of `run` ended.
    fn unwatch(&self, run: RunId);

    /// Takes one of `limit` concurrent stream slots of `workspace`, or fails with
    /// [`BrokerError::LimitReached`]. The count spans every relay that shares the broker.
    fn stream_slot(
        &self,
        workspace: Arc<str>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Slot, BrokerError>>;

    /// Current health.
    fn health(&self) -> BrokerHealth;

    /// Figures of this broker for `/metrics`, beyond the relay's own.
    fn samples(&self) -> Vec<Sample> {
        Vec::new()
    }
}

/// One broker-specific metric.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Prometheus name.
    pub name: &'static str,
    /// Its help text.
    pub help: &'static str,
    /// A counter (only goes up) or a gauge.
    pub counter: bool,
    /// The value.
    pub value: u64,
}

/// The count of values that run states keep cut or as a marker because they were over their cap
/// (`runwire_protocol::state`), as a metric.
pub fn capped_sample(value: u64) -> Sample {
    Sample {
        name: "runwire_state_values_capped_total",
        help: "Event values kept in run states cut or replaced by a marker because they were over their cap.",
        counter: true,
        value,
    }
}

/// The current time as the envelope's `ts`: RFC 3339, UTC, milliseconds.
pub fn now_ts() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_once_and_parses_back() {
        let ne = NewEvent::parse("node.started", json!({"node_key":"a"})).unwrap();
        let ev = Event::encode(
            "r1".into(),
            "e".into(),
            3,
            "2026-01-01T00:00:00.000Z".into(),
            &ne,
        );
        assert!(
            ev.frame
                .as_str()
                .starts_with(r#"{"type":"event","run":"r1","seq":3,"event":"node.started""#)
        );
        let back = Event::from_frame("e".into(), ev.frame.as_str().to_owned()).unwrap();
        assert_eq!(
            (back.seq, &*back.run, &*back.name, back.terminal),
            (3, "r1", "node.started", false)
        );
        // Where the delivery latency starts, for an event from another relay: its `ts`.
        assert_eq!(
            back.published,
            Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600))
        );
        let sse = ev.sse();
        assert!(sse.starts_with(b"id: 3\nevent: node.started\ndata: {"));
        assert!(sse.ends_with(b"}\n\n"));
        // the same bytes every time
        assert_eq!(ev.sse().as_ptr(), sse.as_ptr());
        let done = NewEvent::parse("run.cancelled", Value::Null).unwrap();
        assert_eq!(done.data, json!({}));
        let ev = Event::encode("r1".into(), "e".into(), 4, now_ts(), &done);
        assert!(ev.terminal);
    }
}
