//! Micro-benchmarks of the spool's append/flush path and its read path, on
//! real sled files in a temp dir, plain and sealed: a group of 1,000
//! publishes submitted and waited for until durable (one group commit and
//! its fsync), and 1,000 readings read back and acknowledged as the uplink
//! does. `cargo bench -p edge-agent`; the fsync makes the append figures as
//! much about the disk as about the code.

use std::time::{Duration, Instant};

use broker::{Disposition, Incoming, IngestSink};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edge_agent::metrics::SpoolMetrics;
use edge_agent::spool::{KeyRing, Spool, SpoolOptions};

const GROUP: u64 = 1000;

fn keys(sealed: bool) -> KeyRing {
    if sealed {
        KeyRing::parse(
            "bench",
            "1 2026-11-29T00:00:00Z AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=",
        )
        .unwrap()
    } else {
        KeyRing::none()
    }
}

fn open(dir: &std::path::Path, sealed: bool) -> Spool {
    let options = SpoolOptions {
        keys: keys(sealed),
        // Room for every iteration criterion runs.
        max_bytes: 8 << 30,
        ..SpoolOptions::default()
    };
    Spool::open(dir, options, SpoolMetrics::default()).unwrap()
}

/// Submits `GROUP` 100-byte readings of 100 devices; the last ticket.
fn append(spool: &Spool) -> broker::Ticket {
    let mut last = None;
    for i in 0..GROUP {
        let device = format!("dev-{:03}", i % 100);
        last = Some(
            spool
                .submit(Incoming {
                    topic: format!("devices/{device}/telemetry"),
                    device_id: device,
                    received_at: 1_764_000_000_000 + i,
                    payload: vec![0xa5; 100].into(),
                    qos: 1,
                    disposition: Disposition::Reading,
                })
                .unwrap(),
        );
    }
    last.unwrap()
}

fn spool(c: &mut Criterion) {
    let mut group = c.benchmark_group("spool_1000_readings");
    group.throughput(Throughput::Elements(GROUP));
    group.sample_size(20);
    for sealed in [false, true] {
        let name = if sealed { "sealed" } else { "plain" };
        let dir = tempfile::tempdir().unwrap();
        let spool = open(dir.path(), sealed);
        group.bench_function(format!("append_until_durable/{name}"), |b| {
            b.iter(|| {
                let last = append(&spool);
                spool.wait_durable(last, Duration::from_secs(30)).unwrap();
            })
        });
        group.bench_function(format!("read_and_ack/{name}"), |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for _ in 0..iters {
                    // Setting up what to read is not part of the figure.
                    let last = append(&spool);
                    spool.wait_durable(last, Duration::from_secs(30)).unwrap();
                    let after = spool.stats().acked_seq;
                    let started = Instant::now();
                    let batch = spool.read_after(after, GROUP as usize, usize::MAX).unwrap();
                    let upto = batch.last().unwrap().seq;
                    spool.ack(upto, batch.len() as u64).unwrap();
                    spent += started.elapsed();
                }
                spent
            })
        });
        spool.close().unwrap();
    }
    group.finish();
}

criterion_group!(benches, spool);
criterion_main!(benches);
