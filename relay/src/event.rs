//! Events: a run's id, an event as a publisher sent it ([`NewEvent`]), and an accepted event
//! encoded once for every subscriber ([`Event`]). The bottom of the relay: every other module
//! speaks these types, and this one needs none of them.

use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use axum::extract::ws::Utf8Bytes;
use bytes::Bytes;
use runwire_protocol::{Envelope, RunEvent};
use serde_json::Value;

/// A run id, shared cheaply between the broker, the hub and connections.
pub type RunId = Arc<str>;

/// An event a publisher sent, validated and not yet sequenced.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// The typed view, used to fold the run state.
    pub typed: RunEvent,
    /// The data as the publisher sent it; it goes on the wire unchanged.
    pub data: Value,
}

impl NewEvent {
    /// Validates `name` and `data` (see [`RunEvent::parse`]).
    pub fn parse(name: &str, data: Value) -> Result<Self, runwire_protocol::EventError> {
        let typed = RunEvent::parse(name, &data)?;
        let data = if data.is_null() {
            Value::Object(serde_json::Map::new())
        } else {
            data
        };
        Ok(Self { typed, data })
    }

    /// The event name.
    pub fn name(&self) -> &str {
        self.typed.name()
    }
}

/// An accepted event, encoded once and shared by every subscriber on this relay.
#[derive(Debug)]
pub struct Event {
    /// The run.
    pub run: RunId,
    /// The run's epoch the seq belongs to.
    pub epoch: Arc<str>,
    /// Its seq within the run.
    pub seq: u64,
    /// Whether it ends the run.
    pub terminal: bool,
    /// The event name.
    pub name: Box<str>,
    /// The `event` frame's JSON: what WebSocket subscribers receive and SSE's `data:`.
    pub frame: Utf8Bytes,
    /// The SSE message, built from `frame` the first time an SSE subscriber needs it.
    sse: OnceLock<Bytes>,
    /// When it was published: by this relay's clock, or the `ts` another relay stamped it with.
    /// Where `runwire_delivery_latency_seconds` starts.
    pub published: Option<SystemTime>,
}

impl Event {
    /// Encodes an event. This is the one place an event is serialized.
    pub fn encode(run: RunId, epoch: Arc<str>, seq: u64, ts: String, event: &NewEvent) -> Self {
        let envelope = Envelope {
            run: run.to_string(),
            seq,
            event: event.name().to_owned(),
            ts,
            data: event.data.clone(),
        };
        Self {
            frame: envelope.to_frame_json().into(),
            run,
            epoch,
            seq,
            terminal: event.typed.is_terminal(),
            name: event.name().into(),
            sse: OnceLock::new(),
            published: Some(SystemTime::now()),
        }
    }

    /// Wraps an `event` frame that was encoded elsewhere (by another relay, say) without
    /// re-encoding it. Fails when `frame` is not an event frame.
    pub fn from_frame(epoch: Arc<str>, frame: String) -> Result<Self, serde_json::Error> {
        #[derive(serde::Deserialize)]
        struct Head<'a> {
            #[serde(borrow)]
            run: std::borrow::Cow<'a, str>,
            seq: u64,
            #[serde(borrow)]
            event: std::borrow::Cow<'a, str>,
            #[serde(borrow)]
            ts: Option<std::borrow::Cow<'a, str>>,
        }
        let head: Head<'_> = serde_json::from_str(&frame)?;
        let published = (head.ts.as_deref()).and_then(|ts| humantime::parse_rfc3339(ts).ok());
        let (run, seq, name): (RunId, u64, Box<str>) = (
            head.run.as_ref().into(),
            head.seq,
            head.event.as_ref().into(),
        );
        Ok(Self {
            terminal: runwire_protocol::event::is_terminal_event(&name),
            run,
            epoch,
            seq,
            name,
            frame: frame.into(),
            sse: OnceLock::new(),
            published,
        })
    }

    /// The SSE message: `id:` the seq, `event:` the name, `data:` the frame JSON.
    pub fn sse(&self) -> Bytes {
        self.sse
            .get_or_init(|| {
                let frame = self.frame.as_str();
                let mut out = String::with_capacity(frame.len() + self.name.len() + 40);
                out.push_str("id: ");
                out.push_str(&self.seq.to_string());
                out.push_str("\nevent: ");
                out.push_str(&self.name);
                out.push_str("\ndata: ");
                // JSON text from serde has no raw newlines, so one `data:` line holds it.
                out.push_str(frame);
                out.push_str("\n\n");
                Bytes::from(out)
            })
            .clone()
    }
}

/// The current time as the envelope's `ts`: RFC 3339, UTC, milliseconds.
pub fn now_ts() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn encodes_once_and_parses_back() {
        let ne = NewEvent::parse("node.started", json!({"node_key":"a"})).unwrap();
        let ev = Event::encode(
            "r1".into(),
            "e".into(),
            3,
            "2026-01-01T00:00:00.000Z".into(),
            &ne,
        );
        assert!(
            ev.frame
                .as_str()
                .starts_with(r#"{"type":"event","run":"r1","seq":3,"event":"node.started""#)
        );
        let back = Event::from_frame("e".into(), ev.frame.as_str().to_owned()).unwrap();
        assert_eq!(
            (back.seq, &*back.run, &*back.name, back.terminal),
            (3, "r1", "node.started", false)
        );
        // Where the delivery latency starts, for an event from another relay: its `ts`.
        assert_eq!(
            back.published,
            Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_767_225_600))
        );
        let sse = ev.sse();
        assert!(sse.starts_with(b"id: 3\nevent: node.started\ndata: {"));
        assert!(sse.ends_with(b"}\n\n"));
        // the same bytes every time
        assert_eq!(ev.sse().as_ptr(), sse.as_ptr());
        let done = NewEvent::parse("run.cancelled", Value::Null).unwrap();
        assert_eq!(done.data, json!({}));
        let ev = Event::encode("r1".into(), "e".into(), 4, now_ts(), &done);
        assert!(ev.terminal);
    }
}
