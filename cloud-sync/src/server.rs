//! The collector process: a bound listener plus the shared state, served
//! until the shutdown token is cancelled.
//!
//! Beside the listener runs the retention task (`retention.rs`) when
//! `[retention]` sets a period.
//!
//! Shutdown drains: the listener stops accepting, in-flight requests finish
//! (each acknowledged batch was already flushed before its answer), the
//! retention task stops, the audit lines still queued are written, then the
//! store is flushed once more. Connections that do not finish within
//! [`DRAIN_TIMEOUT`] are abandoned; their batches were not acknowledged, so
//! the gateways retry them.
//!
//! With `server.tls_cert` and `tls_key` the same router is served over
//! HTTPS (`tls.rs`), requiring client certificates with `tls_client_ca`;
//! the files are read once, at bind.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::api::router;
use crate::config::Config;
use crate::state::AppState;
use crate::tls::TlsListener;

/// How long shutdown waits for open requests to finish.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A collector bound to its address, not yet serving.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: AppState,
    /// HTTPS when set.
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl Server {
    /// Validates `config`, binds its listen address and opens the store.
    pub async fn bind(config: Config) -> anyhow::Result<Server> {
        config.validate()?;
        let tls = config.tls.as_ref().map(crate::tls::load).transpose()?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let state = AppState::open(&config).await?;
        let mut server = Server::with_state(listener, state)?;
        server.tls = tls;
        Ok(server)
    }

    /// A server on an already bound listener over an already opened state:
    /// several servers may then share one store in one process (the ingest
    /// benchmark compares that with collectors sharing PostgreSQL).
    pub fn with_state(listener: TcpListener, state: AppState) -> anyhow::Result<Server> {
        let local_addr = listener
            .local_addr()
            .context("cannot read the bound address")?;
        Ok(Server {
            listener,
            local_addr,
            state,
            tls: None,
        })
    }

    /// The bound address (the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The state the server runs with (store, metrics).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `shutdown` is cancelled, then drains and flushes the store.
    pub async fn run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let Server {
            listener,
            local_addr,
            state,
            tls,
        } = self;
        let app = router(state.clone());
        let stop_retention = shutdown.child_token();
        let retention = tokio::spawn(crate::retention::run(state.clone(), stop_retention.clone()));
        let graceful = shutdown.clone().cancelled_owned();
        let failed = state.metrics().tls_handshakes_failed();
        let serve = async move {
            match tls {
                Some(config) => {
                    tracing::info!(addr = %local_addr, "collector listening (https)");
                    let listener = TlsListener::new(listener, config, failed)?;
                    axum::serve(listener, app)
                        .with_graceful_shutdown(graceful)
                        .await
                }
                None => {
                    tracing::info!(addr = %local_addr, "collector listening");
                    axum::serve(listener, app)
                        .with_graceful_shutdown(graceful)
                        .await
                }
            }
        };
        let drain_limit = async {
            shutdown.cancelled().await;
            tokio::time::sleep(DRAIN_TIMEOUT).await;
        };
        let served = tokio::select! {
            served = serve => served.context("http server failed"),
            () = drain_limit => {
                tracing::warn!(timeout = ?DRAIN_TIMEOUT, "requests still open at shutdown, abandoning them");
                Ok(())
            }
        };
        // Also when the server failed rather than was shut down.
        stop_retention.cancel();
        if retention.await.is_err() {
            tracing::error!("the retention task panicked");
        }
        served?;
        if let Some(audit) = state.audit() {
            audit
                .flush()
                .await
                .context("cannot write the audit log at shutdown")?;
        }
        state
            .store()
            .flush()
            .await
            .context("final store flush failed")?;
        tracing::info!("collector stopped");
        Ok(())
    }
}
