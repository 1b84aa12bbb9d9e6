//! The PostgreSQL store: the storage suite (`tests/suite/`), several
//! collectors sharing one database, the real binary killed mid-stream, the
//! schema migrations, and the Grafana queries of `docs/grafana.md`.
//!
//! Every test works in a schema of its own on the server named by
//! `CLOUD_SYNC_TEST_POSTGRES` (see `util/postgres.rs`); without a server the
//! tests skip, unless `CI=true`.

mod suite;
mod util;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::sync::Arc;

use cloud_sync::config::{PostgresConfig, StoreBackend};
use cloud_sync::model::{Content, Document, DocumentKind, PreparedBatch, PreparedEnvelope};
use cloud_sync::store::{PostgresStore, Store, StoreError, POSTGRES_SCHEMA_VERSION};
use cloud_sync::{Config, Server};
use rand::seq::IndexedRandom;
use telemetry::{encode_batch, SyncBatch, Value};
use tokio_util::sync::CancellationToken;
use util::postgres::TestSchema;
use util::*;

storage_suite!(util::backend::postgres);

/// A collector config on `schema` with a small pool, on a free port.
fn collector_config(schema: &TestSchema) -> Config {
    let mut config = config(std::path::Path::new("unused-with-postgres"));
    config.store = StoreBackend::Postgres(schema.config(4));
    config
}

/// Rows of `table` in the schema.
async fn rows(client: &tokio_postgres::Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

const GATEWAYS: u64 = 5;
const BATCHES: u64 = 12;
const PER_BATCH: u64 = 100;
/// Consecutive batches of a gateway share this many envelopes.
const OVERLAP: u64 = 20;

/// Batch `k` of gateway `g`: envelopes of four devices of its own and of
/// one device that every gateway hears (the same readings: one point each).
fn gateway_batch(g: u64, k: u64) -> SyncBatch {
    let first = k * (PER_BATCH - OVERLAP) + 1;
    let spool = format!("{:032x}", 0xa000 + g);
    let envelopes = (first..first + PER_BATCH)
        .map(|seq| {
            let time = 1_700_000_000.0 + seq as f64;
            if seq % 10 == 0 {
                // Heard by every gateway: same device, name and time.
                float_envelope(seq, "roamer", "temp", time, seq as f64)
            } else {
                let device = format!("gw{g}-dev{}", seq % 4);
                envelope(
                    seq,
                    &device,
                    senml(&[
                        reading("temp", time, Value::Float(seq as f64), Some("Cel")),
                        reading("hum", time, Value::Float(50.0), Some("%RH")),
                    ]),
                )
            }
        })
        .collect();
    batch(&format!("gw-{g}"), &spool, envelopes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_collectors_store_five_gateways_exactly_once() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let mut servers = Vec::new();
    for _ in 0..3 {
        let server = Server::bind(collector_config(&schema)).await.unwrap();
        let addr = server.local_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        servers.push((addr, shutdown, task));
    }
    let addrs: Vec<_> = servers.iter().map(|(addr, _, _)| *addr).collect();
    let client = reqwest::Client::new();

    // Every batch goes to two collectors at once (a retry racing the
    // original), picked at random; the gateways all send at the same time.
    let gateways: Vec<_> = (0..GATEWAYS)
        .map(|g| {
            let (client, addrs) = (client.clone(), addrs.clone());
            tokio::spawn(async move {
                let mut totals = (0, 0);
                for k in 0..BATCHES {
                    let body = encode_batch(&gateway_batch(g, k));
                    let (a, b) = {
                        let mut rng = rand::rng();
                        (
                            *addrs.choose(&mut rng).unwrap(),
                            *addrs.choose(&mut rng).unwrap(),
                        )
                    };
                    let (x, y) =
                        tokio::join!(post_to(&client, a, body.clone()), post_to(&client, b, body));
                    for (accepted, duplicates) in [x, y] {
                        totals.0 += accepted;
                        totals.1 += duplicates;
                    }
                }
                totals
            })
        })
        .collect();
    let per_gateway_seqs = (BATCHES - 1) * (PER_BATCH - OVERLAP) + PER_BATCH;
    for (g, task) in gateways.into_iter().enumerate() {
        let (accepted, duplicates) = task.await.unwrap();
        assert_eq!(accepted, per_gateway_seqs, "gateway {g}: accepted");
        assert_eq!(
            duplicates,
            2 * BATCHES * PER_BATCH - per_gateway_seqs,
            "gateway {g}: duplicates"
        );
    }

    // The expected rows: every (device, name, time) once.
    let mut points = BTreeSet::new();
    for g in 0..GATEWAYS {
        for seq in 1..=per_gateway_seqs {
            if seq % 10 == 0 {
                points.insert(("roamer".to_owned(), "temp", seq));
            } else {
                let device = format!("gw{g}-dev{}", seq % 4);
                points.insert((device.clone(), "temp", seq));
                points.insert((device, "hum", seq));
            }
        }
    }
    let db = schema.client().await;
    assert_eq!(rows(&db, "points").await, points.len() as i64);
    assert_eq!(
        rows(&db, "envelopes").await,
        (GATEWAYS * per_gateway_seqs) as i64
    );
    assert_eq!(rows(&db, "syncs").await, (GATEWAYS * BATCHES * 2) as i64);
    let counted: i64 = db
        .query_one("SELECT sum(points)::int8 FROM measurements", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(counted, points.len() as i64);

    // Every collector answers the same, and the counters match the rows.
    let mut answers = Vec::new();
    for addr in &addrs {
        let devices = get_json(&client, *addr, "/v1/devices").await;
        let gateways = get_json(&client, *addr, "/v1/gateways").await;
        answers.push((devices, gateways));
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]));
    let (devices, gateways) = &answers[0];
    let devices = devices["devices"].as_array().unwrap();
    assert_eq!(devices.len() as u64, GATEWAYS * 4 + 1);
    let total: u64 = devices.iter().map(|d| d["points"].as_u64().unwrap()).sum();
    assert_eq!(total, points.len() as u64);
    for gateway in gateways["gateways"].as_array().unwrap() {
        assert_eq!(gateway["accepted"], per_gateway_seqs, "{gateway}");
        assert_eq!(gateway["batches"], 2 * BATCHES, "{gateway}");
    }
    let roamer = get_json(
        &client,
        addrs[2],
        "/v1/devices/roamer/points?name=temp&limit=100000",
    )
    .await;
    assert_eq!(
        roamer["points"].as_array().unwrap().len() as u64,
        per_gateway_seqs / 10
    );

    for (_, shutdown, task) in servers {
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }
}

/// POSTs a batch to `addr`; panics unless 200. Returns `(accepted, duplicates)`.
async fn post_to(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    body: Vec<u8>,
) -> (u64, u64) {
    let response = client
        .post(format!("http://{addr}/v1/batches"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/cbor")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let json: serde_json::Value =
        serde_json::from_slice(&response.bytes().await.unwrap()).unwrap_or_default();
    assert_eq!(status, reqwest::StatusCode::OK, "{json}");
    (
        json["accepted"].as_u64().unwrap(),
        json["duplicates"].as_u64().unwrap(),
    )
}

async fn get_json(
    client: &reqwest::Client,
    addr: std::net::SocketAddr,
    path: &str,
) -> serde_json::Value {
    let bytes = client
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_at_random_points_the_database_holds_each_reading_once() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    // The audit log of the reads goes to a temporary directory too.
    let dir = tempfile::tempdir().unwrap();
    let store = [
        OsString::from("--store"),
        OsString::from(schema.url()),
        OsString::from("--audit-file"),
        dir.path().join("audit.log").into(),
    ];
    let total =
        util::crash::killed_at_random_points_the_store_holds_each_reading_once(&store, true).await;
    let db = schema.client().await;
    assert_eq!(rows(&db, "points").await, total as i64);
    assert_eq!(rows(&db, "envelopes").await, total as i64);
}

#[tokio::test]
async fn collectors_starting_together_migrate_once() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let config = schema.config(1);
    let opened = futures_join_all((0..4).map(|_| {
        let config = config.clone();
        async move { PostgresStore::connect(&config).await }
    }))
    .await;
    for store in opened {
        store.unwrap();
    }
    let db = schema.client().await;
    let versions: Vec<i32> = db
        .query("SELECT version FROM cloud_sync_schema_history", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(versions, vec![POSTGRES_SCHEMA_VERSION as i32]);
    // A restart finds nothing to do.
    PostgresStore::connect(&config).await.unwrap();
    assert_eq!(rows(&db, "cloud_sync_schema_history").await, 1);
}

/// Awaits every future (all run concurrently on the test's runtime).
async fn futures_join_all<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let tasks: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for task in tasks {
        out.push(task.await.unwrap());
    }
    out
}

#[tokio::test]
async fn a_schema_of_a_newer_collector_is_refused() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    PostgresStore::connect(&schema.config(1)).await.unwrap();
    let db = schema.client().await;
    db.execute(
        "INSERT INTO cloud_sync_schema_history (version, name, applied_on, checksum)
         VALUES (99, 'future', '2030-01-01T00:00:00Z', '0')",
        &[],
    )
    .await
    .unwrap();
    let err = PostgresStore::connect(&schema.config(1)).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Schema { found: 99, expected } if expected == POSTGRES_SCHEMA_VERSION),
        "{err}"
    );
}

#[tokio::test]
async fn a_search_path_naming_no_schema_is_a_clear_error() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let url = schema.url().replace(&schema.name, "no_such_schema_here");
    let err = PostgresStore::connect(&PostgresConfig::new(&url).unwrap())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("search_path"), "{err}");
}

#[tokio::test]
async fn an_unreachable_server_fails_the_start_without_showing_the_password() {
    // Port 1 on loopback: nothing listens there, the connection is refused.
    let mut config = config(std::path::Path::new("unused"));
    config.store = StoreBackend::Postgres(
        PostgresConfig::new("postgres://collector:s3cret@127.0.0.1:1/telemetry").unwrap(),
    );
    let err = Server::bind(config).await.unwrap_err();
    let message = format!("{err:#}");
    assert!(
        message.contains("cannot open store postgres://collector@127.0.0.1:1/telemetry"),
        "{message}"
    );
    assert!(!message.contains("s3cret"), "{message}");
}

#[tokio::test]
async fn a_gateway_clock_beyond_timestamptz_is_kept_as_infinity() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let store = PostgresStore::connect(&schema.config(2)).await.unwrap();
    let document = |seq, received_at_ms| PreparedEnvelope {
        seq,
        device_id: "d".into(),
        received_at_ms,
        content: Content::Document(Document {
            topic: "t".into(),
            payload: vec![1],
            kind: DocumentKind::Opaque,
            reason: "r".into(),
        }),
    };
    let out = store
        .ingest(PreparedBatch {
            gateway_id: "gw".into(),
            spool_id: SPOOL_A.into(),
            backlog: u64::MAX,
            synced_at_ms: 5,
            envelopes: vec![document(1, 1_000), document(2, u64::MAX)],
        })
        .await
        .unwrap();
    assert_eq!(out.documents, 2);
    let docs = store
        .documents("d".into(), Default::default(), 10)
        .await
        .unwrap();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[1].received_at_ms, i64::MAX as u64 / 1000);
    let device = store.device("d".into()).await.unwrap().unwrap();
    assert_eq!(device.last_seen_ms, i64::MAX as u64 / 1000);
    assert_eq!(store.gateways().await.unwrap()[0].backlog, i64::MAX as u64);
    let db = schema.client().await;
    let infinite: bool = db
        .query_one("SELECT last_seen = 'infinity' FROM devices", &[])
        .await
        .unwrap()
        .get(0);
    assert!(infinite);
}

/// The SQL blocks of `docs/grafana.md`, with Grafana's macros filled in as
/// Grafana would, run against a schema holding data: the documented queries
/// stay valid as the schema evolves.
#[tokio::test]
async fn the_grafana_queries_in_the_docs_run() {
    let Some(schema) = TestSchema::create().await else {
        return;
    };
    let store: Arc<dyn Store> = Arc::new(PostgresStore::connect(&schema.config(2)).await.unwrap());
    let state = cloud_sync::AppState::with_store(&config(std::path::Path::new("unused")), store)
        .expect("no token file");
    let router = cloud_sync::router(state);
    let envelopes = (1..=30)
        .map(|seq| {
            float_envelope(
                seq,
                "dev-1",
                "temp",
                1_700_000_000.0 + seq as f64,
                seq as f64,
            )
        })
        .collect();
    post_batch(&router, &batch("gw-1", SPOOL_A, envelopes)).await;

    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/grafana.md"))
        .expect("docs/grafana.md");
    let blocks: Vec<&str> = doc
        .split("```sql\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap())
        .collect();
    assert!(blocks.len() >= 3, "found {} sql blocks", blocks.len());
    // In order: `$__interval` is a prefix of `$__interval_ms`.
    let macros = [
        (
            "$__timeFilter(time)",
            "time BETWEEN '2023-11-14T00:00:00Z' AND '2023-11-15T00:00:00Z'",
        ),
        (
            "$__timeFilter(synced_at)",
            "synced_at BETWEEN now() - interval '1 day' AND now()",
        ),
        ("$__interval_ms", "60000"),
        ("$__interval", "1m"),
        ("${device:sqlstring}", "'dev-1'"),
        ("${measurement:sqlstring}", "'temp'"),
        ("${gateway:sqlstring}", "'gw-1'"),
    ];
    let db = schema.client().await;
    for block in blocks {
        let mut sql = block.to_owned();
        for (from, to) in &macros {
            sql = sql.replace(from, to);
        }
        assert!(!sql.contains('$'), "a Grafana macro is left in:\n{sql}");
        let rows = db
            .query(&sql, &[])
            .await
            .unwrap_or_else(|err| panic!("{err}:\n{sql}"));
        assert!(!rows.is_empty(), "no rows from:\n{sql}");
    }
}
