//! Fresh stores of either backend for the shared storage suite
//! (`tests/suite/`): the suite is written against `Arc<dyn Store>` and the
//! router over it, and runs once per backend.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use cloud_sync::store::{PostgresStore, SledStore, Store};
use cloud_sync::tokens::{Role, TokenFile};
use cloud_sync::{router, AppState};

use super::postgres::TestSchema;

/// An empty store for one test, and what must outlive it (its directory or
/// its schema).
pub struct TestStore {
    pub store: Arc<dyn Store>,
    /// The store's home, removed when the test ends.
    pub home: Home,
}

pub enum Home {
    /// The sled store's directory, and the store for raw reads of its trees.
    Dir(tempfile::TempDir, SledStore),
    Schema(TestSchema),
}

impl TestStore {
    /// A router over this store and its state (fresh metrics).
    pub fn app(&self) -> (Router, AppState) {
        let config = super::config(Path::new("unused"));
        let state = AppState::with_store(&config, Arc::clone(&self.store)).expect("no token file");
        (router(state.clone()), state)
    }

    /// A router over this store whose config has, in `dir`, a token file
    /// with one admin token (returned) and an audit log (`dir/audit.log`).
    /// Batches still go in with the plain test token; reads stay open.
    pub fn admin_app(&self, dir: &Path) -> (Router, AppState, String) {
        let mut config = super::config(Path::new("unused"));
        config.token_file = Some(dir.join("tokens"));
        config.audit_file = Some(dir.join("audit.log"));
        let (_, admin) = TokenFile::load(&dir.join("tokens"))
            .unwrap()
            .add(Role::Admin)
            .unwrap();
        let state = AppState::with_store(&config, Arc::clone(&self.store)).expect("state opens");
        (router(state.clone()), state, admin)
    }

    /// Where the raw records still hold `needle`: the sled trees, or the
    /// PostgreSQL tables, with a key, a value or a column containing it.
    pub async fn holding(&self, needle: &str) -> Vec<String> {
        match &self.home {
            Home::Dir(_, sled) => sled
                .trees_mentioning(needle.as_bytes().to_vec())
                .await
                .unwrap(),
            Home::Schema(schema) => {
                let db = schema.client().await;
                let tables: Vec<String> = db
                    .query(
                        "SELECT table_name::text FROM information_schema.tables
                         WHERE table_schema = current_schema() ORDER BY 1",
                        &[],
                    )
                    .await
                    .unwrap()
                    .iter()
                    .map(|row| row.get(0))
                    .collect();
                assert!(tables.contains(&"points".to_owned()), "{tables:?}");
                let mut found = Vec::new();
                for table in tables {
                    // The whole row as text: every column, bytea as hex.
                    let sql =
                        format!("SELECT count(*) FROM {table} AS r WHERE strpos(r::text, $1) > 0");
                    let n: i64 = db.query_one(&sql, &[&needle]).await.unwrap().get(0);
                    if n > 0 {
                        found.push(table);
                    }
                }
                found
            }
        }
    }
}

/// A sled store in a fresh temporary directory.
pub async fn sled() -> Option<TestStore> {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    Some(TestStore {
        store: Arc::new(store.clone()),
        home: Home::Dir(dir, store),
    })
}

/// A PostgreSQL store in a fresh schema, or `None` when the tests skip.
pub async fn postgres() -> Option<TestStore> {
    let schema = TestSchema::create().await?;
    let store = PostgresStore::connect(&schema.config(4)).await.unwrap();
    Some(TestStore {
        store: Arc::new(store),
        home: Home::Schema(schema),
    })
}
