//! Several `runwire serve --redis` processes on one Redis (or a 3-node cluster), with WebSocket,
//! SSE and HTTP clients: what users of a load-balanced deployment see.

mod redis_support;
mod support;

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use redis_support::{RedisServer, on_redis_and_cluster};
use runwire_protocol::token::{Claims, Scope};
use serde_json::{Value, json};
use support::{
    Client, Read, SECRET, Sse, claims, cli_publish, eventually, get_json, get_json_with, get_text,
    log, publish_token, runs_token, sample, subscribe_token, token_with,
};
use tokio::process::{Child, Command};

/// A relay process; killed with SIGKILL when dropped.
struct RelayProc {
    addr: String,
    child: Child,
}

impl RelayProc {
    async fn start(redis_url: &str, extra: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_runwire"))
            .args(["serve", "--addr", "127.0.0.1:0", "--redis", redis_url])
            .args(extra)
            .env("RUNWIRE_SECRET", SECRET)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the runwire binary");
        let addr = support::announced_addr(&mut child).await;
        let relay = Self { addr, child };
        relay.wait_ready().await;
        relay
    }

    /// Two relays on the same Redis with the same arguments, started together.
    async fn pair(redis_url: &str, extra: &[&str]) -> (Self, Self) {
        tokio::join!(Self::start(redis_url, extra), Self::start(redis_url, extra))
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    async fn ready_status(&self) -> Option<u16> {
        let resp = reqwest::get(self.url("/ready")).await.ok()?;
        Some(resp.status().as_u16())
    }

    async fn wait_ready(&self) {
        let ready = || async move { self.ready_status().await == Some(200) };
        assert!(
            eventually(ready, Duration::from_secs(10)).await,
            "relay {} never became ready",
            self.addr
        );
    }

    async fn client(&self, run_token: &str) -> Client {
        let mut c = Client::connect(&format!("ws://{}/v1/ws", self.addr)).await;
        c.send(json!({"type":"auth","token":run_token})).await;
        let welcome = c.frame().await;
        assert_eq!(welcome["type"], "welcome", "{welcome}");
        c
    }

    /// A WebSocket client subscribed to `run` from now on.
    async fn subscribed_client(&self, run: &str) -> Client {
        let mut c = self.client(&subscribe_token(run)).await;
        let sub = c.subscribe(run, None).await;
        assert_eq!(sub["type"], "subscribed", "{sub}");
        c
    }

    async fn publish(&self, run: &str, events: &Value) -> reqwest::Response {
        reqwest::Client::new()
            .post(self.url(&format!("/v1/runs/{run}/events")))
            .bearer_auth(publish_token(run))
            .json(events)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .unwrap()
    }

    async fn publish_ok(&self, run: &str, events: &Value) -> Vec<u64> {
        let resp = self.publish(run, events).await;
        assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
        support::published_seqs(&resp.json().await.unwrap())
    }

    async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// Reads frames until the event with `seq` arrived; checks every event continues the last.
async fn follow_until(c: &mut Client, last: &mut u64, seen: &mut Vec<Value>, seq: u64) {
    while *last < seq {
        let f = c.frame().await;
        assert_eq!(f["type"], "event", "expected an event, got {f}");
        let s = f["seq"].as_u64().unwrap();
        assert_eq!(s, *last + 1, "gapless, in order, no duplicate");
        *last = s;
        seen.push(f);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_on_one_relay_gets_every_event_published_on_another() {
    let redis = RedisServer::start();
    let (a, b) = RelayProc::pair(&redis.url(), &[]).await;
    let health: Value = get_json(&a.url("/health")).await;
    assert_eq!(
        health,
        json!({"status":"ok","broker":{"kind":"redis","status":"up"}})
    );
    let mut c = a.client(&subscribe_token("r")).await;
    let sub = c.subscribe("r", None).await;
    assert_eq!(sub["type"], "subscribed", "{sub}");
    for batch in 0..40u64 {
        let events: Vec<Value> = (0..5).map(|i| log(batch * 5 + i)).collect();
        let seqs = b.publish_ok("r", &Value::Array(events)).await;
        assert_eq!(seqs, (batch * 5 + 1..=batch * 5 + 5).collect::<Vec<_>>());
    }
    let (mut last, mut seen) = (0, Vec::new());
    follow_until(&mut c, &mut last, &mut seen, 200).await;
    for (i, f) in seen.iter().enumerate() {
        assert_eq!(f["data"]["message"], format!("line {i}"));
    }
    // A late joiner on A gets the state the events on B built.
    let mut late = a.client(&subscribe_token("r")).await;
    let sub = late.subscribe("r", None).await;
    assert_eq!(
        (sub["seq"].as_u64(), sub["state"]["log_count"].as_u64()),
        (Some(200), Some(200))
    );
}

/// The value of the sample `name` on `relay`'s `/metrics`.
async fn sample_of(relay: &RelayProc, name: &str) -> u64 {
    let text = get_text(&relay.url("/metrics")).await;
    sample(&text, name).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_histograms_count_across_relays() {
    let redis = RedisServer::start();
    let (a, b) = RelayProc::pair(&redis.url(), &[]).await;
    let mut c = a.subscribed_client("r").await;
    let trips_before = sample_of(&b, "runwire_redis_round_trip_seconds_count").await;
    let events = Value::Array((1..=3).map(log).collect());
    assert_eq!(b.publish_ok("r", &events).await, [1, 2, 3]);
    let (mut last, mut seen) = (0, Vec::new());
    follow_until(&mut c, &mut last, &mut seen, 3).await;
    // Published on B, delivered on A: timed from the events' `ts`.
    assert_eq!(
        sample_of(&a, "runwire_delivery_latency_seconds_count").await,
        3
    );
    assert_eq!(
        sample_of(&a, "runwire_publish_duration_seconds_count").await,
        0
    );
    assert!(sample_of(&a, "runwire_redis_round_trip_seconds_count").await > 0);
    assert_eq!(
        sample_of(&b, "runwire_publish_duration_seconds_count").await,
        1
    );
    assert!(sample_of(&b, "runwire_redis_round_trip_seconds_count").await > trips_before);
}

/// A client follows a run on relay A while a third relay publishes; A is killed mid-stream and
/// the client resumes on B with `since` and `epoch`.
async fn resume_after_a_relay_dies(redis_url: String) {
    let (a, b) = RelayProc::pair(&redis_url, &[]).await;
    let p = Arc::new(RelayProc::start(&redis_url, &[]).await);
    let stop = Arc::new(AtomicBool::new(false));
    let published = Arc::new(AtomicU64::new(0));
    let publisher = {
        let (p, stop, published) = (p.clone(), stop.clone(), published.clone());
        tokio::spawn(async move {
            for i in 1..=3000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let seqs = p.publish_ok("job", &log(i)).await;
                assert_eq!(seqs, [i]);
                published.store(i, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    // Subscribed once the run exists: a run with no events yet has no epoch (`""`, which matches
    // any on resume), and this resume is to prove the epoch carries over from relay to relay.
    let started = published.clone();
    assert!(
        eventually(
            || {
                let started = started.clone();
                async move { started.load(Ordering::Relaxed) > 0 }
            },
            Duration::from_secs(10)
        )
        .await,
        "the first event is published"
    );
    let mut c = a.client(&subscribe_token("job")).await;
    let sub = c.subscribe("job", Some(0)).await;
    assert_eq!(sub["type"], "subscribed", "{sub}");
    let epoch = sub["epoch"].as_str().unwrap().to_owned();
    assert!(!epoch.is_empty(), "{sub}");
    let head = sub["seq"].as_u64().unwrap();
    let (mut last, mut seen) = (0, Vec::new());
    follow_until(&mut c, &mut last, &mut seen, head + 40).await;

    a.kill().await;
    // The socket dies with the relay (frames already in flight may still arrive first).
    loop {
        match c.read().await {
            Read::Closed(_) => break,
            Read::Frame(f) => {
                assert_eq!(f["type"], "event", "{f}");
                let s = f["seq"].as_u64().unwrap();
                assert_eq!(s, last + 1);
                last = s;
                seen.push(f);
            }
        }
    }
    let mut c = b.client(&subscribe_token("job")).await;
    c.send(json!({"type":"subscribe","run":"job","since":last,"epoch":epoch}))
        .await;
    let sub = c.frame().await;
    assert_eq!(sub["type"], "subscribed", "resumed, not reset: {sub}");
    assert_eq!(sub["epoch"], epoch.as_str());
    follow_until(
        &mut c,
        &mut last,
        &mut seen,
        sub["seq"].as_u64().unwrap() + 40,
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    publisher.await.unwrap();
    let total = published.load(Ordering::Relaxed);
    follow_until(&mut c, &mut last, &mut seen, total).await;
    assert_eq!(seen.len() as u64, total);
    for (i, f) in seen.iter().enumerate() {
        assert_eq!(f["data"]["message"], format!("line {}", i + 1));
    }
}

on_redis_and_cluster!(resume_after_a_relay_dies:
    killing_a_relay_mid_stream_and_resuming_on_another_loses_nothing,
    on_a_redis_cluster_too);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_keeps_sockets_open_refuses_publishes_and_catches_up() {
    let mut redis = RedisServer::start_persistent();
    let (a, b) = RelayProc::pair(&redis.url(), &[]).await;
    let mut c = a.subscribed_client("o").await;
    b.publish_ok("o", &log(1)).await;
    let (mut last, mut seen) = (0, Vec::new());
    follow_until(&mut c, &mut last, &mut seen, 1).await;

    redis.kill();
    let relay_a = &a;
    let down = || async move { relay_a.ready_status().await == Some(503) };
    assert!(
        eventually(down, Duration::from_secs(5)).await,
        "/ready answers 503 while Redis is down"
    );
    let health: Value = get_json(&a.url("/health")).await;
    assert_eq!(
        health,
        json!({"status":"degraded","broker":{"kind":"redis","status":"down"}})
    );
    let refused = b.publish("o", &log(2)).await;
    assert_eq!(
        refused.status(),
        503,
        "nothing is accepted while Redis is down"
    );
    // New subscriptions are refused too, without closing the socket.
    let mut late = a.client(&subscribe_token("o")).await;
    let err = late.subscribe("o", None).await;
    assert_eq!(
        (&err["type"], &err["code"]),
        (&json!("error"), &json!("broker_unavailable")),
        "{err}"
    );
    let sse = Sse::open(
        &a.url(&format!("/v1/runs/o/events?token={}", subscribe_token("o"))),
        &[],
    )
    .await;
    assert_eq!(sse.status, 503);

    let redis = tokio::task::spawn_blocking(move || {
        redis.restart();
        redis
    })
    .await
    .unwrap();
    a.wait_ready().await;
    b.wait_ready().await;
    // Published after Redis came back: reaches the socket that stayed open all along.
    let seqs = b.publish_ok("o", &log(3)).await;
    assert_eq!(seqs, [2], "the refused publish left no trace");
    follow_until(&mut c, &mut last, &mut seen, 2).await;
    assert_eq!(seen[1]["data"]["message"], "line 3");
    // The socket that was refused a subscription during the outage subscribes now.
    let sub = late.subscribe("o", Some(0)).await;
    assert_eq!(
        (&sub["type"], &sub["seq"]),
        (&json!("subscribed"), &json!(2)),
        "{sub}"
    );
    assert_eq!(support::seqs(&late.events(2).await), [1, 2]);
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sse_limit_per_workspace_holds_across_relays() {
    let redis = RedisServer::start();
    let args = ["--sse-max-per-workspace", "2", "--sse-heartbeat", "100ms"];
    let (a, b) = RelayProc::pair(&redis.url(), &args).await;
    let token = token_with(Claims {
        ws: Some("acme".into()),
        ..claims("r", Scope::Subscribe)
    });
    let sse = |relay: &RelayProc| relay.url(&format!("/v1/runs/r/events?token={token}"));
    let mut first = Sse::open(&sse(&a), &[]).await;
    assert_eq!(first.status, 200);
    first.message().await.unwrap();
    let mut second = Sse::open(&sse(&b), &[]).await;
    assert_eq!(second.status, 200);
    second.message().await.unwrap();
    assert_eq!(Sse::open(&sse(&a), &[]).await.status, 429);
    assert_eq!(Sse::open(&sse(&b), &[]).await.status, 429);
    // Closing the stream on A frees a slot that B can take.
    drop(first);
    let (sse, b) = (&sse, &b);
    let freed = || async move {
        let s = Sse::open(&sse(b), &[]).await;
        (s.status == 200).then_some(s)
    };
    let mut s = eventually(freed, Duration::from_secs(4))
        .await
        .expect("a closed stream's slot is free on every relay");
    s.message().await.unwrap();
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingested_worker_messages_reach_a_browser_on_another_relay() {
    let redis = RedisServer::start();
    let ingesting = RelayProc::start(
        &redis.url(),
        &[
            "--ingest",
            "workflow-run:*",
            "--ingest",
            "execution:*:events",
        ],
    )
    .await;
    let other = RelayProc::start(&redis.url(), &[]).await;
    // `start` waited for `/ready`, which an ingesting relay only answers 200 once it ingests.
    let metrics = get_text(&ingesting.url("/metrics")).await;
    assert!(metrics.contains("\nrunwire_ingest_up 1\n"), "{metrics}");
    let mut c = other.subscribed_client("42").await;
    let publish = |channel: &str, payload: Value| {
        let quoted = serde_json::to_string(&payload.to_string()).unwrap();
        let reply = redis
            .command(&format!("PUBLISH {channel} {quoted}"))
            .unwrap();
        assert_ne!(reply, ":0\r\n", "someone listens on {channel}");
    };
    publish(
        "execution:42:events",
        json!({"event":"node_started","execution_id":"42","node_key":"load","data":{},"timestamp":"2026-01-01T00:00:00Z"}),
    );
    publish(
        "workflow-run:42",
        json!({"status":"Success","result":{"ok":true}}),
    );
    let node = c.frame().await;
    assert_eq!(
        (&node["event"], &node["seq"], &node["data"]["node_key"]),
        (&json!("node.started"), &json!(1), &json!("load"))
    );
    let done = c.frame().await;
    assert_eq!(done["event"], "run.completed");
    assert_eq!(
        done["data"],
        json!({"status":"Success","result":{"ok":true}})
    );
    let end = c.frame().await;
    assert_eq!(
        end,
        json!({"type":"unsubscribed","run":"42","reason":"completed"})
    );
    drop(ingesting);
}

/// Two relays ingest one stream of worker messages; one is killed (SIGKILL) in the middle. A
/// browser on a third relay gets every message exactly once, identical payloads in a row
/// included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_ingesting_relay_mid_stream_loses_and_duplicates_no_message() {
    const MESSAGES: u64 = 300;
    let redis = RedisServer::start();
    let (a, b) = RelayProc::pair(&redis.url(), &["--ingest", "workflow-run:*"]).await;
    let watcher = RelayProc::start(&redis.url(), &[]).await;
    let mut c = watcher.subscribed_client("k9").await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut raw = client.get_multiplexed_async_connection().await.unwrap();
    let mut a = Some(a);
    for i in 0..=MESSAGES {
        let payload = if i == MESSAGES {
            json!({"status": "Success"})
        } else {
            json!({"status": "Running", "pair": i / 2})
        };
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg("workflow-run:k9")
            .arg(payload.to_string())
            .query_async(&mut raw)
            .await
            .unwrap();
        assert!(receivers >= 1);
        if i == MESSAGES / 2 {
            a.take().unwrap().kill().await; // between two identical payloads
        }
        if i % 10 == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    let (mut last, mut seen) = (0, Vec::new());
    follow_until(&mut c, &mut last, &mut seen, MESSAGES + 1).await;
    let pairs: Vec<u64> = seen[..MESSAGES as usize]
        .iter()
        .map(|f| f["data"]["pair"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (0..MESSAGES).map(|i| i / 2).collect();
    assert_eq!(pairs, expected, "every message once, in order");
    assert_eq!(seen[MESSAGES as usize]["event"], "run.completed");
    // The terminal event was the last: nothing was appended twice.
    assert_eq!(
        c.frame().await,
        json!({"type":"unsubscribed","run":"k9","reason":"completed"})
    );
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_publish_command_works_through_redis() {
    let redis = RedisServer::start();
    let (a, b) = RelayProc::pair(&redis.url(), &[]).await;
    let mut c = a.subscribed_client("cli").await;
    let out = cli_publish(&b.url(""), "cli", "node.started", r#"{"node_key":"n1"}"#).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ev = c.frame().await;
    assert_eq!(
        (&ev["event"], &ev["seq"]),
        (&json!("node.started"), &json!(1))
    );
}

#[tokio::test]
async fn misconfiguration_and_an_unreachable_redis_are_one_line_errors() {
    let run = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_runwire"));
        cmd.args(["serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .env("RUNWIRE_SECRET", SECRET)
            .env_remove("RUNWIRE_REDIS_URL")
            .env_remove("RUNWIRE_INGEST")
            .stdin(Stdio::null());
        async move {
            let out = tokio::time::timeout(support::PATIENCE, cmd.output())
                .await
                .expect("the relay exits")
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (code, stderr) = run(&["--ingest", "workflow-run:*"]).await;
    assert_eq!(code, Some(2));
    assert!(stderr.contains("--ingest needs --redis"), "{stderr}");

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://user:hunter2@127.0.0.1:{port}");
    let (code, stderr) = run(&["--redis", &url]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("cannot start the broker"), "{stderr}");
    assert!(
        !stderr.contains("hunter2"),
        "no password in errors: {stderr}"
    );

    let redis = RedisServer::start();
    let (code, stderr) = run(&["--redis", &redis.url(), "--ingest", "no-star"]).await;
    assert_eq!(code, Some(1));
    assert!(stderr.contains("no `*`"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_lost_its_data_resets_subscribers_instead_of_reusing_seqs() {
    let mut redis = RedisServer::start();
    let (a, b) = RelayProc::pair(&redis.url(), &[]).await;
    let mut c = a.client(&subscribe_token("l")).await;
    let sub = c.subscribe("l", None).await;
    // Before its first event a run has no epoch, and nothing is written in Redis for it.
    assert_eq!((&sub["seq"], &sub["epoch"]), (&json!(0), &json!("")));
    for i in 1..=3 {
        b.publish_ok("l", &log(i)).await;
    }
    assert_eq!(support::seqs(&c.events(3).await), [1, 2, 3]);
    let old_epoch =
        get_json_with::<Value>(&a.url("/v1/runs/l"), &subscribe_token("l")).await["epoch"].clone();
    assert_ne!(old_epoch, json!(""));

    // Restarted without persistence: run `l` is gone from Redis.
    let redis = tokio::task::spawn_blocking(move || {
        redis.restart();
        redis
    })
    .await
    .unwrap();
    let reset = c.frame().await;
    assert_eq!(reset["type"], "reset", "{reset}");
    assert_eq!((&reset["run"], &reset["seq"]), (&json!("l"), &json!(0)));
    assert_ne!(reset["epoch"], old_epoch, "a new epoch");
    assert_eq!(reset["state"]["status"], "pending");
    b.wait_ready().await;
    assert_eq!(
        b.publish_ok("l", &log(4)).await,
        [1],
        "seqs start again, under the new epoch"
    );
    let ev = c.frame().await;
    assert_eq!(
        (&ev["type"], &ev["seq"]),
        (&json!("event"), &json!(1)),
        "{ev}"
    );
    assert_eq!(ev["data"]["message"], "line 4");
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browsers_do_not_get_redis_connections_of_their_own() {
    let redis = RedisServer::start();
    let a = RelayProc::start(&redis.url(), &[]).await;
    let clients = || {
        let info = redis.command("INFO clients").unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("connected_clients:"))
            .unwrap()
            .trim()
            .parse::<u32>()
            .unwrap()
    };
    let before = clients();
    let token = runs_token("x", &["*"]);
    let mut sockets = Vec::new();
    for i in 0..20 {
        let mut c = a.client(&token).await;
        for k in 0..5 {
            let sub = c.subscribe(&format!("run-{i}-{k}"), None).await;
            assert_eq!(sub["type"], "subscribed", "{sub}");
        }
        sockets.push(c);
    }
    let mut streams = Vec::new();
    for i in 0..5 {
        let url = a.url(&format!("/v1/runs/run-{i}-0/events?token={token}"));
        let mut s = Sse::open(&url, &[]).await;
        assert_eq!(s.status, 200);
        s.message().await.unwrap();
        streams.push(s);
    }
    assert_eq!(
        clients(),
        before,
        "100 subscriptions on 20 sockets and 5 streams use the relay's own connections"
    );
    let numsub = redis
        .command("PUBSUB NUMSUB runwire:{run-3-4}:live")
        .unwrap();
    assert!(numsub.ends_with(":1\r\n"), "{numsub}");
}
