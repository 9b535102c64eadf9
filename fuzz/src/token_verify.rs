//! Token verification. Two inputs in one: the bytes as a whole token, and the bytes cut into a
//! header and a payload that are signed with the secret, so the fuzzer also reaches the checks
//! after the signature (claims shape, `exp`, `nbf`).
//!
//! Invariants: never panics; an accepted token is not expired, not early, and its header and
//! claims are JSON objects (RFC 7515/7519); the same token under another secret is refused;
//! claims re-signed by `sign` verify to the same claims.
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use runwire_protocol::token::{Claims, LEEWAY_SECS, TokenError, sign, verify};
use sha2::Sha256;

const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const OTHER: &[u8] = b"fedcba9876543210fedcba9876543210";
const NOW: u64 = 1_800_000_000;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn decode(part: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD
        .decode(part)
        .expect("an accepted token is base64url")
}

/// The HS256 signature of `input`, computed here rather than by the crate under test.
fn hs256(input: &str, secret: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
    mac.update(input.as_bytes());
    b64(&mac.finalize().into_bytes())
}

fn check(token: &str, result: Result<Claims, TokenError>) {
    let Ok(claims) = result else {
        return;
    };
    assert!(
        claims.exp.saturating_add(LEEWAY_SECS) > NOW,
        "expired token accepted: {token}"
    );
    assert!(
        claims.nbf.is_none_or(|nbf| nbf <= NOW + LEEWAY_SECS),
        "early token accepted: {token}"
    );
    let mut parts = token.split('.');
    for part in [parts.next(), parts.next()] {
        let json = decode(part.expect("an accepted token has three parts"));
        // Valid JSON text (RFC 8259: UTF-8, and numbers of any size — serde_json's `Value` could
        // not hold `1e999`, so the syntax is checked without building one) that is an object.
        let text = std::str::from_utf8(&json).unwrap_or_else(|e| {
            panic!("accepted a token whose header or claims are not UTF-8 ({e}): {token}")
        });
        serde_json::from_str::<serde::de::IgnoredAny>(text).unwrap_or_else(|e| {
            panic!("accepted a token whose header or claims are not JSON ({e}): {token}")
        });
        assert!(
            text.trim_start_matches([' ', '\t', '\n', '\r'])
                .starts_with('{'),
            "accepted a token whose header or claims are {text}: {token}"
        );
    }
    assert!(
        verify(token, OTHER, NOW).is_err(),
        "token accepted under another secret: {token}"
    );
    let again = sign(&claims, SECRET);
    assert_eq!(
        verify(&again, SECRET, NOW),
        Ok(claims),
        "re-signed claims: {again}"
    );
}

/// Runs the target on one input.
pub fn run(data: &[u8]) {
    if let Ok(token) = std::str::from_utf8(data) {
        check(token, verify(token, SECRET, NOW));
    }
    // `header \0 payload`, signed.
    let mut halves = data.splitn(2, |&b| b == 0);
    let (Some(header), Some(payload)) = (halves.next(), halves.next()) else {
        return;
    };
    let input = format!("{}.{}", b64(header), b64(payload));
    let token = format!("{input}.{}", hs256(&input, SECRET));
    check(&token, verify(&token, SECRET, NOW));
}
