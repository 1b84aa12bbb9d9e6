//! The HTTP API: routes, handlers, the one error type they answer with, and
//! the dashboard's embedded files.

mod admin;
mod audit;
mod auth;
mod batches;
mod dashboard;
mod error;
mod extract;
mod json;
mod log_gate;
mod ops;
mod queries;
mod rate_limit;
mod routes;

pub(crate) use self::auth::Auth;
pub use self::error::ApiError;
pub(crate) use self::log_gate::LogGate;
pub(crate) use self::rate_limit::RateLimiter;
pub use self::routes::{router, DEFAULT_POINTS_LIMIT, MAX_BUCKETS, MAX_POINTS_LIMIT};
