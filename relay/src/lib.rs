//! runwire relay: token-verified live run events over WebSocket and SSE.
//!
//! - [`config`]: `runwire serve` flags and their validation.
//! - [`auth`]: token verification and the clock it uses.
//! - [`broker`]: the [`broker::Broker`] trait (sequencing, retention, cross-relay delivery) and the
//!   embedded [`broker::memory::MemoryBroker`] and [`broker::redis::RedisBroker`] for several relays.
//! - [`hub`]: this relay's connections, their runs, and the fan-out of live events to them.
//! - [`transport`]: WebSocket (`/v1/ws`, `/ws/executions`), SSE, and the HTTP API.
//! - [`compat`]: `--compat` layers for the systems runwire replaces (their messages, tokens and
//!   browser endpoints), translated at the edges.
//! - [`demo`]: simulated workflow runs for `runwire demo`.
//! - [`logging`]: the log's filter, which keeps frames (and so tokens) out of it at any level.
//! - [`metrics`], [`error`], [`shutdown`]: the rest.
//!
//! [`app`] builds the router from an [`AppState`]; [`run`] serves it until a shutdown future
//! resolves, then drains. Tests drive both in-process.

pub mod auth;
pub mod broker;
pub mod compat;
pub mod config;
pub mod demo;
pub mod error;
pub mod hub;
pub mod logging;
pub mod metrics;
pub mod shutdown;
pub mod transport;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::{Clock, Verifier};
use crate::broker::Broker;
use crate::broker::BrokerError;
use crate::broker::memory::MemoryBroker;
use crate::broker::redis::RedisBroker;
pub use crate::config::{Config, ConfigError};
use crate::hub::Hub;
use crate::metrics::Metrics;

/// Everything a request handler needs; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Shared>);

/// The state behind [`AppState`].
#[derive(Debug)]
pub struct Shared {
    /// The configuration the relay was started with.
    pub config: Config,
    /// Token verification.
    pub verifier: Verifier,
    /// The broker in use.
    pub broker: Arc<dyn Broker>,
    /// This relay's connections.
    pub hub: Arc<Hub>,
    /// Counters and gauges.
    pub metrics: Arc<Metrics>,
    /// The demo's simulated runs (used with `--demo` only).
    pub demo: demo::Demo,
    shutdown: watch::Sender<bool>,
    next_conn: AtomicU64,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl std::fmt::Debug for dyn Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Broker({})", self.kind())
    }
}

impl AppState {
    /// Validates `config` and builds the relay's state on the embedded broker.
    pub fn new(config: Config, clock: Clock) -> Result<Self, ConfigError> {
        let metrics = Arc::new(Metrics::default());
        let hub = Arc::new(Hub::new(metrics.clone()));
        let broker = MemoryBroker::new(config.memory(), hub.clone());
        Self::with_broker(config, clock, broker, hub, metrics)
    }

    /// Validates `config` and builds the relay's state on the broker it names: Redis with
    /// `--redis` (connecting to it), else the embedded one.
    pub async fn connect(config: Config, clock: Clock) -> Result<Self, RunError> {
        let Some(redis) = config.redis() else {
            return Ok(Self::new(config, clock)?);
        };
        config.validate()?;
        let metrics = Arc::new(Metrics::default());
        let hub = Arc::new(Hub::new(metrics.clone()));
        let broker = RedisBroker::connect(redis, hub.clone()).await?;
        Ok(Self::with_broker(config, clock, broker, hub, metrics)?)
    }

    /// Builds the relay's state on a given broker, which must deliver to `hub`.
    pub fn with_broker(
        config: Config,
        clock: Clock,
        broker: Arc<dyn Broker>,
        hub: Arc<Hub>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, ConfigError> {
        let verifier = Verifier::new(config.validate()?, clock, metrics.clone())
            .with_compat(compat::token_keys(&config));
        Ok(Self(Arc::new(Shared {
            config,
            verifier,
            broker,
            hub,
            metrics,
            demo: demo::Demo::default(),
            shutdown: watch::channel(false).0,
            next_conn: AtomicU64::new(1),
        })))
    }

    /// A new connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Resolves once the relay is shutting down.
    pub fn shutting_down(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.shutdown.subscribe();
        async move {
            let _ = rx.wait_for(|stopping| *stopping).await;
        }
    }

    /// The shutdown flag, for a loop that waits on it again and again (`wait_for(|s| *s)`)
    /// without keeping a future alive in between.
    pub fn shutdown_flag(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells every connection to go: WebSockets close with 1012, SSE streams end.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    fn open_connections(&self) -> i64 {
        let m = &self.metrics;
        m.ws_connections.get() + m.executions_connections.get() + m.sse_connections.get()
    }
}

/// The relay's router.
pub fn app(state: AppState) -> Router {
    transport::router(state)
}

/// Serves `state` on `listener` until `shutdown` resolves, then stops accepting, tells every
/// client to reconnect elsewhere, lets in-flight requests finish, and returns within the
/// configured drain time.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    if state.config.demo {
        demo::spawn(state.clone());
    }
    if let Some(addr) = state.config.metrics_addr {
        let metrics = TcpListener::bind(addr).await?;
        tracing::info!(addr = %metrics.local_addr()?, "metrics listening");
        let router = transport::metrics_router(state.clone());
        // Its own accept loop and limits; it stops with the relay.
        tokio::spawn(transport::listener::serve(metrics, router, state.clone()));
    }
    let mut server = tokio::spawn(transport::listener::serve(
        listener,
        app(state.clone()),
        state.clone(),
    ));
    tokio::select! {
        result = &mut server => return result.map_err(std::io::Error::other),
        () = shutdown => {}
    }
    let drain = state.config.drain_timeout;
    tracing::info!(?drain, "draining");
    // Stops the accept loop too; connections finish their in-flight requests.
    state.begin_shutdown();
    let drained = tokio::time::timeout(drain, async {
        let _ = (&mut server).await;
        while state.open_connections() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = state.open_connections(),
            "drain time is up; exiting with connections still open"
        );
        server.abort();
    }
    Ok(())
}

/// Validates `config`, builds the relay and serves it on `listener` until `shutdown`.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), RunError> {
    let state = AppState::connect(config, Clock::System).await?;
    serve(listener, state, shutdown).await?;
    Ok(())
}

/// Why the relay could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Serving failed.
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    /// The broker could not be started (Redis unreachable, say).
    #[error("cannot start the broker: {0}")]
    Broker(#[from] BrokerError),
}
