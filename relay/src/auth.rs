//! Token verification for every transport, and the clock it checks expiry against.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use runwire_protocol::token::{self, Claims, LEEWAY_SECS, Scope, TokenError};

use crate::error::AuthError;
use crate::metrics::Metrics;

/// The furthest ahead a token's expiry is scheduled: about 30 years.
pub const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);

/// Where "now" comes from. Tests use [`Clock::tokio`] so that paused tokio time moves token
/// expiry along with every timer.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system clock.
    System,
    /// A Unix time that advances with tokio's clock.
    Tokio {
        /// Unix seconds at `start`.
        unix_at_start: u64,
        /// When the clock was made.
        start: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock that starts at the system time and then follows tokio's (possibly paused) clock.
    pub fn tokio() -> Self {
        Self::Tokio {
            unix_at_start: Self::System.unix_secs(),
            start: tokio::time::Instant::now(),
        }
    }

    /// Now, in Unix seconds.
    pub fn unix_secs(&self) -> u64 {
        match self {
            Self::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
            Self::Tokio {
                unix_at_start,
                start,
            } => unix_at_start + start.elapsed().as_secs(),
        }
    }

    /// When a token with `exp` stops being valid, as a tokio instant (`exp` plus the leeway).
    ///
    /// `exp` is the token's to choose, up to `u64::MAX`: an instant that far ahead does not exist,
    /// so expiry is capped at [`FAR_FUTURE`] from now, long after any connection has ended.
    pub fn expiry_instant(&self, exp: u64) -> tokio::time::Instant {
        let left = exp
            .saturating_add(LEEWAY_SECS)
            .saturating_sub(self.unix_secs());
        tokio::time::Instant::now() + Duration::from_secs(left).min(FAR_FUTURE)
    }
}

/// Keys or formats a token is tried with after the relay's secret refused it: verification-only
/// secrets and replaced systems' token formats (`compat::TokenKeys`).
pub trait OtherKeys: Send + Sync + std::fmt::Debug {
    /// The claims of `token`, or the most telling refusal, `first` (the secret's) included.
    fn verify(&self, token: &str, now: u64, first: TokenError) -> Result<Claims, TokenError>;
}

/// Verifies tokens with the relay's secret and counts refusals.
#[derive(Debug, Clone)]
pub struct Verifier {
    secret: Arc<[u8]>,
    clock: Clock,
    metrics: Arc<Metrics>,
    /// Tried when the secret refuses a token.
    others: Option<Arc<dyn OtherKeys>>,
}

impl Verifier {
    /// A verifier for `secret`.
    pub fn new(secret: &[u8], clock: Clock, metrics: Arc<Metrics>) -> Self {
        Self {
            secret: secret.into(),
            clock,
            metrics,
            others: None,
        }
    }

    /// Also accepts tokens signed with further secrets, or in a replaced system's format.
    pub fn with_compat(mut self, keys: impl OtherKeys + 'static) -> Self {
        self.others = Some(Arc::new(keys));
        self
    }

    /// The clock tokens are checked against.
    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Signs `claims` with the relay's secret (for `runwire demo` and tests).
    pub fn sign(&self, claims: &Claims) -> String {
        token::sign(claims, &self.secret)
    }

    /// Verifies `token` for `scope` and, when given, `run`.
    pub fn verify(
        &self,
        token: Option<&str>,
        scope: Scope,
        run: Option<&str>,
    ) -> Result<Claims, AuthError> {
        let result = self.check(token, scope, run);
        if let Err(e) = result {
            self.metrics.auth_failed(e.failure());
        }
        result
    }

    fn check(
        &self,
        token: Option<&str>,
        scope: Scope,
        run: Option<&str>,
    ) -> Result<Claims, AuthError> {
        let token = token.filter(|t| !t.is_empty()).ok_or(AuthError::Missing)?;
        let now = self.clock.unix_secs();
        let claims = token::verify(token, &self.secret, now).or_else(|e| match &self.others {
            Some(others) => others.verify(token, now, e),
            None => Err(e),
        })?;
        if claims.scope != scope {
            return Err(AuthError::WrongScope);
        }
        if let Some(run) = run {
            if !claims.allows_run(run) {
                return Err(AuthError::WrongRun);
            }
        }
        Ok(claims)
    }
}

/// The token of an HTTP request: `Authorization: Bearer T`, else `?token=T`.
pub fn request_token<'a>(headers: &'a HeaderMap, query: Option<&'a str>) -> Option<&'a str> {
    headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .or(query)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use runwire_protocol::token::{TokenError, sign};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn verifier() -> Verifier {
        Verifier::new(SECRET, Clock::System, Arc::default())
    }

    fn token(scope: Scope, run: &str, ttl: i64) -> String {
        let exp = (Clock::System.unix_secs() as i64 + ttl) as u64;
        sign(
            &Claims {
                exp,
                run: Some(run.into()),
                scope,
                ..Claims::default()
            },
            SECRET,
        )
    }

    /// `token` opens run `r1` for subscribing and nothing else: run `r2` is `WrongRun`,
    /// publishing `WrongScope`.
    pub(crate) fn assert_subscribes_to_r1_only(v: &Verifier, token: &str) {
        assert!(v.verify(Some(token), Scope::Subscribe, Some("r1")).is_ok());
        assert_eq!(
            v.verify(Some(token), Scope::Subscribe, Some("r2")),
            Err(AuthError::WrongRun)
        );
        assert_eq!(
            v.verify(Some(token), Scope::Publish, Some("r1")),
            Err(AuthError::WrongScope)
        );
    }

    #[test]
    fn checks_scope_and_run() {
        let v = verifier();
        assert_subscribes_to_r1_only(&v, &token(Scope::Subscribe, "r1", 60));
        assert_eq!(
            v.verify(None, Scope::Subscribe, None),
            Err(AuthError::Missing)
        );
        let old = token(Scope::Subscribe, "r1", -60);
        assert_eq!(
            v.verify(Some(&old), Scope::Subscribe, None),
            Err(AuthError::Token(TokenError::Expired))
        );
        assert_eq!(v.metrics.auth_failures("expired"), 1);
        assert_eq!(v.metrics.auth_failures("wrong_run"), 1);
    }

    #[test]
    fn reads_bearer_then_query() {
        let mut h = HeaderMap::new();
        assert_eq!(request_token(&h, Some("q")), Some("q"));
        h.insert(AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(request_token(&h, Some("q")), Some("abc"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_huge_exp_is_capped_not_overflowed() {
        for c in [Clock::System, Clock::tokio()] {
            for exp in [u64::MAX, i64::MAX as u64, 9_200_000_000_000_000_000] {
                let at = c.expiry_instant(exp);
                assert_eq!(at - tokio::time::Instant::now(), FAR_FUTURE);
            }
            assert!(c.expiry_instant(0) <= tokio::time::Instant::now());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let c = Clock::tokio();
        let t0 = c.unix_secs();
        tokio::time::sleep(Duration::from_secs(100)).await;
        assert_eq!(c.unix_secs(), t0 + 100);
        let at = c.expiry_instant(t0 + 110);
        assert_eq!(
            at - tokio::time::Instant::now(),
            Duration::from_secs(10 + LEEWAY_SECS)
        );
    }
}
