//! The compatibility layers end to end: workers publishing exactly as the replaced systems' workers
//! do (Redis `PUBLISH`, HTTP), tokens minted the way their token routes mint them, and a client
//! watching the run through runwire's protocol, folded state included.

mod redis_support;
mod support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use redis_support::RedisServer;
use runwire_protocol::token::{Claims, Scope};
use runwire_relay::auth::Clock;
use runwire_relay::compat::Layer;
use runwire_relay::{AppState, Config};
use serde_json::{Value, json};
use sha2::Sha256;
use support::{
    Client, PATIENCE, Relay, Sse, announced_addr, answers_200, claims, config, eventually,
    get_json, get_with, now, publish_token, subscribe_token, token_with,
};

/// The Node relay's token route: `base64url(JSON payload) + "." +
/// base64url(HMAC-SHA256(payloadSegment, secret))`, 5-minute TTL.
fn legacy_token(run: &str, user: &str, secret: &str) -> String {
    let iat = now();
    let payload = json!({"v": 1, "runId": run, "userId": user, "iat": iat, "exp": iat + 300});
    let segment = URL_SAFE_NO_PAD.encode(payload.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(segment.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{segment}.{sig}")
}

async fn run_state(relay: &Relay, run: &str, token: &str) -> Value {
    let resp = get_with(&relay.url(&format!("/v1/runs/{run}")), token).await;
    assert_eq!(resp.status(), 200);
    resp.json::<Value>().await.unwrap()["state"].clone()
}

fn statuses(state: &Value) -> Vec<(String, String)> {
    state["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            (
                n["key"].as_str().unwrap().to_owned(),
                n["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_relay_workers_and_tokens_over_redis() {
    const LEGACY_SECRET: &str = "node-relay-secret"; // shorter than 32 bytes, as it was
    let redis = RedisServer::start();
    let mut c: Config = config();
    c.redis = Some(redis.url());
    c.compat = vec![Layer::WsRelay];
    c.execution_stream_signing_secret = Some(LEGACY_SECRET.into());
    let state = AppState::connect(c, Clock::System).await.unwrap();
    let relay = Relay::with_state(state).await;
    // `workflow-run:*` is ingested without --ingest: /ready says so once ingest runs.
    wait_ingesting(&relay).await;

    let token = legacy_token("42", "user-7", LEGACY_SECRET);
    // The Node relay's browser: a raw WebSocket on /ws/executions.
    let mut browser =
        Client::connect(&relay.ws_url(&format!("/ws/executions?token={token}"))).await;
    assert_eq!(
        browser.frame().await,
        json!({"type":"connected","runId":"42"})
    );
    // The same run watched through runwire's protocol.
    let mut sdk = Client::connect(&relay.ws_url("/v1/ws")).await;
    sdk.send(json!({"type":"auth","token":token})).await;
    assert_eq!(sdk.frame().await["type"], "welcome");
    assert_eq!(sdk.subscribe("42", None).await["type"], "subscribed");

    let publish = |payload: Value| {
        let quoted = serde_json::to_string(&payload.to_string()).unwrap();
        let reply = redis
            .command(&format!("PUBLISH workflow-run:42 {quoted}"))
            .unwrap();
        assert_ne!(reply, ":0\r\n", "the relay listens on workflow-run:42");
    };
    let ms = now() * 1000;
    let messages = [
        json!({"type":"workflow","status":"Running","timestamp":ms}),
        json!({"type":"node","nodeId":"fetch","status":"Running","timestamp":ms}),
        json!({"type":"node","nodeId":"fetch","status":"Success","timestamp":ms + 5}),
        json!({"type":"node","nodeId":"branch","status":"Skipped","timestamp":ms + 6}),
        json!({"type":"node","nodeId":"store","status":"Failed","error":{"message":"disk full"},"timestamp":ms + 7}),
        json!({"type":"node","status":"Success"}),
        json!({"type":"workflow","status":"Failure","error":"store failed","timestamp":ms + 9}),
    ];
    for m in &messages {
        publish(m.clone());
    }
    // The browser sees each message exactly as published, then 1000 "Run finished".
    for m in &messages {
        assert_eq!(&browser.frame().await, m);
    }
    let (code, rest) = browser.closed().await;
    assert_eq!(code, Some(1000), "{rest:?}");

    let expected = [
        "run.started",
        "node.started",
        "node.completed",
        "node.skipped",
        "node.failed",
        "custom",
        "run.failed",
    ];
    let events = sdk.events(expected.len()).await;
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, expected);
    // the worker's fields, timestamp included, are in the data
    assert_eq!(events[2]["data"]["timestamp"], json!(ms + 5));
    assert_eq!(events[2]["data"]["node_key"], "fetch");
    assert_eq!(events[4]["data"]["error"], "disk full");
    assert_eq!(events[4]["data"]["payload"], messages[4]);
    assert_eq!(events[5]["data"], messages[5]);
    assert_eq!(events[6]["data"]["error"], "store failed");
    // only the workflow message ended the run
    assert_eq!(
        sdk.frame().await,
        json!({"type":"unsubscribed","run":"42","reason":"failed"})
    );

    // The fold the SDK runs over the events it receives (the protocol crate's) agrees with the
    // relay's state.
    let mut folded = runwire_protocol::RunState::default();
    for e in &events {
        let env: runwire_protocol::Envelope = serde_json::from_value(e.clone()).unwrap();
        folded.apply(env.seq, &env.ts, &env.typed().unwrap());
    }
    let state = run_state(&relay, "42", &token).await;
    assert_eq!(serde_json::to_value(&folded).unwrap(), state);
    assert_eq!(state["status"], "failed");
    assert_eq!(state["error"], "store failed");
    assert_eq!(
        statuses(&state),
        [
            ("fetch".into(), "completed".into()),
            ("branch".into(), "skipped".into()),
            ("store".into(), "failed".into())
        ]
    );
    // a v:1 token is a subscribe token for its run only
    let other = get_with(&relay.url("/v1/runs/43"), &token).await;
    assert_eq!(other.status(), 403);
    let forged = legacy_token("42", "user-7", "another-secret");
    let refused = get_with(&relay.url("/v1/runs/42"), &forged).await;
    assert_eq!(refused.status(), 401);
    relay.shutdown().await;
}

async fn post(relay: &Relay, run: &str, body: &Value) -> (u16, Value) {
    let resp = reqwest::Client::new()
        .post(relay.url(&format!("/v1/runs/{run}/events")))
        .bearer_auth(publish_token(run))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn event_broadcaster_and_gateway_bodies_are_published() {
    // Without the layer, the EventBroadcaster's envelope is refused as before.
    let plain = Relay::start().await;
    let started = json!({"type":"execution:started","executionId":"e1","workflowId":"wf-9","timestamp":"2026-11-29T10:00:00.000Z","data":{}});
    assert_eq!(post(&plain, "e1", &started).await.0, 400);
    plain.shutdown().await;

    let relay =
        Relay::tweaked(|c| c.compat = vec![Layer::EventBroadcaster, Layer::SocketioGateway]).await;
    let mut watcher =
        Client::connect(&relay.ws_url(&format!("/ws/executions?token={}", subscribe_token("e1"))))
            .await;
    assert_eq!(watcher.frame().await["type"], "subscribed");
    // The EventBroadcaster's browser: a raw WebSocket on /api/ws with executionId frames.
    let token = subscribe_token("e1");
    let mut browser = Client::connect(&relay.ws_url(&format!("/api/ws?token={token}"))).await;
    browser
        .send(json!({"type":"subscribe","executionId":"e1"}))
        .await;
    assert_eq!(
        browser.frame().await,
        json!({"type":"subscribed","executionId":"e1"})
    );
    browser
        .send(json!({"type":"subscribe","executionId":"e9"}))
        .await;
    assert_eq!(browser.frame().await["type"], "error");
    browser.send(json!({"type":"ping"})).await;
    assert_eq!(browser.frame().await["type"], "pong");
    let health: Value = get_json(&relay.url("/api/ws/health")).await;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["connections"], 2);
    let ts = "2026-11-29T10:00:01.000Z";
    for body in [
        started,
        json!({"type":"agent:started","executionId":"e1","workflowId":"wf-9","timestamp":ts,"data":{"agentId":"writer","agentName":"Writer"}}),
        json!({"type":"execution:progress","executionId":"e1","workflowId":"wf-9","timestamp":ts,"data":{"progress":50}}),
        json!({"type":"agent:completed","executionId":"e1","workflowId":"wf-9","timestamp":ts,"data":{"agentId":"writer","result":"draft"}}),
        // the gateway's emits, as Socket.IO arrays and as objects
        json!(["nodeStatus", {"executionId":"e1","nodeId":"review","status":"skipped"}]),
        json!({"event":"log","data":{"executionId":"e1","log":{"id":"l1","nodeId":"writer","level":"warning","message":"slow","createdAt":ts}}}),
        json!(["result", {"executionId":"e1","result":{"words":120}}]),
        json!({"type":"execution:completed","executionId":"e1","workflowId":"wf-9","timestamp":ts,"data":{"result":{"words":120}}}),
    ] {
        let (status, answer) = post(&relay, "e1", &body).await;
        assert_eq!(status, 200, "{body} → {answer}");
    }
    let names: Vec<String> = watcher
        .events(8)
        .await
        .iter()
        .map(|e| e["event"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        names,
        [
            "run.started",
            "node.started",
            "run.progress",
            "node.completed",
            "node.skipped",
            "log",
            "result",
            "run.completed"
        ]
    );
    let (code, _) = watcher.closed().await;
    assert_eq!(code, Some(1000));
    let mut seen = Vec::new();
    for _ in 0..8 {
        let f = browser.frame().await;
        assert_eq!(f["executionId"], "e1", "{f}");
        seen.push(f);
    }
    let types: Vec<&str> = seen.iter().map(|f| f["type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        [
            "execution:started",
            "agent:started",
            "execution:progress",
            "agent:completed",
            "agent:skipped",
            "log",
            "result",
            "execution:completed"
        ]
    );
    // the EventBroadcaster's own fields come back as they were sent
    assert_eq!(seen[1]["workflowId"], "wf-9");
    assert_eq!(seen[1]["timestamp"], ts);
    assert_eq!(
        seen[1]["data"],
        json!({"agentId":"writer","agentName":"Writer","node_key":"writer"})
    );
    assert_eq!(seen[2]["data"], json!({"progress":50}));
    browser
        .send(json!({"type":"unsubscribe","executionId":"e1"}))
        .await;
    assert_eq!(browser.frame().await["type"], "unsubscribed");
    let state = run_state(&relay, "e1", &subscribe_token("e1")).await;
    assert_eq!(state["status"], "completed");
    assert_eq!(state["workflow"], "wf-9");
    assert_eq!(state["result"], json!({"words":120}));
    assert_eq!(state["warning_count"], 1);
    assert_eq!(
        statuses(&state),
        [
            ("writer".into(), "completed".into()),
            ("review".into(), "skipped".into())
        ]
    );
    assert_eq!(state["nodes"][0]["output_summary"], "draft");
    // a malformed message in a layer's shape is kept as custom, not refused, and ends nothing
    let relay2 = Relay::tweaked(|c| c.compat = vec![Layer::EventBroadcaster]).await;
    let (status, _) = post(
        &relay2,
        "e2",
        &json!({"type":"agent:completed","executionId":"e2","data":{}}),
    )
    .await;
    assert_eq!(status, 200);
    let state = run_state(&relay2, "e2", &subscribe_token("e2")).await;
    assert_eq!(
        (&state["status"], &state["seq"]),
        (&json!("pending"), &json!(1))
    );
    tokio::time::timeout(PATIENCE, relay2.shutdown())
        .await
        .unwrap();
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_plan_workers_over_redis() {
    let redis = RedisServer::start();
    let mut c = config();
    c.redis = Some(redis.url());
    c.compat = vec![Layer::SseStream];
    let state = AppState::connect(c, Clock::System).await.unwrap();
    let relay = Relay::with_state(state).await;
    wait_ingesting(&relay).await;
    let mut watcher =
        Client::connect(&relay.ws_url(&format!("/ws/executions?token={}", subscribe_token("x1"))))
            .await;
    assert_eq!(watcher.frame().await["type"], "subscribed");
    let publish = |payload: Value| {
        let quoted = serde_json::to_string(&payload.to_string()).unwrap();
        let reply = redis
            .command(&format!("PUBLISH execution:x1:events {quoted}"))
            .unwrap();
        assert_ne!(reply, ":0\r\n");
    };
    let ts = "2026-11-29T10:00:00Z";
    publish(
        json!({"event":"node.started","execution_id":"x1","node_key":"http_1","data":{},"timestamp":ts}),
    );
    publish(
        json!({"event":"node.completed","execution_id":"x1","node_key":"http_1","data":{"node_key":"http_1","duration_ms":234,"output_summary":{"status":200},"completed_at":ts},"timestamp":ts}),
    );
    // a terminal event without the field its shape requires still ends the run
    publish(
        json!({"event":"execution.failed","execution_id":"x1","node_key":null,"data":{},"timestamp":ts}),
    );
    let events = watcher.events(3).await;
    let names: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["node.started", "node.completed", "run.failed"]);
    assert_eq!(events[1]["data"]["duration_ms"], 234);
    assert_eq!(events[2]["data"]["error"], "execution failed");
    assert_eq!(events[2]["data"]["timestamp"], ts);
    assert_eq!(watcher.closed().await.0, Some(1000));
    // The plan's browser: an EventSource on its route, with a token for the workspace.
    let token = token_with(Claims {
        ws: Some("w1".into()),
        ..claims("x1", Scope::Subscribe)
    });
    let route = relay.url("/api/v1/workspaces/w1/executions/x1/stream");
    let mut es = Sse::open(
        &format!("{route}?token={token}"),
        &[("accept", "text/event-stream")],
    )
    .await;
    assert_eq!(es.status, 200);
    let mut seen = Vec::new();
    while let Some(m) = es.message().await {
        seen.push((m.id.clone().unwrap(), m.event.clone().unwrap(), m.json()));
    }
    assert_eq!(
        seen,
        [
            (
                "1".into(),
                "node.started".into(),
                json!({"node_key":"http_1","timestamp":ts})
            ),
            (
                "2".into(),
                "node.completed".into(),
                json!({"node_key":"http_1","duration_ms":234,"output_summary":{"status":200},"completed_at":ts,"timestamp":ts})
            ),
            (
                "3".into(),
                "execution.failed".into(),
                json!({"error":"execution failed","timestamp":ts})
            ),
        ]
    );
    // EventSource reconnects after the end: 204 stops it
    let bearer = format!("Bearer {token}");
    let again = Sse::open(
        &route,
        &[("authorization", &bearer), ("last-event-id", "3")],
    )
    .await;
    assert_eq!(again.status, 204);
    // the token's workspace must be the route's
    let elsewhere = relay.url(&format!(
        "/api/v1/workspaces/w2/executions/x1/stream?token={token}"
    ));
    assert_eq!(Sse::open(&elsewhere, &[]).await.status, 403);
    let no_ws = format!("{route}?token={}", subscribe_token("x1"));
    assert_eq!(Sse::open(&no_ws, &[]).await.status, 403);
    relay.shutdown().await;
}

/// The Node relay's deployment environment, unchanged, plus `RUNWIRE_COMPAT`, starts the binary:
/// Redis from `REDIS_URL`, the address from `REALTIME_HOST` / `REALTIME_PORT`, the signing
/// secret from `EXECUTION_STREAM_SIGNING_SECRET`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_relays_environment_starts_the_binary() {
    let redis = RedisServer::start();
    let secret = "a-node-relay-secret-of-forty-bytes-long!";
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_runwire"))
        .arg("serve")
        .env_clear()
        .env("RUNWIRE_COMPAT", "ws-relay")
        .env("REDIS_URL", redis.url())
        .env("REALTIME_HOST", "127.0.0.1")
        .env("REALTIME_PORT", "0")
        .env("EXECUTION_STREAM_SIGNING_SECRET", secret)
        .env("RUST_LOG", "info")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the runwire binary");
    let addr = announced_addr(&mut child).await;
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let health: Value = get_json(&format!("http://{addr}/health")).await;
    assert_eq!(health["broker"]["kind"], "redis");
    // the legacy secret verifies the token route's tokens
    let token = legacy_token("7", "u", secret);
    let resp = get_with(&format!("http://{addr}/v1/runs/7"), &token).await;
    assert_eq!(resp.status(), 200);
    child.start_kill().unwrap();
    let out = child.wait_with_output().await.unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    for name in [
        "REDIS_URL",
        "REALTIME_HOST",
        "REALTIME_PORT",
        "EXECUTION_STREAM_SIGNING_SECRET",
    ] {
        assert!(log.contains(name), "start-up log names {name}: {log}");
    }
}

/// A token minted by the Node relay's own algorithm, in Node, opens the legacy socket; a worker
/// posting the relay's message shape over HTTP ends the run.
#[tokio::test]
async fn node_minted_tokens_and_http_workers() {
    const SECRET: &str = "short-legacy";
    let script = r#"
        const crypto = require("crypto");
        const [run, user, secret] = process.argv.slice(1);
        const now = Math.floor(Date.now() / 1000);
        const payload = Buffer.from(JSON.stringify({ v: 1, runId: run, userId: user, iat: now, exp: now + 300 })).toString("base64url");
        const sig = crypto.createHmac("sha256", secret).update(payload).digest("base64url");
        process.stdout.write(`${payload}.${sig}`);
    "#;
    let out = std::process::Command::new("node")
        .args(["-e", script, "run-n", "user-1", SECRET])
        .output()
        .expect("node is installed (scripts/install-deps.sh test)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap();
    let relay = Relay::tweaked(|c| {
        c.compat = vec![Layer::WsRelay];
        c.execution_stream_signing_secret = Some(SECRET.into());
    })
    .await;
    let mut browser =
        Client::connect(&relay.ws_url(&format!("/ws/executions?token={token}"))).await;
    assert_eq!(
        browser.frame().await,
        json!({"type":"connected","runId":"run-n"})
    );
    let running = json!({"type":"node","nodeId":"a","status":"Running","timestamp":1});
    let done = json!({"type":"workflow","status":"Success","timestamp":2});
    let (status, answer) = post(&relay, "run-n", &json!([running, done])).await;
    assert_eq!((status, &answer["seqs"]), (200, &json!([1, 2])));
    assert_eq!(browser.frame().await, running);
    assert_eq!(browser.frame().await, done);
    assert_eq!(browser.closed().await.0, Some(1000));
    relay.shutdown().await;
}

/// The legacy sockets count against `--max-connections` like runwire's own.
#[tokio::test]
async fn legacy_sockets_are_bounded() {
    let relay = Relay::tweaked(|c| {
        c.compat = vec![Layer::WsRelay, Layer::EventBroadcaster];
        c.max_connections = 1;
    })
    .await;
    let mut first =
        Client::connect(&relay.ws_url(&format!("/ws/executions?token={}", subscribe_token("r"))))
            .await;
    assert_eq!(first.frame().await["type"], "connected");
    let mut second =
        Client::connect(&relay.ws_url(&format!("/ws/executions?token={}", subscribe_token("r"))))
            .await;
    assert_eq!(second.closed().await.0, Some(4029));
    let mut third =
        Client::connect(&relay.ws_url(&format!("/api/ws?token={}", subscribe_token("r")))).await;
    assert_eq!(third.closed().await.0, Some(4029));
    relay.shutdown().await;
}

/// Waits until the relay's ingest runs: `/ready` answers 503 until then.
async fn wait_ingesting(relay: &Relay) {
    let ready = &relay.url("/ready");
    assert!(
        eventually(|| answers_200(ready), Duration::from_secs(5)).await,
        "the relay's ingest never started"
    );
}
