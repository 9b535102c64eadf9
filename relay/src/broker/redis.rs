//! The Redis broker: several relays behind a load balancer share runs through Redis (one server
//! or a Redis Cluster). `docs/redis.md` is the operator's view of this module.
//!
//! Per run, all under one hash tag so that a run lives in one cluster slot:
//! - `{prefix}:{<run>}:meta`, a hash: `head` (last seq), `epoch`, `state` (the [`RunState`] JSON
//!   at `state_seq`, which is at most `STATE_EVERY` events behind `head`), `done` ("1" after the
//!   terminal event);
//! - `{prefix}:{<run>}:ingested`, a sorted set: ids of the ingested messages appended lately;
//! - `{prefix}:{<run>}:events`, a stream: entry `<seq>-0` holds the encoded `event` frame, trimmed
//!   to `history_limit` entries;
//! - `{prefix}:{<run>}:live`, the Pub/Sub channel a publish is fanned out on:
//!   `<epoch>\n<frame>\n<frame>…`.
//!
//! Both keys expire `run_idle_ttl` after the last publish, and `finished_retention` after the
//! terminal event.
//!
//! **Publishing.** `publish.lua` appends a batch atomically, but only if the run's head and epoch
//! are what the publishing relay computed the batch for: the relay numbers and encodes the frames
//! and folds the new state with [`RunState::apply`] itself (the fold is never written twice, in
//! Rust and in Lua), and the script refuses a batch computed for a stale head, answering the
//! current head, epoch and state so that the relay recomputes and tries again. Stored states
//! are therefore always `fold(state at head H, events H+1…)` whichever relay wrote them, even with
//! publishers racing on different relays. The state is stored only every few events (and with
//! the terminal one), so a publish costs nothing in proportion to it; readers get the stored
//! state with the frames after it and fold them (`parse_view`). Each relay keeps its last view
//! of a run, so a run published through one relay costs one round trip per publish (a batch is
//! one script call); publishes of one run through one relay are serialized to keep that view
//! valid.
//!
//! **Epochs.** A run that has no meta hash (new, expired, or lost with the server's data) gets a
//! fresh epoch when it is first written. Its seqs start again at 1 under the new epoch, which
//! subscriptions notice (the event's epoch, or the snapshot's, differs from theirs) and answer
//! with `reset`. Reading never writes: a snapshot of a run that does not exist answers head 0 and
//! an empty epoch, and a subscription that starts there takes the epoch of the first event.
//!
//! **Fan-out.** One Pub/Sub connection per relay, subscribed to the `live` channels of the runs
//! local subscriptions watch (reference counted), decodes nothing but the frame header
//! ([`Event::from_frame`]) and hands the events to [`Hub::deliver`]. Events reach local
//! subscribers only through that channel, also on the relay that published them, so they arrive
//! in the order Redis appended them. On a cluster the connection goes to one node: a `PUBLISH`
//! on any node reaches subscribers on every node.
//!
//! **Lost messages.** Pub/Sub keeps nothing, and a message can be lost after its events were
//! stored (on a cluster, a restarted node forwards no message until its bus links are back). The
//! head check (`heads`) reads the head of every watched run every `head_check_interval` and
//! makes the subscriptions of a run whose events did not arrive catch up from the stream.
//!
//! **Outages.** Commands time out after `command_timeout` and fail with
//! [`BrokerError::Unavailable`]; nothing half-written is reported as accepted. The command
//! connection is pinged every `health_interval`, and replaced by a new one when it has gone silent
//! (three pings in a row without an answer: see [`health_loop`]). The Pub/Sub connection is pinged
//! too; when it drops, the relay reconnects with backoff, resubscribes, then calls
//! [`Hub::resync_all`] so that every subscription catches up from its last seq through a fresh
//! snapshot (or resets when the history no longer reaches back, or the epoch changed).
//!
//! **Stream limits.** A workspace's concurrent streams are a sorted set of leases
//! (`{prefix}:streams:<workspace>`, score = lease expiry by Redis' clock), renewed every third of
//! `stream_lease` while held, so the slots of a relay that died lapse on their own.
//!
//! **Ingest.** See [`ingest`]. Every relay with `--ingest` pattern-subscribes and appends every
//! message it receives under an id every relay computes alike; `publish.lua` appends a message
//! only once (ids in `{prefix}:{<run>}:ingested`), so each message becomes one event however many
//! relays run, and none is lost while one of them is alive.
//!
//! **Supervision.** Every background task runs under [`supervise`]: one that ends or panics is
//! logged, counted and restarted, and the broker reports itself degraded meanwhile.

pub mod ingest;

mod conn;
mod heads;
mod pubsub;
mod slots;

use std::collections::HashMap;
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::redis::aio::PubSubSink;
use ::redis::{RedisError, Script};
use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use runwire_protocol::RunState;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use self::conn::{Conn, Target};
use super::supervisor::{Tasks, supervise};
use super::{
    Broker, BrokerError, BrokerHealth, Event, NewEvent, Replay, RunId, Slot, Snapshot, now_ts,
};
use crate::hub::Hub;
use crate::sync::lock;

/// Settings of the Redis broker.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://host:port[/db]`, or `redis+cluster://host:port[,host:port…]` for a cluster.
    pub url: String,
    /// Treat a `redis://` URL as a cluster's seed node(s).
    pub cluster: bool,
    /// Prefix of every key and channel, so several deployments can share one Redis.
    pub key_prefix: String,
    /// Events retained per run (the stream's `MAXLEN`).
    pub history_limit: usize,
    /// How long a run's keys stay after its terminal event.
    pub finished_retention: Duration,
    /// How long an unfinished run's keys stay after its last publish.
    pub run_idle_ttl: Duration,
    /// Longest wait for one Redis command; past it the operation fails with 503.
    pub command_timeout: Duration,
    /// How often the connections are checked.
    pub health_interval: Duration,
    /// First and longest wait between reconnection attempts.
    pub reconnect_backoff: (Duration, Duration),
    /// Lease of a workspace stream slot; a dead relay's slots free themselves after it.
    pub stream_lease: Duration,
    /// Pub/Sub channel patterns to ingest (`workflow-run:*`).
    pub ingest: Vec<String>,
    /// How often an ingesting relay publishes a sync mark (see [`ingest`]).
    pub ingest_mark_interval: Duration,
    /// How often the heads of watched runs are read to catch up with events whose Pub/Sub
    /// message was lost (see `heads.rs`); such events reach subscribers within two intervals.
    pub head_check_interval: Duration,
    /// Messages in other systems' shapes that ingest maps before its own mapping (the app sets
    /// it from the compatibility layers that are on).
    pub foreign_messages: ingest::ForeignMessages,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &conn::redact(&self.url))
            .field("cluster", &self.cluster)
            .field("key_prefix", &self.key_prefix)
            .field("history_limit", &self.history_limit)
            .field("ingest", &self.ingest)
            .finish_non_exhaustive()
    }
}

impl RedisConfig {
    /// Defaults for `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            cluster: false,
            key_prefix: "runwire".into(),
            history_limit: 10_000,
            finished_retention: Duration::from_secs(300),
            run_idle_ttl: Duration::from_secs(3600),
            command_timeout: Duration::from_secs(2),
            health_interval: Duration::from_secs(1),
            reconnect_backoff: (Duration::from_millis(50), Duration::from_secs(2)),
            stream_lease: Duration::from_secs(30),
            ingest: Vec::new(),
            ingest_mark_interval: Duration::from_secs(10),
            head_check_interval: Duration::from_secs(2),
            foreign_messages: ingest::ForeignMessages::default(),
        }
    }
}

/// Counters of the Redis broker, for metrics and tests.
#[derive(Debug, Default)]
pub struct RedisStats {
    /// Publishes retried because another relay had moved the run's head.
    pub publish_conflicts: AtomicU64,
    /// Times the Pub/Sub connection was re-established.
    pub reconnects: AtomicU64,
    /// Ingested messages appended as events.
    pub ingested: AtomicU64,
    /// Ingested messages not appended (before the first sync mark, too large, no valid run id,
    /// refused publish).
    pub ingest_dropped: AtomicU64,
    /// Values folded into run states that were over their cap (see `RunState::fold`).
    pub capped: AtomicU64,
    /// Ingested messages this relay did not append because another relay already had.
    pub ingest_duplicates: AtomicU64,
    /// Runs whose subscriptions the head check made catch up: events that never arrived through
    /// Pub/Sub, or a catch-up snapshot that failed.
    pub head_resyncs: AtomicU64,
    /// Times the command connection went silent (no answer, no error) and was replaced.
    pub command_reconnects: AtomicU64,
}

/// How long an ingested message's id is remembered in Redis: another relay that receives the
/// same message later than this after it was appended would append it again.
const INGEST_DEDUP_WINDOW: Duration = Duration::from_secs(60);

/// The state is stored in Redis at least every this many events (and every `history_limit`,
/// when that is lower, so that the events after it are still in the stream)…
const STATE_EVERY: u64 = 64;
/// …and when the frames after it add up to more than this, so that a reader's catch-up stays
/// small.
const MAX_UNSTORED_BYTES: usize = 256 * 1024;

/// Names of the supervised tasks that ingest depends on.
const INGEST_TASK: &str = "ingest";
const PUBSUB_TASK: &str = "redis pub/sub";

/// How long one publish may keep retrying while other relays keep moving the run's head, before
/// it gives up with 503 (nothing appended). A count of attempts would be a few milliseconds at one
/// round trip each: too little for a relay whose publishes race a busier one's.
const PUBLISH_CONTENTION_BUDGET: Duration = Duration::from_secs(2);

/// A pause of up to `max_us` microseconds, different for every caller, so that relays that keep
/// colliding on one run stop doing it in lockstep.
fn jitter(max_us: u64) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(max_us);
    Duration::from_micros(h.finish() % max_us.max(1))
}
/// Runs whose last view a relay keeps; past it, views not in use are forgotten (the next
/// publish of such a run costs one extra round trip).
const MAX_CACHED_RUNS: usize = 10_000;

/// This relay's view of a run: what it last wrote or was told by the script.
#[derive(Debug, Clone)]
struct RunView {
    head: u64,
    epoch: Arc<str>,
    /// The state at `head`.
    state: Arc<RunState>,
    /// The seq of the state stored in Redis (at most `head`).
    stored_seq: u64,
    /// Bytes of the frames after `stored_seq`, which readers fold onto the stored state.
    unstored_bytes: usize,
}

struct Scripts {
    publish: Script,
    snapshot: Script,
    slot: Script,
    renew: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Self {
            publish: Script::new(include_str!("redis/publish.lua")),
            snapshot: Script::new(include_str!("redis/snapshot.lua")),
            slot: Script::new(include_str!("redis/slot.lua")),
            renew: Script::new(include_str!("redis/renew.lua")),
        }
    }
}

struct Shared {
    config: RedisConfig,
    target: Target,
    hub: Arc<Hub>,
    /// The command connection; replaced by the health check when it goes silent (see
    /// [`health_loop`]). Cloned for each command: a clone is a handle onto the same connection.
    conn: Mutex<Conn>,
    scripts: Scripts,
    /// Random per process: names this relay's epochs, stream slots and ingest lease.
    relay_id: String,
    counter: AtomicU64,
    views: Mutex<HashMap<RunId, Arc<tokio::sync::Mutex<Option<RunView>>>>>,
    /// Runs watched by local subscriptions: how many, and how far this relay has them.
    channels: Mutex<HashMap<RunId, heads::Watched>>,
    /// The Pub/Sub connection's command side; `None` while disconnected.
    sink: Mutex<Option<PubSubSink>>,
    pubsub_up: AtomicBool,
    commands_up: AtomicBool,
    /// Stream slots held by this relay: slot id → workspace.
    slots: Mutex<HashMap<u64, Arc<str>>>,
    /// Whether this relay's Pub/Sub connection has seen a sync mark since it (re)connected, so
    /// that the ids it gives ingested messages agree with every other ingesting relay's.
    ingest_synced: AtomicBool,
    stats: RedisStats,
    /// The background tasks (Pub/Sub reader, ingest, health, renewals), restarted when they end.
    tasks: Arc<Tasks>,
}

/// The Redis broker. Background tasks (Pub/Sub, health, lease renewal, ingest) end when it is
/// dropped.
pub struct RedisBroker {
    shared: Arc<Shared>,
    _stop: watch::Sender<()>,
}

impl std::fmt::Debug for RedisBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisBroker")
            .field("url", &conn::redact(&self.shared.config.url))
            .field("relay_id", &self.shared.relay_id)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: impl std::fmt::Display) -> BrokerError {
    BrokerError::Unavailable(format!("redis: {e}"))
}

impl RedisBroker {
    /// Connects to Redis and starts the background tasks. Fails when the URL or an ingest pattern
    /// is invalid or Redis cannot be reached now; later outages are survived.
    pub async fn connect(config: RedisConfig, hub: Arc<Hub>) -> Result<Arc<Self>, BrokerError> {
        let target = conn::parse_target(&config.url, config.cluster).map_err(unavailable)?;
        for pattern in &config.ingest {
            ingest::check_pattern(pattern).map_err(unavailable)?;
        }
        let timeout = config.command_timeout;
        let conn = conn::connect(&target, timeout).await.map_err(unavailable)?;
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let shared = Arc::new(Shared {
            target,
            hub,
            conn: Mutex::new(conn),
            scripts: Scripts::default(),
            relay_id: format!("{:012x}", seed & 0xffff_ffff_ffff),
            counter: AtomicU64::new(0),
            views: Mutex::default(),
            channels: Mutex::default(),
            sink: Mutex::new(None),
            pubsub_up: AtomicBool::new(false),
            commands_up: AtomicBool::new(true),
            slots: Mutex::default(),
            ingest_synced: AtomicBool::new(false),
            stats: RedisStats::default(),
            tasks: Arc::default(),
            config,
        });
        let (stop, stop_rx) = watch::channel(());
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let backoff = shared.config.reconnect_backoff;
        let tasks = shared.tasks.clone();
        let ingest_tx = if shared.config.ingest.is_empty() {
            None
        } else {
            let (tx, rx) = mpsc::channel(ingest::INGEST_QUEUE);
            // Shared with each run of the task, so that a restarted task takes the queue over.
            let rx = Arc::new(tokio::sync::Mutex::new(rx));
            let (s, st) = (shared.clone(), stop_rx.clone());
            supervise(
                INGEST_TASK,
                tasks.clone(),
                stop_rx.clone(),
                backoff,
                move || ingest::ingest_loop(s.clone(), rx.clone(), st.clone()),
            );
            Some(tx)
        };
        let ready = Arc::new(Mutex::new(Some(ready_tx)));
        let (s, st) = (shared.clone(), stop_rx.clone());
        supervise(
            PUBSUB_TASK,
            tasks.clone(),
            stop_rx.clone(),
            backoff,
            move || pubsub::pubsub_loop(s.clone(), ingest_tx.clone(), st.clone(), ready.clone()),
        );
        let (s, st) = (shared.clone(), stop_rx.clone());
        supervise(
            "redis health",
            tasks.clone(),
            stop_rx.clone(),
            backoff,
            move || health_loop(s.clone(), st.clone()),
        );
        let (s, st) = (shared.clone(), stop_rx.clone());
        supervise(
            "redis head check",
            tasks.clone(),
            stop_rx.clone(),
            backoff,
            move || heads::head_check_loop(s.clone(), st.clone()),
        );
        let (s, st) = (Arc::downgrade(&shared), stop_rx.clone());
        supervise("stream slot renewal", tasks, stop_rx, backoff, move || {
            slots::renew_loop(s.clone(), st.clone())
        });
        // Wait for the first Pub/Sub connection (and, to ingest, its first sync mark) so that the
        // relay starts healthy.
        let synced = async {
            let _ = ready_rx.await;
            while !shared.config.ingest.is_empty() && !shared.ingest_synced.load(Ordering::Relaxed)
            {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let _ = tokio::time::timeout(timeout, synced).await;
        Ok(Arc::new(Self {
            shared,
            _stop: stop,
        }))
    }

    /// Counters.
    pub fn stats(&self) -> &RedisStats {
        &self.shared.stats
    }

    /// Whether this relay turns `--ingest` messages into events now: its Pub/Sub connection is up
    /// and has seen a sync mark, and neither the reader nor the ingest task is waiting to be
    /// restarted. False without `--ingest`.
    pub fn is_ingesting(&self) -> bool {
        let shared = &self.shared;
        !shared.config.ingest.is_empty()
            && shared.pubsub_up.load(Ordering::Relaxed)
            && shared.ingest_synced.load(Ordering::Relaxed)
            && !shared.tasks.is_down(INGEST_TASK)
            && !shared.tasks.is_down(PUBSUB_TASK)
    }

    /// Times a background task ended or panicked and was restarted.
    pub fn task_restarts(&self) -> u64 {
        self.shared.tasks.restarts()
    }

    /// Runs whose live channel this relay is subscribed to.
    pub fn subscribed_runs(&self) -> usize {
        lock(&self.shared.channels).len()
    }
}

impl Shared {
    fn meta_key(&self, run: &str) -> String {
        format!("{}:{{{run}}}:meta", self.config.key_prefix)
    }

    fn stream_key(&self, run: &str) -> String {
        format!("{}:{{{run}}}:events", self.config.key_prefix)
    }

    fn ingested_key(&self, run: &str) -> String {
        format!("{}:{{{run}}}:ingested", self.config.key_prefix)
    }

    /// The channel ingesting relays publish their sync marks on (see [`ingest`]).
    fn marks_channel(&self) -> String {
        format!("{}:ingest-marks", self.config.key_prefix)
    }

    fn channel(&self, run: &str) -> String {
        format!("{}:{{{run}}}:live", self.config.key_prefix)
    }

    /// The run a `live` channel belongs to.
    fn run_of_channel<'c>(&self, channel: &'c str) -> Option<&'c str> {
        channel
            .strip_prefix(self.config.key_prefix.as_str())?
            .strip_prefix(":{")?
            .strip_suffix("}:live")
    }

    fn fresh_epoch(&self) -> Arc<str> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!("{}.{n:x}", self.relay_id).into()
    }

    /// A handle onto the command connection.
    fn conn(&self) -> Conn {
        lock(&self.conn).clone()
    }

    /// Runs a command with the command timeout, tracking whether Redis answers.
    async fn call<T>(
        &self,
        fut: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, BrokerError> {
        let started = std::time::Instant::now();
        let result = tokio::time::timeout(self.config.command_timeout, fut).await;
        self.hub
            .metrics()
            .redis_round_trip
            .observe(started.elapsed());
        match result {
            Ok(Ok(v)) => {
                self.commands_up.store(true, Ordering::Relaxed);
                Ok(v)
            }
            Ok(Err(e)) => {
                if e.is_io_error()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.is_timeout()
                {
                    self.commands_up.store(false, Ordering::Relaxed);
                }
                Err(unavailable(e))
            }
            Err(_) => {
                self.commands_up.store(false, Ordering::Relaxed);
                Err(unavailable("command timed out"))
            }
        }
    }

    fn view_of(&self, run: &RunId) -> Arc<tokio::sync::Mutex<Option<RunView>>> {
        let mut views = lock(&self.views);
        if let Some(v) = views.get(run) {
            return v.clone();
        }
        if views.len() >= MAX_CACHED_RUNS {
            // Forget views nobody is publishing with right now.
            views.retain(|_, v| Arc::strong_count(v) > 1);
        }
        views.entry(run.clone()).or_default().clone()
    }

    async fn publish(
        &self,
        run: RunId,
        events: Vec<NewEvent>,
    ) -> Result<Vec<Arc<Event>>, BrokerError> {
        self.append(run, events, Vec::new()).await
    }

    /// Appends `events`; with `ingested` (one id per event: the message it was ingested from),
    /// those whose message another relay already appended are left out, atomically.
    async fn append(
        &self,
        run: RunId,
        mut events: Vec<NewEvent>,
        mut ingested: Vec<String>,
    ) -> Result<Vec<Arc<Event>>, BrokerError> {
        debug_assert!(ingested.is_empty() || ingested.len() == events.len());
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let view_lock = self.view_of(&run);
        let mut view = view_lock.lock().await;
        let (meta, stream, channel, ingested_key) = (
            self.meta_key(&run),
            self.stream_key(&run),
            self.channel(&run),
            self.ingested_key(&run),
        );
        let deadline = Instant::now() + PUBLISH_CONTENTION_BUDGET;
        for attempt in 1u64.. {
            // Taken, not cloned: the state is then this publish's to fold without a copy. Every
            // way out of this loop puts a view back, or leaves none to learn the run afresh.
            let base = view.take().unwrap_or_else(|| RunView {
                head: 0,
                epoch: self.fresh_epoch(),
                state: Arc::default(),
                stored_seq: 0,
                unstored_bytes: 0,
            });
            let ts = now_ts();
            let mut state = Arc::unwrap_or_clone(base.state);
            let mut out = Vec::with_capacity(events.len());
            let mut capped = 0;
            for (i, new) in (1..).zip(&events) {
                let seq = base.head + i;
                capped += u64::from(state.fold(seq, &ts, &new.typed).capped);
                out.push(Event::encode(
                    run.clone(),
                    base.epoch.clone(),
                    seq,
                    ts.clone(),
                    new,
                ));
            }
            // The fold fixes a run's status at its first terminal event, wherever it is in the batch.
            let terminal = state.status.is_terminal();
            let head = base.head + out.len() as u64;
            let unstored_bytes =
                base.unstored_bytes + out.iter().map(|e| e.frame.len()).sum::<usize>();
            // Store the state every few events, so that a publish does not cost a state's size;
            // readers fold the events after it (always still in the stream: fewer than
            // `history_limit`, and few bytes).
            let store = terminal
                || head - base.stored_seq >= STATE_EVERY.min(self.config.history_limit as u64)
                || unstored_bytes > MAX_UNSTORED_BYTES;
            let state_json = if store {
                serde_json::to_string(&state).map_err(unavailable)?
            } else {
                String::new()
            };
            let mut invocation = self.scripts.publish.prepare_invoke();
            invocation
                .key(&meta)
                .key(&stream)
                .key(&ingested_key)
                .arg(&channel)
                .arg(base.head)
                .arg(&*base.epoch)
                .arg(&state_json)
                .arg(if terminal { "1" } else { "0" })
                .arg(self.config.history_limit.max(1))
                .arg(ttl_ms(self.config.run_idle_ttl))
                .arg(ttl_ms(self.config.finished_retention))
                .arg(ingested.len())
                .arg(ttl_ms(INGEST_DEDUP_WINDOW))
                .arg(&ingested);
            for ev in &out {
                invocation.arg(ev.frame.as_str());
            }
            let mut conn = self.conn();
            let reply: Vec<String> = match self.call(invocation.invoke_async(&mut conn)).await {
                Ok(reply) => reply,
                Err(e) => {
                    // Whether the script ran is unknown: learn the run afresh next time.
                    *view = None;
                    return Err(e);
                }
            };
            match reply.first().map(String::as_str) {
                Some("ok") => {
                    self.stats.capped.fetch_add(capped, Ordering::Relaxed);
                    *view = Some(RunView {
                        head,
                        epoch: base.epoch,
                        state: Arc::new(state),
                        stored_seq: if store { head } else { base.stored_seq },
                        unstored_bytes: if store { 0 } else { unstored_bytes },
                    });
                    return Ok(out.into_iter().map(Arc::new).collect());
                }
                Some("conflict") => {
                    self.stats.publish_conflicts.fetch_add(1, Ordering::Relaxed);
                    *view = parse_view(reply.get(2..).unwrap_or_default())?;
                    if Instant::now() >= deadline {
                        break;
                    }
                    if attempt >= 4 {
                        tokio::time::sleep(jitter(attempt.min(20) * 50)).await;
                    }
                }
                Some("dup") if reply.len() >= 6 => {
                    *view = parse_view(&reply[2..])?;
                    let dups: Vec<usize> = reply[1]
                        .split(',')
                        .filter_map(|i| i.parse::<usize>().ok())
                        .collect();
                    let before = events.len();
                    let mut i = 0;
                    events.retain(|_| {
                        i += 1;
                        !dups.contains(&i)
                    });
                    let mut i = 0;
                    ingested.retain(|_| {
                        i += 1;
                        !dups.contains(&i)
                    });
                    let dropped = before - events.len();
                    if dropped == 0 {
                        return Err(unavailable(format!("unexpected reply {reply:?}")));
                    }
                    self.stats
                        .ingest_duplicates
                        .fetch_add(dropped as u64, Ordering::Relaxed);
                    if events.is_empty() {
                        return Ok(Vec::new());
                    }
                }
                Some("finished") => {
                    *view = parse_view(reply.get(2..).unwrap_or_default())?;
                    return Err(BrokerError::RunFinished(run));
                }
                _ => {
                    *view = None;
                    return Err(unavailable(format!("unexpected reply {reply:?}")));
                }
            }
        }
        Err(unavailable("too many concurrent publishers for this run"))
    }

    async fn snapshot(&self, run: RunId, since: Option<u64>) -> Result<Snapshot, BrokerError> {
        let mut invocation = self.scripts.snapshot.prepare_invoke();
        invocation
            .key(self.meta_key(&run))
            .key(self.stream_key(&run))
            .arg(since.map_or_else(|| "-".to_owned(), |s| s.to_string()));
        let mut conn = self.conn();
        // A read is safe to repeat: the first command on a connection that broke while idle
        // fails and makes it reconnect, so try once more before answering 503.
        let reply: Vec<String> = match self.call(invocation.invoke_async(&mut conn)).await {
            Ok(reply) => reply,
            Err(_) => match self.call(invocation.invoke_async(&mut conn)).await {
                Ok(reply) => reply,
                Err(e) => {
                    self.snapshot_failed(&run);
                    return Err(e);
                }
            },
        };
        // [head, epoch, state, stored_seq, t, tail frame × t, replay, frame…]
        let tail = reply
            .get(4)
            .and_then(|t| t.parse::<usize>().ok())
            .filter(|t| reply.len() > 5 + t)
            .ok_or_else(|| unavailable(format!("unexpected reply {reply:?}")))?;
        let mut fields = reply[..4].to_vec();
        fields.extend_from_slice(&reply[5..5 + tail]);
        // A run that does not exist (yet): head 0 and no epoch. A subscription adopts the epoch
        // of the run's first event when it comes (`Follow::on_event`).
        let view = parse_view(&fields)?.unwrap_or_else(|| RunView {
            head: 0,
            epoch: "".into(),
            state: Arc::default(),
            stored_seq: 0,
            unstored_bytes: 0,
        });
        let replay = match reply[5 + tail].as_str() {
            "none" => Replay::NotAsked,
            "gap" => Replay::Gap,
            _ => {
                let frames = &reply[6 + tail..];
                let mut events = Vec::with_capacity(frames.len());
                for frame in frames {
                    let ev = Event::from_frame(view.epoch.clone(), frame.clone())
                        .map_err(|e| unavailable(format!("stored frame: {e}")))?;
                    events.push(Arc::new(ev));
                }
                Replay::Events(events)
            }
        };
        Ok(Snapshot {
            epoch: view.epoch,
            head: view.head,
            state: view.state,
            replay,
        })
    }
}

fn ttl_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// `[head, epoch, state, stored_seq, frame…]` of a script reply: the run's view, with the frames
/// after the stored state folded onto it; `None` when the run has no epoch.
fn parse_view(fields: &[String]) -> Result<Option<RunView>, BrokerError> {
    let [head, epoch, state, stored_seq, tail @ ..] = fields else {
        return Err(unavailable(format!("unexpected reply {fields:?}")));
    };
    if epoch.is_empty() {
        return Ok(None);
    }
    let number = |n: &String| {
        n.parse::<u64>()
            .map_err(|_| unavailable(format!("bad seq {n:?}")))
    };
    let (head, stored_seq) = (number(head)?, number(stored_seq)?);
    let mut state: RunState = if state.is_empty() {
        RunState::default()
    } else {
        serde_json::from_str(state).map_err(|e| unavailable(format!("stored state: {e}")))?
    };
    for frame in tail {
        let env: runwire_protocol::Envelope =
            serde_json::from_str(frame).map_err(|e| unavailable(format!("stored frame: {e}")))?;
        match runwire_protocol::RunEvent::parse(&env.event, &env.data) {
            Ok(typed) => {
                state.apply(env.seq, &env.ts, &typed);
            }
            // Validated when published; should it not parse now, it still takes its seq.
            Err(_) => state.seq = state.seq.max(env.seq),
        }
    }
    if state.seq < head {
        // Only when relays trim the stream shorter than others store the state (different
        // `--history-limit`s): the state misses the effects of the trimmed events.
        tracing::warn!(
            head,
            stored_seq,
            "the events after a run's stored state were trimmed; its state may be stale"
        );
        state.seq = head;
    }
    Ok(Some(RunView {
        head,
        epoch: epoch.as_str().into(),
        state: Arc::new(state),
        stored_seq,
        unstored_bytes: tail.iter().map(String::len).sum(),
    }))
}

/// Sleeps `d`, or returns false when the broker is being dropped.
async fn pause(stop: &mut watch::Receiver<()>, d: Duration) -> bool {
    tokio::select! {
        _ = stop.changed() => false,
        () = tokio::time::sleep(d) => true,
    }
}

/// Pings through the command connection, so `/health` notices a Redis that stopped answering
/// even when nothing is published.
///
/// A connection can also go silent while Redis is fine: a load balancer or NAT in between dropped
/// it without a reset, a peer vanished without closing, or the client library's own state stopped
/// sending (the chaos soak caught the cluster client so, after two nodes restarted within
/// seconds: every command of one relay timed out while the other relays were served). Nothing
/// errors then; every command just times out, and neither the connection manager nor the cluster
/// client reconnects on a timeout. So after `SILENT_PINGS` pings in a row that got no answer
/// within `command_timeout`, the relay opens a new command connection and drops the old one. A
/// Redis that refuses or resets connections is left to the client's own reconnection, as before.
async fn health_loop(shared: Arc<Shared>, mut stop: watch::Receiver<()>) {
    let mut silent = 0;
    loop {
        let mut conn = shared.conn();
        let started = Instant::now();
        let pong: Result<String, _> = shared
            .call(::redis::cmd("PING").query_async(&mut conn))
            .await;
        silent = match pong {
            Err(_) if started.elapsed() >= shared.config.command_timeout => silent + 1,
            _ => 0,
        };
        if silent >= SILENT_PINGS {
            shared.replace_conn().await;
            silent = 0;
        }
        if !pause(&mut stop, shared.config.health_interval).await {
            return;
        }
    }
}

/// Health-check pings in a row without an answer after which the command connection is replaced.
const SILENT_PINGS: u32 = 3;

impl Shared {
    /// Opens a new command connection in place of one that stopped answering; keeps the old one
    /// when Redis cannot be reached now (the next silent pings try again).
    async fn replace_conn(&self) {
        match conn::connect(&self.target, self.config.command_timeout).await {
            Ok(fresh) => {
                *lock(&self.conn) = fresh;
                self.stats
                    .command_reconnects
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    "redis: the command connection stopped answering; replaced by a new one"
                );
            }
            Err(e) => tracing::warn!(
                error = %e,
                "redis: the command connection stopped answering, and a new one cannot be opened \
                 now"
            ),
        }
    }
}

/// Down when Redis does not answer; degraded (still not ready) while a background task waits to be
/// restarted or ingest, when asked for, is not running.
fn health_of(connected: bool, tasks_down: u64, ingest_off: bool) -> BrokerHealth {
    if !connected {
        BrokerHealth::Down
    } else if tasks_down > 0 || ingest_off {
        BrokerHealth::Degraded
    } else {
        BrokerHealth::Up
    }
}

impl Broker for RedisBroker {
    fn kind(&self) -> &'static str {
        "redis"
    }

    fn publish(
        &self,
        run: RunId,
        events: Vec<NewEvent>,
    ) -> BoxFuture<'_, Result<Vec<Arc<Event>>, BrokerError>> {
        self.shared.publish(run, events).boxed()
    }

    fn snapshot(
        &self,
        run: RunId,
        since: Option<u64>,
    ) -> BoxFuture<'_, Result<Snapshot, BrokerError>> {
        self.shared.snapshot(run, since).boxed()
    }

    fn watch(&self, run: RunId) -> BoxFuture<'_, Result<(), BrokerError>> {
        self.shared.watch(run).boxed()
    }

    fn unwatch(&self, run: RunId) {
        self.shared.clone().unwatch(run);
    }

    fn stream_slot(
        &self,
        workspace: Arc<str>,
        limit: usize,
    ) -> BoxFuture<'_, Result<Slot, BrokerError>> {
        self.shared.clone().stream_slot(workspace, limit).boxed()
    }

    fn health(&self) -> BrokerHealth {
        let shared = &self.shared;
        health_of(
            shared.pubsub_up.load(Ordering::Relaxed) && shared.commands_up.load(Ordering::Relaxed),
            shared.tasks.down(),
            !shared.config.ingest.is_empty() && !self.is_ingesting(),
        )
    }

    fn samples(&self) -> Vec<super::Sample> {
        let stats = &self.shared.stats;
        let counter = |name, help, value: &AtomicU64| super::Sample {
            name,
            help,
            counter: true,
            value: value.load(Ordering::Relaxed),
        };
        let mut samples = vec![
            counter(
                "runwire_redis_publish_conflicts_total",
                "Publishes retried because another relay moved the run's head first.",
                &stats.publish_conflicts,
            ),
            counter(
                "runwire_redis_reconnects_total",
                "Times the Redis Pub/Sub connection was re-established.",
                &stats.reconnects,
            ),
            counter(
                "runwire_redis_command_reconnects_total",
                "Times the Redis command connection went silent and was replaced by a new one.",
                &stats.command_reconnects,
            ),
            counter(
                "runwire_ingested_total",
                "Messages from --ingest channels appended as events.",
                &stats.ingested,
            ),
            counter(
                "runwire_ingest_duplicates_total",
                "Messages from --ingest channels another relay had already appended.",
                &stats.ingest_duplicates,
            ),
            counter(
                "runwire_ingest_dropped_total",
                "Messages from --ingest channels not appended.",
                &stats.ingest_dropped,
            ),
            counter(
                "runwire_redis_head_resyncs_total",
                "Runs whose subscriptions the head check made catch up: events that never arrived through Pub/Sub, or a catch-up that failed.",
                &stats.head_resyncs,
            ),
            super::capped_sample(stats.capped.load(Ordering::Relaxed)),
            super::Sample {
                name: "runwire_redis_task_restarts_total",
                help: "Background tasks of the Redis broker that ended or panicked and were restarted.",
                counter: true,
                value: self.shared.tasks.restarts(),
            },
            super::Sample {
                name: "runwire_redis_tasks_down",
                help: "Background tasks of the Redis broker waiting to be restarted.",
                counter: false,
                value: self.shared.tasks.down(),
            },
            super::Sample {
                name: "runwire_redis_watched_runs",
                help: "Runs whose live channel this relay subscribes to.",
                counter: false,
                value: self.subscribed_runs() as u64,
            },
        ];
        if !self.shared.config.ingest.is_empty() {
            samples.push(super::Sample {
                name: "runwire_ingest_up",
                help: "Whether --ingest messages are being turned into events now (1) or not (0).",
                counter: false,
                value: u64::from(self.is_ingesting()),
            });
        }
        samples
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_down_or_ingest_off_is_degraded_and_a_lost_connection_down() {
        assert_eq!(health_of(true, 0, false), BrokerHealth::Up);
        assert_eq!(health_of(true, 1, false), BrokerHealth::Degraded);
        assert_eq!(health_of(true, 0, true), BrokerHealth::Degraded);
        assert_eq!(health_of(false, 0, false), BrokerHealth::Down);
        assert_eq!(health_of(false, 2, true), BrokerHealth::Down);
    }
}
