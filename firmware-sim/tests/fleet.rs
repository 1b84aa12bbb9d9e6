//! `run_fleet` against a stub MQTT broker started in the test: acknowledgement
//! accounting, resends after a dropped connection, QoS 0, stopping on
//! duration and shutdown, and an unreachable broker.

mod util;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use firmware_sim::{run_fleet, FleetConfig, Summary};
use telemetry::senml::decode_pack;
use tokio_util::sync::CancellationToken;
use util::mqtt_stub::{Behaviour, StubBroker};

fn config(broker: &StubBroker, devices: usize, readings: Option<u64>) -> FleetConfig {
    FleetConfig {
        broker: broker.broker(),
        devices,
        readings_per_device: readings,
        rate: 0.0,
        connect_timeout: Duration::from_secs(2),
        ..FleetConfig::default()
    }
}

async fn run(config: FleetConfig) -> Summary {
    tokio::time::timeout(
        Duration::from_secs(30),
        run_fleet(config, CancellationToken::new()),
    )
    .await
    .expect("fleet run finishes")
    .expect("fleet run succeeds")
}

/// Readings per device, with their times strictly increasing.
fn by_device(summary: &Summary) -> HashMap<String, Vec<f64>> {
    let mut devices: HashMap<String, Vec<f64>> = HashMap::new();
    for r in &summary.ledger {
        devices.entry(r.device_id.clone()).or_default().push(r.time);
    }
    for times in devices.values() {
        assert!(
            times.windows(2).all(|w| w[0] < w[1]),
            "times strictly increase: {times:?}"
        );
    }
    devices
}

#[tokio::test]
async fn qos1_every_reading_is_acknowledged_and_recorded() {
    let broker = StubBroker::start(Behaviour::default()).await;
    let summary = run(config(&broker, 20, Some(15))).await;

    assert_eq!((summary.sent, summary.acked, summary.errors), (300, 300, 0));
    assert_eq!(summary.ledger.len(), 300);
    let devices = by_device(&summary);
    assert_eq!(devices.len(), 20);
    assert!(devices.values().all(|times| times.len() == 15));

    let received = broker.received();
    assert_eq!(received.len(), 300, "no resends without errors");
    let mut stored = HashSet::new();
    for publish in &received {
        assert_eq!(
            publish.topic,
            format!("devices/{}/telemetry", publish.client_id)
        );
        assert_eq!(
            publish.username.as_deref(),
            Some(publish.client_id.as_str())
        );
        assert_eq!(publish.qos, 1);
        let records = decode_pack(&publish.payload, 0.0).expect("senml pack");
        assert_eq!(records.len(), 1);
        stored.insert((
            publish.client_id.clone(),
            records[0].time.to_bits(),
            records[0].name.clone(),
        ));
    }
    let ledger: HashSet<_> = summary
        .ledger
        .iter()
        .map(|r| (r.device_id.clone(), r.time.to_bits(), r.name.clone()))
        .collect();
    assert_eq!(stored, ledger);
    assert!(broker.connections().values().all(|&n| n == 1));
}

#[tokio::test]
async fn resends_unacked_readings_after_a_dropped_connection() {
    let broker = StubBroker::start(Behaviour {
        drop_first_connection_after: Some(5),
        ..Behaviour::default()
    })
    .await;
    let summary = run(config(&broker, 10, Some(20))).await;

    assert_eq!(summary.acked, 200);
    assert_eq!(summary.sent, 200, "a resend is not a new reading");
    assert_eq!(summary.errors, 10, "one dropped connection per device");
    assert!(broker.connections().values().all(|&n| n == 2));
    by_device(&summary);

    // The resends are the same bytes: the store can recognise them.
    let received = broker.received();
    assert!(received.len() > 200, "the unacked ones were sent again");
    let distinct: HashSet<_> = received
        .iter()
        .map(|p| (p.client_id.clone(), p.payload.clone()))
        .collect();
    assert_eq!(distinct.len(), 200);
}

#[tokio::test]
async fn qos0_counts_written_readings() {
    let broker = StubBroker::start(Behaviour::default()).await;
    let summary = run(FleetConfig {
        qos: 0,
        ..config(&broker, 8, Some(25))
    })
    .await;
    assert_eq!((summary.sent, summary.acked), (200, 200));
    assert_eq!(summary.ledger.len(), 200);
    // Written readings reach the broker even without acknowledgements.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let received = broker.received();
    assert_eq!(received.len(), 200);
    assert!(received.iter().all(|p| p.qos == 0));
}

#[tokio::test]
async fn duration_stops_a_fleet_whose_broker_never_acks() {
    let broker = StubBroker::start(Behaviour {
        ack: false,
        ..Behaviour::default()
    })
    .await;
    let started = Instant::now();
    let summary = run(FleetConfig {
        inflight: 10,
        duration: Some(Duration::from_millis(500)),
        ..config(&broker, 5, None)
    })
    .await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_millis(3500),
        "stopped within ~2 s: {elapsed:?}"
    );
    assert_eq!(summary.acked, 0);
    assert!(summary.ledger.is_empty());
    assert_eq!(summary.sent, 50, "each device filled its inflight window");
    assert_eq!(summary.unacked(), 50);
}

#[tokio::test]
async fn shutdown_stops_an_endless_run() {
    let broker = StubBroker::start(Behaviour::default()).await;
    let shutdown = CancellationToken::new();
    let fleet = tokio::spawn(run_fleet(
        FleetConfig {
            rate: 50.0,
            ..config(&broker, 4, None)
        },
        shutdown.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(600)).await;
    let cancelled = Instant::now();
    shutdown.cancel();
    let summary = fleet.await.unwrap().unwrap();
    assert!(cancelled.elapsed() < Duration::from_secs(3));
    assert!(
        summary.acked > 0 && summary.acked <= summary.sent,
        "{summary:?}"
    );
    assert_eq!(summary.ledger.len() as u64, summary.acked);
}

#[tokio::test]
async fn rate_paces_the_readings() {
    let broker = StubBroker::start(Behaviour::default()).await;
    let summary = run(FleetConfig {
        rate: 20.0,
        ..config(&broker, 4, Some(10))
    })
    .await;
    assert_eq!(summary.acked, 40);
    // Ten readings at 20/s take at least 450 ms per device.
    for times in by_device(&summary).values() {
        let span = times[times.len() - 1] - times[0];
        assert!(span >= 0.44, "readings spread over {span} s");
    }
}

#[tokio::test]
async fn same_seed_same_values() {
    let broker = StubBroker::start(Behaviour::default()).await;
    let values = |summary: Summary| -> Vec<_> {
        summary
            .ledger
            .iter()
            .map(|r| (r.device_id.clone(), r.value.clone()))
            .collect()
    };
    let run_with = |seed| FleetConfig {
        seed,
        ..config(&broker, 4, Some(30))
    };
    let a = values(run(run_with(7)).await);
    let b = values(run(run_with(7)).await);
    let c = values(run(run_with(8)).await);
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[tokio::test]
async fn unreachable_broker_fails_fast() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let result = run_fleet(
        FleetConfig {
            broker: format!("127.0.0.1:{port}"),
            devices: 3,
            readings_per_device: Some(5),
            connect_timeout: Duration::from_secs(1),
            ..FleetConfig::default()
        },
        CancellationToken::new(),
    )
    .await;
    let err = result.expect_err("nobody can connect").to_string();
    assert!(
        err.starts_with("no device could connect to 127.0.0.1:"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(8));
}

#[tokio::test]
async fn invalid_config_names_the_field() {
    let err = run_fleet(
        FleetConfig {
            qos: 2,
            ..FleetConfig::default()
        },
        CancellationToken::new(),
    )
    .await
    .expect_err("qos 2 is refused");
    assert!(
        format!("{err:#}").contains("qos: must be 0 or 1"),
        "{err:#}"
    );
}
