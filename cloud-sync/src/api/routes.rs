//! The route table of the collector.
//!
//! ```text
//! POST /v1/batches                   ingest/admin token; body SyncBatch (CBOR, optionally zstd/gzip)
//!                                    (the query routes below need a read/admin token
//!                                     when `require_read_token` is on; see auth.rs)
//! GET  /v1/devices
//! GET  /v1/devices/{id}/points       ?name=&from=&to=&limit=
//! GET  /v1/devices/{id}/aggregates   ?name=&from=&to=&step=
//! GET  /v1/devices/{id}/documents    ?from=&to=&limit=
//! GET  /v1/gateways
//!                                    (each query route's answer queues a `data.read`
//!                                     line in the audit log; see audit.rs)
//! DELETE /v1/devices/{id}            admin token; erases the device (admin.rs)
//! GET  /healthz                      200 "ok"
//! GET  /metrics                      Prometheus text
//! GET  /                             the dashboard page (dashboard.rs)
//! GET  /assets/{file}                its scripts and stylesheets
//! ```

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use tower_http::decompression::RequestDecompressionLayer;
use tower_http::trace::TraceLayer;

use super::{admin, audit, auth, batches, dashboard, ops, queries};
use crate::state::AppState;

/// Points (or documents) returned when the query names no limit.
pub const DEFAULT_POINTS_LIMIT: usize = 10_000;
/// Largest `limit` a query may ask for.
pub const MAX_POINTS_LIMIT: usize = 100_000;
/// Most buckets one aggregate query may span.
pub const MAX_BUCKETS: u64 = 100_000;

/// The collector's HTTP service over `state`.
pub fn router(state: AppState) -> Router {
    // Encodings other than gzip/zstd pass through so the handler can refuse
    // them with a JSON body; decompression is lazy and bounded by the handler.
    let decompression = RequestDecompressionLayer::new()
        .gzip(true)
        .zstd(true)
        .pass_through_unaccepted(true);
    // The dashboard's page and scripts stay public (they hold no data and
    // carry the login form); the data behind them is what needs a token.
    let queries = Router::new()
        .route("/v1/devices", get(queries::devices))
        .route("/v1/devices/{id}/points", get(queries::points))
        .route("/v1/devices/{id}/aggregates", get(queries::aggregates))
        .route("/v1/devices/{id}/documents", get(queries::documents))
        .route("/v1/gateways", get(queries::gateways))
        // Inside the token check: only reads that pass it are recorded.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            audit::audit_read,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_read,
        ))
        // Outermost, so refused queries are timed too.
        .route_layer(middleware::from_fn_with_state(state.clone(), timed));
    Router::new()
        .route(
            "/v1/batches",
            post(batches::post_batch)
                .layer(decompression)
                .layer(middleware::from_fn_with_state(
                    state.clone(),
                    batches::limit_raw_body,
                )),
        )
        .merge(queries)
        .route("/v1/devices/{id}", delete(admin::erase_device))
        .route("/healthz", get(ops::healthz))
        .route("/metrics", get(ops::metrics))
        .route("/", get(dashboard::index))
        .route("/assets/{file}", get(dashboard::asset))
        .fallback(ops::not_found)
        .method_not_allowed_fallback(ops::method_not_allowed)
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Observes `cloud_sync_query_duration_seconds` for a query route.
async fn timed(
    State(state): State<AppState>,
    route: MatchedPath,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics()
        .observe_query(route.as_str(), started.elapsed().as_secs_f64());
    response
}
