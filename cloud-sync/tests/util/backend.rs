//! Fresh stores of either backend for the shared storage suite
//! (`tests/suite/`): the suite is written against `Arc<dyn Store>` and the
//! router over it, and runs once per backend.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use cloud_sync::store::{PostgresStore, SledStore, Store};
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
    Dir(tempfile::TempDir),
    Schema(TestSchema),
}

impl TestStore {
    /// A router over this store and its state (fresh metrics).
    pub fn app(&self) -> (Router, AppState) {
        let config = super::config(Path::new("unused"));
        let state = AppState::with_store(&config, Arc::clone(&self.store)).expect("no token file");
        (router(state.clone()), state)
    }
}

/// A sled store in a fresh temporary directory.
pub async fn sled() -> Option<TestStore> {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open(dir.path()).unwrap();
    Some(TestStore {
        store: Arc::new(store),
        home: Home::Dir(dir),
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
