//! Relay addresses: the WebSocket URL the app configures, and the HTTP base of the SSE streams
//! derived from it (transport.js adds each stream's path).

use alloc::string::String;

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
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    // `get`, not indexing: no slicing panic ships in the `.wasm`.
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derives_sse_urls() {
        let u = RelayUrl::parse("wss://relay.example/v1/ws").unwrap();
        assert_eq!(u.websocket, "wss://relay.example/v1/ws");
        assert_eq!(u.http_base, "https://relay.example/v1");
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
