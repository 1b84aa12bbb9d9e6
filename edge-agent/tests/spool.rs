//! The spool on real files in a temp dir: ordering, durability
//! watermark, acknowledgement trimming, reopening, dead letters, and a
//! proptest model against an in-memory reference.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use broker::{Disposition, Incoming, IngestSink, Ticket};
use edge_agent::metrics::SpoolMetrics;
use edge_agent::spool::{FullPolicy, Spool, SpoolOptions};
use proptest::prelude::*;

fn open(dir: &Path) -> Spool {
    Spool::open(dir, SpoolOptions::default(), SpoolMetrics::default()).unwrap()
}

fn incoming(device: &str, payload: &[u8], disposition: Disposition) -> Incoming {
    Incoming {
        device_id: device.to_string(),
        topic: format!("devices/{device}/telemetry"),
        received_at: now_ms(),
        payload: payload.to_vec().into(),
        qos: 1,
        disposition,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
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
    let blocks = spool.inspect().unwrap().blocks;
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

fn bounded(dir: &Path, max_bytes: u64, policy: FullPolicy) -> (Spool, SpoolMetrics) {
    let metrics = SpoolMetrics::default();
    let options = SpoolOptions {
        max_bytes,
        full_policy: policy,
        // One reading per block, so that the bound bites block by block.
        max_block_records: 1,
        ..SpoolOptions::default()
    };
    (Spool::open(dir, options, metrics.clone()).unwrap(), metrics)
}

#[test]
fn a_full_spool_drops_the_oldest_readings_and_counts_them() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, metrics) = bounded(dir.path(), 20_000, FullPolicy::DropOldest);
    let payload = [0u8; 200];
    for i in 0..400u16 {
        let mut p = payload;
        p[..2].copy_from_slice(&i.to_be_bytes());
        let ticket = submit(&spool, "d", &p);
        wait(&spool, ticket);
    }
    let stats = spool.stats();
    assert!(stats.bytes <= 20_000, "{stats:?}");
    let kept = spool.read_after(0, usize::MAX, usize::MAX).unwrap();
    assert!(!kept.is_empty() && kept.len() < 400);
    assert_eq!(stats.pending, kept.len() as u64);
    let newest = &kept.last().unwrap().payload;
    assert_eq!(
        &newest[..2],
        &399u16.to_be_bytes(),
        "the newest reading is kept"
    );
    let dropped = metrics
        .dropped
        .get_or_create(&broker::ReasonLabel { reason: "full" })
        .get();
    assert_eq!(
        dropped + kept.len() as u64,
        400,
        "every reading is kept or counted as dropped"
    );
}

#[test]
fn a_full_spool_with_reject_new_withholds_acknowledgements() {
    let dir = tempfile::tempdir().unwrap();
    let (spool, metrics) = bounded(dir.path(), 70_000, FullPolicy::RejectNew);
    let mut refused = None;
    for i in 0..2000u32 {
        let ticket = submit(&spool, "d", &[0u8; 200]);
        if let Err(err) = spool.wait_durable(ticket, Duration::from_secs(10)) {
            refused = Some((i, err));
            break;
        }
    }
    let (at, err) = refused.expect("the spool filled up");
    assert!(err.to_string().contains("full"), "{err}");
    assert_eq!(
        spool.stats().pending,
        u64::from(at),
        "nothing old was dropped"
    );
    assert!(metrics.rejected_full.get() >= 1);
    // Once the uplink has sent the backlog, there is room again.
    let all = spool.read_after(0, usize::MAX, usize::MAX).unwrap();
    spool
        .ack(all.last().unwrap().seq, all.len() as u64)
        .unwrap();
    let ticket = submit(&spool, "d", &[1u8; 200]);
    wait(&spool, ticket);
}

#[test]
fn readings_older_than_max_age_expire() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = SpoolMetrics::default();
    let options = SpoolOptions {
        max_age: Duration::from_secs(3600),
        ..SpoolOptions::default()
    };
    let spool = Spool::open(dir.path(), options, metrics.clone()).unwrap();
    let mut old = incoming("d", b"old", Disposition::Reading);
    old.received_at = now_ms() - 2 * 3600 * 1000;
    wait(&spool, spool.submit(old).unwrap());
    wait(&spool, submit(&spool, "d", b"new"));
    let expired = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        spool.stats().pending == 1
    });
    assert!(expired, "{:?}", spool.stats());
    let left = spool.read_after(0, usize::MAX, usize::MAX).unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].payload.as_ref(), b"new");
    let counted = metrics
        .dropped
        .get_or_create(&broker::ReasonLabel { reason: "expired" })
        .get();
    assert_eq!(counted, 1);
}

#[test]
fn recover_salvages_undelivered_readings_into_the_live_spool() {
    let parent = tempfile::tempdir().unwrap();
    let old = parent.path().join("old");
    {
        let spool = open(&old);
        let tickets: Vec<_> = (0..50u8).map(|i| submit(&spool, "d", &[i])).collect();
        wait(&spool, *tickets.last().unwrap());
        spool.ack(tickets[9].0, 10).unwrap();
        spool.close().unwrap();
    }
    let live = open(&parent.path().join("live"));
    let salvage = edge_agent::spool::salvage(&old, &live).unwrap();
    assert_eq!(
        (salvage.readings, salvage.delivered, salvage.unreadable),
        (40, 10, 0)
    );
    let payloads: Vec<u8> = live
        .read_after(0, usize::MAX, usize::MAX)
        .unwrap()
        .iter()
        .map(|e| e.payload[0])
        .collect();
    assert_eq!(payloads, (10..50u8).collect::<Vec<_>>());
}

#[test]
fn damage_inside_a_segment_costs_only_the_blocks_it_touches() {
    let dir = tempfile::tempdir().unwrap();
    let options = SpoolOptions {
        max_block_records: 10,
        ..SpoolOptions::default()
    };
    {
        let spool = Spool::open(dir.path(), options.clone(), SpoolMetrics::default()).unwrap();
        for chunk in 0..10u8 {
            let tickets: Vec<_> = (0..10u8)
                .map(|i| submit(&spool, "d", &[chunk * 10 + i]))
                .collect();
            wait(&spool, *tickets.last().unwrap());
        }
        spool.close().unwrap();
    }
    let segment = std::fs::read_dir(dir.path().join("queue"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| std::fs::metadata(p).unwrap().len() > 0)
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle..middle + 8].copy_from_slice(&[0x5a; 8]);
    std::fs::write(&segment, &bytes).unwrap();

    let metrics = SpoolMetrics::default();
    let spool = Spool::open(dir.path(), options, metrics.clone()).unwrap();
    let left = spool.read_after(0, usize::MAX, usize::MAX).unwrap();
    assert!(
        (80..100).contains(&left.len()),
        "{} of 100 readings left",
        left.len()
    );
    assert!(left.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(
        left.last().unwrap().payload[0],
        99,
        "the readings after the damage are kept"
    );
    assert!(metrics.corrupt_blocks.get() >= 1);
    assert!(spool.inspect().unwrap().corrupt_blocks >= 1);
    // Read again: the damage is not reported twice.
    let again = spool.read_after(0, usize::MAX, usize::MAX).unwrap();
    assert_eq!(again.len(), left.len());
    assert_eq!(
        metrics.corrupt_blocks.get(),
        spool.inspect().unwrap().corrupt_blocks
    );
}

#[test]
fn delivered_readings_leave_no_bytes_behind_once_the_writer_is_idle() {
    let dir = tempfile::tempdir().unwrap();
    let spool = open(dir.path());
    let tickets: Vec<_> = (0..100u8).map(|i| submit(&spool, "d", &[i])).collect();
    wait(&spool, *tickets.last().unwrap());
    assert!(spool.stats().bytes > 0);
    spool.ack(tickets[99].0, 100).unwrap();
    // The writer looks once a second when idle.
    let emptied = (0..60).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        spool.stats().bytes == 0
    });
    assert!(emptied, "{:?}", spool.stats());
    let on_disk: u64 = std::fs::read_dir(dir.path().join("queue"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert_eq!(on_disk, 0, "only an empty segment is left");
    spool.close().unwrap();
    drop(spool);
    let spool = open(dir.path());
    let next = submit(&spool, "d", b"next");
    assert!(
        next.0 > tickets[99].0,
        "seqs go on after the last segment went"
    );
}
