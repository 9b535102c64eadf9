//! One driver per system under test: the URL a subscriber connects to, what it sends, and what
//! the frames it receives mean.
//!
//! Drivers are plain functions over text so they are tested without sockets. Receiving is on the
//! load tool's hot path, so frames are not parsed as JSON: the drivers look for the `"seq":` and
//! `"t_ns":` fields by position, which every system under test emits in a fixed order.

use std::net::SocketAddr;

use clap::ValueEnum;

/// A system the load tool can drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ValueEnum)]
pub enum System {
    /// runwire's relay (`/v1/ws`, `auth` frame, `subscribe` frames).
    Runwire,
    /// `bench/peers/ws-relay.js`: the `ws` package with an in-process pub/sub (or ioredis).
    NodeWs,
    /// `bench/peers/socketio-relay.js`: a socket.io server with rooms.
    Socketio,
    /// `runwire-bench floor`: the least work a relay must do (see `floor`); it speaks the
    /// `node-ws` protocol.
    Floor,
}

impl System {
    /// The name used on the command line and in tables.
    pub fn name(self) -> &'static str {
        match self {
            Self::Runwire => "runwire",
            Self::NodeWs => "node-ws",
            Self::Socketio => "socketio",
            Self::Floor => "floor",
        }
    }
}

/// What a subscriber asks for: one run, optionally resuming after a seq.
#[derive(Debug, Clone)]
pub struct Subscription {
    /// The run.
    pub run: String,
    /// Resume after this seq (the relay replays what follows it first).
    pub since: Option<u64>,
    /// A subscribe-scope token covering `run`.
    pub token: String,
}

/// What a received text frame means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// The subscription took effect; `head` is the run's head seq.
    Subscribed {
        /// The head seq.
        head: u64,
    },
    /// A run event.
    Event {
        /// Its seq.
        seq: u64,
        /// The publisher's timestamp in the event (ns since the Unix epoch), when it has one.
        t_ns: Option<u64>,
    },
    /// Send this text back (socket.io's application-level heartbeat, its connect handshake).
    Reply(String),
    /// Nothing to act on (welcome, handshake).
    Ignore,
    /// The system refused something; the subscriber fails with this text.
    Refused(String),
}

/// The WebSocket URL of `system` on `addr` for `sub`.
pub fn url(system: System, addr: SocketAddr, sub: &Subscription) -> String {
    match system {
        System::Runwire => format!("ws://{addr}/v1/ws"),
        System::NodeWs | System::Floor => format!("ws://{addr}/ws?token={}", sub.token),
        System::Socketio => format!("ws://{addr}/socket.io/?EIO=4&transport=websocket"),
    }
}

/// The frames a subscriber sends right after connecting. They are sent back to back: runwire
/// handles a socket's frames in order, so `subscribe` may follow `auth` without waiting.
pub fn hello(system: System, sub: &Subscription) -> Vec<String> {
    match system {
        System::Runwire => {
            let auth = serde_json::json!({"type":"auth","token":sub.token});
            let mut subscribe = serde_json::json!({"type":"subscribe","run":sub.run});
            if let Some(since) = sub.since {
                subscribe["since"] = since.into();
            }
            vec![auth.to_string(), subscribe.to_string()]
        }
        System::NodeWs | System::Floor => vec![node_ws_subscribe(sub)],
        // socket.io drops packets for a namespace it has not finished connecting, so the
        // subscription waits for the connect acknowledgement (see `classify`).
        System::Socketio => vec![format!("40{}", serde_json::json!({"token": sub.token}))],
    }
}

fn node_ws_subscribe(sub: &Subscription) -> String {
    let mut frame = serde_json::json!({"sub": sub.run});
    if let Some(since) = sub.since {
        frame["since"] = since.into();
    }
    frame.to_string()
}

fn socketio_subscribe(sub: &Subscription) -> String {
    let mut body = serde_json::json!({"run": sub.run});
    if let Some(since) = sub.since {
        body["since"] = since.into();
    }
    format!("42[\"sub\",{body}]")
}

/// What `text`, received by a subscriber of `system`, means.
pub fn classify(system: System, sub: &Subscription, text: &str) -> Incoming {
    match system {
        System::Runwire => {
            if text.starts_with(r#"{"type":"event""#) {
                event(text)
            } else if text.starts_with(r#"{"type":"subscribed""#)
                || text.starts_with(r#"{"type":"reset""#)
            {
                subscribed(text)
            } else if text.starts_with(r#"{"type":"welcome""#)
                || text.starts_with(r#"{"type":"pong""#)
            {
                Incoming::Ignore
            } else {
                Incoming::Refused(text.chars().take(200).collect())
            }
        }
        System::NodeWs | System::Floor => {
            if text.starts_with(r#"{"run":"#) {
                event(text)
            } else if text.starts_with(r#"{"ok":"#) {
                subscribed(text)
            } else {
                Incoming::Refused(text.chars().take(200).collect())
            }
        }
        System::Socketio => {
            if text.starts_with(r#"42["ev","#) {
                event(text)
            } else if text.starts_with(r#"42["ok","#) {
                subscribed(text)
            } else if text == "2" {
                Incoming::Reply("3".to_owned())
            } else if text.starts_with("40") {
                Incoming::Reply(socketio_subscribe(sub))
            } else if text.starts_with('0') {
                Incoming::Ignore
            } else {
                Incoming::Refused(text.chars().take(200).collect())
            }
        }
    }
}

fn event(text: &str) -> Incoming {
    match number_after(text, "\"seq\":") {
        Some(seq) => Incoming::Event {
            seq,
            t_ns: number_after(text, "\"t_ns\":"),
        },
        None => Incoming::Refused(format!("event without a seq: {text:.200}")),
    }
}

fn subscribed(text: &str) -> Incoming {
    match number_after(text, "\"seq\":") {
        Some(head) => Incoming::Subscribed { head },
        None => Incoming::Refused(format!("subscription answer without a seq: {text:.200}")),
    }
}

/// The unsigned integer right after the first `key` in `text`.
fn number_after(text: &str, key: &str) -> Option<u64> {
    let start = text.find(key)? + key.len();
    let digits = &text[start..];
    let end = digits
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sub(since: Option<u64>) -> Subscription {
        Subscription {
            run: "r1".into(),
            since,
            token: "T".into(),
        }
    }

    #[test]
    fn runwire_frames() {
        let s = sub(Some(4));
        let hello = hello(System::Runwire, &s);
        assert_eq!(hello[0], r#"{"token":"T","type":"auth"}"#);
        assert_eq!(hello[1], r#"{"run":"r1","since":4,"type":"subscribe"}"#);
        let ev = r#"{"type":"event","run":"r1","seq":17,"event":"bench.tick","ts":"x","data":{"t_ns":1700000000123456789}}"#;
        assert_eq!(
            classify(System::Runwire, &s, ev),
            Incoming::Event {
                seq: 17,
                t_ns: Some(1_700_000_000_123_456_789)
            }
        );
        let subd = r#"{"type":"subscribed","run":"r1","seq":9,"state":{"seq":3},"epoch":"e"}"#;
        assert_eq!(
            classify(System::Runwire, &s, subd),
            Incoming::Subscribed { head: 9 }
        );
        let reset = r#"{"type":"reset","run":"r1","seq":2,"state":{},"epoch":"e"}"#;
        assert_eq!(
            classify(System::Runwire, &s, reset),
            Incoming::Subscribed { head: 2 }
        );
        assert_eq!(
            classify(System::Runwire, &s, r#"{"type":"welcome","conn":"1"}"#),
            Incoming::Ignore
        );
        assert!(matches!(
            classify(System::Runwire, &s, r#"{"type":"unsubscribed","run":"r1"}"#),
            Incoming::Refused(_)
        ));
    }

    #[test]
    fn node_ws_frames() {
        let s = sub(None);
        assert_eq!(
            hello(System::NodeWs, &s),
            vec![r#"{"sub":"r1"}"#.to_owned()]
        );
        assert_eq!(
            url(System::NodeWs, "127.0.0.1:9".parse().unwrap(), &s),
            "ws://127.0.0.1:9/ws?token=T"
        );
        assert_eq!(
            classify(System::NodeWs, &s, r#"{"ok":"r1","seq":0}"#),
            Incoming::Subscribed { head: 0 }
        );
        assert_eq!(
            classify(
                System::NodeWs,
                &s,
                r#"{"run":"r1","seq":1,"event":"bench.tick","data":{"t_ns":5}}"#
            ),
            Incoming::Event {
                seq: 1,
                t_ns: Some(5)
            }
        );
        assert!(matches!(
            classify(System::NodeWs, &s, r#"{"err":"forbidden"}"#),
            Incoming::Refused(_)
        ));
    }

    #[test]
    fn socketio_frames() {
        let s = sub(Some(2));
        assert_eq!(hello(System::Socketio, &s), vec![r#"40{"token":"T"}"#]);
        assert_eq!(
            classify(System::Socketio, &s, r#"0{"sid":"a","pingInterval":25000}"#),
            Incoming::Ignore
        );
        assert_eq!(
            classify(System::Socketio, &s, r#"40{"sid":"b"}"#),
            Incoming::Reply(r#"42["sub",{"run":"r1","since":2}]"#.to_owned())
        );
        assert_eq!(
            classify(System::Socketio, &s, "2"),
            Incoming::Reply("3".into())
        );
        assert_eq!(
            classify(System::Socketio, &s, r#"42["ok",{"run":"r1","seq":12}]"#),
            Incoming::Subscribed { head: 12 }
        );
        assert_eq!(
            classify(
                System::Socketio,
                &s,
                r#"42["ev",{"run":"r1","seq":3,"event":"bench.tick","data":{"t_ns":7}}]"#
            ),
            Incoming::Event {
                seq: 3,
                t_ns: Some(7)
            }
        );
        assert!(matches!(
            classify(System::Socketio, &s, r#"44{"message":"unauthorized"}"#),
            Incoming::Refused(_)
        ));
    }

    #[test]
    fn numbers() {
        assert_eq!(number_after(r#"{"seq":12}"#, "\"seq\":"), Some(12));
        assert_eq!(number_after(r#"{"seq":}"#, "\"seq\":"), None);
        assert_eq!(number_after(r#"{"x":1}"#, "\"seq\":"), None);
        assert_eq!(
            classify(System::Runwire, &sub(None), r#"{"type":"event","run":"r"}"#),
            Incoming::Refused(r#"event without a seq: {"type":"event","run":"r"}"#.into())
        );
    }
}
