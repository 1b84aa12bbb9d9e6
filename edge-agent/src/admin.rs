//! The local admin HTTP API: `/healthz` (JSON status) and `/metrics`
//! (Prometheus text). Bound to loopback by default; it has no auth.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::spool::{Spool, SpoolStats};
use crate::uplink::UplinkState;

#[derive(Clone)]
pub struct AdminState {
    pub gateway_id: String,
    pub spool: Spool,
    pub uplink: Arc<UplinkState>,
    pub registry: Arc<Registry>,
    pub mqtt_addr: std::net::SocketAddr,
}

#[derive(Serialize)]
struct Health {
    status: &'static str,
    gateway_id: String,
    spool_id: String,
    mqtt_listen: String,
    spool: SpoolStats,
    uplink: UplinkHealth,
}

#[derive(Serialize)]
struct UplinkHealth {
    /// Unix ms of the last batch the collector stored, null if none yet.
    last_success_ms: Option<u64>,
    last_error: Option<String>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz(State(state): State<AdminState>) -> Json<Health> {
    let last_success = state.uplink.last_success_ms.load(Ordering::Relaxed);
    Json(Health {
        status: "ok",
        gateway_id: state.gateway_id.clone(),
        spool_id: state.spool.spool_id().to_string(),
        mqtt_listen: state.mqtt_addr.to_string(),
        spool: state.spool.stats(),
        uplink: UplinkHealth {
            last_success_ms: (last_success > 0).then_some(last_success),
            last_error: state.uplink.last_error.lock().ok().and_then(|e| e.clone()),
        },
    })
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let mut body = String::new();
    match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
        Ok(()) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
