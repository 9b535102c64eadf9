//! Health, metrics, run state, graceful shutdown, and the command line.

mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[tokio::test]
async fn health_ready_and_metrics() {
    let relay = Relay::start().await;
    let health: Value = get_json(&relay.url("/health")).await;
    assert_eq!(
        health,
        json!({"status":"ok","broker":{"kind":"memory","status":"up"}})
    );
    assert_eq!(
        reqwest::get(relay.url("/ready")).await.unwrap().status(),
        200
    );
    let mut c = Client::authed(&relay, &subscribe_token("r")).await;
    c.subscribe("r", None).await;
    relay.publish_ok("r", json!([log(1), log(2)])).await;
    c.events(2).await;
    let text = get_text(&relay.url("/metrics")).await;
    for line in [
        "runwire_connections{transport=\"ws\"} 1",
        "runwire_subscriptions 1",
        "runwire_events_published_total 2",
        "runwire_events_delivered_total 2",
        "runwire_broker_up 1",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in\n{text}"
        );
    }
}

#[tokio::test]
async fn a_publish_moves_the_latency_histograms() {
    let relay = Relay::start().await;
    let metrics_url = relay.url("/metrics");
    let metrics = || get_text(&metrics_url);
    let before = metrics().await;
    for name in [
        "runwire_delivery_latency_seconds_count",
        "runwire_publish_duration_seconds_count",
        "runwire_redis_round_trip_seconds_count",
    ] {
        assert_eq!(sample(&before, name), "0");
    }
    let mut ws = Client::authed(&relay, &subscribe_token("r")).await;
    ws.subscribe("r", None).await;
    let url = relay.url(&format!("/v1/runs/r/events?token={}", subscribe_token("r")));
    let mut sse = Sse::open(&url, &[]).await;
    assert_eq!(
        sse.message().await.unwrap().event.as_deref(),
        Some("subscribed")
    );
    relay.publish_ok("r", json!([log(1), log(2)])).await;
    ws.events(2).await;
    for _ in 0..2 {
        assert_eq!(sse.message().await.unwrap().event.as_deref(), Some("log"));
    }
    // A late subscriber's replay is not a delivery delay: not counted.
    let mut late = Client::authed(&relay, &subscribe_token("r")).await;
    late.subscribe("r", Some(0)).await;
    late.events(2).await;
    let after = metrics().await;
    // Two events to two live subscribers; one publish request (a refused one counts too).
    assert_eq!(
        sample(&after, "runwire_delivery_latency_seconds_count"),
        "4"
    );
    assert_eq!(
        sample(
            &after,
            "runwire_delivery_latency_seconds_bucket{le=\"+Inf\"}"
        ),
        "4"
    );
    assert_eq!(
        sample(&after, "runwire_publish_duration_seconds_count"),
        "1"
    );
    let sum: f64 = sample(&after, "runwire_publish_duration_seconds_sum")
        .parse()
        .unwrap();
    assert!(sum > 0.0, "{after}");
    assert_eq!(
        sample(&after, "runwire_redis_round_trip_seconds_count"),
        "0"
    );
    assert_eq!(
        relay.publish("r", json!({"event":"Bad"})).await.status(),
        400
    );
    let refused = metrics().await;
    assert_eq!(
        sample(&refused, "runwire_publish_duration_seconds_count"),
        "2"
    );
}

#[tokio::test]
async fn run_state_reports_the_fold_and_head() {
    let relay = Relay::start().await;
    relay
        .publish_ok(
            "r",
            json!([
                {"event":"run.started","data":{"workflow":"w","node_count":1}},
                {"event":"node.started","data":{"node_key":"a"}},
                {"event":"run.progress","data":{"progress":40}}
            ]),
        )
        .await;
    let resp = get_with(&relay.url("/v1/runs/r"), &subscribe_token("r")).await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["seq"], 3);
    assert_eq!(body["state"]["status"], "running");
    assert_eq!(body["state"]["progress"], 40.0);
    assert_eq!(body["state"]["nodes"][0]["key"], "a");
    assert!(body["epoch"].is_string());
}

#[tokio::test]
async fn shutdown_tells_websockets_to_reconnect_and_lets_publishes_finish() {
    let mut relay = Relay::start().await;
    let addr = relay.addr;
    let state = relay.state.clone();
    let mut c = Client::authed(&relay, &subscribe_token("r")).await;
    c.subscribe("r", None).await;
    let publishes = tokio::spawn(async move {
        let http = reqwest::Client::new();
        let mut accepted = 0;
        for i in 0..5000 {
            let resp = http
                .post(format!("http://{addr}/v1/runs/r/events"))
                .bearer_auth(publish_token("r"))
                .json(&log(i))
                .send()
                .await;
            match resp {
                Ok(r) if r.status() == 200 => accepted += 1,
                _ => return (accepted, true),
            }
        }
        (accepted, false)
    });
    // One publish held open across the shutdown: its headers are in and its handler is reading
    // the body (the relay has asked for it with `100 Continue`).
    let mut held = HeldPublish::start(addr, "r", &log(9999)).await;
    // Publishing is under way: the subscriber has its first events.
    c.events(3).await;
    let done = relay.begin_shutdown();
    let (code, frames) = c.closed().await;
    assert_eq!(code, Some(1012));
    let (status, body) = held.finish().await;
    assert_eq!(status, 200, "the publish in flight is answered: {body}");
    tokio::time::timeout(PATIENCE, done)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let (accepted, refused) = publishes.await.unwrap();
    assert!(
        refused,
        "the publisher was still publishing when the relay stopped"
    );
    // Every publish the relay answered 200 to is in the run: nothing accepted was dropped.
    let snapshot = state.broker.snapshot("r".into(), Some(0)).await.unwrap();
    assert_eq!(snapshot.head, accepted + 1);
    assert!(frames.iter().all(|f| f["type"] == "event"));
    assert!(TcpProbe::refused(addr).await, "no longer accepting");
}

/// A publish written by hand, so that it can stop between its headers and its body.
struct HeldPublish {
    stream: TcpStream,
    body: Vec<u8>,
}

impl HeldPublish {
    /// Sends the headers with `Expect: 100-continue` and waits for the relay's `100 Continue`.
    async fn start(addr: std::net::SocketAddr, run: &str, event: &Value) -> Self {
        let body = event.to_string().into_bytes();
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let head = format!(
            "POST /v1/runs/{run}/events HTTP/1.1\r\nHost: relay\r\n\
             Authorization: Bearer {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nExpect: 100-continue\r\n\r\n",
            publish_token(run),
            body.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let interim = read_head(&mut stream).await;
        assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
        Self { stream, body }
    }

    /// Sends the body; the answer's status and body.
    async fn finish(&mut self) -> (u16, String) {
        self.stream.write_all(&self.body).await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(PATIENCE, self.stream.read_to_end(&mut answer))
            .await
            .expect("answered in time")
            .unwrap();
        let answer = String::from_utf8(answer).unwrap();
        let status = answer[9..12].parse().unwrap();
        let body = answer.split_once("\r\n\r\n").unwrap().1.to_owned();
        (status, body)
    }
}

/// Reads one response head, up to its blank line.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(PATIENCE, stream.read(&mut byte))
            .await
            .expect("a response head in time")
            .unwrap();
        assert_eq!(n, 1, "closed before a response head");
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

struct TcpProbe;

impl TcpProbe {
    /// Whether connections to `addr` are refused within a second. Not at once: a process that
    /// another test is spawning holds a copy of every descriptor of this one between its fork and
    /// its exec, so a listener closed in that window still accepts for a moment.
    async fn refused(addr: std::net::SocketAddr) -> bool {
        let refused = || async move { TcpStream::connect(addr).await.is_err() };
        eventually(refused, Duration::from_secs(1)).await
    }
}

#[tokio::test]
async fn a_missing_or_short_secret_is_a_one_line_error_with_exit_code_2() {
    for args in [vec!["serve"], vec!["serve", "--secret", "too-short"]] {
        let out = runwire().args(&args).output().await.unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(
            err.starts_with("error: ") && err.contains("32 bytes"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn serve_token_and_publish_work_together() {
    let mut relay = runwire()
        .args(["serve", "--addr", "127.0.0.1:0"])
        .env("RUNWIRE_SECRET", SECRET)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(relay.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(PATIENCE, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let url = first
        .strip_prefix("listening on ")
        .expect(&first)
        .to_owned();
    let token = runwire()
        .args(["token", "--run", "cli", "--ttl", "60"])
        .env("RUNWIRE_SECRET", SECRET)
        .output()
        .await
        .unwrap();
    assert!(token.status.success());
    let token = String::from_utf8(token.stdout).unwrap().trim().to_owned();
    let out = cli_publish(&url, "cli", "node.started", r#"{"node_key":"n1"}"#).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body, json!({"run":"cli","seqs":[1]}));
    let state: Value = get_json_with(&format!("{url}/v1/runs/cli"), &token).await;
    assert_eq!(state["state"]["nodes"][0]["status"], "running");
    // bad data is refused by the relay and reported with a non-zero exit
    let out = cli_publish(&url, "cli", "node.started", "{}").await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("invalid_event"));
    relay.kill().await.unwrap();
}

#[tokio::test]
async fn demo_publishes_simulated_runs() {
    let relay = Relay::tweaked(|c| c.demo = true).await;
    let url = &relay.url("/demo/runs");
    let listed = || async move {
        let runs: Vec<Value> = get_json(url).await;
        (!runs.is_empty()).then_some(runs)
    };
    let runs = eventually(listed, Duration::from_secs(2))
        .await
        .expect("the demo starts a run");
    let run = runs[0]["run"].as_str().unwrap().to_owned();
    let token = reqwest::get(relay.url(&format!("/demo/token?run={run}")))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut c = Client::authed(&relay, &token).await;
    let sub = c.subscribe(&run, Some(0)).await;
    assert_eq!(sub["type"], "subscribed");
    let first = c.frame().await;
    assert_eq!(first["event"], "run.started");
    assert!(first["data"]["graph"].as_array().unwrap().len() >= 5);
    let started: Value = reqwest::Client::new()
        .post(relay.url("/demo/runs"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(started["run"].as_str().unwrap().starts_with("demo-"));
}
