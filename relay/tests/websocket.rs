//! `/v1/ws` and `/ws/executions` against a relay on a loopback port.

mod support;

use std::sync::Arc;

use runwire_protocol::token::{Claims, Scope};
use serde_json::json;
use support::*;

fn typed_run() -> serde_json::Value {
    json!([
        {"event":"run.started","data":{"workflow":"w","node_count":2}},
        {"event":"node.started","data":{"node_key":"a"}},
        {"event":"node.progress","data":{"node_key":"a","progress":50}},
        {"event":"log","data":{"level":"warning","message":"slow","node_key":"a"}},
        {"event":"node.completed","data":{"node_key":"a","duration_ms":12}},
        {"event":"node.failed","data":{"node_key":"b","error":"boom"}},
        {"event":"custom.metric","data":{"anything":[1,2,3]}},
        {"event":"run.failed","data":{"error":"b failed","node_key":"b"}}
    ])
}

#[tokio::test]
async fn delivers_typed_events_in_order_then_ends_the_subscription() {
    let (relay, mut c) = Relay::with_client("r1").await;
    let sub = c.subscribe("r1", None).await;
    assert_eq!(sub["type"], "subscribed");
    assert_eq!(sub["seq"], 0);
    assert_eq!(sub["state"]["status"], "pending");
    assert!(sub["epoch"].is_string());
    relay.publish_ok("r1", typed_run()).await;
    let events = c.events(8).await;
    assert_eq!(seqs(&events), (1..=8).collect::<Vec<_>>());
    let names: Vec<_> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "run.started",
            "node.started",
            "node.progress",
            "log",
            "node.completed",
            "node.failed",
            "custom.metric",
            "run.failed"
        ]
    );
    assert_eq!(events[5]["data"], json!({"node_key":"b","error":"boom"}));
    assert_eq!(
        events[6]["data"],
        json!({"anything":[1,2,3]}),
        "unknown events pass through untouched"
    );
    assert!(events[0]["ts"].as_str().unwrap().ends_with('Z'));
    let end = c.frame().await;
    assert_eq!(
        end,
        json!({"type":"unsubscribed","run":"r1","reason":"failed"})
    );
    // the socket stays open for other runs
    c.send(json!({"type":"ping","id":7})).await;
    assert_eq!(c.frame().await, json!({"type":"pong","id":7}));
}

#[tokio::test]
async fn many_runs_on_one_socket() {
    let relay = Relay::start().await;
    let token = runs_token("a", &["a", "b"]);
    let mut c = Client::authed(&relay, &token).await;
    assert_eq!(c.subscribe("a", None).await["type"], "subscribed");
    assert_eq!(c.subscribe("b", None).await["type"], "subscribed");
    relay.publish_ok("a", log(1)).await;
    relay.publish_ok("b", log(1)).await;
    relay.publish_ok("a", log(2)).await;
    let got: Vec<(String, u64)> = c
        .events(3)
        .await
        .iter()
        .map(|e| {
            (
                e["run"].as_str().unwrap().to_owned(),
                e["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(got, [("a".into(), 1), ("b".into(), 1), ("a".into(), 2)]);
    c.send(json!({"type":"unsubscribe","run":"a"})).await;
    assert_eq!(
        c.frame().await,
        json!({"type":"unsubscribed","run":"a","reason":"unsubscribed"})
    );
    relay.publish_ok("a", log(3)).await;
    relay.publish_ok("b", log(2)).await;
    assert_eq!(c.event_at().await, ("b".into(), 2));
}

#[tokio::test]
async fn a_late_subscriber_to_a_finished_run_gets_snapshot_replay_and_end() {
    let relay = Relay::start().await;
    relay.publish_ok("done", typed_run()).await;
    let mut c = Client::authed(&relay, &subscribe_token("done")).await;
    // Without since: the snapshot says everything, then the end.
    let sub = c.subscribe("done", None).await;
    assert_eq!(sub["seq"], 8);
    assert_eq!(sub["state"]["status"], "failed");
    assert_eq!(sub["state"]["error"], "b failed");
    assert_eq!(sub["state"]["nodes"][0]["status"], "completed");
    assert_eq!(c.frame().await["reason"], "failed");
    // With since: the replay after it, then the end.
    let sub = c.subscribe("done", Some(5)).await;
    assert_eq!(sub["type"], "subscribed");
    assert_eq!(seqs(&c.events(3).await), [6, 7, 8]);
    assert_eq!(
        c.frame().await,
        json!({"type":"unsubscribed","run":"done","reason":"failed"})
    );
}

#[tokio::test]
async fn resume_with_since_while_publishing_is_gapless_and_duplicate_free() {
    let relay = Arc::new(Relay::start().await);
    let run = "busy";
    let publisher = {
        let relay = relay.clone();
        tokio::spawn(async move {
            for i in 0..300 {
                relay.publish_ok(run, log(i)).await;
                if i % 20 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        })
    };
    let token = subscribe_token(run);
    let mut last = 0u64;
    let mut iterations = 0;
    // Reconnect over and over while the publisher runs, each time resuming from the last seq seen.
    while last < 300 {
        iterations += 1;
        let mut c = Client::authed(&relay, &token).await;
        let sub = c.subscribe(run, Some(last)).await;
        assert_eq!(sub["type"], "subscribed", "{sub}");
        let take = if iterations % 2 == 0 { 7 } else { 13 };
        let want = take.min(300 - last as usize);
        for e in c.events(want).await {
            let seq = e["seq"].as_u64().unwrap();
            assert_eq!(seq, last + 1, "gap or duplicate after resuming from {last}");
            last = seq;
        }
    }
    publisher.await.unwrap();
    assert!(
        iterations > 20,
        "the loop resumed many times ({iterations})"
    );
}

#[tokio::test]
async fn resume_after_trimmed_history_sends_reset() {
    let relay = Relay::tweaked(|c| c.history_limit = 5).await;
    for i in 0..12 {
        relay.publish_ok("r", log(i)).await;
    }
    let mut c = Client::authed(&relay, &subscribe_token("r")).await;
    let reset = c.subscribe("r", Some(2)).await;
    assert_eq!(reset["type"], "reset");
    assert_eq!(reset["seq"], 12);
    assert_eq!(reset["state"]["log_count"], 12);
    relay.publish_ok("r", log(13)).await;
    assert_eq!(c.frame().await["seq"], 13);
    // still within the history: plain replay
    let sub = c.subscribe("r", Some(10)).await;
    assert_eq!(sub["type"], "subscribed");
    assert_eq!(seqs(&c.events(3).await), [11, 12, 13]);
}

#[tokio::test]
async fn resume_with_another_epoch_sends_reset() {
    let relay = Relay::start().await;
    relay.publish_ok("r", log(1)).await;
    let mut c = Client::authed(&relay, &subscribe_token("r")).await;
    c.send(json!({"type":"subscribe","run":"r","since":1,"epoch":"some-other-relay"}))
        .await;
    let f = c.frame().await;
    assert_eq!(f["type"], "reset", "{f}");
    assert_eq!(f["seq"], 1);
}

#[tokio::test]
async fn executions_socket_follows_the_tokens_run_and_closes_after_the_end() {
    let relay = Relay::start().await;
    relay
        .publish_ok("42", json!([{"event":"run.started"}, log(1)]))
        .await;
    let url = relay.ws_url(&format!(
        "/ws/executions?token={}&since=0",
        subscribe_token("42")
    ));
    let mut c = Client::connect(&url).await;
    let sub = c.frame().await;
    assert_eq!(sub["type"], "subscribed");
    assert_eq!(seqs(&c.events(2).await), [1, 2]);
    relay
        .publish_ok(
            "42",
            json!([log(2), {"event":"run.completed","data":{"total_duration_ms":5}}]),
        )
        .await;
    let (code, frames) = c.closed().await;
    assert_eq!(seqs(&frames), [3, 4]);
    assert_eq!(frames[1]["event"], "run.completed");
    assert_eq!(code, Some(1000));
}

#[tokio::test]
async fn executions_socket_refuses_bad_tokens_with_close_codes() {
    let relay = Relay::start().await;
    let cases = [
        ("garbage".to_owned(), 4002),
        (
            token_with(Claims {
                exp: now() - 60,
                ..claims("42", Scope::Subscribe)
            }),
            4001,
        ),
        (publish_token("42"), 4003),
        (
            token_with(Claims {
                run: None,
                runs: Some(vec!["*".into()]),
                ..claims("x", Scope::Subscribe)
            }),
            4003,
        ),
    ];
    for (token, want) in cases {
        let mut c = Client::connect(&relay.ws_url(&format!("/ws/executions?token={token}"))).await;
        assert_eq!(c.closed().await.0, Some(want), "token {token}");
    }
    let mut c = Client::connect(&relay.ws_url("/ws/executions")).await;
    assert_eq!(c.closed().await.0, Some(4002), "no token");
}

#[tokio::test]
async fn query_token_authenticates_at_once() {
    let relay = Relay::start().await;
    let mut c =
        Client::connect(&relay.ws_url(&format!("/v1/ws?token={}", subscribe_token("r")))).await;
    let welcome = c.frame().await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["heartbeat_ms"], 25_000);
    assert_eq!(welcome["protocol"], 1);
    assert!(welcome["expires_at"].as_u64().unwrap() > now());
}

#[tokio::test]
async fn executions_socket_closes_with_4003_when_a_refresh_drops_its_run() {
    let relay = Relay::start().await;
    let url = relay.ws_url(&format!("/ws/executions?token={}", subscribe_token("42")));
    let mut c = Client::connect(&url).await;
    assert_eq!(c.frame().await["type"], "subscribed");
    c.send(json!({"type":"auth","token":subscribe_token("43")}))
        .await;
    assert_eq!(c.closed().await.0, Some(4003));
}

#[tokio::test]
async fn connections_over_the_limit_are_closed_with_4029() {
    let relay = Relay::tweaked(|c| c.max_connections = 2).await;
    let _a = Client::authed(&relay, &subscribe_token("r")).await;
    let _b = Client::authed(&relay, &subscribe_token("r")).await;
    let mut c = Client::connect(&relay.ws_url("/v1/ws")).await;
    assert_eq!(c.closed().await.0, Some(4029));
}

#[tokio::test]
async fn a_client_that_takes_batches_gets_ready_frames_one_per_line() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;

    let relay = Relay::start().await;
    for chunk in 0..3 {
        let events = (1..=200).map(|i| log(chunk * 200 + i)).collect();
        relay
            .publish_ok("r1", serde_json::Value::Array(events))
            .await;
    }

    // Without `batch`: one frame per message (`Client` parses each message as one JSON value).
    let mut plain = Client::authed(&relay, &subscribe_token("r1")).await;
    assert_eq!(plain.subscribe("r1", Some(0)).await["type"], "subscribed");
    assert_eq!(
        seqs(&plain.events(600).await),
        (1..=600).collect::<Vec<_>>()
    );

    // With `batch`: the replay comes in few messages of several lines, each line one frame.
    let mut c = Client::connect(&relay.ws_url("/v1/ws")).await;
    c.send(json!({"type":"auth","token":subscribe_token("r1"),"batch":true}))
        .await;
    c.send(json!({"type":"subscribe","run":"r1","since":0}))
        .await;
    let mut frames = Vec::new();
    let mut messages = 0;
    while frames.len() < 602 {
        let msg = tokio::time::timeout(std::time::Duration::from_secs(5), c.ws.next())
            .await
            .expect("a message in time");
        let Some(Ok(Message::Text(text))) = msg else {
            continue;
        };
        messages += 1;
        assert!(text.len() <= 64 * 1024 || !text.contains('\n'));
        for line in text.split('\n') {
            frames.push(serde_json::from_str::<serde_json::Value>(line).unwrap());
        }
    }
    assert_eq!(frames[0]["type"], "welcome");
    assert_eq!(frames[1]["type"], "subscribed");
    assert_eq!(seqs(&frames[2..]), (1..=600).collect::<Vec<_>>());
    assert!(
        messages < 100,
        "600 replayed events came in {messages} messages"
    );
    // Live events after the replay arrive too.
    relay.publish_ok("r1", log(601)).await;
    let msg = tokio::time::timeout(std::time::Duration::from_secs(5), c.ws.next())
        .await
        .expect("a live event in time");
    let Some(Ok(Message::Text(text))) = msg else {
        panic!("{msg:?}")
    };
    let live: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(live["seq"], 601);
}

/// After the publishes a test made, nothing but this `pong` may come: the run is not followed.
async fn nothing_but_pong(c: &mut Client) {
    c.send(json!({"type":"ping","id":"end"})).await;
    assert_eq!(c.frame().await, json!({"type":"pong","id":"end"}));
}

#[tokio::test]
async fn a_subscribe_token_covers_its_run_next_to_the_connection_token() {
    let (relay, mut c) = Relay::with_client("a").await;
    c.subscribe_with_own_token("b").await;
    // Without a token of its own, a subscription is covered by the connection's, as before.
    assert_eq!(c.subscribe("a", None).await["type"], "subscribed");
    relay.publish_ok("b", log(1)).await;
    assert_eq!(c.event_at().await, ("b".into(), 1));
    // A refreshed connection token that covers neither run ends only the one it covered.
    c.send(json!({"type":"auth","token":subscribe_token("c")}))
        .await;
    let mut frames = [c.frame().await, c.frame().await];
    frames.sort_by_key(|f| f["type"].as_str().unwrap().to_owned());
    assert_eq!(
        frames[0],
        json!({"type":"unsubscribed","run":"a","reason":"forbidden"})
    );
    assert_eq!(frames[1]["type"], "welcome");
    relay.publish_ok("b", log(2)).await;
    assert_eq!(c.event_at().await, ("b".into(), 2));
}

#[tokio::test]
async fn a_subscribe_token_for_another_run_expired_or_for_publishing_is_refused() {
    // The connection's token covers "b": a subscription's own token, when given, decides.
    let (relay, mut c) = Relay::with_client("b").await;
    let expired = token_with(Claims {
        exp: now() - 60,
        ..claims("b", Scope::Subscribe)
    });
    for token in [subscribe_token("other"), expired, publish_token("b")] {
        c.send(json!({"type":"subscribe","run":"b","token":token}))
            .await;
        assert_eq!(
            c.frame().await,
            json!({"type":"unsubscribed","run":"b","reason":"forbidden"})
        );
    }
    c.send(json!({"type":"subscribe","run":"b","token":"not.a.jwt"}))
        .await;
    assert_eq!(c.frame().await["reason"], "forbidden");
    relay.publish_ok("b", log(1)).await;
    nothing_but_pong(&mut c).await;
    // The socket is fine: a good token still works on it.
    c.subscribe_with_own_token("b").await;
}

#[tokio::test]
async fn a_refused_resubscribe_ends_the_subscription_it_would_replace() {
    let (relay, mut c) = Relay::with_client("a").await;
    c.subscribe_with_own_token("b").await;
    c.send(json!({"type":"subscribe","run":"b","since":0,"token":subscribe_token("x")}))
        .await;
    assert_eq!(
        c.frame().await,
        json!({"type":"unsubscribed","run":"b","reason":"forbidden"})
    );
    relay.publish_ok("b", log(1)).await;
    nothing_but_pong(&mut c).await;
    assert_eq!(relay.state.metrics.subscriptions.get(), 0);
}

#[tokio::test]
async fn a_connection_token_that_covers_no_run_carries_runs_with_their_own_tokens() {
    let relay = Relay::start().await;
    let no_run = token_with(Claims {
        run: None,
        ..claims("unused", Scope::Subscribe)
    });
    let mut c = Client::authed(&relay, &no_run).await;
    assert_eq!(
        c.subscribe("a", None).await,
        json!({"type":"unsubscribed","run":"a","reason":"forbidden"})
    );
    for run in ["a", "b"] {
        c.send(json!({"type":"subscribe","run":run,"token":subscribe_token(run)}))
            .await;
        assert_eq!(c.frame().await["type"], "subscribed");
    }
    relay.publish_ok("a", log(1)).await;
    relay.publish_ok("b", log(1)).await;
    let runs: Vec<_> = c.events(2).await.iter().map(|e| e["run"].clone()).collect();
    assert_eq!(runs, [json!("a"), json!("b")]);
}
