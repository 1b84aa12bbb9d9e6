//! Ingest speed of full batches through the router (decode, validate, store,
//! flush): 1000 envelopes of one reading, and of three readings. Correctness
//! is asserted; speed is only printed (a shared machine makes timing
//! assertions flaky): run
//! `cargo test -p cloud-sync --release --test throughput -- --nocapture`
//! to see the figures.

mod util;

use std::time::{Duration, Instant};

use axum::Router;
use telemetry::{encode_batch, Value};
use util::*;

const ENVELOPES: u64 = 1000;
const ROUNDS: u64 = 7;

/// Posts `ROUNDS` batches of fresh envelopes with `readings` each; returns the median time.
async fn median_ingest(router: &Router, spool: &str, readings: usize) -> Duration {
    let names = ["temperature", "humidity", "battery"];
    let units = ["Cel", "%RH", "V"];
    let mut timings = Vec::new();
    for round in 0..ROUNDS {
        let envelopes = (0..ENVELOPES)
            .map(|i| {
                let seq = round * ENVELOPES + i + 1;
                let time = 1_700_000_000.0 + seq as f64;
                let records: Vec<_> = (0..readings)
                    .map(|r| {
                        reading(
                            names[r],
                            time,
                            Value::Float(20.0 + i as f64 / 100.0),
                            Some(units[r]),
                        )
                    })
                    .collect();
                envelope(seq, &format!("sensor-{:03}", i % 100), senml(&records))
            })
            .collect();
        let body = encode_batch(&batch("gw-bench", spool, envelopes));
        let started = Instant::now();
        let answer = post_raw(router, body, Some(TOKEN), None).await;
        timings.push(started.elapsed());
        assert_eq!(answer.json["accepted"], ENVELOPES, "{}", answer.text);
    }
    timings.sort();
    let median = timings[timings.len() / 2];
    println!(
        "{ENVELOPES} envelopes x {readings} reading(s): median {median:?}, min {:?}, max {:?}",
        timings[0],
        timings[timings.len() - 1]
    );
    median
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_1000_envelopes_ingests_fast() {
    let dir = tempfile::tempdir().unwrap();
    let (router, _) = app(dir.path()).await;
    let one = median_ingest(&router, SPOOL_A, 1).await;
    // Another spool and other times: a second, independent series of batches.
    let three = median_ingest(&router, SPOOL_B, 3).await;
    let devices = get_ok(&router, "/v1/devices").await;
    let points: u64 = devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["points"].as_u64().unwrap())
        .sum();
    // The three-reading run repeats the temperature readings of the first
    // run (same device, name and time): those are recognised as resends.
    assert_eq!(points, ENVELOPES * ROUNDS * 3);
    // Figures only: this machine is shared, so speed is reported, not asserted.
    eprintln!(
        "median ingest of {ENVELOPES} envelopes: 1 reading each {one:?}, 3 readings each {three:?}"
    );
}
