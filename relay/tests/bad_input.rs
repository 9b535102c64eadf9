//! Bad input and limits: each rule closes or refuses only the offender and loses nothing.

mod support;

use std::sync::Arc;

use reqwest::header::HeaderValue;
use runwire_protocol::token::{Claims, Scope};
use serde_json::{Value, json};
use support::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn an_oversized_frame_closes_that_socket_with_1009_only() {
    let (relay, mut bystander) = Relay::with_client("r").await;
    bystander.subscribe("r", None).await;
    let mut c = Client::authed(&relay, &subscribe_token("r")).await;
    let huge = json!({"type":"ping","id":"x".repeat(70 * 1024)});
    c.send(huge).await;
    assert_eq!(c.closed().await.0, Some(1009));
    relay.publish_ok("r", log(1)).await;
    assert_eq!(bystander.frame().await["seq"], 1);
}

#[tokio::test]
async fn a_frame_just_under_the_limit_is_fine() {
    let (_relay, mut c) = Relay::with_client("r").await;
    c.send(json!({"type":"ping","id":"x".repeat(60 * 1024)}))
        .await;
    assert_eq!(c.frame().await["type"], "pong");
}

#[tokio::test]
async fn invalid_json_and_unknown_frames_get_errors_and_the_socket_stays() {
    let (_relay, mut c) = Relay::with_client("r").await;
    c.send_raw(Message::text("{not json")).await;
    assert_eq!(c.frame().await["code"], "bad_frame");
    c.send_raw(Message::text("[1,2]")).await;
    assert_eq!(c.frame().await["code"], "bad_frame");
    c.send(json!({"type":"teleport"})).await;
    assert_eq!(c.frame().await["code"], "unknown_frame");
    c.send(json!({"type":"subscribe"})).await;
    assert_eq!(c.frame().await["code"], "bad_request");
    c.send(json!({"type":"subscribe","run":"bad/run"})).await;
    assert_eq!(c.frame().await["code"], "bad_request");
    assert_eq!(c.subscribe("r", None).await["type"], "subscribed");
}

#[tokio::test]
async fn a_binary_frame_is_a_protocol_error() {
    let (_relay, mut c) = Relay::with_client("r").await;
    c.send_raw(Message::binary(vec![1, 2, 3])).await;
    assert_eq!(c.closed().await.0, Some(4000));
}

#[tokio::test]
async fn more_than_the_subscription_limit_is_refused() {
    let relay = Relay::start().await;
    let token = runs_token("x", &["*"]);
    let mut c = Client::authed(&relay, &token).await;
    for i in 0..100 {
        assert_eq!(
            c.subscribe(&format!("run-{i}"), None).await["type"],
            "subscribed"
        );
    }
    let f = c.subscribe("run-100", None).await;
    assert_eq!(f["type"], "error");
    assert_eq!(f["code"], "too_many_subscriptions");
    assert_eq!(f["run"], "run-100");
    // resubscribing to one it holds is not a new subscription
    assert_eq!(c.subscribe("run-5", None).await["type"], "subscribed");
    assert_eq!(relay.state.metrics.subscriptions.get(), 100);
}

#[tokio::test]
async fn a_slow_consumer_is_closed_with_4008_and_others_keep_up() {
    let relay = Arc::new(Relay::tweaked(|c| c.queue_capacity = 32).await);
    let mut fast = Client::authed(&relay, &subscribe_token("r")).await;
    fast.subscribe("r", None).await;
    // The slow client subscribes and then never reads. Its socket buffers fill, then its queue.
    let mut slow = Client::authed(&relay, &subscribe_token("r")).await;
    slow.subscribe("r", None).await;
    let big = "x".repeat(32 * 1024);
    let total = 400u64;
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while n < total {
            let f = fast.frame().await;
            assert_eq!(f["seq"], n + 1);
            n += 1;
        }
    });
    for i in 0..total / 5 {
        let batch: Vec<Value> = (0..5)
            .map(|j| json!({"event":"log","data":{"level":"info","message":format!("{i}-{j} {big}")}}))
            .collect();
        relay.publish_ok("r", Value::Array(batch)).await;
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    reader.await.unwrap();
    assert!(relay.state.metrics.slow_consumer_closes.get() >= 1);
    let (code, frames) = slow.closed().await;
    assert_eq!(code, Some(4008));
    assert!(frames.len() < total as usize + 1);
}

#[tokio::test]
async fn origins_outside_the_allowlist_are_refused() {
    let relay = Relay::tweaked(|c| c.allowed_origins = vec!["https://app.example".into()]).await;
    let http = reqwest::Client::new();
    // WebSocket upgrade from another origin
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        relay.ws_url("/v1/ws"),
    )
    .unwrap();
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    let err = tokio_tungstenite::connect_async(req).await.unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    // SSE from another origin
    let resp = http
        .get(relay.url("/v1/runs/r/events"))
        .header("origin", "https://evil.example")
        .bearer_auth(subscribe_token("r"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
    // Preflight: allowed origin gets CORS headers, another gets 403
    let ok = preflight(&relay, HeaderValue::from_static("https://app.example")).await;
    assert_eq!(ok.status(), 204);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://app.example"
    );
    let bad = http
        .request(reqwest::Method::OPTIONS, relay.url("/v1/runs/r/events"))
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 403);
    // the allowed origin connects
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        relay.ws_url("/v1/ws"),
    )
    .unwrap();
    req.headers_mut()
        .insert("origin", "https://app.example".parse().unwrap());
    assert!(tokio_tungstenite::connect_async(req).await.is_ok());
}

/// A WebSocket upgrade request for `path` with the raw `Origin` header `origin`.
/// A CORS preflight, from `origin`, of a POST to the SSE route.
async fn preflight(relay: &Relay, origin: HeaderValue) -> reqwest::Response {
    reqwest::Client::new()
        .request(reqwest::Method::OPTIONS, relay.url("/v1/runs/r/events"))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap()
}

fn upgrade_from(path: &str, origin: &[u8]) -> Vec<u8> {
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: relay\r\nConnection: Upgrade\r\n\
         Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: "
    )
    .into_bytes();
    request.extend_from_slice(origin);
    request.extend_from_slice(b"\r\n\r\n");
    request
}

/// Writes `request` on a fresh connection and reads the answer's head.
async fn raw_exchange(relay: &Relay, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(PATIENCE, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn a_non_ascii_origin_is_refused_and_never_echoed() {
    for allowed in [vec!["https://app.example".to_owned()], vec![]] {
        let relay = Relay::tweaked(|c| c.allowed_origins = allowed).await;
        let http = reqwest::Client::new();
        for raw in [
            &b"https://\xc3\xa9vil.example"[..],
            b"https://app.example\xff",
        ] {
            let origin = HeaderValue::from_bytes(raw).unwrap();
            // A WebSocket upgrade, written by hand: client libraries refuse such a header.
            let answer = raw_exchange(&relay, &upgrade_from("/v1/ws", raw)).await;
            assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
            // A subscriber's GET of `path`, from that origin.
            let get = |path: &str| {
                http.get(relay.url(path))
                    .header("origin", origin.clone())
                    .bearer_auth(subscribe_token("r"))
                    .send()
            };
            let sse = get("/v1/runs/r/events").await.unwrap();
            assert_eq!(sse.status(), 403);
            assert!(sse.headers().get("access-control-allow-origin").is_none());
            let preflight = preflight(&relay, origin.clone()).await;
            assert_eq!(preflight.status(), 403);
            assert!(
                preflight
                    .headers()
                    .get("access-control-allow-origin")
                    .is_none()
            );
            let state = get("/v1/runs/r").await.unwrap();
            assert!(state.headers().get("access-control-allow-origin").is_none());
        }
    }
}

/// The compatibility layers' browser endpoints apply the same `Origin` rule as runwire's own: a
/// header that is not visible ASCII is forged, and is not taken for "no Origin".
#[tokio::test]
async fn the_compatibility_endpoints_refuse_a_non_ascii_origin_too() {
    use runwire_relay::compat::Layer;
    let relay = Relay::tweaked(|c| {
        c.allowed_origins = vec!["https://app.example".to_owned()];
        c.compat = vec![Layer::WsRelay, Layer::EventBroadcaster, Layer::SseStream];
    })
    .await;
    let token = token_with(Claims {
        ws: Some("w".into()),
        ..claims("e1", Scope::Subscribe)
    });
    for path in [
        format!("/ws/executions?token={token}"),
        format!("/api/ws?token={token}"),
        format!("/api/v1/workspaces/w/executions/e1/stream?token={token}"),
    ] {
        for origin in [&b"https://\xc3\xa9vil.example"[..], b"https://evil.example"] {
            let answer = raw_exchange(&relay, &upgrade_from(&path, origin)).await;
            assert!(
                answer.starts_with("HTTP/1.1 403"),
                "{path} from {}: {answer}",
                String::from_utf8_lossy(origin)
            );
        }
    }
}

#[tokio::test]
async fn malformed_publishes_get_400_with_a_json_error_and_append_nothing() {
    let relay = Relay::start().await;
    let http = reqwest::Client::new();
    let post = |body: String| {
        http.post(relay.url("/v1/runs/r/events"))
            .bearer_auth(publish_token("r"))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let cases = [
        ("{", "invalid_json"),
        ("[]", "invalid_batch"),
        (r#"{"event":"Not Valid"}"#, "invalid_event"),
        (
            r#"{"event":"node.started","data":{"node_key":7}}"#,
            "invalid_event",
        ),
        (
            r#"{"event":"run.progress","data":{"progress":250}}"#,
            "invalid_event",
        ),
        (
            r#"{"event":"log","data":{"level":"shout","message":"m"}}"#,
            "invalid_event",
        ),
        (r#"{"data":{}}"#, "invalid_event"),
        (
            r#"[{"event":"run.completed"},{"event":"log","data":{"level":"info","message":"m"}}]"#,
            "invalid_event",
        ),
    ];
    for (body, code) in cases {
        let resp = post(body.into()).await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["code"], code, "{body}");
        assert!(!err["error"]["message"].as_str().unwrap().is_empty());
    }
    let resp = http
        .post(relay.url("/v1/runs/bad%2Frun/events"))
        .bearer_auth(publish_token("bad/run"))
        .json(&log(1))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(
        relay.publish_ok("r", log(1)).await,
        [1],
        "nothing was appended before"
    );
}

#[tokio::test]
async fn a_body_over_one_mebibyte_gets_413() {
    let relay = Relay::start().await;
    let big = json!({"event":"log","data":{"level":"info","message":"x".repeat(1024 * 1024)}});
    let resp = relay.publish("r", big).await;
    assert_eq!(resp.status(), 413);
    // and a chunked one without Content-Length
    let chunks = futures_util::stream::iter(
        (0..20).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b' '; 64 * 1024]))),
    );
    let resp = reqwest::Client::new()
        .post(relay.url("/v1/runs/r/events"))
        .bearer_auth(publish_token("r"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 413);
}

#[tokio::test]
async fn publishing_after_the_terminal_event_is_a_conflict() {
    let relay = Relay::start().await;
    relay
        .publish_ok(
            "r",
            json!({"event":"run.cancelled","data":{"reason":"user"}}),
        )
        .await;
    let resp = relay.publish("r", log(1)).await;
    assert_eq!(resp.status(), 409);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "run_finished");
}

/// A WebSocket client that writes frames byte for byte, so that it can break the rules a client
/// library keeps.
struct RawWs {
    stream: tokio::net::TcpStream,
    read: Vec<u8>,
}

impl RawWs {
    async fn connect(relay: &Relay) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
        let request = "GET /v1/ws HTTP/1.1\r\nHost: relay\r\nConnection: Upgrade\r\n\
            Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
            Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut read = Vec::new();
        let end = loop {
            if let Some(at) = read.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed during the handshake");
            read.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(read[..end].to_vec())
            .unwrap()
            .to_ascii_lowercase();
        assert!(head.starts_with("http/1.1 101"), "{head}");
        // RFC 6455's own example key and answer.
        assert!(
            head.contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
            "{head}"
        );
        read.drain(..end);
        Self { stream, read }
    }

    /// A client frame: masked unless `unmasked`, final unless `more`.
    fn frame(opcode: u8, payload: &[u8], more: bool, unmasked: bool) -> Vec<u8> {
        let mut out = vec![if more { opcode } else { 0x80 | opcode }];
        let mask_bit = if unmasked { 0 } else { 0x80 };
        match payload.len() {
            n @ 0..=125 => out.push(mask_bit | n as u8),
            n => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        if unmasked {
            out.extend_from_slice(payload);
        } else {
            let mask = [9, 8, 7, 6];
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        out
    }

    async fn write(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.unwrap();
    }

    async fn auth(&mut self, run: &str) {
        let auth = json!({"type":"auth","token":subscribe_token(run)}).to_string();
        self.write(&Self::frame(1, auth.as_bytes(), false, false))
            .await;
        let (opcode, welcome) = self.next().await.expect("a frame");
        assert_eq!(opcode, 1);
        assert!(welcome.starts_with(br#"{"type":"welcome""#));
    }

    /// The next server frame's opcode and payload; `None` once the relay closed the connection.
    async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        use tokio::io::AsyncReadExt;
        loop {
            if self.read.len() >= 2 {
                assert_eq!(self.read[1] & 0x80, 0, "server frames are not masked");
                let (len, start) = match self.read[1] {
                    126 if self.read.len() >= 4 => {
                        (u16::from_be_bytes([self.read[2], self.read[3]]) as usize, 4)
                    }
                    126 | 127 => (usize::MAX, 0),
                    n => (n as usize, 2),
                };
                if len != usize::MAX && self.read.len() >= start + len {
                    let opcode = self.read[0] & 0x0f;
                    let payload = self.read[start..start + len].to_vec();
                    self.read.drain(..start + len);
                    return Some((opcode, payload));
                }
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(PATIENCE, self.stream.read(&mut chunk))
                .await
                .expect("a frame in time")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.read.extend_from_slice(&chunk[..n]);
        }
    }

    /// Reads up to the relay's close frame: its code.
    async fn close_code(&mut self) -> u16 {
        loop {
            match self.next().await {
                Some((8, payload)) => return u16::from_be_bytes([payload[0], payload[1]]),
                Some(_) => continue,
                None => panic!("closed without a close frame"),
            }
        }
    }
}

#[tokio::test]
async fn frames_against_the_protocol_close_that_socket_with_its_code_only() {
    let (relay, mut bystander) = Relay::with_client("r").await;
    bystander.subscribe("r", None).await;
    let cases: [(&str, Vec<u8>, u16); 5] = [
        (
            "not UTF-8",
            RawWs::frame(1, &[b'{', 0xff], false, false),
            1007,
        ),
        ("unmasked", RawWs::frame(1, b"{}", false, true), 1002),
        ("reserved opcode", RawWs::frame(3, b"", false, false), 1002),
        (
            "a continuation first",
            RawWs::frame(0, b"x", false, false),
            1002,
        ),
        (
            "a ping over 125 bytes",
            RawWs::frame(9, &[0; 126], false, false),
            1002,
        ),
    ];
    for (what, bytes, code) in cases {
        let mut c = RawWs::connect(&relay).await;
        c.auth("r").await;
        c.write(&bytes).await;
        assert_eq!(c.close_code().await, code, "{what}");
    }
    relay.publish_ok("r", log(1)).await;
    assert_eq!(bystander.frame().await["seq"], 1);
}

#[tokio::test]
async fn pings_are_answered_fragments_joined_and_a_close_echoed() {
    let relay = Relay::start().await;
    let mut c = RawWs::connect(&relay).await;
    // An `auth` frame in three fragments, with a ping between them, sent a few bytes at a time.
    let auth = json!({"type":"auth","token":subscribe_token("r")}).to_string();
    let (a, rest) = auth.as_bytes().split_at(10);
    let (b, tail) = rest.split_at(20);
    let mut bytes = RawWs::frame(1, a, true, false);
    bytes.extend(RawWs::frame(9, b"are you there", false, false));
    bytes.extend(RawWs::frame(0, b, true, false));
    bytes.extend(RawWs::frame(0, tail, false, false));
    for piece in bytes.chunks(7) {
        c.write(piece).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(c.next().await, Some((0xa, b"are you there".to_vec())));
    let (opcode, welcome) = c.next().await.unwrap();
    assert_eq!(opcode, 1);
    assert!(welcome.starts_with(br#"{"type":"welcome""#));
    // The client closes: the relay answers with the same code, then ends the connection.
    c.write(&RawWs::frame(8, &4321u16.to_be_bytes(), false, false))
        .await;
    assert_eq!(c.next().await, Some((8, 4321u16.to_be_bytes().to_vec())));
    assert_eq!(c.next().await, None);
}
