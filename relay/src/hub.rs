//! The hub: which of this relay's connections watch which runs, and the fan-out of live events to
//! them.
//!
//! Each connection owns one bounded outbound queue. The hub never waits on a connection: it pushes
//! without waiting, and a connection whose queue is full is marked slow and dropped from every run
//! it watched here; its task then closes it with the slow-consumer code (4008), and the client
//! resumes from its last seq elsewhere or later. One slow browser never holds up a publish.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use crate::event::{Event, RunId};
use crate::metrics::Metrics;
use crate::sync::lock;

/// What the hub puts in a connection's queue.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A live event of a run the connection watches.
    Event(Arc<Event>),
    /// The broker may have missed or replaced events of this run: take a fresh snapshot from the
    /// subscription's last seq.
    Resync(RunId),
}

/// A queue that has held more than this many items gives its memory back once drained, so a burst
/// does not stay allocated on a connection that then goes quiet.
const SHRINK_ABOVE: usize = 32;

/// One connection's outbound queue, shared by the hub (which pushes) and the connection (which
/// pops).
///
/// Most connections are idle most of the time, so an empty queue allocates nothing: the items live
/// in a `VecDeque` that grows on the first event, under a lock that is only ever held for a push or
/// a pop.
#[derive(Debug)]
struct Queue {
    items: Mutex<VecDeque<Outbound>>,
    /// At most this many items wait; one more marks the connection slow.
    capacity: usize,
    /// The queue overflowed: the connection is to close with 4008 and takes nothing more.
    slow: AtomicBool,
    /// The connection is gone: nothing more is accepted.
    closed: AtomicBool,
    /// The connection's task, woken when the queue becomes non-empty or the connection slow.
    waker: AtomicWaker,
}

/// The hub's handle on one connection.
#[derive(Debug, Clone)]
pub struct ConnHandle {
    /// The connection's id, unique on this relay.
    pub id: u64,
    queue: Arc<Queue>,
}

/// The connection's end of its queue. Dropping it closes the queue.
#[derive(Debug)]
pub struct Inbox {
    queue: Arc<Queue>,
}

impl ConnHandle {
    /// A handle and the receiving end of its queue, which holds at most `capacity` items.
    pub fn new(id: u64, capacity: usize) -> (Self, Inbox) {
        let queue = Arc::new(Queue {
            items: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            slow: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        (
            Self {
                id,
                queue: queue.clone(),
            },
            Inbox { queue },
        )
    }

    /// Queues `item`; false when the connection is gone or was found slow.
    fn offer(&self, item: Outbound, metrics: &Metrics) -> bool {
        let q = &*self.queue;
        if q.closed.load(Ordering::Acquire) || q.slow.load(Ordering::Acquire) {
            return false;
        }
        let mut items = lock(&q.items);
        if items.len() >= q.capacity {
            // The connection closes without reading what is queued: free it now.
            *items = VecDeque::new();
            drop(items);
            if !q.slow.swap(true, Ordering::AcqRel) {
                metrics.slow_consumer_closes.inc();
            }
            q.waker.wake();
            return false;
        }
        let was_empty = items.is_empty();
        items.push_back(item);
        drop(items);
        // The connection drains the queue before it waits again, so only the first item of a
        // burst needs to wake it.
        if was_empty {
            q.waker.wake();
        }
        true
    }
}

impl Inbox {
    /// The next queued item; `None` once the connection has been marked slow (it must close with
    /// 4008; nothing more will be queued).
    pub async fn recv(&mut self) -> Option<Outbound> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Outbound>> {
        if let Some(next) = self.next() {
            return Poll::Ready(next);
        }
        self.queue.waker.register(cx.waker());
        match self.next() {
            Some(next) => Poll::Ready(next),
            None => Poll::Pending,
        }
    }

    /// A queued item without waiting, if there is one and the connection is not slow.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        self.next().flatten()
    }

    /// `Some(None)`: slow; `Some(Some(item))`: an item; `None`: empty.
    fn next(&self) -> Option<Option<Outbound>> {
        if self.is_slow() {
            return Some(None);
        }
        let mut items = lock(&self.queue.items);
        let item = items.pop_front()?;
        if items.is_empty() && items.capacity() > SHRINK_ABOVE {
            *items = VecDeque::new();
        }
        Some(Some(item))
    }

    /// Whether the hub found the queue full and marked the connection slow.
    pub fn is_slow(&self) -> bool {
        self.queue.slow.load(Ordering::Acquire)
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::Release);
        *lock(&self.queue.items) = VecDeque::new();
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

    /// The relay's metrics, for the broker's own measurements.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{NewEvent, now_ts};

    fn event(run: &str, seq: u64) -> Arc<Event> {
        let ne = NewEvent::parse("log", serde_json::json!({"level":"info","message":"m"})).unwrap();
        Arc::new(Event::encode(run.into(), "e".into(), seq, now_ts(), &ne))
    }

    #[tokio::test]
    async fn fans_out_to_watchers_of_the_run_only() {
        let hub = Hub::new(Arc::default());
        let (a, mut rx_a) = ConnHandle::new(1, 8);
        let (b, mut rx_b) = ConnHandle::new(2, 8);
        let r1: RunId = "r1".into();
        hub.register(&r1, &a);
        hub.register(&"r2".into(), &b);
        hub.deliver(&event("r1", 1));
        assert!(matches!(rx_a.try_recv(), Some(Outbound::Event(e)) if e.seq == 1));
        assert!(rx_b.try_recv().is_none());
        hub.unregister(&r1, 1);
        assert_eq!(hub.watcher_count("r1"), 0);
        assert_eq!(hub.watched_runs(), vec![RunId::from("r2")]);
    }

    #[tokio::test]
    async fn a_full_queue_marks_the_connection_slow_and_drops_it() {
        let metrics = Arc::new(Metrics::default());
        let hub = Hub::new(metrics.clone());
        let (slow, mut rx_slow) = ConnHandle::new(1, 2);
        let (fast, mut rx_fast) = ConnHandle::new(2, 8);
        let r: RunId = "r".into();
        hub.register(&r, &slow);
        hub.register(&r, &fast);
        for seq in 1..=3 {
            hub.deliver(&event("r", seq));
        }
        assert!(rx_slow.is_slow());
        // What was queued is dropped: the connection closes without reading it.
        assert!(rx_slow.recv().await.is_none());
        assert_eq!(hub.watcher_count("r"), 1);
        assert_eq!(metrics.slow_consumer_closes.get(), 1);
        // A slow connection still registered for another run takes nothing more.
        let other: RunId = "other".into();
        hub.register(&other, &slow);
        hub.deliver(&event("other", 1));
        assert_eq!(hub.watcher_count("other"), 0);
        assert_eq!(metrics.slow_consumer_closes.get(), 1);
        for seq in 1..=3 {
            assert!(matches!(rx_fast.try_recv(), Some(Outbound::Event(e)) if e.seq == seq));
        }
    }

    #[tokio::test]
    async fn an_empty_queue_allocates_nothing_and_wakes_its_connection() {
        let hub = Arc::new(Hub::new(Arc::default()));
        let (conn, mut rx) = ConnHandle::new(1, 64);
        assert_eq!(lock(&conn.queue.items).capacity(), 0);
        let r: RunId = "r".into();
        hub.register(&r, &conn);
        let waiting = tokio::spawn(async move {
            let mut seqs = Vec::new();
            while seqs.len() < 40 {
                match rx.recv().await {
                    Some(Outbound::Event(e)) => seqs.push(e.seq),
                    other => panic!("{other:?}"),
                }
            }
            (seqs, rx)
        });
        tokio::task::yield_now().await;
        for seq in 1..=40 {
            hub.deliver(&event("r", seq));
        }
        let (seqs, rx) = waiting.await.unwrap();
        assert_eq!(seqs, (1..=40).collect::<Vec<_>>());
        // Drained after a burst larger than SHRINK_ABOVE: the memory is given back.
        assert_eq!(lock(&conn.queue.items).capacity(), 0);
        assert!(!rx.is_slow());
    }

    #[tokio::test]
    async fn drops_closed_connections() {
        let hub = Hub::new(Arc::default());
        let (a, rx) = ConnHandle::new(1, 8);
        hub.register(&"r".into(), &a);
        drop(rx);
        hub.resync(&"r".into());
        assert_eq!(hub.watcher_count("r"), 0);
    }
}
