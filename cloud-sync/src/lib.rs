//! The cloud collector: receives `SyncBatch`es from gateways over HTTP,
//! stores every reading exactly once and answers dashboard queries.
//!
//! The library holds all the logic (the `cloud-sync` binary only parses
//! arguments and calls [`Server::bind`] and [`Server::run`]), so tests drive
//! it directly: [`router`] for in-process requests, [`Server`] for a socket.

mod aggregate;
pub mod api;
pub mod audit;
pub mod config;
mod ingest;
pub mod metrics;
pub mod model;
pub mod retention;
mod server;
mod state;
pub mod store;
mod tls;
pub mod tokens;

pub use api::router;
pub use config::Config;
pub use ingest::{BatchError, SPOOL_ID_LEN};
pub use server::Server;
pub use state::AppState;
