//! The sled spool on real files in a temp dir: ordering, durability
//! watermark, acknowledgement trimming, reopening, dead letters, and a
//! proptest model against an in-memory reference.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use broker::{Disposition, Incoming, IngestSink, Ticket};
use edge_agent::metrics::SpoolMetrics;
use edge_agent::spool::{Spool, SpoolOptions};
use proptest::prelude::*;

fn open(dir: &Path) -> Spool {
    Spool::open(dir, SpoolOptions::default(), SpoolMetrics::default()).unwrap()
}

fn incoming(device: &str, payload: &[u8], disposition: Disposition) -> Incoming {
    Incoming {
        device_id: device.to_string(),
        topic: format!("devices/{device}/telemetry"),
        received_at: 1_700_000_000_000,
        payload: payload.to_vec().into(),
        qos: 1,
        disposition,
    }
}

fn submit(spool: &Spool, device: &str, payload: &[u8]) -> Ticket {
    spool
        .submit(incoming(device, payload, Disposition::Reading))
        .unwrap()
}

fn wait(spool: &Spool, ticket: Ticket) {
    spool.wait_durable(ticket, Duration::from_secs(10)).unwrap();
}

#[test]
fn readings_come_back_in_seq_order_after_they_are_durable() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let tickets: Vec<_> = (0..250u8).map(|i| submit(&spool, "d", &[i])).collect();
    assert!(tickets.windows(2).all(|w| w[0] < w[1]), "tickets increase");
    wait(&spool, *tickets.last().unwrap());
    assert!(tickets.iter().all(|t| spool.is_durable(*t)));

    let all = spool.read_after(0, usize::MAX, usize::MAX).unwrap();
    assert_eq!(all.len(), 250);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(
        all.iter().map(|e| e.payload[0]).collect::<Vec<_>>(),
        (0..250u8).collect::<Vec<_>>()
    );
    assert_eq!(all[0].seq, tickets[0].0);

    let page = spool.read_after(all[99].seq, 50, usize::MAX).unwrap();
    assert_eq!(page.len(), 50);
    assert_eq!(page[0].seq, all[100].seq);
    let by_bytes = spool.read_after(0, usize::MAX, 1).unwrap();
    assert_eq!(by_bytes.len(), 1, "the byte limit closes a batch");
    assert_eq!(spool.stats().pending, 250);
}

#[test]
fn acknowledged_readings_are_trimmed_and_stay_gone_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let spool_id;
    let seqs: Vec<u64>;
    {
        let spool = open(dir.path());
        spool_id = spool.spool_id().to_string();
        let tickets: Vec<_> = (0..100u8).map(|i| submit(&spool, "d", &[i])).collect();
        wait(&spool, *tickets.last().unwrap());
        seqs = tickets.iter().map(|t| t.0).collect();
        spool.ack(seqs[39], 40).unwrap();
        assert_eq!(spool.stats().pending, 60);
        assert_eq!(
            spool.read_after(0, usize::MAX, usize::MAX).unwrap()[0].seq,
            seqs[40]
        );
        spool.close().unwrap();
    }
    let spool = open(dir.path());
    assert_eq!(spool.spool_id(), spool_id, "the spool keeps its id");
    assert_eq!(spool.stats().acked_seq, seqs[39]);
    assert_eq!(spool.stats().pending, 60);
    let rest = spool
        .read_after(spool.stats().acked_seq, usize::MAX, usize::MAX)
        .unwrap();
    assert_eq!(rest.len(), 60);
    let next = submit(&spool, "d", b"after");
    assert!(next.0 > *seqs.last().unwrap(), "seqs are never reused");
}

#[test]
fn refused_publishes_go_to_bounded_dead_letters_not_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let options = SpoolOptions {
        max_dead_letters: 3,
        ..SpoolOptions::default()
    };
    let spool = Spool::open(dir.path(), options, SpoolMetrics::default()).unwrap();
    let mut last = Ticket(0);
    for i in 0..5u8 {
        let reason = format!("bad {i}");
        last = spool
            .submit(incoming("d", &[i], Disposition::Rejected { reason }))
            .unwrap();
    }
    wait(&spool, last);
    assert!(spool
        .read_after(0, usize::MAX, usize::MAX)
        .unwrap()
        .is_empty());
    let letters = spool.dead_letters().unwrap();
    assert_eq!(
        letters
            .iter()
            .map(|l| l.reason.as_str())
            .collect::<Vec<_>>(),
        ["bad 2", "bad 3", "bad 4"]
    );
}

#[test]
fn many_submitters_share_group_commits() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    std::thread::scope(|scope| {
        for t in 0..8u8 {
            let spool = &spool;
            scope.spawn(move || {
                let tickets: Vec<_> = (0..200u8)
                    .map(|i| submit(spool, &format!("d{t}"), &[t, i]))
                    .collect();
                wait(spool, *tickets.last().unwrap());
            });
        }
    });
    let all = spool.read_after(0, usize::MAX, usize::MAX).unwrap();
    assert_eq!(all.len(), 1600);
    assert!(all.windows(2).all(|w| w[0].seq < w[1].seq));
    spool.close().unwrap();
    drop(spool);
    let db = sled::open(dir.path()).unwrap();
    let blocks = db.open_tree("queue").unwrap().len();
    assert!(
        blocks < 1600,
        "{blocks} blocks for 1600 readings: no group commit"
    );
}

#[derive(Debug, Clone)]
enum Op {
    Submit(u8),
    /// Acknowledge the oldest `n` pending readings, as the uplink would.
    Ack(usize),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => any::<u8>().prop_map(Op::Submit),
        2 => (0usize..20).prop_map(Op::Ack),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The spool behaves like an ordered map of pending readings.
    #[test]
    fn spool_matches_an_in_memory_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = open(dir.path());
        let mut model: BTreeMap<u64, u8> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Submit(byte) => {
                    let ticket = submit(&spool, "m", &[byte]);
                    wait(&spool, ticket);
                    prop_assert!(model.keys().next_back().is_none_or(|last| *last < ticket.0));
                    model.insert(ticket.0, byte);
                }
                Op::Ack(n) => {
                    let acked: Vec<u64> = model.keys().take(n).copied().collect();
                    if let Some(upto) = acked.last() {
                        spool.ack(*upto, acked.len() as u64).unwrap();
                        for seq in acked {
                            model.remove(&seq);
                        }
                    }
                }
                Op::Reopen => {
                    spool.close().unwrap();
                    drop(spool);
                    spool = open(dir.path());
                }
            }
            let stored: BTreeMap<u64, u8> = spool
                .read_after(spool.stats().acked_seq, usize::MAX, usize::MAX)
                .unwrap()
                .into_iter()
                .map(|e| (e.seq, e.payload[0]))
                .collect();
            prop_assert_eq!(&stored, &model);
            prop_assert_eq!(spool.stats().pending, model.len() as u64);
        }
    }
}

/// Overwrites the middle of every file in the spool with garbage.
fn corrupt_files(dir: &Path) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            let mut bytes = std::fs::read(&path).unwrap();
            let len = bytes.len();
            for b in &mut bytes[len / 4..len * 3 / 4] {
                *b = 0x5a;
            }
            std::fs::write(&path, bytes).unwrap();
        }
    }
}

#[test]
fn a_corrupt_spool_is_moved_aside_and_a_fresh_one_starts() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("spool");
    let old_id = {
        let spool = open(&dir);
        let tickets: Vec<_> = (0..50u8).map(|i| submit(&spool, "d", &[i])).collect();
        wait(&spool, *tickets.last().unwrap());
        spool.close().unwrap();
        spool.spool_id().to_string()
    };
    corrupt_files(&dir);

    let metrics = SpoolMetrics::default();
    let (spool, aside) =
        edge_agent::spool::open_or_quarantine(&dir, &SpoolOptions::default(), &metrics).unwrap();
    let aside = aside.expect("the corrupt spool was quarantined");
    assert!(aside.exists());
    assert!(
        aside
            .file_name()
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("spool.quarantine-"),
        "{}",
        aside.display()
    );
    assert_ne!(spool.spool_id(), old_id, "a fresh spool has a new id");
    assert_eq!(spool.stats().pending, 0);
    assert_eq!(metrics.quarantined.get(), 1);
    let ticket = submit(&spool, "d", b"new");
    wait(&spool, ticket);
}

#[test]
fn a_healthy_spool_is_not_quarantined() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("spool");
    drop(open(&dir));
    let (_spool, aside) = edge_agent::spool::open_or_quarantine(
        &dir,
        &SpoolOptions::default(),
        &SpoolMetrics::default(),
    )
    .unwrap();
    assert_eq!(aside, None);
}
