//! Counters and gauges, rendered as Prometheus text at `/metrics`.
//!
//! Plain atomics rather than a metrics crate: the set is small and fixed, and every update on the
//! hot path is one relaxed atomic add.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use runwire_protocol::token::TokenError;

/// One broker-specific metric.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Prometheus name.
    pub name: &'static str,
    /// Its help text.
    pub help: &'static str,
    /// A counter (only goes up) or a gauge.
    pub counter: bool,
    /// The value.
    pub value: u64,
}

/// A monotonically increasing count.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    /// The current count.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down.
#[derive(Debug, Default)]
pub struct Gauge(AtomicI64);

impl Gauge {
    /// Adds one.
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    /// Subtracts one.
    pub fn dec(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
    /// Sets the value.
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }
    /// The current value.
    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Why a token was refused, as a metric label; adds the refusals that are not [`TokenError`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// The token itself was refused.
    Token(TokenError),
    /// No token was given.
    Missing,
    /// The token's scope does not allow the request.
    WrongScope,
    /// The token does not cover the run.
    WrongRun,
}

impl AuthFailure {
    const LABELS: [&'static str; 8] = [
        "malformed",
        "unsupported_alg",
        "bad_signature",
        "expired",
        "not_yet_valid",
        "missing",
        "wrong_scope",
        "wrong_run",
    ];

    fn label(self) -> &'static str {
        match self {
            Self::Token(e) => e.label(),
            Self::Missing => "missing",
            Self::WrongScope => "wrong_scope",
            Self::WrongRun => "wrong_run",
        }
    }
}

/// The relay's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Open WebSocket connections on `/v1/ws`.
    pub ws_connections: Gauge,
    /// Open WebSocket connections on `/ws/executions`.
    pub executions_connections: Gauge,
    /// Open SSE streams.
    pub sse_connections: Gauge,
    /// Live subscriptions across all transports.
    pub subscriptions: Gauge,
    /// Events accepted by publishes on this relay.
    pub events_published: Counter,
    /// Event frames written to clients (replays included).
    pub events_delivered: Counter,
    /// Publish requests refused (bad input, auth, broker).
    pub publish_rejected: Counter,
    /// Connections closed as slow consumers: their outbound queue overflowed, or a write to them
    /// took longer than `--write-timeout`.
    pub slow_consumer_closes: Counter,
    auth_failures: [Counter; AuthFailure::LABELS.len()],
    /// Open TCP connections (HTTP requests, SSE streams and WebSockets), under
    /// `--max-http-connections`.
    pub http_connections: Gauge,
    /// Connections closed at once because the cap was reached and every open one was in use.
    pub http_connections_refused: Counter,
    /// Connections without a complete request closed to make room for a new one at the cap.
    pub http_connections_evicted: Counter,
    /// Failed accepts on the listening socket (out of file descriptors, say).
    pub accept_errors: Counter,
    /// WebSockets closed because a ping went unanswered for a full ping interval.
    pub ping_timeouts: Counter,
}

impl Metrics {
    /// Counts a refused token.
    pub fn auth_failed(&self, why: AuthFailure) {
        let i = AuthFailure::LABELS
            .iter()
            .position(|l| *l == why.label())
            .unwrap_or(0);
        self.auth_failures[i].inc();
    }

    /// Refused tokens for `label`.
    pub fn auth_failures(&self, label: &str) -> u64 {
        AuthFailure::LABELS
            .iter()
            .position(|l| *l == label)
            .map_or(0, |i| self.auth_failures[i].get())
    }

    /// Prometheus text exposition, with `extra` samples (the broker's) after the relay's own.
    pub fn render(&self, extra: &[Sample]) -> String {
        let mut out = String::with_capacity(2048);
        let mut gauge = |name: &str, help: &str, samples: &[(&str, i64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        gauge(
            "runwire_connections",
            "Open client connections by transport.",
            &[
                ("{transport=\"ws\"}", self.ws_connections.get()),
                (
                    "{transport=\"executions\"}",
                    self.executions_connections.get(),
                ),
                ("{transport=\"sse\"}", self.sse_connections.get()),
            ],
        );
        gauge(
            "runwire_subscriptions",
            "Live run subscriptions.",
            &[("", self.subscriptions.get())],
        );
        let mut counter = |name: &str, help: &str, samples: &[(&str, u64)]| {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
            for (labels, v) in samples {
                let _ = writeln!(out, "{name}{labels} {v}");
            }
        };
        counter(
            "runwire_events_published_total",
            "Events accepted by publishes on this relay.",
            &[("", self.events_published.get())],
        );
        counter(
            "runwire_events_delivered_total",
            "Event frames written to clients.",
            &[("", self.events_delivered.get())],
        );
        counter(
            "runwire_publish_rejected_total",
            "Publish requests refused.",
            &[("", self.publish_rejected.get())],
        );
        counter(
            "runwire_slow_consumer_closes_total",
            "Connections closed because they could not keep up.",
            &[("", self.slow_consumer_closes.get())],
        );
        let labels: Vec<String> = AuthFailure::LABELS
            .iter()
            .map(|l| format!("{{reason=\"{l}\"}}"))
            .collect();
        let samples: Vec<(&str, u64)> = labels
            .iter()
            .zip(&self.auth_failures)
            .map(|(l, c)| (l.as_str(), c.get()))
            .collect();
        counter(
            "runwire_auth_failures_total",
            "Refused tokens by reason.",
            &samples,
        );
        gauge_extra(
            &mut out,
            "runwire_http_connections",
            "Open TCP connections of every kind, under --max-http-connections.",
            self.http_connections.get(),
        );
        for (name, help, value) in [
            (
                "runwire_http_connections_refused_total",
                "Connections closed at once: the connection cap was reached.",
                self.http_connections_refused.get(),
            ),
            (
                "runwire_http_connections_evicted_total",
                "Connections without a complete request closed to make room at the cap.",
                self.http_connections_evicted.get(),
            ),
            (
                "runwire_accept_errors_total",
                "Failed accepts on the listening socket.",
                self.accept_errors.get(),
            ),
            (
                "runwire_ping_timeouts_total",
                "WebSockets closed because a ping went unanswered for a full interval.",
                self.ping_timeouts.get(),
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        for s in extra {
            let kind = if s.counter { "counter" } else { "gauge" };
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}",
                name = s.name,
                help = s.help,
                value = s.value
            );
        }
        out
    }
}

fn gauge_extra(out: &mut String, name: &str, help: &str, value: i64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.ws_connections.inc();
        m.auth_failed(AuthFailure::Token(TokenError::Expired));
        m.auth_failed(AuthFailure::WrongRun);
        let text = m.render(&[Sample {
            name: "runwire_runs",
            help: "Runs held.",
            counter: false,
            value: 3,
        }]);
        assert!(text.contains("runwire_connections{transport=\"ws\"} 1\n"));
        assert!(text.contains("runwire_auth_failures_total{reason=\"expired\"} 1\n"));
        assert!(text.contains("runwire_auth_failures_total{reason=\"wrong_run\"} 1\n"));
        assert!(text.contains("# TYPE runwire_runs gauge\nrunwire_runs 3\n"));
        assert_eq!(m.auth_failures("expired"), 1);
    }
}
