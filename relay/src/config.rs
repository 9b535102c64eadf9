//! The relay's configuration: `runwire serve` flags, each with an environment fallback.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use runwire_protocol::token::MIN_SECRET_LEN;

use crate::broker::memory::MemoryConfig;
use crate::broker::redis::RedisConfig;

/// A misconfiguration, reported as one line before the relay starts.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// No secret was given.
    #[error(
        "a secret is required: pass --secret or set RUNWIRE_SECRET (at least {MIN_SECRET_LEN} bytes)"
    )]
    MissingSecret,
    /// The secret is too short for HS256.
    #[error(
        "the secret is {0} bytes; it must be at least {MIN_SECRET_LEN} bytes (e.g. `openssl rand -hex 32`)"
    )]
    ShortSecret(usize),
    /// A limit is zero where it must not be.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// `--web-dir` names no directory with an `index.html`.
    #[error("--web-dir {0}: no index.html there (build the page with scripts/build-web.sh)")]
    WebDir(String),
    /// `--ingest` reads Redis Pub/Sub, so it needs `--redis`.
    #[error("--ingest needs --redis (RUNWIRE_REDIS_URL)")]
    IngestWithoutRedis,
    /// A replaced system's address variables do not make an address.
    #[error("{0}")]
    Address(String),
    /// An `--extra-secret` is too short for HS256.
    #[error(
        "an --extra-secret (RUNWIRE_SECRETS) is {0} bytes; each must be at least {MIN_SECRET_LEN} bytes"
    )]
    ShortExtraSecret(usize),
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (examples: 500ms, 25s, 5m)"))
}

/// `runwire serve` options.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on.
    #[arg(long, env = "RUNWIRE_ADDR", default_value = "127.0.0.1:3101")]
    pub addr: SocketAddr,
    /// Shared HS256 secret, at least 32 bytes.
    #[arg(long, env = "RUNWIRE_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Origins allowed to open WebSockets and SSE streams and to call the API from a browser,
    /// comma-separated. Empty allows every origin: for development only.
    #[arg(long, env = "RUNWIRE_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// A client must send a request's headers within this time, else the connection is closed;
    /// an idle keep-alive connection is closed after it too.
    #[arg(long, env = "RUNWIRE_HEADER_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub header_timeout: Duration,
    /// TCP connections this relay holds at most, of every kind (HTTP, SSE, WebSocket). At the cap,
    /// the oldest connection that has not sent a complete request yet is closed to make room; if
    /// there is none, the new one is closed. Keep it below the process's file limit (`ulimit -n`).
    #[arg(long, env = "RUNWIRE_MAX_HTTP_CONNECTIONS", default_value_t = 110_000)]
    pub max_http_connections: usize,
    /// How often the relay pings each WebSocket (also announced as `heartbeat_ms`).
    #[arg(long, env = "RUNWIRE_PING_INTERVAL", default_value = "25s", value_parser = duration)]
    pub ping_interval: Duration,
    /// A WebSocket that sends nothing (no frame, no pong) for this long is closed (4009).
    #[arg(long, env = "RUNWIRE_IDLE_TIMEOUT", default_value = "120s", value_parser = duration)]
    pub idle_timeout: Duration,
    /// A WebSocket without a token must send `auth` within this time (else 4004).
    #[arg(long, env = "RUNWIRE_AUTH_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub auth_timeout: Duration,
    /// A write to a client that does not complete in this time closes it as a slow consumer.
    #[arg(long, env = "RUNWIRE_WRITE_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub write_timeout: Duration,
    /// SSE comment heartbeat interval.
    #[arg(long, env = "RUNWIRE_SSE_HEARTBEAT", default_value = "15s", value_parser = duration)]
    pub sse_heartbeat: Duration,
    /// An SSE stream ends after this long (the client resumes with Last-Event-ID).
    #[arg(long, env = "RUNWIRE_SSE_MAX_DURATION", default_value = "30m", value_parser = duration)]
    pub sse_max_duration: Duration,
    /// Concurrent SSE streams per workspace (the token's `ws` claim).
    #[arg(long, env = "RUNWIRE_SSE_MAX_PER_WORKSPACE", default_value_t = 5)]
    pub sse_max_per_workspace: usize,
    /// WebSocket connections this relay holds at most; further ones are closed with 4029.
    #[arg(long, env = "RUNWIRE_MAX_CONNECTIONS", default_value_t = 100_000)]
    pub max_connections: usize,
    /// Subscriptions per WebSocket.
    #[arg(long, env = "RUNWIRE_MAX_SUBSCRIPTIONS", default_value_t = 100)]
    pub max_subscriptions: usize,
    /// Outbound frames queued per connection before it is closed as a slow consumer (4008).
    #[arg(long, env = "RUNWIRE_QUEUE_CAPACITY", default_value_t = 1024)]
    pub queue_capacity: usize,
    /// Events retained per run (older ones live on in the run's state).
    #[arg(long, env = "RUNWIRE_HISTORY_LIMIT", default_value_t = 10_000)]
    pub history_limit: usize,
    /// How long a finished run is kept after its terminal event.
    #[arg(long, env = "RUNWIRE_FINISHED_RETENTION", default_value = "5m", value_parser = duration)]
    pub finished_retention: Duration,
    /// Runs held at most by the embedded broker.
    #[arg(long, env = "RUNWIRE_MAX_RUNS", default_value_t = 100_000)]
    pub max_runs: usize,
    /// An unfinished run with no publish for this long is dropped by the embedded broker.
    #[arg(long, env = "RUNWIRE_RUN_IDLE_TTL", default_value = "1h", value_parser = duration)]
    pub run_idle_ttl: Duration,
    /// On shutdown, how long in-flight requests may take before the relay exits anyway.
    #[arg(long, env = "RUNWIRE_DRAIN_TIMEOUT", default_value = "10s", value_parser = duration)]
    pub drain_timeout: Duration,
    /// Serve `/metrics` on this address instead of the main one (an internal interface, say).
    #[arg(long, env = "RUNWIRE_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Require `Authorization: Bearer <this>` on `/metrics`.
    #[arg(long, env = "RUNWIRE_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Also run simulated workflow runs and serve the demo endpoints.
    #[arg(long, env = "RUNWIRE_DEMO")]
    pub demo: bool,
    /// A directory of static files (a built page) served at `/` in place of the built-in page.
    /// With `--demo` and no `--web-dir`, `demo-web/dist` is served when it has been built.
    #[arg(long, env = "RUNWIRE_WEB_DIR")]
    pub web_dir: Option<PathBuf>,
    /// Share runs with other relays through Redis instead of the embedded broker:
    /// `redis://host:6379[/db]`, or `redis+cluster://host:7000[,host:7001…]` for Redis Cluster.
    #[arg(long, env = "RUNWIRE_REDIS_URL", hide_env_values = true)]
    pub redis: Option<String>,
    /// Treat a `redis://` URL as Redis Cluster seed node(s).
    #[arg(long, env = "RUNWIRE_REDIS_CLUSTER")]
    pub redis_cluster: bool,
    /// Turn messages on Redis Pub/Sub channels matching PATTERN into run events; the run id is
    /// what the first `*` matches (`workflow-run:*`, `execution:*:events`). Repeatable.
    #[arg(
        long = "ingest",
        value_name = "PATTERN",
        env = "RUNWIRE_INGEST",
        value_delimiter = ','
    )]
    pub ingest: Vec<String>,
    /// Compatibility layers for the systems runwire replaces (`docs/migrating.md`): `ws-relay`,
    /// `event-broadcaster`, `socketio-gateway`, `sse-stream`. Repeatable.
    #[arg(
        long = "compat",
        value_name = "NAME",
        env = "RUNWIRE_COMPAT",
        value_delimiter = ',',
        value_enum
    )]
    pub compat: Vec<crate::compat::Layer>,
    /// More secrets tokens are verified with, never signed with (rotation: `--secret` signs,
    /// every secret verifies), comma-separated; each at least 32 bytes.
    #[arg(
        long = "extra-secret",
        value_name = "SECRET",
        env = "RUNWIRE_SECRETS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub extra_secrets: Vec<String>,
    /// With a `--compat` layer on: the replaced relay's token secret. Verifies every token kind
    /// (only `v:1` tokens when shorter than 32 bytes), and signs when `--secret` is not given.
    #[arg(long, env = "EXECUTION_STREAM_SIGNING_SECRET", hide_env_values = true)]
    pub execution_stream_signing_secret: Option<String>,
    /// With a `--compat` layer on: tried after `EXECUTION_STREAM_SIGNING_SECRET`, the same way.
    #[arg(long, env = "BETTER_AUTH_SECRET", hide_env_values = true)]
    pub better_auth_secret: Option<String>,
}

impl Config {
    /// A configuration with every default and `secret`, for tests and embedding.
    pub fn with_secret(secret: impl Into<String>) -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        let mut c = Wrapper::parse_from(["runwire"]).config;
        c.secret = Some(secret.into());
        c
    }

    /// Checks what clap cannot, and returns the secret.
    pub fn validate(&self) -> Result<&[u8], ConfigError> {
        let secret = (self.secret.as_deref())
            .or_else(|| crate::compat::fallback_secret(self))
            .ok_or(ConfigError::MissingSecret)?;
        if secret.len() < MIN_SECRET_LEN {
            return Err(ConfigError::ShortSecret(secret.len()));
        }
        for (name, v) in [
            ("--max-connections", self.max_connections),
            ("--max-http-connections", self.max_http_connections),
            ("--max-subscriptions", self.max_subscriptions),
            ("--queue-capacity", self.queue_capacity),
            ("--history-limit", self.history_limit),
            ("--max-runs", self.max_runs),
            ("--sse-max-per-workspace", self.sse_max_per_workspace),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        for (name, d) in [
            ("--ping-interval", self.ping_interval),
            ("--idle-timeout", self.idle_timeout),
            ("--sse-heartbeat", self.sse_heartbeat),
            ("--header-timeout", self.header_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        if let Some(dir) = self
            .web_dir
            .as_ref()
            .filter(|d| !d.join("index.html").is_file())
        {
            return Err(ConfigError::WebDir(dir.display().to_string()));
        }
        crate::compat::validate(self)?;
        if !self.ingest.is_empty() && self.redis.is_none() {
            return Err(ConfigError::IngestWithoutRedis);
        }
        Ok(secret.as_bytes())
    }

    /// The Redis broker's settings, when `--redis` is given.
    pub fn redis(&self) -> Option<RedisConfig> {
        let mut c = RedisConfig::new(self.redis.clone()?);
        c.cluster = self.redis_cluster;
        c.history_limit = self.history_limit;
        c.finished_retention = self.finished_retention;
        c.run_idle_ttl = self.run_idle_ttl;
        c.ingest.clone_from(&self.ingest);
        crate::compat::configure_redis(&self.compat, &mut c);
        Some(c)
    }

    /// The embedded broker's limits.
    pub fn memory(&self) -> MemoryConfig {
        MemoryConfig {
            history_limit: self.history_limit,
            finished_retention: self.finished_retention,
            idle_run_ttl: self.run_idle_ttl,
            max_runs: self.max_runs,
            ..MemoryConfig::default()
        }
    }

    /// Whether a browser `Origin` may connect.
    pub fn origin_allowed(&self, origin: Option<&str>) -> bool {
        match origin {
            _ if self.allowed_origins.is_empty() => true,
            // Non-browser clients send no Origin; the token is what protects the relay.
            None => true,
            Some(o) => self.allowed_origins.iter().any(|a| a == o || a == "*"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_the_secret_and_limits() {
        let c = Config::with_secret("x".repeat(32));
        assert!(c.validate().is_ok());
        assert_eq!(c.addr.to_string(), "127.0.0.1:3101");
        assert_eq!(c.ping_interval, Duration::from_secs(25));
        let short = Config::with_secret("short");
        assert!(matches!(short.validate(), Err(ConfigError::ShortSecret(5))));
        let mut none = c.clone();
        none.secret = None;
        assert!(matches!(none.validate(), Err(ConfigError::MissingSecret)));
        let mut zero = c.clone();
        zero.queue_capacity = 0;
        assert!(
            zero.validate()
                .unwrap_err()
                .to_string()
                .contains("--queue-capacity")
        );
    }

    #[test]
    fn origins() {
        let mut c = Config::with_secret("x".repeat(32));
        assert!(c.origin_allowed(Some("http://evil.example")));
        c.allowed_origins = vec!["https://app.example".into()];
        assert!(c.origin_allowed(Some("https://app.example")));
        assert!(!c.origin_allowed(Some("http://evil.example")));
        assert!(c.origin_allowed(None));
    }
}
