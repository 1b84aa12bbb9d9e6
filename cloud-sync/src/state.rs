//! What every request handler shares: the store, the accepted tokens, the
//! limits and the metrics registry of one collector instance.

use std::sync::Arc;

use crate::api::LogGate;
use crate::config::{Config, ConfigError, StoreBackend};
use crate::metrics::Metrics;
use crate::store::{PostgresStore, SledStore, Store, StoreError};

/// Shared state of one collector; cheap to clone (everything is behind `Arc`).
#[derive(Clone)]
pub struct AppState {
    store: Arc<dyn Store>,
    /// Accepted bearer tokens, compared in constant time.
    tokens: Arc<[String]>,
    /// Bound on a request body after decompression, bytes.
    max_body_bytes: usize,
    payload_limits: telemetry::Limits,
    metrics: Arc<Metrics>,
    /// Rate-limits the WARN line for rejected batches (one per interval).
    rejections: Arc<LogGate>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens are secrets: never print them.
        f.debug_struct("AppState")
            .field("tokens", &self.tokens.len())
            .field("max_body_bytes", &self.max_body_bytes)
            .field("payload_limits", &self.payload_limits)
            .finish_non_exhaustive()
    }
}

/// Why the collector's state cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The configuration is unusable; fix it.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The store cannot be opened (sled: locked by another process,
    /// unreadable; PostgreSQL: unreachable, refused, failed to migrate;
    /// either: written by another schema version).
    #[error("cannot open store {store}: {error}")]
    Store {
        /// Where the store is (`sled in DIR`, or the PostgreSQL server without password).
        store: String,
        error: StoreError,
    },
}

impl AppState {
    /// Validates `config` and opens its store: the sled store in `data_dir`
    /// (on the blocking pool), or PostgreSQL, connected and migrated.
    pub async fn open(config: &Config) -> Result<AppState, OpenError> {
        config.validate()?;
        let opened: Result<Arc<dyn Store>, StoreError> = match &config.store {
            StoreBackend::Sled => {
                let dir = config.data_dir.clone();
                match tokio::task::spawn_blocking(move || SledStore::open(&dir)).await {
                    Ok(opened) => opened.map(|store| Arc::new(store) as Arc<dyn Store>),
                    Err(_) => Err(StoreError::Worker),
                }
            }
            StoreBackend::Postgres(postgres) => PostgresStore::connect(postgres)
                .await
                .map(|store| Arc::new(store) as Arc<dyn Store>),
        };
        let store = opened.map_err(|error| OpenError::Store {
            store: config.store_description(),
            error,
        })?;
        Ok(AppState::with_store(config, store))
    }

    /// State over an already opened store (another backend, or a shared one in tests).
    pub fn with_store(config: &Config, store: Arc<dyn Store>) -> AppState {
        AppState {
            store,
            tokens: config.tokens.clone().into(),
            max_body_bytes: config.max_body_bytes,
            payload_limits: config.payload_limits,
            metrics: Arc::new(Metrics::new()),
            rejections: Arc::new(LogGate::new(std::time::Duration::from_secs(10))),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn tokens(&self) -> &[String] {
        &self.tokens
    }

    pub(crate) fn max_body_bytes(&self) -> usize {
        self.max_body_bytes
    }

    pub(crate) fn payload_limits(&self) -> telemetry::Limits {
        self.payload_limits
    }

    pub(crate) fn rejections(&self) -> &LogGate {
        &self.rejections
    }
}
