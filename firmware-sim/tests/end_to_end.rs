//! The whole pipeline in one process, on port 0 with temp dirs: 200
//! simulated devices publish 50 QoS 1 readings each to the gateway's embedded
//! broker; the gateway spools and uploads them; the collector must then hold
//! exactly those 10,000 readings, with the right values and times.

use std::time::Duration;

use edge_agent::{Agent, FileConfig};
use firmware_sim::{run_fleet, verify, FleetConfig};
use tokio_util::sync::CancellationToken;

const DEVICES: usize = 200;
const READINGS: u64 = 50;
const TOKEN: &str = "end-to-end-token";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_readings_arrive_exactly_once() {
    let cloud_dir = tempfile::tempdir().unwrap();
    let spool_dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();

    let mut config = cloud_sync::Config::new(cloud_dir.path(), vec![TOKEN.to_string()]);
    config.listen = "127.0.0.1:0".parse().unwrap();
    let collector = cloud_sync::Server::bind(config).await.unwrap();
    let collector_url = format!("http://{}", collector.local_addr());
    let collector_task = tokio::spawn(collector.run(stop.clone()));

    let mut file = FileConfig::default();
    file.gateway.id = Some("gw-e2e".into());
    file.mqtt.listen = Some("127.0.0.1:0".into());
    file.admin.listen = Some("127.0.0.1:0".into());
    file.spool.dir = Some(spool_dir.path().to_path_buf());
    file.uplink.url = Some(collector_url.clone());
    file.uplink.token = Some(TOKEN.into());
    let agent = Agent::start(file.validate().unwrap()).await.unwrap();

    // Bounded: a delivery bug must fail this test, not hang CI.
    let summary = tokio::time::timeout(
        Duration::from_secs(120),
        run_fleet(
            FleetConfig {
                broker: agent.mqtt_addr().to_string(),
                devices: DEVICES,
                readings_per_device: Some(READINGS),
                rate: 0.0,
                qos: 1,
                inflight: 10,
                progress: false,
                ..FleetConfig::default()
            },
            CancellationToken::new(),
        ),
    )
    .await
    .expect("the fleet finished within 120 s")
    .unwrap();
    let expected = DEVICES as u64 * READINGS;
    assert_eq!(summary.acked, expected, "every reading acknowledged");
    assert_eq!(summary.ledger.len() as u64, expected);

    // The uplink drains the spool once the collector stored everything.
    let drained = tokio::time::timeout(Duration::from_secs(60), async {
        while agent.spool().stats().pending > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(
        drained.is_ok(),
        "spool still holds {:?}",
        agent.spool().stats()
    );

    let report = verify(&summary.ledger, &collector_url).await.unwrap();
    assert!(
        report.is_ok(),
        "missing {}, duplicates {}, wrong {}",
        report.missing.len(),
        report.duplicates.len(),
        report.wrong_value.len()
    );
    assert_eq!(report.expected, expected);
    assert_eq!(report.found, expected);
    assert!(report.missing.is_empty() && report.duplicates.is_empty());

    // The query API sees the same fleet.
    let devices: serde_json::Value = reqwest::get(format!("{collector_url}/v1/devices"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let devices = devices["devices"].as_array().unwrap();
    assert_eq!(devices.len(), DEVICES);
    let points: u64 = devices.iter().map(|d| d["points"].as_u64().unwrap()).sum();
    assert_eq!(points, expected);
    assert!(devices.iter().all(|d| d["gateway_id"] == "gw-e2e"));

    agent.shutdown().await.unwrap();
    stop.cancel();
    collector_task.await.unwrap().unwrap();
}
