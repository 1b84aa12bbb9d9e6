//! Storage behind one trait ([`Store`]) so that the collector can run on the
//! embedded sled store (the default) or, later, on PostgreSQL.

mod backend;
mod intervals;
mod keys;
mod sled;

pub use self::backend::{SeriesQuery, Store, StoreError, StoreFuture};
pub use self::sled::SledStore;
