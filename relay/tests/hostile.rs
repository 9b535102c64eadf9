//! Hostile traffic against one relay: idle and slow sockets, forged and strange tokens, malformed
//! frames and bodies, resume tricks, traversal, oversized requests, slow readers.
//!
//! After each group a well-behaved client that has followed the run from the start must have
//! received every event exactly once, the relay must still answer, and the relay's log (captured
//! at `trace` for the relay's own code) must hold no panic and no token.

mod redis_support;
mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use redis_support::RedisServer;
use runwire_protocol::token::{Claims, Scope};
use serde_json::{Value, json};
use support::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

/// Reads until the peer closes; returns how long that took, or None if it stayed open.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

async fn health(relay: &Relay) -> u16 {
    reqwest::get(relay.url("/health"))
        .await
        .expect("/health answers")
        .status()
        .as_u16()
}

#[tokio::test]
async fn partial_headers_and_idle_keep_alive_are_closed_after_the_header_timeout() {
    let relay = Relay::tweaked(|c| c.header_timeout = Duration::from_millis(300)).await;
    let mut partial = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(relay.addr).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: relay\r\nX-Slow: ")
            .await
            .unwrap();
        partial.push(s);
    }
    let mut silent = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(relay.addr).await.unwrap());
    }
    let mut kept_alive = TcpStream::connect(relay.addr).await.unwrap();
    kept_alive
        .write_all(b"GET /health HTTP/1.1\r\nHost: relay\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = kept_alive.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    for s in partial
        .iter_mut()
        .chain(&mut silent)
        .chain([&mut kept_alive])
    {
        let took = closed_within(s, PATIENCE)
            .await
            .expect("closed by the relay");
        assert!(took < PATIENCE);
    }
    assert_eq!(health(&relay).await, 200);
    relay.shutdown().await;
}

#[tokio::test]
async fn silent_sockets_beyond_the_cap_do_not_keep_health_out() {
    let relay = Relay::tweaked(|c| {
        c.max_http_connections = 8;
        // Long enough that only the cap's eviction can let /health in within the test.
        c.header_timeout = Duration::from_secs(60);
    })
    .await;
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(TcpStream::connect(relay.addr).await.unwrap());
    }
    for _ in 0..5 {
        let start = Instant::now();
        assert_eq!(health(&relay).await, 200);
        assert!(start.elapsed() < Duration::from_secs(5));
    }
    let m = &relay.state.metrics;
    assert!(
        m.http_connections.get() <= 8,
        "{}",
        m.http_connections.get()
    );
    assert!(m.http_connections_evicted.get() >= 42);
    // The evicted sockets were closed.
    let mut closed = 0;
    for s in &mut silent {
        if closed_within(s, Duration::from_millis(50)).await.is_some() {
            closed += 1;
        }
    }
    assert!(closed >= 42, "{closed} closed");
    drop(silent);

    // Served connections are never evicted: with the cap full of WebSockets, a new connection
    // is refused and the WebSockets carry on.
    let mut clients = Vec::new();
    while relay.state.metrics.http_connections.get() < 8 {
        let mut c = Client::authed(&relay, &subscribe_token("r")).await;
        c.subscribe("r", None).await;
        clients.push(c);
        // The earlier silent sockets' slots are given back as their tasks end.
        tokio::task::yield_now().await;
    }
    let refused_before = m.http_connections_refused.get();
    assert!(reqwest::get(relay.url("/health")).await.is_err());
    assert_eq!(m.http_connections_refused.get(), refused_before + 1);
    // One leaves; its slot is the publisher's.
    let mut gone = clients.pop().unwrap();
    gone.ws.close(None).await.unwrap();
    assert!(eventually(|| async move { m.http_connections.get() < 8 }, PATIENCE).await);
    relay.publish_ok("r", log(1)).await;
    for c in &mut clients {
        assert_eq!(c.frame().await["seq"], 1);
    }
    drop(clients);
    relay.shutdown().await;
}

/// The `runwire` binary on a loopback port, logging everything at `trace` to a file.
struct Spawned {
    addr: SocketAddr,
    child: Child,
    log: PathBuf,
}

impl Spawned {
    async fn start(args: &[&str]) -> Self {
        Self::start_with_fd_limit(None, args).await
    }

    /// With more environment variables.
    async fn start_with_env(env: &[(&str, &str)]) -> Self {
        Self::spawn(None, &[], env).await
    }

    /// With `ulimit -n fd_limit`, when given.
    async fn start_with_fd_limit(fd_limit: Option<u32>, args: &[&str]) -> Self {
        Self::spawn(fd_limit, args, &[]).await
    }

    async fn spawn(fd_limit: Option<u32>, args: &[&str], env: &[(&str, &str)]) -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let log = std::env::temp_dir().join(format!(
            "runwire-hostile-{}-{}.log",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let file = std::fs::File::create(&log).unwrap();
        let mut command = match fd_limit {
            None => Command::new(env!("CARGO_BIN_EXE_runwire")),
            Some(n) => {
                let mut c = Command::new("sh");
                c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\"")])
                    .arg(env!("CARGO_BIN_EXE_runwire"));
                c
            }
        };
        let mut child = command
            .args(["serve", "--addr", "127.0.0.1:0"])
            .args(args)
            .env("RUNWIRE_SECRET", SECRET)
            .env("RUST_LOG", "trace")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("the runwire binary starts");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        tokio::time::timeout(PATIENCE, BufReader::new(stdout).read_line(&mut line))
            .await
            .expect("the relay announces its address")
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Self { addr, child, log }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{path}", self.addr)
    }

    /// SIGTERM, then the exit status and the whole log.
    async fn stop(mut self) -> String {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        let exit = tokio::time::timeout(PATIENCE, self.child.wait())
            .await
            .expect("the relay exits after SIGTERM")
            .unwrap();
        assert!(exit.success(), "exit status {exit}");
        let log = std::fs::read_to_string(&self.log).unwrap();
        let _ = std::fs::remove_file(&self.log);
        log
    }

    async fn publish_with(&self, token: &str, run: &str, body: Vec<u8>, ctype: &str) -> u16 {
        reqwest::Client::new()
            .post(self.url(&format!("/v1/runs/{run}/events")))
            .bearer_auth(token)
            .header("content-type", ctype)
            .body(body)
            .send()
            .await
            .map_or(0, |r| r.status().as_u16())
    }
}

/// Asserts the log is clean: no panic, and none of `tokens` (nor their signatures).
fn assert_clean_log(log: &str, tokens: &[String]) {
    assert!(!log.is_empty(), "the relay logged nothing at trace");
    assert!(!log.contains("panicked"), "a panic in the log:\n{log}");
    for t in tokens {
        let sig = t.rsplit('.').next().unwrap_or(t);
        assert!(
            !log.contains(t.as_str()) && (sig.len() < 16 || !log.contains(sig)),
            "a token in the log: {t}"
        );
    }
}

#[tokio::test]
async fn tokens_never_reach_the_log_even_at_trace() {
    let log = log_of_token_traffic(&[]).await;
    assert!(
        log.contains("DEBUG") && log.contains("authenticated"),
        "trace and debug lines are logged:\n{log}"
    );
}

#[tokio::test]
async fn tokens_never_reach_the_json_log_even_at_trace() {
    let log = log_of_token_traffic(&[("RUNWIRE_LOG_FORMAT", "json")]).await;
    let lines: Vec<Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["level"] == "DEBUG" && l["fields"]["message"] == "authenticated"),
        "trace and debug lines are logged:\n{log}"
    );
}

/// The log, at `trace`, of a relay that took tokens every way there is (an `auth` frame, a
/// refused refresh, `?token=` on each transport, a bearer publish); asserts it holds none of them.
async fn log_of_token_traffic(env: &[(&str, &str)]) -> String {
    let relay = Spawned::start_with_env(env).await;
    let sub = subscribe_token("r");
    let other = token_with(Claims {
        sub: Some("via-query".into()),
        ..claims("r", Scope::Subscribe)
    });
    let publish = publish_token("r");
    let refused = token_with(Claims {
        exp: now() - 600,
        ..claims("r", Scope::Subscribe)
    });
    // An `auth` frame, and a refresh with an expired token.
    let mut c = Client::connect(&relay.ws_url("/v1/ws")).await;
    c.send(json!({"type":"auth","token":sub})).await;
    assert_eq!(c.frame().await["type"], "welcome");
    c.send(json!({"type":"auth","token":refused})).await;
    assert_eq!(c.frame().await["code"], "auth_failed");
    c.send(json!({"type":"subscribe","run":"r"})).await;
    assert_eq!(c.frame().await["type"], "subscribed");
    // `?token=` on both WebSocket endpoints and SSE.
    let mut q = Client::connect(&relay.ws_url(&format!("/v1/ws?token={other}"))).await;
    assert_eq!(q.frame().await["type"], "welcome");
    let mut e = Client::connect(&relay.ws_url(&format!("/ws/executions?token={other}"))).await;
    assert_eq!(e.frame().await["type"], "subscribed");
    let mut sse = Sse::open(&relay.url(&format!("/v1/runs/r/events?token={other}")), &[]).await;
    assert_eq!(sse.status, 200);
    // A publish with a bearer token.
    let body = serde_json::to_vec(&log(1)).unwrap();
    let status = relay
        .publish_with(&publish, "r", body, "application/json")
        .await;
    assert_eq!(status, 200);
    assert_eq!(c.frame().await["seq"], 1);
    assert_eq!(
        sse.message().await.unwrap().event.as_deref(),
        Some("subscribed")
    );
    drop((c, q, e, sse));
    let log = relay.stop().await;
    assert_clean_log(&log, &[sub, other, publish, refused]);
    log
}

#[tokio::test]
async fn out_of_file_descriptors_the_relay_backs_off_and_recovers() {
    // A cap above the file limit: the kernel refuses accepts first (EMFILE).
    let relay = Spawned::start_with_fd_limit(
        Some(64),
        &["--max-http-connections", "1000", "--header-timeout", "30s"],
    )
    .await;
    let mut silent = Vec::new();
    for _ in 0..100 {
        silent.push(TcpStream::connect(relay.addr).await.unwrap());
    }
    // Real time, as the kernel's accept queue has no test clock: long enough for several retries.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(silent);
    let start = Instant::now();
    let url = &relay.url("/metrics");
    let metrics = eventually(|| async move { reqwest::get(url).await.ok() }, PATIENCE)
        .await
        .expect("the relay answers again once descriptors are free")
        .text()
        .await
        .unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    let errors: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("runwire_accept_errors_total "))
        .unwrap()
        .parse()
        .unwrap();
    // Backing off from 10 ms to 1 s: a handful of retries in 1.5 s, not a busy loop.
    assert!((1..=20).contains(&errors), "{errors} accept errors");
    let log = relay.stop().await;
    assert!(log.contains("accept failed"));
    assert_clean_log(&log, &[]);
}

/// A subscriber that has followed `run` from its start: every event must reach it once, in order.
struct Follower {
    client: Client,
    run: &'static str,
    seen: u64,
}

impl Follower {
    async fn start(relay: &Spawned, run: &'static str) -> Self {
        let mut client = Client::connect(&relay.ws_url("/v1/ws")).await;
        client
            .send(json!({"type":"auth","token":subscribe_token(run)}))
            .await;
        assert_eq!(client.frame().await["type"], "welcome");
        assert_eq!(client.subscribe(run, None).await["type"], "subscribed");
        Self {
            client,
            run,
            seen: 0,
        }
    }

    /// The relay is alive and this client still gets the next event, exactly once.
    async fn check(&mut self, relay: &Spawned, after: &str) {
        let health = reqwest::get(relay.url("/health")).await;
        assert!(
            health.is_ok_and(|r| r.status() == 200),
            "/health after {after}"
        );
        let body = serde_json::to_vec(&log(self.seen + 1)).unwrap();
        let status = relay
            .publish_with(&publish_token(self.run), self.run, body, "application/json")
            .await;
        assert_eq!(status, 200, "publish after {after}");
        let f = self.client.frame().await;
        self.seen += 1;
        assert_eq!(
            (f["type"].as_str(), f["seq"].as_u64()),
            (Some("event"), Some(self.seen)),
            "the follower after {after}: {f}"
        );
        assert_eq!(
            f["data"]["message"],
            format!("line {}", self.seen),
            "the follower's own event after {after}: {f}"
        );
    }
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Signs arbitrary header and claims bytes with the relay's secret.
fn sign_raw(header: &[u8], claims: &[u8]) -> String {
    use hmac_sha256::hmac;
    let input = format!("{}.{}", b64(header), b64(claims));
    format!(
        "{input}.{}",
        b64(&hmac(input.as_bytes(), SECRET.as_bytes()))
    )
}

/// HMAC-SHA256, through the independent JWT library: a token with these exact bytes.
mod hmac_sha256 {
    use base64::Engine as _;

    pub fn hmac(input: &[u8], key: &[u8]) -> Vec<u8> {
        let sig = jsonwebtoken::crypto::sign(
            input,
            &jsonwebtoken::EncodingKey::from_secret(key),
            jsonwebtoken::Algorithm::HS256,
        )
        .unwrap();
        super::URL_SAFE_NO_PAD.decode(sig).unwrap()
    }
}

/// Every kind of forged or strange token, with whether the relay must accept it.
fn token_variants() -> Vec<(&'static str, String, bool)> {
    let header = br#"{"alg":"HS256","typ":"JWT"}"#;
    let good = claims("r", Scope::Subscribe);
    let good_json = serde_json::to_vec(&good).unwrap();
    let valid = token_with(good.clone());
    let mut tampered_sig = valid.clone();
    let last = tampered_sig.pop().unwrap();
    tampered_sig.push(if last == 'A' { 'B' } else { 'A' });
    let parts: Vec<&str> = valid.split('.').collect();
    let other_run = serde_json::to_vec(&claims("other", Scope::Subscribe)).unwrap();
    let with_exp = |exp: &str| {
        sign_raw(
            header,
            format!(r#"{{"exp":{exp},"run":"r","scope":"subscribe"}}"#).as_bytes(),
        )
    };
    let jwt = |alg| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(alg),
            &good,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    vec![
        ("valid", valid.clone(), true),
        (
            "alg none",
            format!("{}.{}.", b64(br#"{"alg":"none","typ":"JWT"}"#), parts[1]),
            false,
        ),
        (
            "alg none, no signature",
            format!("{}.{}", b64(br#"{"alg":"none"}"#), parts[1]),
            false,
        ),
        ("HS384", jwt(jsonwebtoken::Algorithm::HS384), false),
        ("HS512", jwt(jsonwebtoken::Algorithm::HS512), false),
        (
            "alg RS256 signed as HS256",
            sign_raw(br#"{"alg":"RS256"}"#, &good_json),
            false,
        ),
        ("tampered signature", tampered_sig, false),
        (
            "tampered claims",
            format!("{}.{}.{}", parts[0], b64(&other_run), parts[2]),
            false,
        ),
        (
            "expired",
            token_with(Claims {
                exp: now() - 60,
                ..good.clone()
            }),
            false,
        ),
        (
            "not yet valid",
            token_with(Claims {
                nbf: Some(now() + 600),
                ..good.clone()
            }),
            false,
        ),
        ("exp 9.2e18", with_exp("9223372036854775807"), true),
        ("exp u64::MAX", with_exp("18446744073709551615"), true),
        ("exp 2^64", with_exp("18446744073709551616"), false),
        ("exp negative", with_exp("-1"), false),
        ("exp float", with_exp(&format!("{}.5", now() + 300)), false),
        ("exp 1e300", with_exp("1e300"), false),
        (
            "exp string",
            with_exp(&format!("\"{}\"", now() + 300)),
            false,
        ),
        ("exp null", with_exp("null"), false),
        (
            "run a number",
            sign_raw(
                header,
                format!(r#"{{"exp":{},"run":5}}"#, now() + 300).as_bytes(),
            ),
            false,
        ),
        (
            "runs a string",
            sign_raw(
                header,
                format!(r#"{{"exp":{},"runs":"r"}}"#, now() + 300).as_bytes(),
            ),
            false,
        ),
        (
            "scope admin",
            sign_raw(
                header,
                format!(r#"{{"exp":{},"run":"r","scope":"admin"}}"#, now() + 300).as_bytes(),
            ),
            false,
        ),
        (
            "publish scope",
            token_with(claims("r", Scope::Publish)),
            false,
        ),
        (
            "claims array",
            sign_raw(
                header,
                format!(
                    r#"[{}, null, null, null, "r", null, "subscribe", null]"#,
                    now() + 300
                )
                .as_bytes(),
            ),
            false,
        ),
        ("header array", sign_raw(br#"["HS256"]"#, &good_json), false),
        (
            "oversized",
            sign_raw(
                header,
                format!(
                    r#"{{"exp":{},"run":"r","pad":"{}"}}"#,
                    now() + 300,
                    "x".repeat(9000)
                )
                .as_bytes(),
            ),
            false,
        ),
        ("empty", String::new(), false),
        ("garbage", "a.b.c".into(), false),
        ("not base64", "!!!.???.***".into(), false),
        ("four parts", format!("{valid}.x"), false),
        ("non-ASCII", "é.é.é".into(), false),
    ]
}

#[tokio::test]
async fn hostile_traffic_leaves_the_relay_whole() {
    let started = Instant::now();
    let relay = Spawned::start(&[
        "--max-http-connections",
        "64",
        "--header-timeout",
        "1s",
        "--queue-capacity",
        "64",
        "--write-timeout",
        "1s",
    ])
    .await;
    let mut follower = Follower::start(&relay, "ok").await;
    let mut tokens: Vec<String> = Vec::new();
    let http = reqwest::Client::new();

    // Tokens, on every transport.
    for (name, token, accepted) in token_variants() {
        let encoded: String = token
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        // `?token=`
        let mut c = Client::connect(&relay.ws_url(&format!("/v1/ws?token={encoded}"))).await;
        match c.read().await {
            Read::Frame(f) if accepted => assert_eq!(f["type"], "welcome", "{name}"),
            Read::Closed(Some(code)) if !accepted => {
                assert!([4001, 4002, 4003].contains(&code), "{name}: {code}");
            }
            other => panic!("{name}: {other:?}"),
        }
        // An `auth` frame.
        let mut c = Client::connect(&relay.ws_url("/v1/ws")).await;
        c.send(json!({"type":"auth","token":token})).await;
        match c.read().await {
            Read::Frame(f) if accepted => assert_eq!(f["type"], "welcome", "{name}"),
            Read::Closed(Some(code)) if !accepted => {
                assert!([4001, 4002, 4003].contains(&code), "{name}: {code}");
            }
            other => panic!("{name}: {other:?}"),
        }
        // SSE and run state, by header.
        for path in ["/v1/runs/r/events", "/v1/runs/r"] {
            let status = http
                .get(relay.url(path))
                .header("authorization", format!("Bearer {token}"))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16();
            assert_eq!(status == 200, accepted, "{name} {path}: {status}");
            assert!(status < 500, "{name} {path}: {status}");
        }
        // Publish: only the publish-scope token publishes.
        let body = serde_json::to_vec(&log(0)).unwrap();
        let status = relay
            .publish_with(&token, "r", body, "application/json")
            .await;
        if name == "publish scope" {
            assert_eq!(status, 200, "{name} publish");
        } else {
            assert!([401, 403].contains(&status), "{name} publish: {status}");
        }
        if token.len() > 20 {
            tokens.push(token);
        }
    }
    follower.check(&relay, "tokens").await;

    // Malformed WebSocket frames, each on its own authed socket.
    let authed = || async {
        let mut c = Client::connect(&relay.ws_url("/v1/ws")).await;
        c.send(json!({"type":"auth","token":subscribe_token("r")}))
            .await;
        assert_eq!(c.frame().await["type"], "welcome");
        c
    };
    let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    let deep_object = format!(
        r#"{{"type":"ping","id":{}1{}}}"#,
        "[".repeat(30_000),
        "]".repeat(30_000)
    );
    for (name, text, code) in [
        ("invalid JSON", "{not json".to_owned(), "bad_frame"),
        ("a JSON array", "[1,2]".to_owned(), "bad_frame"),
        (
            "unknown type",
            r#"{"type":"hello"}"#.to_owned(),
            "unknown_frame",
        ),
        ("type not a string", r#"{"type":5}"#.to_owned(), "bad_frame"),
        (
            "missing run",
            r#"{"type":"subscribe"}"#.to_owned(),
            "bad_request",
        ),
        (
            "negative since",
            r#"{"type":"subscribe","run":"r","since":-1}"#.to_owned(),
            "bad_request",
        ),
        (
            "huge since",
            r#"{"type":"subscribe","run":"r","since":1e300}"#.to_owned(),
            "bad_request",
        ),
        (
            "bad run id",
            r#"{"type":"subscribe","run":"../../etc"}"#.to_owned(),
            "bad_request",
        ),
        ("30,000-deep array", deep, "bad_frame"),
        ("30,000-deep ping id", deep_object, "bad_frame"),
    ] {
        let mut c = authed().await;
        c.send_raw(Message::text(text)).await;
        let f = c.frame().await;
        assert_eq!(f["code"], code, "{name}: {f}");
        c.send(json!({"type":"ping","id":1})).await;
        assert_eq!(c.frame().await["type"], "pong", "{name}: the socket stays");
    }
    let mut c = authed().await;
    c.send_raw(Message::binary(vec![1, 2, 3])).await;
    assert_eq!(c.closed().await.0, Some(4000), "binary");
    let mut c = authed().await;
    c.send_raw(Message::text("x".repeat(70 * 1024))).await;
    assert_eq!(c.closed().await.0, Some(1009), "over 64 KiB");
    let mut c = authed().await;
    c.send_raw(Message::text(format!("[{}]", "[".repeat(100_000))))
        .await;
    assert_eq!(c.closed().await.0, Some(1009), "100k-deep nesting");
    // Floods: subscribes beyond the limit and pings, read back in full.
    let mut c = Client::connect(&relay.ws_url("/v1/ws")).await;
    let star = runs_token("x", &["*"]);
    c.send(json!({"type":"auth","token":star})).await;
    c.frame().await;
    for i in 0..300 {
        c.send(json!({"type":"subscribe","run":format!("flood-{i}")}))
            .await;
    }
    let (mut subscribed, mut refused) = (0, 0);
    for _ in 0..300 {
        match c.frame().await["type"].as_str() {
            Some("subscribed") => subscribed += 1,
            Some("error") => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((subscribed, refused), (100, 200));
    for i in 0..2000 {
        c.send(json!({"type":"ping","id":i})).await;
    }
    for i in 0..2000 {
        assert_eq!(c.frame().await["id"], i);
    }
    drop(c);
    follower.check(&relay, "malformed frames").await;

    // Publish bodies.
    let publish = publish_token("p");
    let too_many: Vec<Value> = (0..1001).map(log).collect();
    let deep_body = format!(
        r#"{{"event":"log","data":{{"level":"info","message":"m","x":{}1{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    for (name, body, ctype) in [
        ("not JSON", b"{".to_vec(), "application/json"),
        ("empty", Vec::new(), "application/json"),
        ("a string", br#""log""#.to_vec(), "application/json"),
        ("no event", br#"{"data":{}}"#.to_vec(), "application/json"),
        (
            "bad event name",
            br#"{"event":"Bad Name!","data":{}}"#.to_vec(),
            "application/json",
        ),
        (
            "data not an object",
            br#"{"event":"log","data":[1]}"#.to_vec(),
            "application/json",
        ),
        (
            "1001 events",
            serde_json::to_vec(&too_many).unwrap(),
            "application/json",
        ),
        ("100k-deep data", deep_body.into_bytes(), "application/json"),
        (
            "over 1 MiB",
            vec![b' '; 1024 * 1024 + 1],
            "application/json",
        ),
        (
            "invalid UTF-8",
            b"{\"event\":\"log\",\"data\":{\"m\":\"\xff\"}}".to_vec(),
            "application/json",
        ),
    ] {
        let status = relay.publish_with(&publish, "p", body, ctype).await;
        assert!((400..500).contains(&status), "{name}: {status}");
    }
    for ctype in ["text/plain", "application/x-www-form-urlencoded", ""] {
        let body = serde_json::to_vec(&log(1)).unwrap();
        let status = relay.publish_with(&publish, "p", body, ctype).await;
        assert!(status < 500, "content type {ctype:?}: {status}");
    }
    follower.check(&relay, "publish bodies").await;

    // SSE resume values.
    let sse_auth = format!("Bearer {}", subscribe_token("ok"));
    for id in [
        "abc",
        "-1",
        "99999999999999999999999",
        "18446744073709551615",
        "1e3",
        " 1 ",
        "",
    ] {
        let mut sse = Sse::open(
            &relay.url("/v1/runs/ok/events"),
            &[("authorization", &sse_auth), ("last-event-id", id)],
        )
        .await;
        assert!(
            [200, 204].contains(&sse.status),
            "Last-Event-ID {id:?}: {}",
            sse.status
        );
        if sse.status == 200 {
            let first = sse.message().await.unwrap();
            assert!(
                matches!(first.event.as_deref(), Some("subscribed" | "reset")),
                "{id:?}"
            );
        }
    }
    for q in [
        "since=-1",
        "since=abc",
        "since=99999999999999999999999",
        "epoch=%FF",
    ] {
        let status = http
            .get(relay.url(&format!("/v1/runs/ok/events?{q}")))
            .header("authorization", &sse_auth)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        assert!(status < 500, "{q}: {status}");
    }
    follower.check(&relay, "SSE resume values").await;

    // Static-file traversal, long URLs, header floods: raw requests, as clients would refuse them.
    for path in [
        "/../../../../etc/passwd",
        "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "/..%2f..%2f..%2fetc%2fpasswd",
        "/assets/..%5c..%5c..%5cetc%5cpasswd",
        "/%00/etc/passwd",
        "//etc/passwd",
    ] {
        let answer = raw(
            &relay,
            format!("GET {path} HTTP/1.1\r\nHost: r\r\n\r\n").as_bytes(),
        )
        .await;
        assert!(!answer.contains("root:"), "{path}: {answer}");
    }
    let long_url = format!(
        "GET /health?{} HTTP/1.1\r\nHost: r\r\n\r\n",
        "a".repeat(200_000)
    );
    let answer = raw(&relay, long_url.as_bytes()).await;
    assert!(!answer.starts_with("HTTP/1.1 5"), "{answer}");
    let mut flood = b"GET /health HTTP/1.1\r\nHost: r\r\n".to_vec();
    for i in 0..500 {
        flood.extend_from_slice(format!("X-Flood-{i}: {}\r\n", "v".repeat(100)).as_bytes());
    }
    flood.extend_from_slice(b"\r\n");
    let answer = raw(&relay, &flood).await;
    assert!(!answer.starts_with("HTTP/1.1 5"), "{answer}");
    follower
        .check(&relay, "traversal, long URLs and header floods")
        .await;

    // Slowloris and silent sockets, beyond the cap (64).
    let mut held = Vec::new();
    for i in 0..100 {
        let mut s = TcpStream::connect(relay.addr).await.unwrap();
        if i % 2 == 0 {
            let _ = s
                .write_all(b"GET /health HTTP/1.1\r\nHost: r\r\nX-Slow: ")
                .await;
        }
        held.push(s);
    }
    follower.check(&relay, "slowloris and silent sockets").await;
    drop(held);

    // A slow reader on a busy run is closed; the follower, on its own run, is not held up.
    let mut slow = Client::connect(&relay.ws_url("/v1/ws")).await;
    slow.send(json!({"type":"auth","token":subscribe_token("busy")}))
        .await;
    slow.frame().await;
    slow.subscribe("busy", None).await;
    let busy = publish_token("busy");
    let big = "x".repeat(16 * 1024);
    for i in 0..40 {
        let batch: Vec<Value> = (0..10)
            .map(|j| json!({"event":"log","data":{"level":"info","message":format!("{i}-{j} {big}")}}))
            .collect();
        let status = relay
            .publish_with(
                &busy,
                "busy",
                serde_json::to_vec(&batch).unwrap(),
                "application/json",
            )
            .await;
        assert_eq!(status, 200);
    }
    follower.check(&relay, "a slow reader").await;
    drop(slow);

    // Invalid UTF-8 in a text frame, written by hand: the socket gets a close frame.
    let mut s = TcpStream::connect(relay.addr).await.unwrap();
    s.write_all(
        b"GET /v1/ws HTTP/1.1\r\nHost: r\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 101"));
    // FIN + text, masked with a zero key, payload 0xff 0xfe.
    s.write_all(&[0x81, 0x82, 0, 0, 0, 0, 0xff, 0xfe])
        .await
        .unwrap();
    let n = tokio::time::timeout(PATIENCE, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert!(
        n >= 4 && buf[0] == 0x88,
        "a close frame, got {:?}",
        &buf[..n]
    );
    let code = u16::from_be_bytes([buf[2], buf[3]]);
    assert_eq!(code, 1007, "invalid UTF-8");
    follower.check(&relay, "invalid UTF-8").await;

    // The state-size caps: values far over their caps, more nodes than are kept, a state at its
    // total cap. Each event reaches a subscriber whole and once; the state keeps capped values
    // cut or as the marker; the metric moves. (The Redis ingest cases: the next test.)
    let capped_before = metric(&relay, "runwire_state_values_capped_total").await;
    let caps = publish_token("caps");
    let mut watcher = Client::connect(&relay.ws_url("/v1/ws")).await;
    watcher
        .send(json!({"type":"auth","token":subscribe_token("caps")}))
        .await;
    assert_eq!(watcher.frame().await["type"], "welcome");
    assert_eq!(watcher.subscribe("caps", None).await["type"], "subscribed");
    let huge = "h".repeat(300_000);
    let key = |i: usize| format!("node-{i:05}-{}", "k".repeat(240));
    let mut batches: Vec<Vec<Value>> = vec![
        vec![json!({"event":"run.started","data":{"workflow":huge}})],
        vec![
            json!({"event":"node.completed","data":{"node_key":key(0),"output_summary":{"blob":huge}}}),
        ],
        vec![json!({"event":"node.failed","data":{"node_key":key(1),"error":huge}})],
    ];
    // 2,100 nodes (2,048 are kept) with 252-byte keys, each with a 4 KB output summary (over the
    // cap of every node after the 8th): the state grows large, but no larger than its total cap.
    // Batches of 50, read as they come (the queue holds 64).
    let summary = "s".repeat(4000);
    for chunk in (2..2100).collect::<Vec<_>>().chunks(50) {
        batches.push(
            chunk
                .iter()
                .map(|&i| json!({"event":"node.completed","data":{"node_key":key(i),"output_summary":summary}}))
                .collect(),
        );
    }
    batches.push(vec![
        json!({"event":"run.completed","data":{"result":{"blob":huge}}}),
    ]);
    let mut expected_seq = 0;
    for batch in &batches {
        let status = relay
            .publish_with(
                &caps,
                "caps",
                serde_json::to_vec(batch).unwrap(),
                "application/json",
            )
            .await;
        assert_eq!(status, 200, "a batch of {} events", batch.len());
        for sent in batch {
            let got = watcher.frame().await;
            expected_seq += 1;
            assert_eq!(got["seq"], expected_seq, "{}", got["event"]);
            assert_eq!(got["event"], sent["event"]);
            assert_eq!(got["data"], sent["data"], "the event is delivered whole");
        }
    }
    let end = watcher.frame().await;
    assert_eq!(
        (end["type"].as_str(), end["reason"].as_str()),
        (Some("unsubscribed"), Some("completed")),
        "{end}"
    );
    drop(watcher);
    let body = http
        .get(relay.url("/v1/runs/caps"))
        .bearer_auth(subscribe_token("caps"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let state: Value = serde_json::from_str::<Value>(&body).unwrap()["state"].take();
    let state_bytes = serde_json::to_string(&state).unwrap().len();
    assert!(
        state_bytes <= runwire_protocol::state::MAX_STATE_BYTES,
        "{state_bytes} bytes"
    );
    assert!(state_bytes > 500_000, "a large state: {state_bytes} bytes");
    let marker = runwire_protocol::state::truncated_marker();
    assert_eq!(state["result"], marker);
    let workflow = state["workflow"].as_str().unwrap();
    assert!(workflow.len() <= runwire_protocol::state::MAX_TEXT && workflow.ends_with('…'));
    let nodes = state["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), runwire_protocol::state::MAX_NODES);
    assert_eq!(state["nodes_truncated"], true);
    assert_eq!(nodes[0]["output_summary"], marker);
    let node_error = nodes[1]["error"].as_str().unwrap();
    assert!(
        node_error.len() <= runwire_protocol::state::MAX_NODE_VALUE && node_error.ends_with('…')
    );
    assert_eq!(state["status"], "completed");
    assert_eq!(state["seq"], expected_seq);
    let capped = metric(&relay, "runwire_state_values_capped_total").await;
    // The workflow, the first summary, the node error, the result, and the summaries of the
    // nodes after the 8th.
    assert!(
        capped >= capped_before + 2000,
        "{capped_before} -> {capped}"
    );
    follower.check(&relay, "the state-size caps").await;

    // Nothing leaked: once the hostile clients are gone, only the follower is counted.
    let url = &relay.url("/metrics");
    let gauges = || async move {
        let text = get_text(url).await;
        let value = |name: &str| -> i64 {
            text.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(-1)
        };
        let now = (
            value("runwire_connections{transport=\"ws\"}"),
            value("runwire_connections{transport=\"executions\"}"),
            value("runwire_connections{transport=\"sse\"}"),
            value("runwire_subscriptions"),
        );
        now == (1, 0, 0, 1)
    };
    assert!(
        eventually(gauges, PATIENCE).await,
        "connection and subscription gauges back to the follower's"
    );

    let log = relay.stop().await;
    tokens.extend([subscribe_token("ok"), publish_token("ok"), busy, publish]);
    assert_clean_log(&log, &tokens);
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the suite stays fast: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn hostile_redis_messages_leave_ingest_and_delivery_running() {
    let redis = RedisServer::start();
    let relay = Spawned::start(&[
        "--redis",
        &redis.url(),
        "--ingest",
        "w?*",
        "--ingest",
        "hostile:*",
    ])
    .await;
    let mut follower = Follower::start(&relay, "ok").await;
    // A watcher of another run, so that the relay listens on that run's live channel too.
    let mut other = Client::connect(&relay.ws_url("/v1/ws")).await;
    other
        .send(json!({"type":"auth","token":subscribe_token("other")}))
        .await;
    assert_eq!(other.frame().await["type"], "welcome");
    assert_eq!(other.subscribe("other", None).await["type"], "subscribed");
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut publish = async |channel: &[u8], payload: &[u8]| {
        let _: i64 = redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(&mut conn)
            .await
            .unwrap();
    };
    let ready = async || {
        reqwest::get(relay.url("/ready"))
            .await
            .map_or(0, |r| r.status().as_u16())
    };
    assert_eq!(ready().await, 200);

    // Channel names: split characters, bytes that are not UTF-8, control characters, the empty
    // run id, ids no run may have, a pattern as a name, very long names.
    let long = format!("w{}", "x".repeat(100_000));
    let channels: Vec<Vec<u8>> = vec![
        "wé7".into(),
        "wéé".into(),
        b"w\xff\xfe7".to_vec(),
        b"\xc3w7".to_vec(),
        b"w\x007".to_vec(),
        b"w\r\n7".to_vec(),
        "w".into(),
        "w?*".into(),
        "hostile:".into(),
        "hostile:../../etc".into(),
        "hostile:{ok}:live".into(),
        "hostile:a b".into(),
        "hostile:*".into(),
        format!("hostile:{}", "é".repeat(200)).into(),
        long.clone().into(),
    ];
    for channel in &channels {
        publish(channel, br#"{"status":"Success"}"#).await;
        publish(
            channel,
            br#"{"event":"log","data":{"level":"info","message":"m"}}"#,
        )
        .await;
    }
    assert_eq!(ready().await, 200, "after hostile channel names");
    follower.check(&relay, "hostile channel names").await;

    // Payloads: malformed, strange, huge, on a valid channel of a run nobody watches.
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_object = format!(
        r#"{{"event":"log","data":{}1{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let big_number = format!(r#"{{"status":"Success","n":1{}}}"#, "0".repeat(400));
    let near_limit = format!(
        r#"{{"event":"log","data":{{"level":"info","message":"{}"}}}}"#,
        "m".repeat(900_000)
    );
    let over_limit = vec![b'{'; 2 * 1024 * 1024];
    let payloads: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"{".to_vec(),
        b"\xff\xfe\xfd".to_vec(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"42".to_vec(),
        br#""a string""#.to_vec(),
        br#"{"event":5}"#.to_vec(),
        br#"{"event":"Bad Name!","data":{}}"#.to_vec(),
        br#"{"event":"node.started","data":{"node_key":""}}"#.to_vec(),
        br#"{"status":["Success"]}"#.to_vec(),
        br#"{"status":"Failure","error":{"nested":[1,2,3]}}"#.to_vec(),
        deep.into_bytes(),
        deep_object.into_bytes(),
        big_number.into_bytes(),
        near_limit.into_bytes(),
        over_limit,
    ];
    for (i, payload) in payloads.iter().enumerate() {
        publish(format!("hostile:junk-{i}").as_bytes(), payload).await;
        publish(b"wjunk", payload).await;
    }
    assert_eq!(ready().await, 200, "after hostile payloads");
    follower.check(&relay, "hostile payloads").await;

    // Malformed messages on the relay's own live channels, and a frame of one run published on
    // another run's channel: ignored, and never delivered to the other run's subscribers.
    let epoch =
        get_json_with::<Value>(&relay.url("/v1/runs/ok"), &subscribe_token("ok")).await["epoch"]
            .as_str()
            .unwrap()
            .to_owned();
    let forged = json!({"type":"event","run":"ok","seq":follower.seen + 1,"event":"log",
        "ts":"2026-01-01T00:00:00.000Z","data":{"level":"info","message":"forged"}})
    .to_string();
    for payload in [
        format!("{epoch}\n{forged}").into_bytes(),
        b"".to_vec(),
        b"no newline".to_vec(),
        b"epoch\nnot json".to_vec(),
        b"epoch\n\xff\xfe".to_vec(),
        b"\n\n\n".to_vec(),
        format!("epoch\n{forged}").into_bytes(),
        format!("epoch\n{}", "[".repeat(100_000)).into_bytes(),
    ] {
        publish(b"runwire:{other}:live", &payload).await;
        publish(b"runwire:{ok}:live", &payload[..payload.len().min(20)]).await;
    }
    assert_eq!(ready().await, 200, "after malformed live messages");
    follower.check(&relay, "malformed live messages").await;

    // Ingest still works: a valid message becomes an event of its run.
    publish(b"hostile:good", br#"{"status":"Success"}"#).await;
    let state = tokio::time::timeout(PATIENCE, async {
        loop {
            let v: Value =
                get_json_with(&relay.url("/v1/runs/good"), &subscribe_token("good")).await;
            if v["seq"] == 1 {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a valid message is ingested after the hostile ones");
    assert_eq!(state["state"]["status"], "completed");
    assert_eq!(metric(&relay, "runwire_ingest_up").await, 1);
    assert_eq!(metric(&relay, "runwire_redis_task_restarts_total").await, 0);
    assert!(
        metric(&relay, "runwire_ingest_dropped_total").await >= 1,
        "the 2 MiB payload"
    );
    assert_eq!(ready().await, 200);
    // The watcher of the other run got nothing from the forged or malformed messages.
    let publish_other = publish_token("other");
    let status = relay
        .publish_with(
            &publish_other,
            "other",
            serde_json::to_vec(&log(1)).unwrap(),
            "application/json",
        )
        .await;
    assert_eq!(status, 200);
    let f = other.frame().await;
    assert_eq!(
        (f["type"].as_str(), f["seq"].as_u64()),
        (Some("event"), Some(1)),
        "{f}"
    );
    drop(other);
    let log = relay.stop().await;
    assert_clean_log(&log, &[subscribe_token("ok"), publish_other]);
}

/// The value of an unlabelled metric on `/metrics`.
async fn metric(relay: &Spawned, name: &str) -> u64 {
    let text = get_text(&relay.url("/metrics")).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

/// Writes `request` on a fresh connection and returns what comes back before it closes.
async fn raw(relay: &Spawned, request: &[u8]) -> String {
    let mut s = TcpStream::connect(relay.addr).await.unwrap();
    let _ = s.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    if out.windows(4).any(|w| w == b"\r\n\r\n") {
                        return;
                    }
                }
            }
        }
    })
    .await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn unserved_sockets_do_not_hold_up_shutdown() {
    let relay = Relay::tweaked(|c| c.header_timeout = Duration::from_secs(60)).await;
    let mut held = Vec::new();
    for i in 0..10 {
        let mut s = TcpStream::connect(relay.addr).await.unwrap();
        if i % 2 == 0 {
            s.write_all(b"GET /health HTTP/1.1\r\nHost: r\r\n")
                .await
                .unwrap();
        }
        held.push(s);
    }
    assert_eq!(health(&relay).await, 200);
    let start = Instant::now();
    relay.shutdown().await;
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "shutdown took {:?}",
        start.elapsed()
    );
}
