//! The hub: which of this relay's connections watch which runs, and the fan-out of live events to
//! them.
//!
//! Each connection owns one bounded outbound queue. The hub never waits on a connection: it
//! `try_send`s, and a connection whose queue is full is marked slow and dropped from every run
//! it watched here; its task then closes it with the slow-consumer code (4008), and the client
//! resumes from its last seq elsewhere or later. One slow browser never holds up a publish.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, mpsc};

use crate::broker::{Event, RunId};
use crate::metrics::Metrics;

/// What the hub puts in a connection's queue.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A live event of a run the connection watches.
    Event(Arc<Event>),
    /// The broker may have missed or replaced events of this run: take a fresh snapshot from the
    /// subscription's last seq.
    Resync(RunId),
}

/// Raised by the hub when a connection's queue overflowed.
#[derive(Debug, Default)]
pub struct SlowSignal {
    slow: AtomicBool,
    notify: Notify,
}

impl SlowSignal {
    /// Resolves once the connection has been marked slow.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.slow.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    fn raise(&self) {
        self.slow.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    /// Whether the connection was marked slow.
    pub fn is_raised(&self) -> bool {
        self.slow.load(Ordering::Acquire)
    }
}

/// The hub's handle on one connection.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    /// The connection's id, unique on this relay.
    pub id: u64,
    tx: mpsc::Sender<Outbound>,
    slow: Arc<SlowSignal>,
}

impl ConnHandle {
    /// A handle and the receiving end of its queue, which holds at most `capacity` items.
    pub fn new(id: u64, capacity: usize) -> (Self, mpsc::Receiver<Outbound>, Arc<SlowSignal>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let slow = Arc::new(SlowSignal::default());
        (
            Self {
                id,
                tx,
                slow: slow.clone(),
            },
            rx,
            slow,
        )
    }

    /// Queues `item`; false when the connection is gone or was found slow.
    fn offer(&self, item: Outbound, metrics: &Metrics) -> bool {
        match self.tx.try_send(item) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.slow.is_raised() {
                    metrics.slow_consumer_closes.inc();
                }
                self.slow.raise();
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}

/// The connections that watch one run on this relay.
type Watchers = Arc<Mutex<Vec<ConnHandle>>>;

/// Connections and their runs on this relay.
#[derive(Debug)]
pub struct Hub {
    // Two levels of locks so that a fan-out to one run's many watchers does not stall another
    // run's. Neither is ever held across an await, and the run-level lock is never taken while the
    // map lock is held by the same thread for longer than a lookup.
    runs: Mutex<HashMap<RunId, Watchers>>,
    metrics: Arc<Metrics>,
}

impl Hub {
    /// An empty hub.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            runs: Mutex::new(HashMap::new()),
            metrics,
        }
    }

    /// `conn` starts receiving `run`'s live events.
    pub fn register(&self, run: &RunId, conn: &ConnHandle) {
        // Pushed under the map lock, so `unregister` cannot remove the entry in between.
        let mut runs = lock(&self.runs);
        lock(runs.entry(run.clone()).or_default()).push(conn.clone());
    }

    /// `conn` stops receiving `run`'s live events.
    pub fn unregister(&self, run: &RunId, conn_id: u64) {
        let mut runs = lock(&self.runs);
        if let Some(watchers) = runs.get(run) {
            let mut w = lock(watchers);
            w.retain(|c| c.id != conn_id);
            if w.is_empty() {
                drop(w);
                runs.remove(run);
            }
        }
    }

    /// Hands an accepted event to every local watcher of its run.
    pub fn deliver(&self, event: &Arc<Event>) {
        self.offer_all(&event.run, || Outbound::Event(event.clone()));
    }

    /// Tells every local watcher of `run` to resync from its last seq.
    pub fn resync(&self, run: &RunId) {
        self.offer_all(run, || Outbound::Resync(run.clone()));
    }

    /// Tells every local subscription to resync (the broker reconnected to its store).
    pub fn resync_all(&self) {
        for run in self.watched_runs() {
            self.resync(&run);
        }
    }

    /// Runs that at least one local connection watches.
    pub fn watched_runs(&self) -> Vec<RunId> {
        lock(&self.runs).keys().cloned().collect()
    }

    /// How many local connections watch `run`.
    pub fn watcher_count(&self, run: &str) -> usize {
        lock(&self.runs).get(run).map_or(0, |w| lock(w).len())
    }

    fn offer_all(&self, run: &str, item: impl Fn() -> Outbound) {
        let Some(watchers) = lock(&self.runs).get(run).cloned() else {
            return;
        };
        let mut w = lock(&watchers);
        w.retain(|conn| conn.offer(item(), &self.metrics));
    }
}

/// Locks a mutex, recovering from poisoning: every critical section here leaves the data valid.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::{NewEvent, now_ts};

    fn event(run: &str, seq: u64) -> Arc<Event> {
        let ne = NewEvent::parse("log", serde_json::json!({"level":"info","message":"m"})).unwrap();
        Arc::new(Event::encode(run.into(), "e".into(), seq, now_ts(), &ne))
    }

    #[tokio::test]
    async fn fans_out_to_watchers_of_the_run_only() {
        let hub = Hub::new(Arc::default());
        let (a, mut rx_a, _) = ConnHandle::new(1, 8);
        let (b, mut rx_b, _) = ConnHandle::new(2, 8);
        let r1: RunId = "r1".into();
        hub.register(&r1, &a);
        hub.register(&"r2".into(), &b);
        hub.deliver(&event("r1", 1));
        assert!(matches!(rx_a.try_recv(), Ok(Outbound::Event(e)) if e.seq == 1));
        assert!(rx_b.try_recv().is_err());
        hub.unregister(&r1, 1);
        assert_eq!(hub.watcher_count("r1"), 0);
        assert_eq!(hub.watched_runs(), vec![RunId::from("r2")]);
    }

    #[tokio::test]
    async fn a_full_queue_marks_the_connection_slow_and_drops_it() {
        let metrics = Arc::new(Metrics::default());
        let hub = Hub::new(metrics.clone());
        let (slow, _rx_slow, signal) = ConnHandle::new(1, 2);
        let (fast, mut rx_fast, _) = ConnHandle::new(2, 8);
        let r: RunId = "r".into();
        hub.register(&r, &slow);
        hub.register(&r, &fast);
        for seq in 1..=3 {
            hub.deliver(&event("r", seq));
        }
        assert!(signal.is_raised());
        signal.wait().await; // resolves at once once raised
        assert_eq!(hub.watcher_count("r"), 1);
        assert_eq!(metrics.slow_consumer_closes.get(), 1);
        for seq in 1..=3 {
            assert!(matches!(rx_fast.try_recv(), Ok(Outbound::Event(e)) if e.seq == seq));
        }
    }

    #[tokio::test]
    async fn drops_closed_connections() {
        let hub = Hub::new(Arc::default());
        let (a, rx, _) = ConnHandle::new(1, 8);
        hub.register(&"r".into(), &a);
        drop(rx);
        hub.resync(&"r".into());
        assert_eq!(hub.watcher_count("r"), 0);
    }
}
