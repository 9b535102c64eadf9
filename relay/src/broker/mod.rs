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
//! - Every accepted event is handed to [`Hub::deliver`](crate::hub::Hub::deliver) of every relay that `watch`es the run,
//!   in seq order per run.
//! - `snapshot` answers the head seq, the state at that seq and, when asked, the retained events
//!   after a seq. Subscriptions register with the hub *before* taking the snapshot and drop live
//!   events at or below the snapshot's head, so nothing falls between the two.
//! - When a run's history is lost and its seqs may start again (eviction, a store that lost its
//!   data), the run gets a new epoch, and the broker calls [`Hub::resync`](crate::hub::Hub::resync) so that subscriptions
//!   reset instead of silently dropping the new, lower seqs as duplicates.

pub mod memory;
pub mod redis;
pub mod supervisor;

use std::sync::Arc;

use futures_util::future::BoxFuture;
use runwire_protocol::RunState;

// The event types the trait speaks, for code that names them through the broker.
pub use crate::event::{Event, NewEvent, RunId, now_ts};
use crate::metrics::Sample;

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

impl std::fmt::Debug for dyn Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Broker({})", self.kind())
    }
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
