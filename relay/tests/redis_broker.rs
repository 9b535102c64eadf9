//! The Redis broker against real `redis-server` processes (one server, or a 3-node cluster),
//! driven through the `Broker` trait and hubs the way relays drive it.

mod redis_support;
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis_support::{RedisCluster, RedisServer, on_redis_and_cluster};
use runwire_relay::broker::redis::{RedisBroker, RedisConfig};
use runwire_relay::broker::{Broker, BrokerError, BrokerHealth, NewEvent, Replay, RunId, Snapshot};
use runwire_relay::hub::{ConnHandle, Hub, Inbox, Outbound};
use serde_json::{Value, json};
use support::eventually;
use tokio::time::timeout;

async fn relay(url: &str, tweak: impl FnOnce(&mut RedisConfig)) -> Relay {
    let hub = Arc::new(Hub::new(Arc::default()));
    let mut config = RedisConfig::new(url);
    config.command_timeout = Duration::from_millis(800);
    config.health_interval = Duration::from_millis(100);
    config.reconnect_backoff = (Duration::from_millis(20), Duration::from_millis(200));
    tweak(&mut config);
    let broker = RedisBroker::connect(config, hub.clone())
        .await
        .expect("connect to redis");
    assert_eq!(broker.health(), BrokerHealth::Up);
    (broker, hub)
}

type Relay = (Arc<RedisBroker>, Arc<Hub>);

/// Two relays on the Redis at `url`, with the test settings of `relay` and nothing changed.
async fn two_relays(url: &str) -> (Relay, Relay) {
    tokio::join!(relay(url, |_| {}), relay(url, |_| {}))
}

fn log(i: u64) -> NewEvent {
    NewEvent::parse("log", json!({"level":"info","message":"m","i":i})).unwrap()
}

fn data_i(frame: &str) -> u64 {
    let v: Value = serde_json::from_str(frame).unwrap();
    v["data"]["i"].as_u64().unwrap()
}

async fn next(rx: &mut Inbox) -> Outbound {
    timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("nothing arrived within 10 s")
        .expect("queue closed")
}

/// What a subscription does with what the hub and the broker give it: keeps events in seq order,
/// drops duplicates, and on a gap or a resync takes a snapshot from its last seq.
struct Follower {
    run: RunId,
    epoch: Arc<str>,
    last: u64,
    /// seq → frame, in arrival order checked as it grows.
    seen: BTreeMap<u64, String>,
    resyncs: usize,
    resets: usize,
}

impl Follower {
    async fn start(
        broker: &dyn Broker,
        hub: &Hub,
        conn: &ConnHandle,
        run: &str,
        since: Option<u64>,
    ) -> Self {
        let run: RunId = run.into();
        hub.register(&run, conn);
        broker.watch(run.clone()).await.unwrap();
        let mut f = Self {
            run: run.clone(),
            epoch: "".into(),
            last: 0,
            seen: BTreeMap::new(),
            resyncs: 0,
            resets: 0,
        };
        f.catch_up(broker, since).await;
        f
    }

    /// A follower of `run` on a connection of its own: id 1, with a queue of `capacity`.
    async fn on_own_conn(
        broker: &dyn Broker,
        hub: &Hub,
        run: &str,
        since: Option<u64>,
        capacity: usize,
    ) -> (Self, ConnHandle, Inbox) {
        let (conn, rx) = ConnHandle::new(1, capacity);
        let f = Self::start(broker, hub, &conn, run, since).await;
        (f, conn, rx)
    }

    async fn catch_up(&mut self, broker: &dyn Broker, since: Option<u64>) {
        let snap = broker.snapshot(self.run.clone(), since).await.unwrap();
        let same_epoch = self.epoch.is_empty() || snap.epoch == self.epoch;
        match snap.replay {
            Replay::Events(events) if same_epoch => {
                for e in events {
                    self.take(e.seq, e.frame.as_str());
                }
            }
            Replay::NotAsked => {}
            _ => self.resets += 1,
        }
        self.epoch = snap.epoch;
        self.last = snap.head;
    }

    fn take(&mut self, seq: u64, frame: &str) {
        assert_eq!(seq, self.last + 1, "events arrive gapless and in order");
        assert!(
            self.seen.insert(seq, frame.to_owned()).is_none(),
            "no duplicate"
        );
        self.last = seq;
    }

    async fn pump(&mut self, broker: &dyn Broker, rx: &mut Inbox) {
        match next(rx).await {
            Outbound::Event(e) => {
                if e.epoch != self.epoch && self.last == 0 && e.seq == 1 {
                    // Subscribed before the run existed: the first event brings its epoch.
                    self.epoch = e.epoch.clone();
                    self.take(e.seq, e.frame.as_str());
                } else if e.epoch != self.epoch {
                    self.resyncs += 1;
                    self.catch_up(broker, Some(self.last)).await;
                } else if e.seq == self.last + 1 {
                    self.take(e.seq, e.frame.as_str());
                } else if e.seq > self.last + 1 {
                    self.resyncs += 1;
                    self.catch_up(broker, Some(self.last)).await;
                }
            }
            Outbound::Resync(run) => {
                assert_eq!(run, self.run);
                self.resyncs += 1;
                let since = self.last;
                self.catch_up(broker, Some(since)).await;
            }
        }
    }

    async fn until(&mut self, broker: &dyn Broker, rx: &mut Inbox, seq: u64) {
        while self.last < seq {
            self.pump(broker, rx).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_deliver_every_event_in_order_while_both_publish() {
    let redis = RedisServer::start();
    let ((a, hub_a), (b, _hub_b)) = two_relays(&redis.url()).await;
    let (mut sub, _conn, mut rx) = Follower::on_own_conn(&*a, &hub_a, "r1", None, 8192).await;
    assert_eq!(sub.last, 0);

    // Publishers race on both relays; batches of 1 to 3 events.
    let mut tasks = Vec::new();
    for (t, broker) in [a.clone(), b.clone(), a.clone(), b.clone()]
        .into_iter()
        .enumerate()
    {
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..40u64 {
                let n = 1 + (i % 3);
                let batch = (0..n).map(|k| log(t as u64 * 1000 + i * 3 + k)).collect();
                let out = broker.publish("r1".into(), batch).await.unwrap();
                let got: Vec<u64> = out.iter().map(|e| e.seq).collect();
                assert!(
                    got.windows(2).all(|w| w[1] == w[0] + 1),
                    "a batch is contiguous"
                );
                seqs.extend(got);
            }
            seqs
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_unstable();
    let total = all.len() as u64;
    assert_eq!(
        all,
        (1..=total).collect::<Vec<_>>(),
        "seqs are gapless and unique"
    );
    sub.until(&*a, &mut rx, total).await;
    assert_eq!(
        sub.resyncs,
        0,
        "nothing was missed on the live path (reconnects: {})",
        a.stats().reconnects.load(Ordering::Relaxed)
    );

    let snap = b.snapshot("r1".into(), None).await.unwrap();
    assert_eq!(snap.head, total);
    assert_eq!(snap.state.seq, total);
    assert_eq!(
        snap.state.log_count, total,
        "every event folded exactly once"
    );
    assert_eq!(snap.epoch, sub.epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_relays_fold_the_same_state() {
    let redis = RedisServer::start();
    let ((a, _), (b, _)) = two_relays(&redis.url()).await;
    let mut tasks = Vec::new();
    for (t, broker) in [a.clone(), b.clone()].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for i in 0..30 {
                let key = format!("n{t}-{i}");
                let started = NewEvent::parse("node.started", json!({"node_key": key})).unwrap();
                let done = NewEvent::parse("node.completed", json!({"node_key": key})).unwrap();
                broker.publish("fold".into(), vec![started]).await.unwrap();
                broker.publish("fold".into(), vec![done]).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let snap = a.snapshot("fold".into(), Some(0)).await.unwrap();
    assert_eq!(snap.head, 120);
    assert_eq!(snap.state.nodes.len(), 60);
    assert!(
        snap.state
            .nodes
            .iter()
            .all(|n| n.status == runwire_protocol::NodeStatus::Completed)
    );
    // The stored state is exactly the fold of the stored events.
    let Replay::Events(events) = snap.replay else {
        panic!("history reaches back to 1")
    };
    let mut folded = runwire_protocol::RunState::default();
    for e in &events {
        let env: runwire_protocol::Envelope = serde_json::from_str(e.frame.as_str()).unwrap();
        folded.apply(env.seq, &env.ts, &env.typed().unwrap());
    }
    assert_eq!(folded, *snap.state);
    let stats = a.stats().publish_conflicts.load(Ordering::Relaxed)
        + b.stats().publish_conflicts.load(Ordering::Relaxed);
    eprintln!("publish conflicts retried: {stats}");
}

/// A subscriber follows a run on relay A; A dies mid-stream; the subscriber resumes on B from
/// its last seq while publishing goes on through a third relay.
async fn resume_on_another_relay(url: String) {
    let (a, hub_a) = relay(&url, |_| {}).await;
    let (b, hub_b) = relay(&url, |_| {}).await;
    let (publisher, _) = relay(&url, |_| {}).await;
    let stop = Arc::new(AtomicBool::new(false));
    let publishing = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) && i < 5000 {
                i += 1;
                publisher.publish("job".into(), vec![log(i)]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            i
        })
    };
    let (conn_a, mut rx_a) = ConnHandle::new(1, 8192);
    let mut sub = Follower::start(&*a, &hub_a, &conn_a, "job", Some(0)).await;
    let first_head = sub.last;
    sub.until(&*a, &mut rx_a, first_head + 30).await;
    // Relay A goes away with its subscription.
    drop(rx_a);
    drop(a);
    let (conn_b, mut rx_b) = ConnHandle::new(2, 8192);
    let run: RunId = "job".into();
    hub_b.register(&run, &conn_b);
    b.watch(run.clone()).await.unwrap();
    let since = sub.last;
    sub.catch_up(&*b, Some(since)).await;
    assert_eq!(
        sub.resets, 0,
        "the history reaches back to the resume point"
    );
    sub.until(&*b, &mut rx_b, since + 60).await;
    stop.store(true, Ordering::Relaxed);
    let published = publishing.await.unwrap();
    sub.until(&*b, &mut rx_b, published).await;
    // Every event, once, in order, with the data published for its seq.
    assert_eq!(sub.seen.len() as u64, published);
    for (seq, frame) in &sub.seen {
        assert_eq!(data_i(frame), *seq);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_resumes_on_another_relay_without_gap_or_duplicate() {
    let redis = RedisServer::start();
    resume_on_another_relay(redis.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_resume_on_another_relay_and_fan_out_across_slots() {
    let cluster = RedisCluster::start();
    resume_on_another_relay(cluster.url()).await;

    // Runs spread over the three nodes' slots; subscribe on A, publish on B.
    let (a, hub_a) = relay(&cluster.url(), |_| {}).await;
    let (b, _) = relay(&cluster.url(), |_| {}).await;
    let runs: Vec<String> = (0..12).map(|i| format!("run-{i}")).collect();
    let mut subs = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        let (conn, rx) = ConnHandle::new(10 + i as u64, 1024);
        let f = Follower::start(&*a, &hub_a, &conn, run, None).await;
        subs.push((f, rx, conn));
    }
    for round in 1..=20u64 {
        for run in &runs {
            b.publish(run.as_str().into(), vec![log(round)])
                .await
                .unwrap();
        }
    }
    for (f, rx, _) in &mut subs {
        f.until(&*a, rx, 20).await;
        assert_eq!(f.resyncs, 0);
    }
    // Each run's keys share one slot.
    let slots: std::collections::HashSet<String> = cluster
        .nodes
        .iter()
        .filter_map(|n| n.command("CLUSTER KEYSLOT runwire:{run-3}:meta"))
        .chain(
            cluster
                .nodes
                .iter()
                .filter_map(|n| n.command("CLUSTER KEYSLOT runwire:{run-3}:events")),
        )
        .collect();
    assert_eq!(slots.len(), 1, "{slots:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_keeps_subscribers_refuses_outage_publishes_and_loses_nothing_accepted() {
    let mut redis = RedisServer::start_persistent();
    let ((a, hub_a), (b, _)) = two_relays(&redis.url()).await;
    let (mut sub, _conn, mut rx) = Follower::on_own_conn(&*a, &hub_a, "out", Some(0), 8192).await;

    let stop = Arc::new(AtomicBool::new(false));
    let publishing = {
        let (stop, b) = (stop.clone(), b.clone());
        tokio::spawn(async move {
            let (mut accepted, mut refused) = (BTreeMap::new(), 0u32);
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) && i < 20_000 {
                i += 1;
                match b.publish("out".into(), vec![log(i)]).await {
                    Ok(out) => {
                        accepted.insert(out[0].seq, i);
                    }
                    Err(BrokerError::Unavailable(_)) => refused += 1,
                    Err(e) => panic!("{e}"),
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
            (accepted, refused)
        })
    };
    sub.until(&*a, &mut rx, 20).await;
    redis.kill();
    let (ra, rb) = (&a, &b);
    let down = || async move { ra.health() != BrokerHealth::Up && rb.health() != BrokerHealth::Up };
    assert!(
        eventually(down, Duration::from_secs(5)).await,
        "health reports the outage"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _redis = tokio::task::spawn_blocking(move || {
        redis.restart();
        redis
    })
    .await
    .unwrap();
    let up =
        || async move { ra.health() != BrokerHealth::Down && rb.health() != BrokerHealth::Down };
    assert!(
        eventually(up, Duration::from_secs(10)).await,
        "health recovers"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let (accepted, refused) = publishing.await.unwrap();
    assert!(refused > 0, "publishes during the outage are refused");
    let last = *accepted.keys().last().unwrap();
    sub.until(&*a, &mut rx, last).await;
    assert!(
        sub.resyncs >= 1,
        "the subscription caught up after the restart"
    );
    assert_eq!(sub.resets, 0, "persisted history: no reset needed");
    for (seq, i) in &accepted {
        let frame = sub
            .seen
            .get(seq)
            .expect("every accepted event reaches the subscriber");
        assert_eq!(data_i(frame), *i);
    }
    assert!(a.stats().reconnects.load(Ordering::Relaxed) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_that_lost_its_data_gives_the_run_a_new_epoch_and_subscribers_reset() {
    let mut redis = RedisServer::start();
    let ((a, hub_a), (b, _)) = two_relays(&redis.url()).await;
    let (mut sub, _conn, mut rx) = Follower::on_own_conn(&*a, &hub_a, "lost", None, 1024).await;
    for i in 1..=5 {
        b.publish("lost".into(), vec![log(i)]).await.unwrap();
    }
    sub.until(&*a, &mut rx, 5).await;
    let old_epoch = sub.epoch.clone();

    redis.kill();
    let refused = b.publish("lost".into(), vec![log(6)]).await;
    assert!(
        matches!(refused, Err(BrokerError::Unavailable(_))),
        "{refused:?}"
    );
    let redis = tokio::task::spawn_blocking(move || {
        redis.restart();
        redis
    })
    .await
    .unwrap();
    // The relay reconnects and tells the subscription to catch up; the snapshot's epoch differs.
    match next(&mut rx).await {
        Outbound::Resync(run) => assert_eq!(&*run, "lost"),
        Outbound::Event(e) => panic!("unexpected event {}", e.seq),
    }
    let snap = a.snapshot("lost".into(), Some(5)).await.unwrap();
    assert!(matches!(snap.replay, Replay::Gap), "seq 5 is gone");
    // The run is gone: no epoch until it is published again (reading creates nothing).
    assert_eq!((snap.head, &*snap.epoch), (0, ""));
    // Publishing goes on under a new epoch, from 1.
    let out = b.publish("lost".into(), vec![log(1)]).await.unwrap();
    assert_eq!(out[0].seq, 1);
    assert!(!out[0].epoch.is_empty());
    assert_ne!(out[0].epoch, old_epoch);
    match next(&mut rx).await {
        Outbound::Event(e) => assert_eq!((e.seq, &*e.epoch), (1, &*out[0].epoch)),
        other => panic!("{other:?}"),
    }
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_trimmed_and_expires_after_the_terminal_event() {
    let redis = RedisServer::start();
    let (a, _) = relay(&redis.url(), |c| {
        c.history_limit = 5;
        c.finished_retention = Duration::from_millis(1500);
        c.run_idle_ttl = Duration::from_secs(600);
    })
    .await;
    for i in 1..=12 {
        a.publish("t".into(), vec![log(i)]).await.unwrap();
    }
    assert_eq!(redis.command("XLEN runwire:{t}:events").unwrap(), ":5\r\n");
    let snap = a.snapshot("t".into(), Some(7)).await.unwrap();
    let Replay::Events(events) = snap.replay else {
        panic!("8..=12 are retained")
    };
    assert_eq!(
        events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        [8, 9, 10, 11, 12]
    );
    assert!(matches!(
        a.snapshot("t".into(), Some(6)).await.unwrap().replay,
        Replay::Gap
    ));
    assert_eq!(
        snap.state.log_count, 12,
        "trimmed events stay folded in the state"
    );
    let pttl = |key: &str| -> i64 {
        let r = redis.command(&format!("PTTL {key}")).unwrap();
        r.trim().trim_start_matches(':').parse().unwrap()
    };
    assert!(
        pttl("runwire:{t}:meta") > 590_000,
        "a live run keeps the idle TTL"
    );

    let done = NewEvent::parse("run.completed", json!({})).unwrap();
    a.publish("t".into(), vec![done]).await.unwrap();
    let (meta, stream) = (pttl("runwire:{t}:meta"), pttl("runwire:{t}:events"));
    assert!((1..=1500).contains(&meta), "{meta}");
    assert!((1..=1500).contains(&stream), "{stream}");
    assert!(matches!(
        a.publish("t".into(), vec![log(99)]).await,
        Err(BrokerError::RunFinished(_))
    ));
    tokio::time::sleep(Duration::from_millis(1700)).await;
    assert_eq!(
        redis
            .command("EXISTS runwire:{t}:meta runwire:{t}:events")
            .unwrap(),
        ":0\r\n"
    );
    // A run published again after it expired starts a new epoch.
    let out = a.publish("t".into(), vec![log(1)]).await.unwrap();
    assert_eq!(out[0].seq, 1);
    assert_ne!(out[0].epoch, snap.epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_slots_are_counted_across_relays_and_lapse_with_a_dead_relay() {
    let redis = RedisServer::start();
    let lease = |c: &mut RedisConfig| c.stream_lease = Duration::from_millis(900);
    let (a, _) = relay(&redis.url(), lease).await;
    let (b, _) = relay(&redis.url(), lease).await;
    let ws: Arc<str> = "acme".into();
    let s1 = a.stream_slot(ws.clone(), 3).await.unwrap();
    let _s2 = b.stream_slot(ws.clone(), 3).await.unwrap();
    let s3 = b.stream_slot(ws.clone(), 3).await.unwrap();
    assert!(matches!(
        a.stream_slot(ws.clone(), 3).await,
        Err(BrokerError::LimitReached)
    ));
    let _other = a.stream_slot("other".into(), 3).await.unwrap();
    // Held slots are renewed past their lease.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert!(matches!(
        a.stream_slot(ws.clone(), 3).await,
        Err(BrokerError::LimitReached)
    ));
    // A released slot is free again at once.
    drop(s1);
    let (ra, workspace) = (&a, &ws);
    let freed = || async move { ra.stream_slot(workspace.clone(), 3).await.ok() };
    let _s4 = eventually(freed, Duration::from_millis(500))
        .await
        .expect("slot freed");
    // Relay B dies holding two slots: they lapse after the lease.
    std::mem::forget(s3);
    drop(b);
    assert!(matches!(
        a.stream_slot(ws.clone(), 3).await,
        Err(BrokerError::LimitReached)
    ));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let _s5 = a.stream_slot(ws.clone(), 3).await.unwrap();
    let _s6 = a.stream_slot(ws.clone(), 3).await.unwrap();
    assert!(matches!(
        a.stream_slot(ws, 3).await,
        Err(BrokerError::LimitReached)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_turns_worker_messages_into_events_once_on_every_relay() {
    let redis = RedisServer::start();
    let ingest = |c: &mut RedisConfig| {
        c.ingest = vec!["workflow-run:*".into(), "execution:*:events".into()];
    };
    // Two ingesting relays: each message must be appended once, not twice.
    let (a, _) = relay(&redis.url(), ingest).await;
    let (b, _) = relay(&redis.url(), ingest).await;
    assert!(a.is_ingesting() && b.is_ingesting());
    let (watcher, hub) = relay(&redis.url(), |_| {}).await;
    assert!(!watcher.is_ingesting());

    let (mut sub42, conn, mut rx) = Follower::on_own_conn(&*watcher, &hub, "42", None, 64).await;
    let mut subx = Follower::start(&*watcher, &hub, &conn, "ex-1", None).await;
    let publish = |channel: &str, payload: Value| {
        let reply = redis
            .command(&format!(
                "PUBLISH {channel} {}",
                serde_json::to_string(&payload.to_string()).unwrap()
            ))
            .unwrap();
        assert!(reply.starts_with(':') && reply != ":0\r\n", "{reply}");
    };
    // Larger than a publish request may be: dropped, and it takes no seq.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let big = format!(
        r#"{{"status":"Running","blob":"{}"}}"#,
        "x".repeat(1024 * 1024)
    );
    let receivers: i64 = redis::cmd("PUBLISH")
        .arg("workflow-run:42")
        .arg(&big)
        .query_async(&mut raw)
        .await
        .unwrap();
    assert!(receivers > 0);
    publish(
        "execution:ex-1:events",
        json!({"event":"node_started","execution_id":"ex-1","node_key":"fetch","data":{},"timestamp":"2026-01-01T00:00:00Z"}),
    );
    publish("workflow-run:42", json!({"status":"Running","step":1}));
    publish(
        "workflow-run:42",
        json!({"status":"Success","result":{"rows":3}}),
    );

    let mut frames = Vec::new();
    while frames.len() < 3 {
        if let Outbound::Event(e) = next(&mut rx).await {
            frames.push(serde_json::from_str::<Value>(e.frame.as_str()).unwrap());
            if &*e.run == "42" {
                sub42.take(e.seq, e.frame.as_str());
            } else {
                subx.take(e.seq, e.frame.as_str());
            }
        }
    }
    let find = |run: &str, seq: u64| {
        frames
            .iter()
            .find(|f| f["run"] == run && f["seq"] == seq)
            .cloned()
            .unwrap_or_else(|| panic!("no {run}#{seq} in {frames:?}"))
    };
    let node = find("ex-1", 1);
    assert_eq!(node["event"], "node.started");
    assert_eq!(node["data"]["node_key"], "fetch");
    let running = find("42", 1);
    assert_eq!(running["event"], "custom");
    assert_eq!(running["data"], json!({"status":"Running","step":1}));
    let done = find("42", 2);
    assert_eq!(done["event"], "run.completed");
    assert_eq!(
        done["data"],
        json!({"status":"Success","result":{"rows":3}})
    );
    // Appended once each, not once per ingesting relay: each relay appended some and found the
    // others already appended.
    let (ra, rb) = (&a, &b);
    let counted = || async move {
        let dups = ra.stats().ingest_duplicates.load(Ordering::Relaxed)
            + rb.stats().ingest_duplicates.load(Ordering::Relaxed);
        dups == 3
    };
    assert!(
        eventually(counted, Duration::from_secs(5)).await,
        "both relays handled every message"
    );
    assert!(rx.try_recv().is_none(), "no duplicate appends");
    let snap = watcher.snapshot("42".into(), None).await.unwrap();
    assert_eq!(snap.head, 2);
    assert_eq!(snap.state.status, runwire_protocol::RunStatus::Completed);
    let ingested =
        a.stats().ingested.load(Ordering::Relaxed) + b.stats().ingested.load(Ordering::Relaxed);
    assert_eq!(ingested, 3);
    let dropped = |r: &RedisBroker| r.stats().ingest_dropped.load(Ordering::Relaxed);
    assert_eq!(
        (dropped(&a), dropped(&b)),
        (1, 1),
        "each dropped the large message only"
    );

    // One relay goes away: the other appends alone, with no gap.
    drop(a);
    publish(
        "execution:ex-1:events",
        json!({"event":"node_completed","execution_id":"ex-1","node_key":"fetch","data":{"duration_ms":5},"timestamp":"2026-01-01T00:00:01Z"}),
    );
    match next(&mut rx).await {
        Outbound::Event(e) => {
            assert_eq!((&*e.run, e.seq, &*e.name), ("ex-1", 2, "node.completed"));
        }
        other => panic!("{other:?}"),
    }
}

/// On a cluster: workers publish on any node, two relays ingest, each message is one event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_on_a_cluster_appends_each_message_once() {
    let cluster = RedisCluster::start();
    let ingest = |c: &mut RedisConfig| c.ingest = vec!["workflow-run:*".into()];
    let (a, _) = relay(&cluster.url(), ingest).await;
    let (b, _) = relay(&cluster.url(), ingest).await;
    assert!(a.is_ingesting() && b.is_ingesting());
    let (watcher, hub) = relay(&cluster.url(), |_| {}).await;
    let (conn, mut rx) = ConnHandle::new(1, 256);
    let runs = ["c1", "c2", "c3"];
    let mut subs = Vec::new();
    for run in runs {
        subs.push(Follower::start(&*watcher, &hub, &conn, run, None).await);
    }
    for i in 0..30 {
        let node = &cluster.nodes[i % 3];
        let payload = json!({"status": "Running", "pair": i / 2}).to_string();
        let run = runs[i % 3];
        let reply = node
            .command(&format!(
                "PUBLISH workflow-run:{run} {}",
                serde_json::to_string(&payload).unwrap()
            ))
            .unwrap();
        assert!(reply.starts_with(':'), "{reply}");
    }
    let mut events = 0;
    while events < 30 {
        if let Outbound::Event(e) = next(&mut rx).await {
            let sub = subs.iter_mut().find(|s| s.run == e.run).unwrap();
            sub.take(e.seq, e.frame.as_str());
            events += 1;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_none(), "no duplicate");
    for run in runs {
        assert_eq!(watcher.snapshot(run.into(), None).await.unwrap().head, 10);
    }
}

/// Two ingesting relays, one of which goes away in the middle of a stream of messages that has
/// identical payloads in a row: every message becomes exactly one event, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingesting_relay_going_away_mid_stream_loses_and_duplicates_nothing() {
    const MESSAGES: u64 = 400;
    let redis = RedisServer::start();
    let ingest = |c: &mut RedisConfig| c.ingest = vec!["workflow-run:*".into()];
    let (a, _) = relay(&redis.url(), ingest).await;
    let (b, _) = relay(&redis.url(), ingest).await;
    let (watcher, hub) = relay(&redis.url(), |_| {}).await;
    let (mut sub, _conn, mut rx) = Follower::on_own_conn(&*watcher, &hub, "77", None, 1024).await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let publisher = tokio::spawn(async move {
        let mut a = Some(a);
        for i in 0..MESSAGES {
            // Two identical payloads in a row: two messages, two events.
            let payload = json!({"status": "Running", "pair": i / 2}).to_string();
            let receivers: i64 = redis::cmd("PUBLISH")
                .arg("workflow-run:77")
                .arg(payload)
                .query_async(&mut raw)
                .await
                .unwrap();
            assert!(receivers >= 1);
            if i == MESSAGES / 2 {
                drop(a.take()); // mid-stream, mid-pair
            }
            if i % 8 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    });
    sub.until(&*watcher, &mut rx, MESSAGES).await;
    publisher.await.unwrap();
    let pairs: Vec<u64> = sub
        .seen
        .values()
        .map(|f| {
            let v: Value = serde_json::from_str(f).unwrap();
            v["data"]["pair"].as_u64().unwrap()
        })
        .collect();
    let expected: Vec<u64> = (0..MESSAGES).map(|i| i / 2).collect();
    assert_eq!(pairs, expected, "every message once, in order");
    // Nothing more comes: no message was appended twice.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(rx.try_recv().is_none(), "no duplicate");
    assert_eq!(
        watcher.snapshot("77".into(), None).await.unwrap().head,
        MESSAGES
    );
    assert!(
        b.stats().ingest_duplicates.load(Ordering::Relaxed) > 0,
        "both relays ingested"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_name_that_splits_a_character_does_not_stop_ingest() {
    let redis = RedisServer::start();
    let (relay, hub) = relay(&redis.url(), |c| c.ingest = vec!["w?*".into()]).await;
    assert!(relay.is_ingesting());
    let (_sub, _conn, mut rx) = Follower::on_own_conn(&*relay, &hub, "7", None, 64).await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    // `?` matches the first byte of `é`: the run id would start inside the character; and a
    // channel name that is not UTF-8 at all.
    let channels: [&[u8]; 4] = [
        "wé7".as_bytes(),
        "w\u{1F600}7".as_bytes(),
        b"w\xff\xfe7",
        b"wx7",
    ];
    for channel in channels {
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(r#"{"status":"Running"}"#)
            .query_async(&mut raw)
            .await
            .unwrap();
        assert_eq!(receivers, 1, "{channel:?}");
    }
    // Only the last one names a run; it still gets appended.
    match next(&mut rx).await {
        Outbound::Event(e) => assert_eq!((&*e.run, e.seq, &*e.name), ("7", 1, "custom")),
        other => panic!("{other:?}"),
    }
    assert!(relay.is_ingesting());
    assert_eq!(relay.task_restarts(), 0, "nothing panicked");
    assert_eq!(relay.health(), BrokerHealth::Up);
}

/// 48 publishes of 1 MB: the stored state stays small, the events are stored whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_values_are_capped_in_the_stored_state_but_stored_whole_as_events() {
    let redis = RedisServer::start();
    let ((a, _), (b, _)) = two_relays(&redis.url()).await;
    let big = "x".repeat(1_000_000);
    for i in 0..48u64 {
        let event = if i % 2 == 0 {
            NewEvent::parse(
                "node.completed",
                json!({"node_key": format!("n{i}"), "output_summary": {"blob": big}}),
            )
        } else {
            NewEvent::parse(
                "node.failed",
                json!({"node_key": format!("n{i}"), "error": big}),
            )
        };
        // alternate relays, so that each also folds from the state the other stored
        let relay = if i % 3 == 0 { &a } else { &b };
        relay
            .publish("big".into(), vec![event.unwrap()])
            .await
            .unwrap();
    }
    let meta_state: String = {
        let client = redis::Client::open(redis.url()).unwrap();
        let mut raw = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("HGET")
            .arg("runwire:{big}:meta")
            .arg("state")
            .query_async(&mut raw)
            .await
            .unwrap()
    };
    assert!(
        meta_state.len() < 64 * 1024,
        "stored state of {} bytes",
        meta_state.len()
    );
    let snap = a.snapshot("big".into(), Some(47)).await.unwrap();
    assert_eq!((snap.head, snap.state.nodes.len()), (48, 48));
    match snap.replay {
        Replay::Events(events) => assert!(events[0].frame.len() > 1_000_000),
        other => panic!("{other:?}"),
    }
    let capped = |r: &RedisBroker| {
        r.samples()
            .iter()
            .find(|s| s.name == "runwire_state_values_capped_total")
            .map(|s| s.value)
            .unwrap()
    };
    assert_eq!(capped(&a) + capped(&b), 48);
}

/// The state is stored every few events only; every reader (a snapshot, another relay's
/// publish) folds the events after it and sees the state at head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_state_is_stored_every_few_events_and_read_at_head() {
    let redis = RedisServer::start();
    let ((a, _), (b, _)) = two_relays(&redis.url()).await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let mut stored = async || -> (u64, u64) {
        let (head, seq): (String, String) = redis::cmd("HMGET")
            .arg("runwire:{few}:meta")
            .arg("head")
            .arg("state_seq")
            .query_async(&mut raw)
            .await
            .unwrap();
        (head.parse().unwrap(), seq.parse().unwrap())
    };
    for i in 1..=10 {
        a.publish("few".into(), vec![log(i)]).await.unwrap();
    }
    assert_eq!(
        stored().await,
        (10, 0),
        "ten 1-event publishes wrote no state"
    );
    let snap = b.snapshot("few".into(), None).await.unwrap();
    assert_eq!(
        (snap.head, snap.state.seq, snap.state.log_count),
        (10, 10, 10)
    );
    for i in 11..=70 {
        a.publish("few".into(), vec![log(i)]).await.unwrap();
    }
    assert_eq!(stored().await, (70, 64));
    // another relay's first publish learns the run from the stored state and the 6 after it
    b.publish("few".into(), vec![log(71)]).await.unwrap();
    let snap = a.snapshot("few".into(), Some(60)).await.unwrap();
    assert_eq!(
        (snap.head, snap.state.seq, snap.state.log_count),
        (71, 71, 71)
    );
    match snap.replay {
        Replay::Events(events) => assert_eq!(events.len(), 11),
        other => panic!("{other:?}"),
    }
    // the terminal event always stores the state
    let done = NewEvent::parse("run.completed", json!({})).unwrap();
    a.publish("few".into(), vec![done]).await.unwrap();
    assert_eq!(stored().await, (72, 72));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_subscribes_once_per_run_and_unwatch_releases_it() {
    let redis = RedisServer::start();
    let (a, _) = relay(&redis.url(), |_| {}).await;
    a.watch("w1".into()).await.unwrap();
    a.watch("w1".into()).await.unwrap();
    a.watch("w2".into()).await.unwrap();
    assert_eq!(a.subscribed_runs(), 2);
    let numsub = |ch: &str| redis.command(&format!("PUBSUB NUMSUB {ch}")).unwrap();
    assert!(numsub("runwire:{w1}:live").ends_with(":1\r\n"));
    a.unwatch("w1".into());
    assert_eq!(a.subscribed_runs(), 2);
    a.unwatch("w1".into());
    a.unwatch("w2".into());
    assert_eq!(a.subscribed_runs(), 0);
    let numsub = &numsub;
    let gone = || async move { numsub("runwire:{w1}:live").ends_with(":0\r\n") };
    assert!(
        eventually(gone, Duration::from_secs(2)).await,
        "unsubscribed in Redis"
    );
}

#[tokio::test]
async fn an_unreachable_redis_fails_connect_with_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut config = RedisConfig::new(format!("redis://127.0.0.1:{port}"));
    config.command_timeout = Duration::from_millis(500);
    let err = RedisBroker::connect(config, Arc::new(Hub::new(Arc::default())))
        .await
        .unwrap_err();
    assert!(matches!(err, BrokerError::Unavailable(_)), "{err}");
    let err = RedisBroker::connect(
        RedisConfig::new("http://x"),
        Arc::new(Hub::new(Arc::default())),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("scheme"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_event_inside_a_batch_ends_the_run() {
    let redis = RedisServer::start();
    let (a, _) = relay(&redis.url(), |c| {
        c.finished_retention = Duration::from_secs(60);
    })
    .await;
    let failed = NewEvent::parse("run.failed", json!({"error":"boom"})).unwrap();
    let out = a
        .publish("mid".into(), vec![log(1), failed, log(2)])
        .await
        .unwrap();
    assert_eq!(out.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
    assert!(matches!(
        a.publish("mid".into(), vec![log(3)]).await,
        Err(BrokerError::RunFinished(_))
    ));
    let pttl = redis.command("PTTL runwire:{mid}:meta").unwrap();
    let pttl: i64 = pttl.trim().trim_start_matches(':').parse().unwrap();
    assert!(
        (1..=60_000).contains(&pttl),
        "finished retention applies: {pttl}"
    );
    let snap = a.snapshot("mid".into(), None).await.unwrap();
    assert_eq!(snap.state.status, runwire_protocol::RunStatus::Failed);
}

/// Appends `n` events to `run` exactly as `publish.lua` does, but announces them on a channel
/// nobody listens to: events stored and acknowledged whose Pub/Sub message was lost (as when a
/// restarted cluster node cannot yet forward messages to the others). Returns the new head.
async fn append_unannounced(url: &str, run: &str, n: u64) -> u64 {
    if let Some(hosts) = url.strip_prefix("redis+cluster://") {
        let nodes: Vec<String> = hosts.split(',').map(|h| format!("redis://{h}")).collect();
        let client = redis::cluster::ClusterClient::new(nodes).unwrap();
        let mut conn = client.get_async_connection().await.unwrap();
        append_unannounced_on(&mut conn, run, n).await
    } else {
        let client = redis::Client::open(url).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        append_unannounced_on(&mut conn, run, n).await
    }
}

async fn append_unannounced_on(
    conn: &mut impl redis::aio::ConnectionLike,
    run: &str,
    n: u64,
) -> u64 {
    let meta = format!("runwire:{{{run}}}:meta");
    let (head, epoch): (String, String) = redis::cmd("HMGET")
        .arg(&meta)
        .arg("head")
        .arg("epoch")
        .query_async(conn)
        .await
        .unwrap();
    let head: u64 = head.parse().unwrap();
    let script = redis::Script::new(include_str!("../src/broker/redis/publish.lua"));
    let mut invocation = script.prepare_invoke();
    invocation
        .key(&meta)
        .key(format!("runwire:{{{run}}}:events"))
        .key(format!("runwire:{{{run}}}:ingested"))
        .arg("nobody-listens")
        .arg(head)
        .arg(&epoch)
        .arg("")
        .arg("0")
        .arg(10_000)
        .arg(3_600_000)
        .arg(300_000)
        .arg(0)
        .arg(60_000);
    for seq in head + 1..=head + n {
        let frame = runwire_protocol::Envelope {
            run: run.into(),
            seq,
            event: "log".into(),
            ts: "2026-01-01T00:00:00.000Z".into(),
            data: json!({"level":"info","message":"unannounced","i":seq}),
        }
        .to_frame_json();
        invocation.arg(frame);
    }
    let reply: Vec<String> = invocation.invoke_async(conn).await.unwrap();
    assert_eq!(reply, ["ok"]);
    head + n
}

async fn events_whose_message_was_lost_still_reach_subscribers(url: String) {
    let (a, hub_a) = relay(&url, |c| c.head_check_interval = Duration::from_millis(100)).await;
    let (b, _) = relay(&url, |_| {}).await;
    let (mut sub, _conn, mut rx) = Follower::on_own_conn(&*a, &hub_a, "quiet", None, 1024).await;
    b.publish("quiet".into(), vec![log(1), log(2)])
        .await
        .unwrap();
    sub.until(&*a, &mut rx, 2).await;
    assert_eq!(sub.resyncs, 0);

    // The run's last events are stored but never announced, and nothing is published after them.
    let head = append_unannounced(&url, "quiet", 3).await;
    assert_eq!(head, 5);
    // A subscriber that joins now gets them from its snapshot; that says nothing of the first.
    let (late_conn, mut late_rx) = ConnHandle::new(2, 1024);
    let late = Follower::start(&*a, &hub_a, &late_conn, "quiet", None).await;
    assert_eq!(late.last, 5);
    sub.until(&*a, &mut rx, head).await;
    assert_eq!(
        sub.seen.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3, 4, 5]
    );
    assert!(sub.seen[&4].contains("unannounced"));
    assert!(a.stats().head_resyncs.load(Ordering::Relaxed) >= 1);

    // Announced events keep arriving live, once each, without further catch-ups.
    let resyncs = sub.resyncs;
    b.publish("quiet".into(), vec![log(6)]).await.unwrap();
    sub.until(&*a, &mut rx, 6).await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    while let Some(item) = rx.try_recv() {
        match item {
            Outbound::Event(e) => assert!(e.seq <= 6, "nothing beyond the head: {}", e.seq),
            Outbound::Resync(_) => panic!("a resync with nothing missing"),
        }
    }
    assert_eq!(sub.resyncs, resyncs);
    assert_eq!(sub.seen.len(), 6);
    let mut late = late;
    late.until(&*a, &mut late_rx, 6).await;
}

on_redis_and_cluster!(events_whose_message_was_lost_still_reach_subscribers:
    events_whose_pubsub_message_was_lost_reach_subscribers_once,
    cluster_events_whose_pubsub_message_was_lost_reach_subscribers_once);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_of_a_run_that_does_not_exist_writes_nothing() {
    let redis = RedisServer::start();
    let (a, hub_a) = relay(&redis.url(), |_| {}).await;
    for i in 0..50 {
        let snap = a
            .snapshot(format!("ghost-{i}").into(), Some(0))
            .await
            .unwrap();
        assert_eq!((snap.head, &*snap.epoch), (0, ""));
        assert!(matches!(snap.replay, Replay::Events(ref e) if e.is_empty()));
        let snap = a
            .snapshot(format!("ghost-{i}").into(), Some(7))
            .await
            .unwrap();
        assert!(matches!(snap.replay, Replay::Gap));
    }
    assert_eq!(redis.command("DBSIZE").unwrap(), ":0\r\n", "no key created");

    // A subscriber that came first adopts the epoch of the run's first event: no reset.
    let (mut sub, _conn, mut rx) = Follower::on_own_conn(&*a, &hub_a, "ghost-1", None, 64).await;
    a.publish("ghost-1".into(), vec![log(1), log(2)])
        .await
        .unwrap();
    sub.until(&*a, &mut rx, 2).await;
    assert_eq!((sub.resyncs, sub.resets), (0, 0));
    let snap = a.snapshot("ghost-1".into(), Some(1)).await.unwrap();
    assert_eq!(snap.epoch, sub.epoch);
    assert!(!snap.epoch.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_run_whose_snapshot_failed_is_resynced_once_redis_answers() {
    let redis = RedisServer::start();
    let (a, hub_a) = relay(&redis.url(), |c| {
        c.command_timeout = Duration::from_millis(300);
        c.head_check_interval = Duration::from_millis(100);
    })
    .await;
    let (conn, mut rx) = ConnHandle::new(1, 64);
    let run: RunId = "paused".into();
    hub_a.register(&run, &conn);
    a.watch(run.clone()).await.unwrap();
    a.publish(run.clone(), vec![log(1)]).await.unwrap();
    assert!(matches!(next(&mut rx).await, Outbound::Event(e) if e.seq == 1));
    // Scripts wait while writes are paused (reads and the Pub/Sub connection do not): a
    // subscription's catch-up fails, and nothing else would retry it.
    assert!(
        redis
            .command("CLIENT PAUSE 1500 WRITE")
            .unwrap()
            .starts_with("+OK")
    );
    assert!(a.snapshot(run.clone(), Some(1)).await.is_err());
    match next(&mut rx).await {
        Outbound::Resync(r) => assert_eq!(r, run),
        Outbound::Event(e) => panic!("unexpected event {}", e.seq),
    }
    assert!(a.stats().head_resyncs.load(Ordering::Relaxed) >= 1);
}

/// A relay whose connections to Redis go silent without closing (a load balancer or NAT in
/// between dropped them, a peer died without a FIN): nothing errors, every command just times
/// out. The relay must notice and connect again, not answer 503 until the kernel gives up on the
/// socket many minutes later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_connection_gone_silent_is_replaced() {
    let redis = RedisServer::start();
    let upstream = format!("127.0.0.1:{}", redis.port).parse().unwrap();
    let proxy = runwire_fault_proxy::Proxy::new(upstream);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("redis://{}", listener.local_addr().unwrap());
    tokio::spawn(runwire_fault_proxy::serve(listener, proxy.clone()));
    let (a, hub) = relay(&url, |c| c.command_timeout = Duration::from_millis(300)).await;
    let (conn, mut rx) = ConnHandle::new(1, 64);
    let run: RunId = "silent".into();
    hub.register(&run, &conn);
    a.watch(run.clone()).await.unwrap();
    a.publish(run.clone(), vec![log(1)]).await.unwrap();
    assert!(matches!(next(&mut rx).await, Outbound::Event(e) if e.seq == 1));

    assert!(proxy.hang() >= 2, "the command and Pub/Sub connections");
    assert!(matches!(
        a.publish(run.clone(), vec![log(2)]).await,
        Err(BrokerError::Unavailable(_))
    ));
    // Redis itself answers: within a few health checks the relay is on a new connection, and
    // every event it accepted reaches the subscriber once, in order.
    let head = eventually(
        || {
            let (a, run) = (a.clone(), run.clone());
            async move {
                a.publish(run, vec![log(3)])
                    .await
                    .ok()?
                    .last()
                    .map(|e| e.seq)
            }
        },
        Duration::from_secs(10),
    )
    .await
    .expect("publishes still fail on the silent connection");
    let mut seqs = Vec::new();
    while seqs.last() != Some(&head) {
        match next(&mut rx).await {
            Outbound::Event(e) => seqs.push(e.seq),
            Outbound::Resync(_) => {
                let snap = a
                    .snapshot(run.clone(), seqs.last().copied().or(Some(1)))
                    .await;
                if let Ok(Snapshot {
                    replay: Replay::Events(events),
                    ..
                }) = snap
                {
                    seqs.extend(events.iter().map(|e| e.seq));
                }
            }
        }
        seqs.dedup();
    }
    assert_eq!(seqs, (2..=head).collect::<Vec<_>>());
    assert_eq!(a.health(), BrokerHealth::Up);
}
