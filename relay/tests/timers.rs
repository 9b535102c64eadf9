//! Heartbeat, idle timeout, auth timeout, token expiry (the connection's and subscriptions' own)
//! and write timeouts of WebSocket connections and SSE streams, driven over in-memory channels
//! with paused tokio time: minutes pass in microseconds, and every instant is exact.

mod support;

use std::time::Duration;

use axum::extract::ws::Message;
use bytes::Bytes;
use runwire_protocol::token::{Claims, Scope};
use runwire_relay::AppState;
use runwire_relay::auth::Clock;
use runwire_relay::transport::sse::SseTask;
use runwire_relay::transport::ws::{Conn, Mode, WsQuery};
use serde_json::{Value, json};
use support::{ChannelSocket, Harness, SECRET, claims, config, log_events, token_with};
use tokio::sync::mpsc;
use tokio::time::Instant;

impl Harness {
    fn start(query: WsQuery) -> Self {
        Self::with_state(AppState::new(config(), Clock::tokio()).unwrap(), query)
    }

    fn with_state(state: AppState, query: WsQuery) -> Self {
        let (socket, sink, stream) = ChannelSocket::open(64, 64);
        let conn = Conn::new(state.clone(), Mode::Multi, sink);
        tokio::spawn(conn.run(stream, query));
        Self { socket, state }
    }

    /// A `/v1/ws` socket authenticated with an hour's token, past its `welcome`.
    async fn welcomed() -> Self {
        let mut h = Self::start(WsQuery::default());
        h.send(json!({"type":"auth","token":token(&h, 3600)})).await;
        assert_eq!(h.frame().await["type"], "welcome");
        h
    }

    /// The next message and how long after the start it came.
    async fn next(&mut self) -> (Message, Duration) {
        let (m, at) = self.socket.next().await;
        (m.expect("the relay sent something"), at)
    }

    /// The next text frame, skipping pings, and when it came.
    async fn text(&mut self) -> (Value, Duration) {
        loop {
            match self.next().await {
                (Message::Text(t), at) => return (serde_json::from_str(t.as_str()).unwrap(), at),
                (Message::Ping(_), _) => continue,
                (other, _) => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Publishes `n` log events to `run`.
    async fn publish(&self, run: &str, n: usize) {
        let events = log_events(n);
        self.state.broker.publish(run.into(), events).await.unwrap();
    }

    /// Skips pings until the close; returns its code and when it came.
    async fn close(&mut self) -> (u16, Duration) {
        loop {
            match self.next().await {
                (Message::Close(Some(f)), at) => return (f.code, at),
                (Message::Ping(_), _) => continue,
                (other, _) => panic!("expected a close, got {other:?}"),
            }
        }
    }
}

/// Sends a pong every 20 s, as a live client's WebSocket stack answers pings.
fn keep_answering(h: &Harness) {
    let ponger = h.to_relay.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(secs(20)).await;
            if ponger
                .send(Ok(Message::Pong(Default::default())))
                .await
                .is_err()
            {
                return;
            }
        }
    });
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A token that expires `ttl` seconds from now on the relay's (paused) clock.
fn token(h: &Harness, ttl: u64) -> String {
    run_token(h, "r", ttl)
}

/// A token for `run` alone that expires `ttl` seconds from now on the relay's (paused) clock.
fn run_token(h: &Harness, run: &str, ttl: u64) -> String {
    token_with(Claims {
        exp: unix(h) + ttl,
        ..claims(run, Scope::Subscribe)
    })
}

/// Now on the relay's (paused) clock, in Unix seconds.
fn unix(h: &Harness) -> u64 {
    h.state.verifier.clock().unix_secs()
}

#[tokio::test(start_paused = true)]
async fn pings_every_interval_and_closes_an_idle_client_with_4009() {
    let _ = SECRET;
    let mut h = Harness::welcomed().await;
    // The client answers the first four pings, then goes quiet.
    for n in 1..=4u64 {
        let (m, at) = h.next().await;
        assert!(matches!(m, Message::Ping(_)), "{m:?}");
        assert_eq!(at, secs(25 * n));
        h.pong().await;
    }
    // Heard last at 100 s; the ping at 125 s is still unanswered at the next tick.
    let (code, at) = h.close().await;
    assert_eq!(code, 4009);
    assert_eq!(at, secs(150), "one full interval after the unanswered ping");
    assert_eq!(h.state.metrics.ping_timeouts.get(), 1);
    assert_eq!(h.state.metrics.ws_connections.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_never_answers_is_closed_one_interval_after_the_first_ping() {
    let mut h = Harness::welcomed().await;
    let (m, at) = h.next().await;
    assert!(matches!(m, Message::Ping(_)), "{m:?}");
    assert_eq!(at, secs(25));
    let (code, at) = h.close().await;
    assert_eq!((code, at), (4009, secs(50)));
    assert_eq!(h.state.metrics.ping_timeouts.get(), 1);
    assert_eq!(h.state.metrics.ws_connections.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_idle_timeout_shorter_than_the_interval_is_checked_at_the_first_tick() {
    let mut config = config();
    config.idle_timeout = secs(10);
    let state = AppState::new(config, Clock::tokio()).unwrap();
    let mut h = Harness::with_state(state, WsQuery::default());
    h.send(json!({"type":"auth","token":token(&h, 3600)})).await;
    h.frame().await;
    let (code, at) = h.close().await;
    assert_eq!((code, at), (4009, secs(25)));
    assert_eq!(h.state.metrics.ping_timeouts.get(), 0, "no ping was sent");
}

#[tokio::test(start_paused = true)]
async fn client_frames_count_as_activity() {
    let mut h = Harness::start(WsQuery::default());
    h.send(json!({"type":"auth","token":token(&h, 3600)})).await;
    h.frame().await;
    let pinger = h.to_relay.clone();
    tokio::spawn(async move {
        for _ in 0..10 {
            tokio::time::sleep(secs(20)).await;
            let ping = json!({"type":"ping"}).to_string();
            pinger.send(Ok(Message::Text(ping.into()))).await.unwrap();
        }
    });
    let mut pongs = 0;
    let closed_at = loop {
        match h.next().await {
            (Message::Text(_), _) => pongs += 1,
            (Message::Ping(_), _) => {}
            (Message::Close(Some(f)), at) => {
                assert_eq!(f.code, 4009);
                break at;
            }
            (other, _) => panic!("{other:?}"),
        }
    };
    assert_eq!(pongs, 10);
    // Its last frame at 200 s answered the ping of 200 s; the one at 225 s is not answered.
    assert_eq!(closed_at, secs(250), "alive while it sent frames");
    assert_eq!(h.state.metrics.ping_timeouts.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn no_auth_frame_in_time_closes_with_4004() {
    let mut h = Harness::start(WsQuery::default());
    let (code, at) = h.close().await;
    assert_eq!((code, at), (4004, secs(10)));
}

#[tokio::test(start_paused = true)]
async fn an_expired_token_closes_with_4001_unless_refreshed() {
    let mut h = Harness::start(WsQuery::default());
    h.send(json!({"type":"auth","token":token(&h, 60)})).await;
    h.frame().await;
    keep_answering(&h);
    let (code, at) = h.close().await;
    assert_eq!(code, 4001);
    assert_eq!(at, secs(65), "exp plus the 5 s leeway");

    let mut h = Harness::start(WsQuery::default());
    h.send(json!({"type":"auth","token":token(&h, 60)})).await;
    h.frame().await;
    // keep it alive past the old expiry with pongs; the new token lasts until 50 + 600 + 5
    keep_answering(&h);
    tokio::time::sleep(secs(50)).await;
    h.send(json!({"type":"auth","token":token(&h, 600)})).await;
    loop {
        match h.next().await {
            (Message::Text(t), _) => {
                let f: Value = serde_json::from_str(t.as_str()).unwrap();
                assert_eq!(f["type"], "welcome");
                break;
            }
            (Message::Ping(_), _) => {}
            (other, _) => panic!("{other:?}"),
        }
    }
    let (code, at) = h.close().await;
    assert_eq!(code, 4001);
    assert_eq!(at, secs(655));
}

/// A subscription whose writes cannot complete: the relay's side of a socket whose buffers are
/// full. Its events come as one batch, so the second frame's write is the one that waits.
#[tokio::test(start_paused = true)]
async fn a_write_that_times_out_closes_with_4008_and_is_counted() {
    let state = AppState::new(config(), Clock::tokio()).unwrap();
    state
        .broker
        .publish("r".into(), log_events(3))
        .await
        .unwrap();
    // Room for one message: the welcome. Nothing reads it.
    let (mut socket, sink, stream) = ChannelSocket::open(4, 1);
    let conn = Conn::new(state.clone(), Mode::Multi, sink);
    let task = tokio::spawn(conn.run(stream, WsQuery::default()));
    socket
        .send(json!({"type":"auth","token":token_with(claims("r", Scope::Subscribe))}))
        .await;
    socket
        .send(json!({"type":"subscribe","run":"r","since":0}))
        .await;
    task.await.unwrap();
    assert_eq!(
        socket.started.elapsed(),
        state.config.write_timeout * 2,
        "the stuck write, then the close frame, each given the write timeout"
    );
    assert_eq!(state.metrics.slow_consumer_closes.get(), 1);
    assert_eq!(state.metrics.ws_connections.get(), 0);
    assert_eq!(socket.frame().await["type"], "welcome");
}

/// An SSE stream of run `r` whose response body is a channel of `capacity` chunks, for a token
/// that expires `ttl` seconds from now on the relay's paused clock.
async fn sse(state: &AppState, ttl: u64, capacity: usize) -> mpsc::Receiver<Bytes> {
    let claims = Claims {
        exp: state.verifier.clock().unix_secs() + ttl,
        ..claims("r", Scope::Subscribe)
    };
    let (tx, rx) = mpsc::channel(capacity);
    let task = SseTask::open(state.clone(), "r".into(), &claims, None, None, tx)
        .await
        .unwrap()
        .expect("the run is not finished");
    tokio::spawn(task.run());
    rx
}

/// The stream's chunks, each with when it came, until the stream ends; and when it ended.
async fn sse_until_end(rx: &mut mpsc::Receiver<Bytes>) -> (Vec<(String, Duration)>, Duration) {
    let started = Instant::now();
    let mut chunks = Vec::new();
    while let Some(chunk) = rx.recv().await {
        let text = String::from_utf8(chunk.to_vec()).unwrap();
        chunks.push((text, started.elapsed()));
    }
    (chunks, started.elapsed())
}

fn sse_state(tweak: impl FnOnce(&mut runwire_relay::Config)) -> AppState {
    let mut config = config();
    tweak(&mut config);
    AppState::new(config, Clock::tokio()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn sse_heartbeats_every_interval_and_ends_with_4001_when_the_token_expires() {
    let state = sse_state(|_| {});
    let mut rx = sse(&state, 60, 16).await;
    let (chunks, ended) = sse_until_end(&mut rx).await;
    let at = |d: Duration| d.as_secs();
    assert_eq!(chunks[0], ("retry: 1000\n\n".to_owned(), secs(0)));
    assert!(
        chunks[1].0.starts_with("id: 0\nevent: subscribed\n"),
        "{chunks:?}"
    );
    let beats: Vec<u64> = chunks[2..chunks.len() - 1]
        .iter()
        .map(|(text, when)| {
            assert_eq!(text, ": hb\n\n");
            at(*when)
        })
        .collect();
    assert_eq!(beats, [15, 30, 45, 60], "one every --sse-heartbeat");
    let (close, when) = chunks.last().unwrap();
    assert!(close.starts_with("event: close\ndata: "), "{close}");
    assert!(close.contains(r#""code":4001"#), "{close}");
    assert_eq!(*when, secs(65), "exp plus the 5 s leeway");
    assert_eq!(ended, secs(65));
    assert_eq!(state.metrics.sse_connections.get(), 0);
    assert_eq!(state.metrics.subscriptions.get(), 0);
}

#[tokio::test(start_paused = true)]
async fn sse_ends_quietly_after_the_maximum_duration() {
    let state = sse_state(|c| c.sse_max_duration = secs(100));
    let mut rx = sse(&state, 3600, 16).await;
    let (chunks, ended) = sse_until_end(&mut rx).await;
    assert_eq!(ended, secs(100));
    let (last, _) = chunks.last().unwrap();
    assert_eq!(
        last, ": hb\n\n",
        "no close event: the client simply reconnects"
    );
    assert_eq!(
        chunks.len(),
        2 + 6,
        "retry, subscribed, and heartbeats at 15..90 s"
    );
}

#[tokio::test(start_paused = true)]
async fn sse_ends_with_a_1012_close_event_at_shutdown() {
    let state = sse_state(|_| {});
    let mut rx = sse(&state, 3600, 16).await;
    let stopper = state.clone();
    tokio::spawn(async move {
        tokio::time::sleep(secs(20)).await;
        stopper.begin_shutdown();
    });
    let (chunks, ended) = sse_until_end(&mut rx).await;
    let (close, when) = chunks.last().unwrap();
    assert!(close.contains(r#""code":1012"#), "{close}");
    assert_eq!((*when, ended), (secs(20), secs(20)));
}

#[tokio::test(start_paused = true)]
async fn an_sse_client_that_stops_reading_is_dropped_after_the_write_timeout() {
    let state = sse_state(|_| {});
    // Room for one chunk, and nothing reads: the second write waits.
    let mut rx = sse(&state, 3600, 1).await;
    let timeout = state.config.write_timeout;
    tokio::time::sleep(timeout - Duration::from_millis(1)).await;
    assert!(!rx.is_closed(), "still waiting on its write");
    assert_eq!(state.metrics.sse_connections.get(), 1);
    tokio::time::sleep(Duration::from_millis(2)).await;
    assert!(rx.is_closed(), "dropped when the write timed out");
    assert_eq!(state.metrics.slow_consumer_closes.get(), 1);
    assert_eq!(state.metrics.sse_connections.get(), 0);
    assert_eq!(rx.recv().await.as_deref(), Some(&b"retry: 1000\n\n"[..]));
}

#[tokio::test(start_paused = true)]
async fn a_subscription_token_ends_its_subscription_at_its_expiry() {
    let mut h = Harness::welcomed().await;
    keep_answering(&h);
    let exp = unix(&h) + 60;
    h.send(json!({"type":"subscribe","run":"own","token":run_token(&h, "own", 60)}))
        .await;
    let (f, _) = h.text().await;
    assert_eq!(
        (f["type"].as_str(), f["run"].as_str()),
        (Some("subscribed"), Some("own"))
    );
    assert_eq!(f["expires_at"], exp, "told when its token expires");
    // A subscription that relies on the connection's token is told nothing of the kind.
    h.send(json!({"type":"subscribe","run":"r"})).await;
    let (f, _) = h.text().await;
    assert_eq!(
        (f["type"].as_str(), f["run"].as_str()),
        (Some("subscribed"), Some("r"))
    );
    assert!(f.get("expires_at").is_none(), "{f}");
    assert_eq!(h.state.metrics.subscriptions.get(), 2);

    let (f, at) = h.text().await;
    assert_eq!(
        f,
        json!({"type":"unsubscribed","run":"own","reason":"token_expired"})
    );
    assert_eq!(at, secs(65), "exp plus the 5 s leeway");
    assert_eq!(h.state.metrics.subscriptions.get(), 1);

    // The connection and its other subscription carry on.
    h.publish("own", 1).await;
    h.publish("r", 1).await;
    let (f, at) = h.text().await;
    assert_eq!(
        (f["type"].as_str(), f["run"].as_str(), f["seq"].as_u64()),
        (Some("event"), Some("r"), Some(1))
    );
    assert_eq!(at, secs(65));
    let (code, at) = h.close().await;
    assert_eq!(
        (code, at),
        (4001, secs(3605)),
        "the connection's own token still decides"
    );
}

#[tokio::test(start_paused = true)]
async fn resubscribing_with_a_fresh_token_before_expiry_keeps_the_subscription_gapless() {
    let mut h = Harness::welcomed().await;
    keep_answering(&h);
    h.send(json!({"type":"subscribe","run":"own","since":0,"token":run_token(&h, "own", 60)}))
        .await;
    assert_eq!(h.text().await.0["type"], "subscribed");
    let mut seqs = Vec::new();
    fn events(f: &Value, seqs: &mut Vec<u64>) {
        assert_eq!(f["type"], "event", "{f}");
        seqs.push(f["seq"].as_u64().unwrap());
    }
    h.publish("own", 3).await;
    for _ in 0..3 {
        events(&h.text().await.0, &mut seqs);
    }

    // At 50 s, 15 s before the first token's end, the client resubscribes from its last seq
    // with a token good until 50 + 120 s (+ 5 s). Events published meanwhile are not lost.
    tokio::time::sleep(secs(50)).await;
    h.publish("own", 2).await;
    let exp = unix(&h) + 120;
    h.send(json!({"type":"subscribe","run":"own","since":3,"token":run_token(&h, "own", 120)}))
        .await;
    loop {
        let (f, at) = h.text().await;
        if f["type"] == "subscribed" {
            assert_eq!(
                (f["seq"].as_u64(), &f["expires_at"]),
                (Some(5), &json!(exp))
            );
            assert_eq!(at, secs(50));
            break;
        }
        events(&f, &mut seqs);
    }
    // Replay after `subscribed`, and duplicates of what the first subscription already sent:
    // the client keeps the seqs it has not seen.
    tokio::time::sleep(secs(30)).await;
    h.publish("own", 2).await;
    let (f, at) = loop {
        let (f, at) = h.text().await;
        if f["type"] != "event" {
            break (f, at);
        }
        let seq = f["seq"].as_u64().unwrap();
        if seqs.last().is_none_or(|last| seq > *last) {
            events(&f, &mut seqs);
        }
    };
    assert_eq!(
        seqs,
        (1..=7).collect::<Vec<_>>(),
        "every seq, through the old token's expiry"
    );
    assert_eq!(
        f,
        json!({"type":"unsubscribed","run":"own","reason":"token_expired"})
    );
    assert_eq!(
        at,
        secs(175),
        "the fresh token's exp plus the leeway, not the first one's"
    );
    assert_eq!(h.state.metrics.subscriptions.get(), 0);
}
