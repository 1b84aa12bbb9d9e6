//! Retention (`Store::expire`) and erasure (`Store::erase_device`, `DELETE
//! /v1/devices/{id}`): exactly the old data goes, per-device overrides win,
//! summaries stay equal to what is stored, an erased device leaves no record
//! naming it, and a gateway's resend does not bring removed data back.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use cloud_sync::model::{
    Content, Document, DocumentKind, ExpiryPolicy, Point, PreparedBatch, PreparedEnvelope,
    TimeRange,
};
use cloud_sync::store::SeriesQuery;
use telemetry::Value;
use tower::ServiceExt;

use crate::util::backend::TestStore;
use crate::util::{get_ok, post_batch};

const S: i64 = 1_000_000_000;
const SPOOL: &str = "0123456789abcdef0123456789abcdef";

/// `dev` with a point of `temp` and of `hum` at each of `secs`, envelope `seq`
/// received at `secs[0]` seconds.
fn readings(seq: u64, dev: &str, secs: &[i64]) -> PreparedEnvelope {
    let points = secs
        .iter()
        .flat_map(|&s| {
            ["temp", "hum"].map(|name| Point {
                name: name.into(),
                time_ns: s * S,
                value: Value::Float(s as f64),
                unit: None,
            })
        })
        .collect();
    PreparedEnvelope {
        seq,
        device_id: dev.into(),
        received_at_ms: secs[0] as u64 * 1000,
        content: Content::Points(points),
    }
}

/// A document of `dev` received at `secs` seconds.
fn document(seq: u64, dev: &str, secs: u64) -> PreparedEnvelope {
    PreparedEnvelope {
        seq,
        device_id: dev.into(),
        received_at_ms: secs * 1000,
        content: Content::Document(Document {
            topic: format!("devices/{dev}/telemetry"),
            payload: vec![0xa0],
            kind: DocumentKind::Opaque,
            reason: "not senml".into(),
        }),
    }
}

fn batch(envelopes: Vec<PreparedEnvelope>) -> PreparedBatch {
    PreparedBatch {
        gateway_id: "gw".into(),
        spool_id: SPOOL.into(),
        backlog: 0,
        synced_at_ms: 1,
        envelopes,
    }
}

async fn times(t: &TestStore, dev: &str, name: &str) -> Vec<i64> {
    let query = SeriesQuery {
        device_id: dev.into(),
        name: name.into(),
        range: TimeRange::default(),
    };
    t.store
        .points(query, 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.time_ns / S)
        .collect()
}

async fn document_times(t: &TestStore, dev: &str) -> Vec<u64> {
    t.store
        .documents(dev.into(), TimeRange::default(), 1000)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.received_at_ms / 1000)
        .collect()
}

/// Devices a, b, c with points at 10..=19 s (both series) and documents at 10, 15, 19 s.
async fn seeded(t: &TestStore) {
    let mut envelopes = Vec::new();
    let mut seq = 0;
    for dev in ["a", "b", "c"] {
        seq += 1;
        envelopes.push(readings(seq, dev, &(10..20).collect::<Vec<_>>()));
        for secs in [10, 15, 19] {
            seq += 1;
            envelopes.push(document(seq, dev, secs));
        }
    }
    t.store.ingest(batch(envelopes)).await.unwrap();
}

pub async fn retention_removes_exactly_the_points_older_than_the_cutoff(t: TestStore) {
    seeded(&t).await;
    let policy = ExpiryPolicy {
        default: Some(15 * S),
        devices: BTreeMap::new(),
    };
    let out = t.store.expire(policy.clone()).await.unwrap();
    // Per device: 5 times x 2 series, and the document at 10 s.
    assert_eq!((out.points, out.documents, out.devices), (30, 3, 3));
    for dev in ["a", "b", "c"] {
        assert_eq!(times(&t, dev, "temp").await, (15..20).collect::<Vec<_>>());
        assert_eq!(times(&t, dev, "hum").await, (15..20).collect::<Vec<_>>());
        assert_eq!(document_times(&t, dev).await, vec![15, 19]);
        let summary = t.store.device(dev.into()).await.unwrap().unwrap();
        assert_eq!((summary.points, summary.documents), (10, 2), "{dev}");
    }
    // A second run finds nothing more.
    let again = t.store.expire(policy).await.unwrap();
    assert_eq!((again.points, again.documents, again.devices), (0, 0, 0));
}

pub async fn a_per_device_override_wins_over_the_default(t: TestStore) {
    seeded(&t).await;
    let policy = ExpiryPolicy {
        default: Some(15 * S),
        // b keeps more, c keeps everything; d has no data at all.
        devices: BTreeMap::from([
            ("b".to_owned(), Some(12 * S)),
            ("c".to_owned(), None),
            ("d".to_owned(), Some(i64::MAX)),
        ]),
    };
    let out = t.store.expire(policy).await.unwrap();
    assert_eq!((out.points, out.documents, out.devices), (10 + 4, 1 + 1, 2));
    assert_eq!(times(&t, "a", "temp").await, (15..20).collect::<Vec<_>>());
    assert_eq!(times(&t, "b", "hum").await, (12..20).collect::<Vec<_>>());
    assert_eq!(times(&t, "c", "temp").await, (10..20).collect::<Vec<_>>());
    assert_eq!(document_times(&t, "c").await, vec![10, 15, 19]);
    assert_eq!(
        t.store.device("b".into()).await.unwrap().unwrap().points,
        16
    );

    // Only overrides, no default: the others keep everything.
    let only_b = ExpiryPolicy {
        default: None,
        devices: BTreeMap::from([("b".to_owned(), Some(19 * S))]),
    };
    let out = t.store.expire(only_b).await.unwrap();
    assert_eq!((out.points, out.devices), (14, 1));
    assert_eq!(times(&t, "b", "temp").await, vec![19]);
    assert_eq!(times(&t, "c", "temp").await.len(), 10);
}

pub async fn a_device_whose_every_point_expired_stays_listed_without_data(t: TestStore) {
    seeded(&t).await;
    let policy = ExpiryPolicy {
        default: None,
        devices: BTreeMap::from([("a".to_owned(), Some(20 * S))]),
    };
    let out = t.store.expire(policy).await.unwrap();
    assert_eq!((out.points, out.documents), (20, 3));
    let (router, _) = t.app();
    let devices = get_ok(&router, "/v1/devices").await;
    let a = &devices["devices"][0];
    assert_eq!(a["device_id"], "a");
    assert_eq!(a["points"], 0);
    assert_eq!(a["documents"], 0);
    assert_eq!(a["measurements"], serde_json::json!([]));
    // Still known: an empty series, not a 404.
    let points = get_ok(&router, "/v1/devices/a/points?name=temp").await;
    assert_eq!(points["points"], serde_json::json!([]));
    assert_eq!(devices["devices"][1]["points"], 20);
    assert_eq!(
        devices["devices"][1]["measurements"],
        serde_json::json!(["hum", "temp"])
    );
}

pub async fn erasure_leaves_no_trace_of_the_device_and_every_point_of_the_others(t: TestStore) {
    // Ids that appear in no other id, topic or name.
    let keep: Vec<String> = (1..=3).map(|i| format!("keeper-{i}")).collect();
    let mut envelopes = Vec::new();
    for (i, dev) in keep
        .iter()
        .map(String::as_str)
        .chain(["zapped"])
        .enumerate()
    {
        let seq = 10 * i as u64;
        envelopes.push(readings(seq + 1, dev, &[100, 101, 102]));
        envelopes.push(readings(seq + 2, dev, &[103]));
        envelopes.push(document(seq + 3, dev, 104));
    }
    t.store.ingest(batch(envelopes)).await.unwrap();
    assert!(!t.holding("zapped").await.is_empty());

    let dir = tempfile::tempdir().unwrap();
    let (router, state, admin) = t.admin_app(dir.path());
    let erase = |token: String| {
        let router = router.clone();
        async move {
            let request = Request::delete("/v1/devices/zapped")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .body(Body::empty())
                .unwrap();
            let response = router.oneshot(request).await.unwrap();
            let status = response.status();
            let bytes = http_body_util::BodyExt::collect(response.into_body())
                .await
                .unwrap()
                .to_bytes();
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&bytes).unwrap(),
            )
        }
    };
    let (status, body) = erase(admin.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"device_id": "zapped", "points": 8, "documents": 1, "measurements": 2})
    );
    assert_eq!(t.holding("zapped").await, Vec::<String>::new());
    assert_eq!(t.store.device("zapped".into()).await.unwrap(), None);
    assert!(times(&t, "zapped", "temp").await.is_empty());
    for dev in &keep {
        assert_eq!(times(&t, dev, "temp").await, vec![100, 101, 102, 103]);
        assert_eq!(times(&t, dev, "hum").await, vec![100, 101, 102, 103]);
        assert_eq!(document_times(&t, dev).await, vec![104]);
        let summary = t.store.device(dev.clone()).await.unwrap().unwrap();
        assert_eq!((summary.points, summary.documents), (8, 1));
    }
    let listed = get_ok(&router, "/v1/devices").await;
    assert_eq!(listed["devices"].as_array().unwrap().len(), 3);
    let unknown = crate::util::get(&router, "/v1/devices/zapped/points?name=temp").await;
    assert_eq!(
        unknown.status,
        StatusCode::NOT_FOUND,
        "an erased device is unknown"
    );

    // Again: nothing left, still 200.
    let (status, body) = erase(admin).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["points"], 0);
    let erased = state.metrics().encode();
    assert!(erased.contains("cloud_sync_erasures_total 2"), "{erased}");
    assert!(
        erased.contains("cloud_sync_removed_total{reason=\"erasure\",kind=\"points\"} 8"),
        "{erased}"
    );
    state.audit().unwrap().flush().await.unwrap();
    let log = std::fs::read_to_string(dir.path().join("audit.log")).unwrap();
    let erasures: Vec<&str> = log.lines().filter(|l| l.contains("device.erase")).collect();
    assert_eq!(erasures.len(), 2, "{log}");
    assert!(erasures[0].contains("\"device\":\"zapped\""), "{log}");
    assert!(erasures[0].contains("\"points\":8"), "{log}");
}

pub async fn a_resent_batch_of_an_erased_device_stays_erased(t: TestStore) {
    let first = batch(vec![readings(1, "gone", &[1, 2]), document(2, "gone", 3)]);
    t.store.ingest(first.clone()).await.unwrap();
    let erased = t.store.erase_device("gone".into()).await.unwrap();
    assert_eq!((erased.points, erased.documents), (4, 1));
    // The gateway retries the batch it sent before (its answer was lost):
    // the dedup marks stay, so nothing comes back.
    let again = t.store.ingest(first).await.unwrap();
    assert_eq!((again.accepted, again.duplicates, again.points), (0, 2, 0));
    assert_eq!(t.store.device("gone".into()).await.unwrap(), None);
    assert!(document_times(&t, "gone").await.is_empty());
    // A new reading of the device (a new seq) is new data and is stored.
    let later = t
        .store
        .ingest(batch(vec![readings(3, "gone", &[9])]))
        .await
        .unwrap();
    assert_eq!(later.points, 2);
    assert_eq!(times(&t, "gone", "temp").await, vec![9]);
    assert_eq!(
        t.store.device("gone".into()).await.unwrap().unwrap().points,
        2
    );
}

pub async fn retention_over_http_data_keeps_the_api_consistent(t: TestStore) {
    // Through the ingest API too: absolute SenML times in seconds.
    const T0: i64 = 1_700_000_000;
    let (router, _) = t.app();
    let envelopes = (0..10)
        .map(|i: u64| {
            crate::util::float_envelope(i + 1, "dev-1", "temp", (T0 + i as i64) as f64, 1.0)
        })
        .collect();
    post_batch(
        &router,
        &crate::util::batch("gw", crate::util::SPOOL_A, envelopes),
    )
    .await;
    let out = t
        .store
        .expire(ExpiryPolicy {
            default: Some((T0 + 5) * S),
            devices: BTreeMap::new(),
        })
        .await
        .unwrap();
    assert_eq!(out.points, 5);
    let points = get_ok(&router, "/v1/devices/dev-1/points?name=temp").await;
    let times: Vec<f64> = points["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["time"].as_f64().unwrap())
        .collect();
    let expected: Vec<f64> = (5..10).map(|i| (T0 + i) as f64).collect();
    assert_eq!(times, expected);
    let aggregates = get_ok(&router, "/v1/devices/dev-1/aggregates?name=temp&step=100").await;
    let counted: u64 = aggregates["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(counted, 5);
    let devices = get_ok(&router, "/v1/devices").await;
    assert_eq!(devices["devices"][0]["points"], 5);
}
