//! Every way a token can be refused, on every transport, with its status or close code; and
//! token refresh in place.

mod support;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use futures_util::StreamExt as _;
use runwire_protocol::token::{Claims, Scope};
use serde_json::{Value, json};
use support::*;

/// A token signed by an independent JWT library, with any algorithm.
fn jwt(alg: jsonwebtoken::Algorithm, claims: &Claims, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(alg),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn alg_none(claims: &Claims) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap());
    format!("{header}.{payload}.")
}

/// (name, token, HTTP status, close code, metric label) for a subscribe to run "r".
fn bad_subscribe_tokens() -> Vec<(&'static str, String, u16, u16, &'static str)> {
    let good = claims("r", Scope::Subscribe);
    vec![
        (
            "wrong alg",
            jwt(jsonwebtoken::Algorithm::HS512, &good, SECRET.as_bytes()),
            401,
            4002,
            "unsupported_alg",
        ),
        ("alg none", alg_none(&good), 401, 4002, "unsupported_alg"),
        (
            "bad signature",
            jwt(
                jsonwebtoken::Algorithm::HS256,
                &good,
                b"another-secret-that-is-long-enough!!",
            ),
            401,
            4002,
            "bad_signature",
        ),
        (
            "expired",
            token_with(Claims {
                exp: now() - 30,
                ..good.clone()
            }),
            401,
            4001,
            "expired",
        ),
        (
            "not yet valid",
            token_with(Claims {
                nbf: Some(now() + 600),
                ..good.clone()
            }),
            401,
            4002,
            "not_yet_valid",
        ),
        ("garbage", "not.a.token".into(), 401, 4002, "malformed"),
        (
            "publish scope",
            token_with(claims("r", Scope::Publish)),
            403,
            4003,
            "wrong_scope",
        ),
    ]
}

#[tokio::test]
async fn independent_library_tokens_are_accepted() {
    let relay = Relay::start().await;
    let token = jwt(
        jsonwebtoken::Algorithm::HS256,
        &claims("r", Scope::Subscribe),
        SECRET.as_bytes(),
    );
    let mut c = Client::authed(&relay, &token).await;
    assert_eq!(c.subscribe("r", None).await["type"], "subscribed");
}

#[tokio::test]
async fn websocket_auth_failures_close_with_their_codes() {
    let relay = Relay::start().await;
    for (name, token, _, code, label) in bad_subscribe_tokens() {
        let before = relay.state.metrics.auth_failures(label);
        let mut c = Client::connect(&relay.ws_url("/v1/ws")).await;
        c.send(json!({"type":"auth","token":token})).await;
        assert_eq!(c.closed().await.0, Some(code), "{name}");
        assert_eq!(
            relay.state.metrics.auth_failures(label),
            before + 1,
            "{name} counted"
        );
        // and the same token in the URL
        let mut c = Client::connect(&relay.ws_url(&format!("/v1/ws?token={token}"))).await;
        assert_eq!(c.closed().await.0, Some(code), "{name} in the query");
    }
}

#[tokio::test]
async fn sse_and_state_auth_failures_answer_their_status() {
    let relay = Relay::start().await;
    let http = reqwest::Client::new();
    for (name, token, status, _, _) in bad_subscribe_tokens() {
        for path in ["/v1/runs/r/events", "/v1/runs/r"] {
            let resp = http
                .get(relay.url(path))
                .bearer_auth(&token)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), status, "{name} on {path}");
            let body: Value = resp.json().await.unwrap();
            assert!(body["error"]["code"].is_string(), "{name}: {body}");
        }
    }
    let resp = http
        .get(relay.url("/v1/runs/r/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "no token");
}

#[tokio::test]
async fn publish_auth_failures_answer_their_status() {
    let relay = Relay::start().await;
    let http = reqwest::Client::new();
    let good = claims("r", Scope::Publish);
    let cases = [
        ("subscribe scope", subscribe_token("r"), 403),
        (
            "wrong run",
            token_with(claims("other", Scope::Publish)),
            403,
        ),
        (
            "expired",
            token_with(Claims {
                exp: now() - 30,
                ..good.clone()
            }),
            401,
        ),
        ("alg none", alg_none(&good), 401),
        ("garbage", "x".into(), 401),
    ];
    for (name, token, status) in cases {
        let resp = http
            .post(relay.url("/v1/runs/r/events"))
            .bearer_auth(token)
            .json(&log(1))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), status, "{name}");
    }
    let resp = http
        .post(relay.url("/v1/runs/r/events"))
        .json(&log(1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401, "no token");
    // nothing was appended by any of them
    assert_eq!(relay.publish_ok("r", log(1)).await, [1]);
}

#[tokio::test]
async fn subscribing_to_a_run_the_token_does_not_cover_is_forbidden() {
    let (relay, mut c) = Relay::with_client("mine").await;
    let f = c.subscribe("theirs", None).await;
    assert_eq!(
        f,
        json!({"type":"unsubscribed","run":"theirs","reason":"forbidden"})
    );
    assert_eq!(relay.state.metrics.auth_failures("wrong_run"), 1);
    // the connection is still good for its own run
    assert_eq!(c.subscribe("mine", None).await["type"], "subscribed");
    let resp = get_with(
        &relay.url("/v1/runs/theirs/events"),
        &subscribe_token("mine"),
    )
    .await;
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn refresh_in_place_keeps_subscriptions_and_ends_the_ones_it_drops() {
    let relay = Relay::start().await;
    let both = runs_token("a", &["a", "b"]);
    let mut c = Client::authed(&relay, &both).await;
    c.subscribe("a", None).await;
    c.subscribe("b", None).await;
    // A fresher token for "a" only.
    let fresher = token_with(Claims {
        exp: now() + 900,
        ..claims("a", Scope::Subscribe)
    });
    c.send(json!({"type":"auth","token":fresher})).await;
    let welcome = c.frame().await;
    assert_eq!(welcome["type"], "welcome");
    assert_eq!(welcome["expires_at"], now() + 900);
    assert_eq!(
        c.frame().await,
        json!({"type":"unsubscribed","run":"b","reason":"forbidden"})
    );
    relay.publish_ok("a", log(1)).await;
    assert_eq!(
        c.frame().await["seq"],
        1,
        "the kept subscription still delivers"
    );
    // A refused refresh leaves the connection as it was.
    c.send(json!({"type":"auth","token":"garbage"})).await;
    let err = c.frame().await;
    assert_eq!(err["type"], "error");
    assert_eq!(err["code"], "auth_failed");
    relay.publish_ok("a", log(2)).await;
    assert_eq!(c.frame().await["seq"], 2);
}

#[tokio::test]
async fn frames_before_auth_are_refused_but_the_socket_stays() {
    let relay = Relay::start().await;
    let mut c = Client::connect(&relay.ws_url("/v1/ws")).await;
    c.send(json!({"type":"subscribe","run":"r"})).await;
    assert_eq!(c.frame().await["code"], "not_authenticated");
    c.send(json!({"type":"ping"})).await;
    assert_eq!(c.frame().await["type"], "pong");
    c.send(json!({"type":"auth","token":subscribe_token("r")}))
        .await;
    assert_eq!(c.frame().await["type"], "welcome");
}

#[tokio::test]
async fn a_huge_exp_is_valid_and_its_connections_close_cleanly() {
    let relay = Relay::start().await;
    for exp in [9_200_000_000_000_000_000, i64::MAX as u64, u64::MAX] {
        let token = token_with(Claims {
            exp,
            ..claims("r", Scope::Subscribe)
        });
        // `?token=` and an `auth` frame on /v1/ws, and /ws/executions.
        let mut c = Client::connect(&relay.ws_url(&format!("/v1/ws?token={token}"))).await;
        assert_eq!(c.frame().await["type"], "welcome");
        let mut a = Client::authed(&relay, &token).await;
        assert_eq!(a.subscribe("r", None).await["type"], "subscribed");
        let mut e = Client::connect(&relay.ws_url(&format!("/ws/executions?token={token}"))).await;
        assert_eq!(e.frame().await["type"], "subscribed");
        let mut sse = Sse::open(&relay.url(&format!("/v1/runs/r/events?token={token}")), &[]).await;
        assert_eq!(sse.status, 200);
        assert_eq!(
            sse.message().await.unwrap().event.as_deref(),
            Some("subscribed")
        );
        let m = &relay.state.metrics;
        assert_eq!(m.ws_connections.get(), 2);
        assert_eq!(m.executions_connections.get(), 1);
        for client in [&mut c, &mut a, &mut e] {
            client.ws.close(None).await.unwrap();
            while client.ws.next().await.is_some() {}
        }
        drop(sse);
        let closed = || async move {
            m.ws_connections.get() + m.executions_connections.get() + m.sse_connections.get() == 0
        };
        assert!(
            eventually(closed, PATIENCE).await,
            "every connection gauge back at zero"
        );
    }
    relay.shutdown().await;
}

#[tokio::test]
async fn metrics_can_require_a_token_or_move_to_another_address() {
    let relay = Relay::tweaked(|c| c.metrics_token = Some("metrics-secret".into())).await;
    let http = reqwest::Client::new();
    let get = |auth: Option<&'static str>| {
        let mut req = http.get(relay.url("/metrics"));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        req.send()
    };
    assert_eq!(get(None).await.unwrap().status(), 401);
    assert_eq!(get(Some("Bearer wrong")).await.unwrap().status(), 401);
    assert_eq!(
        get(Some("Bearer metrics-secre")).await.unwrap().status(),
        401
    );
    let ok = get(Some("Bearer metrics-secret")).await.unwrap();
    assert_eq!(ok.status(), 200);
    assert!(
        ok.text()
            .await
            .unwrap()
            .contains("runwire_http_connections")
    );
    relay.shutdown().await;

    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics_addr = free.local_addr().unwrap();
    drop(free);
    let relay = Relay::tweaked(|c| c.metrics_addr = Some(metrics_addr)).await;
    assert_eq!(
        http.get(relay.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let (http, url) = (&http, &format!("http://{metrics_addr}/metrics"));
    let answer = eventually(|| async move { http.get(url).send().await.ok() }, PATIENCE)
        .await
        .expect("metrics on their own address");
    let text = answer.text().await.unwrap();
    assert!(text.contains("runwire_connections"));
    relay.shutdown().await;
}
