//! Operational endpoints: liveness, Prometheus metrics, and the JSON
//! answers for unknown paths and methods.

use axum::extract::State;
use axum::http::{header, Uri};
use axum::response::IntoResponse;

use super::error::ApiError;
use crate::state::AppState;

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics().encode(),
    )
}

pub async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(format!("no endpoint at {}", uri.path()))
}

pub async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}
