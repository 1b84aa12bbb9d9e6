//! A throwaway PostgreSQL schema for `bench collector`: created on the
//! server the tests use (`CLOUD_SYNC_TEST_POSTGRES`), handed to the real
//! collector through `options=-csearch_path=...` (the collector makes its
//! tables there), dropped afterwards. The same isolation as
//! `cloud-sync/tests/util/postgres.rs`.
//!
//! The benchmark talks to PostgreSQL only to create and drop the schema;
//! the readings go in and out through the collector's HTTP API.

use std::time::Duration;

use anyhow::Context;
use tokio_postgres::{Client, NoTls};

/// The server `bench collector` uses unless told otherwise (the tests' default).
pub(super) const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A schema of the benchmark's own; [`Schema::drop`] removes it.
pub(super) struct Schema {
    base: String,
    pub(super) name: String,
}

impl Schema {
    /// Creates `bench_<random>` on the server at `base`; fails when the
    /// server is unreachable (within 5 s) or refuses.
    pub(super) async fn create(base: &str) -> anyhow::Result<Schema> {
        let name = format!("bench_{:016x}", rand::random::<u64>());
        connect(base)
            .await?
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .context("create schema")?;
        Ok(Schema {
            base: base.to_owned(),
            name,
        })
    }

    /// The server URL with this schema first in the search path.
    pub(super) fn url(&self) -> String {
        let separator = if self.base.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}options=-csearch_path%3D{}",
            self.base, self.name
        )
    }

    /// Drops the schema and everything the collector made in it. Call it
    /// after the collector has stopped, or the drop waits for its locks.
    pub(super) async fn drop(self) -> anyhow::Result<()> {
        connect(&self.base)
            .await?
            .batch_execute(&format!(
                "SET lock_timeout = '20s'; DROP SCHEMA IF EXISTS {} CASCADE",
                self.name
            ))
            .await
            .with_context(|| format!("drop schema {}", self.name))
    }
}

/// Connects to `url`, the connection driven on the current runtime.
async fn connect(url: &str) -> anyhow::Result<Client> {
    let mut config: tokio_postgres::Config = url.parse().context("not a postgres:// URL")?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    let (client, connection) = config.connect(NoTls).await.context("connect")?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// `url` for messages and reports, without its password.
pub(super) fn shown(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(config) if config.get_password().is_some() => {
            let user = config.get_user().unwrap_or("");
            format!("a server as user {user} (URL with password hidden)")
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_goes_into_the_search_path() {
        let schema = Schema {
            base: DEFAULT_URL.to_owned(),
            name: "bench_1".to_owned(),
        };
        assert_eq!(
            schema.url(),
            "postgres://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dbench_1"
        );
        let with_query = Schema {
            base: format!("{DEFAULT_URL}?sslmode=disable"),
            name: "bench_1".to_owned(),
        };
        assert!(with_query
            .url()
            .ends_with("?sslmode=disable&options=-csearch_path%3Dbench_1"));
    }

    #[test]
    fn passwords_are_not_shown() {
        assert_eq!(shown(DEFAULT_URL), DEFAULT_URL);
        let hidden = shown("postgres://bench:hunter2@db:5432/x");
        assert!(!hidden.contains("hunter2"), "{hidden}");
    }
}
