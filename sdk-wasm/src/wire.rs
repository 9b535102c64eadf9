//! Frames as the state machine sees them, decoded from whichever representation the transport
//! has: JS objects from `JSON.parse` in the browser (see `js.rs`; no JSON parser ships in the
//! `.wasm`), or JSON text with `serde_json` in native tests, by one set of rules (`decode.rs`):
//! those of `docs/protocol.md` for clients.

use alloc::string::String;
use alloc::string::ToString;
use runwire_protocol::EndReason;
use serde_json::Value;

use crate::{RunEvent, RunState};

/// Why a subscription ended: its name, one of this protocol version's reasons or another one
/// (from a newer relay), which the app receives as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended(String);

impl Ended {
    /// The reason named `name`.
    pub fn named(name: String) -> Self {
        Self(name)
    }

    /// The name the app sees.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether this is the known reason `r`.
    pub fn is(&self, r: EndReason) -> bool {
        self.0 == r.as_str()
    }
}

impl From<EndReason> for Ended {
    fn from(r: EndReason) -> Self {
        Self(r.as_str().into())
    }
}

/// A decoded server frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `welcome`.
    Welcome {
        /// The relay's ping interval.
        heartbeat_ms: u64,
        /// When the token in force expires, Unix seconds.
        expires_at: u64,
    },
    /// `subscribed`.
    Subscribed {
        /// The run.
        run: String,
        /// The run's head seq.
        seq: u64,
        /// The state at `seq`.
        state: RunState,
        /// The run's epoch.
        epoch: String,
        /// When the subscription's own token expires, Unix seconds.
        expires_at: Option<u64>,
    },
    /// `reset`.
    Reset {
        /// The run.
        run: String,
        /// The seq `state` is at.
        seq: u64,
        /// The new state.
        state: RunState,
        /// The run's epoch from now on.
        epoch: String,
        /// When the subscription's own token expires, Unix seconds.
        expires_at: Option<u64>,
    },
    /// `event`.
    Event(EventFrame),
    /// `unsubscribed`.
    Unsubscribed {
        /// The run.
        run: String,
        /// Why.
        reason: Ended,
    },
    /// `error`.
    Error {
        /// The relay's error code (`too_many_subscriptions`, …).
        code: String,
        /// Detail.
        message: String,
        /// The run concerned, if any.
        run: Option<String>,
    },
    /// `pong`.
    Pong,
    /// A frame type this client does not know (from a newer relay): ignored.
    Other,
}

/// An `event` frame.
#[derive(Debug, Clone, PartialEq)]
pub struct EventFrame {
    /// The run.
    pub run: String,
    /// The event's seq.
    pub seq: u64,
    /// The event name.
    pub name: String,
    /// When the relay accepted it.
    pub ts: String,
    /// The typed event, or why its data does not fit its name.
    pub typed: Result<RunEvent, String>,
}

/// Decodes JSON text with `serde_json`, by the rules of [`crate::decode`] (native builds and
/// tests; the browser parses with `JSON.parse` and reads the same way, see `js.rs`).
pub fn decode_json(text: &str) -> Result<Frame, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    crate::decode::frame(&value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_frames() {
        let f = decode_json(
            r#"{"type":"event","run":"r","seq":2,"event":"node.failed","ts":"t","data":{"node_key":"n"}}"#,
        )
        .unwrap();
        let Frame::Event(e) = f else { panic!() };
        assert_eq!(
            (e.run.as_str(), e.seq, e.name.as_str()),
            ("r", 2, "node.failed")
        );
        assert!(e.typed.is_err());
        assert_eq!(
            decode_json(r#"{"type":"error","code":"auth_failed","message":"m"}"#).unwrap(),
            Frame::Error {
                code: "auth_failed".into(),
                message: "m".into(),
                run: None
            }
        );
        assert_eq!(decode_json(r#"{"type":"nope"}"#), Ok(Frame::Other));
        assert!(decode_json(r#"{"typ":"event"}"#).is_err());
        assert!(decode_json("[1]").is_err());
    }

    /// What a newer relay may send: a reason, an error code or a frame type this client does not
    /// know.
    #[test]
    fn decodes_frames_of_a_newer_relay() {
        assert_eq!(
            decode_json(r#"{"type":"unsubscribed","run":"r","reason":"archived"}"#),
            Ok(Frame::Unsubscribed {
                run: "r".into(),
                reason: Ended::named("archived".into())
            })
        );
        assert_eq!(
            decode_json(r#"{"type":"unsubscribed","run":"r","reason":"forbidden"}"#),
            Ok(Frame::Unsubscribed {
                run: "r".into(),
                reason: EndReason::Forbidden.into()
            })
        );
        assert_eq!(
            decode_json(r#"{"type":"error","code":"quota_exceeded","message":"m","run":"r"}"#),
            Ok(Frame::Error {
                code: "quota_exceeded".into(),
                message: "m".into(),
                run: Some("r".into())
            })
        );
        assert_eq!(
            decode_json(r#"{"type":"presence","run":"r","who":["a"]}"#),
            Ok(Frame::Other)
        );
        assert!(decode_json(r#"{"type":"unsubscribed","run":"r","reason":7}"#).is_err());
    }
}
