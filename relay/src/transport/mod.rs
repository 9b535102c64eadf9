//! How clients reach the relay: WebSocket ([`ws`]), Server-Sent Events ([`sse`]) and plain HTTP
//! ([`http`]), sharing the subscription rules in [`follow`]; [`files`] serves a built page at `/`.

pub mod files;
pub mod follow;
pub mod http;
pub mod sse;
pub mod ws;

use axum::Router;
use axum::extract::{FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::AppState;
use crate::error::ApiError;

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

/// Every route of the relay.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new()
        .route("/health", get(http::health))
        .route("/ready", get(http::ready))
        .route("/metrics", get(http::metrics))
        .route("/v1/ws", get(ws::multi))
        .route("/ws/executions", get(ws::executions))
        .route("/v1/runs/{run}", get(http::run_state))
        .route(
            "/v1/runs/{run}/events",
            get(sse::stream).post(http::publish),
        );
    if state.config.demo {
        router = router.merge(crate::demo::routes());
    }
    router = crate::compat::mount(router, &state);
    router = match files::web_dir(&state.config) {
        Some(dir) => router.merge(files::routes(dir)),
        None => router.route("/", get(http::index)),
    };
    router
        .layer(middleware::from_fn_with_state(state.clone(), cors))
        .with_state(state)
}

/// CORS for browser apps on other origins: the request's `Origin` is echoed when the allowlist
/// admits it, and preflights are answered here.
async fn cors(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Some(origin) = request.headers().get(header::ORIGIN).cloned() else {
        return next.run(request).await;
    };
    let allowed = state.config.origin_allowed(origin.to_str().ok());
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
