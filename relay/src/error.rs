//! Errors at the relay's HTTP boundary. Each knows its status and, for the WebSocket
//! transports, its close code.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use runwire_protocol::CloseCode;
use runwire_protocol::token::TokenError;

use crate::broker::BrokerError;
use crate::metrics::AuthFailure;

/// Why a request's token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token in `Authorization: Bearer`, `?token=` or an `auth` frame.
    #[error("a token is required")]
    Missing,
    /// The token itself is invalid.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// A publish token used to watch, or a subscribe token used to publish.
    #[error("the token's scope does not allow this")]
    WrongScope,
    /// The token does not cover the run.
    #[error("the token does not cover this run")]
    WrongRun,
}

impl AuthError {
    /// HTTP status: 401 for a missing or invalid token, 403 for a valid one that does not allow
    /// the request.
    pub fn status(self) -> StatusCode {
        match self {
            Self::Missing | Self::Token(_) => StatusCode::UNAUTHORIZED,
            Self::WrongScope | Self::WrongRun => StatusCode::FORBIDDEN,
        }
    }

    /// WebSocket close code.
    pub fn close_code(self) -> CloseCode {
        match self {
            Self::Token(TokenError::Expired) => CloseCode::TokenExpired,
            Self::Missing | Self::Token(_) => CloseCode::TokenInvalid,
            Self::WrongScope | Self::WrongRun => CloseCode::Forbidden,
        }
    }

    /// The metrics label.
    pub fn failure(self) -> AuthFailure {
        match self {
            Self::Missing => AuthFailure::Missing,
            Self::Token(e) => AuthFailure::Token(e),
            Self::WrongScope => AuthFailure::WrongScope,
            Self::WrongRun => AuthFailure::WrongRun,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Self::Missing => "token_missing",
            Self::Token(TokenError::Expired) => "token_expired",
            Self::Token(_) => "token_invalid",
            Self::WrongScope => "wrong_scope",
            Self::WrongRun => "wrong_run",
        }
    }
}

/// An error answered to an HTTP request as `{"error":{"code","message"}}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The token was refused.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// The request is malformed.
    #[error("{message}")]
    BadRequest {
        /// Machine-readable code.
        code: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The body is over the limit.
    #[error("request body over {0} bytes")]
    TooLarge(usize),
    /// The browser's origin is not allowed.
    #[error("origin not allowed")]
    Origin,
    /// The broker refused.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl ApiError {
    /// A 400 with `code`.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::Auth(e) => e.status(),
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Origin => StatusCode::FORBIDDEN,
            Self::Broker(BrokerError::RunFinished(_)) => StatusCode::CONFLICT,
            Self::Broker(BrokerError::LimitReached) => StatusCode::TOO_MANY_REQUESTS,
            Self::Broker(BrokerError::Unavailable(_) | BrokerError::TooManyRuns) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Auth(e) => e.code(),
            Self::BadRequest { code, .. } => code,
            Self::TooLarge(_) => "too_large",
            Self::Origin => "origin_not_allowed",
            Self::Broker(BrokerError::RunFinished(_)) => "run_finished",
            Self::Broker(BrokerError::LimitReached) => "too_many_streams",
            Self::Broker(BrokerError::TooManyRuns) => "too_many_runs",
            Self::Broker(BrokerError::Unavailable(_)) => "broker_unavailable",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": { "code": self.code(), "message": self.to_string() }
        });
        let mut response = (self.status(), Json(body)).into_response();
        if matches!(
            self,
            Self::Broker(BrokerError::Unavailable(_) | BrokerError::TooManyRuns)
        ) {
            response
                .headers_mut()
                .insert("retry-after", axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}
