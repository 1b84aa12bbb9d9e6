//! A fake collector query API: serves canned points for
//! `GET /v1/devices/{id}/points`, filtered by name and time range as the real
//! one does, 404 for unknown devices.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use firmware_sim::{Ledger, Reading};
use serde_json::{json, Value as Json_};
use telemetry::senml::Value;

/// Stored points per device: (name, time, point json).
type Store = Arc<Mutex<HashMap<String, Vec<(String, f64, Json_)>>>>;

pub struct FakeCollector {
    pub url: String,
    store: Store,
    /// Query strings received, to check what the verifier asks.
    pub queries: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

#[derive(serde::Deserialize)]
struct Params {
    name: String,
    from: f64,
    to: f64,
    limit: usize,
}

impl FakeCollector {
    pub async fn start() -> FakeCollector {
        let store: Store = Arc::default();
        let queries: Arc<Mutex<Vec<String>>> = Arc::default();
        let app = Router::new()
            .route("/v1/devices/{id}/points", get(points))
            .with_state((store.clone(), queries.clone()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FakeCollector {
            url: format!("http://{addr}"),
            store,
            queries,
            task,
        }
    }

    /// Stores `reading` as the collector would.
    pub fn store(&self, reading: &Reading) {
        self.store_as(reading, point_json(reading));
    }

    /// Stores a point for `reading`'s device, name and time with any body.
    pub fn store_as(&self, reading: &Reading, point: Json_) {
        self.store
            .lock()
            .unwrap()
            .entry(reading.device_id.clone())
            .or_default()
            .push((reading.name.clone(), reading.time, point));
    }

    pub fn store_all(&self, ledger: &Ledger) {
        for reading in ledger {
            self.store(reading);
        }
    }
}

impl Drop for FakeCollector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The JSON the query API returns for a reading.
pub fn point_json(reading: &Reading) -> Json_ {
    let (value, kind) = match &reading.value {
        Value::Float(v) => (json!(v), "float"),
        Value::Bool(b) => (json!(b), "bool"),
        Value::String(s) => (json!(s), "string"),
        Value::Bytes(b) => (json!(b), "bytes"),
    };
    json!({"time": reading.time, "value": value, "type": kind, "unit": reading.unit})
}

async fn points(
    State((store, queries)): State<(Store, Arc<Mutex<Vec<String>>>)>,
    Path(id): Path<String>,
    Query(params): Query<Params>,
    raw: axum::extract::RawQuery,
) -> Result<Json<Json_>, StatusCode> {
    queries.lock().unwrap().push(raw.0.unwrap_or_default());
    let store = store.lock().unwrap();
    let points = store.get(&id).ok_or(StatusCode::NOT_FOUND)?;
    let mut selected: Vec<&(String, f64, Json_)> = points
        .iter()
        .filter(|(name, time, _)| *name == params.name && *time >= params.from && *time < params.to)
        .collect();
    selected.sort_by(|a, b| a.1.total_cmp(&b.1));
    let points: Vec<Json_> = selected
        .into_iter()
        .take(params.limit)
        .map(|(_, _, p)| p.clone())
        .collect();
    Ok(Json(
        json!({"device_id": id, "name": params.name, "points": points}),
    ))
}
