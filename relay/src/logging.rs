//! The relay's log: lines on a writer (text, or JSON objects for log pipelines), filtered by
//! `RUST_LOG`, with the WebSocket library's frame-level logging always off.
//!
//! The relay frames its WebSockets itself (`transport::ws::codec`) and logs no frame. axum still
//! links tungstenite, which at `debug` and `trace` logs whole frames, an `auth` frame's token
//! included: should it ever carry a connection, tokens must still never reach the log, so those
//! levels of its targets are dropped whatever `RUST_LOG` says (its warnings and errors, which carry
//! no frame, still pass).

use tracing::{Level, Metadata, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::filter::{LevelFilter, filter_fn};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::{Layer as _, fmt};

/// Targets whose `debug` and `trace` events carry frame contents.
const FRAME_LOGGERS: [&str; 2] = ["tungstenite", "tokio_tungstenite"];

/// Whether an event or span may reveal a frame's contents: it is dropped.
pub fn reveals_frames(meta: &Metadata<'_>) -> bool {
    *meta.level() > Level::INFO
        && FRAME_LOGGERS.iter().any(|t| {
            meta.target()
                .strip_prefix(t)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with("::"))
        })
}

/// `RUST_LOG`, or `info` when it is unset or invalid.
pub fn env_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event, for people.
    #[default]
    Text,
    /// One JSON object per line (`timestamp`, `level`, `target`, `fields`, `span`, `spans`), for
    /// log pipelines.
    Json,
}

/// The relay's subscriber: text lines on `writer`, filtered by `filter` and [`reveals_frames`].
pub fn subscriber<W>(filter: EnvFilter, writer: W, ansi: bool) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    subscriber_as(LogFormat::Text, filter, writer, ansi)
}

/// The relay's subscriber in `format`: lines on `writer`, filtered by `filter` and
/// [`reveals_frames`] (whatever the format, the same events are dropped). `ansi` colours text.
pub fn subscriber_as<W>(
    format: LogFormat,
    filter: EnvFilter,
    writer: W,
    ansi: bool,
) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    // The level `filter` lets through at most, so that the whole subscriber reports it: events
    // above it (the WebSocket library's per-frame `log` records among them) are then dropped at
    // their call site instead of being built, bridged and filtered one by one.
    let max_level = filter.max_level_hint().unwrap_or(LevelFilter::TRACE);
    let lines = match format {
        LogFormat::Text => fmt::layer().with_writer(writer).with_ansi(ansi).boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .with_writer(writer)
            .with_ansi(false)
            .boxed(),
    };
    let lines = lines
        .with_filter(filter)
        .with_filter(filter_fn(|meta| !reveals_frames(meta)).with_max_level_hint(max_level));
    tracing_subscriber::registry().with(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The subscriber's level is the filter's, not "everything": the `log` bridge sets `log`'s
    /// own maximum from it, and the WebSocket library logs every frame it writes at `trace`.
    #[test]
    fn the_subscriber_reports_the_filters_level() {
        let level = |directives: &str| {
            let s = subscriber(EnvFilter::new(directives), std::io::sink, false);
            Subscriber::max_level_hint(&s)
        };
        assert_eq!(level("warn"), Some(LevelFilter::WARN));
        assert_eq!(level("info,runwire_relay=debug"), Some(LevelFilter::DEBUG));
    }

    /// What the subscriber in `format` writes for a few events, at `trace` for everything.
    fn logged(format: LogFormat) -> String {
        let buffer = Buffer::default();
        let writer = {
            let b = buffer.clone();
            move || b.clone()
        };
        let filter = EnvFilter::new("trace,tungstenite=trace,tokio_tungstenite::compat=trace");
        let subscriber = subscriber_as(format, filter, writer, false);
        tracing::subscriber::with_default(subscriber, || {
            tracing::trace!(target: "tungstenite::protocol", "frame secret-1");
            tracing::debug!(target: "tokio_tungstenite::compat", "frame secret-2");
            tracing::trace!(target: "tungstenite", "frame secret-3");
            tracing::warn!(target: "tungstenite::protocol", "a warning");
            tracing::trace!(target: "tungstenite_like", "another crate");
            tracing::trace!(target: "runwire_relay::transport::ws", conn = 7, "ours");
        });
        String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn frame_loggers_are_silent_at_trace_whatever_the_filter() {
        for format in [LogFormat::Text, LogFormat::Json] {
            let text = logged(format);
            assert!(!text.contains("secret"), "{text}");
            for kept in ["a warning", "another crate", "ours"] {
                assert!(text.contains(kept), "{kept} missing from {text}");
            }
        }
    }

    #[test]
    fn json_lines_are_objects_with_level_target_and_fields() {
        let text = logged(LogFormat::Json);
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        assert_eq!(lines.len(), 3, "{text}");
        let ours = &lines[2];
        assert_eq!(ours["level"], "TRACE");
        assert_eq!(ours["target"], "runwire_relay::transport::ws");
        assert_eq!(ours["fields"]["message"], "ours");
        assert_eq!(ours["fields"]["conn"], 7);
        assert!(ours["timestamp"].is_string());
    }
}
