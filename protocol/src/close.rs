//! WebSocket close codes the relay uses, and what a client should do after each.
//!
//! This table is the single source for the relay, the SDK and `docs/protocol.md`.

/// What a client should do after a close.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reconnect {
    /// Reconnect at once (with a little jitter), resuming every subscription.
    Immediately,
    /// Reconnect with the usual exponential backoff, resuming every subscription.
    Backoff,
    /// Fetch a fresh token, then reconnect. If the fresh token is refused the same way, stop.
    WithFreshToken,
    /// Do not reconnect: retrying cannot succeed.
    Never,
}

/// A close code of the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseCode {
    /// 1000: the client closed, or a single-run socket's run finished.
    Normal,
    /// 1002: the client broke the WebSocket protocol itself (an unmasked frame, reserved bits,
    /// an unknown opcode).
    WebSocketProtocolError,
    /// 1007: a text frame that is not valid UTF-8.
    InvalidUtf8,
    /// 1009: the client sent a frame over the inbound limit (64 KiB).
    MessageTooBig,
    /// 1011: the relay hit an internal error.
    InternalError,
    /// 1012: the relay is shutting down; connect again (another relay will answer).
    ServiceRestart,
    /// 4000: the client broke the protocol (a binary frame, say).
    ProtocolError,
    /// 4001: the token expired and was not refreshed.
    TokenExpired,
    /// 4002: the token is invalid (malformed, bad signature, wrong algorithm, not yet valid).
    TokenInvalid,
    /// 4003: the token is valid but does not allow this connection (scope or run).
    Forbidden,
    /// 4004: no `auth` frame arrived in time after the connection opened.
    AuthTimeout,
    /// 4008: the client did not read its events fast enough; its queue overflowed.
    SlowConsumer,
    /// 4009: a ping went unanswered (no pong, no frame) for a full ping interval, or nothing
    /// arrived from the client for the idle timeout.
    IdleTimeout,
    /// 4029: a connection limit was reached.
    TooManyConnections,
}

impl CloseCode {
    /// Every code, in table order.
    pub const ALL: [CloseCode; 14] = [
        Self::Normal,
        Self::WebSocketProtocolError,
        Self::InvalidUtf8,
        Self::MessageTooBig,
        Self::InternalError,
        Self::ServiceRestart,
        Self::ProtocolError,
        Self::TokenExpired,
        Self::TokenInvalid,
        Self::Forbidden,
        Self::AuthTimeout,
        Self::SlowConsumer,
        Self::IdleTimeout,
        Self::TooManyConnections,
    ];

    /// The numeric code.
    pub fn code(self) -> u16 {
        match self {
            Self::Normal => 1000,
            Self::WebSocketProtocolError => 1002,
            Self::InvalidUtf8 => 1007,
            Self::MessageTooBig => 1009,
            Self::InternalError => 1011,
            Self::ServiceRestart => 1012,
            Self::ProtocolError => 4000,
            Self::TokenExpired => 4001,
            Self::TokenInvalid => 4002,
            Self::Forbidden => 4003,
            Self::AuthTimeout => 4004,
            Self::SlowConsumer => 4008,
            Self::IdleTimeout => 4009,
            Self::TooManyConnections => 4029,
        }
    }

    /// The code for a number, if the relay uses it.
    pub fn from_code(code: u16) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.code() == code)
    }

    /// The short reason sent in the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::WebSocketProtocolError => "websocket protocol error",
            Self::InvalidUtf8 => "invalid utf-8",
            Self::MessageTooBig => "message too big",
            Self::InternalError => "internal error",
            Self::ServiceRestart => "relay restarting",
            Self::ProtocolError => "protocol error",
            Self::TokenExpired => "token expired",
            Self::TokenInvalid => "token invalid",
            Self::Forbidden => "forbidden",
            Self::AuthTimeout => "auth timeout",
            Self::SlowConsumer => "slow consumer",
            Self::IdleTimeout => "idle timeout",
            Self::TooManyConnections => "too many connections",
        }
    }

    /// What a client should do after this close.
    pub fn reconnect(self) -> Reconnect {
        match self {
            Self::ServiceRestart => Reconnect::Immediately,
            Self::InternalError
            | Self::AuthTimeout
            | Self::SlowConsumer
            | Self::IdleTimeout
            | Self::TooManyConnections => Reconnect::Backoff,
            Self::TokenExpired | Self::TokenInvalid => Reconnect::WithFreshToken,
            Self::Normal
            | Self::WebSocketProtocolError
            | Self::InvalidUtf8
            | Self::MessageTooBig
            | Self::ProtocolError
            | Self::Forbidden => Reconnect::Never,
        }
    }

    /// What a client should do after a close with a raw `code`, including codes the relay never
    /// sends itself (1006 for a dropped connection, say): anything unknown is retried with backoff.
    pub fn reconnect_for(code: u16) -> Reconnect {
        Self::from_code(code).map_or(Reconnect::Backoff, Self::reconnect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        for c in CloseCode::ALL {
            assert_eq!(CloseCode::from_code(c.code()), Some(c));
            assert!(!c.reason().is_empty() && c.reason().len() < 123);
        }
        assert_eq!(CloseCode::reconnect_for(1006), Reconnect::Backoff);
        assert_eq!(CloseCode::reconnect_for(4003), Reconnect::Never);
        assert_eq!(CloseCode::reconnect_for(4001), Reconnect::WithFreshToken);
    }

    /// `docs/protocol.md` has one row per code, with the same reason and policy.
    #[test]
    fn the_docs_table_matches() {
        let docs = include_str!("../../docs/protocol.md");
        for c in CloseCode::ALL {
            let policy = match c.reconnect() {
                Reconnect::Immediately => "Immediately",
                Reconnect::Backoff => "Backoff",
                Reconnect::WithFreshToken => "WithFreshToken",
                Reconnect::Never => "Never",
            };
            let row = docs
                .lines()
                .find(|l| l.starts_with(&alloc::format!("| {} | ", c.code())))
                .unwrap_or_else(|| panic!("no row for {} in docs/protocol.md", c.code()));
            assert!(
                row.contains(&alloc::format!("| `{}` |", c.reason())),
                "{row}"
            );
            assert!(row.ends_with(&alloc::format!("| **{policy}** |")), "{row}");
        }
    }
}
