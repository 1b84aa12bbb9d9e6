//! Turns a posted `SyncBatch` into a [`PreparedBatch`]: checks the ids and
//! decodes every payload, so that a store only ever sees typed, valid data.
//!
//! A payload that does not decode is not a reason to refuse the batch: the
//! gateway already accepted it from the device and will never send it again,
//! so it is kept as a document flagged invalid. Only ids that cannot be
//! stored (they are parts of keys) make the whole batch a bad request.
//!
//! Text is kept only where every store can keep it: PostgreSQL's `text`
//! holds no U+0000, so a reading whose string value or unit holds one is
//! kept as an invalid document (its payload intact), and a document's
//! topic or reason shows U+FFFD in its place.

use telemetry::{
    decode_payload, validate_device_id, Decoded, DeviceIdError, Envelope, Limits, Record,
    SyncBatch, Value,
};

use crate::model::{
    seconds_to_nanos, Content, Document, DocumentKind, Point, PreparedBatch, PreparedEnvelope,
};

/// Length of a spool id in hex digits (a random 128-bit id).
pub const SPOOL_ID_LEN: usize = 32;

/// Why a batch is refused as a whole. The gateway must not retry it as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The gateway id is not a valid id; the gateway is misconfigured.
    #[error("gateway_id is invalid: {0}")]
    GatewayId(DeviceIdError),
    /// The spool id is not 32 hex digits; the gateway's spool metadata is broken.
    #[error("spool_id must be {SPOOL_ID_LEN} hex digits, got {0:?}")]
    SpoolId(String),
    /// An envelope names a device id that cannot be stored.
    #[error("envelope {index} (seq {seq}): device_id is invalid: {error}")]
    DeviceId {
        index: usize,
        seq: u64,
        error: DeviceIdError,
    },
    /// Seqs start at 1 and increase strictly within a batch (they are the
    /// dedup key); anything else is a broken gateway.
    #[error("envelope {index}: seq {seq} must be at least 1 and above the previous envelope's ({previous})")]
    Seq {
        index: usize,
        seq: u64,
        previous: u64,
    },
    /// The topic is not under `devices/{device_id}/`, or too long.
    #[error("envelope {index} (seq {seq}): topic must be devices/{{device_id}}/... of at most {MAX_TOPIC_BYTES} bytes")]
    Topic { index: usize, seq: u64 },
    /// `received_at` is past what the store can hold as a time.
    #[error("envelope {index} (seq {seq}): received_at {received_at} ms is not a time before the year 3000")]
    ReceivedAt {
        index: usize,
        seq: u64,
        received_at: u64,
    },
}

/// Longest topic accepted, in bytes: far above `devices/{id}/telemetry`.
pub const MAX_TOPIC_BYTES: usize = 1024;
/// 3000-01-01T00:00:00Z in ms: later arrival times are a broken clock or
/// a broken field, and would overflow nanosecond times.
const MAX_RECEIVED_AT_MS: u64 = 32_503_680_000_000;

/// Validates `batch` and decodes its payloads with `limits`. `synced_at_ms` is
/// the collector's clock, recorded as the gateway's last sync.
pub fn prepare(
    batch: SyncBatch,
    limits: &Limits,
    synced_at_ms: u64,
) -> Result<PreparedBatch, BatchError> {
    validate_device_id(&batch.gateway_id).map_err(BatchError::GatewayId)?;
    let spool_id = normalize_spool_id(&batch.spool_id)?;
    let mut previous = 0;
    for (index, envelope) in batch.envelopes.iter().enumerate() {
        let seq = envelope.seq;
        if seq <= previous {
            return Err(BatchError::Seq {
                index,
                seq,
                previous,
            });
        }
        previous = seq;
        validate_device_id(&envelope.device_id).map_err(|error| BatchError::DeviceId {
            index,
            seq,
            error,
        })?;
        let under_device = envelope
            .topic
            .strip_prefix("devices/")
            .and_then(|rest| rest.strip_prefix(envelope.device_id.as_str()))
            .is_some_and(|rest| rest.len() > 1 && rest.starts_with('/'));
        if !under_device || envelope.topic.len() > MAX_TOPIC_BYTES {
            return Err(BatchError::Topic { index, seq });
        }
        if envelope.received_at > MAX_RECEIVED_AT_MS {
            return Err(BatchError::ReceivedAt {
                index,
                seq,
                received_at: envelope.received_at,
            });
        }
    }
    let envelopes = batch
        .envelopes
        .into_iter()
        .map(|envelope| prepare_envelope(envelope, limits))
        .collect();
    Ok(PreparedBatch {
        gateway_id: batch.gateway_id,
        spool_id,
        backlog: batch.backlog,
        synced_at_ms,
        envelopes,
    })
}

/// Lowercases a spool id so that one spool has one dedup key prefix.
fn normalize_spool_id(spool_id: &str) -> Result<String, BatchError> {
    if spool_id.len() == SPOOL_ID_LEN && spool_id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(spool_id.to_ascii_lowercase())
    } else {
        // Quote at most a prefix: the id came from the network.
        let shown: String = spool_id.chars().take(SPOOL_ID_LEN + 8).collect();
        Err(BatchError::SpoolId(shown))
    }
}

fn prepare_envelope(envelope: Envelope, limits: &Limits) -> PreparedEnvelope {
    let content = match decode_payload(&envelope.payload, limits, envelope.received_at) {
        Ok(Decoded::Senml(records)) => match to_points(records) {
            Ok(points) => Content::Points(points),
            Err(reason) => document(&envelope, DocumentKind::Invalid, reason),
        },
        Ok(Decoded::Opaque(reason)) => {
            document(&envelope, DocumentKind::Opaque, reason.to_string())
        }
        Err(error) => document(&envelope, DocumentKind::Invalid, error.to_string()),
    };
    PreparedEnvelope {
        seq: envelope.seq,
        device_id: envelope.device_id,
        received_at_ms: envelope.received_at,
        content,
    }
}

fn document(envelope: &Envelope, kind: DocumentKind, reason: String) -> Content {
    Content::Document(Document {
        topic: without_nul(&envelope.topic),
        payload: envelope.payload.to_vec(),
        kind,
        reason: without_nul(&reason),
    })
}

/// `text` with U+0000 replaced by U+FFFD (the replacement character).
fn without_nul(text: &str) -> String {
    text.replace('\0', "\u{fffd}")
}

/// Resolved SenML records to points; fails when a time cannot be keyed.
fn to_points(records: Vec<Record>) -> Result<Vec<Point>, String> {
    records
        .into_iter()
        .enumerate()
        .map(|(index, record)| {
            let time_ns = seconds_to_nanos(record.time).ok_or_else(|| {
                format!(
                    "record {index}: time {} is outside the storable range",
                    record.time
                )
            })?;
            // A record with only a sum (a meter reading) is stored as that sum.
            let value = match (record.value, record.sum) {
                (Some(value), _) => value,
                (None, Some(sum)) => Value::Float(sum),
                (None, None) => return Err(format!("record {index}: has no value or sum")),
            };
            let nul_in_value = matches!(&value, Value::String(s) if s.contains('\0'));
            if nul_in_value || record.unit.as_deref().is_some_and(|u| u.contains('\0')) {
                return Err(format!(
                    "record {index}: a string value or unit holds U+0000, which cannot be stored"
                ));
            }
            Ok(Point {
                name: record.name,
                time_ns,
                value,
                unit: record.unit,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_bytes::ByteBuf;
    use telemetry::senml::{encode_pack, RawRecord};

    fn envelope(seq: u64, device_id: &str, payload: Vec<u8>) -> Envelope {
        Envelope {
            seq,
            device_id: device_id.into(),
            topic: format!("devices/{device_id}/telemetry"),
            received_at: 1_700_000_000_000,
            payload: ByteBuf::from(payload),
        }
    }

    fn batch(envelopes: Vec<Envelope>) -> SyncBatch {
        SyncBatch {
            gateway_id: "gw-1".into(),
            spool_id: "0123456789ABCDEF0123456789abcdef".into(),
            backlog: 7,
            envelopes,
        }
    }

    fn prepare_one(payload: Vec<u8>) -> Content {
        let prepared = prepare(
            batch(vec![envelope(1, "dev-1", payload)]),
            &Limits::default(),
            5,
        )
        .unwrap();
        prepared.envelopes.into_iter().next().unwrap().content
    }

    #[test]
    fn senml_becomes_points_with_sums_as_floats() {
        let pack = encode_pack(&[
            RawRecord {
                base_name: Some("urn:dev:".into()),
                base_time: Some(1_700_000_100.0),
                name: Some("temp".into()),
                unit: Some("Cel".into()),
                value: Some(Value::Float(21.5)),
                ..Default::default()
            },
            RawRecord {
                name: Some("energy".into()),
                sum: Some(42.0),
                time: Some(1.0),
                ..Default::default()
            },
        ]);
        let Content::Points(points) = prepare_one(pack) else {
            panic!("expected points");
        };
        assert_eq!(
            points,
            vec![
                Point {
                    name: "urn:dev:temp".into(),
                    time_ns: 1_700_000_100_000_000_000,
                    value: Value::Float(21.5),
                    unit: Some("Cel".into()),
                },
                Point {
                    name: "urn:dev:energy".into(),
                    time_ns: 1_700_000_101_000_000_000,
                    value: Value::Float(42.0),
                    unit: None,
                },
            ]
        );
    }

    #[test]
    fn opaque_and_broken_payloads_become_documents() {
        let opaque = serde_cbor::to_vec(&serde_cbor::Value::Text("hello".into())).unwrap();
        let Content::Document(doc) = prepare_one(opaque.clone()) else {
            panic!("expected a document");
        };
        assert_eq!(doc.kind, DocumentKind::Opaque);
        assert_eq!(doc.payload, opaque);

        let Content::Document(doc) = prepare_one(vec![0xff, 0x00]) else {
            panic!("expected a document");
        };
        assert_eq!(doc.kind, DocumentKind::Invalid);
        assert!(!doc.reason.is_empty());
    }

    #[test]
    fn unstorable_times_make_an_invalid_document() {
        let pack = encode_pack(&[RawRecord {
            name: Some("t".into()),
            time: Some(1e12),
            value: Some(Value::Float(1.0)),
            ..Default::default()
        }]);
        let Content::Document(doc) = prepare_one(pack) else {
            panic!("expected a document");
        };
        assert_eq!(doc.kind, DocumentKind::Invalid);
        assert!(
            doc.reason.contains("outside the storable range"),
            "{}",
            doc.reason
        );
    }

    #[test]
    fn nul_characters_never_reach_a_store() {
        let pack = encode_pack(&[RawRecord {
            name: Some("state".into()),
            time: Some(1_700_000_000.0),
            value: Some(Value::String("on\0off".into())),
            ..Default::default()
        }]);
        let Content::Document(doc) = prepare_one(pack.clone()) else {
            panic!("expected a document");
        };
        assert_eq!(doc.kind, DocumentKind::Invalid);
        assert!(doc.reason.contains("U+0000"), "{}", doc.reason);
        assert_eq!(doc.payload, pack);

        let mut with_nul = envelope(1, "dev-1", vec![0xff]);
        with_nul.topic = "devices/dev-1/\0".into();
        let prepared = prepare(batch(vec![with_nul]), &Limits::default(), 5).unwrap();
        let Content::Document(doc) = &prepared.envelopes[0].content else {
            panic!("expected a document");
        };
        assert_eq!(doc.topic, "devices/dev-1/\u{fffd}");
        assert!(!doc.reason.contains('\0'));
    }

    #[test]
    fn spool_ids_are_checked_and_lowercased() {
        let prepared = prepare(batch(vec![]), &Limits::default(), 5).unwrap();
        assert_eq!(prepared.spool_id, "0123456789abcdef0123456789abcdef");
        let mut bad = batch(vec![]);
        bad.spool_id = "xyz".into();
        assert!(matches!(
            prepare(bad, &Limits::default(), 5),
            Err(BatchError::SpoolId(_))
        ));
    }

    #[test]
    fn bad_ids_refuse_the_batch() {
        let mut bad = batch(vec![]);
        bad.gateway_id = "gw/1".into();
        assert!(matches!(
            prepare(bad, &Limits::default(), 5),
            Err(BatchError::GatewayId(_))
        ));
        let bad = batch(vec![envelope(1, "ok", vec![]), envelope(2, "", vec![])]);
        let err = prepare(bad, &Limits::default(), 5).unwrap_err();
        assert_eq!(
            err.to_string(),
            "envelope 1 (seq 2): device_id is invalid: device id must be 1 to 64 bytes long, got 0"
        );
    }

    #[test]
    fn seqs_topics_and_arrival_times_are_checked_field_by_field() {
        let refused = |envelopes: Vec<Envelope>| {
            prepare(batch(envelopes), &Limits::default(), 5)
                .unwrap_err()
                .to_string()
        };
        let message = refused(vec![envelope(3, "a", vec![]), envelope(3, "a", vec![])]);
        assert!(
            message.starts_with("envelope 1: seq 3 must be"),
            "{message}"
        );
        assert!(refused(vec![envelope(0, "a", vec![])]).contains("seq 0"));

        for topic in [
            "devices/b/telemetry",
            "devices/a",
            "devices/a/",
            "other/a/x",
        ] {
            let mut wrong = envelope(1, "a", vec![]);
            wrong.topic = topic.into();
            let message = refused(vec![wrong]);
            assert!(
                message.contains("topic must be devices/{device_id}/"),
                "{topic}: {message}"
            );
        }
        let mut long = envelope(1, "a", vec![]);
        long.topic = format!("devices/a/{}", "x".repeat(MAX_TOPIC_BYTES));
        assert!(refused(vec![long]).contains("topic"));

        let mut future = envelope(1, "a", vec![]);
        future.received_at = u64::MAX;
        assert!(refused(vec![future]).contains("received_at"));
        // A gateway whose clock starts at 1970 is still served.
        let mut early = envelope(1, "a", vec![]);
        early.received_at = 0;
        assert!(prepare(batch(vec![early]), &Limits::default(), 5).is_ok());
    }
}
