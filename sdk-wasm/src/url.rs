//! Relay addresses: the WebSocket URL the app configures, and the SSE stream URLs derived from it.

use alloc::string::String;

use crate::wire::push_ascii;

/// The relay's WebSocket and HTTP bases, from the `url` option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayUrl {
    /// `ws(s)://host/…/v1/ws`, as the WebSocket connects to it.
    pub websocket: String,
    /// `http(s)://host/…/v1`: SSE streams live under `{base}/runs/{run}/events`.
    pub http_base: String,
}

impl RelayUrl {
    /// Parses the `url` option: `ws://`, `wss://` (or `http(s)://`, turned into `ws(s)://`),
    /// whose path ends with the WebSocket endpoint (`/v1/ws`).
    pub fn parse(url: &str) -> Result<Self, &'static str> {
        let (secure, rest) = if let Some(rest) = strip_prefix_ci(url, "wss://") {
            (true, rest)
        } else if let Some(rest) = strip_prefix_ci(url, "ws://") {
            (false, rest)
        } else if let Some(rest) = strip_prefix_ci(url, "https://") {
            (true, rest)
        } else if let Some(rest) = strip_prefix_ci(url, "http://") {
            (false, rest)
        } else {
            return Err("`url` must start with ws:// or wss://");
        };
        let rest = rest.split(['?', '#']).next().unwrap_or_default();
        if rest.is_empty() || rest.starts_with('/') {
            return Err("`url` has no host");
        }
        let (ws, http) = if secure {
            ("wss://", "https://")
        } else {
            ("ws://", "http://")
        };
        let path_base = rest
            .strip_suffix("/ws")
            .unwrap_or(rest)
            .trim_end_matches('/');
        Ok(Self {
            websocket: [ws, rest].concat(),
            http_base: [http, path_base].concat(),
        })
    }

    /// The SSE stream of `run`, resuming after `since` in `epoch` when given.
    pub fn events(&self, run: &str, since: Option<u64>, epoch: Option<&str>) -> String {
        let mut url = [&self.http_base, "/runs/", &encode(run), "/events"].concat();
        if let Some(since) = since {
            url.push_str("?since=");
            crate::wire::push_uint(&mut url, since);
            if let Some(epoch) = epoch {
                url.push_str("&epoch=");
                url.push_str(&encode(epoch));
            }
        }
        url
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    // `get`, not indexing: no slicing panic ships in the `.wasm`.
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            push_ascii(&mut out, b);
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            push_ascii(&mut out, HEX[usize::from(b >> 4)]);
            push_ascii(&mut out, HEX[usize::from(b & 15)]);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_sse_urls() {
        let u = RelayUrl::parse("wss://relay.example/v1/ws").unwrap();
        assert_eq!(u.websocket, "wss://relay.example/v1/ws");
        assert_eq!(u.http_base, "https://relay.example/v1");
        assert_eq!(
            u.events("run:1", None, None),
            "https://relay.example/v1/runs/run%3A1/events"
        );
        assert_eq!(
            u.events("r", Some(7), Some("e 1/x")),
            "https://relay.example/v1/runs/r/events?since=7&epoch=e%201%2Fx"
        );
        let u = RelayUrl::parse("ws://127.0.0.1:9000/prefix/v1/ws").unwrap();
        assert_eq!(u.http_base, "http://127.0.0.1:9000/prefix/v1");
        let u = RelayUrl::parse("HTTP://h:1/v1/ws").unwrap();
        assert_eq!(u.websocket, "ws://h:1/v1/ws");
    }

    #[test]
    fn refuses_other_urls() {
        for bad in ["", "ftp://h/v1/ws", "wss://", "wss:///v1/ws", "relay/v1/ws"] {
            assert!(RelayUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
