//! `/metrics` as an operator scrapes it from a real `edge-agent run`, after
//! a run whose rejects, retries, dead letters and expiries are known in
//! advance: every count must be exact.

mod util;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use util::{publish_each_acked, reading, AgentProcess};

/// A collector stand-in: answers the scripted statuses to the first batch
/// posts, then 200 to every other.
async fn scripted_collector(script: Vec<u16>) -> SocketAddr {
    let script = Arc::new(Mutex::new(script.into_iter().collect::<Vec<_>>()));
    let app = axum::Router::new()
        .route(
            "/v1/batches",
            axum::routing::post(|State(script): State<Arc<Mutex<Vec<u16>>>>| async move {
                let mut script = script.lock().unwrap();
                if script.is_empty() {
                    StatusCode::OK
                } else {
                    StatusCode::from_u16(script.remove(0)).unwrap()
                }
            }),
        )
        .with_state(script);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn scrape(admin: SocketAddr) -> String {
    reqwest::get(format!("http://{admin}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of the sample named exactly `series` (name plus labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter_map(|line| line.rsplit_once(' '))
        .find(|(name, _)| *name == series)
        .and_then(|(_, value)| value.parse().ok())
}

/// Scrapes until `series` reads `want`; panics with the last scrape after 30 s.
async fn await_sample(admin: SocketAddr, series: &str, want: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = scrape(admin).await;
        if sample(&text, series) == Some(want) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {want}:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejects_retries_and_dead_letters_are_counted_exactly() {
    // Two 503s: each makes the uplink send that batch again.
    let collector = scripted_collector(vec![503, 503]).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = AgentProcess::spawn(&dir.path().join("spool"), &format!("http://{collector}"));

    let mut payloads: Vec<Vec<u8>> = (0..10)
        .map(|i| reading(1_795_000_000.0 + f64::from(i), 20.0))
        .collect();
    // 0xff alone (a "break" outside any indefinite item) is not CBOR:
    // refused into the dead letters, and acknowledged so the device moves on.
    payloads.extend((0..3).map(|_| vec![0xff]));
    let all = publish_each_acked(agent.mqtt, "metrics-dev", payloads, |_| {}).await;
    assert_eq!(all, usize::MAX, "every publish was acknowledged");

    let text = await_sample(agent.admin, "edge_uplink_records_total", 10.0).await;
    let exact = [
        ("edge_mqtt_publishes_accepted_total{qos=\"1\"}", 10.0),
        (
            "edge_mqtt_publishes_rejected_total{reason=\"malformed\"}",
            3.0,
        ),
        ("edge_mqtt_puback_latency_seconds_count", 13.0),
        ("edge_spool_dead_letters", 3.0),
        ("edge_uplink_retries_total", 2.0),
        ("edge_uplink_batches_total{status=\"503\"}", 2.0),
        ("edge_spool_records", 0.0),
        ("edge_spool_oldest_age_seconds", 0.0),
        ("edge_spool_write_errors_total", 0.0),
    ];
    for (series, want) in exact {
        assert_eq!(sample(&text, series), Some(want), "{series} in:\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_readings_are_counted_as_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "[spool]\nmax_age = \"1s\"\n").unwrap();
    // Nothing listens at the uplink: the readings stay until they expire.
    let agent = AgentProcess::spawn_with(
        &dir.path().join("spool"),
        "http://127.0.0.1:9",
        &["--config", config.to_str().unwrap()],
    );
    let payloads = (0..7)
        .map(|i| reading(1_795_000_000.0 + f64::from(i), 20.0))
        .collect();
    publish_each_acked(agent.mqtt, "expiring-dev", payloads, |_| {}).await;

    let text = await_sample(
        agent.admin,
        "edge_spool_dropped_total{reason=\"expired\"}",
        7.0,
    )
    .await;
    assert_eq!(sample(&text, "edge_spool_records"), Some(0.0), "{text}");
}
