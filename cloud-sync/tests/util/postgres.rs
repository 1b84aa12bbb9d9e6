//! PostgreSQL for tests: the server named by `CLOUD_SYNC_TEST_POSTGRES`
//! (default `postgres://postgres@127.0.0.1:5432/test`), one fresh schema per
//! test (`test_<random>`, reached through `options=-csearch_path=...`),
//! dropped when the test ends, passed or not.
//!
//! Under `CI=true` an unreachable server fails the test; elsewhere the
//! PostgreSQL tests skip, and the test binary says so in one line.

use std::io::Write;
use std::sync::{Once, OnceLock};
use std::time::Duration;

use cloud_sync::config::PostgresConfig;
use tokio_postgres::{Client, NoTls};

/// The environment variable naming the test server.
pub const URL_VAR: &str = "CLOUD_SYNC_TEST_POSTGRES";
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The server URL for tests.
pub fn base_url() -> String {
    std::env::var(URL_VAR).unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

/// Whether PostgreSQL tests must run (CI) rather than skip.
fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

/// Connects to `url`, with the connection driven on the current runtime.
pub async fn connect(url: &str) -> Result<Client, tokio_postgres::Error> {
    let mut config: tokio_postgres::Config = url.parse()?;
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(Duration::from_secs(5));
    }
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Whether the server answers; decided once per test binary.
async fn available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    static SKIP_NOTICE: Once = Once::new();
    if let Some(&known) = AVAILABLE.get() {
        return known;
    }
    let url = base_url();
    let reachable = match connect(&url).await {
        Ok(_) => true,
        Err(err) if required() => panic!(
            "CI=true requires PostgreSQL, but {URL_VAR} ({}) is unreachable: {err}: {}",
            shown(&url),
            std::error::Error::source(&err).map_or(String::new(), |s| s.to_string())
        ),
        Err(_) => false,
    };
    let known = *AVAILABLE.get_or_init(|| reachable);
    if !known {
        SKIP_NOTICE.call_once(|| {
            // Straight to stderr: the test harness captures `eprintln!`.
            let _ = writeln!(
                std::io::stderr(),
                "skipping PostgreSQL tests: no server at {} (set {URL_VAR} to a postgres:// URL)",
                shown(&url)
            );
        });
    }
    known
}

/// `url` for messages: the password, if any, left out.
fn shown(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(config) if config.get_password().is_some() => {
            let user = config.get_user().unwrap_or("");
            format!("a server as user {user} (URL with password hidden)")
        }
        _ => url.to_owned(),
    }
}

/// A schema of its own for one test, dropped on drop.
pub struct TestSchema {
    pub name: String,
    base: String,
}

impl TestSchema {
    /// A fresh empty schema, or `None` when the tests are to skip.
    pub async fn create() -> Option<TestSchema> {
        if !available().await {
            return None;
        }
        let base = base_url();
        let name = format!("test_{}", hex::encode(rand::random::<[u8; 8]>()));
        let client = connect(&base).await.expect("connect to the test server");
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .expect("create the test schema");
        Some(TestSchema { name, base })
    }

    /// The server URL with this schema first in the search path.
    pub fn url(&self) -> String {
        let separator = if self.base.contains('?') { '&' } else { '?' };
        format!(
            "{}{separator}options=-csearch_path%3D{}",
            self.base, self.name
        )
    }

    /// A collector store config for this schema with `pool_size` connections.
    pub fn config(&self, pool_size: usize) -> PostgresConfig {
        let mut config = PostgresConfig::new(&self.url()).expect("a valid test URL");
        config.pool_size = pool_size;
        config
    }

    /// A plain client inside the schema, to look at the tables.
    pub async fn client(&self) -> Client {
        connect(&self.url())
            .await
            .expect("connect to the test schema")
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        // Drop runs outside any runtime (or inside a dying one): use a thread of its own.
        let (base, name) = (self.base.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let client = connect(&base).await?;
                client
                    .batch_execute(&format!(
                        "SET lock_timeout = '20s'; DROP SCHEMA IF EXISTS {name} CASCADE"
                    ))
                    .await
            })?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(())
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            let _ = writeln!(
                std::io::stderr(),
                "could not drop test schema {}",
                self.name
            );
        }
    }
}
