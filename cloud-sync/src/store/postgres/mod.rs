//! The PostgreSQL store: plain tables that any number of collectors share
//! and that Grafana's PostgreSQL data source charts directly
//! (`docs/grafana.md`). The collector creates and migrates them at start
//! (`migrate.rs`, SQL in `migrations/`).
//!
//! ```text
//! table         key (unique)                        columns
//! ------------  ----------------------------------  ----------------------------------------------------
//! points        device_id, name, time, nanos        value_f64 | value_bool | value_text | value_bytes
//!                                                   (exactly one set), unit, origin: gateway_id, spool_id, seq
//! envelopes     gateway_id, spool_id, seq           (the dedup key: one row per envelope ever stored)
//! documents     gateway_id, spool_id, seq           device_id, received_at, topic, kind, reason, payload
//! measurements  device_id, name                     points (count)
//! devices       device_id                           gateway_id, last_seen, documents (count)
//! gateways      gateway_id                          spool_id, last_sync, backlog, batches, accepted, duplicates
//! syncs         (none; one row per batch)           gateway_id, synced_at, spool_id, backlog, envelopes, ...
//! cloud_sync_schema_history                         refinery's record of applied versions
//!
//! indexes: the keys; documents (device_id, received_at); syncs (gateway_id, synced_at);
//!          points: BRIN (time), or a TimescaleDB hypertable on time when the extension exists
//! time   := timestamptz (µs) + nanos smallint 0..=999: the exact i64 ns of SenML (see time.rs)
//! seq    := bigint holding the u64 bit for bit; ids and names are text COLLATE "C"
//! ```
//!
//! Invariants:
//! - A batch is one transaction (`ingest.rs`): the dedup keys, the data and
//!   the counters commit together or not at all, so there is no partial
//!   state to recover from, and the answer leaves only after COMMIT returned
//!   with `synchronous_commit` on.
//! - `measurements.points`, `devices.documents` and the `gateways` totals
//!   count exactly the rows their transactions inserted.
//! - Nothing is kept in the collector between requests: every collector
//!   sees what any other committed.
//! - Retention and erasure (`remove.rs`) delete rows and lower the counters
//!   in one transaction per device; `envelopes` keeps its dedup keys.

mod ingest;
mod migrate;
mod queries;
mod remove;
mod store;
mod time;

pub use self::migrate::SCHEMA_VERSION;
pub use self::store::PostgresStore;
