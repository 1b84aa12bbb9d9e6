//! The read side: devices, points, aggregates, documents and gateways.
//!
//! Every time parameter is `f64` seconds since the epoch; `from` is
//! inclusive, `to` exclusive, both default to the whole series. Unknown
//! query parameters are refused with 400 so that a typo never silently
//! widens a query.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use telemetry::validate_device_id;

use super::error::ApiError;
use super::extract::{ApiPath, ApiQuery};
use super::json;
use super::routes::{DEFAULT_POINTS_LIMIT, MAX_BUCKETS, MAX_POINTS_LIMIT};
use crate::aggregate::bucket_count;
use crate::model::{DeviceSummary, TimeRange, NANOS_PER_SECOND};
use crate::state::AppState;
use crate::store::SeriesQuery;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointsParams {
    name: String,
    from: Option<f64>,
    to: Option<f64>,
    limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateParams {
    name: String,
    from: Option<f64>,
    to: Option<f64>,
    /// Bucket width, seconds.
    step: f64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DocumentParams {
    from: Option<f64>,
    to: Option<f64>,
    limit: Option<usize>,
}

/// Refuses every query parameter.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

pub async fn devices(
    State(state): State<AppState>,
    ApiQuery(NoParams {}): ApiQuery<NoParams>,
) -> Result<Json<json::Devices>, ApiError> {
    let devices = state.store().devices().await?;
    Ok(Json(json::Devices {
        devices: devices.into_iter().map(Into::into).collect(),
    }))
}

pub async fn points(
    State(state): State<AppState>,
    ApiPath(device_id): ApiPath<String>,
    ApiQuery(params): ApiQuery<PointsParams>,
) -> Result<Json<json::Points>, ApiError> {
    let range = time_range(params.from, params.to)?;
    let limit = limit(params.limit)?;
    known_device(&state, &device_id).await?;
    let query = SeriesQuery {
        device_id,
        name: params.name,
        range,
    };
    let points = state.store().points(query.clone(), limit).await?;
    Ok(Json(json::Points {
        device_id: query.device_id,
        name: query.name,
        points: points.into_iter().map(Into::into).collect(),
    }))
}

pub async fn aggregates(
    State(state): State<AppState>,
    ApiPath(device_id): ApiPath<String>,
    ApiQuery(params): ApiQuery<AggregateParams>,
) -> Result<Json<json::Aggregates>, ApiError> {
    let range = time_range(params.from, params.to)?;
    if !params.step.is_finite() || params.step <= 0.0 {
        return Err(ApiError::bad_request(
            "step must be a positive number of seconds",
        ));
    }
    let step_ns = (params.step * NANOS_PER_SECOND as f64).round();
    if step_ns < 1.0 {
        return Err(ApiError::bad_request("step must be at least 1 ns"));
    }
    // Saturates for absurd steps: one bucket then spans everything.
    let step_ns = step_ns as i64;
    known_device(&state, &device_id).await?;
    let query = SeriesQuery {
        device_id,
        name: params.name,
        range,
    };
    // An open side of the window ends at the data, so that `step` alone over
    // a short series is fine while from=0&step=1 over years is refused.
    let window = match (range.from, range.to) {
        (Some(from), Some(to)) => Some((from, to)),
        _ => state
            .store()
            .series_bounds(query.clone())
            .await?
            .map(|(first, last)| {
                (
                    range.from.unwrap_or(first),
                    range.to.unwrap_or(last.saturating_add(1)),
                )
            }),
    };
    if let Some((from, to)) = window {
        let buckets = bucket_count(from, to, step_ns);
        if buckets > MAX_BUCKETS as u128 {
            return Err(ApiError::bad_request(format!(
                "step of {} s makes {buckets} buckets over the range, the limit is {MAX_BUCKETS}",
                params.step
            )));
        }
    }
    let buckets = state.store().aggregate(query.clone(), step_ns).await?;
    Ok(Json(json::Aggregates {
        device_id: query.device_id,
        name: query.name,
        step: params.step,
        buckets: buckets.into_iter().map(Into::into).collect(),
    }))
}

pub async fn documents(
    State(state): State<AppState>,
    ApiPath(device_id): ApiPath<String>,
    ApiQuery(params): ApiQuery<DocumentParams>,
) -> Result<Json<json::Documents>, ApiError> {
    let range = time_range(params.from, params.to)?;
    let limit = limit(params.limit)?;
    known_device(&state, &device_id).await?;
    let documents = state
        .store()
        .documents(device_id.clone(), range, limit)
        .await?;
    Ok(Json(json::Documents {
        device_id,
        documents: documents.into_iter().map(Into::into).collect(),
    }))
}

pub async fn gateways(
    State(state): State<AppState>,
    ApiQuery(NoParams {}): ApiQuery<NoParams>,
) -> Result<Json<json::Gateways>, ApiError> {
    let gateways = state.store().gateways().await?;
    Ok(Json(json::Gateways {
        gateways: gateways.into_iter().map(Into::into).collect(),
    }))
}

/// 400 for an id that cannot exist, 404 for one never seen.
async fn known_device(state: &AppState, device_id: &str) -> Result<DeviceSummary, ApiError> {
    validate_device_id(device_id)
        .map_err(|err| ApiError::bad_request(format!("invalid device id: {err}")))?;
    state
        .store()
        .device(device_id.to_owned())
        .await?
        .ok_or_else(|| ApiError::not_found(format!("unknown device {device_id:?}")))
}

fn time_range(from: Option<f64>, to: Option<f64>) -> Result<TimeRange, ApiError> {
    let from = from.map(|s| seconds("from", s)).transpose()?;
    let to = to.map(|s| seconds("to", s)).transpose()?;
    if let (Some(from), Some(to)) = (from, to) {
        if from > to {
            return Err(ApiError::bad_request("from must not be after to"));
        }
    }
    Ok(TimeRange { from, to })
}

/// Seconds to nanoseconds; times beyond the `i64` range saturate (they
/// cannot be stored, so the window is the same).
fn seconds(field: &str, seconds: f64) -> Result<i64, ApiError> {
    if !seconds.is_finite() {
        return Err(ApiError::bad_request(format!(
            "{field} must be a finite number of seconds"
        )));
    }
    Ok((seconds * NANOS_PER_SECOND as f64).round() as i64)
}

fn limit(limit: Option<usize>) -> Result<usize, ApiError> {
    match limit.unwrap_or(DEFAULT_POINTS_LIMIT) {
        n @ 1..=MAX_POINTS_LIMIT => Ok(n),
        n => Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_POINTS_LIMIT}, got {n}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        assert_eq!(
            time_range(Some(1.0), Some(2.5)).unwrap(),
            TimeRange {
                from: Some(NANOS_PER_SECOND),
                to: Some(2_500_000_000)
            }
        );
        assert!(time_range(Some(3.0), Some(2.0)).is_err());
        assert!(time_range(Some(f64::NAN), None).is_err());
        assert_eq!(time_range(Some(-1e300), None).unwrap().from, Some(i64::MIN));
    }

    #[test]
    fn limits_are_bounded() {
        assert_eq!(limit(None).unwrap(), DEFAULT_POINTS_LIMIT);
        assert_eq!(limit(Some(MAX_POINTS_LIMIT)).unwrap(), MAX_POINTS_LIMIT);
        assert!(limit(Some(MAX_POINTS_LIMIT + 1)).is_err());
        assert!(limit(Some(0)).is_err());
    }
}
