//! The `Store` contract, called directly: idempotence by seq and by point
//! identity, range scans, documents, aggregates, counters, and the edges of
//! the value and time domains.

use std::collections::BTreeSet;

use cloud_sync::model::{
    Bucket, Content, Document, DocumentKind, Point, PreparedBatch, PreparedEnvelope, TimeRange,
};
use cloud_sync::store::SeriesQuery;
use rand::{Rng, SeedableRng};
use telemetry::Value;

use crate::util::backend::TestStore;

const S: i64 = 1_000_000_000;
const SPOOL: &str = "00112233445566778899aabbccddeeff";
const OTHER_SPOOL: &str = "ffeeddccbbaa99887766554433221100";

fn point(name: &str, secs: i64, value: f64) -> Point {
    point_ns(name, secs * S, Value::Float(value))
}

fn point_ns(name: &str, time_ns: i64, value: Value) -> Point {
    Point {
        name: name.into(),
        time_ns,
        value,
        unit: Some("Cel".into()),
    }
}

fn envelope(seq: u64, device: &str, points: Vec<Point>) -> PreparedEnvelope {
    PreparedEnvelope {
        seq,
        device_id: device.into(),
        received_at_ms: 1_000 + seq,
        content: Content::Points(points),
    }
}

fn document(seq: u64, received_at_ms: u64, kind: DocumentKind) -> PreparedEnvelope {
    PreparedEnvelope {
        seq,
        device_id: "d".into(),
        received_at_ms,
        content: Content::Document(Document {
            topic: "devices/d/telemetry".into(),
            payload: vec![seq as u8, 0xff],
            kind,
            reason: "why".into(),
        }),
    }
}

fn batch(spool: &str, envelopes: Vec<PreparedEnvelope>) -> PreparedBatch {
    PreparedBatch {
        gateway_id: "gw".into(),
        spool_id: spool.into(),
        backlog: 3,
        synced_at_ms: 99,
        envelopes,
    }
}

fn series(device: &str, name: &str, from: Option<i64>, to: Option<i64>) -> SeriesQuery {
    SeriesQuery {
        device_id: device.into(),
        name: name.into(),
        range: TimeRange { from, to },
    }
}

/// The times of a series, whole.
async fn times_ns(t: &TestStore, device: &str, name: &str) -> Vec<i64> {
    t.store
        .points(series(device, name, None, None), 100_000)
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.time_ns)
        .collect()
}

pub async fn a_retried_batch_is_all_duplicates(t: TestStore) {
    let b = batch(
        SPOOL,
        vec![
            envelope(1, "d", vec![point("t", 10, 1.0)]),
            envelope(2, "d", vec![point("t", 20, 2.0)]),
        ],
    );
    let first = t.store.ingest(b.clone()).await.unwrap();
    assert_eq!((first.accepted, first.duplicates, first.points), (2, 0, 2));
    let again = t.store.ingest(b).await.unwrap();
    assert_eq!((again.accepted, again.duplicates, again.points), (0, 2, 0));
    let gw = &t.store.gateways().await.unwrap()[0];
    assert_eq!((gw.batches, gw.accepted, gw.duplicates), (2, 2, 2));
}

pub async fn a_resent_reading_under_a_new_seq_is_stored_once(t: TestStore) {
    let out = t
        .store
        .ingest(batch(
            SPOOL,
            vec![
                envelope(1, "d", vec![point("t", 10, 1.0)]),
                envelope(2, "d", vec![point("t", 10, 1.0)]),
            ],
        ))
        .await
        .unwrap();
    assert_eq!((out.accepted, out.points, out.duplicate_points), (2, 1, 1));
    let out = t
        .store
        .ingest(batch(
            SPOOL,
            vec![envelope(3, "d", vec![point("t", 10, 9.0)])],
        ))
        .await
        .unwrap();
    assert_eq!((out.accepted, out.points, out.duplicate_points), (1, 0, 1));
    let points = t
        .store
        .points(series("d", "t", None, None), 10)
        .await
        .unwrap();
    assert_eq!(points.len(), 1);
    assert_eq!(points[0].value, Value::Float(1.0));
    assert_eq!(t.store.device("d".into()).await.unwrap().unwrap().points, 1);
}

pub async fn the_same_seq_of_another_spool_is_new(t: TestStore) {
    t.store
        .ingest(batch(
            SPOOL,
            vec![envelope(1, "d", vec![point("t", 1, 1.0)])],
        ))
        .await
        .unwrap();
    let out = t
        .store
        .ingest(batch(
            OTHER_SPOOL,
            vec![envelope(1, "d", vec![point("t", 2, 2.0)])],
        ))
        .await
        .unwrap();
    assert_eq!((out.accepted, out.duplicates), (1, 0));
    assert_eq!(t.store.gateways().await.unwrap()[0].spool_id, OTHER_SPOOL);
}

pub async fn range_scans_respect_bounds_and_series(t: TestStore) {
    let pts = (0..10).map(|i| point("t", i, i as f64)).collect();
    t.store
        .ingest(batch(
            SPOOL,
            vec![
                envelope(1, "d", pts),
                envelope(2, "d", vec![point("t2", 5, 50.0), point("s", -5, -1.0)]),
                envelope(3, "d.x", vec![point("t", 5, 70.0)]),
            ],
        ))
        .await
        .unwrap();
    let times = |from, to| {
        let store = &t.store;
        async move {
            store
                .points(series("d", "t", from, to), 100)
                .await
                .unwrap()
                .into_iter()
                .map(|p| p.time_ns / S)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(times(None, None).await, (0..10).collect::<Vec<_>>());
    assert_eq!(times(Some(3 * S), Some(6 * S)).await, vec![3, 4, 5]);
    assert_eq!(times(Some(9 * S), None).await, vec![9]);
    assert_eq!(times(None, Some(S)).await, vec![0]);
    assert_eq!(times(Some(3 * S), Some(3 * S)).await, Vec::<i64>::new());
    assert_eq!(
        t.store
            .points(series("d", "t", None, None), 4)
            .await
            .unwrap()
            .len(),
        4
    );
    let neg = t
        .store
        .points(series("d", "s", None, None), 9)
        .await
        .unwrap();
    assert_eq!(neg[0].time_ns, -5 * S);
    assert_eq!(
        t.store
            .series_bounds(series("d", "t", Some(2 * S), None))
            .await
            .unwrap(),
        Some((2 * S, 9 * S))
    );
    assert_eq!(
        t.store
            .series_bounds(series("d", "t", Some(2 * S), Some(2 * S + 1)))
            .await
            .unwrap(),
        Some((2 * S, 2 * S))
    );
    assert_eq!(
        t.store
            .series_bounds(series("d", "none", None, None))
            .await
            .unwrap(),
        None
    );
    let device = t.store.device("d".into()).await.unwrap().unwrap();
    assert_eq!(device.measurements, vec!["s", "t", "t2"]);
    assert_eq!(device.points, 12);
    assert_eq!(t.store.device("d.".into()).await.unwrap(), None);
}

pub async fn documents_are_kept_and_found_by_time(t: TestStore) {
    let out = t
        .store
        .ingest(batch(
            SPOOL,
            vec![
                document(1, 1000, DocumentKind::Opaque),
                document(2, 2000, DocumentKind::Invalid),
                document(3, 3000, DocumentKind::Opaque),
            ],
        ))
        .await
        .unwrap();
    assert_eq!((out.documents, out.invalid_documents), (3, 1));
    let all = t
        .store
        .documents("d".into(), TimeRange::default(), 10)
        .await
        .unwrap();
    assert_eq!(all.iter().map(|d| d.seq).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(all[1].document.kind, DocumentKind::Invalid);
    assert_eq!(all[1].document.payload, vec![2, 0xff]);
    assert_eq!(all[1].document.topic, "devices/d/telemetry");
    assert_eq!(all[1].document.reason, "why");
    assert_eq!(all[1].spool_id, SPOOL);
    assert_eq!(all[1].gateway_id, "gw");
    assert_eq!(all[1].received_at_ms, 2000);
    let range = |from, to| TimeRange {
        from: Some(from),
        to: Some(to),
    };
    let seqs = |docs: Vec<cloud_sync::model::StoredDocument>| {
        docs.iter().map(|d| d.seq).collect::<Vec<_>>()
    };
    let some = t
        .store
        .documents("d".into(), range(2 * S, 3 * S), 10)
        .await
        .unwrap();
    assert_eq!(seqs(some), vec![2]);
    // Bounds between whole milliseconds.
    let some = t
        .store
        .documents("d".into(), range(2 * S - 1, 3 * S + 1), 10)
        .await
        .unwrap();
    assert_eq!(seqs(some), vec![2, 3]);
    let limited = t
        .store
        .documents("d".into(), TimeRange::default(), 2)
        .await
        .unwrap();
    assert_eq!(seqs(limited), vec![1, 2]);
    assert_eq!(
        t.store.device("d".into()).await.unwrap().unwrap().documents,
        3
    );
    assert!(t
        .store
        .documents("e".into(), TimeRange::default(), 10)
        .await
        .unwrap()
        .is_empty());
}

pub async fn dedup_matches_a_model_set(t: TestStore) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
    let mut model = BTreeSet::new();
    for _ in 0..150 {
        // Batches of nearby seqs, with repeats, gaps and going backwards.
        let base: u64 = rng.random_range(0..400);
        let len = rng.random_range(0..30);
        let seqs: Vec<u64> = (0..len).map(|_| base + rng.random_range(0..40)).collect();
        let envelopes = seqs.iter().map(|&s| envelope(s, "d", vec![])).collect();
        let out = t.store.ingest(batch(SPOOL, envelopes)).await.unwrap();
        let mut expected_new = 0;
        for s in &seqs {
            if model.insert(*s) {
                expected_new += 1;
            }
        }
        assert_eq!(out.accepted, expected_new, "{seqs:?}");
        assert_eq!(out.duplicates, seqs.len() as u64 - expected_new);
    }
    let gw = &t.store.gateways().await.unwrap()[0];
    assert_eq!(gw.accepted, model.len() as u64);
}

pub async fn a_batch_spanning_a_long_history_still_finds_held_points(t: TestStore) {
    let history = (0..500).map(|i| point("t", i, i as f64)).collect();
    t.store
        .ingest(batch(SPOOL, vec![envelope(1, "d", history)]))
        .await
        .unwrap();
    let out = t
        .store
        .ingest(batch(
            SPOOL,
            vec![envelope(
                2,
                "d",
                vec![
                    point("t", 0, 9.0),
                    point("t", 499, 9.0),
                    point("t", 600, 9.0),
                ],
            )],
        ))
        .await
        .unwrap();
    assert_eq!((out.points, out.duplicate_points), (1, 2));
    assert_eq!(
        t.store.device("d".into()).await.unwrap().unwrap().points,
        501
    );
}

pub async fn sub_microsecond_times_are_distinct_points(t: TestStore) {
    // SenML times are f64 seconds: two readings 1 ns apart are two points.
    let base = 1_700_000_000 * S + 123_456_789;
    let times = [base - 1, base, base + 1, base + 999, base + 1000, -1, -1001];
    let pts = times
        .iter()
        .map(|&ns| point_ns("t", ns, Value::Float(ns as f64)))
        .collect();
    let out = t
        .store
        .ingest(batch(SPOOL, vec![envelope(1, "d", pts)]))
        .await
        .unwrap();
    assert_eq!(out.points, times.len() as u64);
    let mut sorted = times.to_vec();
    sorted.sort_unstable();
    assert_eq!(times_ns(&t, "d", "t").await, sorted);
    // Windows cut between nanoseconds of one microsecond.
    let window = t
        .store
        .points(series("d", "t", Some(base), Some(base + 1000)), 10)
        .await
        .unwrap();
    assert_eq!(
        window.iter().map(|p| p.time_ns).collect::<Vec<_>>(),
        vec![base, base + 1, base + 999]
    );
    assert_eq!(
        t.store
            .series_bounds(series("d", "t", Some(-1000), Some(base)))
            .await
            .unwrap(),
        Some((-1, base - 1))
    );
    // A resend 1 ns off is new; the same nanosecond is a duplicate.
    let out = t
        .store
        .ingest(batch(
            SPOOL,
            vec![envelope(
                2,
                "d",
                vec![
                    point_ns("t", base + 2, Value::Float(0.0)),
                    point_ns("t", base + 999, Value::Float(0.0)),
                ],
            )],
        ))
        .await
        .unwrap();
    assert_eq!((out.points, out.duplicate_points), (1, 1));
}

fn float_bucket(start_ns: i64, values: &[f64]) -> Bucket {
    Bucket {
        start_ns,
        count: values.len() as u64,
        min: values.iter().copied().reduce(f64::min),
        max: values.iter().copied().reduce(f64::max),
        avg: Some(values.iter().sum::<f64>() / values.len() as f64),
        last: Value::Float(*values.last().unwrap()),
    }
}

pub async fn aggregates_align_to_the_epoch_before_and_after_it(t: TestStore) {
    let pts = [-61, -60, -1, 0, 59, 60]
        .iter()
        .map(|&s| point("t", s, s as f64))
        .collect();
    t.store
        .ingest(batch(SPOOL, vec![envelope(1, "d", pts)]))
        .await
        .unwrap();
    let buckets = t
        .store
        .aggregate(series("d", "t", None, None), 60 * S)
        .await
        .unwrap();
    assert_eq!(
        buckets,
        vec![
            float_bucket(-120 * S, &[-61.0]),
            float_bucket(-60 * S, &[-60.0, -1.0]),
            float_bucket(0, &[0.0, 59.0]),
            float_bucket(60 * S, &[60.0]),
        ]
    );
    // The window cuts buckets; they stay aligned to the epoch.
    let buckets = t
        .store
        .aggregate(series("d", "t", Some(-30 * S), Some(30 * S)), 60 * S)
        .await
        .unwrap();
    assert_eq!(
        buckets,
        vec![float_bucket(-60 * S, &[-1.0]), float_bucket(0, &[0.0])]
    );
}

/// Buckets computed the obvious way, as the model the stores must match:
/// floor division in i128, clamped to the i64 range.
fn model_buckets(points: &[(i64, f64)], step: i64) -> Vec<Bucket> {
    let mut groups: std::collections::BTreeMap<i64, Vec<f64>> = Default::default();
    let mut sorted = points.to_vec();
    sorted.sort_by_key(|p| p.0);
    for (time, value) in sorted {
        let start = i128::from(time).div_euclid(i128::from(step)) * i128::from(step);
        let start = start.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
        groups.entry(start).or_default().push(value);
    }
    groups
        .into_iter()
        .map(|(start, values)| float_bucket(start, &values))
        .collect()
}

pub async fn aggregates_over_steps_that_are_not_whole_microseconds(t: TestStore) {
    // Points 400 ns apart around 2023 and around the epoch; steps of a few
    // hundred ns, of 1.5 µs, and of 1 s + 500 ns.
    let base = 1_700_000_000 * S - 2_000;
    let mut pts: Vec<(i64, f64)> = (0..12).map(|i| (base + 400 * i, i as f64)).collect();
    pts.extend([(-701, 1.0), (-700, 2.0), (-1, 3.0), (0, 4.0), (699, 5.0)]);
    let points = pts
        .iter()
        .map(|&(time, v)| point_ns("t", time, Value::Float(v)))
        .collect();
    t.store
        .ingest(batch(SPOOL, vec![envelope(1, "d", points)]))
        .await
        .unwrap();
    for step in [700, 1500, S + 500, 999_999_999] {
        let buckets = t
            .store
            .aggregate(series("d", "t", None, None), step)
            .await
            .unwrap();
        assert_eq!(buckets, model_buckets(&pts, step), "step {step} ns");
    }
    // And whole microseconds, for comparison.
    for step in [1000, 3000, 60 * S] {
        let buckets = t
            .store
            .aggregate(series("d", "t", None, None), step)
            .await
            .unwrap();
        assert_eq!(buckets, model_buckets(&pts, step), "step {step} ns");
    }
    // A window cutting a bucket between two nanoseconds of one microsecond.
    let window = series("d", "t", Some(base + 401), Some(base + 1601));
    let inside: Vec<(i64, f64)> = pts
        .iter()
        .copied()
        .filter(|&(time, _)| (base + 401..base + 1601).contains(&time))
        .collect();
    for step in [1500, 3000] {
        let buckets = t.store.aggregate(window.clone(), step).await.unwrap();
        assert_eq!(buckets, model_buckets(&inside, step), "window, step {step}");
    }
}

pub async fn a_step_beyond_every_time_makes_one_bucket(t: TestStore) {
    let pts = vec![
        point("t", -5, 1.0),
        point("t", 5, 2.0),
        point_ns("t", i64::MIN, Value::Float(0.0)),
    ];
    t.store
        .ingest(batch(SPOOL, vec![envelope(1, "d", pts)]))
        .await
        .unwrap();
    let buckets = t
        .store
        .aggregate(series("d", "t", None, None), i64::MAX)
        .await
        .unwrap();
    // Buckets start at multiples of the step, clamped to the i64 range.
    assert_eq!(
        buckets,
        vec![
            float_bucket(i64::MIN, &[0.0]),
            float_bucket(-i64::MAX, &[1.0]),
            float_bucket(0, &[2.0]),
        ]
    );
    // A huge whole-microsecond step too.
    let step = i64::MAX / 1000 * 1000;
    let buckets = t
        .store
        .aggregate(series("d", "t", Some(-10 * S), None), step)
        .await
        .unwrap();
    assert_eq!(
        buckets,
        vec![float_bucket(-step, &[1.0]), float_bucket(0, &[2.0])]
    );
}

pub async fn seqs_beyond_i64_are_kept(t: TestStore) {
    let seqs = [u64::MAX, 1 << 63, (1 << 63) - 1, 0];
    let envelopes = seqs
        .iter()
        .map(|&s| document(s, 5_000, DocumentKind::Opaque))
        .collect();
    let out = t.store.ingest(batch(SPOOL, envelopes)).await.unwrap();
    assert_eq!(out.accepted, 4);
    let again = seqs
        .iter()
        .map(|&s| document(s, 5_000, DocumentKind::Opaque))
        .collect();
    assert_eq!(
        t.store
            .ingest(batch(SPOOL, again))
            .await
            .unwrap()
            .duplicates,
        4
    );
    let stored: BTreeSet<u64> = t
        .store
        .documents("d".into(), TimeRange::default(), 10)
        .await
        .unwrap()
        .iter()
        .map(|d| d.seq)
        .collect();
    assert_eq!(stored, seqs.into_iter().collect());
}

pub async fn every_value_round_trips_exactly(t: TestStore) {
    let values = [
        Value::Float(f64::MAX),
        Value::Float(f64::MIN_POSITIVE / 3.0), // subnormal
        Value::Float(-0.1),
        Value::Float(f64::INFINITY),
        Value::Bool(false),
        Value::String(String::new()),
        Value::String("température ✓ \u{1f321}".into()),
        Value::Bytes(vec![]),
        Value::Bytes((0..=255).collect()),
    ];
    let pts = values
        .iter()
        .enumerate()
        .map(|(i, v)| Point {
            name: "v".into(),
            time_ns: i as i64,
            value: v.clone(),
            unit: (i % 2 == 0).then(|| format!("unit-{i}")),
        })
        .collect();
    t.store
        .ingest(batch(SPOOL, vec![envelope(1, "d", pts)]))
        .await
        .unwrap();
    let back = t
        .store
        .points(series("d", "v", None, None), 100)
        .await
        .unwrap();
    assert_eq!(back.len(), values.len());
    for (i, (point, value)) in back.iter().zip(&values).enumerate() {
        assert_eq!(&point.value, value, "value {i}");
        assert_eq!(point.unit, (i % 2 == 0).then(|| format!("unit-{i}")));
    }
    // The last of a bucket keeps its kind; strings and bytes are counted
    // but have no numeric reading.
    let buckets = t
        .store
        .aggregate(series("d", "v", Some(4), None), S)
        .await
        .unwrap();
    assert_eq!(
        buckets,
        vec![Bucket {
            start_ns: 0,
            count: 5,
            min: Some(0.0),
            max: Some(0.0),
            avg: Some(0.0),
            last: Value::Bytes((0..=255).collect()),
        }]
    );
    let buckets = t
        .store
        .aggregate(series("d", "v", Some(5), Some(7)), S)
        .await
        .unwrap();
    assert_eq!(
        (buckets[0].count, buckets[0].min, buckets[0].avg),
        (2, None, None)
    );
}

pub async fn a_device_keeps_the_gateway_of_its_latest_envelope(t: TestStore) {
    let mut later = batch(SPOOL, vec![envelope(1, "d", vec![point("t", 1, 1.0)])]);
    later.envelopes[0].received_at_ms = 5_000;
    t.store.ingest(later).await.unwrap();
    // Another gateway brings an older envelope of the same device.
    let mut older = batch(
        OTHER_SPOOL,
        vec![envelope(1, "d", vec![point("t", 2, 2.0)])],
    );
    older.gateway_id = "gw-2".into();
    older.envelopes[0].received_at_ms = 4_000;
    t.store.ingest(older).await.unwrap();
    let device = t.store.device("d".into()).await.unwrap().unwrap();
    assert_eq!(
        (device.gateway_id.as_str(), device.last_seen_ms),
        ("gw", 5_000)
    );
    assert_eq!(device.points, 2);
    // A newer one moves it.
    let mut newer = batch(OTHER_SPOOL, vec![envelope(2, "d", vec![])]);
    newer.gateway_id = "gw-2".into();
    newer.envelopes[0].received_at_ms = 6_000;
    t.store.ingest(newer).await.unwrap();
    let device = t.store.device("d".into()).await.unwrap().unwrap();
    assert_eq!(
        (device.gateway_id.as_str(), device.last_seen_ms),
        ("gw-2", 6_000)
    );
    let devices = t.store.devices().await.unwrap();
    assert_eq!(devices, vec![device]);
    // Every gateway is listed, sorted.
    let gateways: Vec<String> = t
        .store
        .gateways()
        .await
        .unwrap()
        .into_iter()
        .map(|g| g.gateway_id)
        .collect();
    assert_eq!(gateways, vec!["gw", "gw-2"]);
}

pub async fn the_latest_batch_sets_the_gateway_backlog(t: TestStore) {
    for (synced_at_ms, backlog) in [(1_000, 50), (2_000, 7)] {
        let mut b = batch(SPOOL, vec![]);
        b.synced_at_ms = synced_at_ms;
        b.backlog = backlog;
        t.store.ingest(b).await.unwrap();
    }
    let gw = &t.store.gateways().await.unwrap()[0];
    assert_eq!((gw.backlog, gw.last_sync_ms, gw.batches), (7, 2_000, 2));
    // Devices are listed sorted bytewise ("D" < "a" < "a.b" < "a_b").
    for (seq, id) in [(1, "a_b"), (2, "a.b"), (3, "D"), (4, "a")] {
        t.store
            .ingest(batch(SPOOL, vec![envelope(seq, id, vec![])]))
            .await
            .unwrap();
    }
    let ids: Vec<String> = t
        .store
        .devices()
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.device_id)
        .collect();
    assert_eq!(ids, vec!["D", "a", "a.b", "a_b"]);
}

pub async fn concurrent_batches_of_one_device_count_every_point(t: TestStore) {
    // Eight gateways' batches, all for the same two series, stored at once:
    // the counters end exactly at the number of distinct points.
    let tasks: Vec<_> = (0..8u64)
        .map(|g| {
            let store = std::sync::Arc::clone(&t.store);
            tokio::spawn(async move {
                let envelopes = (0..50u64)
                    .map(|i| {
                        // Every gateway brings points 0..50 of "shared" and its own of "own".
                        envelope(
                            i + 1,
                            "d",
                            vec![
                                point("shared", i as i64, 1.0),
                                point("own", (g * 100 + i) as i64, 1.0),
                            ],
                        )
                    })
                    .collect();
                let mut b = batch(SPOOL, envelopes);
                b.gateway_id = format!("gw-{g}");
                store.ingest(b).await.unwrap()
            })
        })
        .collect();
    let mut points = 0;
    let mut duplicate_points = 0;
    for task in tasks {
        let out = task.await.unwrap();
        assert_eq!(out.accepted, 50);
        points += out.points;
        duplicate_points += out.duplicate_points;
    }
    assert_eq!(points, 50 + 8 * 50);
    assert_eq!(duplicate_points, 7 * 50);
    let device = t.store.device("d".into()).await.unwrap().unwrap();
    assert_eq!(device.points, 450);
    assert_eq!(times_ns(&t, "d", "shared").await.len(), 50);
    assert_eq!(times_ns(&t, "d", "own").await.len(), 400);
}
