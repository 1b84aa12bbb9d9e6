//! What every request handler shares: the store, the accepted tokens, the
//! rate limiter, the limits, the metrics registry and the audit log of one
//! collector instance.

use std::sync::Arc;

use crate::api::{Auth, LogGate, RateLimiter};
use crate::audit::{AuditError, AuditLog, Details};
use crate::config::{Config, ConfigError, Retention, StoreBackend};
use crate::metrics::Metrics;
use crate::store::{PostgresStore, SledStore, Store, StoreError};
use crate::tokens::{TokenFile, TokenFileError};

/// Shared state of one collector; cheap to clone (everything is behind `Arc`).
#[derive(Clone)]
pub struct AppState {
    store: Arc<dyn Store>,
    /// Accepted bearer tokens and what each may do.
    auth: Arc<Auth>,
    /// Per-gateway token buckets of `POST /v1/batches`; `None` is unlimited.
    rate_limiter: Option<Arc<RateLimiter>>,
    /// Bound on a request body after decompression, bytes.
    max_body_bytes: usize,
    payload_limits: telemetry::Limits,
    metrics: Arc<Metrics>,
    /// Rate-limits the WARN line for rejected batches (one per interval).
    rejections: Arc<LogGate>,
    /// The audit log's writer; `None` when `audit.enabled` is off.
    audit: Option<AuditLog>,
    /// What the background retention task deletes; `None` keeps everything.
    retention: Option<Arc<Retention>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Tokens are secrets: never print them.
        f.debug_struct("AppState")
            .field("auth", &self.auth)
            .field("rate_limiter", &self.rate_limiter)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("payload_limits", &self.payload_limits)
            .field("audit", &self.audit)
            .field("retention", &self.retention)
            .finish_non_exhaustive()
    }
}

/// Why the collector's state cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The configuration is unusable; fix it.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `auth.token_file` cannot be read or has a bad line; fix the file.
    #[error(transparent)]
    TokenFile(#[from] TokenFileError),
    /// `audit.file` cannot be opened, or ends in a damaged line.
    #[error(transparent)]
    Audit(#[from] AuditError),
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
        // Before the store: a bad token file should not wait for PostgreSQL.
        let auth = auth(config)?;
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
        AppState::assemble(config, store, auth)
    }

    /// State over an already opened store (another backend, or a shared one
    /// in tests). Fails only on a bad token file or audit log.
    pub fn with_store(config: &Config, store: Arc<dyn Store>) -> Result<AppState, OpenError> {
        AppState::assemble(config, store, auth(config)?)
    }

    fn assemble(config: &Config, store: Arc<dyn Store>, auth: Auth) -> Result<AppState, OpenError> {
        let metrics = Arc::new(Metrics::new());
        let audit = match &config.audit_file {
            Some(path) => {
                let (lines, errors) = metrics.audit_counters();
                Some(AuditLog::start(path, lines, errors)?)
            }
            None => None,
        };
        Ok(AppState {
            audit,
            retention: config.retention.clone().map(Arc::new),
            store,
            auth: Arc::new(auth),
            rate_limiter: config
                .ingest_rate_limit
                .map(|limit| Arc::new(RateLimiter::new(limit.per_second, limit.burst))),
            max_body_bytes: config.max_body_bytes,
            payload_limits: config.payload_limits,
            metrics,
            rejections: Arc::new(LogGate::new(std::time::Duration::from_secs(10))),
        })
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn auth(&self) -> &Auth {
        &self.auth
    }

    pub(crate) fn rate_limiter(&self) -> Option<&RateLimiter> {
        self.rate_limiter.as_deref()
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

    /// The audit log, when one is kept.
    pub fn audit(&self) -> Option<&AuditLog> {
        self.audit.as_ref()
    }

    pub(crate) fn retention(&self) -> Option<&Retention> {
        self.retention.as_deref()
    }

    /// Records an admin action in the audit log (when one is kept) and
    /// waits until it is on disk.
    pub(crate) async fn record(
        &self,
        actor: &str,
        action: &str,
        details: Details,
    ) -> Result<(), AuditError> {
        match &self.audit {
            Some(audit) => audit.record(actor, action, details).await,
            None => Ok(()),
        }
    }
}

fn auth(config: &Config) -> Result<Auth, TokenFileError> {
    let file = match &config.token_file {
        Some(path) => {
            let file = TokenFile::load(path)?;
            if file.list().is_empty() && config.tokens.is_empty() {
                tracing::warn!(
                    path = %path.display(),
                    "the token file holds no token yet: every request that needs one is refused until `cloud-sync tokens add`"
                );
            }
            Some(Arc::new(file))
        }
        None => None,
    };
    Ok(Auth::new(
        config.tokens.clone(),
        file,
        config.require_read_token,
    ))
}
