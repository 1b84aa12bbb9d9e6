//! `verify` against a fake collector query API served by axum on 127.0.0.1:0.

mod util;

use std::time::Duration;

use firmware_sim::sensors::Sensor;
use firmware_sim::{verify, verify_within, Ledger, Reading};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use util::collector::{point_json, FakeCollector};

/// Four devices (one of each sensor kind), five readings each.
fn ledger() -> Ledger {
    let mut ledger = Ledger::new();
    for index in 0..4 {
        let mut sensor = Sensor::for_device(3, index);
        for k in 0..5u64 {
            ledger.push(Reading {
                device_id: format!("sim-{index:05}"),
                name: sensor.kind().name().to_owned(),
                time: (1_732_829_101_000 + 1000 * k + 3 * index as u64) as f64 / 1000.0,
                value: sensor.sample(),
                unit: sensor.kind().unit().map(str::to_owned),
            });
        }
    }
    ledger
}

#[tokio::test]
async fn all_present_is_ok() {
    let collector = FakeCollector::start().await;
    let ledger = ledger();
    collector.store_all(&ledger);
    let report = verify(&ledger, &collector.url).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(
        (report.expected, report.found, report.unexpected),
        (20, 20, 0)
    );

    // One query per series, over the ledger's time range.
    let queries = collector.queries.lock().unwrap().clone();
    assert_eq!(queries.len(), 4);
    assert!(queries
        .iter()
        .any(|q| q.starts_with("name=door&from=1732829101.")));
    assert!(queries.iter().all(|q| q.ends_with("&limit=100000")));
}

#[tokio::test]
async fn one_missing() {
    let collector = FakeCollector::start().await;
    let ledger = ledger();
    let lost = &ledger.readings()[7];
    for reading in ledger.iter().filter(|r| *r != lost) {
        collector.store(reading);
    }
    let report = verify(&ledger, &collector.url).await.unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.found, 19);
    assert_eq!(report.missing.len(), 1);
    assert_eq!(report.missing[0].device_id, lost.device_id);
    assert_eq!(report.missing[0].time, lost.time);
    assert!(report.duplicates.is_empty() && report.wrong_value.is_empty());
}

#[tokio::test]
async fn one_duplicated() {
    let collector = FakeCollector::start().await;
    let ledger = ledger();
    collector.store_all(&ledger);
    let twice = &ledger.readings()[12];
    collector.store(twice);
    let report = verify(&ledger, &collector.url).await.unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.found, 20);
    assert_eq!(report.duplicates.len(), 1);
    assert_eq!(report.duplicates[0].key.time, twice.time);
    assert_eq!(report.duplicates[0].copies, 2);
    assert!(report.missing.is_empty() && report.wrong_value.is_empty());
}

#[tokio::test]
async fn one_wrong_value() {
    let collector = FakeCollector::start().await;
    let ledger = ledger();
    let wrong = &ledger.readings()[1]; // a temperature
    for reading in ledger.iter().filter(|r| *r != wrong) {
        collector.store(reading);
    }
    let mut point = point_json(wrong);
    point["value"] = json!(-273.15);
    collector.store_as(wrong, point);
    let report = verify(&ledger, &collector.url).await.unwrap();
    assert!(!report.is_ok());
    assert_eq!(report.found, 20);
    assert_eq!(report.wrong_value.len(), 1);
    assert_eq!(report.wrong_value[0].key.time, wrong.time);
    assert!(report.wrong_value[0].found.contains("-273.15"));
    assert!(report.missing.is_empty() && report.duplicates.is_empty());
}

#[tokio::test]
async fn unknown_device_is_all_missing() {
    let collector = FakeCollector::start().await;
    let ledger = ledger();
    for reading in ledger.iter().filter(|r| r.device_id != "sim-00002") {
        collector.store(reading);
    }
    let report = verify(&ledger, &collector.url).await.unwrap();
    assert_eq!(report.found, 15);
    assert_eq!(report.missing.len(), 5);
    assert!(report.missing.iter().all(|k| k.device_id == "sim-00002"));
    let mut out = Vec::new();
    report.print(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.starts_with("expected 20, found 15, missing 5,"),
        "{text}"
    );
    assert!(text.ends_with("verdict: FAILED\n"), "{text}");
}

#[tokio::test]
async fn unexpected_points_are_counted_not_failed() {
    let collector = FakeCollector::start().await;
    let ledger = ledger();
    collector.store_all(&ledger);
    // A reading the device sent but never got acknowledged (QoS 0, or lost PUBACK).
    let extra = Reading {
        time: ledger.readings()[0].time + 0.5,
        ..ledger.readings()[0].clone()
    };
    collector.store(&extra);
    let report = verify(&ledger, &collector.url).await.unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.unexpected, 1);
}

#[tokio::test]
async fn collector_down_is_an_error() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let err = verify(&ledger(), &format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("GET http://127.0.0.1:"),
        "{err:#}"
    );
    assert!(verify(&ledger(), "not a url").await.is_err());
}

#[tokio::test]
async fn verify_within_waits_for_late_points() {
    let collector = FakeCollector::start().await;
    let ledger = ledger();
    let (first, late) = ledger.readings().split_at(10);
    for reading in first {
        collector.store(reading);
    }
    let late = late.to_vec();
    let shutdown = CancellationToken::new();
    let report = tokio::join!(
        verify_within(&ledger, &collector.url, Duration::from_secs(10), &shutdown),
        async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            for reading in &late {
                collector.store(reading);
            }
        }
    )
    .0
    .unwrap();
    assert!(report.is_ok(), "{report:?}");

    // Without the late points it gives up after the wait with the last report.
    let collector = FakeCollector::start().await;
    for reading in first {
        collector.store(reading);
    }
    let started = std::time::Instant::now();
    let report = verify_within(&ledger, &collector.url, Duration::from_secs(2), &shutdown)
        .await
        .unwrap();
    assert_eq!(report.missing.len(), 10);
    assert!(started.elapsed() < Duration::from_secs(5));
}
