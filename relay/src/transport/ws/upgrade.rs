//! The WebSocket handshake (RFC 6455, section 4.2) for the relay's own framing ([`super::codec`]):
//! the request is checked as axum's `WebSocketUpgrade` checks it, with the same statuses and
//! texts, and the connection hyper hands over after the `101` is the relay's socket itself,
//! without a WebSocket library's buffers around it.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use hyper::upgrade::OnUpgrade;
use sha1::{Digest as _, Sha1};

use crate::transport::listener::Held;
use crate::transport::ws::codec::{Reader, Writer};

/// A WebSocket handshake request, checked; [`Upgrade::on_upgrade`] answers it.
#[derive(Debug)]
pub struct Upgrade {
    key: HeaderValue,
    on_upgrade: OnUpgrade,
}

/// Why a request is not a WebSocket handshake the relay can answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    status: StatusCode,
    text: &'static str,
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (self.status, self.text).into_response()
    }
}

const fn refused(status: StatusCode, text: &'static str) -> Refused {
    Refused { status, text }
}

impl<S: Send + Sync> FromRequestParts<S> for Upgrade {
    type Rejection = Refused;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Refused> {
        Self::check(parts)
    }
}

impl Upgrade {
    fn check(parts: &mut Parts) -> Result<Self, Refused> {
        if parts.version > Version::HTTP_11 {
            // The relay serves HTTP/1.1 only (`transport::listener`).
            return Err(refused(
                StatusCode::HTTP_VERSION_NOT_SUPPORTED,
                "WebSockets need HTTP/1.1",
            ));
        }
        if parts.method != Method::GET {
            return Err(refused(
                StatusCode::METHOD_NOT_ALLOWED,
                "Request method must be `GET`",
            ));
        }
        let headers = &parts.headers;
        if !has_token(headers, header::CONNECTION, "upgrade") {
            return Err(refused(
                StatusCode::BAD_REQUEST,
                "Connection header did not include 'upgrade'",
            ));
        }
        if !is(headers, header::UPGRADE, "websocket") {
            return Err(refused(
                StatusCode::BAD_REQUEST,
                "`Upgrade` header did not include 'websocket'",
            ));
        }
        let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).cloned() else {
            return Err(refused(
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Key` header missing",
            ));
        };
        if !is(headers, header::SEC_WEBSOCKET_VERSION, "13") {
            return Err(refused(
                StatusCode::BAD_REQUEST,
                "`Sec-WebSocket-Version` header did not include '13'",
            ));
        }
        let Some(on_upgrade) = parts.extensions.remove::<OnUpgrade>() else {
            return Err(refused(
                StatusCode::UPGRADE_REQUIRED,
                "WebSocket request couldn't be upgraded since no upgrade state was present",
            ));
        };
        Ok(Self { key, on_upgrade })
    }

    /// Answers `101 Switching Protocols` and, once hyper hands the connection over, calls
    /// `serve` with the client's frames (up to `max` bytes each) and the writer of the relay's.
    /// `serve` runs in a short task of its own, which ends when it returns: a connection that
    /// lives on is spawned by `serve`, so that nothing of the handshake stays in its task.
    pub fn on_upgrade<F>(self, max: usize, serve: F) -> Response
    where
        F: FnOnce(Reader<Held>, Writer) + Send + 'static,
    {
        let Self { key, on_upgrade } = self;
        tokio::spawn(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(e) => {
                    tracing::debug!(error = %e, "upgrade failed");
                    return;
                }
            };
            let Some((held, read_ahead)) = Held::from_upgraded(upgraded) else {
                tracing::error!("a WebSocket upgrade not on the relay's listener: closed");
                return;
            };
            let writer = Writer::new(held.socket().clone());
            serve(Reader::new(held, read_ahead, max), writer);
        });
        (
            StatusCode::SWITCHING_PROTOCOLS,
            [
                (header::CONNECTION, HeaderValue::from_static("upgrade")),
                (header::UPGRADE, HeaderValue::from_static("websocket")),
                (header::SEC_WEBSOCKET_ACCEPT, accept_key(key.as_bytes())),
            ],
        )
            .into_response()
    }
}

/// `Sec-WebSocket-Accept` for a request's `Sec-WebSocket-Key` (RFC 6455, 4.2.2).
fn accept_key(key: &[u8]) -> HeaderValue {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    let accept = base64::engine::general_purpose::STANDARD.encode(sha1.finalize());
    HeaderValue::try_from(accept).expect("base64 is a valid header value")
}

/// Whether header `name` is `value`, ignoring ASCII case.
fn is(headers: &HeaderMap, name: HeaderName, value: &str) -> bool {
    headers
        .get(name)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(value.as_bytes()))
}

/// Whether header `name` lists `token` among its comma-separated values, ignoring ASCII case.
fn has_token(headers: &HeaderMap, name: HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.as_bytes()
            .split(|&b| b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Request;

    #[test]
    fn the_accept_key_is_rfc_6455s() {
        // The example of RFC 6455, section 1.3.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    fn parts(edit: impl FnOnce(&mut Request<()>)) -> Parts {
        let mut request = Request::get("/v1/ws")
            .header("connection", "keep-alive, Upgrade")
            .header("upgrade", "WebSocket")
            .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==")
            .header("sec-websocket-version", "13")
            .body(())
            .unwrap();
        edit(&mut request);
        request.into_parts().0
    }

    #[test]
    fn refuses_what_is_not_a_handshake_as_axum_did() {
        let status = |edit: fn(&mut Request<()>)| {
            Upgrade::check(&mut parts(edit))
                .expect_err("refused")
                .status
        };
        assert_eq!(
            status(|r| *r.method_mut() = Method::POST),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            status(|r| {
                r.headers_mut().remove("connection");
            }),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(|r| {
                r.headers_mut()
                    .insert("upgrade", HeaderValue::from_static("h2c"));
            }),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(|r| {
                r.headers_mut().remove("sec-websocket-key");
            }),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            status(|r| {
                r.headers_mut()
                    .insert("sec-websocket-version", HeaderValue::from_static("8"));
            }),
            StatusCode::BAD_REQUEST
        );
        // Everything right, but not a connection hyper can upgrade.
        assert_eq!(status(|_| {}), StatusCode::UPGRADE_REQUIRED);
    }
}
