//! `POST /v1/batches`: authenticate, apply the gateway's rate limit, read
//! the (decompressed, bounded) body, decode and validate the `SyncBatch`,
//! check that the token may post for its gateway, store it, answer
//! `BatchResponse`.
//!
//! A token bound to a gateway is rate-limited before its body is read, so
//! a flooding gateway costs no decompression; a token good for any gateway
//! (admin, plain) is limited by the batch's `gateway_id` once decoded.
//!
//! The answer leaves only after the store made the batch durable, so a 200
//! lets the gateway delete the envelopes from its spool.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use telemetry::{decode_batch, BatchResponse};

use super::auth::IngestGrant;
use super::error::ApiError;
use super::rate_limit::retry_after_secs;
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
    if let Err(err) = &result {
        state.metrics().observe_refusal("ingest", err.code());
    }
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
    let grant = state.auth().ingest(headers)?;
    if let IngestGrant::Gateway(gateway_id) = &grant {
        rate_limit(state, gateway_id)?;
    }
    check_media(headers)?;
    let bytes = read_body(body, state.max_body_bytes()).await?;
    let limits = state.payload_limits();
    // Decoding a large batch is CPU work: keep it off the async workers.
    let prepared = tokio::task::spawn_blocking(move || decode(&bytes, &limits))
        .await
        .map_err(|_| ApiError::internal())??;
    match &grant {
        IngestGrant::Gateway(bound) if *bound != prepared.gateway_id => {
            return Err(ApiError::forbidden(format!(
                "this token is bound to gateway {bound:?} and cannot post for {:?}",
                prepared.gateway_id
            )));
        }
        IngestGrant::Gateway(_) => {}
        IngestGrant::Any => rate_limit(state, &prepared.gateway_id)?,
    }
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

/// Takes one batch from `gateway_id`'s bucket, or answers 429.
fn rate_limit(state: &AppState, gateway_id: &str) -> Result<(), ApiError> {
    match state
        .rate_limiter()
        .map(|limiter| limiter.check(gateway_id))
    {
        Some(Err(wait)) => Err(ApiError::too_many_requests(retry_after_secs(wait))),
        _ => Ok(()),
    }
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

/// Middleware in front of the decompression layer: bounds the body as it
/// arrives (compressed) by the same limit. Without it, input that
/// decompresses to little or nothing (zstd skippable frames, empty gzip
/// members) could stream in for ever; with it, the work per request is
/// bounded on both sides of the decompressor.
pub async fn limit_raw_body(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let limit = state.max_body_bytes();
    next.run(request.map(|body| Body::new(Limited::new(body, limit))))
        .await
}

/// Reads at most `limit` decompressed bytes: a compression bomb stops at
/// the limit instead of inflating.
async fn read_body(body: Body, limit: usize) -> Result<axum::body::Bytes, ApiError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if is_length_limit(err.as_ref()) => Err(ApiError::payload_too_large(limit)),
        Err(_) => Err(ApiError::bad_request(
            "request body could not be read or decompressed",
        )),
    }
}

/// Whether `err` is, or was caused by, a [`LengthLimitError`]: of this
/// handler's limit, or of [`limit_raw_body`]'s, which reaches here wrapped
/// by the decompressor in an `io::Error` (whose `source()` skips the
/// wrapped error, hence `get_ref`).
fn is_length_limit(err: &(dyn std::error::Error + 'static)) -> bool {
    if err.is::<LengthLimitError>() {
        return true;
    }
    if let Some(inner) = err
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
    {
        if is_length_limit(inner) {
            return true;
        }
    }
    err.source().is_some_and(is_length_limit)
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
