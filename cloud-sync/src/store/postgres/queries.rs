//! The read side in SQL: every query is answered by the database through
//! an index (see the schema in `mod.rs`), and aggregates are computed there.
//!
//! A series window `[from, to)` in nanoseconds becomes a row comparison on
//! the primary key's tail: `(time, nanos) >= (from µs, from ns) AND
//! (time, nanos) < (to µs, to ns)`, an index range scan.
//!
//! Aggregate buckets are aligned to multiples of the step since the epoch.
//! A step of whole microseconds (any step a dashboard asks for) uses
//! `date_bin`; another step buckets the exact nanosecond time in `numeric`.
//! The last value of each bucket is then one index lookup.

use std::sync::LazyLock;

use deadpool_postgres::Pool;
use telemetry::Value;
use tokio_postgres::Row;

use super::store::{backend, pool_error};
use super::time::{join_nanos, lower_bound, millis_ceil, upper_bound, IntervalMicros, Micros};
use crate::model::{
    Bucket, DeviceSummary, Document, DocumentKind, GatewaySummary, SeriesPoint, StoredDocument,
    TimeRange,
};
use crate::store::{SeriesQuery, StoreError};

/// `$1` device, `$2` name, `$3..$6` the window: the series' rows in range.
const SERIES: &str = "device_id = $1 AND name = $2
    AND (time, nanos) >= ($3, $4) AND (time, nanos) < ($5, $6)";

/// Devices with their series; `{filter}` narrows to one device or none.
fn devices_sql(filter: &str) -> String {
    format!(
        "SELECT d.device_id, d.gateway_id, d.last_seen, d.documents,
                coalesce(array_agg(m.name ORDER BY m.name) FILTER (WHERE m.name IS NOT NULL),
                         '{{}}') AS measurements,
                coalesce(sum(m.points), 0)::int8 AS points
         FROM devices d LEFT JOIN measurements m ON m.device_id = d.device_id
         {filter}
         GROUP BY d.device_id
         ORDER BY d.device_id"
    )
}

static DEVICES: LazyLock<String> = LazyLock::new(|| devices_sql(""));
/// One device: its own statement, so that its plan is a key lookup.
static DEVICE: LazyLock<String> = LazyLock::new(|| devices_sql("WHERE d.device_id = $1"));

static POINTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT time, nanos, value_f64, value_bool, value_text, value_bytes, unit
         FROM points WHERE {SERIES} ORDER BY time, nanos LIMIT $7"
    )
});

static BOUNDS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT first.time, first.nanos, last.time, last.nanos
         FROM (SELECT time, nanos FROM points WHERE {SERIES}
               ORDER BY time, nanos LIMIT 1) AS first,
              (SELECT time, nanos FROM points WHERE {SERIES}
               ORDER BY time DESC, nanos DESC LIMIT 1) AS last"
    )
});

/// The numeric reading of a row for min/max/avg: floats as is, bools as 0/1.
const NUMERIC: &str = "coalesce(value_f64, value_bool::int::float8)";

/// Buckets of `$7` (an interval of whole microseconds): `date_bin` on `time`. Every point of
/// one microsecond falls in one bucket, so the last point of a bucket is the
/// one with the greatest `nanos` at its greatest `time`.
static AGGREGATE_MICROS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT greatest(extract(epoch FROM a.bucket) * 1000000000,
                         -9223372036854775808)::int8,
                a.n, a.min, a.max, a.avg,
                l.value_f64, l.value_bool, l.value_text, l.value_bytes
         FROM (SELECT date_bin($7::interval, time, timestamptz '1970-01-01 00:00:00+00')
                      AS bucket,
                      count(*) AS n, min({NUMERIC}) AS min, max({NUMERIC}) AS max,
                      avg({NUMERIC}) AS avg, max(time) AS last_time
               FROM points WHERE {SERIES}
               GROUP BY 1) AS a
         CROSS JOIN LATERAL (
               SELECT value_f64, value_bool, value_text, value_bytes FROM points
               WHERE {SERIES} AND time = a.last_time
               ORDER BY nanos DESC LIMIT 1) AS l
         ORDER BY a.bucket"
    )
});

/// Buckets of `$7` nanoseconds that are not whole microseconds: the exact
/// time `t` in nanoseconds, `t - ((t mod step) + step) mod step` in
/// `numeric` (floor towards minus infinity, no overflow), clamped to i64.
static AGGREGATE_NANOS: LazyLock<String> = LazyLock::new(|| {
    // numeric: the earliest times, times 1000, are beyond int8.
    let t = "(extract(epoch FROM time) * 1000000000 + nanos)";
    let step = "$7::int8::numeric";
    format!(
        "SELECT a.bucket, a.n, a.min, a.max, a.avg,
                l.value_f64, l.value_bool, l.value_text, l.value_bytes
         FROM (SELECT greatest({t} - mod(mod({t}, {step}) + {step}, {step}),
                               -9223372036854775808)::int8 AS bucket,
                      count(*) AS n, min({NUMERIC}) AS min, max({NUMERIC}) AS max,
                      avg({NUMERIC}) AS avg, max(time) AS last_time, max({t}) AS last_ns
               FROM points WHERE {SERIES}
               GROUP BY 1) AS a
         CROSS JOIN LATERAL (
               SELECT value_f64, value_bool, value_text, value_bytes FROM points
               WHERE device_id = $1 AND name = $2 AND time = a.last_time
                 AND nanos = a.last_ns - extract(epoch FROM a.last_time) * 1000000000
               ) AS l
         ORDER BY a.bucket"
    )
});

const DOCUMENTS: &str = "
    SELECT gateway_id, spool_id, seq, received_at, topic, kind, reason, payload
    FROM documents
    WHERE device_id = $1 AND received_at >= $2 AND received_at <= $3
    ORDER BY received_at, gateway_id, spool_id, seq
    LIMIT $4";

const GATEWAYS: &str = "
    SELECT gateway_id, spool_id, last_sync, backlog, batches, accepted, duplicates
    FROM gateways ORDER BY gateway_id";

/// The query parameters `$1..$6` of [`SERIES`].
struct SeriesParams {
    device_id: String,
    name: String,
    from: (Micros, i16),
    to: (Micros, i16),
}

impl SeriesParams {
    fn new(query: SeriesQuery) -> SeriesParams {
        SeriesParams {
            from: lower_bound(query.range.from),
            to: upper_bound(query.range.to),
            device_id: query.device_id,
            name: query.name,
        }
    }
}

/// Runs `$sql` with the series parameters followed by `$extra`.
macro_rules! series_query {
    ($pool:expr, $sql:expr, $params:expr $(, $extra:expr)*) => {{
        let client = $pool.get().await.map_err(pool_error)?;
        let statement = client.prepare_cached($sql).await.map_err(backend)?;
        let p = &$params;
        client
            .query(
                &statement,
                &[&p.device_id, &p.name, &p.from.0, &p.from.1, &p.to.0, &p.to.1 $(, $extra)*],
            )
            .await
            .map_err(backend)?
    }};
}

/// Every device, or only `device_id`.
pub async fn devices(
    pool: &Pool,
    device_id: Option<String>,
) -> Result<Vec<DeviceSummary>, StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    let rows = match &device_id {
        None => {
            let statement = client.prepare_cached(&DEVICES).await.map_err(backend)?;
            client.query(&statement, &[]).await
        }
        Some(id) => {
            let statement = client.prepare_cached(&DEVICE).await.map_err(backend)?;
            client.query(&statement, &[id]).await
        }
    }
    .map_err(backend)?;
    rows.iter().map(device).collect()
}

fn device(row: &Row) -> Result<DeviceSummary, StoreError> {
    let last_seen: Micros = row.try_get(2).map_err(backend)?;
    let documents: i64 = row.try_get(3).map_err(backend)?;
    let points: i64 = row.try_get(5).map_err(backend)?;
    Ok(DeviceSummary {
        device_id: row.try_get(0).map_err(backend)?,
        gateway_id: row.try_get(1).map_err(backend)?,
        last_seen_ms: last_seen.millis(),
        measurements: row.try_get(4).map_err(backend)?,
        points: points as u64,
        documents: documents as u64,
    })
}

pub async fn points(
    pool: &Pool,
    query: SeriesQuery,
    limit: usize,
) -> Result<Vec<SeriesPoint>, StoreError> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = series_query!(pool, &POINTS, SeriesParams::new(query), &limit);
    rows.iter()
        .map(|row| {
            Ok(SeriesPoint {
                time_ns: time_ns(row, 0, 1)?,
                value: value(row, 2)?,
                unit: row.try_get(6).map_err(backend)?,
            })
        })
        .collect()
}

pub async fn series_bounds(
    pool: &Pool,
    query: SeriesQuery,
) -> Result<Option<(i64, i64)>, StoreError> {
    let rows = series_query!(pool, &BOUNDS, SeriesParams::new(query));
    rows.first()
        .map(|row| Ok((time_ns(row, 0, 1)?, time_ns(row, 2, 3)?)))
        .transpose()
}

pub async fn aggregate(
    pool: &Pool,
    query: SeriesQuery,
    step_ns: i64,
) -> Result<Vec<Bucket>, StoreError> {
    let step_ns = step_ns.max(1);
    let params = SeriesParams::new(query);
    let rows = if step_ns % 1000 == 0 {
        let step = IntervalMicros(step_ns / 1000);
        series_query!(pool, &AGGREGATE_MICROS, params, &step)
    } else {
        series_query!(pool, &AGGREGATE_NANOS, params, &step_ns)
    };
    rows.iter()
        .map(|row| {
            let count: i64 = row.try_get(1).map_err(backend)?;
            Ok(Bucket {
                start_ns: row.try_get(0).map_err(backend)?,
                count: count as u64,
                min: row.try_get(2).map_err(backend)?,
                max: row.try_get(3).map_err(backend)?,
                avg: row.try_get(4).map_err(backend)?,
                last: value(row, 5)?,
            })
        })
        .collect()
}

pub async fn documents(
    pool: &Pool,
    device_id: String,
    range: TimeRange,
    limit: usize,
) -> Result<Vec<StoredDocument>, StoreError> {
    // Stored times are whole milliseconds, so `< to ms` is `<= to ms - 1 µs`,
    // and no bound is `<= infinity`, which holds the saturated times too.
    let from = Micros::from_millis(range.from.map_or(0, millis_ceil));
    let to = match range.to {
        Some(to) => Micros(Micros::from_millis(millis_ceil(to)).0 - 1),
        None => Micros::INFINITY,
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let client = pool.get().await.map_err(pool_error)?;
    let statement = client.prepare_cached(DOCUMENTS).await.map_err(backend)?;
    let rows = client
        .query(&statement, &[&device_id, &from, &to, &limit])
        .await
        .map_err(backend)?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let seq: i64 = row.try_get(2).map_err(backend)?;
        let received_at: Micros = row.try_get(3).map_err(backend)?;
        let kind: &str = row.try_get(5).map_err(backend)?;
        let kind = match kind {
            "opaque" => DocumentKind::Opaque,
            "invalid" => DocumentKind::Invalid,
            other => return Err(corrupt("documents", format!("unknown kind {other:?}"))),
        };
        out.push(StoredDocument {
            device_id: device_id.clone(),
            gateway_id: row.try_get(0).map_err(backend)?,
            spool_id: row.try_get(1).map_err(backend)?,
            seq: seq as u64,
            received_at_ms: received_at.millis(),
            document: Document {
                topic: row.try_get(4).map_err(backend)?,
                payload: row.try_get(7).map_err(backend)?,
                kind,
                reason: row.try_get(6).map_err(backend)?,
            },
        });
    }
    Ok(out)
}

pub async fn gateways(pool: &Pool) -> Result<Vec<GatewaySummary>, StoreError> {
    let client = pool.get().await.map_err(pool_error)?;
    let statement = client.prepare_cached(GATEWAYS).await.map_err(backend)?;
    let rows = client.query(&statement, &[]).await.map_err(backend)?;
    rows.iter()
        .map(|row| {
            let last_sync: Micros = row.try_get(2).map_err(backend)?;
            let number = |index| -> Result<u64, StoreError> {
                let n: i64 = row.try_get(index).map_err(backend)?;
                Ok(n as u64)
            };
            Ok(GatewaySummary {
                gateway_id: row.try_get(0).map_err(backend)?,
                spool_id: row.try_get(1).map_err(backend)?,
                last_sync_ms: last_sync.millis(),
                backlog: number(3)?,
                batches: number(4)?,
                accepted: number(5)?,
                duplicates: number(6)?,
            })
        })
        .collect()
}

/// The nanosecond time in columns `time` and `nanos` of a row.
fn time_ns(row: &Row, time: usize, nanos: usize) -> Result<i64, StoreError> {
    let micros: Micros = row.try_get(time).map_err(backend)?;
    let nanos: i16 = row.try_get(nanos).map_err(backend)?;
    join_nanos(micros, nanos).ok_or_else(|| {
        corrupt(
            "points",
            format!("time {micros:?} with nanos {nanos} is not a storable time"),
        )
    })
}

/// The value held in the four value columns starting at `first`.
fn value(row: &Row, first: usize) -> Result<Value, StoreError> {
    if let Some(v) = row.try_get::<_, Option<f64>>(first).map_err(backend)? {
        return Ok(Value::Float(v));
    }
    if let Some(b) = row.try_get::<_, Option<bool>>(first + 1).map_err(backend)? {
        return Ok(Value::Bool(b));
    }
    if let Some(s) = row
        .try_get::<_, Option<String>>(first + 2)
        .map_err(backend)?
    {
        return Ok(Value::String(s));
    }
    if let Some(b) = row
        .try_get::<_, Option<Vec<u8>>>(first + 3)
        .map_err(backend)?
    {
        return Ok(Value::Bytes(b));
    }
    Err(corrupt("points", "a point without a value".to_owned()))
}

fn corrupt(table: &'static str, reason: String) -> StoreError {
    StoreError::Corrupt {
        tree: table,
        reason,
    }
}
