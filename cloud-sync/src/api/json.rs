//! JSON shapes of the query API, and the conversions from the model into them.
//!
//! ```text
//! GET /v1/devices                 {"devices": [{"device_id", "gateway_id", "last_seen", "measurements", "points", "documents"}]}
//! GET /v1/devices/{id}/points     {"device_id", "name", "points": [{"time", "value", "type", "unit"}]}
//! GET /v1/devices/{id}/aggregates {"device_id", "name", "step", "buckets": [{"start", "count", "min", "max", "avg", "last"}]}
//! GET /v1/devices/{id}/documents  {"device_id", "documents": [{"received_at", "gateway_id", "spool_id", "seq",
//!                                                              "topic", "kind", "reason", "payload"}]}
//! GET /v1/gateways                {"gateways": [{"gateway_id", "spool_id", "last_sync", "backlog", "batches",
//!                                                "accepted", "duplicates"}]}
//! times are f64 seconds since the epoch; value is a number, bool, string or lowercase hex (bytes)
//! ```

use serde::Serialize;
use telemetry::Value;

use crate::model::{
    nanos_to_seconds, Bucket, DeviceSummary, DocumentKind, GatewaySummary, SeriesPoint,
    StoredDocument,
};

fn ms_to_seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// A point value as JSON: floats as numbers, bytes as lowercase hex.
pub fn value_json(value: &Value) -> serde_json::Value {
    match value {
        Value::Float(v) => serde_json::Number::from_f64(*v)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null),
        Value::Bool(b) => serde_json::Value::Bool(*b),
        Value::String(s) => serde_json::Value::String(s.clone()),
        Value::Bytes(b) => serde_json::Value::String(hex::encode(b)),
    }
}

/// The `type` field beside a value.
pub fn value_type(value: &Value) -> &'static str {
    match value {
        Value::Float(_) => "float",
        Value::Bool(_) => "bool",
        Value::String(_) => "string",
        Value::Bytes(_) => "bytes",
    }
}

#[derive(Debug, Serialize)]
pub struct Devices {
    pub devices: Vec<Device>,
}

#[derive(Debug, Serialize)]
pub struct Device {
    pub device_id: String,
    pub gateway_id: String,
    pub last_seen: f64,
    pub measurements: Vec<String>,
    pub points: u64,
    pub documents: u64,
}

impl From<DeviceSummary> for Device {
    fn from(d: DeviceSummary) -> Device {
        Device {
            device_id: d.device_id,
            gateway_id: d.gateway_id,
            last_seen: ms_to_seconds(d.last_seen_ms),
            measurements: d.measurements,
            points: d.points,
            documents: d.documents,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Points {
    pub device_id: String,
    pub name: String,
    pub points: Vec<PointJson>,
}

#[derive(Debug, Serialize)]
pub struct PointJson {
    pub time: f64,
    pub value: serde_json::Value,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub unit: Option<String>,
}

impl From<SeriesPoint> for PointJson {
    fn from(p: SeriesPoint) -> PointJson {
        PointJson {
            time: nanos_to_seconds(p.time_ns),
            value: value_json(&p.value),
            kind: value_type(&p.value),
            unit: p.unit,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Aggregates {
    pub device_id: String,
    pub name: String,
    /// The step as requested, seconds.
    pub step: f64,
    pub buckets: Vec<BucketJson>,
}

#[derive(Debug, Serialize)]
pub struct BucketJson {
    pub start: f64,
    pub count: u64,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub avg: Option<f64>,
    pub last: serde_json::Value,
}

impl From<Bucket> for BucketJson {
    fn from(b: Bucket) -> BucketJson {
        BucketJson {
            start: nanos_to_seconds(b.start_ns),
            count: b.count,
            min: b.min,
            max: b.max,
            avg: b.avg,
            last: value_json(&b.last),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Documents {
    pub device_id: String,
    pub documents: Vec<DocumentJson>,
}

#[derive(Debug, Serialize)]
pub struct DocumentJson {
    pub received_at: f64,
    pub gateway_id: String,
    pub spool_id: String,
    pub seq: u64,
    pub topic: String,
    pub kind: DocumentKind,
    pub reason: String,
    /// The payload bytes, lowercase hex.
    pub payload: String,
}

impl From<StoredDocument> for DocumentJson {
    fn from(d: StoredDocument) -> DocumentJson {
        DocumentJson {
            received_at: ms_to_seconds(d.received_at_ms),
            gateway_id: d.gateway_id,
            spool_id: d.spool_id,
            seq: d.seq,
            topic: d.document.topic,
            kind: d.document.kind,
            reason: d.document.reason,
            payload: hex::encode(&d.document.payload),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Gateways {
    pub gateways: Vec<Gateway>,
}

#[derive(Debug, Serialize)]
pub struct Gateway {
    pub gateway_id: String,
    pub spool_id: String,
    pub last_sync: f64,
    pub backlog: u64,
    pub batches: u64,
    pub accepted: u64,
    pub duplicates: u64,
}

impl From<GatewaySummary> for Gateway {
    fn from(g: GatewaySummary) -> Gateway {
        Gateway {
            gateway_id: g.gateway_id,
            spool_id: g.spool_id,
            last_sync: ms_to_seconds(g.last_sync_ms),
            backlog: g.backlog,
            batches: g.batches,
            accepted: g.accepted,
            duplicates: g.duplicates,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_render_as_documented() {
        assert_eq!(value_json(&Value::Float(1.5)), serde_json::json!(1.5));
        assert_eq!(value_json(&Value::Bool(true)), serde_json::json!(true));
        assert_eq!(
            value_json(&Value::String("on".into())),
            serde_json::json!("on")
        );
        assert_eq!(
            value_json(&Value::Bytes(vec![0xAB, 0x01])),
            serde_json::json!("ab01")
        );
        assert_eq!(value_type(&Value::Bytes(vec![])), "bytes");
    }
}
