//! One batch, one transaction: the envelopes' dedup keys first, then the
//! points and documents of the envelopes that were new, then the counters.
//! Each step is one statement over arrays (`unnest`), whatever the batch size.
//!
//! ```text
//! BEGIN
//! 1. envelopes     INSERT (gateway, spool, seq) ... ON CONFLICT DO NOTHING RETURNING seq  -> the new envelopes
//! 2. points        INSERT points of the new envelopes ... ON CONFLICT DO NOTHING          -> new points per series
//! 3. documents     INSERT documents of the new envelopes ... ON CONFLICT DO NOTHING      -> new documents per device
//! 4. measurements  upsert points += new points per series
//! 5. devices       upsert last_seen = greatest, gateway of the latest, documents += new
//! 6. gateways      upsert latest batch, batches += 1, accepted += , duplicates +=
//! 7. syncs         one row: the backlog history
//! COMMIT           (synchronous_commit on: durable when it returns), then the HTTP answer
//! ```
//!
//! Invariants:
//! - A seq is counted as accepted by exactly one transaction: a concurrent
//!   insert of the same key waits for the first to commit or roll back,
//!   then skips or inserts. The counters change in the same transaction, so
//!   they always agree with the rows.
//! - Within a batch the first envelope with a seq and the first point with an
//!   identity win, as in the sled store; the others count as duplicates.
//! - Every statement takes its row locks in one order (seqs, point keys,
//!   device ids, series sorted), and the steps run in one order, so
//!   concurrent batches wait for each other but do not deadlock; should the
//!   server still report a deadlock or a serialization failure, the whole
//!   transaction is retried.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use tokio_postgres::error::SqlState;

use super::store::{backend, pool_error};
use super::time::{split_nanos, Micros};
use crate::model::{Content, DocumentKind, IngestOutcome, PreparedBatch, PreparedEnvelope};
use crate::store::StoreError;
use telemetry::Value;

/// Attempts of one batch transaction when the server reports a deadlock or
/// a serialization failure (other errors are not retried here: the gateway
/// retries the batch).
pub(super) const ATTEMPTS: u32 = 4;

const INSERT_ENVELOPES: &str = "
    INSERT INTO envelopes (gateway_id, spool_id, seq)
    SELECT $1, $2, seq FROM unnest($3::int8[]) AS u(seq)
    ON CONFLICT DO NOTHING
    RETURNING seq";

const INSERT_POINTS: &str = "
    WITH inserted AS (
        INSERT INTO points (device_id, name, time, nanos, value_f64, value_bool, value_text,
                            value_bytes, unit, gateway_id, spool_id, seq)
        SELECT device_id, name, time, nanos, value_f64, value_bool, value_text,
               value_bytes, unit, $1, $2, seq
        FROM unnest($3::text[], $4::text[], $5::timestamptz[], $6::int2[], $7::float8[],
                    $8::bool[], $9::text[], $10::bytea[], $11::text[], $12::int8[])
             AS u(device_id, name, time, nanos, value_f64, value_bool, value_text,
                  value_bytes, unit, seq)
        ON CONFLICT DO NOTHING
        RETURNING device_id, name
    )
    SELECT device_id, name, count(*) FROM inserted GROUP BY device_id, name";

const INSERT_DOCUMENTS: &str = "
    WITH inserted AS (
        INSERT INTO documents (gateway_id, spool_id, seq, device_id, received_at, topic, kind,
                               reason, payload)
        SELECT $1, $2, seq, device_id, received_at, topic, kind, reason, payload
        FROM unnest($3::int8[], $4::text[], $5::timestamptz[], $6::text[], $7::text[],
                    $8::text[], $9::bytea[])
             AS u(seq, device_id, received_at, topic, kind, reason, payload)
        ON CONFLICT DO NOTHING
        RETURNING device_id, kind
    )
    SELECT device_id, count(*), count(*) FILTER (WHERE kind = 'invalid')
    FROM inserted GROUP BY device_id";

const UPSERT_MEASUREMENTS: &str = "
    INSERT INTO measurements AS m (device_id, name, points)
    SELECT * FROM unnest($1::text[], $2::text[], $3::int8[])
    ON CONFLICT (device_id, name) DO UPDATE SET points = m.points + EXCLUDED.points";

const UPSERT_DEVICES: &str = "
    INSERT INTO devices AS d (device_id, gateway_id, last_seen, documents)
    SELECT device_id, $1, last_seen, documents
    FROM unnest($2::text[], $3::timestamptz[], $4::int8[]) AS u(device_id, last_seen, documents)
    ON CONFLICT (device_id) DO UPDATE SET
        gateway_id = CASE WHEN EXCLUDED.last_seen >= d.last_seen
                          THEN EXCLUDED.gateway_id ELSE d.gateway_id END,
        last_seen = greatest(d.last_seen, EXCLUDED.last_seen),
        documents = d.documents + EXCLUDED.documents";

const UPSERT_GATEWAY: &str = "
    INSERT INTO gateways AS g (gateway_id, spool_id, last_sync, backlog, batches, accepted,
                               duplicates)
    VALUES ($1, $2, $3, $4, 1, $5, $6)
    ON CONFLICT (gateway_id) DO UPDATE SET
        spool_id = CASE WHEN EXCLUDED.last_sync >= g.last_sync
                        THEN EXCLUDED.spool_id ELSE g.spool_id END,
        backlog = CASE WHEN EXCLUDED.last_sync >= g.last_sync
                       THEN EXCLUDED.backlog ELSE g.backlog END,
        last_sync = greatest(g.last_sync, EXCLUDED.last_sync),
        batches = g.batches + 1,
        accepted = g.accepted + EXCLUDED.accepted,
        duplicates = g.duplicates + EXCLUDED.duplicates";

const INSERT_SYNC: &str = "
    INSERT INTO syncs (gateway_id, synced_at, spool_id, backlog, envelopes, accepted, duplicates)
    VALUES ($1, $2, $3, $4, $5, $6, $7)";

/// Stores `batch` exactly once; see the module doc for the statements.
pub async fn ingest(pool: &Pool, batch: &PreparedBatch) -> Result<IngestOutcome, StoreError> {
    let mut attempt = 1;
    loop {
        let mut client = pool.get().await.map_err(pool_error)?;
        match write(&mut client, batch).await {
            Ok(outcome) => return Ok(outcome),
            Err(err) if attempt < ATTEMPTS && transient(&err) => {
                // Rare by design (the lock order above): worth a look when it shows.
                tracing::warn!(
                    gateway_id = batch.gateway_id,
                    attempt,
                    error = %super::store::with_causes(&err),
                    "batch transaction conflicted, retrying"
                );
                attempt += 1;
                // A little jitter so that the two sides of a conflict do not meet again.
                let pause = rand::random_range(1..20) * u64::from(attempt);
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
            Err(err) => return Err(backend(err)),
        }
    }
}

/// A conflict with another transaction that a second attempt resolves.
pub(super) fn transient(err: &tokio_postgres::Error) -> bool {
    matches!(
        err.code(),
        Some(&SqlState::T_R_DEADLOCK_DETECTED) | Some(&SqlState::T_R_SERIALIZATION_FAILURE)
    )
}

/// A seq as stored: `bigint` holds the u64 bit for bit (seqs from 2^63 on
/// read as negative in SQL; no spool gets near them).
fn seq_key(seq: u64) -> i64 {
    seq as i64
}

/// Gateway counts and backlogs as `bigint`, saturated.
fn count(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

async fn write(
    client: &mut Object,
    batch: &PreparedBatch,
) -> Result<IngestOutcome, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let gateway = batch.gateway_id.as_str();
    let spool = batch.spool_id.as_str();
    let mut outcome = IngestOutcome::default();

    // 1. The first envelope of each seq, in batch order; inserted in seq order.
    let mut seen_seqs = HashSet::new();
    let firsts: Vec<&PreparedEnvelope> = batch
        .envelopes
        .iter()
        .filter(|e| seen_seqs.insert(e.seq))
        .collect();
    let mut new_seqs = HashSet::new();
    if !firsts.is_empty() {
        let mut seqs: Vec<i64> = firsts.iter().map(|e| seq_key(e.seq)).collect();
        seqs.sort_unstable();
        let statement = tx.prepare_cached(INSERT_ENVELOPES).await?;
        for row in tx.query(&statement, &[&gateway, &spool, &seqs]).await? {
            new_seqs.insert(row.try_get::<_, i64>(0)?);
        }
    }
    let accepted: Vec<&PreparedEnvelope> = firsts
        .into_iter()
        .filter(|e| new_seqs.contains(&seq_key(e.seq)))
        .collect();
    outcome.accepted = accepted.len() as u64;
    outcome.duplicates = batch.envelopes.len() as u64 - outcome.accepted;

    // 2. Points.
    let mut series: BTreeMap<(String, String), i64> = BTreeMap::new();
    let points = PointRows::of(&accepted);
    outcome.duplicate_points = points.repeated;
    if !points.device_id.is_empty() {
        let statement = tx.prepare_cached(INSERT_POINTS).await?;
        let rows = tx
            .query(
                &statement,
                &[
                    &gateway,
                    &spool,
                    &points.device_id,
                    &points.name,
                    &points.time,
                    &points.nanos,
                    &points.value_f64,
                    &points.value_bool,
                    &points.value_text,
                    &points.value_bytes,
                    &points.unit,
                    &points.seq,
                ],
            )
            .await?;
        for row in rows {
            let new: i64 = row.try_get(2)?;
            outcome.points += new as u64;
            series.insert((row.try_get(0)?, row.try_get(1)?), new);
        }
        outcome.duplicate_points += points.device_id.len() as u64 - outcome.points;
    }

    // 3. Documents.
    let mut documents_of: BTreeMap<String, i64> = BTreeMap::new();
    let documents = DocumentRows::of(&accepted);
    if !documents.seq.is_empty() {
        let statement = tx.prepare_cached(INSERT_DOCUMENTS).await?;
        let rows = tx
            .query(
                &statement,
                &[
                    &gateway,
                    &spool,
                    &documents.seq,
                    &documents.device_id,
                    &documents.received_at,
                    &documents.topic,
                    &documents.kind,
                    &documents.reason,
                    &documents.payload,
                ],
            )
            .await?;
        for row in rows {
            let new: i64 = row.try_get(1)?;
            let invalid: i64 = row.try_get(2)?;
            outcome.documents += new as u64;
            outcome.invalid_documents += invalid as u64;
            documents_of.insert(row.try_get(0)?, new);
        }
    }

    // 4. Measurements, in key order.
    if !series.is_empty() {
        let mut device_ids = Vec::with_capacity(series.len());
        let mut names = Vec::with_capacity(series.len());
        let mut counts = Vec::with_capacity(series.len());
        for ((device_id, name), n) in &series {
            device_ids.push(device_id.as_str());
            names.push(name.as_str());
            counts.push(*n);
        }
        let statement = tx.prepare_cached(UPSERT_MEASUREMENTS).await?;
        tx.execute(&statement, &[&device_ids, &names, &counts])
            .await?;
    }

    // 5. Devices: every device of a new envelope, in id order.
    let mut devices: BTreeMap<&str, Micros> = BTreeMap::new();
    for envelope in &accepted {
        let seen = Micros::from_millis(envelope.received_at_ms);
        let last = devices.entry(envelope.device_id.as_str()).or_insert(seen);
        *last = (*last).max(seen);
    }
    if !devices.is_empty() {
        let device_ids: Vec<&str> = devices.keys().copied().collect();
        let last_seen: Vec<Micros> = devices.values().copied().collect();
        let document_counts: Vec<i64> = device_ids
            .iter()
            .map(|id| documents_of.get(*id).copied().unwrap_or(0))
            .collect();
        let statement = tx.prepare_cached(UPSERT_DEVICES).await?;
        tx.execute(
            &statement,
            &[&gateway, &device_ids, &last_seen, &document_counts],
        )
        .await?;
    }

    // 6 and 7. The gateway, and its backlog history.
    let synced_at = Micros::from_millis(batch.synced_at_ms);
    let backlog = count(batch.backlog);
    let accepted_n = count(outcome.accepted);
    let duplicates_n = count(outcome.duplicates);
    let statement = tx.prepare_cached(UPSERT_GATEWAY).await?;
    tx.execute(
        &statement,
        &[
            &gateway,
            &spool,
            &synced_at,
            &backlog,
            &accepted_n,
            &duplicates_n,
        ],
    )
    .await?;
    let envelopes_n = count(batch.envelopes.len() as u64);
    let statement = tx.prepare_cached(INSERT_SYNC).await?;
    tx.execute(
        &statement,
        &[
            &gateway,
            &synced_at,
            &spool,
            &backlog,
            &envelopes_n,
            &accepted_n,
            &duplicates_n,
        ],
    )
    .await?;

    tx.commit().await?;
    Ok(outcome)
}

/// The points of the new envelopes as column arrays, first of each
/// identity only, sorted by identity.
#[derive(Default)]
struct PointRows<'a> {
    device_id: Vec<&'a str>,
    name: Vec<&'a str>,
    time: Vec<Micros>,
    nanos: Vec<i16>,
    value_f64: Vec<Option<f64>>,
    value_bool: Vec<Option<bool>>,
    value_text: Vec<Option<&'a str>>,
    value_bytes: Vec<Option<&'a [u8]>>,
    unit: Vec<Option<&'a str>>,
    seq: Vec<i64>,
    /// Points left out because an earlier one of the batch has their identity.
    repeated: u64,
}

impl<'a> PointRows<'a> {
    fn of(envelopes: &[&'a PreparedEnvelope]) -> PointRows<'a> {
        let mut identities = HashSet::new();
        let mut rows = Vec::new();
        let mut repeated = 0;
        for envelope in envelopes {
            let Content::Points(points) = &envelope.content else {
                continue;
            };
            for point in points {
                let identity = (
                    envelope.device_id.as_str(),
                    point.name.as_str(),
                    point.time_ns,
                );
                if identities.insert(identity) {
                    rows.push((identity, point, envelope.seq));
                } else {
                    repeated += 1;
                }
            }
        }
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut out = PointRows {
            repeated,
            ..PointRows::default()
        };
        for ((device_id, name, time_ns), point, seq) in rows {
            let (time, nanos) = split_nanos(time_ns);
            out.device_id.push(device_id);
            out.name.push(name);
            out.time.push(time);
            out.nanos.push(nanos);
            out.value_f64.push(match point.value {
                Value::Float(v) => Some(v),
                _ => None,
            });
            out.value_bool.push(match point.value {
                Value::Bool(b) => Some(b),
                _ => None,
            });
            out.value_text.push(match &point.value {
                Value::String(s) => Some(s.as_str()),
                _ => None,
            });
            out.value_bytes.push(match &point.value {
                Value::Bytes(b) => Some(b.as_slice()),
                _ => None,
            });
            out.unit.push(point.unit.as_deref());
            out.seq.push(seq_key(seq));
        }
        out
    }
}

/// The documents of the new envelopes as column arrays, in seq order.
#[derive(Default)]
struct DocumentRows<'a> {
    seq: Vec<i64>,
    device_id: Vec<&'a str>,
    received_at: Vec<Micros>,
    topic: Vec<&'a str>,
    kind: Vec<&'static str>,
    reason: Vec<&'a str>,
    payload: Vec<&'a [u8]>,
}

impl<'a> DocumentRows<'a> {
    fn of(envelopes: &[&'a PreparedEnvelope]) -> DocumentRows<'a> {
        let mut documents: Vec<_> = envelopes
            .iter()
            .filter_map(|e| match &e.content {
                Content::Document(document) => Some((*e, document)),
                Content::Points(_) => None,
            })
            .collect();
        documents.sort_unstable_by_key(|(e, _)| seq_key(e.seq));
        let mut out = DocumentRows::default();
        for (envelope, document) in documents {
            out.seq.push(seq_key(envelope.seq));
            out.device_id.push(&envelope.device_id);
            out.received_at
                .push(Micros::from_millis(envelope.received_at_ms));
            out.topic.push(&document.topic);
            out.kind.push(match document.kind {
                DocumentKind::Opaque => "opaque",
                DocumentKind::Invalid => "invalid",
            });
            out.reason.push(&document.reason);
            out.payload.push(&document.payload);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Document, Point};

    fn envelope(seq: u64, device: &str, points: &[(&str, i64)]) -> PreparedEnvelope {
        PreparedEnvelope {
            seq,
            device_id: device.into(),
            received_at_ms: 1,
            content: Content::Points(
                points
                    .iter()
                    .map(|&(name, time_ns)| Point {
                        name: name.into(),
                        time_ns,
                        value: Value::Float(1.0),
                        unit: None,
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn point_rows_keep_the_first_of_an_identity_sorted() {
        let a = envelope(1, "d", &[("t", 5), ("s", 9), ("t", 5)]);
        let b = envelope(2, "c", &[("t", -1)]);
        let c = envelope(3, "d", &[("t", 5)]);
        let rows = PointRows::of(&[&a, &b, &c]);
        assert_eq!(rows.repeated, 2);
        assert_eq!(rows.device_id, vec!["c", "d", "d"]);
        assert_eq!(rows.name, vec!["t", "s", "t"]);
        assert_eq!(rows.seq, vec![2, 1, 1]);
        assert_eq!(rows.time, vec![Micros(-1), Micros(0), Micros(0)]);
        assert_eq!(rows.nanos, vec![999, 9, 5]);
    }

    #[test]
    fn document_rows_name_their_kind() {
        let doc = |seq, kind| PreparedEnvelope {
            seq,
            device_id: "d".into(),
            received_at_ms: 7,
            content: Content::Document(Document {
                topic: "t".into(),
                payload: vec![1],
                kind,
                reason: "r".into(),
            }),
        };
        let (a, b) = (doc(9, DocumentKind::Invalid), doc(2, DocumentKind::Opaque));
        let points = envelope(3, "d", &[]);
        let rows = DocumentRows::of(&[&a, &b, &points]);
        assert_eq!(rows.seq, vec![2, 9]);
        assert_eq!(rows.kind, vec!["opaque", "invalid"]);
        assert_eq!(rows.received_at, vec![Micros(7_000); 2]);
    }

    #[test]
    fn seqs_keep_every_bit() {
        assert_eq!(seq_key(u64::MAX) as u64, u64::MAX);
        assert_eq!(seq_key(1 << 63) as u64, 1 << 63);
        assert_eq!(count(u64::MAX), i64::MAX);
    }
}
