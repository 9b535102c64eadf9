//! The relay's state: what every request handler and connection shares ([`AppState`]), and how
//! it is built on the embedded broker or on Redis.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

use crate::auth::{Clock, Verifier};
use crate::broker::memory::MemoryBroker;
use crate::broker::redis::RedisBroker;
use crate::broker::{Broker, BrokerError};
use crate::compat;
use crate::config::{Config, ConfigError};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::transport::http::OtherBodies;

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
    /// Publish bodies in a replaced system's shape, when a compatibility layer takes them.
    pub other_bodies: Option<Box<dyn OtherBodies>>,
    shutdown: watch::Sender<bool>,
    next_conn: AtomicU64,
}

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
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
        let other_bodies = compat::other_bodies(&config);
        Ok(Self(Arc::new(Shared {
            other_bodies,
            config,
            verifier,
            broker,
            hub,
            metrics,
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

    /// Whether this relay holds more WebSockets, of every endpoint, than `--max-connections`
    /// (counting the one being admitted): that one then closes with 4029.
    pub fn websockets_over_cap(&self) -> bool {
        let m = &self.metrics;
        m.ws_connections.get() + m.executions_connections.get() > self.config.max_connections as i64
    }

    /// Connections open on every transport, for the drain at shutdown.
    pub(crate) fn open_connections(&self) -> i64 {
        let m = &self.metrics;
        m.ws_connections.get() + m.executions_connections.get() + m.sse_connections.get()
    }
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
