//! The PostgreSQL backend's handle: connects, migrates the schema, keeps a
//! pool of connections, and hands each [`Store`] call to the SQL of
//! `ingest.rs` (writes) or `queries.rs` (reads).

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use super::{ingest, migrate, queries, remove};
use crate::config::PostgresConfig;
use crate::model::{
    Bucket, DeviceSummary, ErasureOutcome, ExpiryOutcome, ExpiryPolicy, GatewaySummary,
    IngestOutcome, PreparedBatch, SeriesPoint, StoredDocument, TimeRange,
};
use crate::store::{SeriesQuery, Store, StoreError, StoreFuture};

/// Bound on opening one connection, unless the URL sets `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on waiting for a free pooled connection; past it the request fails
/// (500) and the gateway retries later.
const POOL_WAIT: Duration = Duration::from_secs(30);

/// The PostgreSQL backend. Cheap to clone; clones share one pool.
#[derive(Clone)]
pub struct PostgresStore {
    pool: Pool,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("pool", &self.pool.status())
            .finish()
    }
}

pub(super) fn backend(err: tokio_postgres::Error) -> StoreError {
    StoreError::Backend(with_causes(&err).into())
}

pub(super) fn pool_error(err: deadpool_postgres::PoolError) -> StoreError {
    StoreError::Backend(with_causes(&err).into())
}

/// An error and its sources on one line: tokio-postgres shows only
/// "db error" or "error connecting to server" and keeps the why in its source.
pub(super) fn with_causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some wrappers repeat their source in their own message.
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

impl PostgresStore {
    /// Connects, creates or upgrades the schema, and sets up the pool. Fails
    /// when the server is unreachable, refuses the login, or holds a schema
    /// of a newer collector.
    pub async fn connect(config: &PostgresConfig) -> Result<PostgresStore, StoreError> {
        let mut pg = config.url.config().clone();
        if pg.get_connect_timeout().is_none() {
            pg.connect_timeout(CONNECT_TIMEOUT);
        }
        if pg.get_application_name().is_none() {
            pg.application_name("cloud-sync");
        }
        let (mut client, connection) = pg.connect(NoTls).await.map_err(backend)?;
        let connection = tokio::spawn(connection);
        let durable = synchronous_commit(&client).await?;
        let migrated = migrate::migrate(&mut client).await;
        drop(client);
        // The connection task ends once its client is gone.
        let _ = connection.await;
        migrated?;
        if !durable {
            // A 2xx lets the gateway delete its copy: it must follow a durable commit.
            tracing::warn!(
                "synchronous_commit is off for this database; the collector turns it on \
                 for its own sessions"
            );
            let options = durable_options(pg.get_options());
            pg.options(options);
        }
        let manager = Manager::from_config(
            pg,
            NoTls,
            ManagerConfig {
                // A connection the server closed is noticed and replaced; a
                // broken one that looks open fails one request, which the
                // gateway retries.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|err| StoreError::Backend(with_causes(&err).into()))?;
        tracing::info!(store = %config.url, pool_size = config.pool_size, "postgres store ready");
        Ok(PostgresStore { pool })
    }
}

/// The session `options` of the URL with `synchronous_commit` turned on
/// (the last `-c` of a setting wins).
fn durable_options(options: Option<&str>) -> String {
    match options {
        Some(options) if !options.trim().is_empty() => {
            format!("{options} -c synchronous_commit=on")
        }
        _ => "-c synchronous_commit=on".to_owned(),
    }
}

/// Whether commits in this session wait for the WAL flush (anything but `off`).
async fn synchronous_commit(client: &tokio_postgres::Client) -> Result<bool, StoreError> {
    let row = client
        .query_one("SHOW synchronous_commit", &[])
        .await
        .map_err(backend)?;
    let setting: String = row.try_get(0).map_err(backend)?;
    Ok(setting != "off")
}

impl Store for PostgresStore {
    fn ingest(&self, batch: PreparedBatch) -> StoreFuture<'_, IngestOutcome> {
        Box::pin(async move { ingest::ingest(&self.pool, &batch).await })
    }

    fn devices(&self) -> StoreFuture<'_, Vec<DeviceSummary>> {
        Box::pin(queries::devices(&self.pool, None))
    }

    fn device(&self, device_id: String) -> StoreFuture<'_, Option<DeviceSummary>> {
        Box::pin(async move {
            let mut found = queries::devices(&self.pool, Some(device_id)).await?;
            Ok(found.pop())
        })
    }

    fn points(&self, query: SeriesQuery, limit: usize) -> StoreFuture<'_, Vec<SeriesPoint>> {
        Box::pin(queries::points(&self.pool, query, limit))
    }

    fn series_bounds(&self, query: SeriesQuery) -> StoreFuture<'_, Option<(i64, i64)>> {
        Box::pin(queries::series_bounds(&self.pool, query))
    }

    fn aggregate(&self, query: SeriesQuery, step_ns: i64) -> StoreFuture<'_, Vec<Bucket>> {
        Box::pin(queries::aggregate(&self.pool, query, step_ns))
    }

    fn documents(
        &self,
        device_id: String,
        range: TimeRange,
        limit: usize,
    ) -> StoreFuture<'_, Vec<StoredDocument>> {
        Box::pin(queries::documents(&self.pool, device_id, range, limit))
    }

    fn gateways(&self) -> StoreFuture<'_, Vec<GatewaySummary>> {
        Box::pin(queries::gateways(&self.pool))
    }

    fn expire(&self, policy: ExpiryPolicy) -> StoreFuture<'_, ExpiryOutcome> {
        Box::pin(async move { remove::expire(&self.pool, &policy).await })
    }

    fn erase_device(&self, device_id: String) -> StoreFuture<'_, ErasureOutcome> {
        Box::pin(async move { remove::erase_device(&self.pool, &device_id).await })
    }

    fn flush(&self) -> StoreFuture<'_, ()> {
        // Every acknowledged batch was committed before its answer.
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durability_is_added_after_the_urls_options() {
        assert_eq!(durable_options(None), "-c synchronous_commit=on");
        assert_eq!(
            durable_options(Some("-csearch_path=t -csynchronous_commit=off")),
            "-csearch_path=t -csynchronous_commit=off -c synchronous_commit=on"
        );
    }

    #[test]
    fn errors_keep_their_causes() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("error connecting to server")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let refused = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        assert_eq!(
            with_causes(&Outer(refused)),
            "error connecting to server: refused"
        );
    }
}
