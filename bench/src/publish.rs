//! The publisher: `POST /v1/runs/{run}/events` with a publish token. runwire and every peer take
//! the same request, so one publisher serves all systems and publishing costs them the same.

use std::net::SocketAddr;
use std::time::Duration;

use runwire_protocol::token::{Claims, Scope, sign};

/// The custom event name the load tool publishes; runwire passes custom names through untouched.
pub const EVENT: &str = "bench.tick";

/// Publishes `bench.tick` events carrying a timestamp.
#[derive(Debug, Clone)]
pub struct Publisher {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Publisher {
    /// A publisher to the relay at `addr`, with a token for every run.
    pub fn new(addr: SocketAddr, secret: &str) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(1024)
            // Below Node's 5 s keep-alive timeout, so an idle pooled connection is never reused
            // just as the server closes it.
            .pool_idle_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .build()
            .expect("HTTP client");
        Self {
            http,
            base: format!("http://{addr}"),
            token: token(secret, "*", Scope::Publish),
        }
    }

    /// Publishes one `bench.tick` per timestamp to `run`, in one request.
    pub async fn ticks(&self, run: &str, t_ns: &[u64]) -> Result<(), String> {
        let resp = self
            .http
            .post(format!("{}/v1/runs/{run}/events", self.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(body(t_ns))
            .send()
            .await
            .map_err(|e| format!("publish to {run}: {}", chain(&e)))?;
        let status = resp.status();
        if status.is_success() {
            // Read the body so the connection goes back to the pool.
            let _ = resp.bytes().await;
            Ok(())
        } else {
            let text = resp.text().await.unwrap_or_default();
            Err(format!("publish to {run}: {status} {text:.200}"))
        }
    }
}

/// An error with its causes, which reqwest keeps out of its own message.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The request body: an array of `{"event":"bench.tick","data":{"t_ns":N}}`.
fn body(t_ns: &[u64]) -> String {
    let mut out = String::with_capacity(16 + t_ns.len() * 48);
    out.push('[');
    for (i, t) in t_ns.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(r#"{"event":""#);
        out.push_str(EVENT);
        out.push_str(r#"","data":{"t_ns":"#);
        out.push_str(&t.to_string());
        out.push_str("}}");
    }
    out.push(']');
    out
}

/// A token for `run` (`"*"`: every run) with `scope`, valid for two hours.
pub fn token(secret: &str, run: &str, scope: Scope) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = Claims {
        exp: now + 7200,
        iat: Some(now),
        runs: Some(vec![run.to_owned()]),
        scope,
        ..Claims::default()
    };
    sign(&claims, secret.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_is_a_json_array_of_ticks() {
        let v: serde_json::Value = serde_json::from_str(&body(&[1, 22])).unwrap();
        assert_eq!(
            v,
            serde_json::json!([
                {"event":"bench.tick","data":{"t_ns":1}},
                {"event":"bench.tick","data":{"t_ns":22}}
            ])
        );
        assert_eq!(body(&[]), "[]");
    }

    #[test]
    fn tokens_verify_and_cover_the_run() {
        let secret = "0123456789abcdef0123456789abcdef";
        let t = token(secret, "r7", Scope::Subscribe);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let c = runwire_protocol::token::verify(&t, secret.as_bytes(), now).unwrap();
        assert!(c.allows_run("r7") && !c.allows_run("r8"));
        assert_eq!(c.scope, Scope::Subscribe);
    }
}
