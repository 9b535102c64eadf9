//! The Redis broker: several relays behind a load balancer share runs through Redis (one server
//! or a Redis Cluster). `docs/redis.md` is the operator's view of this module.
//!
//! Per run, all under one hash tag so that a run lives in one cluster slot:
//! - `{prefix}:{<run>}:meta`, a hash: `head` (last seq), `epoch`, `state` (the [`RunState`] JSON
//!   at `head`), `done` ("1" after the terminal event);
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
//! publishers racing on different relays. Each relay keeps its last view of a run, so a run
//! published through one relay costs one round trip per publish (a batch is one script call);
//! publishes of one run through one relay are serialized to keep that view valid.
//!
//! **Epochs.** A run that has no meta hash (new, expired, or lost with the server's data) gets a
//! fresh epoch when it is first written. Its seqs start again at 1 under the new epoch, which
//! subscriptions notice (the event's epoch, or the snapshot's, differs from theirs) and answer
//! with `reset`.
//!
//! **Fan-out.** One Pub/Sub connection per relay, subscribed to the `live` channels of the runs
//! local subscriptions watch (reference counted), decodes nothing but the frame header
//! ([`Event::from_frame`]) and hands the events to [`Hub::deliver`]. Events reach local
//! subscribers only through that channel, also on the relay that published them, so they arrive
//! in the order Redis appended them. On a cluster the connection goes to one node: a `PUBLISH`
//! on any node reaches subscribers on every node.
//!
//! **Outages.** Commands time out after `command_timeout` and fail with
//! [`BrokerError::Unavailable`]; nothing half-written is reported as accepted. The Pub/Sub
//! connection is pinged every `health_interval`; when it drops, the relay reconnects with
//! backoff, resubscribes, then calls [`Hub::resync_all`] so that every subscription catches up
//! from its last seq through a fresh snapshot (or resets when the history no longer reaches
//! back, or the epoch changed).
//!
//! **Stream limits.** A workspace's concurrent streams are a sorted set of leases
//! (`{prefix}:streams:<workspace>`, score = lease expiry by Redis' clock), renewed every third of
//! `stream_lease` while held, so the slots of a relay that died lapse on their own.
//!
//! **Ingest.** See [`ingest`]. Every relay with `--ingest` pattern-subscribes; the one relay
//! holding the ingest lease (`{prefix}:ingest-lease`) appends what it receives, so each message
//! becomes one event however many relays run.

pub mod ingest;

mod conn;

use std::collections::HashMap;
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use ::redis::aio::{PubSubSink, PubSubStream};
use ::redis::{Msg, RedisError, Script};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt as _, StreamExt as _};
use runwire_protocol::{RunState, is_valid_run_id};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use self::conn::{Conn, Target};
use super::{
    Broker, BrokerError, BrokerHealth, Event, NewEvent, Replay, RunId, Slot, Snapshot, now_ts,
};
use crate::hub::{Hub, lock};

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
    /// Lease of the ingest leader; another relay takes over at most this long after it died.
    pub ingest_lease: Duration,
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
            ingest_lease: Duration::from_secs(10),
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
    /// Ingested messages not appended (not the leader, unparseable channel, refused publish).
    pub ingest_dropped: AtomicU64,
}

/// Attempts of one publish racing other relays before it gives up with 503.
const MAX_PUBLISH_ATTEMPTS: usize = 64;
/// Runs whose last view a relay keeps; past it, views not in use are forgotten (the next
/// publish of such a run costs one extra round trip).
const MAX_CACHED_RUNS: usize = 10_000;
/// Ingested messages waiting to be appended. When full, the Pub/Sub reader waits, which delays
/// live delivery on this relay rather than dropping messages.
const INGEST_QUEUE: usize = 4096;
/// Ingested messages appended per round.
const INGEST_BATCH: usize = 512;
/// Channels per `SUBSCRIBE` when resubscribing after a reconnect.
const SUBSCRIBE_CHUNK: usize = 512;

/// This relay's view of a run: what it last wrote or was told by the script.
#[derive(Debug, Clone)]
struct RunView {
    head: u64,
    epoch: Arc<str>,
    state: Arc<RunState>,
}

struct Scripts {
    publish: Script,
    snapshot: Script,
    slot: Script,
    renew: Script,
    lease: Script,
}

impl Default for Scripts {
    fn default() -> Self {
        Self {
            publish: Script::new(include_str!("redis/publish.lua")),
            snapshot: Script::new(include_str!("redis/snapshot.lua")),
            slot: Script::new(include_str!("redis/slot.lua")),
            renew: Script::new(include_str!("redis/renew.lua")),
            lease: Script::new(include_str!("redis/lease.lua")),
        }
    }
}

struct Shared {
    config: RedisConfig,
    target: Target,
    hub: Arc<Hub>,
    conn: Conn,
    scripts: Scripts,
    /// Random per process: names this relay's epochs, stream slots and ingest lease.
    relay_id: String,
    counter: AtomicU64,
    views: Mutex<HashMap<RunId, Arc<tokio::sync::Mutex<Option<RunView>>>>>,
    /// Runs watched by local subscriptions, with how many.
    channels: Mutex<HashMap<RunId, usize>>,
    /// The Pub/Sub connection's command side; `None` while disconnected.
    sink: Mutex<Option<PubSubSink>>,
    pubsub_up: AtomicBool,
    commands_up: AtomicBool,
    /// Stream slots held by this relay: slot id → workspace.
    slots: Mutex<HashMap<u64, Arc<str>>>,
    /// Until when this relay surely holds the ingest lease.
    ingest_until: Mutex<Option<Instant>>,
    stats: RedisStats,
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
        let conn = match tokio::time::timeout(timeout, conn::connect(&target, timeout)).await {
            Ok(result) => result.map_err(unavailable)?,
            Err(_) => return Err(unavailable("connecting timed out")),
        };
        let seed = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let shared = Arc::new(Shared {
            target,
            hub,
            conn,
            scripts: Scripts::default(),
            relay_id: format!("{:012x}", seed & 0xffff_ffff_ffff),
            counter: AtomicU64::new(0),
            views: Mutex::default(),
            channels: Mutex::default(),
            sink: Mutex::new(None),
            pubsub_up: AtomicBool::new(false),
            commands_up: AtomicBool::new(true),
            slots: Mutex::default(),
            ingest_until: Mutex::new(None),
            stats: RedisStats::default(),
            config,
        });
        let (stop, stop_rx) = watch::channel(());
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let ingest_tx = if shared.config.ingest.is_empty() {
            None
        } else {
            let (tx, rx) = mpsc::channel(INGEST_QUEUE);
            tokio::spawn(ingest_loop(shared.clone(), rx, stop_rx.clone()));
            tokio::spawn(lease_loop(shared.clone(), stop_rx.clone()));
            Some(tx)
        };
        tokio::spawn(pubsub_loop(
            shared.clone(),
            ingest_tx,
            stop_rx.clone(),
            ready_tx,
        ));
        tokio::spawn(health_loop(shared.clone(), stop_rx.clone()));
        tokio::spawn(renew_loop(Arc::downgrade(&shared), stop_rx));
        // Wait for the first Pub/Sub connection so that the relay starts healthy.
        let _ = tokio::time::timeout(timeout, ready_rx).await;
        Ok(Arc::new(Self {
            shared,
            _stop: stop,
        }))
    }

    /// Counters.
    pub fn stats(&self) -> &RedisStats {
        &self.shared.stats
    }

    /// Whether this relay holds the ingest lease now.
    pub fn is_ingest_leader(&self) -> bool {
        self.shared.is_ingest_leader()
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

    fn is_ingest_leader(&self) -> bool {
        lock(&self.ingest_until).is_some_and(|until| Instant::now() < until)
    }

    /// Runs a command with the command timeout, tracking whether Redis answers.
    async fn call<T>(
        &self,
        fut: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, BrokerError> {
        match tokio::time::timeout(self.config.command_timeout, fut).await {
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
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let view_lock = self.view_of(&run);
        let mut view = view_lock.lock().await;
        let (meta, stream, channel) = (
            self.meta_key(&run),
            self.stream_key(&run),
            self.channel(&run),
        );
        let n = events.len() as u64;
        for _ in 0..MAX_PUBLISH_ATTEMPTS {
            let base = view.clone().unwrap_or_else(|| RunView {
                head: 0,
                epoch: self.fresh_epoch(),
                state: Arc::default(),
            });
            let ts = now_ts();
            let mut state = (*base.state).clone();
            let mut out = Vec::with_capacity(events.len());
            for (i, new) in (1..).zip(&events) {
                let seq = base.head + i;
                state.apply(seq, &ts, &new.typed);
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
            let state_json = serde_json::to_string(&state).map_err(unavailable)?;
            let mut invocation = self.scripts.publish.prepare_invoke();
            invocation
                .key(&meta)
                .key(&stream)
                .arg(&channel)
                .arg(base.head)
                .arg(&*base.epoch)
                .arg(&state_json)
                .arg(if terminal { "1" } else { "0" })
                .arg(self.config.history_limit.max(1))
                .arg(ttl_ms(self.config.run_idle_ttl))
                .arg(ttl_ms(self.config.finished_retention));
            for ev in &out {
                invocation.arg(ev.frame.as_str());
            }
            let mut conn = self.conn.clone();
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
                    *view = Some(RunView {
                        head: base.head + n,
                        epoch: base.epoch,
                        state: Arc::new(state),
                    });
                    return Ok(out.into_iter().map(Arc::new).collect());
                }
                Some("conflict") => {
                    self.stats.publish_conflicts.fetch_add(1, Ordering::Relaxed);
                    *view = parse_view(&reply[1..])?;
                }
                Some("finished") => {
                    *view = parse_view(&reply[1..])?;
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
            .arg(since.map_or_else(|| "-".to_owned(), |s| s.to_string()))
            .arg(&*self.fresh_epoch())
            .arg(ttl_ms(self.config.run_idle_ttl));
        let mut conn = self.conn.clone();
        // A read is safe to repeat: the first command on a connection that broke while idle
        // fails and makes it reconnect, so try once more before answering 503.
        let reply: Vec<String> = match self.call(invocation.invoke_async(&mut conn)).await {
            Ok(reply) => reply,
            Err(_) => self.call(invocation.invoke_async(&mut conn)).await?,
        };
        if reply.len() < 4 {
            return Err(unavailable(format!("unexpected reply {reply:?}")));
        }
        let view = parse_view(&reply[..3])?.ok_or_else(|| unavailable("snapshot without epoch"))?;
        let replay = match reply[3].as_str() {
            "none" => Replay::NotAsked,
            "gap" => Replay::Gap,
            _ => {
                let mut events = Vec::with_capacity(reply.len() - 4);
                for frame in &reply[4..] {
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

    async fn watch(&self, run: RunId) -> Result<(), BrokerError> {
        *lock(&self.channels).entry(run.clone()).or_insert(0) += 1;
        let sink = lock(&self.sink).clone();
        let result = match sink {
            None => Err(unavailable("pub/sub connection is down")),
            Some(mut sink) => self.call(sink.subscribe(self.channel(&run))).await,
        };
        // Failed or not, the caller balances this with `unwatch`; meanwhile the run stays in
        // `channels`, so a reconnecting Pub/Sub connection subscribes to it.
        result
    }

    fn unwatch(self: Arc<Self>, run: RunId) {
        let last = {
            let mut channels = lock(&self.channels);
            match channels.get_mut(&run) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    channels.remove(&run);
                    true
                }
                None => false,
            }
        };
        let sink = lock(&self.sink).clone();
        let (true, Some(mut sink), Ok(rt)) = (last, sink, tokio::runtime::Handle::try_current())
        else {
            return;
        };
        rt.spawn(async move {
            let channel = self.channel(&run);
            let _ = self.call(sink.unsubscribe(&channel)).await;
            // A watch of the same run may have subscribed while the unsubscribe was on its way and
            // been undone by it: subscribe again and make its subscriptions catch up.
            if lock(&self.channels).contains_key(&run)
                && self.call(sink.subscribe(&channel)).await.is_ok()
            {
                self.hub.resync(&run);
            }
        });
    }

    async fn stream_slot(
        self: Arc<Self>,
        workspace: Arc<str>,
        limit: usize,
    ) -> Result<Slot, BrokerError> {
        let id = self.counter.fetch_add(1, Ordering::Relaxed);
        let member = format!("{}:{id}", self.relay_id);
        let mut invocation = self.scripts.slot.prepare_invoke();
        invocation
            .key(self.streams_key(&workspace))
            .arg(&member)
            .arg(limit)
            .arg(ttl_ms(self.config.stream_lease));
        let mut conn = self.conn.clone();
        // Registered before the call so that a slot taken just before a renewal is renewed too.
        lock(&self.slots).insert(id, workspace.clone());
        let taken: Result<i64, _> = self.call(invocation.invoke_async(&mut conn)).await;
        match taken {
            Ok(1) => Ok(Slot::new(SlotGuard {
                shared: Arc::downgrade(&self),
                id,
                workspace,
            })),
            other => {
                lock(&self.slots).remove(&id);
                match other {
                    Ok(_) => Err(BrokerError::LimitReached),
                    Err(e) => Err(e),
                }
            }
        }
    }

    fn streams_key(&self, workspace: &str) -> String {
        format!("{}:streams:{workspace}", self.config.key_prefix)
    }

    /// Hands the events of one `live` message to the hub.
    fn deliver(&self, run: &str, payload: &[u8]) {
        let Ok(payload) = std::str::from_utf8(payload) else {
            tracing::warn!(run, "ignoring a non-UTF-8 live message");
            return;
        };
        let Some((epoch, frames)) = payload.split_once('\n') else {
            tracing::warn!(run, "ignoring a malformed live message");
            return;
        };
        let epoch: Arc<str> = epoch.into();
        for frame in frames.split('\n') {
            match Event::from_frame(epoch.clone(), frame.to_owned()) {
                Ok(ev) => self.hub.deliver(&Arc::new(ev)),
                Err(e) => tracing::warn!(run, error = %e, "ignoring a malformed live frame"),
            }
        }
    }

    async fn on_message(&self, msg: Msg, ingest: Option<&mpsc::Sender<IngestMsg>>) {
        let channel = msg.get_channel_name();
        if msg.from_pattern() {
            let (Some(tx), Ok(pattern)) = (ingest, msg.get_pattern::<String>()) else {
                return;
            };
            // A pattern as wide as `*` also matches the relay's own channels.
            if self.run_of_channel(channel).is_some() {
                return;
            }
            let item = IngestMsg {
                channel: channel.to_owned(),
                pattern,
                payload: msg.get_payload_bytes().to_vec(),
            };
            let _ = tx.send(item).await;
        } else if let Some(run) = self.run_of_channel(channel) {
            self.deliver(run, msg.get_payload_bytes());
        }
    }

    /// Waits (boundedly) until the command connection answers again after an outage.
    async fn commands_ready(&self, stop: &mut watch::Receiver<()>) {
        for _ in 0..20 {
            let mut conn = self.conn.clone();
            let pong: Result<String, _> =
                self.call(::redis::cmd("PING").query_async(&mut conn)).await;
            if pong.is_ok() || !pause(stop, self.config.reconnect_backoff.0).await {
                return;
            }
        }
    }

    /// Subscribes a fresh Pub/Sub connection to everything this relay needs.
    async fn resubscribe(&self, sink: &mut PubSubSink) -> Result<(), BrokerError> {
        let channels: Vec<String> = lock(&self.channels)
            .keys()
            .map(|run| self.channel(run))
            .collect();
        for chunk in channels.chunks(SUBSCRIBE_CHUNK) {
            self.call(sink.subscribe(chunk)).await?;
        }
        if !self.config.ingest.is_empty() {
            self.call(sink.psubscribe(&self.config.ingest)).await?;
        }
        Ok(())
    }
}

fn ttl_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// `[head, epoch, state]` of a script reply; `None` when the run has no epoch.
fn parse_view(fields: &[String]) -> Result<Option<RunView>, BrokerError> {
    let [head, epoch, state, ..] = fields else {
        return Err(unavailable(format!("unexpected reply {fields:?}")));
    };
    if epoch.is_empty() {
        return Ok(None);
    }
    let head: u64 = head
        .parse()
        .map_err(|_| unavailable(format!("bad head {head:?}")))?;
    let state: RunState = if state.is_empty() {
        RunState::default()
    } else {
        serde_json::from_str(state).map_err(|e| unavailable(format!("stored state: {e}")))?
    };
    Ok(Some(RunView {
        head,
        epoch: epoch.as_str().into(),
        state: Arc::new(state),
    }))
}

struct SlotGuard {
    shared: Weak<Shared>,
    id: u64,
    workspace: Arc<str>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        lock(&shared.slots).remove(&self.id);
        // Free the slot now; if this fails the lease, no longer renewed, lapses by itself.
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let key = shared.streams_key(&self.workspace);
            let member = format!("{}:{}", shared.relay_id, self.id);
            rt.spawn(async move {
                let mut conn = shared.conn.clone();
                let _: Result<i64, _> = shared
                    .call(
                        ::redis::cmd("ZREM")
                            .arg(&key)
                            .arg(&member)
                            .query_async(&mut conn),
                    )
                    .await;
            });
        }
    }
}

struct IngestMsg {
    channel: String,
    pattern: String,
    payload: Vec<u8>,
}

/// Sleeps `d`, or returns false when the broker is being dropped.
async fn pause(stop: &mut watch::Receiver<()>, d: Duration) -> bool {
    tokio::select! {
        _ = stop.changed() => false,
        () = tokio::time::sleep(d) => true,
    }
}

async fn pubsub_loop(
    shared: Arc<Shared>,
    ingest: Option<mpsc::Sender<IngestMsg>>,
    mut stop: watch::Receiver<()>,
    ready: tokio::sync::oneshot::Sender<()>,
) {
    let (min, max) = shared.config.reconnect_backoff;
    let mut backoff = min;
    let mut ready = Some(ready);
    let mut attempt = 0usize;
    loop {
        let connected = tokio::select! {
            _ = stop.changed() => return,
            c = conn::connect_pubsub(&shared.target, attempt, shared.config.command_timeout) => c,
        };
        attempt += 1;
        let (mut sink, mut stream): (PubSubSink, PubSubStream) = match connected {
            Ok(pubsub) => pubsub.split(),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "redis pub/sub: cannot connect");
                if !pause(&mut stop, backoff).await {
                    return;
                }
                backoff = (backoff * 2).min(max);
                continue;
            }
        };
        if let Err(e) = shared.resubscribe(&mut sink).await {
            tracing::warn!(error = %e, "redis pub/sub: cannot subscribe");
            if !pause(&mut stop, backoff).await {
                return;
            }
            backoff = (backoff * 2).min(max);
            continue;
        }
        *lock(&shared.sink) = Some(sink.clone());
        shared.pubsub_up.store(true, Ordering::Relaxed);
        backoff = min;
        if let Some(ready) = ready.take() {
            // Nothing watched a run before the first connection.
            let _ = ready.send(());
        } else {
            shared.stats.reconnects.fetch_add(1, Ordering::Relaxed);
            tracing::info!("redis pub/sub: reconnected; subscriptions catch up");
            // Whatever was published while this relay was not subscribed is in the streams; the
            // subscriptions read it through the command connection, so wait for that one too.
            shared.commands_ready(&mut stop).await;
            shared.hub.resync_all();
        }
        let mut ping = tokio::time::interval(shared.config.health_interval);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.changed() => return,
                msg = stream.next() => match msg {
                    Some(msg) => shared.on_message(msg, ingest.as_ref()).await,
                    None => break,
                },
                _ = ping.tick() => {
                    let pong = tokio::time::timeout(
                        shared.config.command_timeout,
                        sink.ping::<::redis::Value>(),
                    );
                    if !matches!(pong.await, Ok(Ok(_))) {
                        break;
                    }
                }
            }
        }
        tracing::warn!("redis pub/sub: connection lost; reconnecting");
        *lock(&shared.sink) = None;
        shared.pubsub_up.store(false, Ordering::Relaxed);
    }
}

/// Pings through the command connection, so `/health` notices a Redis that stopped answering
/// even when nothing is published.
async fn health_loop(shared: Arc<Shared>, mut stop: watch::Receiver<()>) {
    loop {
        let mut conn = shared.conn.clone();
        let _: Result<String, _> = shared
            .call(::redis::cmd("PING").query_async(&mut conn))
            .await;
        if !pause(&mut stop, shared.config.health_interval).await {
            return;
        }
    }
}

/// Renews the leases of the stream slots this relay holds.
async fn renew_loop(shared: Weak<Shared>, mut stop: watch::Receiver<()>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        let every = s.config.stream_lease / 3;
        let mut by_workspace: HashMap<Arc<str>, Vec<String>> = HashMap::new();
        for (id, ws) in lock(&s.slots).iter() {
            by_workspace
                .entry(ws.clone())
                .or_default()
                .push(format!("{}:{id}", s.relay_id));
        }
        for (ws, members) in by_workspace {
            let mut invocation = s.scripts.renew.prepare_invoke();
            invocation
                .key(s.streams_key(&ws))
                .arg(ttl_ms(s.config.stream_lease))
                .arg(members);
            let mut conn = s.conn.clone();
            let _: Result<i64, _> = s.call(invocation.invoke_async(&mut conn)).await;
        }
        drop(s);
        if !pause(&mut stop, every).await {
            return;
        }
    }
}

/// Takes and keeps the ingest lease when it is free.
async fn lease_loop(shared: Arc<Shared>, mut stop: watch::Receiver<()>) {
    let lease = shared.config.ingest_lease;
    let key = format!("{}:ingest-lease", shared.config.key_prefix);
    loop {
        let started = Instant::now();
        let mut invocation = shared.scripts.lease.prepare_invoke();
        invocation
            .key(&key)
            .arg(&shared.relay_id)
            .arg(ttl_ms(lease));
        let mut conn = shared.conn.clone();
        let held: Result<i64, _> = shared.call(invocation.invoke_async(&mut conn)).await;
        match held {
            // Trust the lease for less than it lasts in Redis, counted from before the request:
            // this relay stops ingesting before another can take over.
            Ok(1) => *lock(&shared.ingest_until) = Some(started + lease * 3 / 4),
            Ok(_) => *lock(&shared.ingest_until) = None,
            // Unknown: keep the deadline, which lapses by itself.
            Err(_) => {}
        }
        if !pause(&mut stop, lease / 4).await {
            return;
        }
    }
}

/// Appends ingested messages, grouped into one publish per run per round.
async fn ingest_loop(
    shared: Arc<Shared>,
    mut rx: mpsc::Receiver<IngestMsg>,
    mut stop: watch::Receiver<()>,
) {
    loop {
        let first = tokio::select! {
            _ = stop.changed() => return,
            m = rx.recv() => match m { Some(m) => m, None => return },
        };
        let mut batch = vec![first];
        while batch.len() < INGEST_BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        if !shared.is_ingest_leader() {
            shared
                .stats
                .ingest_dropped
                .fetch_add(batch.len() as u64, Ordering::Relaxed);
            continue;
        }
        let mut runs: Vec<(RunId, Vec<NewEvent>)> = Vec::new();
        for msg in batch {
            let run = ingest::run_from_channel(&msg.pattern, &msg.channel)
                .filter(|run| is_valid_run_id(run));
            let Some(run) = run else {
                tracing::debug!(channel = msg.channel, "ingest: no valid run id in channel");
                shared.stats.ingest_dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let event = ingest::map_payload(&msg.payload);
            match runs.iter_mut().find(|(r, _)| &**r == run) {
                Some((_, events)) => events.push(event),
                None => runs.push((run.into(), vec![event])),
            }
        }
        let publishes = runs.into_iter().map(|(run, mut events)| {
            // A terminal event ends the batch: what follows it would be refused anyway.
            if let Some(end) = events.iter().position(|e| e.typed.is_terminal()) {
                let extra = events.len() - end - 1;
                shared
                    .stats
                    .ingest_dropped
                    .fetch_add(extra as u64, Ordering::Relaxed);
                events.truncate(end + 1);
            }
            let shared = shared.clone();
            async move {
                let n = events.len() as u64;
                match shared.publish(run.clone(), events).await {
                    Ok(_) => shared.stats.ingested.fetch_add(n, Ordering::Relaxed),
                    Err(BrokerError::RunFinished(_)) => {
                        tracing::debug!(run = %run, "ingest: the run has already ended");
                        shared.stats.ingest_dropped.fetch_add(n, Ordering::Relaxed)
                    }
                    Err(e) => {
                        tracing::warn!(run = %run, error = %e, "ingest: message not appended");
                        shared.stats.ingest_dropped.fetch_add(n, Ordering::Relaxed)
                    }
                };
            }
        });
        futures_util::future::join_all(publishes).await;
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
        if self.shared.pubsub_up.load(Ordering::Relaxed)
            && self.shared.commands_up.load(Ordering::Relaxed)
        {
            BrokerHealth::Up
        } else {
            BrokerHealth::Down
        }
    }
}
