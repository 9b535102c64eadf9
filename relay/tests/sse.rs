//! Server-Sent Events: snapshot first, replay, live, resume by Last-Event-ID, the end, limits.

mod support;

use std::time::Duration;

use runwire_protocol::token::{Claims, Scope};
use runwire_relay::AppState;
use runwire_relay::auth::Clock;
use serde_json::json;
use support::*;

fn sse_url(relay: &Relay, run: &str, query: &str) -> String {
    relay.url(&format!(
        "/v1/runs/{run}/events?token={}{query}",
        subscribe_token(run)
    ))
}

#[tokio::test]
async fn streams_the_snapshot_then_typed_events_in_order_then_ends() {
    let relay = Relay::start().await;
    relay
        .publish_ok(
            "r",
            json!([{"event":"run.started","data":{"workflow":"w"}}]),
        )
        .await;
    let mut sse = Sse::open(&sse_url(&relay, "r", ""), &[]).await;
    assert_eq!(sse.status, 200);
    let first = sse.message().await.unwrap();
    assert_eq!(first.event.as_deref(), Some("subscribed"));
    assert_eq!(
        first.id.as_deref(),
        Some("1"),
        "the snapshot's seq, so a reconnect resumes after it"
    );
    let sub = first.json();
    assert_eq!(
        (sub["seq"].as_u64(), sub["state"]["workflow"].as_str()),
        (Some(1), Some("w"))
    );
    relay
        .publish_ok(
            "r",
            json!([
                {"event":"node.started","data":{"node_key":"a"}},
                {"event":"node.completed","data":{"node_key":"a","duration_ms":3}},
                {"event":"run.completed","data":{}}
            ]),
        )
        .await;
    for (seq, name) in [
        (2, "node.started"),
        (3, "node.completed"),
        (4, "run.completed"),
    ] {
        let m = sse.message().await.unwrap();
        assert_eq!(m.id.as_deref(), Some(seq.to_string().as_str()));
        assert_eq!(m.event.as_deref(), Some(name));
        let env = m.json();
        assert_eq!(
            (env["type"].as_str(), env["seq"].as_u64()),
            (Some("event"), Some(seq))
        );
    }
    let end = sse.message().await.unwrap();
    assert_eq!(end.event.as_deref(), Some("unsubscribed"));
    assert_eq!(end.json()["reason"], "completed");
    assert!(
        sse.next().await.is_none(),
        "the stream ends after the terminal event"
    );
}

#[tokio::test]
async fn resumes_from_last_event_id_or_since() {
    let relay = Relay::start().await;
    for i in 0..6 {
        relay.publish_ok("r", log(i)).await;
    }
    let token = subscribe_token("r");
    let url = relay.url("/v1/runs/r/events");
    let auth = format!("Bearer {token}");
    let mut sse = Sse::open(&url, &[("authorization", &auth), ("last-event-id", "4")]).await;
    assert_eq!(
        sse.message().await.unwrap().event.as_deref(),
        Some("subscribed")
    );
    assert_eq!(sse.message().await.unwrap().id.as_deref(), Some("5"));
    assert_eq!(sse.message().await.unwrap().id.as_deref(), Some("6"));
    relay.publish_ok("r", log(7)).await;
    assert_eq!(sse.message().await.unwrap().id.as_deref(), Some("7"));

    let mut sse = Sse::open(&sse_url(&relay, "r", "&since=5"), &[]).await;
    sse.message().await.unwrap();
    let ids: Vec<_> = [sse.message().await.unwrap(), sse.message().await.unwrap()]
        .iter()
        .map(|m| m.id.clone().unwrap())
        .collect();
    assert_eq!(ids, ["6", "7"]);
}

#[tokio::test]
async fn a_replay_cut_after_the_first_frame_resumes_without_skipping() {
    let relay = Relay::start().await;
    for i in 1..=11 {
        relay.publish_ok("r", log(i)).await;
    }
    let auth = format!("Bearer {}", subscribe_token("r"));
    let url = relay.url("/v1/runs/r/events");
    let mut sse = Sse::open(&url, &[("authorization", &auth), ("last-event-id", "8")]).await;
    let first = sse.message().await.unwrap();
    assert_eq!(first.event.as_deref(), Some("subscribed"));
    assert_eq!(
        first.json()["seq"],
        11,
        "the state is the run's, at its head"
    );
    // The stream drops here; EventSource reconnects with the last id it saw.
    let seen = first.id.expect("subscribed carries an id");
    assert_eq!(seen, "8", "not ahead of the events delivered");
    drop(sse);
    let mut sse = Sse::open(&url, &[("authorization", &auth), ("last-event-id", &seen)]).await;
    assert_eq!(
        sse.message().await.unwrap().event.as_deref(),
        Some("subscribed")
    );
    relay.publish_ok("r", log(12)).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        let m = sse.message().await.unwrap();
        assert_eq!(m.event.as_deref(), Some("log"));
        ids.push(m.id.unwrap());
    }
    assert_eq!(ids, ["9", "10", "11", "12"], "each exactly once, in order");
    // A plain subscribe (nothing to replay) carries the head.
    let mut fresh = Sse::open(&url, &[("authorization", &auth)]).await;
    assert_eq!(fresh.message().await.unwrap().id.as_deref(), Some("12"));
}

#[tokio::test]
async fn a_finished_run_with_nothing_newer_answers_204() {
    let relay = Relay::start().await;
    relay
        .publish_ok("r", json!([log(1), {"event":"run.completed"}]))
        .await;
    let sse = Sse::open(&sse_url(&relay, "r", "&since=2"), &[]).await;
    assert_eq!(sse.status, 204);
    // a late joiner without since gets the snapshot and the end…
    let mut sse = Sse::open(&sse_url(&relay, "r", ""), &[]).await;
    let sub = sse.message().await.unwrap();
    assert_eq!(sub.json()["state"]["status"], "completed");
    assert_eq!(
        sse.message().await.unwrap().event.as_deref(),
        Some("unsubscribed")
    );
    // …and an EventSource reconnecting with the snapshot's id gets 204 and stops
    let last = sub.id.unwrap();
    let again = Sse::open(&sse_url(&relay, "r", ""), &[("last-event-id", &last)]).await;
    assert_eq!(again.status, 204);
}

#[tokio::test]
async fn sends_heartbeat_comments() {
    let relay = Relay::tweaked(|c| c.sse_heartbeat = Duration::from_millis(100)).await;
    let mut sse = Sse::open(&sse_url(&relay, "r", ""), &[]).await;
    assert_eq!(
        sse.message().await.unwrap().event.as_deref(),
        Some("subscribed")
    );
    let mut comments = 0;
    while comments < 2 {
        if sse.next().await.unwrap().comment {
            comments += 1;
        }
    }
}

#[tokio::test]
async fn ends_after_the_maximum_duration() {
    let relay = Relay::tweaked(|c| c.sse_max_duration = Duration::from_millis(300)).await;
    let mut sse = Sse::open(&sse_url(&relay, "r", ""), &[]).await;
    sse.message().await.unwrap();
    assert!(sse.message().await.is_none());
}

#[tokio::test]
async fn at_most_the_configured_streams_per_workspace() {
    let relay = Relay::start().await;
    let ws_token = |ws: &str| {
        token_with(Claims {
            ws: Some(ws.into()),
            ..claims("r", Scope::Subscribe)
        })
    };
    let url = |t: &str| relay.url(&format!("/v1/runs/r/events?token={t}"));
    let mut open = Vec::new();
    for _ in 0..5 {
        let mut s = Sse::open(&url(&ws_token("acme")), &[]).await;
        assert_eq!(s.status, 200);
        s.message().await.unwrap();
        open.push(s);
    }
    let sixth = Sse::open(&url(&ws_token("acme")), &[]).await;
    assert_eq!(sixth.status, 429);
    assert_eq!(
        Sse::open(&url(&ws_token("other")), &[]).await.status,
        200,
        "other workspaces are not affected"
    );
    // closing one frees its slot
    drop(open.pop());
    let url = &url;
    let freed = || async move { Sse::open(&url(&ws_token("acme")), &[]).await.status == 200 };
    assert!(
        eventually(freed, Duration::from_secs(2)).await,
        "a closed stream gives its slot back"
    );
}

#[tokio::test]
async fn shutdown_ends_streams_with_a_close_event() {
    let mut relay = Relay::start().await;
    let mut sse = Sse::open(&sse_url(&relay, "r", ""), &[]).await;
    sse.message().await.unwrap();
    let done = relay.begin_shutdown();
    let close = sse.message().await.unwrap();
    assert_eq!(close.event.as_deref(), Some("close"));
    assert_eq!(close.json()["code"], 1012);
    assert!(sse.next().await.is_none());
    done.await.unwrap().unwrap();
}

/// Through the router in-process, so that time can be paused: the token's expiry is checked to
/// the second of the relay's clock, not of the wall clock the test runs on.
#[tokio::test(start_paused = true)]
async fn ends_with_a_4001_close_event_when_the_token_expires() {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;

    let state = AppState::new(config(), Clock::tokio()).unwrap();
    let token = token_with(Claims {
        exp: state.verifier.clock().unix_secs() + 60,
        ..claims("r", Scope::Subscribe)
    });
    let started = tokio::time::Instant::now();
    let request = axum::http::Request::get(format!("/v1/runs/r/events?token={token}"))
        .body(axum::body::Body::empty())
        .unwrap();
    let response = runwire_relay::app(state).oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut text = String::new();
    while let Some(frame) = body.frame().await {
        if let Ok(chunk) = frame.unwrap().into_data() {
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
    }
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(65),
        "exp plus the 5 s leeway"
    );
    assert!(text.contains("event: subscribed\n"), "{text}");
    let close = text.rsplit("\n\n").nth(1).unwrap();
    assert!(close.starts_with("event: close\ndata: "), "{text}");
    assert!(close.contains(r#""code":4001"#), "{close}");
}

#[tokio::test]
async fn a_malformed_query_gets_a_json_400() {
    let relay = Relay::start().await;
    let resp = reqwest::get(sse_url(&relay, "r", "&since=abc"))
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_query");
}
