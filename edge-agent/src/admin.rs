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
    pub broker: broker::BrokerMetrics,
    pub gateway_id: String,
    pub spool: Spool,
    pub uplink: Arc<UplinkState>,
    pub registry: Arc<Registry>,
    pub mqtt_addr: std::net::SocketAddr,
}

/// The body of `GET /healthz`, also read by `edge-agent status`.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct Health {
    pub status: String,
    pub gateway_id: String,
    pub spool_id: String,
    pub mqtt_listen: String,
    pub mqtt: MqttHealth,
    pub spool: SpoolStats,
    /// Arrival of the oldest stored reading, ms since the epoch.
    pub oldest_received_at: Option<u64>,
    pub uplink: UplinkHealth,
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct MqttHealth {
    /// Device connections open now.
    pub connections: i64,
    /// Publishes accepted since start, all QoS.
    pub accepted: u64,
    /// Publishes refused since start, all reasons.
    pub rejected: u64,
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct UplinkHealth {
    /// Unix ms of the last batch the collector stored, null if none yet.
    pub last_success_ms: Option<u64>,
    pub last_error: Option<String>,
}

pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn healthz(State(state): State<AdminState>) -> Json<Health> {
    let last_success = state.uplink.last_success_ms.load(Ordering::Relaxed);
    let broker = &state.broker;
    let sum = |family: Vec<u64>| family.into_iter().sum::<u64>();
    Json(Health {
        status: "ok".into(),
        gateway_id: state.gateway_id.clone(),
        spool_id: state.spool.spool_id().to_string(),
        mqtt_listen: state.mqtt_addr.to_string(),
        mqtt: MqttHealth {
            connections: broker.connections.get(),
            accepted: sum((0..=2)
                .map(|qos| {
                    broker
                        .publishes_accepted
                        .get_or_create(&broker::QosLabel { qos })
                        .get()
                })
                .collect()),
            rejected: sum(["topic", "too_large", "malformed", "too_deep"]
                .iter()
                .map(|reason| {
                    broker
                        .publishes_rejected
                        .get_or_create(&broker::ReasonLabel { reason })
                        .get()
                })
                .collect()),
        },
        spool: state.spool.stats(),
        oldest_received_at: state.spool.oldest_received_at(),
        uplink: UplinkHealth {
            last_success_ms: (last_success > 0).then_some(last_success),
            last_error: state.uplink.last_error.lock().ok().and_then(|e| e.clone()),
        },
    })
}

async fn metrics(State(state): State<AdminState>) -> Response {
    state.spool.refresh_oldest_age();
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
