//! WebSocket frames: JSON text messages tagged by `type`.
//!
//! `docs/protocol.md` is the prose version of this module; the two change together.

use alloc::string::String;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::event::Envelope;
use crate::state::RunState;

/// A frame a client sends.
///
/// `V` holds the opaque `id` of a `ping`, as [`RunEvent`](crate::RunEvent) holds its opaque
/// values: a JSON value in the relay, [`JsonText`](crate::JsonText) in the browser SDK.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame<V = Value> {
    /// Authenticate, or replace the connection's token with a fresher one.
    Auth {
        /// A subscribe-scope JWT.
        token: String,
        /// The client reads several frames from one WebSocket message, one per line: the relay
        /// may then batch the frames it has ready (see `docs/protocol.md`, "Batched frames").
        /// Set on the first `auth`; ignored on a refresh.
        #[serde(default, skip_serializing_if = "core::ops::Not::not")]
        batch: bool,
    },
    /// Start receiving a run's events.
    Subscribe {
        /// The run id.
        run: String,
        /// Resume: replay every retained event with a larger seq first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since: Option<u64>,
        /// The run's `epoch` the client's `since` belongs to. When the relay's epoch for the run
        /// differs (its history was lost and seqs started again), the relay answers `reset`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<String>,
        /// A token for this subscription alone, checked instead of the connection's: one socket
        /// can then carry runs that each have their own token (minted per run by the app's
        /// backend). It authorizes starting the subscription; the connection's token keeps the
        /// connection.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
    },
    /// Stop receiving a run's events.
    Unsubscribe {
        /// The run id.
        run: String,
    },
    /// Ask for a `pong`; also keeps an idle connection alive.
    Ping {
        /// Echoed back in the `pong`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<V>,
    },
}

/// Why a subscription ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndReason {
    /// The run ended with `run.completed`.
    Completed,
    /// The run ended with `run.failed`.
    Failed,
    /// The run ended with `run.cancelled`.
    Cancelled,
    /// The client unsubscribed.
    Unsubscribed,
    /// The connection's token does not (or no longer) cover the run.
    Forbidden,
    /// The subscription's own token expired (its `exp` plus the leeway): subscribe again with a
    /// fresh one and `since` the last seq to carry on without a gap.
    TokenExpired,
}

impl EndReason {
    /// Every reason.
    pub const ALL: [EndReason; 6] = [
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
        Self::Unsubscribed,
        Self::Forbidden,
        Self::TokenExpired,
    ];

    /// The reason a terminal event ends subscriptions with, if `event` is terminal.
    pub fn for_terminal_event(event: &str) -> Option<Self> {
        match event {
            "run.completed" => Some(Self::Completed),
            "run.failed" => Some(Self::Failed),
            "run.cancelled" => Some(Self::Cancelled),
            _ => None,
        }
    }

    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
            Self::Unsubscribed => "unsubscribed",
            Self::Forbidden => "forbidden",
            Self::TokenExpired => "token_expired",
        }
    }
}

/// Machine-readable kind of an `error` frame. The connection stays open after every one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame is not valid JSON, or not a JSON object with a string `type`.
    BadFrame,
    /// The frame's `type` is not one the relay knows; ignore-and-continue.
    UnknownFrame,
    /// The frame is well formed but a field is not (an invalid run id, say).
    BadRequest,
    /// The frame needs an authenticated connection: send `auth` first.
    NotAuthenticated,
    /// The connection already holds the maximum number of subscriptions.
    TooManySubscriptions,
    /// The relay's broker is unreachable; retry later.
    BrokerUnavailable,
    /// A refreshed token was refused; the old one stays in force until it expires.
    AuthFailed,
}

impl ErrorCode {
    /// Every code.
    pub const ALL: [ErrorCode; 7] = [
        Self::BadFrame,
        Self::UnknownFrame,
        Self::BadRequest,
        Self::NotAuthenticated,
        Self::TooManySubscriptions,
        Self::BrokerUnavailable,
        Self::AuthFailed,
    ];

    /// The wire name (a `const fn`, so that clients can match on it).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::BadFrame => "bad_frame",
            Self::UnknownFrame => "unknown_frame",
            Self::BadRequest => "bad_request",
            Self::NotAuthenticated => "not_authenticated",
            Self::TooManySubscriptions => "too_many_subscriptions",
            Self::BrokerUnavailable => "broker_unavailable",
            Self::AuthFailed => "auth_failed",
        }
    }
}

/// A frame the relay sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// The connection is authenticated. Sent again after every accepted `auth` refresh.
    Welcome {
        /// This connection's id, for logs and support.
        conn: String,
        /// How often the relay pings; a client that has heard nothing for this long should send
        /// `ping`, and treat the connection as dead if nothing arrives soon after.
        heartbeat_ms: u64,
        /// When the token in force expires, in Unix seconds.
        expires_at: u64,
        /// Protocol version, currently 1.
        protocol: u32,
    },
    /// A subscription took effect. `seq` is the run's head seq and `state` the snapshot at it.
    /// When the `subscribe` had `since`, the events after `since` up to `seq` follow as replay.
    Subscribed {
        /// The run id.
        run: String,
        /// The run's head seq (0 for a run with no events yet).
        seq: u64,
        /// The run's state at `seq`.
        state: RunState,
        /// Identifies this incarnation of the run's history: seqs are only comparable within one
        /// epoch. Send it back with `since` when resuming.
        epoch: String,
        /// When the subscription's own token expires, in Unix seconds: the relay ends the
        /// subscription with `token_expired` at this time plus the leeway. Only for a `subscribe`
        /// that carried a `token`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<u64>,
    },
    /// One run event.
    Event(Envelope),
    /// The events a client asked to resume from are gone: replace the run's state with `state`
    /// and carry on from `seq`. Also sent in place of `subscribed` for such a `subscribe`.
    Reset {
        /// The run id.
        run: String,
        /// The seq `state` is at; the next event has `seq + 1`.
        seq: u64,
        /// The run's state at `seq`.
        state: RunState,
        /// The run's epoch from now on.
        epoch: String,
        /// When the subscription's own token expires, in Unix seconds: the relay ends the
        /// subscription with `token_expired` at this time plus the leeway. Only for a `subscribe`
        /// that carried a `token`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_at: Option<u64>,
    },
    /// A subscription ended.
    Unsubscribed {
        /// The run id.
        run: String,
        /// Why.
        reason: EndReason,
    },
    /// Something the client sent was refused. The connection stays open.
    Error {
        /// What kind of error.
        code: ErrorCode,
        /// Human-readable detail.
        message: String,
        /// The run the error concerns, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run: Option<String>,
    },
    /// Answer to `ping`.
    Pong {
        /// The `id` of the `ping`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<Value>,
    },
}

impl ServerFrame {
    /// The frame as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server frames always serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn client_frames_parse() {
        let f: ClientFrame = serde_json::from_str(r#"{"type":"subscribe","run":"r1"}"#).unwrap();
        assert_eq!(
            f,
            ClientFrame::Subscribe {
                run: "r1".into(),
                since: None,
                epoch: None,
                token: None
            }
        );
        let f: ClientFrame =
            serde_json::from_str(r#"{"type":"subscribe","run":"r1","since":5}"#).unwrap();
        assert_eq!(
            f,
            ClientFrame::Subscribe {
                run: "r1".into(),
                since: Some(5),
                epoch: None,
                token: None
            }
        );
        let f: ClientFrame =
            serde_json::from_str(r#"{"type":"subscribe","run":"r1","token":"t"}"#).unwrap();
        assert_eq!(
            f,
            ClientFrame::Subscribe {
                run: "r1".into(),
                since: None,
                epoch: None,
                token: Some("t".into())
            }
        );
        let f: ClientFrame = serde_json::from_str(r#"{"type":"ping","id":3}"#).unwrap();
        assert_eq!(f, ClientFrame::Ping { id: Some(json!(3)) });
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"nope"}"#).is_err());
    }

    #[test]
    fn server_frames_shape() {
        let f = ServerFrame::Unsubscribed {
            run: "r".into(),
            reason: EndReason::Completed,
        };
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            json!({"type":"unsubscribed","run":"r","reason":"completed"})
        );
        let f = ServerFrame::Error {
            code: ErrorCode::TooManySubscriptions,
            message: "m".into(),
            run: None,
        };
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            json!({"type":"error","code":"too_many_subscriptions","message":"m"})
        );
        let f = ServerFrame::Subscribed {
            run: "r".into(),
            seq: 0,
            state: RunState::default(),
            epoch: "e1".into(),
            expires_at: None,
        };
        assert!(!f.to_json().contains("expires_at"), "absent unless set");
        let back: ServerFrame = serde_json::from_str(&f.to_json()).unwrap();
        assert_eq!(back, f);
        let f = ServerFrame::Reset {
            run: "r".into(),
            seq: 3,
            state: RunState::default(),
            epoch: "e1".into(),
            expires_at: Some(1_700_000_000),
        };
        assert_eq!(
            serde_json::to_value(&f).unwrap()["expires_at"],
            json!(1_700_000_000u64)
        );
        let back: ServerFrame = serde_json::from_str(&f.to_json()).unwrap();
        assert_eq!(back, f);
    }

    #[test]
    fn end_reasons() {
        assert_eq!(
            EndReason::for_terminal_event("run.failed"),
            Some(EndReason::Failed)
        );
        assert_eq!(EndReason::for_terminal_event("log"), None);
        assert_eq!(EndReason::Forbidden.as_str(), "forbidden");
        for reason in [EndReason::Forbidden, EndReason::TokenExpired] {
            assert_eq!(
                serde_json::to_value(reason).unwrap(),
                json!(reason.as_str())
            );
        }
    }

    /// The names clients match on are the ones serde writes.
    #[test]
    fn names_are_the_wire_names() {
        for r in EndReason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), json!(r.as_str()));
        }
        for c in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), json!(c.as_str()));
        }
    }
}
