//! runwire relay: token-verified live run events over WebSocket and SSE.
//!
//! The core reads bottom-up, and its imports run one way: [`event`] → [`hub`] → [`broker`] →
//! [`state`] → [`transport`] → the app (this file and [`demo`]).
//! - [`event`]: run ids, events as published, and accepted events encoded once.
//! - [`hub`]: this relay's connections, their runs, and the fan-out of live events to them.
//! - [`broker`]: the [`broker::Broker`] trait (sequencing, retention, cross-relay delivery) and the
//!   embedded [`broker::memory::MemoryBroker`] and [`broker::redis::RedisBroker`] for several relays.
//! - [`state`]: the [`AppState`] every handler and connection shares.
//! - [`transport`]: WebSocket (`/v1/ws`, `/ws/executions`), SSE, and the HTTP API; the
//!   subscription rules they share in [`transport::subscription`].
//! - [`compat`]: `--compat` layers for the systems runwire replaces (their messages, tokens and
//!   browser endpoints), translated at the edges. It sits above the transports and plugs into
//!   the layers below through hooks ([`auth::OtherKeys`], [`transport::http::OtherBodies`], the
//!   broker's foreign-message mapping, routes added by [`app`]); of the modules below it, only
//!   [`config`] (the `--compat` flags and their checks) and [`state`]'s constructor, which
//!   installs those hooks, name it.
//! - [`demo`]: simulated workflow runs for `runwire demo`, with their own bookkeeping.
//! - [`config`]: `runwire serve` flags and their validation.
//! - [`auth`]: token verification and the clock it uses.
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
pub mod event;
pub mod hub;
pub mod logging;
pub mod metrics;
pub mod shutdown;
pub mod state;
pub(crate) mod sync;
pub mod transport;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::TcpListener;

use crate::auth::Clock;
pub use crate::config::{Config, ConfigError};
pub use crate::state::{AppState, RunError, Shared};

/// The relay's router.
pub fn app(state: AppState) -> Router {
    let demo = state.config.demo.then(|| demo::Demo::new(state.clone()));
    router(state, demo)
}

/// The router, with the demo's routes when there is a demo.
fn router(state: AppState, demo: Option<Arc<demo::Demo>>) -> Router {
    let app_routes = demo.map_or_else(Router::new, demo::routes);
    transport::router(state.clone(), |router| {
        compat::mount(router.merge(app_routes), &state)
    })
}

/// Serves `state` on `listener` until `shutdown` resolves, then stops accepting, tells every
/// client to reconnect elsewhere, lets in-flight requests finish, and returns within the
/// configured drain time.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let demo = state.config.demo.then(|| demo::Demo::new(state.clone()));
    if let Some(demo) = &demo {
        demo::spawn(demo.clone());
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
        router(state.clone(), demo),
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
