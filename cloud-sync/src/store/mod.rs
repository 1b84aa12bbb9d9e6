//! Storage behind one trait ([`Store`]) so that the collector runs on the
//! embedded sled store (the default: one process, no setup) or on PostgreSQL
//! (any number of collectors sharing one database).

mod backend;
mod intervals;
mod keys;
mod postgres;
mod sled;

pub use self::backend::{SeriesQuery, Store, StoreError, StoreFuture};
pub use self::postgres::{PostgresStore, SCHEMA_VERSION as POSTGRES_SCHEMA_VERSION};
pub use self::sled::SledStore;
