//! The embedded broker: everything in this process, bounded.
//!
//! - Per run, at most `history_limit` events and `history_bytes` bytes are retained; older ones
//!   are already folded into the run's state, so late joiners lose nothing but the replay.
//! - A finished run is kept `finished_retention` after its terminal event, then dropped.
//! - An unfinished run that has had no publish for `idle_run_ttl` is dropped (its worker is gone).
//! - At most `max_runs` runs are held. A new run evicts the oldest finished run; when none is
//!   finished, the publish is refused (503) rather than dropping a live run's history.
//!
//! Locks: `inner` (the run map) is taken before a run's own lock, never after, and neither is
//! held across an await. A run's lock is held while its events are handed to the hub, which is
//! what keeps delivery in seq order when publishers race.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use runwire_protocol::RunState;
use tokio::time::Instant;

use super::{
    Broker, BrokerError, BrokerHealth, Event, NewEvent, Replay, RunId, Slot, Snapshot, now_ts,
};
use crate::hub::Hub;
use crate::sync::lock;

/// Limits of the embedded broker.
#[derive(Debug, Clone)]
pub struct MemoryConfig {
    /// Events retained per run.
    pub history_limit: usize,
    /// Bytes of encoded events retained per run.
    pub history_bytes: usize,
    /// How long a finished run is kept.
    pub finished_retention: Duration,
    /// How long an unfinished run without publishes is kept.
    pub idle_run_ttl: Duration,
    /// Runs held at most.
    pub max_runs: usize,
}

impl Default for MemoryConfig {
    fn default() -> Self {
        Self {
            history_limit: 10_000,
            history_bytes: 16 * 1024 * 1024,
            finished_retention: Duration::from_secs(300),
            idle_run_ttl: Duration::from_secs(3600),
            max_runs: 100_000,
        }
    }
}

#[derive(Debug)]
struct RunEntry {
    epoch: Arc<str>,
    head: u64,
    state: Arc<RunState>,
    history: VecDeque<Arc<Event>>,
    history_bytes: usize,
    last_publish: Instant,
    finished_at: Option<Instant>,
    /// Set when the entry left the map; a publisher that raced with the removal looks again.
    removed: bool,
}

impl RunEntry {
    fn first_retained(&self) -> u64 {
        self.head + 1 - self.history.len() as u64
    }
}

#[derive(Debug, Default)]
struct Inner {
    runs: HashMap<RunId, Arc<Mutex<RunEntry>>>,
    /// Finished runs in the order they finished (so oldest first).
    finished: VecDeque<(Instant, RunId)>,
}

/// The embedded broker.
#[derive(Debug)]
pub struct MemoryBroker {
    inner: Mutex<Inner>,
    streams: Arc<Mutex<HashMap<Arc<str>, usize>>>,
    config: MemoryConfig,
    hub: Arc<Hub>,
    boot: String,
    /// Generation counters that make up run epochs; see [`MemoryBroker::epoch_of`].
    generations: Box<[AtomicU32]>,
    /// Values folded into run states cut or replaced by a marker (see `RunState::fold`).
    capped: AtomicU64,
}

/// Slots of the epoch generation table: 16 KiB, whatever the number of runs.
const GENERATION_SLOTS: usize = 4096;

impl MemoryBroker {
    /// Values folded into run states that were over their cap (see `RunState::fold`).
    pub fn capped_values(&self) -> u64 {
        self.capped.load(Ordering::Relaxed)
    }

    /// A broker delivering to `hub`, with a background task that drops expired runs. The task
    /// ends when the broker is dropped.
    pub fn new(config: MemoryConfig, hub: Arc<Hub>) -> Arc<Self> {
        let boot = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_micros();
        let broker = Arc::new(Self {
            inner: Mutex::default(),
            streams: Arc::default(),
            config,
            hub,
            boot: format!("{boot:x}"),
            generations: (0..GENERATION_SLOTS).map(|_| AtomicU32::new(0)).collect(),
            capped: AtomicU64::new(0),
        });
        let weak = Arc::downgrade(&broker);
        let every = (broker.config.finished_retention / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(30));
        tokio::spawn(sweep_loop(weak, every));
        broker
    }

    fn slot(run: &str) -> usize {
        BuildHasherDefault::<DefaultHasher>::default().hash_one(run) as usize % GENERATION_SLOTS
    }

    /// The epoch a run has, or will have when its first event arrives: the relay's boot id and
    /// the generation of the run's slot. Dropping a run bumps its slot's generation, so a run
    /// published again after it was dropped gets a new epoch, while a subscriber that joins
    /// before the first event already holds the epoch the run will be created with. Runs that
    /// share a slot only ever get an extra (safe) reset.
    fn epoch_of(&self, run: &str) -> Arc<str> {
        let generation = self.generations[Self::slot(run)].load(Ordering::Acquire);
        format!("{}.{generation:x}", self.boot).into()
    }

    fn forget(&self, run: &str) {
        self.generations[Self::slot(run)].fetch_add(1, Ordering::AcqRel);
    }

    /// Runs held now.
    pub fn run_count(&self) -> usize {
        lock(&self.inner).runs.len()
    }

    /// Drops finished runs past their retention and idle unfinished runs.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut inner = lock(&self.inner);
        while let Some((at, _)) = inner.finished.front() {
            if now.duration_since(*at) < self.config.finished_retention {
                break;
            }
            let (at, run) = inner.finished.pop_front().expect("front exists");
            self.remove_if(&mut inner, &run, |e| e.finished_at == Some(at));
        }
        let idle: Vec<RunId> = inner
            .runs
            .iter()
            .filter(|(_, e)| {
                let e = lock(e);
                e.finished_at.is_none()
                    && now.duration_since(e.last_publish) >= self.config.idle_run_ttl
            })
            .map(|(r, _)| r.clone())
            .collect();
        for run in idle {
            if self.remove_if(&mut inner, &run, |e| e.finished_at.is_none()) {
                // Its history is gone and seqs restart: make watchers reset.
                self.hub.resync(&run);
            }
        }
    }

    fn entry_for_publish(&self, run: &RunId) -> Result<Arc<Mutex<RunEntry>>, BrokerError> {
        let mut inner = lock(&self.inner);
        if let Some(e) = inner.runs.get(run) {
            return Ok(e.clone());
        }
        if inner.runs.len() >= self.config.max_runs {
            self.evict_oldest_finished(&mut inner)?;
        }
        let entry = Arc::new(Mutex::new(RunEntry {
            epoch: self.epoch_of(run),
            head: 0,
            state: Arc::default(),
            history: VecDeque::new(),
            history_bytes: 0,
            last_publish: Instant::now(),
            finished_at: None,
            removed: false,
        }));
        inner.runs.insert(run.clone(), entry.clone());
        Ok(entry)
    }

    fn evict_oldest_finished(&self, inner: &mut Inner) -> Result<(), BrokerError> {
        while let Some((at, run)) = inner.finished.pop_front() {
            if self.remove_if(inner, &run, |e| e.finished_at == Some(at)) {
                return Ok(());
            }
        }
        Err(BrokerError::TooManyRuns)
    }

    /// Removes `run` when `pred` holds for its entry; true if it did.
    fn remove_if(&self, inner: &mut Inner, run: &RunId, pred: impl Fn(&RunEntry) -> bool) -> bool {
        let Some(entry) = inner.runs.get(run) else {
            return false;
        };
        let mut e = lock(entry);
        if !pred(&e) {
            return false;
        }
        e.removed = true;
        drop(e);
        inner.runs.remove(run);
        self.forget(run);
        true
    }

    fn publish_now(
        &self,
        run: &RunId,
        events: &[NewEvent],
    ) -> Result<Vec<Arc<Event>>, BrokerError> {
        loop {
            let entry = self.entry_for_publish(run)?;
            let mut e = lock(&entry);
            if e.removed {
                continue;
            }
            if e.state.status.is_terminal() {
                return Err(BrokerError::RunFinished(run.clone()));
            }
            let ts = now_ts();
            let mut out = Vec::with_capacity(events.len());
            let epoch = e.epoch.clone();
            let mut head = e.head;
            let state = Arc::make_mut(&mut e.state);
            let mut capped = 0;
            for new in events {
                head += 1;
                capped += u64::from(state.fold(head, &ts, &new.typed).capped);
                out.push(Arc::new(Event::encode(
                    run.clone(),
                    epoch.clone(),
                    head,
                    ts.clone(),
                    new,
                )));
            }
            e.head = head;
            self.capped.fetch_add(capped, Ordering::Relaxed);
            e.last_publish = Instant::now();
            for ev in &out {
                e.history_bytes += ev.frame.len();
                e.history.push_back(ev.clone());
            }
            while e.history.len() > self.config.history_limit
                || (e.history_bytes > self.config.history_bytes && e.history.len() > 1)
            {
                let old = e.history.pop_front().expect("non-empty");
                e.history_bytes -= old.frame.len();
            }
            self.hub.deliver_all(&out);
            let finished = out.last().is_some_and(|ev| ev.terminal).then(Instant::now);
            e.finished_at = finished;
            drop(e);
            if let Some(at) = finished {
                lock(&self.inner).finished.push_back((at, run.clone()));
            }
            return Ok(out);
        }
    }

    fn snapshot_now(&self, run: &RunId, since: Option<u64>) -> Snapshot {
        let entry = lock(&self.inner).runs.get(run).cloned();
        let Some(entry) = entry else {
            return Snapshot {
                epoch: self.epoch_of(run),
                head: 0,
                state: Arc::default(),
                replay: match since {
                    None => Replay::NotAsked,
                    Some(0) => Replay::Events(Vec::new()),
                    Some(_) => Replay::Gap,
                },
            };
        };
        let e = lock(&entry);
        let replay = match since {
            None => Replay::NotAsked,
            Some(s) if s > e.head => Replay::Gap,
            Some(s) if s + 1 < e.first_retained() => Replay::Gap,
            Some(s) => {
                let skip = (s + 1 - e.first_retained()) as usize;
                Replay::Events(e.history.iter().skip(skip).cloned().collect())
            }
        };
        Snapshot {
            epoch: e.epoch.clone(),
            head: e.head,
            state: e.state.clone(),
            replay,
        }
    }
}

async fn sweep_loop(broker: Weak<MemoryBroker>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match broker.upgrade() {
            Some(b) => b.sweep(),
            None => return,
        }
    }
}

struct StreamGuard {
    streams: Arc<Mutex<HashMap<Arc<str>, usize>>>,
    workspace: Arc<str>,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut streams = lock(&self.streams);
        if let Some(n) = streams.get_mut(&self.workspace) {
            *n -= 1;
            if *n == 0 {
                streams.remove(&self.workspace);
            }
        }
    }
}

impl Broker for MemoryBroker {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn publish(
        &self,
        run: RunId,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'_, Result<Vec<Arc<Event>>, BrokerError>> {
        let result = self.publish_now(&run, &events);
        async move { result }.boxed()
    }

    fn snapshot(
        &self,
        run: RunId,
        since: Option<u64>,
    ) -> BoxFuture<'_, Result<Snapshot, BrokerError>> {
        let snapshot = self.snapshot_now(&run, since);
        async move { Ok(snapshot) }.boxed()
    }

    fn watch(&self, _run: RunId) -> BoxFuture<'_, Result<(), BrokerError>> {
        // Every publish goes through this process's hub already.
        async { Ok(()) }.boxed()
    }

    fn unwatch(&self, _run: RunId) {}

    fn stream_slot(
        &self,
        workspace: Arc<str>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Slot, BrokerError>> {
        let result = {
            let mut streams = lock(&self.streams);
            let n = streams.entry(workspace.clone()).or_insert(0);
            if *n >= limit {
                Err(BrokerError::LimitReached)
            } else {
                *n += 1;
                Ok(Slot::new(StreamGuard {
                    streams: self.streams.clone(),
                    workspace,
                }))
            }
        };
        async move { result }.boxed()
    }

    fn health(&self) -> BrokerHealth {
        BrokerHealth::Up
    }

    fn samples(&self) -> Vec<super::Sample> {
        vec![
            super::Sample {
                name: "runwire_runs",
                help: "Runs held by the embedded broker.",
                counter: false,
                value: self.run_count() as u64,
            },
            super::capped_sample(self.capped_values()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::{ConnHandle, Outbound};
    use serde_json::json;

    fn log(i: u64) -> NewEvent {
        NewEvent::parse("log", json!({"level":"info","message": format!("m{i}")})).unwrap()
    }

    fn broker(config: MemoryConfig) -> (Arc<MemoryBroker>, Arc<Hub>) {
        let hub = Arc::new(Hub::new(Arc::default()));
        (MemoryBroker::new(config, hub.clone()), hub)
    }

    fn seqs(replay: &Replay) -> Vec<u64> {
        match replay {
            Replay::Events(evs) => evs.iter().map(|e| e.seq).collect(),
            other => panic!("expected events, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn assigns_gapless_seqs_and_folds() {
        let (b, _) = broker(MemoryConfig::default());
        let run: RunId = "r".into();
        let out = b.publish(run.clone(), vec![log(1), log(2)]).await.unwrap();
        assert_eq!(out.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        let out = b.publish(run.clone(), vec![log(3)]).await.unwrap();
        assert_eq!(out[0].seq, 3);
        let snap = b.snapshot(run.clone(), Some(1)).await.unwrap();
        assert_eq!(snap.head, 3);
        assert_eq!(snap.state.log_count, 3);
        assert_eq!(seqs(&snap.replay), [2, 3]);
        assert_eq!(
            seqs(&b.snapshot(run.clone(), Some(3)).await.unwrap().replay),
            Vec::<u64>::new()
        );
        assert!(matches!(
            b.snapshot(run, Some(4)).await.unwrap().replay,
            Replay::Gap
        ));
    }

    #[tokio::test]
    async fn a_run_keeps_the_epoch_a_subscriber_saw_before_its_first_event() {
        let (b, _) = broker(MemoryConfig::default());
        let before = b.snapshot("new".into(), None).await.unwrap().epoch;
        let out = b.publish("new".into(), vec![log(1)]).await.unwrap();
        assert_eq!(out[0].epoch, before);
    }

    #[tokio::test]
    async fn unknown_run_is_empty() {
        let (b, _) = broker(MemoryConfig::default());
        let snap = b.snapshot("nope".into(), Some(0)).await.unwrap();
        assert_eq!(snap.head, 0);
        assert_eq!(seqs(&snap.replay), Vec::<u64>::new());
        assert!(matches!(
            b.snapshot("nope".into(), Some(2)).await.unwrap().replay,
            Replay::Gap
        ));
        assert_eq!(b.run_count(), 0);
    }

    /// A broker with the default config changed by `tweak`, and run `r` holding `n` log events.
    async fn with_logs(
        tweak: impl FnOnce(&mut MemoryConfig),
        n: u64,
    ) -> (Arc<MemoryBroker>, RunId) {
        let mut config = MemoryConfig::default();
        tweak(&mut config);
        let (b, _) = broker(config);
        let run: RunId = "r".into();
        for i in 0..n {
            b.publish(run.clone(), vec![log(i)]).await.unwrap();
        }
        (b, run)
    }

    #[tokio::test]
    async fn trims_history_to_the_limit_and_reports_gaps() {
        let (b, run) = with_logs(|c| c.history_limit = 3, 5).await;
        let snap = b.snapshot(run.clone(), Some(2)).await.unwrap();
        assert_eq!(seqs(&snap.replay), [3, 4, 5]);
        assert_eq!(
            snap.state.log_count, 5,
            "trimmed events stay folded in the state"
        );
        assert!(matches!(
            b.snapshot(run, Some(1)).await.unwrap().replay,
            Replay::Gap
        ));
    }

    #[tokio::test]
    async fn trims_history_by_bytes() {
        let (b, run) = with_logs(|c| c.history_bytes = 300, 10).await;
        let Replay::Events(evs) = b.snapshot(run, Some(9)).await.unwrap().replay else {
            panic!()
        };
        assert_eq!(evs.len(), 1);
        let e = lock(&lock(&b.inner).runs["r"].clone()).history_bytes;
        assert!(e <= 300, "{e}");
    }

    #[tokio::test]
    async fn refuses_events_after_the_terminal_one() {
        let (b, _) = broker(MemoryConfig::default());
        let run: RunId = "r".into();
        let done = NewEvent::parse("run.completed", json!({})).unwrap();
        let out = b.publish(run.clone(), vec![log(1), done]).await.unwrap();
        assert!(out[1].terminal);
        assert!(matches!(
            b.publish(run.clone(), vec![log(2)]).await,
            Err(BrokerError::RunFinished(_))
        ));
        assert_eq!(b.snapshot(run, None).await.unwrap().head, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn finished_runs_expire_after_retention() {
        let (b, _) = broker(MemoryConfig {
            finished_retention: Duration::from_secs(300),
            ..MemoryConfig::default()
        });
        let done = NewEvent::parse("run.failed", json!({"error":"x"})).unwrap();
        b.publish("r".into(), vec![done]).await.unwrap();
        b.publish("live".into(), vec![log(1)]).await.unwrap();
        tokio::time::sleep(Duration::from_secs(299)).await;
        assert_eq!(b.run_count(), 2);
        tokio::time::sleep(Duration::from_secs(90)).await;
        assert_eq!(
            b.run_count(),
            1,
            "the finished run is gone, the live one stays"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn idle_unfinished_runs_expire_and_watchers_resync() {
        let (b, hub) = broker(MemoryConfig {
            idle_run_ttl: Duration::from_secs(60),
            ..MemoryConfig::default()
        });
        let (conn, mut rx) = ConnHandle::new(1, 8);
        let run: RunId = "r".into();
        hub.register(&run, &conn);
        b.publish(run.clone(), vec![log(1)]).await.unwrap();
        let epoch = b.snapshot(run.clone(), None).await.unwrap().epoch;
        assert!(matches!(rx.recv().await, Some(Outbound::Event(_))));
        tokio::time::sleep(Duration::from_secs(61 + 30)).await;
        assert_eq!(b.run_count(), 0);
        assert!(matches!(rx.recv().await, Some(Outbound::Resync(r)) if r == run));
        let out = b.publish(run.clone(), vec![log(2)]).await.unwrap();
        assert_eq!(out[0].seq, 1);
        assert_ne!(out[0].epoch, epoch, "a recreated run has a new epoch");
    }

    #[tokio::test]
    async fn at_the_run_cap_evicts_the_oldest_finished_run_or_refuses() {
        let (b, _) = broker(MemoryConfig {
            max_runs: 2,
            ..MemoryConfig::default()
        });
        let done = || NewEvent::parse("run.completed", json!({})).unwrap();
        b.publish("a".into(), vec![done()]).await.unwrap();
        b.publish("b".into(), vec![done()]).await.unwrap();
        b.publish("c".into(), vec![log(1)]).await.unwrap();
        assert_eq!(
            b.snapshot("a".into(), None).await.unwrap().head,
            0,
            "a was evicted"
        );
        assert_eq!(b.snapshot("b".into(), None).await.unwrap().head, 1);
        b.publish("d".into(), vec![log(1)]).await.unwrap();
        assert!(matches!(
            b.publish("e".into(), vec![log(1)]).await,
            Err(BrokerError::TooManyRuns)
        ));
        assert_eq!(b.run_count(), 2);
        // runs already held still accept events
        b.publish("c".into(), vec![log(2)]).await.unwrap();
    }

    /// 48 publishes of 1 MB each, into every kind of kept value: the state stays small, every
    /// event is delivered whole, and the capped values are counted.
    #[tokio::test]
    async fn large_values_are_capped_in_the_state_but_delivered_whole() {
        let (b, _) = broker(MemoryConfig::default());
        let big = "x".repeat(1_000_000);
        for i in 0..48u64 {
            let event = match i % 4 {
                0 => NewEvent::parse(
                    "node.completed",
                    json!({"node_key": format!("n{i}"), "output_summary": {"blob": big}}),
                ),
                1 => NewEvent::parse(
                    "node.failed",
                    json!({"node_key": format!("n{i}"), "error": big}),
                ),
                2 => NewEvent::parse("run.progress", json!({"progress": 1, "current_node": big})),
                _ => NewEvent::parse("log", json!({"level": "info", "message": big})),
            }
            .unwrap();
            let out = b.publish("r".into(), vec![event]).await.unwrap();
            assert!(
                out[0].frame.len() > 1_000_000,
                "the event is delivered whole"
            );
        }
        let last = NewEvent::parse("run.failed", json!({"error": big})).unwrap();
        b.publish("r".into(), vec![last]).await.unwrap();
        let snap = b.snapshot("r".into(), None).await.unwrap();
        let size = serde_json::to_string(&*snap.state).unwrap().len();
        assert!(size < 64 * 1024, "state of {size} bytes");
        assert!(size <= runwire_protocol::state::MAX_STATE_BYTES);
        assert_eq!(
            b.capped_values(),
            37,
            "36 node and progress values, and the run's error"
        );
        let text = b
            .samples()
            .iter()
            .find(|s| s.name == "runwire_state_values_capped_total")
            .map(|s| s.value);
        assert_eq!(text, Some(37));
    }

    #[tokio::test]
    async fn delivers_in_order_to_the_hub() {
        let (b, hub) = broker(MemoryConfig::default());
        let (conn, mut rx) = ConnHandle::new(1, 1024);
        let run: RunId = "r".into();
        hub.register(&run, &conn);
        let mut tasks = Vec::new();
        for t in 0..4 {
            let b = b.clone();
            let run = run.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..50 {
                    b.publish(run.clone(), vec![log(t * 100 + i)])
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for want in 1..=200 {
            match rx.try_recv() {
                Some(Outbound::Event(e)) => assert_eq!(e.seq, want),
                other => panic!("{other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn stream_slots_are_counted_per_workspace() {
        let (b, _) = broker(MemoryConfig::default());
        let s1 = b.stream_slot("w".into(), 2).await.unwrap();
        let _s2 = b.stream_slot("w".into(), 2).await.unwrap();
        assert!(matches!(
            b.stream_slot("w".into(), 2).await,
            Err(BrokerError::LimitReached)
        ));
        let _other = b.stream_slot("v".into(), 2).await.unwrap();
        drop(s1);
        b.stream_slot("w".into(), 2).await.unwrap();
    }
}
