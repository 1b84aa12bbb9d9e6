//! `POST /v1/batches`: authenticate, read the (decompressed, bounded) body,
//! decode and validate the `SyncBatch`, store it, answer `BatchResponse`.
//!
//! The answer leaves only after the store made the batch durable, so a 200
//! lets the gateway delete the envelopes from its spool.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use telemetry::{decode_batch, BatchResponse};

use super::auth::check_bearer;
use super::error::ApiError;
use crate::ingest::prepare;
use crate::model::PreparedBatch;
use crate::state::AppState;

/// The media type of a `SyncBatch` body.
const CBOR: &str = "application/cbor";

pub async fn post_batch(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let started = Instant::now();
    let result = ingest(&state, &headers, body).await;
    let status = match &result {
        Ok(_) => "ok",
        Err(err) => err.code(),
    };
    state
        .metrics()
        .observe_batch(status, started.elapsed().as_secs_f64());
    match result {
        Ok(answer) => Json(answer).into_response(),
        Err(err) => {
            if err.status().is_client_error() {
                if let Some(suppressed) = state.rejections().pass() {
                    tracing::warn!(
                        code = err.code(),
                        message = err.message(),
                        suppressed,
                        "batch rejected"
                    );
                }
            }
            err.into_response()
        }
    }
}

async fn ingest(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<BatchResponse, ApiError> {
    check_bearer(headers, state.tokens())?;
    check_media(headers)?;
    let bytes = read_body(body, state.max_body_bytes()).await?;
    let limits = state.payload_limits();
    // Decoding a large batch is CPU work: keep it off the async workers.
    let prepared = tokio::task::spawn_blocking(move || decode(&bytes, &limits))
        .await
        .map_err(|_| ApiError::internal())??;
    let gateway_id = prepared.gateway_id.clone();
    let envelopes = prepared.envelopes.len();
    let outcome = state.store().ingest(prepared).await?;
    state.metrics().observe_outcome(&outcome);
    tracing::debug!(
        gateway_id,
        envelopes,
        accepted = outcome.accepted,
        duplicates = outcome.duplicates,
        points = outcome.points,
        documents = outcome.documents,
        "batch stored"
    );
    Ok(BatchResponse {
        accepted: outcome.accepted,
        duplicates: outcome.duplicates,
    })
}

/// Refuses bodies that are not CBOR, and encodings the decompression layer
/// did not remove (it strips `gzip` and `zstd` and passes others through).
fn check_media(headers: &HeaderMap) -> Result<(), ApiError> {
    if let Some(encoding) = headers.get(header::CONTENT_ENCODING) {
        if encoding.as_bytes() != b"identity" {
            return Err(ApiError::unsupported_media_type(
                "content-encoding must be zstd, gzip or identity",
            ));
        }
    }
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let essence = content_type
            .to_str()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim();
        if !essence.eq_ignore_ascii_case(CBOR) {
            return Err(ApiError::unsupported_media_type(format!(
                "content-type must be {CBOR}"
            )));
        }
    }
    Ok(())
}

/// Reads at most `limit` decompressed bytes: a compression bomb stops at
/// the limit instead of inflating.
async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::payload_too_large(limit))
        }
        Err(_) => Err(ApiError::bad_request(
            "request body could not be read or decompressed",
        )),
    }
}

fn decode(bytes: &[u8], limits: &telemetry::Limits) -> Result<PreparedBatch, ApiError> {
    let batch = decode_batch(bytes).map_err(|err| ApiError::bad_request(err.to_string()))?;
    prepare(batch, limits, now_ms()).map_err(|err| ApiError::bad_request(err.to_string()))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
