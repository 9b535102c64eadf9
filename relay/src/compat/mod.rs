//! Compatibility layers: the dialects of the live-run systems runwire replaces, translated at the
//! relay's edges into runwire's own events and tokens, so that their workers, token routes and
//! environments work unchanged while browsers move to the SDK. The hub, the brokers and the
//! protocol know nothing of them.
//!
//! A deployment turns layers on with `--compat NAME` (repeatable) or `RUNWIRE_COMPAT=NAME,…`:
//! - [`ws_relay`] (`ws-relay`): the Node `ws` + Redis relay: `workflow-run:<run>` messages
//!   `{"type":"node"|"workflow",…}`, and its two-part `v:1` tokens.
//! - [`event_broadcaster`] (`event-broadcaster`): the Fastify EventBroadcaster's
//!   `{type:"execution:…"|"agent:…",executionId,workflowId,timestamp,data}` events.
//! - [`socketio_gateway`] (`socketio-gateway`): the Socket.IO execution gateway's `status`, `log`,
//!   `result`, `error` and `nodeStatus` emits.
//! - [`sse_stream`] (`sse-stream`): the SSE plan's `execution:<run>:events` messages
//!   `{"event","execution_id","node_key","data","timestamp"}`.
//!
//! Each layer maps a message in its system's shape to one [`NewEvent`], or says the message is not
//! in its shape (`None`), and the next layer, then runwire's own rules, are tried. A message a
//! layer claims but cannot map (a node message without a node id, an unknown status) becomes a
//! `custom` event with the message as its data: it is kept, and it never ends a run. A terminal
//! message whose fields do not fit the event's shape still ends the run, with the message kept
//! whole under `payload` (see [`fit`]). `docs/migrating.md` documents every table.

pub mod event_broadcaster;
pub mod socketio_gateway;
pub mod sse_stream;
pub mod ws_relay;

use std::sync::Arc;

use axum::Router;
use axum::extract::{FromRequestParts, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use runwire_protocol::RunEvent;
use runwire_protocol::token::{self, Claims, MIN_SECRET_LEN, TokenError};
use serde_json::{Map, Value};

use crate::auth::OtherKeys;
use crate::broker::redis::RedisConfig;
use crate::broker::redis::ingest::{CUSTOM_EVENT, ForeignMessages};
use crate::broker::{Event, NewEvent};
use crate::config::{Config, ConfigError};
use crate::error::ApiError;
use crate::state::AppState;
use crate::transport::ApiQuery;
use crate::transport::extract::AllowedOrigin;
use crate::transport::http::{MAX_EVENTS_PER_PUBLISH, OtherBodies};
use crate::transport::subscription::{Emit, NeedsResync, Subscription};
use crate::transport::ws::upgrade::Upgrade;
use crate::transport::ws::{MAX_INBOUND_FRAME, WsQuery};

/// One replaced system, named as `--compat` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Layer {
    /// The Node `ws` + Redis relay (`/ws/executions`, `workflow-run:*`, `v:1` tokens).
    WsRelay,
    /// The Fastify EventBroadcaster (`/api/ws`, `execution:*` / `agent:*` events).
    EventBroadcaster,
    /// The Socket.IO execution gateway (`status`, `log`, `result`, `error`, `nodeStatus`).
    SocketioGateway,
    /// The SSE streaming plan (`execution:*:events`, `/api/v1/workspaces/…/stream`).
    SseStream,
}

impl Layer {
    const ALL: [Layer; 4] = [
        Self::WsRelay,
        Self::EventBroadcaster,
        Self::SocketioGateway,
        Self::SseStream,
    ];

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// The layers a relay runs with: a small set, copied into whatever needs to ask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Layers(u8);

impl Layers {
    /// The set of `layers`.
    pub fn of(layers: &[Layer]) -> Self {
        Self(layers.iter().fold(0, |bits, l| bits | l.bit()))
    }

    /// Whether `layer` is on.
    pub fn contains(self, layer: Layer) -> bool {
        self.0 & layer.bit() != 0
    }

    /// Whether no layer is on.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The Redis Pub/Sub patterns ingested without an explicit `--ingest` when these layers are
    /// on and a Redis is configured: where the replaced systems' workers publish.
    pub fn ingest_patterns(self) -> Vec<&'static str> {
        let mut patterns = Vec::new();
        if self.contains(Layer::WsRelay) {
            patterns.push(ws_relay::CHANNEL_PATTERN);
        }
        if self.contains(Layer::SseStream) {
            patterns.push(sse_stream::CHANNEL_PATTERN);
        }
        patterns
    }
}

/// The runwire default of `--addr`, which the replaced systems' address variables may replace.
const DEFAULT_ADDR: &str = "127.0.0.1:3101";

/// Applies the replaced systems' environment names as fallbacks for runwire's own, when a layer is
/// on; `env` reads a variable. runwire's own names win: `--redis` / `RUNWIRE_REDIS_URL` over
/// `REDIS_URL`, then `UPSTASH_REDIS_URL`, then `REDIS_HOST` + `REDIS_PORT` (default 6379);
/// `--addr` / `RUNWIRE_ADDR` over `REALTIME_HOST` + `REALTIME_PORT` / `PORT`, where the host
/// defaults to all interfaces (`0.0.0.0`) and the port to 3101, as the Node relay's did. Logs
/// which names were used; fails on an address it cannot read.
pub fn apply_env(
    config: &mut Config,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Vec<String>, ConfigError> {
    let mut used = Vec::new();
    if config.compat.is_empty() {
        return Ok(used);
    }
    let var = |name: &str| env(name).filter(|v| !v.trim().is_empty());
    if config.redis.is_none() {
        let from = if let Some(url) = var("REDIS_URL") {
            Some(("REDIS_URL", url))
        } else if let Some(url) = var("UPSTASH_REDIS_URL") {
            Some(("UPSTASH_REDIS_URL", url))
        } else {
            var("REDIS_HOST").map(|host| {
                let port = var("REDIS_PORT").unwrap_or_else(|| "6379".into());
                ("REDIS_HOST/REDIS_PORT", format!("redis://{host}:{port}"))
            })
        };
        if let Some((name, url)) = from {
            config.redis = Some(url);
            used.push(name.to_owned());
        }
    }
    let addr_given = var("RUNWIRE_ADDR").is_some() || config.addr.to_string() != DEFAULT_ADDR;
    let host = var("REALTIME_HOST");
    let port = var("REALTIME_PORT")
        .map(|p| ("REALTIME_PORT", p))
        .or_else(|| var("PORT").map(|p| ("PORT", p)));
    if !addr_given && (host.is_some() || port.is_some()) {
        let port_text = port.as_ref().map_or("3101", |(_, p)| p.as_str());
        let port_num: u16 = port_text.trim().parse().map_err(|_| {
            ConfigError::Address(format!(
                "{} is not a port: {port_text:?}",
                port.as_ref().map_or("PORT", |(n, _)| n)
            ))
        })?;
        let host_text = host.clone().unwrap_or_else(|| "0.0.0.0".into());
        // An IP address (or `localhost`): a name is not looked up, so start-up needs no DNS.
        let ip: std::net::IpAddr = match host_text.trim() {
            "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
            h => h.trim_matches(['[', ']']).parse().map_err(|_| {
                ConfigError::Address(format!(
                    "REALTIME_HOST {host_text:?} is not an IP address (or localhost)"
                ))
            })?,
        };
        let addr = std::net::SocketAddr::new(ip, port_num);
        config.addr = addr;
        if host.is_some() {
            used.push("REALTIME_HOST".to_owned());
        }
        if let Some((name, _)) = port {
            used.push(name.to_owned());
        }
    }
    for (name, secret) in [
        (
            "EXECUTION_STREAM_SIGNING_SECRET",
            &config.execution_stream_signing_secret,
        ),
        ("BETTER_AUTH_SECRET", &config.better_auth_secret),
    ] {
        if secret.is_some() {
            used.push(name.to_owned());
        }
    }
    if !used.is_empty() {
        tracing::info!(variables = ?used, "configuration taken from the replaced systems' environment");
    }
    Ok(used)
}

/// The secrets of the replaced systems' environment, when a layer is on: in the order tried.
fn legacy_secrets(config: &Config) -> impl Iterator<Item = &str> {
    let on = !config.compat.is_empty();
    [
        &config.execution_stream_signing_secret,
        &config.better_auth_secret,
    ]
    .into_iter()
    .filter_map(move |s| s.as_deref().filter(|s| on && !s.is_empty()))
}

/// The signing secret when `--secret` is not given: the first legacy secret long enough for HS256.
pub fn fallback_secret(config: &Config) -> Option<&str> {
    legacy_secrets(config).find(|s| s.len() >= MIN_SECRET_LEN)
}

/// Checks the verification-only secrets.
pub fn validate(config: &Config) -> Result<(), ConfigError> {
    match config
        .extra_secrets
        .iter()
        .find(|s| s.len() < MIN_SECRET_LEN)
    {
        Some(short) => Err(ConfigError::ShortExtraSecret(short.len())),
        None => Ok(()),
    }
}

/// What tokens are verified with besides the signing secret.
///
/// - JWTs: every `--extra-secret`, then the legacy secrets of at least 32 bytes (rotation: the
///   signing secret is tried first, then these in order).
/// - `v:1` tokens, with `ws-relay` on: the signing secret, the extra secrets and every legacy
///   secret, short ones included (with a warning, logged once at start-up).
#[derive(Clone, Default)]
pub struct TokenKeys {
    jwt: Vec<Arc<[u8]>>,
    legacy: Vec<Arc<[u8]>>,
}

impl std::fmt::Debug for TokenKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets themselves.
        f.debug_struct("TokenKeys")
            .field("jwt", &self.jwt.len())
            .field("legacy", &self.legacy.len())
            .finish()
    }
}

/// The [`TokenKeys`] of `config`; logs which secrets and formats are in use.
pub fn token_keys(config: &Config) -> TokenKeys {
    let primary = config
        .secret
        .as_deref()
        .or_else(|| fallback_secret(config))
        .unwrap_or_default();
    let mut keys = TokenKeys::default();
    let add = |list: &mut Vec<Arc<[u8]>>, s: &str| {
        if s != primary && !list.iter().any(|k| **k == *s.as_bytes()) {
            list.push(s.as_bytes().into());
        }
    };
    for s in config.extra_secrets.iter().map(String::as_str) {
        add(&mut keys.jwt, s);
    }
    for s in legacy_secrets(config).filter(|s| s.len() >= MIN_SECRET_LEN) {
        add(&mut keys.jwt, s);
    }
    if config.compat.contains(&Layer::WsRelay) {
        keys.legacy.push(primary.as_bytes().into());
        for s in config.extra_secrets.iter().map(String::as_str) {
            add(&mut keys.legacy, s);
        }
        for s in legacy_secrets(config) {
            if s.len() < MIN_SECRET_LEN {
                tracing::warn!(
                    bytes = s.len(),
                    "a legacy secret shorter than {MIN_SECRET_LEN} bytes verifies v:1 tokens only; \
                     replace it with a longer one (e.g. `openssl rand -hex 32`)"
                );
            }
            add(&mut keys.legacy, s);
        }
    }
    if config.secret.is_none() && fallback_secret(config).is_some() {
        tracing::info!("signing secret: taken from the replaced system's environment");
    }
    if !keys.jwt.is_empty() || !keys.legacy.is_empty() {
        tracing::info!(
            extra_jwt_secrets = keys.jwt.len(),
            legacy_token_secrets = keys.legacy.len(),
            "token verification"
        );
    }
    keys
}

impl OtherKeys for TokenKeys {
    /// Tries `token` with these keys after the signing secret refused it with `first`; the most
    /// telling refusal wins (a valid signature on an expired token says "expired").
    fn verify(&self, token: &str, now: u64, first: TokenError) -> Result<Claims, TokenError> {
        fn rank(e: TokenError) -> u8 {
            match e {
                TokenError::Malformed => 0,
                TokenError::UnsupportedAlg => 1,
                TokenError::BadSignature => 2,
                TokenError::Expired | TokenError::NotYetValid => 3,
            }
        }
        let mut refusal = first;
        let mut keep = |e: TokenError| {
            if rank(e) > rank(refusal) {
                refusal = e;
            }
        };
        // A refusal past the signature is final: another secret cannot make it valid.
        if rank(first) < 3 {
            for secret in &self.jwt {
                match token::verify(token, secret, now) {
                    Ok(claims) => return Ok(claims),
                    Err(e) => keep(e),
                }
            }
            if !self.legacy.is_empty() && token.split('.').count() == 2 {
                match ws_relay::verify_legacy_token(token, &self.legacy, now) {
                    Ok(claims) => return Ok(claims),
                    Err(e) => keep(e),
                }
            }
        }
        Err(refusal)
    }
}

/// Mounts the layers' browser endpoints on the relay's router: with `ws-relay`, `/ws/executions`
/// speaks the Node relay's wire format ([`ws_relay::serve_legacy`]) instead of runwire's; with
/// `event-broadcaster`, `/api/ws` and `/api/ws/health` ([`event_broadcaster::socket`]); with
/// `sse-stream`, the plan's SSE route ([`sse_stream::stream`]).
pub fn mount(mut router: Router<AppState>, state: &AppState) -> Router<AppState> {
    let layers = Layers::of(&state.config.compat);
    if layers.contains(Layer::SseStream) {
        router = router.route(
            "/api/v1/workspaces/{workspace}/executions/{execution}/stream",
            get(sse_stream::stream),
        );
    }
    if layers.contains(Layer::EventBroadcaster) {
        router = router
            .route("/api/ws", get(event_broadcaster::socket))
            .route("/api/ws/health", get(event_broadcaster::health));
    }
    if layers.contains(Layer::WsRelay) {
        router = router.layer(middleware::from_fn_with_state(
            state.clone(),
            legacy_executions,
        ));
    }
    router
}

/// Takes `/ws/executions` over from runwire's own handler.
async fn legacy_executions(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    if request.uri().path() != "/ws/executions" {
        return next.run(request).await;
    }
    let (mut parts, _body) = request.into_parts();
    if let Err(e) = AllowedOrigin::from_request_parts(&mut parts, &state).await {
        return e.into_response();
    }
    let query = match ApiQuery::<WsQuery>::from_request_parts(&mut parts, &state).await {
        Ok(ApiQuery(q)) => q,
        Err(e) => return e.into_response(),
    };
    let ws = match Upgrade::from_request_parts(&mut parts, &state).await {
        Ok(ws) => ws,
        Err(e) => return e.into_response(),
    };
    ws.on_upgrade(MAX_INBOUND_FRAME, move |rx, tx| {
        tokio::spawn(ws_relay::serve_legacy(state, tx, rx, query.token));
    })
}

/// Gives the Redis broker the layers' message shapes, and ingests where the layers' workers
/// publish (unless `--ingest` already names the pattern).
pub fn configure_redis(layers: &[Layer], redis: &mut RedisConfig) {
    let layers = Layers::of(layers);
    redis.foreign_messages = foreign_messages(layers);
    for pattern in layers.ingest_patterns() {
        if !redis.ingest.iter().any(|p| p == pattern) {
            redis.ingest.push(pattern.to_owned());
        }
    }
}

/// Folds a live event into a compatibility stream's subscription as runwire's own transports
/// do: when the event is to be written (it joined `out`; a replay may have sent it already), the
/// time since its publish counts in `runwire_delivery_latency_seconds`. `Err`: the subscription
/// needs a fresh snapshot.
pub(crate) fn on_live_event(
    state: &AppState,
    sub: &mut Subscription,
    ev: &Arc<Event>,
    out: &mut Vec<Emit>,
) -> Result<(), NeedsResync> {
    let before = out.len();
    sub.on_event(ev, out)?;
    if out.len() > before {
        state.metrics.delivery_latency.observe_since(ev.published);
    }
    Ok(())
}

/// Ingest's mapping of the messages of `layers`: [`map_message`].
pub fn foreign_messages(layers: Layers) -> ForeignMessages {
    ForeignMessages::new(move |value| map_message(layers, value))
}

/// Maps one message (an ingested payload, or one item of a publish body) with the first layer
/// that recognises its shape; `None` when no layer on does.
pub fn map_message(layers: Layers, value: &Value) -> Option<NewEvent> {
    Layer::ALL
        .into_iter()
        .filter(|l| layers.contains(*l))
        .find_map(|layer| match layer {
            Layer::WsRelay => ws_relay::map_message(value),
            Layer::EventBroadcaster => event_broadcaster::map_message(value),
            Layer::SocketioGateway => socketio_gateway::map_message(value),
            Layer::SseStream => sse_stream::map_message(value),
        })
}

/// The publish bodies of `config`'s layers, if any takes them (see [`parse_publish`]).
pub fn other_bodies(config: &Config) -> Option<Box<dyn OtherBodies>> {
    let layers = Layers::of(&config.compat);
    (!layers.is_empty()).then(|| Box::new(layers) as Box<dyn OtherBodies>)
}

impl OtherBodies for Layers {
    fn parse(&self, body: &[u8]) -> Option<Result<Vec<NewEvent>, ApiError>> {
        parse_publish(*self, body)
    }
}

/// `POST /v1/runs/{run}/events` with a body in a replaced system's shape: `None` when the body is
/// not in the shape of a layer that is on (runwire's own rules apply), else the events, or a 400
/// when the body mixes shapes or puts a terminal event before the end of a batch.
pub fn parse_publish(layers: Layers, body: &[u8]) -> Option<Result<Vec<NewEvent>, ApiError>> {
    if layers.is_empty() {
        return None;
    }
    let value: Value = serde_json::from_slice(body).ok()?;
    // `["status", {…}]` is one Socket.IO emit, not a batch of two.
    if let Some(ev) = map_message(layers, &value) {
        return Some(Ok(vec![ev]));
    }
    let Value::Array(items) = value else {
        return None;
    };
    if items.is_empty() || items.len() > MAX_EVENTS_PER_PUBLISH {
        return None;
    }
    let mapped: Vec<Option<NewEvent>> = items.iter().map(|i| map_message(layers, i)).collect();
    if mapped.iter().all(Option::is_none) {
        return None;
    }
    let last = mapped.len() - 1;
    let mut events = Vec::with_capacity(mapped.len());
    for (i, ev) in mapped.into_iter().enumerate() {
        let Some(ev) = ev else {
            return Some(Err(ApiError::bad_request(
                "invalid_event",
                format!(
                    "event {i}: a batch is all in runwire's shape or all in one replaced system's shape"
                ),
            )));
        };
        if i != last && ev.typed.is_terminal() {
            return Some(Err(ApiError::bad_request(
                "invalid_event",
                format!("event {i}: {} must be the last event of a batch", ev.name()),
            )));
        }
        events.push(ev);
    }
    Some(Ok(events))
}

/// The message kept as it came, under the name `custom`.
pub fn custom(value: &Value) -> NewEvent {
    // Built directly: `custom` is a valid name whose data may be anything.
    NewEvent {
        typed: RunEvent::Other {
            name: CUSTOM_EVENT.to_owned(),
        },
        data: match value {
            Value::Null => Value::Object(Map::new()),
            v => v.clone(),
        },
    }
}

/// `name` with `data` when it fits the event's shape. When it does not: the event with only the
/// fields it needs (`node_key`, `error`) and the original message under `payload`, so a terminal
/// event still ends the run and a node event still updates its node; and when even that does not
/// fit (no usable node key), the message as a `custom` event.
pub fn fit(
    name: &str,
    data: Map<String, Value>,
    original: &Value,
    node_key: Option<&str>,
    error: Option<&str>,
) -> NewEvent {
    if let Ok(ev) = NewEvent::parse(name, Value::Object(data)) {
        return ev;
    }
    let mut data = Map::new();
    if let Some(key) = node_key {
        data.insert("node_key".into(), key.into());
    }
    if let Some(error) = error {
        data.insert("error".into(), error.into());
    }
    data.insert("payload".into(), original.clone());
    NewEvent::parse(name, Value::Object(data)).unwrap_or_else(|_| custom(original))
}

/// An error's text: a string as it is, an object's `message`, any other value as JSON text.
pub fn error_text(error: Option<&Value>) -> Option<String> {
    match error? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => Some(match o.get("message").and_then(Value::as_str) {
            Some(m) => m.to_owned(),
            None => Value::Object(o.clone()).to_string(),
        }),
        other => Some(other.to_string()),
    }
}

/// An id as a node key: a non-empty string, or a number written out.
pub fn id_text(id: Option<&Value>) -> Option<String> {
    match id? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Ingest's mapping of random channels and payloads with every layer's mapping tried first:
    /// nothing panics, and a payload always becomes an event.
    #[test]
    fn random_ingested_payloads_never_panic_with_every_layer_on() {
        let every_layer = Layers::of(&[
            Layer::WsRelay,
            Layer::EventBroadcaster,
            Layer::SocketioGateway,
            Layer::SseStream,
        ]);
        crate::broker::redis::ingest::tests::random_channels_and_payloads(&foreign_messages(
            every_layer,
        ));
    }

    #[test]
    fn layers_parse_as_deployments_spell_them() {
        use clap::ValueEnum;
        let names: Vec<String> = Layer::value_variants()
            .iter()
            .map(|l| l.to_possible_value().unwrap().get_name().to_owned())
            .collect();
        assert_eq!(
            names,
            [
                "ws-relay",
                "event-broadcaster",
                "socketio-gateway",
                "sse-stream"
            ]
        );
        let set = Layers::of(&[Layer::WsRelay, Layer::SseStream]);
        assert!(set.contains(Layer::WsRelay) && set.contains(Layer::SseStream));
        assert!(!set.contains(Layer::EventBroadcaster));
        assert_eq!(
            set.ingest_patterns(),
            ["workflow-run:*", "execution:*:events"]
        );
        assert!(Layers::default().is_empty());
        assert!(Layers::default().ingest_patterns().is_empty());
    }

    #[test]
    fn compat_flags_ingest_the_replaced_channels() {
        use clap::Parser;
        #[derive(Parser)]
        struct Wrapper {
            #[command(flatten)]
            config: Config,
        }
        let parse = |args: &[&str]| {
            let mut all = vec!["runwire", "--secret", "0123456789abcdef0123456789abcdef"];
            all.extend_from_slice(args);
            Wrapper::try_parse_from(all).map(|w| w.config)
        };
        let c = parse(&[
            "--compat",
            "ws-relay",
            "--compat",
            "sse-stream,event-broadcaster",
        ])
        .unwrap();
        assert_eq!(
            c.compat,
            [Layer::WsRelay, Layer::SseStream, Layer::EventBroadcaster]
        );
        assert!(c.validate().is_ok());
        // no Redis: nothing to ingest, and that is fine
        assert!(c.redis().is_none());
        let c = parse(&[
            "--compat",
            "ws-relay",
            "--redis",
            "redis://127.0.0.1:6379",
            "--ingest",
            "workflow-run:*,jobs:*",
        ])
        .unwrap();
        let redis = c.redis().unwrap();
        assert_eq!(redis.ingest, ["workflow-run:*", "jobs:*"]);
        // ingest maps the Node relay's messages
        let node = json!({"type":"node","nodeId":"a","status":"Running"});
        assert!(redis.foreign_messages.map(&node).is_some());
        let c = parse(&[
            "--compat",
            "sse-stream",
            "--redis",
            "redis://127.0.0.1:6379",
        ])
        .unwrap();
        assert_eq!(c.redis().unwrap().ingest, ["execution:*:events"]);
        let c = parse(&["--redis", "redis://127.0.0.1:6379"]).unwrap();
        assert!(c.redis().unwrap().ingest.is_empty());
        assert!(parse(&["--compat", "kafka"]).is_err());
    }

    fn legacy_token(run: &str, exp: u64, secret: &[u8]) -> String {
        use base64::Engine as _;
        use hmac::Mac as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let payload = json!({"v":1,"runId":run,"userId":"u1","iat":exp - 300,"exp":exp});
        let segment = b64.encode(payload.to_string());
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
        mac.update(segment.as_bytes());
        format!("{segment}.{}", b64.encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn rotation_and_legacy_tokens() {
        use crate::auth::{Clock, Verifier};
        use crate::error::AuthError;
        use runwire_protocol::token::{Scope, sign};
        let (a, b, long_legacy) = ("a".repeat(32), "b".repeat(32), "c".repeat(40));
        let mut c = Config::with_secret(a.clone());
        c.extra_secrets = vec![b.clone()];
        c.compat = vec![Layer::WsRelay];
        c.execution_stream_signing_secret = Some("short".into());
        c.better_auth_secret = Some(long_legacy.clone());
        let verifier = |c: &Config| {
            Verifier::new(c.validate().unwrap(), Clock::System, Arc::default())
                .with_compat(token_keys(c))
        };
        let v = verifier(&c);
        let now = Clock::System.unix_secs();
        let jwt = |secret: &str| {
            sign(
                &Claims {
                    exp: now + 60,
                    run: Some("r1".into()),
                    ..Claims::default()
                },
                secret.as_bytes(),
            )
        };
        for secret in [&a, &b, &long_legacy] {
            assert!(
                v.verify(Some(&jwt(secret)), Scope::Subscribe, Some("r1"))
                    .is_ok()
            );
        }
        // a short secret never verifies a JWT
        assert_eq!(
            v.verify(Some(&jwt("short")), Scope::Subscribe, None),
            Err(AuthError::Token(TokenError::BadSignature))
        );
        for secret in ["short", a.as_str(), b.as_str(), long_legacy.as_str()] {
            let claims = v
                .verify(
                    Some(&legacy_token("r1", now + 300, secret.as_bytes())),
                    Scope::Subscribe,
                    Some("r1"),
                )
                .unwrap();
            assert_eq!(claims.sub.as_deref(), Some("u1"));
        }
        let t = legacy_token("r1", now + 300, b"short");
        crate::auth::tests::assert_subscribes_to_r1_only(&v, &t);
        assert_eq!(
            v.verify(
                Some(&legacy_token("r1", now - 60, b"short")),
                Scope::Subscribe,
                None
            ),
            Err(AuthError::Token(TokenError::Expired))
        );
        assert_eq!(
            v.verify(
                Some(&legacy_token("r1", now + 60, b"unknown")),
                Scope::Subscribe,
                None
            ),
            Err(AuthError::Token(TokenError::BadSignature))
        );
        // ws-relay off: no v:1 tokens; no layer at all: the legacy variables are not read
        let mut off = c.clone();
        off.compat = vec![Layer::SseStream];
        let v = verifier(&off);
        assert!(v.verify(Some(&t), Scope::Subscribe, None).is_err());
        assert!(
            v.verify(Some(&jwt(&long_legacy)), Scope::Subscribe, None)
                .is_ok()
        );
        off.compat.clear();
        let v = verifier(&off);
        assert!(
            v.verify(Some(&jwt(&long_legacy)), Scope::Subscribe, None)
                .is_err()
        );
        assert!(v.verify(Some(&jwt(&b)), Scope::Subscribe, None).is_ok());
    }

    #[test]
    fn legacy_secrets_as_fallbacks() {
        let mut c = Config::with_secret("x");
        c.secret = None;
        c.compat = vec![Layer::WsRelay];
        c.execution_stream_signing_secret = Some("short".into());
        assert!(matches!(c.validate(), Err(ConfigError::MissingSecret)));
        c.better_auth_secret = Some("c".repeat(40));
        assert_eq!(c.validate().unwrap(), "c".repeat(40).as_bytes());
        c.execution_stream_signing_secret = Some("e".repeat(32));
        assert_eq!(c.validate().unwrap(), "e".repeat(32).as_bytes());
        // runwire's own name wins
        c.secret = Some("s".repeat(32));
        assert_eq!(c.validate().unwrap(), "s".repeat(32).as_bytes());
        // and without a layer the legacy names are not read
        c.secret = None;
        c.compat.clear();
        assert!(matches!(c.validate(), Err(ConfigError::MissingSecret)));
        c.secret = Some("s".repeat(32));
        c.extra_secrets = vec!["tiny".into()];
        assert!(matches!(
            c.validate(),
            Err(ConfigError::ShortExtraSecret(4))
        ));
    }

    #[test]
    fn replaced_environment_names_are_fallbacks() {
        type Vars = &'static [(&'static str, &'static str)];
        let base = || {
            let mut c = Config::with_secret("s".repeat(32));
            c.compat = vec![Layer::WsRelay];
            c
        };
        // `c` with the environment `vars` applied, and the names read.
        let apply = |mut c: Config, vars: Vars| {
            let env = |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            };
            apply_env(&mut c, env).map(|used| (c, used))
        };
        // no layer: nothing is read
        let mut c = base();
        c.compat.clear();
        let (c, _) = apply(c, &[("REDIS_URL", "redis://r:1"), ("PORT", "80")]).unwrap();
        assert_eq!(
            (c.redis.as_deref(), c.addr.to_string().as_str()),
            (None, DEFAULT_ADDR)
        );
        // (environment, Redis URL, address)
        let cases: [(Vars, Option<&str>, &str); 3] = [
            // REALTIME_HOST's default: all interfaces
            (
                &[
                    ("REDIS_URL", "redis://a:1"),
                    ("UPSTASH_REDIS_URL", "rediss://b:2"),
                    ("PORT", "4000"),
                ],
                Some("redis://a:1"),
                "0.0.0.0:4000",
            ),
            (
                &[
                    ("UPSTASH_REDIS_URL", "redis://b:2"),
                    ("REALTIME_HOST", "127.0.0.1"),
                    ("REALTIME_PORT", "3200"),
                    ("PORT", "9"),
                ],
                Some("redis://b:2"),
                "127.0.0.1:3200",
            ),
            (
                &[("REDIS_HOST", "10.0.0.5"), ("REALTIME_HOST", "127.0.0.1")],
                Some("redis://10.0.0.5:6379"),
                "127.0.0.1:3101",
            ),
        ];
        for (vars, redis, addr) in cases {
            let (c, _) = apply(base(), vars).unwrap();
            let got = (c.redis.as_deref(), c.addr.to_string());
            assert_eq!((got.0, got.1.as_str()), (redis, addr), "{vars:?}");
        }
        let (_, used) = apply(base(), cases[0].0).unwrap();
        assert_eq!(used, ["REDIS_URL", "PORT"]);
        // runwire's own names win
        let mut c = base();
        c.redis = Some("redis://mine:1".into());
        c.addr = "127.0.0.1:5000".parse().unwrap();
        let (c, _) = apply(c, &[("REDIS_URL", "redis://a:1"), ("PORT", "4000")]).unwrap();
        assert_eq!(
            (c.redis.as_deref(), c.addr.to_string().as_str()),
            (Some("redis://mine:1"), "127.0.0.1:5000")
        );
        let vars: Vars = &[("RUNWIRE_ADDR", "127.0.0.1:3101"), ("PORT", "4000")];
        let (c, _) = apply(base(), vars).unwrap();
        assert_eq!(c.addr.to_string(), DEFAULT_ADDR);
        // bad values are refused clearly
        let e = apply(base(), &[("PORT", "http")]).unwrap_err();
        assert!(e.to_string().contains("PORT is not a port"), "{e}");
        let e = apply(base(), &[("REALTIME_HOST", "not a host!")]).unwrap_err();
        assert!(e.to_string().contains("REALTIME_HOST"), "{e}");
    }

    #[test]
    fn fit_keeps_terminal_events_terminal() {
        let original = json!({"node_count": "many"});
        let ev = fit(
            "run.completed",
            original.as_object().unwrap().clone(),
            &original,
            None,
            None,
        );
        assert_eq!(ev.name(), "run.completed");
        assert_eq!(ev.data, json!({"payload": {"node_count": "many"}}));
        let ev = fit("node.failed", Map::new(), &original, Some("n"), Some("e"));
        assert_eq!(ev.name(), "node.failed");
        assert_eq!(
            ev.data,
            json!({"node_key": "n", "error": "e", "payload": original})
        );
        // no node key at all: kept, as custom
        let ev = fit("node.started", Map::new(), &original, None, None);
        assert_eq!(ev.name(), "custom");
        let long = "k".repeat(300);
        let ev = fit("node.started", Map::new(), &original, Some(&long), None);
        assert_eq!((ev.name(), &ev.data), ("custom", &original));
    }

    #[test]
    fn error_texts() {
        assert_eq!(error_text(Some(&json!("x"))).as_deref(), Some("x"));
        assert_eq!(
            error_text(Some(&json!({"message": "m", "code": 1}))).as_deref(),
            Some("m")
        );
        assert_eq!(
            error_text(Some(&json!({"code": 1}))).as_deref(),
            Some(r#"{"code":1}"#)
        );
        assert_eq!(error_text(Some(&json!(null))), None);
        assert_eq!(error_text(None), None);
        assert_eq!(id_text(Some(&json!(7))).as_deref(), Some("7"));
        assert_eq!(id_text(Some(&json!(""))), None);
        assert_eq!(id_text(Some(&json!([1]))), None);
    }

    #[test]
    fn publish_bodies_in_replaced_shapes() {
        let on = Layers::of(&[Layer::WsRelay, Layer::SocketioGateway]);
        // runwire's own shape: not ours
        assert!(parse_publish(on, br#"{"event":"run.started"}"#).is_none());
        assert!(parse_publish(on, b"{").is_none());
        assert!(
            parse_publish(
                Layers::default(),
                br#"{"type":"workflow","status":"Running"}"#
            )
            .is_none()
        );
        let evs = parse_publish(on, br#"{"type":"workflow","status":"Running"}"#)
            .unwrap()
            .unwrap();
        assert_eq!(evs[0].name(), "run.started");
        // one Socket.IO emit as an array
        let evs = parse_publish(on, br#"["status",{"executionId":"e","status":"running"}]"#)
            .unwrap()
            .unwrap();
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].name(), "run.started");
        let evs = parse_publish(
            on,
            br#"[{"type":"node","nodeId":"a","status":"Running"},{"type":"workflow","status":"Success"}]"#,
        )
        .unwrap()
        .unwrap();
        let names: Vec<_> = evs.iter().map(NewEvent::name).collect();
        assert_eq!(names, ["node.started", "run.completed"]);
        let mixed = parse_publish(
            on,
            br#"[{"type":"node","nodeId":"a","status":"Running"},{"event":"log"}]"#,
        )
        .unwrap();
        assert!(mixed.is_err());
        let early_end = parse_publish(
            on,
            br#"[{"type":"workflow","status":"Success"},{"type":"node","nodeId":"a","status":"Running"}]"#,
        )
        .unwrap();
        assert!(early_end.is_err());
    }
}
