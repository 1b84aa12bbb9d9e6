//! A PUBACK means the reading is on disk: publish from many devices, kill -9
//! the agent in the middle, reopen its spool and find every acknowledged
//! reading there.

mod util;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use edge_agent::metrics::SpoolMetrics;
use edge_agent::spool::{Spool, SpoolOptions};
use util::{publish_each_acked, reading, AgentProcess};

const DEVICES: usize = 20;
const READINGS: usize = 100;
/// Kill the agent once this many PUBACKs arrived, mid-stream.
const KILL_AFTER: usize = 600;

/// A reading as the device sent it: device id and payload bytes.
type Sent = (String, Vec<u8>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_reading_survives_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens at the uplink address: every reading stays spooled.
    let mut agent = AgentProcess::spawn(dir.path(), "http://127.0.0.1:9");
    let acked: Arc<Mutex<HashSet<Sent>>> = Arc::default();
    let killed = Arc::new(tokio::sync::Notify::new());

    let mut publishers = Vec::new();
    for d in 0..DEVICES {
        let device_id = format!("dev-{d:02}");
        let payloads: Vec<Vec<u8>> = (0..READINGS)
            .map(|i| reading(1_700_000_000.0 + i as f64, d as f64 + i as f64 / 1000.0))
            .collect();
        let acked = acked.clone();
        let killed = killed.clone();
        let addr = agent.mqtt;
        publishers.push(tokio::spawn(async move {
            let copy = payloads.clone();
            publish_each_acked(addr, &device_id, payloads, |i| {
                let mut acked = acked.lock().unwrap();
                acked.insert((device_id.clone(), copy[i].clone()));
                if acked.len() == KILL_AFTER {
                    killed.notify_one();
                }
            })
            .await
        }));
    }
    tokio::time::timeout(Duration::from_secs(60), killed.notified())
        .await
        .expect("the agent acknowledged publishes");
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    for publisher in publishers {
        publisher.await.unwrap();
    }

    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= KILL_AFTER);
    assert!(
        acked.len() < DEVICES * READINGS,
        "the kill came before the end"
    );
    let spool = Spool::open(dir.path(), SpoolOptions::default(), SpoolMetrics::default()).unwrap();
    let stored: HashSet<Sent> = spool
        .read_after(0, usize::MAX, usize::MAX)
        .unwrap()
        .into_iter()
        .map(|e| (e.device_id, e.payload.into_vec()))
        .collect();
    let lost: Vec<_> = acked.difference(&stored).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged readings lost, e.g. {:?}",
        lost.len(),
        lost.first()
    );
    assert_eq!(spool.stats().pending, stored.len() as u64);
}
