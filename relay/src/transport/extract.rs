//! The checks a request passes before a handler runs, as extractors: the browser's `Origin`
//! ([`AllowedOrigin`]), and the run of the path with a token for it ([`Authorized`]).
//!
//! Extractors run in the order of the handler's arguments, so a handler states the order of its
//! checks in its signature: a malformed query first, then the `Origin` (SSE and WebSocket
//! upgrades), then the run id and the token, then what the handler reads itself: for a publish,
//! the size and the events, the order `docs/protocol.md` documents.

use std::marker::PhantomData;

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use runwire_protocol::is_valid_run_id;
use runwire_protocol::token::{Claims, Scope};
use serde::Deserialize;

use crate::auth::request_token;
use crate::error::ApiError;
use crate::state::AppState;
use crate::transport::{ApiQuery, origin_allowed};

/// The request has no `Origin` or one the allowlist admits; else 403 `origin_not_allowed`.
#[derive(Debug, Clone, Copy)]
pub struct AllowedOrigin;

impl FromRequestParts<AppState> for AllowedOrigin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if origin_allowed(&state.config, &parts.headers) {
            Ok(Self)
        } else {
            Err(ApiError::Origin)
        }
    }
}

/// A token scope, as a type: what [`Authorized`] requires.
pub trait TokenScope: Send + Sync + 'static {
    /// The scope the token must have.
    const SCOPE: Scope;
}

/// Subscribe tokens: watching a run.
#[derive(Debug)]
pub struct Subscribe;

impl TokenScope for Subscribe {
    const SCOPE: Scope = Scope::Subscribe;
}

/// Publish tokens: appending events to a run.
#[derive(Debug)]
pub struct Publish;

impl TokenScope for Publish {
    const SCOPE: Scope = Scope::Publish;
}

/// `?token=`.
#[derive(Debug, Default, Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// The run of the path (`{run}`) and the request's token, verified for that run with scope `S`.
///
/// In order: a malformed query is a 400 `invalid_query`; a run id that is not valid a 400
/// `invalid_run`; then the token (`Authorization: Bearer`, else `?token=`) is verified, and a
/// refusal is counted and answered 401 or 403.
#[derive(Debug)]
pub struct Authorized<S> {
    /// The run, a valid run id.
    pub run: String,
    /// The token's claims.
    pub claims: Claims,
    scope: PhantomData<S>,
}

impl<S: TokenScope> FromRequestParts<AppState> for Authorized<S> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let ApiQuery(query) = ApiQuery::<TokenQuery>::from_request_parts(parts, state).await?;
        // A path that does not decode to text is no run id either.
        let run = Path::<String>::from_request_parts(parts, state)
            .await
            .ok()
            .map(|Path(run)| run);
        let (run, claims) = authorize(parts, state, &query, run, S::SCOPE, "invalid run id")?;
        Ok(Self {
            run,
            claims,
            scope: PhantomData,
        })
    }
}

/// The run id check and token verification of [`Authorized`], for routes that name the run in
/// a path of their own: `run` (`None`: the path did not decode) must be a valid run id, else 400
/// `invalid_run` with `message`; the token (`Authorization: Bearer`, else `?token=`) is verified
/// for it with `scope`, and a refusal is counted and answered 401 or 403.
pub(crate) fn authorize(
    parts: &Parts,
    state: &AppState,
    query: &TokenQuery,
    run: Option<String>,
    scope: Scope,
    message: &'static str,
) -> Result<(String, Claims), ApiError> {
    let Some(run) = run.filter(|run| is_valid_run_id(run)) else {
        return Err(ApiError::bad_request("invalid_run", message));
    };
    let token = request_token(&parts.headers, query.token.as_deref());
    let claims = state.verifier.verify(token, scope, Some(&run))?;
    Ok((run, claims))
}
