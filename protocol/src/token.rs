//! Tokens: JWT (RFC 7519) signed with HS256 and the relay's shared secret.
//!
//! Any backend mints them with its usual JWT library (`docs/tokens.md`). Verification accepts
//! `HS256` only (`none` and every other `alg` are refused before the signature is looked at),
//! compares signatures in constant time, and allows 5 s of clock skew on `exp` and `nbf`.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Clock skew allowed on `exp` and `nbf`, in seconds.
pub const LEEWAY_SECS: u64 = 5;
/// Shortest secret the relay accepts, in bytes (HS256 wants at least 256 bits).
pub const MIN_SECRET_LEN: usize = 32;
/// Longest token the relay reads, in bytes.
pub const MAX_TOKEN_LEN: usize = 8 * 1024;
/// The `runs` entry that matches every run. For trusted backends only. In the singular `run` it
/// is not a wildcard (it names no run), so a backend that copies a requested run id into `run`
/// cannot be talked into minting a token for every run.
pub const ANY_RUN: &str = "*";

/// What a token allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Watch runs (WebSocket, SSE, run state). The default.
    #[default]
    Subscribe,
    /// Publish events to runs.
    Publish,
}

impl Scope {
    /// The claim value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe",
            Self::Publish => "publish",
        }
    }
}

/// A token's claims.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Expiry, Unix seconds. Required.
    pub exp: u64,
    /// Issued at, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not before, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// The user the token was minted for; shows up in relay logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// One run the token covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<String>,
    /// Several runs the token covers (together with `run`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<Vec<String>>,
    /// What the token allows.
    #[serde(default)]
    pub scope: Scope,
    /// Workspace id, for per-workspace limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ws: Option<String>,
}

impl Claims {
    /// Whether the token covers `run`.
    pub fn allows_run(&self, run: &str) -> bool {
        self.run.as_deref() == Some(run)
            || self.runs.iter().flatten().any(|r| r == run || r == ANY_RUN)
    }

    /// The runs named by `run` and `runs`.
    pub fn run_ids(&self) -> impl Iterator<Item = &str> {
        self.run
            .iter()
            .chain(self.runs.iter().flatten())
            .map(String::as_str)
    }

    /// The single run a one-run socket follows: `run`, else the only entry of `runs`.
    pub fn single_run(&self) -> Option<&str> {
        single_run(self.run_ids())
    }
}

/// The one run among a token's run ids (`run` and the entries of `runs`, as
/// [`Claims::run_ids`] gives them), leaving out [`ANY_RUN`]; `None` when there are none or
/// several. For holders of a token's run ids without the rest of its claims.
pub fn single_run<'a>(ids: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let mut ids = ids.into_iter().filter(|r| *r != ANY_RUN);
    match (ids.next(), ids.next()) {
        (Some(r), None) => Some(r),
        _ => None,
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts of JSON, or too long.
    #[error("malformed token")]
    Malformed,
    /// The header names an algorithm other than HS256 (including `none`).
    #[error("unsupported token algorithm: only HS256 is accepted")]
    UnsupportedAlg,
    /// The signature does not match.
    #[error("bad token signature")]
    BadSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("token not yet valid")]
    NotYetValid,
}

impl TokenError {
    /// A short label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::UnsupportedAlg => "unsupported_alg",
            Self::BadSignature => "bad_signature",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
        }
    }
}

#[derive(Deserialize)]
struct Header<'a> {
    #[serde(borrow)]
    alg: alloc::borrow::Cow<'a, str>,
}

fn mac(secret: &[u8]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length")
}

/// Parses a JWT header or claims set, which RFC 7515 and RFC 7519 require to be a JSON object:
/// serde would otherwise read a struct from an array too, field by field in order.
fn json_object<'a, T: Deserialize<'a>>(json: &'a [u8]) -> Result<T, TokenError> {
    if json.trim_ascii_start().first() != Some(&b'{') {
        return Err(TokenError::Malformed);
    }
    // Parsed as text: serde_json skips the fields it ignores without checking their UTF-8, so
    // a header or claims that are not valid JSON text would otherwise pass.
    let text = core::str::from_utf8(json).map_err(|_| TokenError::Malformed)?;
    serde_json::from_str(text).map_err(|_| TokenError::Malformed)
}

/// Signs `claims` into a compact JWT.
pub fn sign(claims: &Claims, secret: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).expect("claims serialize"));
    let signing_input = format!("{header}.{payload}");
    let mut m = mac(secret);
    m.update(signing_input.as_bytes());
    let sig = URL_SAFE_NO_PAD.encode(m.finalize().into_bytes());
    format!("{signing_input}.{sig}")
}

/// Verifies `token` against `secret` at time `now` (Unix seconds) and returns its claims.
///
/// Checks, in order: shape, algorithm, signature, then `exp` and `nbf` with [`LEEWAY_SECS`].
/// Whether the token covers a run or a scope is the caller's question ([`Claims::allows_run`]).
pub fn verify(token: &str, secret: &[u8], now: u64) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header_b64), Some(payload_b64), Some(sig_b64), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let header_json = URL_SAFE_NO_PAD
        .decode(header_b64)
        .map_err(|_| TokenError::Malformed)?;
    let header: Header<'_> = json_object(&header_json)?;
    if header.alg != "HS256" {
        return Err(TokenError::UnsupportedAlg);
    }
    let sig = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .map_err(|_| TokenError::Malformed)?;
    let mut m = mac(secret);
    // The signing input is `header.payload`: the token up to its second dot.
    m.update(&token.as_bytes()[..header_b64.len() + 1 + payload_b64.len()]);
    m.verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
    let payload = URL_SAFE_NO_PAD
        .decode(payload_b64)
        .map_err(|_| TokenError::Malformed)?;
    let claims: Claims = json_object(&payload)?;
    if claims.exp.saturating_add(LEEWAY_SECS) <= now {
        return Err(TokenError::Expired);
    }
    if claims
        .nbf
        .is_some_and(|nbf| nbf > now.saturating_add(LEEWAY_SECS))
    {
        return Err(TokenError::NotYetValid);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::{format, vec::Vec};

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
    const NOW: u64 = 1_800_000_000;

    fn claims() -> Claims {
        Claims {
            exp: NOW + 60,
            iat: Some(NOW),
            run: Some("r1".into()),
            ..Claims::default()
        }
    }

    fn jwt_encode(alg: jsonwebtoken::Algorithm, claims: &impl Serialize, secret: &[u8]) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(alg),
            claims,
            &jsonwebtoken::EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    #[test]
    fn round_trip() {
        let t = sign(&claims(), SECRET);
        assert_eq!(verify(&t, SECRET, NOW).unwrap(), claims());
    }

    #[test]
    fn accepts_tokens_of_an_independent_library() {
        let t = jwt_encode(jsonwebtoken::Algorithm::HS256, &claims(), SECRET);
        assert_eq!(verify(&t, SECRET, NOW).unwrap(), claims());
    }

    #[test]
    fn independent_library_accepts_ours() {
        let t = sign(&claims(), SECRET);
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        v.validate_exp = false;
        v.required_spec_claims.clear();
        let got =
            jsonwebtoken::decode::<Claims>(&t, &jsonwebtoken::DecodingKey::from_secret(SECRET), &v)
                .unwrap();
        assert_eq!(got.claims, claims());
    }

    #[test]
    fn refuses_other_algorithms() {
        let t = jwt_encode(jsonwebtoken::Algorithm::HS384, &claims(), SECRET);
        assert_eq!(verify(&t, SECRET, NOW), Err(TokenError::UnsupportedAlg));
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims()).unwrap());
        for t in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            let e = verify(&t, SECRET, NOW).unwrap_err();
            assert!(
                matches!(e, TokenError::UnsupportedAlg | TokenError::Malformed),
                "{e:?}"
            );
        }
        assert_eq!(
            verify(&format!("{header}.{payload}."), SECRET, NOW),
            Err(TokenError::UnsupportedAlg)
        );
    }

    #[test]
    fn refuses_bad_signatures_and_garbage() {
        let t = sign(&claims(), b"another secret that is long enough!!");
        assert_eq!(verify(&t, SECRET, NOW), Err(TokenError::BadSignature));
        // a tampered payload
        let t = sign(&claims(), SECRET);
        let mut parts: Vec<&str> = t.split('.').collect();
        let mut other = claims();
        other.run = Some("r2".into());
        let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).unwrap());
        parts[1] = &forged;
        assert_eq!(
            verify(&parts.join("."), SECRET, NOW),
            Err(TokenError::BadSignature)
        );
        for junk in ["", "a", "a.b", "a.b.c", "a.b.c.d", "....", "é.é.é"] {
            assert_eq!(
                verify(junk, SECRET, NOW),
                Err(TokenError::Malformed),
                "{junk}"
            );
        }
        let huge = "a".repeat(MAX_TOKEN_LEN + 1);
        assert_eq!(verify(&huge, SECRET, NOW), Err(TokenError::Malformed));
    }

    #[test]
    fn checks_time_with_leeway() {
        let mut c = claims();
        c.exp = NOW - LEEWAY_SECS + 1;
        assert!(verify(&sign(&c, SECRET), SECRET, NOW).is_ok());
        c.exp = NOW - LEEWAY_SECS;
        assert_eq!(
            verify(&sign(&c, SECRET), SECRET, NOW),
            Err(TokenError::Expired)
        );
        let mut c = claims();
        c.nbf = Some(NOW + LEEWAY_SECS);
        assert!(verify(&sign(&c, SECRET), SECRET, NOW).is_ok());
        c.nbf = Some(NOW + LEEWAY_SECS + 1);
        assert_eq!(
            verify(&sign(&c, SECRET), SECRET, NOW),
            Err(TokenError::NotYetValid)
        );
    }

    /// Signs arbitrary header and payload bytes, as a forger with the secret's help would.
    fn sign_raw(header: &[u8], payload: &[u8]) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(payload)
        );
        let mut m = mac(SECRET);
        m.update(input.as_bytes());
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(m.finalize().into_bytes())
        )
    }

    #[test]
    fn header_and_claims_must_be_valid_utf8_even_in_ignored_fields() {
        let claims = format!(r#"{{"exp":{}}}"#, NOW + 60);
        let good = sign_raw(br#"{"alg":"HS256","typ":"JWT"}"#, claims.as_bytes());
        assert!(verify(&good, SECRET, NOW).is_ok());
        let bad_header = sign_raw(
            b"{\"alg\":\"HS256\",\"typ\":\"\xacJWT\"}",
            claims.as_bytes(),
        );
        assert_eq!(verify(&bad_header, SECRET, NOW), Err(TokenError::Malformed));
        let mut bad_claims = format!(r#"{{"exp":{},"x":""#, NOW + 60).into_bytes();
        bad_claims.extend_from_slice(b"\xff\"}");
        let bad_claims = sign_raw(br#"{"alg":"HS256"}"#, &bad_claims);
        assert_eq!(verify(&bad_claims, SECRET, NOW), Err(TokenError::Malformed));
    }

    #[test]
    fn header_and_claims_must_be_objects() {
        let header = br#"{"alg":"HS256","typ":"JWT"}"#;
        let payload = serde_json::to_vec(&claims()).unwrap();
        assert!(verify(&sign_raw(header, &payload), SECRET, NOW).is_ok());
        assert!(verify(&sign_raw(b" \n{\"alg\":\"HS256\"}", &payload), SECRET, NOW).is_ok());
        // The same fields in order, as arrays: serde would read them positionally.
        let array_claims = format!(
            r#"[{}, {NOW}, null, null, "r1", null, "subscribe", null]"#,
            NOW + 60
        );
        for (h, p) in [
            (&br#"["HS256"]"#[..], &payload[..]),
            (&br#" ["HS256","JWT"]"#[..], &payload[..]),
            (&header[..], array_claims.as_bytes()),
            (&header[..], b"\"r1\""),
            (&header[..], b"null"),
            (&b"\"HS256\""[..], &payload[..]),
        ] {
            assert_eq!(
                verify(&sign_raw(h, p), SECRET, NOW),
                Err(TokenError::Malformed),
                "{:?} {:?}",
                core::str::from_utf8(h),
                core::str::from_utf8(p)
            );
        }
    }

    #[test]
    fn huge_negative_and_float_exp() {
        let header = br#"{"alg":"HS256","typ":"JWT"}"#;
        // The largest exp there is: valid, and far in the future.
        let t = sign_raw(header, format!(r#"{{"exp":{}}}"#, u64::MAX).as_bytes());
        assert_eq!(verify(&t, SECRET, NOW).unwrap().exp, u64::MAX);
        let t = sign_raw(header, br#"{"exp":9223372036854775807}"#);
        assert!(verify(&t, SECRET, NOW).is_ok());
        for exp in [
            "-1",
            "-9223372036854775808",
            "1.8e9",
            "1800000060.5",
            "1e300",
            "18446744073709551616",
            "\"1800000060\"",
            "null",
            "true",
        ] {
            let t = sign_raw(header, format!(r#"{{"exp":{exp}}}"#).as_bytes());
            assert_eq!(
                verify(&t, SECRET, NOW),
                Err(TokenError::Malformed),
                "exp {exp}"
            );
        }
        let t = sign_raw(
            header,
            format!(r#"{{"exp":{},"nbf":{}}}"#, NOW + 60, u64::MAX).as_bytes(),
        );
        assert_eq!(verify(&t, SECRET, NOW), Err(TokenError::NotYetValid));
    }

    #[test]
    fn missing_exp_is_malformed() {
        let t = jwt_encode(
            jsonwebtoken::Algorithm::HS256,
            &serde_json::json!({"run":"r1"}),
            SECRET,
        );
        assert_eq!(verify(&t, SECRET, NOW), Err(TokenError::Malformed));
    }

    #[test]
    fn runs_and_scope() {
        let c: Claims =
            serde_json::from_str(r#"{"exp":1,"run":"a","runs":["b","c"],"scope":"publish"}"#)
                .unwrap();
        assert!(c.allows_run("a") && c.allows_run("c") && !c.allows_run("d"));
        assert_eq!(c.scope, Scope::Publish);
        assert_eq!(c.single_run(), None);
        let c: Claims = serde_json::from_str(r#"{"exp":1,"runs":["*"]}"#).unwrap();
        assert!(c.allows_run("anything"));
        assert_eq!(c.scope, Scope::Subscribe);
        assert_eq!(c.single_run(), None);
        let c: Claims = serde_json::from_str(r#"{"exp":1,"runs":["x"]}"#).unwrap();
        assert_eq!(c.single_run(), Some("x"));
        // The singular claim names one run: "*" there is no wildcard.
        let c: Claims = serde_json::from_str(r#"{"exp":1,"run":"*"}"#).unwrap();
        assert!(!c.allows_run("anything"));
        assert_eq!(c.single_run(), None);
        assert!(serde_json::from_str::<Claims>(r#"{"exp":1,"scope":"admin"}"#).is_err());
    }
}
