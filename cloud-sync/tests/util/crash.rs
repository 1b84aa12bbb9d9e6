//! Kill-and-recover, for any store: runs the real `cloud-sync` binary,
//! kills it with SIGKILL at a random moment while a gateway posts
//! overlapping batches, restarts it on the same store, lets the gateway
//! retry every batch, and checks that each reading is stored exactly once
//! and that the counters agree with the data (they are committed together).
//! `tests/crash_recovery.rs` runs it on sled, `tests/postgres.rs` on PostgreSQL.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use super::*;
use rand::Rng;
use telemetry::{encode_batch, SyncBatch};

const BATCHES: u64 = 40;
const PER_BATCH: u64 = 200;
/// Consecutive batches share this many envelopes (an uplink retrying a partial window).
const OVERLAP: u64 = 50;
const DEVICES: u64 = 5;
const KILLS: usize = 4;

fn batch_for(k: u64) -> SyncBatch {
    let first = k * (PER_BATCH - OVERLAP) + 1;
    batch(
        "gw-crash",
        SPOOL_A,
        (first..first + PER_BATCH)
            .map(|seq| {
                let device = format!("dev-{}", seq % DEVICES);
                float_envelope(
                    seq,
                    &device,
                    "temp",
                    1_700_000_000.0 + seq as f64,
                    seq as f64,
                )
            })
            .collect(),
    )
}

/// Starts the binary with `store_args` (which store to use) and returns it
/// with the address it bound.
fn start(store_args: &[OsString]) -> (Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_cloud-sync"))
        .args(["--log-format", "json", "serve", "--listen", "127.0.0.1:0"])
        .args(store_args)
        .args(["--token", TOKEN])
        .env("RUST_LOG", "info")
        .env_remove("CLOUD_SYNC_CONFIG")
        .env_remove("CLOUD_SYNC_STORE")
        .env_remove("CLOUD_SYNC_DATA_DIR")
        .env_remove("CLOUD_SYNC_AUDIT_FILE")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("the collector exited before listening")
            .unwrap();
        let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if event["fields"]["message"] == "collector listening" {
            break event["fields"]["addr"].as_str().unwrap().parse().unwrap();
        }
    };
    // Keep draining the pipe so that logging never blocks the collector.
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

async fn post(
    client: &reqwest::Client,
    addr: SocketAddr,
    body: Vec<u8>,
) -> Option<serde_json::Value> {
    let response = client
        .post(format!("http://{addr}/v1/batches"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/cbor")
        .body(body)
        .send()
        .await
        .ok()?;
    assert!(response.status().is_success(), "{}", response.status());
    serde_json::from_slice(&response.bytes().await.ok()?).ok()
}

async fn get(client: &reqwest::Client, addr: SocketAddr, path: &str) -> serde_json::Value {
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

/// Every reading the collector at `addr` holds (its seq is its value),
/// after checking that no reading is held twice and, with `counted`, that
/// each device's point counter agrees with its points. (Right after a kill
/// the sled store may hold the points of a batch it never answered, ahead
/// of their counters; the gateway's retry counts them.)
async fn stored_seqs(client: &reqwest::Client, addr: SocketAddr, counted: bool) -> BTreeSet<u64> {
    let mut seen = BTreeSet::new();
    let devices = get(client, addr, "/v1/devices").await;
    for device in devices["devices"].as_array().unwrap() {
        let id = device["device_id"].as_str().unwrap();
        let points = get(
            client,
            addr,
            &format!("/v1/devices/{id}/points?name=temp&limit=100000"),
        )
        .await;
        let points = points["points"].as_array().unwrap();
        if counted {
            assert_eq!(
                device["points"],
                points.len(),
                "point counter of {id} drifted"
            );
        }
        for point in points {
            let seq = point["value"].as_f64().unwrap() as u64;
            assert!(seen.insert(seq), "seq {seq} stored twice");
        }
    }
    seen
}

/// The seqs of batches `0..acked`.
fn seqs_of_batches(acked: usize) -> BTreeSet<u64> {
    (0..acked as u64)
        .flat_map(|k| batch_for(k).envelopes.into_iter().map(|e| e.seq))
        .collect()
}

/// The whole test on the store `store_args` name. Returns the number of
/// readings posted, each of which the store now holds exactly once. With
/// `atomic` (a store that commits a batch all at once), the counters must
/// agree with the data after every kill too, not only after the retries.
pub async fn killed_at_random_points_the_store_holds_each_reading_once(
    store_args: &[OsString],
    atomic: bool,
) -> u64 {
    let client = reqwest::Client::new();
    let bodies: Vec<Vec<u8>> = (0..BATCHES).map(|k| encode_batch(&batch_for(k))).collect();
    let mut next: usize = 0;
    // Batches 0..acknowledged were answered 2xx in some life.
    let mut acknowledged: usize = 0;
    let mut rng = rand::rng();

    for _ in 0..KILLS {
        let (mut child, addr) = start(store_args);
        // Before any retry: everything acknowledged before the kill is there.
        let stored = stored_seqs(&client, addr, atomic).await;
        let missing = seqs_of_batches(acknowledged).difference(&stored).count();
        assert_eq!(missing, 0, "{missing} acknowledged readings lost by a kill");
        // The gateway resumes from its oldest unacknowledged batch, which
        // the collector may already hold: it must answer duplicates.
        let resume_from = next.saturating_sub(1);
        let kill_after = Duration::from_millis(rng.random_range(5..250));
        let poster = {
            let client = client.clone();
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let mut acked = resume_from;
                for (k, body) in bodies.into_iter().enumerate().skip(resume_from) {
                    match post(&client, addr, body).await {
                        Some(_) => acked = k + 1,
                        None => break,
                    }
                }
                acked
            })
        };
        tokio::time::sleep(kill_after).await;
        child.kill().unwrap();
        child.wait().unwrap();
        next = poster.await.unwrap();
        println!("life killed after {kill_after:?}: batches {resume_from}..{next} acknowledged");
        acknowledged = acknowledged.max(next);
    }

    // Final life: nothing acknowledged was lost; the gateway retries
    // everything from the start; each reading is then held exactly once.
    let (mut child, addr) = start(store_args);
    let stored = stored_seqs(&client, addr, atomic).await;
    let missing = seqs_of_batches(acknowledged).difference(&stored).count();
    assert_eq!(missing, 0, "{missing} acknowledged readings lost by a kill");
    let mut accepted_now = 0;
    for body in &bodies {
        let answer = post(&client, addr, body.clone())
            .await
            .expect("collector answers");
        accepted_now += answer["accepted"].as_u64().unwrap();
    }
    let total_seqs = (BATCHES - 1) * (PER_BATCH - OVERLAP) + PER_BATCH;

    let gateways = get(&client, addr, "/v1/gateways").await;
    let gw = &gateways["gateways"][0];
    assert_eq!(gw["accepted"], total_seqs, "accepted counter drifted: {gw}");

    let seen = stored_seqs(&client, addr, true).await;
    assert_eq!(seen.len() as u64, total_seqs);
    assert_eq!(seen.first(), Some(&1));
    assert_eq!(seen.last(), Some(&total_seqs));
    println!(
        "{acknowledged} of {BATCHES} batches acknowledged before the last restart; \
         {accepted_now} of {total_seqs} envelopes first stored after it"
    );
    child.kill().unwrap();
    child.wait().unwrap();
    total_seqs
}
