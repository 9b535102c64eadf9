//! How clients reach the relay: WebSocket ([`ws`]), Server-Sent Events ([`sse`]) and plain HTTP
//! ([`http`]), sharing the subscription rules in [`subscription`] and the request checks in
//! [`extract`]; [`files`] serves a built page at `/`; [`listener`] accepts the connections and
//! bounds them.

pub mod extract;
pub mod files;
pub mod http;
pub mod listener;
pub mod sse;
pub mod subscription;
pub mod ws;

use axum::Router;
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::error::ApiError;
use crate::state::AppState;

/// `Query<T>` whose rejection is the relay's JSON 400 rather than the framework's plain text.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T, S> FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(q)) => Ok(Self(q)),
            Err(e) => Err(ApiError::bad_request("invalid_query", e.body_text())),
        }
    }
}

/// Whether the request's `Origin` may use the relay. An `Origin` that is not visible ASCII is
/// refused whatever the allowlist says: browsers serialize origins as ASCII (RFC 6454), so such a
/// value is forged, and it must be neither matched as "no Origin" nor echoed back.
pub fn origin_allowed(config: &crate::config::Config, headers: &HeaderMap) -> bool {
    match headers.get(header::ORIGIN).map(HeaderValue::to_str) {
        None => config.origin_allowed(None),
        Some(Ok(origin)) => config.origin_allowed(Some(origin)),
        Some(Err(_)) => false,
    }
}

/// Every route of the relay, with what `extend` adds (the demo's routes, the compatibility
/// layers' endpoints) before the static files and CORS.
pub fn router(
    state: AppState,
    extend: impl FnOnce(Router<AppState>) -> Router<AppState>,
) -> Router {
    let mut router = Router::new()
        .route("/health", get(http::health))
        .route("/ready", get(http::ready))
        .route("/v1/ws", get(ws::multi))
        .route("/ws/executions", get(ws::executions))
        .route("/v1/runs/{run}", get(http::run_state))
        .route(
            "/v1/runs/{run}/events",
            get(sse::stream).post(http::publish),
        );
    if state.config.metrics_addr.is_none() {
        router = router.route("/metrics", get(http::metrics));
    }
    router = extend(router);
    router = match files::web_dir(&state.config) {
        Some(dir) => router.merge(files::routes(dir)),
        None => router.route("/", get(http::index)),
    };
    router
        .layer(middleware::from_fn_with_state(state.clone(), cors))
        .with_state(state)
}

/// The router of `--metrics-addr`: `/metrics` only.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(http::metrics))
        .with_state(state)
}

/// CORS for browser apps on other origins: the request's `Origin` is echoed when the allowlist
/// admits it, and preflights are answered here.
///
/// Written out rather than tower-http's `CorsLayer`, which answers differently on the wire: every
/// `OPTIONS` request is a preflight to it, Origin or not, answered 200 rather than 204, and a
/// refused origin's preflight gets 200 without CORS headers rather than 403 (tried: both Origin
/// tests in `tests/bad_input.rs` fail). Keeping the documented answers would take a layer on
/// each side of it, making the same Origin decision again.
async fn cors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(origin) = request.headers().get(header::ORIGIN).cloned() else {
        return next.run(request).await;
    };
    let allowed = origin_allowed(&state.config, request.headers());
    if request.method() == Method::OPTIONS {
        if !allowed {
            return StatusCode::FORBIDDEN.into_response();
        }
        let mut response = StatusCode::NO_CONTENT.into_response();
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, OPTIONS"),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("authorization, content-type, last-event-id"),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        h.insert(header::VARY, HeaderValue::from_static("origin"));
        return response;
    }
    let mut response = next.run(request).await;
    if allowed {
        let h = response.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        h.append(header::VARY, HeaderValue::from_static("origin"));
    }
    response
}
