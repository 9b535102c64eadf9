//! Verifies a token the way the relay does and prints its claims as JSON.
//!
//! ```text
//! cargo run -q -p runwire-protocol --example verify_token -- SECRET TOKEN \
//!     [--run RUN] [--scope subscribe|publish] [--sub SUB] [--ttl SECS]
//! ```
//!
//! Exits 0 when the token verifies now and meets every `--` expectation, 1 otherwise (with the
//! reason on stderr), 2 on bad usage. `scripts/test-docs.sh` uses it to check that the token
//! examples in `docs/tokens.md` mint tokens the relay accepts.

#[cfg(feature = "token")]
fn main() {
    use std::process::exit;
    use std::time::{SystemTime, UNIX_EPOCH};

    use runwire_protocol::token;

    fn usage() -> ! {
        eprintln!(
            "usage: verify_token SECRET TOKEN [--run RUN] [--scope SCOPE] [--sub SUB] [--ttl SECS]"
        );
        exit(2)
    }

    let mut args = std::env::args().skip(1);
    let (Some(secret), Some(tok)) = (args.next(), args.next()) else {
        usage()
    };
    let (mut run, mut scope, mut sub, mut ttl) = (None, None, None, None);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--run" => run = Some(value),
            "--scope" => scope = Some(value),
            "--sub" => sub = Some(value),
            "--ttl" => ttl = Some(value.parse::<u64>().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs();
    let claims = match token::verify(tok.trim(), secret.as_bytes(), now) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("token refused: {e}");
            exit(1)
        }
    };
    println!(
        "{}",
        serde_json::to_string(&claims).expect("claims serialize")
    );

    let mut problems = Vec::new();
    if let Some(run) = run.filter(|r| !claims.allows_run(r)) {
        problems.push(format!("does not cover run {run:?}"));
    }
    if let Some(scope) = scope.filter(|s| claims.scope.as_str() != s) {
        problems.push(format!(
            "scope is {:?}, expected {scope:?}",
            claims.scope.as_str()
        ));
    }
    if let Some(sub) = sub.filter(|s| claims.sub.as_deref() != Some(s.as_str())) {
        problems.push(format!("sub is {:?}, expected {sub:?}", claims.sub));
    }
    if let Some(ttl) = ttl {
        match claims.iat {
            Some(iat) if claims.exp.checked_sub(iat) == Some(ttl) => {}
            Some(iat) => problems.push(format!(
                "exp - iat is {}, expected {ttl}",
                i128::from(claims.exp) - i128::from(iat)
            )),
            None => problems.push("no iat claim".to_owned()),
        }
    }
    if !problems.is_empty() {
        eprintln!("token verified but {}", problems.join("; "));
        exit(1)
    }
}

#[cfg(not(feature = "token"))]
fn main() {
    eprintln!("verify_token needs the `token` feature of runwire-protocol");
    std::process::exit(2)
}
