//! Helpers shared by the integration tests: building batches and SenML
//! payloads, driving the router in-process, running a real server, and
//! fresh stores of either backend (`backend.rs`, `postgres.rs`).

#![allow(dead_code)] // each test binary uses a different subset

pub mod backend;
pub mod crash;
pub mod pki;
pub mod postgres;

use std::net::SocketAddr;
use std::path::Path;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use cloud_sync::{router, AppState, Config, Server};
use http_body_util::BodyExt;
use serde_bytes::ByteBuf;
use telemetry::senml::{encode_pack, RawRecord};
use telemetry::{encode_batch, Envelope, SyncBatch, Value};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

pub const TOKEN: &str = "test-token-0123456789";
pub const SPOOL_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
pub const SPOOL_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
/// A fixed "now" for envelopes: 2023-11-14T22:13:20Z in ms.
pub const RECEIVED_AT: u64 = 1_700_000_000_000;

/// A config storing in `dir`, bound to a free loopback port.
pub fn config(dir: &Path) -> Config {
    let mut config = Config::new(dir, vec![TOKEN.to_string()]);
    config.listen = "127.0.0.1:0".parse().unwrap();
    config
}

/// A router over the sled store in `dir`, with its state.
pub async fn app(dir: &Path) -> (Router, AppState) {
    app_with(config(dir)).await
}

pub async fn app_with(config: Config) -> (Router, AppState) {
    let state = AppState::open(&config).await.unwrap();
    (router(state.clone()), state)
}

/// One SenML record with a value, a name and an absolute time.
pub fn reading(name: &str, time: f64, value: Value, unit: Option<&str>) -> RawRecord {
    RawRecord {
        name: Some(name.into()),
        time: Some(time),
        value: Some(value),
        unit: unit.map(Into::into),
        ..RawRecord::default()
    }
}

/// A SenML-CBOR pack of `records`.
pub fn senml(records: &[RawRecord]) -> Vec<u8> {
    encode_pack(records)
}

pub fn envelope(seq: u64, device_id: &str, payload: Vec<u8>) -> Envelope {
    Envelope {
        seq,
        device_id: device_id.into(),
        topic: format!("devices/{device_id}/telemetry"),
        received_at: RECEIVED_AT + seq,
        payload: ByteBuf::from(payload),
    }
}

/// An envelope holding one float reading `name` = `value` at `time` seconds.
pub fn float_envelope(seq: u64, device_id: &str, name: &str, time: f64, value: f64) -> Envelope {
    envelope(
        seq,
        device_id,
        senml(&[reading(name, time, Value::Float(value), Some("Cel"))]),
    )
}

pub fn batch(gateway_id: &str, spool_id: &str, envelopes: Vec<Envelope>) -> SyncBatch {
    SyncBatch {
        gateway_id: gateway_id.into(),
        spool_id: spool_id.into(),
        backlog: 0,
        envelopes,
    }
}

/// The answer of a request: status and JSON body (`Null` when not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub json: serde_json::Value,
    pub text: String,
}

async fn answer(response: axum::response::Response) -> Answer {
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Answer { status, json, text }
}

/// POSTs a raw body to `/v1/batches` through `router.oneshot`.
pub async fn post_raw(
    router: &Router,
    body: Vec<u8>,
    token: Option<&str>,
    content_encoding: Option<&str>,
) -> Answer {
    let mut request = Request::post("/v1/batches").header(header::CONTENT_TYPE, "application/cbor");
    if let Some(token) = token {
        request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
    }
    if let Some(encoding) = content_encoding {
        request = request.header(header::CONTENT_ENCODING, encoding);
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::from(body)).unwrap())
        .await
        .unwrap();
    answer(response).await
}

/// POSTs a batch with the right token; panics unless it answers 200.
pub async fn post_batch(router: &Router, batch: &SyncBatch) -> (u64, u64) {
    let answer = post_raw(router, encode_batch(batch), Some(TOKEN), None).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.text);
    (
        answer.json["accepted"].as_u64().unwrap(),
        answer.json["duplicates"].as_u64().unwrap(),
    )
}

/// GETs `uri` through `router.oneshot`.
pub async fn get(router: &Router, uri: &str) -> Answer {
    let response = router
        .clone()
        .oneshot(Request::get(uri).body(Body::empty()).unwrap())
        .await
        .unwrap();
    answer(response).await
}

/// GETs `uri`, asserting 200, and returns the JSON.
pub async fn get_ok(router: &Router, uri: &str) -> serde_json::Value {
    let answer = get(router, uri).await;
    assert_eq!(answer.status, StatusCode::OK, "{uri}: {}", answer.text);
    answer.json
}

/// A collector serving on a real socket until [`TestServer::stop`].
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    pub async fn start(config: Config) -> TestServer {
        let server = Server::bind(config).await.unwrap();
        let addr = server.local_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        TestServer {
            addr,
            shutdown,
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn https_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// Cancels, waits for the drain and the final flush.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}
