//! Retention and erasure in SQL: one transaction per device, deleting rows
//! and lowering the summaries that count them, in the lock order of
//! `ingest.rs` so that the two never deadlock each other.
//!
//! ```text
//! expire, per device with a cutoff (every row of `devices` when there is a default):
//!   BEGIN
//!   1. points        DELETE device's rows with (time, nanos) < cutoff     RETURNING name -> removed per series
//!   2. documents     DELETE device's rows with received_at < ceil(cutoff to ms)  -> removed
//!   3. measurements  points -= removed; rows at 0 deleted
//!   4. devices       documents -= removed (the row stays: "seen, nothing kept")
//!   COMMIT
//! erase: BEGIN; 1-2 without a cutoff; DELETE measurements and devices rows; COMMIT
//! ```
//!
//! Left alone: `envelopes` (the dedup keys, no device id: a resent removed
//! envelope stays a duplicate), `gateways` and `syncs` (per-gateway counts,
//! no device id). PostgreSQL keeps deleted rows' bytes in dead tuples until
//! VACUUM, and in WAL and backups: see `docs/compliance.md`.

use std::time::Duration;

use deadpool_postgres::{Object, Pool};

use super::ingest::{transient, ATTEMPTS};
use super::store::{backend, pool_error};
use super::time::{split_nanos, Micros};
use crate::model::{ErasureOutcome, ExpiryOutcome, ExpiryPolicy};
use crate::store::StoreError;

const EXPIRE_POINTS: &str = "
    WITH gone AS (
        DELETE FROM points WHERE device_id = $1 AND (time, nanos) < ($2, $3)
        RETURNING name
    )
    SELECT name, count(*) FROM gone GROUP BY name ORDER BY name";

const EXPIRE_DOCUMENTS: &str = "
    WITH gone AS (
        DELETE FROM documents WHERE device_id = $1 AND received_at < $2 RETURNING 1
    )
    SELECT count(*) FROM gone";

const DISCOUNT_MEASUREMENTS: &str = "
    UPDATE measurements AS m SET points = m.points - u.n
    FROM unnest($2::text[], $3::int8[]) AS u(name, n)
    WHERE m.device_id = $1 AND m.name = u.name";

const DROP_EMPTY_MEASUREMENTS: &str =
    "DELETE FROM measurements WHERE device_id = $1 AND points <= 0";

const DISCOUNT_DOCUMENTS: &str =
    "UPDATE devices SET documents = greatest(documents - $2, 0) WHERE device_id = $1";

const ERASE_POINTS: &str = "
    WITH gone AS (DELETE FROM points WHERE device_id = $1 RETURNING name)
    SELECT count(*), count(DISTINCT name) FROM gone";

const ERASE_DOCUMENTS: &str = "
    WITH gone AS (DELETE FROM documents WHERE device_id = $1 RETURNING 1)
    SELECT count(*) FROM gone";

/// Removes what `policy` says is too old, device by device.
pub async fn expire(pool: &Pool, policy: &ExpiryPolicy) -> Result<ExpiryOutcome, StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let devices: Vec<(String, i64)> = if policy.default.is_some() {
        client
            .query("SELECT device_id FROM devices ORDER BY device_id", &[])
            .await
            .map_err(backend)?
            .iter()
            .map(|row| row.try_get::<_, String>(0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(backend)?
            .into_iter()
            .filter_map(|id| policy.cutoff(&id).map(|cutoff| (id, cutoff)))
            .collect()
    } else {
        policy
            .devices
            .iter()
            .filter_map(|(id, cutoff)| cutoff.map(|cutoff| (id.clone(), cutoff)))
            .collect()
    };
    let mut outcome = ExpiryOutcome::default();
    for (device_id, cutoff) in devices {
        let mut attempt = 1;
        let (points, documents) = loop {
            match expire_device(&mut client, &device_id, cutoff).await {
                Ok(removed) => break removed,
                Err(err) if attempt < ATTEMPTS && transient(&err) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(rand::random_range(1..20))).await;
                }
                Err(err) => return Err(backend(err)),
            }
        };
        if points + documents > 0 {
            outcome.devices += 1;
        }
        outcome.points += points;
        outcome.documents += documents;
    }
    Ok(outcome)
}

async fn expire_device(
    client: &mut Object,
    device_id: &str,
    cutoff: i64,
) -> Result<(u64, u64), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let (time, nanos) = split_nanos(cutoff);
    let statement = tx.prepare_cached(EXPIRE_POINTS).await?;
    let mut names = Vec::new();
    let mut counts = Vec::new();
    for row in tx.query(&statement, &[&device_id, &time, &nanos]).await? {
        names.push(row.try_get::<_, String>(0)?);
        counts.push(row.try_get::<_, i64>(1)?);
    }
    let before = Micros::from_millis(ExpiryPolicy::documents_before_ms(cutoff));
    let statement = tx.prepare_cached(EXPIRE_DOCUMENTS).await?;
    let documents: i64 = tx
        .query_one(&statement, &[&device_id, &before])
        .await?
        .try_get(0)?;
    if !names.is_empty() {
        let statement = tx.prepare_cached(DISCOUNT_MEASUREMENTS).await?;
        tx.execute(&statement, &[&device_id, &names, &counts])
            .await?;
        let statement = tx.prepare_cached(DROP_EMPTY_MEASUREMENTS).await?;
        tx.execute(&statement, &[&device_id]).await?;
    }
    if documents > 0 {
        let statement = tx.prepare_cached(DISCOUNT_DOCUMENTS).await?;
        tx.execute(&statement, &[&device_id, &documents]).await?;
    }
    tx.commit().await?;
    let points: i64 = counts.iter().sum();
    Ok((points as u64, documents as u64))
}

/// Removes every row that names `device_id`.
pub async fn erase_device(pool: &Pool, device_id: &str) -> Result<ErasureOutcome, StoreError> {
    let mut client = pool.get().await.map_err(pool_error)?;
    let mut attempt = 1;
    loop {
        match erase(&mut client, device_id).await {
            Ok(outcome) => return Ok(outcome),
            Err(err) if attempt < ATTEMPTS && transient(&err) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(rand::random_range(1..20))).await;
            }
            Err(err) => return Err(backend(err)),
        }
    }
}

async fn erase(
    client: &mut Object,
    device_id: &str,
) -> Result<ErasureOutcome, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    let statement = tx.prepare_cached(ERASE_POINTS).await?;
    let row = tx.query_one(&statement, &[&device_id]).await?;
    let (points, series): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    let statement = tx.prepare_cached(ERASE_DOCUMENTS).await?;
    let documents: i64 = tx.query_one(&statement, &[&device_id]).await?.try_get(0)?;
    tx.execute(
        "DELETE FROM measurements WHERE device_id = $1",
        &[&device_id],
    )
    .await?;
    tx.execute("DELETE FROM devices WHERE device_id = $1", &[&device_id])
        .await?;
    tx.commit().await?;
    Ok(ErasureOutcome {
        points: points as u64,
        documents: documents as u64,
        measurements: series as u64,
    })
}
