//! The `runwire` command: `serve`, `demo`, `token`, `publish`.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use runwire_protocol::token::{Claims, MIN_SECRET_LEN, Scope, sign};
use runwire_relay::auth::Clock;
use runwire_relay::logging;
use runwire_relay::shutdown::shutdown_signal;
use runwire_relay::{AppState, Config, RunError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tracing_subscriber::util::SubscriberInitExt as _;

#[derive(Parser)]
#[command(
    name = "runwire",
    version,
    about = "Live workflow-run events for browsers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the relay.
    Serve(Config),
    /// Run the relay with simulated workflow runs and the demo page.
    Demo(Config),
    /// Print a token signed with the secret.
    Token(TokenArgs),
    /// Publish one event to a relay over HTTP.
    Publish(PublishArgs),
}

#[derive(Args)]
struct TokenArgs {
    /// The run the token covers.
    #[arg(long, required_unless_present = "runs")]
    run: Option<String>,
    /// Several runs, comma-separated (`*` for every run: trusted backends only).
    #[arg(long, value_delimiter = ',')]
    runs: Vec<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 300)]
    ttl: u64,
    /// What the token allows.
    #[arg(long, value_enum, default_value = "subscribe")]
    scope: ScopeArg,
    /// Workspace id (for per-workspace limits).
    #[arg(long)]
    workspace: Option<String>,
    /// User id, shown in relay logs.
    #[arg(long)]
    sub: Option<String>,
    /// Shared HS256 secret.
    #[arg(long, env = "RUNWIRE_SECRET", hide_env_values = true)]
    secret: Option<String>,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum ScopeArg {
    Subscribe,
    Publish,
}

#[derive(Args)]
struct PublishArgs {
    /// The run to publish to.
    #[arg(long)]
    run: String,
    /// The event name, e.g. node.started.
    #[arg(long)]
    event: String,
    /// The event's data, a JSON object.
    #[arg(long, default_value = "{}")]
    data: String,
    /// The relay's base URL (http only; put TLS in front of the relay).
    #[arg(long, env = "RUNWIRE_URL", default_value = "http://127.0.0.1:3101")]
    url: String,
    /// A publish token; without one, a short-lived token is signed with the secret.
    #[arg(long, env = "RUNWIRE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Shared HS256 secret, used when no token is given.
    #[arg(long, env = "RUNWIRE_SECRET", hide_env_values = true)]
    secret: Option<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::subscriber(
        logging::env_filter(),
        std::io::stderr,
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    )
    .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => return fail(1, &format!("cannot start the runtime: {e}")),
    };
    match cli.command {
        Command::Serve(config) => runtime.block_on(serve(config)),
        Command::Demo(mut config) => {
            config.demo = true;
            if config.secret.is_none() {
                config.secret = Some(random_secret());
            }
            runtime.block_on(serve(config))
        }
        Command::Token(args) => token(args),
        Command::Publish(args) => runtime.block_on(publish(args)),
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(code)
}

async fn serve(mut config: Config) -> ExitCode {
    if let Err(e) = runwire_relay::compat::apply_env(&mut config, |name| std::env::var(name).ok()) {
        return fail(2, &e.to_string());
    }
    if let Err(e) = config.validate() {
        return fail(2, &e.to_string());
    }
    let listener = match tokio::net::TcpListener::bind(config.addr).await {
        Ok(l) => l,
        Err(e) => return fail(1, &format!("cannot listen on {}: {e}", config.addr)),
    };
    let addr = listener.local_addr().map_or(config.addr, |a| a);
    let demo = config.demo;
    // Connect to the broker before announcing the address: a relay that prints it is ready.
    let state = match AppState::connect(config, Clock::System).await {
        Ok(state) => state,
        Err(RunError::Config(e)) => return fail(2, &e.to_string()),
        Err(e) => return fail(1, &e.to_string()),
    };
    // The first stdout line is for people and for scripts that start a relay on port 0.
    println!("listening on http://{addr}");
    if demo {
        println!("runwire demo: open http://{addr}/ in a browser");
    }
    tracing::info!(%addr, broker = state.broker.kind(), demo, "relay started");
    match runwire_relay::serve(listener, state, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(1, &e.to_string()),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

fn checked_secret(secret: Option<&str>) -> Result<&str, String> {
    match secret {
        None => Err("a secret is required: pass --secret or set RUNWIRE_SECRET".into()),
        Some(s) if s.len() < MIN_SECRET_LEN => Err(format!(
            "the secret is {} bytes; it must be at least {MIN_SECRET_LEN} bytes",
            s.len()
        )),
        Some(s) => Ok(s),
    }
}

fn token(args: TokenArgs) -> ExitCode {
    let secret = match checked_secret(args.secret.as_deref()) {
        Ok(s) => s,
        Err(e) => return fail(2, &e),
    };
    let claims = Claims {
        exp: now() + args.ttl,
        iat: Some(now()),
        sub: args.sub,
        run: args.run,
        runs: (!args.runs.is_empty()).then_some(args.runs),
        scope: match args.scope {
            ScopeArg::Subscribe => Scope::Subscribe,
            ScopeArg::Publish => Scope::Publish,
        },
        ws: args.workspace,
        ..Claims::default()
    };
    println!("{}", sign(&claims, secret.as_bytes()));
    ExitCode::SUCCESS
}

async fn publish(args: PublishArgs) -> ExitCode {
    if serde_json::from_str::<serde_json::Value>(&args.data).is_err() {
        return fail(2, "--data must be JSON");
    }
    let token = match args.token {
        Some(t) => t,
        None => match checked_secret(args.secret.as_deref()) {
            Ok(secret) => sign(
                &Claims {
                    exp: now() + 60,
                    iat: Some(now()),
                    run: Some(args.run.clone()),
                    scope: Scope::Publish,
                    ..Claims::default()
                },
                secret.as_bytes(),
            ),
            Err(e) => {
                return fail(
                    2,
                    &format!("{e} (or pass a publish token in RUNWIRE_TOKEN)"),
                );
            }
        },
    };
    let Some(authority) = args
        .url
        .strip_prefix("http://")
        .map(|r| r.trim_end_matches('/'))
    else {
        return fail(
            2,
            "RUNWIRE_URL must start with http:// (use curl for https)",
        );
    };
    let body = format!(
        r#"{{"event":{},"data":{}}}"#,
        serde_json::Value::from(args.event),
        args.data
    );
    let request = format!(
        "POST /v1/runs/{run}/events HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{body}",
        run = args.run,
        len = body.len(),
    );
    let response = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        stream.write_all(request.as_bytes()).await?;
        let mut out = Vec::new();
        stream.read_to_end(&mut out).await?;
        std::io::Result::Ok(String::from_utf8_lossy(&out).into_owned())
    };
    let response = match tokio::time::timeout(std::time::Duration::from_secs(30), response).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return fail(1, &format!("cannot reach {}: {e}", args.url)),
        Err(_) => return fail(1, &format!("{} did not answer in 30 s", args.url)),
    };
    let status: u16 = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    println!("{body}");
    if (200..300).contains(&status) {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: the relay answered {status}");
        ExitCode::FAILURE
    }
}

/// A secret for `runwire demo` when none is given: 64 hex digits from the process's
/// randomly keyed hashers.
fn random_secret() -> String {
    use std::hash::{BuildHasher, Hasher};
    (0..4)
        .map(|i| {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(i);
            h.write_u64(now() ^ u64::from(std::process::id()));
            format!("{:016x}", h.finish())
        })
        .collect()
}
