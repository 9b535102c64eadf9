//! The `runwire` command: `serve`, `demo`, `token`, `publish`.

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use runwire_protocol::token::{Claims, MIN_SECRET_LEN, Scope, sign};
use runwire_relay::auth::Clock;
use runwire_relay::logging;
use runwire_relay::shutdown::shutdown_signal;
use runwire_relay::{AppState, Config, RunError};
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
    /// How log lines are written on stderr: `text` for people, `json` (one object per line) for
    /// log pipelines.
    #[arg(
        long,
        global = true,
        env = "RUNWIRE_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    log_format: logging::LogFormat,
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
    /// The relay's base URL, `http://` or `https://` (trusting the system's roots).
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
    logging::subscriber_as(
        cli.log_format,
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
                match random_secret() {
                    Ok(secret) => config.secret = Some(secret),
                    Err(e) => return fail(1, &format!("cannot make a secret: {e}")),
                }
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
    let mut url = match reqwest::Url::parse(&args.url) {
        Ok(url) if matches!(url.scheme(), "http" | "https") => url,
        _ => return fail(2, "RUNWIRE_URL must be an http:// or https:// URL"),
    };
    // The run is a path segment of its own, escaped as one, under whatever path the URL has.
    match url.path_segments_mut() {
        Ok(mut path) => {
            path.pop_if_empty()
                .extend(["v1", "runs", args.run.as_str(), "events"]);
        }
        Err(()) => return fail(2, "RUNWIRE_URL must be an http:// or https:// URL"),
    }
    let body = format!(
        r#"{{"event":{},"data":{}}}"#,
        serde_json::Value::from(args.event),
        args.data
    );
    let client = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
    {
        Ok(client) => client,
        Err(e) => return fail(1, &format!("cannot make an HTTP client: {}", chain(&e))),
    };
    let sent = client
        .post(url)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await;
    let answer = match sent {
        Ok(response) => {
            let status = response.status();
            response.text().await.map(|body| (status, body))
        }
        Err(e) => Err(e),
    };
    let (status, body) = match answer {
        Ok(answer) => answer,
        Err(e) if e.is_timeout() => {
            return fail(1, &format!("{} did not answer in 30 s", args.url));
        }
        Err(e) => return fail(1, &format!("cannot reach {}: {}", args.url, chain(&e))),
    };
    println!("{body}");
    if status.is_success() {
        ExitCode::SUCCESS
    } else {
        eprintln!("error: the relay answered {}", status.as_u16());
        ExitCode::FAILURE
    }
}

/// An error with its causes, which for a refused TLS handshake say why.
fn chain(e: &dyn std::error::Error) -> String {
    let causes = std::iter::successors(e.source(), |cause| cause.source());
    causes.fold(e.to_string(), |text, cause| format!("{text}: {cause}"))
}

/// A secret for `runwire demo` when none is given: 64 hex digits from the OS random source.
fn random_secret() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_secrets_are_random_and_long_enough() {
        let (a, b) = (random_secret().unwrap(), random_secret().unwrap());
        assert_eq!(a.len(), 64);
        assert!(a.len() >= MIN_SECRET_LEN);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn the_log_format_is_a_flag_of_every_command() {
        let cli = Cli::try_parse_from(["runwire", "serve", "--log-format", "json"]).unwrap();
        assert_eq!(cli.log_format, logging::LogFormat::Json);
        let cli = Cli::try_parse_from(["runwire", "--log-format", "json", "token", "--run", "r"])
            .unwrap();
        assert_eq!(cli.log_format, logging::LogFormat::Json);
        assert!(Cli::try_parse_from(["runwire", "serve", "--log-format", "xml"]).is_err());
    }
}
