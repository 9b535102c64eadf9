//! The hub: which of this relay's connections watch which runs, and the fan-out of live events to
//! them.
//!
//! Each connection owns one bounded outbound queue. The hub never waits on a connection: it pushes
//! without waiting, and a connection whose queue is full is marked slow and dropped from every run
//! it watched here; its task then closes it with the slow-consumer code (4008), and the client
//! resumes from its last seq elsewhere or later. One slow browser never holds up a publish.
//!
//! A WebSocket connection whose task is waiting, with its queue empty and nothing of its own left
//! to write, gets live events written to its socket directly by the publishing thread: one
//! non-blocking `write()` for a publish's events, which saves the connection's wake-up and a turn of
//! its loop. The exactly-once check then happens here, on the subscription's position that the
//! connection keeps in its queue's shared state ([`Subs`]). Anything else (the socket refuses or
//! is busy, an event out of order or ending its run, the connection busy) goes through the queue
//! as before.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::SystemTime;

use futures_util::task::AtomicWaker;

use crate::event::{Event, RunId};
use crate::metrics::Metrics;
use crate::sync::lock;
use crate::transport::listener::{DirectWrite, Socket};
use crate::transport::subscription::Subscriptions;
use crate::transport::ws::codec::{OP_TEXT, put_header};

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
    inner: Mutex<Inner>,
    /// At most this many items wait; one more marks the connection slow.
    capacity: usize,
    /// The queue overflowed: the connection is to close with 4008 and takes nothing more.
    slow: AtomicBool,
    /// The connection is gone: nothing more is accepted.
    closed: AtomicBool,
    /// The connection's task, woken when the queue becomes non-empty or the connection slow.
    waker: AtomicWaker,
}

/// What the hub and the connection share under the queue's lock.
#[derive(Debug, Default)]
struct Inner {
    items: VecDeque<Outbound>,
    /// The connection's task waits for its queue with everything it had to write written: a live
    /// event that follows on from its subscription's position may go to the socket directly.
    parked: bool,
    /// A direct write left bytes pending in the socket: the connection is to flush it.
    flush: bool,
    /// The connection's socket, when live events may be written to it directly.
    socket: Option<Arc<Socket>>,
    /// The client reads batched frames: a direct write carries one event at most (a lone frame
    /// is what a batch of one looks like).
    batch: bool,
    /// Where each of the connection's subscriptions is in its run (WebSocket connections).
    subs: Subscriptions,
}

impl Inner {
    fn pop(&mut self) -> Option<Outbound> {
        let item = self.items.pop_front()?;
        if self.items.is_empty() && self.items.capacity() > SHRINK_ABOVE {
            self.items = VecDeque::new();
        }
        Some(item)
    }
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
        let inbox = Inbox::new(capacity);
        (inbox.handle(id), inbox)
    }

    /// Queues `item`; false when the connection is gone or was found slow.
    fn offer(&self, item: Outbound, metrics: &Metrics) -> bool {
        let q = &*self.queue;
        if q.closed.load(Ordering::Acquire) || q.slow.load(Ordering::Acquire) {
            return false;
        }
        let mut inner = lock(&q.inner);
        let was_empty = inner.items.is_empty();
        if !self.push(&mut inner, item, metrics) {
            return false;
        }
        drop(inner);
        // The connection drains the queue before it waits again, so only the first item of a
        // burst needs to wake it.
        if was_empty {
            q.waker.wake();
        }
        true
    }

    /// Queues `item` behind the others, or marks the connection slow when the queue is full.
    fn push(&self, inner: &mut MutexGuard<'_, Inner>, item: Outbound, metrics: &Metrics) -> bool {
        let q = &*self.queue;
        if inner.items.len() >= q.capacity {
            // The connection closes without reading what is queued: free it now.
            inner.items = VecDeque::new();
            if !q.slow.swap(true, Ordering::AcqRel) {
                metrics.slow_consumer_closes.inc();
            }
            q.waker.wake();
            return false;
        }
        inner.items.push_back(item);
        true
    }

    /// Hands `events`, consecutive events of one run, to the connection: written to its socket
    /// directly when it is waiting with nothing else to write and they follow on from its
    /// subscription's position, queued otherwise. False when the connection is gone or slow.
    fn deliver(&self, events: &[Arc<Event>], wire: &mut Wire, metrics: &Metrics) -> bool {
        let q = &*self.queue;
        if q.closed.load(Ordering::Acquire) || q.slow.load(Ordering::Acquire) {
            return false;
        }
        let mut inner = lock(&q.inner);
        let was_empty = inner.items.is_empty();
        let mut rest = events;
        if was_empty && inner.parked && !inner.flush {
            let Inner {
                socket,
                subs,
                batch,
                ..
            } = &mut *inner;
            if let (Some(socket), Some(sub)) = (socket.as_ref(), subs.get_mut(&events[0].run)) {
                let mut n = sub.in_order(events);
                if *batch {
                    n = n.min(1);
                }
                if n > 0 {
                    let written = socket.try_send(wire.frames(events, n));
                    if written != DirectWrite::Refused {
                        sub.sent(&events[n - 1]);
                        metrics.events_delivered.add(n as u64);
                        let now = wire.now();
                        for ev in &events[..n] {
                            metrics.delivery_latency.observe_between(ev.published, now);
                        }
                        rest = &events[n..];
                    }
                    if written == DirectWrite::Partial {
                        inner.flush = true;
                    }
                }
            }
        }
        for ev in rest {
            if !self.push(&mut inner, Outbound::Event(ev.clone()), metrics) {
                return false;
            }
        }
        let wake = was_empty && (inner.flush || !inner.items.is_empty());
        drop(inner);
        if wake {
            q.waker.wake();
        }
        true
    }
}

/// A publish's events as WebSocket frames, encoded once (when a first connection can take them
/// directly) for every connection that does.
#[derive(Debug, Default)]
pub struct Wire {
    bytes: Vec<u8>,
    /// Where each event's frame ends in `bytes`.
    ends: Vec<usize>,
    /// One clock read for the deliveries' latencies.
    now: Option<SystemTime>,
}

impl Wire {
    /// The frames of the first `n` of `events` (the same `events` on every call).
    fn frames(&mut self, events: &[Arc<Event>], n: usize) -> &[u8] {
        if self.ends.is_empty() {
            for ev in events {
                let payload = ev.frame.as_bytes();
                put_header(&mut self.bytes, OP_TEXT, payload.len());
                self.bytes.extend_from_slice(payload);
                self.ends.push(self.bytes.len());
            }
        }
        &self.bytes[..self.ends[n - 1]]
    }

    fn now(&mut self) -> SystemTime {
        *self.now.get_or_insert_with(SystemTime::now)
    }
}

/// A connection's subscriptions, under its queue's lock (see [`Inbox::subs`]).
#[derive(Debug)]
pub struct Subs<'a>(MutexGuard<'a, Inner>);

impl Deref for Subs<'_> {
    type Target = Subscriptions;

    fn deref(&self) -> &Self::Target {
        &self.0.subs
    }
}

impl DerefMut for Subs<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0.subs
    }
}

/// What [`Inbox::recv_or_flush`] found.
#[derive(Debug)]
pub enum Next {
    /// A queued item.
    Item(Outbound),
    /// A direct write left bytes pending on the socket: flush it.
    Flush,
    /// The hub found the queue full: close with 4008.
    Slow,
}

impl Inbox {
    /// An empty queue for a connection, holding at most `capacity` items; the hub reaches it
    /// through [`Inbox::handle`].
    pub fn new(capacity: usize) -> Self {
        Self {
            queue: Arc::new(Queue {
                inner: Mutex::default(),
                capacity: capacity.max(1),
                slow: AtomicBool::new(false),
                closed: AtomicBool::new(false),
                waker: AtomicWaker::new(),
            }),
        }
    }

    /// The hub's handle on this queue's connection, `id`; a connection keeps only this end and
    /// makes the handle when it subscribes.
    pub fn handle(&self, id: u64) -> ConnHandle {
        ConnHandle {
            id,
            queue: self.queue.clone(),
        }
    }

    /// The next queued item; `None` once the connection has been marked slow (it must close with
    /// 4008; nothing more will be queued).
    pub async fn recv(&mut self) -> Option<Outbound> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<Outbound>> {
        loop {
            match std::task::ready!(self.poll_next(cx)) {
                Next::Item(item) => return Poll::Ready(Some(item)),
                Next::Slow => return Poll::Ready(None),
                // Only a connection that gave its socket (`set_socket`) has anything to flush.
                Next::Flush => {}
            }
        }
    }

    /// The next queued item, or a flush that a direct write asks for. While this waits, live
    /// events may be written to the connection's socket directly (see [`Inbox::set_socket`]); once
    /// it returns, they are queued until the connection waits here again.
    pub async fn recv_or_flush(&mut self) -> Next {
        poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Next> {
        if let Some(next) = self.next() {
            return Poll::Ready(next);
        }
        self.queue.waker.register(cx.waker());
        let mut inner = lock(&self.queue.inner);
        match self.take(&mut inner) {
            Some(next) => Poll::Ready(next),
            None => {
                inner.parked = true;
                Poll::Pending
            }
        }
    }

    /// A queued item without waiting, if there is one and the connection is not slow.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        match self.next()? {
            Next::Item(item) => Some(item),
            Next::Slow | Next::Flush => None,
        }
    }

    fn next(&self) -> Option<Next> {
        self.take(&mut lock(&self.queue.inner))
    }

    /// What is next, if anything; the connection no longer waits.
    fn take(&self, inner: &mut Inner) -> Option<Next> {
        if self.is_slow() {
            return Some(Next::Slow);
        }
        let next = if std::mem::take(&mut inner.flush) {
            Next::Flush
        } else {
            Next::Item(inner.pop()?)
        };
        inner.parked = false;
        Some(next)
    }

    /// The connection is about to write or to change its subscriptions: live events are queued,
    /// not written directly, until it waits in [`Inbox::recv_or_flush`] again.
    pub fn hold(&self) {
        lock(&self.queue.inner).parked = false;
    }

    /// Live events may be written to `socket` directly while the connection waits; `batch`: its
    /// client reads batched frames.
    pub fn set_socket(&self, socket: Arc<Socket>, batch: bool) {
        let mut inner = lock(&self.queue.inner);
        inner.socket = Some(socket);
        inner.batch = batch;
    }

    /// The client reads batched frames from now on.
    pub fn set_batch(&self, batch: bool) {
        lock(&self.queue.inner).batch = batch;
    }

    /// The connection's subscriptions, locked: the hub reads and advances them when it writes to
    /// the socket directly. Never held across an await or a call into the hub or the broker.
    pub fn subs(&self) -> Subs<'_> {
        Subs(lock(&self.queue.inner))
    }

    /// Whether the hub found the queue full and marked the connection slow.
    pub fn is_slow(&self) -> bool {
        self.queue.slow.load(Ordering::Acquire)
    }
}

impl Drop for Inbox {
    fn drop(&mut self) {
        self.queue.closed.store(true, Ordering::Release);
        let mut inner = lock(&self.queue.inner);
        inner.items = VecDeque::new();
        inner.parked = false;
        // The socket closes with the connection, not when the last handle leaves the hub.
        inner.socket = None;
        inner.subs = Subscriptions::Empty;
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
        self.deliver_all(std::slice::from_ref(event));
    }

    /// Hands accepted events, consecutive events of one run (a publish's), to every local watcher
    /// of their run: a connection that takes them directly gets them in one write.
    pub fn deliver_all(&self, events: &[Arc<Event>]) {
        let Some(first) = events.first() else {
            return;
        };
        if events.iter().any(|ev| ev.run != first.run) {
            for ev in events {
                self.deliver(ev);
            }
            return;
        }
        let Some(watchers) = lock(&self.runs).get(&first.run).cloned() else {
            return;
        };
        let mut wire = Wire::default();
        let mut w = lock(&watchers);
        w.retain(|conn| conn.deliver(events, &mut wire, &self.metrics));
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
    use crate::transport::subscription::Subscription;

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
        assert_eq!(lock(&conn.queue.inner).items.capacity(), 0);
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
        assert_eq!(lock(&conn.queue.inner).items.capacity(), 0);
        assert!(!rx.is_slow());
    }

    fn sized(run: &str, seq: u64, message_len: usize) -> Arc<Event> {
        let data = serde_json::json!({"level":"info","message":"m".repeat(message_len)});
        let ne = NewEvent::parse("log", data).unwrap();
        Arc::new(Event::encode(run.into(), "".into(), seq, now_ts(), &ne))
    }

    /// A connected socket (the relay's end) and its peer.
    async fn socket_pair() -> (Arc<Socket>, tokio::net::TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let peer = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        (Arc::new(Socket::new(stream)), peer)
    }

    /// Polls the inbox once, as the connection's loop does when it waits.
    fn wait_once(rx: &mut Inbox) -> Poll<Next> {
        let waker = futures_util::task::noop_waker();
        rx.poll_next(&mut Context::from_waker(&waker))
    }

    /// Reads `n` frames from `peer` as a client decodes them (tungstenite's parser): each must be a whole, final,
    /// unmasked text frame; their texts.
    async fn read_texts(peer: &mut tokio::net::TcpStream, n: usize) -> Vec<String> {
        use std::io::Cursor;
        use std::time::Duration;
        use tokio::io::AsyncReadExt;
        use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        let (mut buf, mut texts) = (Vec::new(), Vec::new());
        while texts.len() < n {
            let mut cursor = Cursor::new(&buf[..]);
            if let Some((header, len)) = FrameHeader::parse(&mut cursor).unwrap() {
                let start = cursor.position() as usize;
                if buf.len() >= start + len as usize {
                    assert!(header.is_final && header.mask.is_none());
                    assert_eq!(header.opcode, OpCode::Data(Data::Text));
                    let text = std::str::from_utf8(&buf[start..start + len as usize]).unwrap();
                    texts.push(text.to_owned());
                    buf.drain(..start + len as usize);
                    continue;
                }
            }
            let mut chunk = vec![0; 64 * 1024];
            // A wrong length would leave this waiting for bytes that never come.
            let read = tokio::time::timeout(Duration::from_secs(10), peer.read(&mut chunk))
                .await
                .unwrap_or_else(|_| panic!("no whole frame after {} frames", texts.len()))
                .unwrap();
            assert!(read > 0, "the peer closed after {} frames", texts.len());
            buf.extend_from_slice(&chunk[..read]);
        }
        assert!(buf.is_empty(), "bytes after the last frame");
        texts
    }

    fn texts_of(events: &[Arc<Event>]) -> Vec<String> {
        events.iter().map(|ev| ev.frame.to_string()).collect()
    }

    #[tokio::test]
    async fn a_waiting_connection_gets_in_order_events_written_directly() {
        let metrics = Arc::new(Metrics::default());
        let hub = Hub::new(metrics.clone());
        let (socket, mut peer) = socket_pair().await;
        let (conn, mut rx) = ConnHandle::new(1, 8);
        rx.set_socket(socket, false);
        rx.subs().insert("r".into(), Subscription::default());
        hub.register(&"r".into(), &conn);

        // Busy (it has not waited yet): queued.
        let (e1, e2, e3) = (sized("r", 1, 10), sized("r", 2, 200), sized("r", 3, 70_000));
        hub.deliver(&e1);
        assert!(matches!(rx.try_recv(), Some(Outbound::Event(e)) if e.seq == 1));
        rx.subs().get_mut("r").unwrap().sent(&e1);

        // Waiting: one write for both, nothing queued, the position advanced.
        assert!(wait_once(&mut rx).is_pending());
        hub.deliver_all(&[e2.clone(), e3.clone()]);
        assert!(rx.try_recv().is_none());
        assert_eq!(rx.subs().get("r").unwrap().last_seq(), 3);
        assert_eq!(metrics.events_delivered.get(), 2);
        assert_eq!(metrics.delivery_latency.count(), 2);
        // Headers with 16-bit and 64-bit lengths.
        assert_eq!(
            read_texts(&mut peer, 2).await,
            texts_of(&[e2.clone(), e3.clone()])
        );

        // A gap goes through the queue (the connection resyncs), and so does all after it.
        assert!(wait_once(&mut rx).is_pending());
        hub.deliver(&sized("r", 5, 10));
        hub.deliver(&sized("r", 6, 10));
        assert!(matches!(rx.try_recv(), Some(Outbound::Event(e)) if e.seq == 5));
        assert!(matches!(rx.try_recv(), Some(Outbound::Event(e)) if e.seq == 6));
        // Held (writing, subscribing): queued even when in order.
        assert!(wait_once(&mut rx).is_pending());
        rx.hold();
        hub.deliver(&sized("r", 4, 10));
        assert!(matches!(rx.try_recv(), Some(Outbound::Event(e)) if e.seq == 4));
        assert_eq!(rx.subs().get("r").unwrap().last_seq(), 3);
        let mut scratch = [0u8; 16];
        assert_eq!(
            peer.try_read(&mut scratch).unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );
    }

    #[tokio::test]
    async fn a_partial_direct_write_leaves_the_rest_for_the_connection_to_flush() {
        let hub = Hub::new(Arc::default());
        let (socket, mut peer) = socket_pair().await;
        let (conn, mut rx) = ConnHandle::new(1, 8);
        rx.set_socket(socket.clone(), false);
        rx.subs().insert("r".into(), Subscription::default());
        hub.register(&"r".into(), &conn);
        // Far more than loopback's socket buffers take at once.
        let events: Vec<_> = (1..=256).map(|seq| sized("r", seq, 64 * 1024)).collect();
        assert!(wait_once(&mut rx).is_pending());
        hub.deliver_all(&events);
        // Sent, as far as the subscription goes; the rest is the connection's to write.
        assert_eq!(rx.subs().get("r").unwrap().last_seq(), 256);
        assert!(socket.pending_len() > 0);
        assert!(matches!(wait_once(&mut rx), Poll::Ready(Next::Flush)));
        // Nothing more goes directly while bytes are pending.
        assert!(wait_once(&mut rx).is_pending());
        hub.deliver(&sized("r", 257, 10));
        assert!(matches!(rx.try_recv(), Some(Outbound::Event(e)) if e.seq == 257));
        let reader = tokio::spawn(async move { read_texts(&mut peer, 256).await });
        socket.send_pending().await.unwrap();
        let got = reader.await.unwrap();
        assert!(
            got == texts_of(&events),
            "the frames arrive whole and in order"
        );
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
