//! Admin actions over HTTP: `DELETE /v1/devices/{id}` erases one device
//! (every point, document and summary of it, nothing of any other), for an
//! admin token only, recorded in the audit log before the answer.
//!
//! ```text
//! DELETE /v1/devices/dev-1   Authorization: Bearer <admin token>
//! 200 {"device_id": "dev-1", "points": 1440, "documents": 2, "measurements": 3}
//! ```
//!
//! Erasure is idempotent: a device with nothing stored answers 200 with
//! zeros, and repeating a DELETE whose answer was lost finishes or repeats
//! it. The 200 leaves only once the removal is durable and its audit line is
//! on disk; if the audit line cannot be written the answer is 500 (the data
//! is gone all the same, and a retry records it).

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde::Serialize;
use telemetry::validate_device_id;

use super::error::ApiError;
use super::extract::ApiPath;
use crate::audit::Details;
use crate::state::AppState;

/// The answer of an erasure: what was removed.
#[derive(Debug, Serialize)]
pub struct Erased {
    pub device_id: String,
    pub points: u64,
    pub documents: u64,
    /// Series (measurement names) that held at least one point.
    pub measurements: u64,
}

pub async fn erase_device(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(device_id): ApiPath<String>,
) -> Result<Json<Erased>, ApiError> {
    let actor = match state.auth().admin(&headers) {
        Ok(actor) => actor,
        Err(err) => {
            state.metrics().observe_refusal("admin", err.code());
            if let Some(suppressed) = state.rejections().pass() {
                tracing::warn!(
                    code = err.code(),
                    reason = err.message(),
                    suppressed,
                    "erasure refused"
                );
            }
            return Err(err);
        }
    };
    validate_device_id(&device_id)
        .map_err(|err| ApiError::bad_request(format!("invalid device id: {err}")))?;
    let outcome = state.store().erase_device(device_id.clone()).await?;
    state.metrics().observe_erasure(&outcome);
    tracing::info!(
        device_id,
        actor = actor.0,
        points = outcome.points,
        documents = outcome.documents,
        measurements = outcome.measurements,
        "device erased"
    );
    let mut details = Details::new();
    details.insert("device".into(), device_id.clone().into());
    details.insert("points".into(), outcome.points.into());
    details.insert("documents".into(), outcome.documents.into());
    details.insert("measurements".into(), outcome.measurements.into());
    if let Err(err) = state.record(&actor.0, "device.erase", details).await {
        // The data is gone; the record of it is not: someone must look.
        tracing::error!(error = %err, device_id, "erased a device but cannot record it in the audit log");
        return Err(ApiError::internal());
    }
    Ok(Json(Erased {
        device_id,
        points: outcome.points,
        documents: outcome.documents,
        measurements: outcome.measurements,
    }))
}
