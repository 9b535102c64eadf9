//! `/ws/executions` in the Node relay's wire format (`--compat ws-relay`): its frames, close codes
//! and timings, driven over in-memory channels with paused tokio time; and the write timeouts of
//! every compatibility layer's stream.

mod support;

use std::time::Duration;

use axum::extract::ws::Message;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use runwire_protocol::token::LEEWAY_SECS;
use runwire_relay::AppState;
use runwire_relay::auth::Clock;
use runwire_relay::broker::NewEvent;
use runwire_relay::compat::Layer;
use runwire_relay::compat::event_broadcaster::serve_socket;
use runwire_relay::compat::ws_relay::{FINISH_GRACE, serve_legacy};
use serde_json::{Value, json};
use sha2::Sha256;
use support::{ChannelSocket, Harness, config, log_events};

const LEGACY_SECRET: &str = "legacy-secret";

/// The Node relay's token route, re-implemented.
fn legacy_token(run: &str, ttl: u64) -> String {
    let iat = Clock::System.unix_secs();
    let payload = json!({"v": 1, "runId": run, "userId": "u1", "iat": iat, "exp": iat + ttl});
    let segment = URL_SAFE_NO_PAD.encode(payload.to_string());
    let mut mac = Hmac::<Sha256>::new_from_slice(LEGACY_SECRET.as_bytes()).unwrap();
    mac.update(segment.as_bytes());
    format!(
        "{segment}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

impl Harness {
    fn start(token: Option<String>, idle: Duration) -> Self {
        let mut c = config();
        c.compat = vec![Layer::WsRelay];
        c.execution_stream_signing_secret = Some(LEGACY_SECRET.into());
        c.idle_timeout = idle;
        let state = AppState::new(c, Clock::tokio()).unwrap();
        let (socket, sink, stream) = ChannelSocket::open(64, 64);
        tokio::spawn(serve_legacy(state.clone(), sink, stream, token));
        Self { socket, state }
    }

    /// A socket on run `r1` with a token valid for `ttl` seconds, past its `connected` frame.
    async fn connected(ttl: u64, idle: Duration) -> Self {
        let mut h = Self::start(Some(legacy_token("r1", ttl)), idle);
        assert_eq!(h.frame().await, json!({"type":"connected","runId":"r1"}));
        h
    }

    /// The next text frame and when it came, answering every ping before it.
    async fn frame_answering_pings(&mut self) -> (Value, Duration) {
        loop {
            match self.next().await {
                (Some(Message::Ping(_)), _) => self.pong().await,
                (Some(Message::Text(t)), at) => {
                    return (serde_json::from_str(t.as_str()).unwrap(), at);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    async fn expect_close(&mut self) -> (u16, String, Duration) {
        match self.next().await {
            (Some(Message::Close(Some(f))), at) => (f.code, f.reason.to_string(), at),
            other => panic!("expected a close, got {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn connected_then_raw_messages_then_run_finished() {
    let mut h = Harness::start(Some(legacy_token("r1", 300)), Duration::from_secs(120));
    assert_eq!(h.frame().await, json!({"type":"connected","runId":"r1"}));
    let published = [
        json!({"type":"node","nodeId":"a","status":"Success","timestamp":1}),
        json!({"type":"workflow","status":"Success","timestamp":2}),
    ];
    for m in &published {
        let ev = runwire_relay::compat::map_message(
            runwire_relay::compat::Layers::of(&[Layer::WsRelay]),
            m,
        )
        .unwrap();
        h.state.broker.publish("r1".into(), vec![ev]).await.unwrap();
    }
    // an event published the runwire way reaches the socket in the relay's shape
    assert_eq!(h.frame().await, published[0]);
    assert_eq!(h.frame().await, published[1]);
    let sent_at = h.started.elapsed();
    let (code, reason, at) = h.expect_close().await;
    assert_eq!((code, reason.as_str()), (1000, "Run finished"));
    assert_eq!(at - sent_at, FINISH_GRACE);
}

#[tokio::test(start_paused = true)]
async fn runwire_events_in_the_relays_shape() {
    let mut h = Harness::start(Some(legacy_token("r2", 300)), Duration::from_secs(120));
    assert_eq!(h.frame().await["type"], "connected");
    for (name, data) in [
        ("node.started", json!({"node_key":"n"})),
        ("node.failed", json!({"node_key":"n","error":"x"})),
        ("log", json!({"level":"info","message":"m"})),
        ("run.failed", json!({"error":"boom"})),
    ] {
        let ev = NewEvent::parse(name, data).unwrap();
        h.state.broker.publish("r2".into(), vec![ev]).await.unwrap();
    }
    let mut frames = Vec::new();
    for _ in 0..4 {
        let mut f = h.frame().await;
        assert!(
            f.as_object_mut().unwrap().remove("timestamp").is_some() || f.get("level").is_some()
        );
        frames.push(f);
    }
    assert_eq!(
        frames,
        [
            json!({"type":"node","nodeId":"n","status":"Running"}),
            json!({"type":"node","nodeId":"n","status":"Failed","error":"x"}),
            json!({"level":"info","message":"m"}),
            json!({"type":"workflow","status":"Failure","error":"boom"}),
        ]
    );
    assert_eq!(h.expect_close().await.0, 1000);
}

#[tokio::test(start_paused = true)]
async fn token_expiry_sends_a_socket_frame_then_4001() {
    let mut h = Harness::connected(60, Duration::from_secs(600)).await;
    let expiry = Duration::from_secs(60 + LEEWAY_SECS);
    let (v, at) = h.frame_answering_pings().await;
    assert_eq!(v, json!({"type":"socket","status":"token_expired"}));
    assert!(at.abs_diff(expiry) <= Duration::from_secs(1), "{at:?}");
    assert_eq!(h.expect_close().await.0, 4001);
}

#[tokio::test(start_paused = true)]
async fn idle_timeout_sends_a_socket_frame_then_4009() {
    let mut h = Harness::connected(3600, Duration::from_secs(60)).await;
    let (v, at) = h.frame_answering_pings().await;
    assert_eq!(v, json!({"type":"socket","status":"idle_timeout"}));
    // pongs do not count as activity
    assert_eq!(at, Duration::from_secs(60));
    assert_eq!(h.expect_close().await.0, 4009);
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_ping_terminates_the_socket() {
    let mut h = Harness::connected(3600, Duration::from_secs(600)).await;
    let (ping, at) = h.next().await;
    assert!(matches!(ping, Some(Message::Ping(_))));
    assert_eq!(at, Duration::from_secs(25));
    // no pong: at the next tick the socket is dropped, without a close frame
    let (gone, at) = h.next().await;
    assert!(gone.is_none(), "{gone:?}");
    assert_eq!(at, Duration::from_secs(50));
}

#[tokio::test(start_paused = true)]
async fn refused_tokens_close_as_on_runwires_socket() {
    let mut h = Harness::start(None, Duration::from_secs(120));
    assert_eq!(h.expect_close().await.0, 4002);
    let mut h = Harness::start(Some("not.a.token".into()), Duration::from_secs(120));
    assert_eq!(h.expect_close().await.0, 4002);
}

/// The compatibility layers' state: every layer on, time paused, the legacy secret set.
fn compat_state() -> AppState {
    let mut c = config();
    c.compat = vec![Layer::WsRelay, Layer::EventBroadcaster, Layer::SseStream];
    c.execution_stream_signing_secret = Some(LEGACY_SECRET.into());
    AppState::new(c, Clock::tokio()).unwrap()
}

/// Waits (in paused time) until a connection watches `run`, then publishes `count` log events.
async fn publish_when_watched(state: &AppState, run: &str, count: usize) {
    while state.hub.watcher_count(run) == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    state
        .broker
        .publish(run.into(), log_events(count))
        .await
        .unwrap();
}

/// Publishes two events to `r1` once the socket watches it: the socket, which reads nothing,
/// must end, its close counted as a slow consumer's.
async fn ends_as_a_slow_consumer(state: &AppState, socket: tokio::task::JoinHandle<()>) {
    publish_when_watched(state, "r1", 2).await;
    socket.await.unwrap();
    assert_eq!(state.metrics.slow_consumer_closes.get(), 1);
}

/// A legacy socket that stops reading: its write times out, it closes with 4008, and the close
/// is counted as a slow consumer's.
#[tokio::test(start_paused = true)]
async fn a_legacy_socket_whose_write_times_out_is_counted_as_a_slow_consumer() {
    let state = compat_state();
    // Room for the `connected` message only; nothing reads.
    let (_client, sink, stream) = ChannelSocket::open(4, 1);
    let token = Some(legacy_token("r1", 300));
    let socket = tokio::spawn(serve_legacy(state.clone(), sink, stream, token));
    ends_as_a_slow_consumer(&state, socket).await;
}

/// The same for an `/api/ws` socket.
#[tokio::test(start_paused = true)]
async fn an_event_broadcaster_socket_whose_write_times_out_is_counted_as_a_slow_consumer() {
    let state = compat_state();
    let (client, sink, stream) = ChannelSocket::open(4, 1);
    let token = Some(support::subscribe_token("r1"));
    let socket = tokio::spawn(serve_socket(state.clone(), sink, stream, token));
    client
        .send(json!({"type":"subscribe","executionId":"r1"}))
        .await;
    ends_as_a_slow_consumer(&state, socket).await;
}

/// The SSE plan's stream, through the router in-process: a client that stops reading is dropped
/// after the write timeout, counted as a slow consumer.
#[tokio::test(start_paused = true)]
async fn a_plan_stream_whose_write_times_out_is_counted_as_a_slow_consumer() {
    let state = compat_state();
    // More events than the response body buffers: the replay's writes wait on the client.
    state
        .broker
        .publish("e1".into(), log_events(40))
        .await
        .unwrap();
    let response = plan_stream(&state, "e1").await;
    // The body is held and never read.
    tokio::time::sleep(state.config.write_timeout + Duration::from_secs(1)).await;
    assert_eq!(state.metrics.slow_consumer_closes.get(), 1);
    assert_eq!(state.metrics.sse_connections.get(), 0);
    drop(response);
}

/// The SSE plan's stream of `run` in workspace `w`, through the router in-process: its response.
async fn plan_stream(state: &AppState, run: &str) -> axum::response::Response {
    use tower::ServiceExt as _;
    let token = support::token_with(runwire_protocol::token::Claims {
        ws: Some("w".into()),
        ..support::claims(run, runwire_protocol::token::Scope::Subscribe)
    });
    let request = axum::http::Request::get(format!(
        "/api/v1/workspaces/w/executions/{run}/stream?token={token}"
    ))
    .body(axum::body::Body::empty())
    .unwrap();
    let response = runwire_relay::app(state.clone())
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
}

/// Reads what `socket` receives until `state` has counted `n` delivery latencies; fails after
/// 20 messages, or when the socket ends, without them.
async fn until_latencies_counted(socket: &mut ChannelSocket, state: &AppState, n: u64) {
    for _ in 0..20 {
        if state.metrics.delivery_latency.count() >= n {
            break;
        }
        let (m, _) = socket.next().await;
        assert!(m.is_some(), "the socket ended first");
    }
    assert_eq!(state.metrics.delivery_latency.count(), n);
}

/// Live events written to a legacy socket count in `runwire_delivery_latency_seconds`, as on
/// runwire's own transports.
#[tokio::test(start_paused = true)]
async fn a_legacy_socket_counts_the_delivery_latency_of_live_events() {
    let mut h = Harness::connected(300, Duration::from_secs(120)).await;
    assert_eq!(h.state.metrics.delivery_latency.count(), 0);
    h.state
        .broker
        .publish("r1".into(), log_events(2))
        .await
        .unwrap();
    let state = h.state.clone();
    until_latencies_counted(&mut h.socket, &state, 2).await;
}

/// The same for an `/api/ws` socket.
#[tokio::test(start_paused = true)]
async fn an_event_broadcaster_socket_counts_the_delivery_latency_of_live_events() {
    let state = compat_state();
    let (mut client, sink, stream) = ChannelSocket::open(64, 64);
    let token = Some(support::subscribe_token("r1"));
    tokio::spawn(serve_socket(state.clone(), sink, stream, token));
    client
        .send(json!({"type":"subscribe","executionId":"r1"}))
        .await;
    publish_when_watched(&state, "r1", 2).await;
    until_latencies_counted(&mut client, &state, 2).await;
}

/// The same for the SSE plan's stream.
#[tokio::test(start_paused = true)]
async fn a_plan_stream_counts_the_delivery_latency_of_live_events() {
    use http_body_util::BodyExt as _;
    let state = compat_state();
    let mut body = plan_stream(&state, "e1").await.into_body();
    publish_when_watched(&state, "e1", 2).await;
    for _ in 0..20 {
        if state.metrics.delivery_latency.count() >= 2 {
            break;
        }
        assert!(body.frame().await.is_some(), "the stream ended first");
    }
    assert_eq!(state.metrics.delivery_latency.count(), 2);
}
