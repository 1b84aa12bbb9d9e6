//! What the spool's files give away and keep: encryption at rest (no
//! plaintext on disk, wrong keys refused without a change, rotation,
//! tampering caught) and erasure of one device. Real sled files in temp dirs;
//! the files are read back byte by byte.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use broker::{Disposition, Incoming, IngestSink, Ticket};
use edge_agent::metrics::SpoolMetrics;
use edge_agent::spool::{
    erase_device, open_or_quarantine, rotate_key, KeyRing, Spool, SpoolError, SpoolOptions,
};

const MARKER: &[u8] = b"MARKER-7f3a9c";

fn options(keys: &KeyRing) -> SpoolOptions {
    SpoolOptions {
        keys: keys.clone(),
        // The readings carry a fixed arrival time in 2023: keep them.
        max_age: Duration::from_secs(20 * 365 * 24 * 3600),
        ..SpoolOptions::default()
    }
}

fn open(dir: &Path, keys: &KeyRing) -> Result<Spool, SpoolError> {
    Spool::open(dir, options(keys), SpoolMetrics::default())
}

/// A key file made by `rotate` `n` times, and its ring.
fn key_file(dir: &Path, n: u32) -> (PathBuf, KeyRing) {
    let file = dir.join("spool.keys");
    for _ in 0..n {
        rotate_key(&file).unwrap();
    }
    let ring = KeyRing::read_file(&file).unwrap();
    (file, ring)
}

fn submit(spool: &Spool, device: &str, payload: &[u8], disposition: Disposition) -> Ticket {
    spool
        .submit(Incoming {
            device_id: device.to_string(),
            topic: format!("devices/{device}/telemetry"),
            received_at: 1_700_000_000_000,
            payload: payload.to_vec().into(),
            qos: 1,
            disposition,
        })
        .unwrap()
}

fn reading(spool: &Spool, device: &str, i: u32) -> Ticket {
    let mut payload = MARKER.to_vec();
    payload.extend_from_slice(&i.to_be_bytes());
    submit(spool, device, &payload, Disposition::Reading)
}

fn wait(spool: &Spool, ticket: Ticket) {
    spool.wait_durable(ticket, Duration::from_secs(10)).unwrap();
}

/// Every file under `dir` with its bytes.
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        for entry in std::fs::read_dir(&path).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

fn occurrences(dir: &Path, needle: &[u8]) -> usize {
    files(dir)
        .values()
        .map(|bytes| bytes.windows(needle.len()).filter(|w| *w == needle).count())
        .sum()
}

/// Writes 300 readings of `patient-1` and `patient-2` in turns, plus a dead
/// letter of each, and closes the spool.
fn fill(dir: &Path, keys: &KeyRing) {
    let spool = open(dir, keys).unwrap();
    let mut last = None;
    for i in 0..300 {
        let device = if i % 2 == 0 { "patient-1" } else { "patient-2" };
        last = Some(reading(&spool, device, i));
        if i % 100 == 99 {
            wait(&spool, last.unwrap());
        }
    }
    for device in ["patient-1", "patient-2"] {
        let mut payload = MARKER.to_vec();
        payload.extend_from_slice(b"-refused");
        last = Some(submit(
            &spool,
            device,
            &payload,
            Disposition::Rejected {
                reason: "test".into(),
            },
        ));
    }
    wait(&spool, last.unwrap());
    spool.close().unwrap();
}

#[test]
fn sealed_spool_files_hold_no_plaintext_of_a_reading() {
    let keys_dir = tempfile::tempdir().unwrap();
    let (_, keys) = key_file(keys_dir.path(), 1);

    let plain = tempfile::tempdir().unwrap();
    fill(plain.path(), &KeyRing::none());
    // The scan finds the marker where it is stored in the clear.
    assert!(occurrences(plain.path(), MARKER) >= 300);

    let sealed = tempfile::tempdir().unwrap();
    fill(sealed.path(), &keys);
    assert_eq!(occurrences(sealed.path(), MARKER), 0);
    assert_eq!(occurrences(sealed.path(), b"patient-1"), 0);

    let spool = open(sealed.path(), &keys).unwrap();
    let readings = spool.read_after(0, usize::MAX, usize::MAX).unwrap();
    assert_eq!(readings.len(), 300);
    assert!(readings.iter().all(|e| e.payload.starts_with(MARKER)));
    let letters = spool.dead_letters().unwrap();
    assert_eq!(letters.len(), 2);
    assert!(letters[0].envelope.payload.ends_with(b"-refused"));
    let report = spool.inspect().unwrap();
    assert_eq!(report.sealed_blocks.keys().collect::<Vec<_>>(), [&1]);
    assert_eq!(report.sealed_blocks[&1], report.blocks);
}

#[test]
fn a_wrong_or_missing_key_is_refused_and_changes_nothing() {
    let keys_dir = tempfile::tempdir().unwrap();
    let (_, keys) = key_file(keys_dir.path(), 1);
    let other_dir = tempfile::tempdir().unwrap();
    // Also key id 1, but another key.
    let (_, impostor) = key_file(other_dir.path(), 1);
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("spool");
    fill(&dir, &keys);
    let before = files(root.path());

    for (ring, expected) in [
        (&impostor, "is not that key"),
        (&KeyRing::none(), "no spool key"),
    ] {
        let err = match open(&dir, ring) {
            Ok(_) => panic!("opened with the wrong keys"),
            Err(err) => err,
        };
        assert!(matches!(err, SpoolError::Key { .. }), "{err}");
        assert!(!err.is_corrupt());
        assert!(err.to_string().contains(expected), "{err}");
        // The agent's start path does not move it aside either.
        let err = match open_or_quarantine(&dir, &options(ring), &SpoolMetrics::default()) {
            Ok(_) => panic!("opened with the wrong keys"),
            Err(err) => err,
        };
        assert!(matches!(err, SpoolError::Key { .. }), "{err}");
        assert!(erase_device(&dir, "patient-1", ring).is_err());
    }
    assert_eq!(
        files(root.path()),
        before,
        "a refused open changed the files"
    );
    let spool = open(&dir, &keys).unwrap();
    assert_eq!(spool.stats().pending, 300);
}

#[test]
fn rotation_seals_new_blocks_with_the_new_key_and_keeps_old_ones_readable() {
    let keys_dir = tempfile::tempdir().unwrap();
    let (file, first) = key_file(keys_dir.path(), 1);
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), &first);

    rotate_key(&file).unwrap();
    let rotated = KeyRing::read_file(&file).unwrap();
    let spool = open(dir.path(), &rotated).unwrap();
    let tickets: Vec<_> = (0..50).map(|i| reading(&spool, "patient-3", i)).collect();
    wait(&spool, tickets[49]);
    let readings = spool.read_after(0, usize::MAX, usize::MAX).unwrap();
    assert_eq!(readings.len(), 350);
    let report = spool.inspect().unwrap();
    assert_eq!(report.sealed_blocks.keys().collect::<Vec<_>>(), [&1, &2]);
    spool.close().unwrap();
    drop(spool);

    // Key 1 may leave the ring only once no block needs it.
    let newest_only = KeyRing::parse(
        "test",
        std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    let err = match open(dir.path(), &newest_only) {
        Ok(_) => panic!("opened without key 1"),
        Err(err) => err,
    };
    assert!(err.to_string().contains("key 1"), "{err}");

    let spool = open(dir.path(), &rotated).unwrap();
    let upto = spool.read_after(0, usize::MAX, usize::MAX).unwrap()[299].seq;
    spool.ack(upto, 300).unwrap();
    spool.close().unwrap();
    drop(spool);
    let spool = open(dir.path(), &newest_only).unwrap();
    assert_eq!(
        spool.read_after(0, usize::MAX, usize::MAX).unwrap().len(),
        50
    );
}

#[test]
fn a_flipped_byte_in_a_sealed_block_is_caught_and_never_delivered() {
    let keys_dir = tempfile::tempdir().unwrap();
    let (_, keys) = key_file(keys_dir.path(), 1);
    let dir = tempfile::tempdir().unwrap();
    fill(dir.path(), &keys);

    // The second block of the queue's first segment (record layout in
    // segments.rs: magic, length, CRC-32, first seq, block), tampered with
    // the way an attacker would: the checksum is made to match again, so
    // only the seal can tell.
    let segment = std::fs::read_dir(dir.path().join("queue"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .min()
        .unwrap();
    let mut bytes = std::fs::read(&segment).unwrap();
    let record_len =
        |at: usize| 20 + u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
    let second = record_len(0);
    assert!(
        second + record_len(second) < bytes.len(),
        "at least 3 blocks"
    );
    let body = second + 20..second + record_len(second);
    let victim_count =
        u32::from_be_bytes(bytes[body.start + 1..body.start + 5].try_into().unwrap()) as usize;
    let middle = (body.start + body.end) / 2;
    bytes[middle] ^= 0x01;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[second + 12..second + 20]);
    crc.update(&bytes[body.clone()]);
    let crc = crc.finalize().to_le_bytes();
    bytes[second + 8..second + 12].copy_from_slice(&crc);
    std::fs::write(&segment, &bytes).unwrap();
    let metrics = SpoolMetrics::default();
    let spool = Spool::open(dir.path(), options(&keys), metrics.clone()).unwrap();
    let readings = spool.read_after(0, usize::MAX, usize::MAX).unwrap();
    assert_eq!(readings.len(), 300 - victim_count);
    assert_eq!(metrics.corrupt_blocks.get(), 1);
    assert_eq!(spool.inspect().unwrap().corrupt_blocks, 1);
    assert!(readings.iter().all(|e| e.payload.starts_with(MARKER)));
}

#[test]
fn erasing_a_device_leaves_no_trace_of_it_and_keeps_every_other_reading() {
    for keys in [
        KeyRing::none(),
        key_file(tempfile::tempdir().unwrap().path(), 1).1,
    ] {
        let dir = tempfile::tempdir().unwrap();
        fill(dir.path(), &keys);
        let (spool_id, before, next) = {
            let spool = open(dir.path(), &keys).unwrap();
            let all = spool.read_after(0, usize::MAX, usize::MAX).unwrap();
            // The collector has the first 20; they must not come back.
            spool.ack(all[19].seq, 20).unwrap();
            let before: Vec<_> = all
                .into_iter()
                .skip(20)
                .filter(|e| e.device_id == "patient-2")
                .collect();
            let next = spool.stats().durable_seq;
            spool.close().unwrap();
            (spool.spool_id().to_string(), before, next)
        };
        if !keys.is_enabled() {
            assert!(occurrences(dir.path(), b"patient-1") > 0);
        }

        let erasure = erase_device(dir.path(), "patient-1", &keys).unwrap();
        // 150 minus the acknowledged ones in blocks the ack already deleted.
        assert!((140..=150).contains(&erasure.readings), "{erasure:?}");
        assert_eq!(erasure.dead_letters, 1);
        assert_eq!(erasure.unreadable, 0);
        if !keys.is_enabled() {
            // Not in the queue, not in a dead letter, not in a stale log segment.
            assert_eq!(occurrences(dir.path(), b"patient-1"), 0);
        }
        let parent = dir.path().parent().unwrap();
        let name = dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .to_string();
        assert!(!parent.join(format!("{name}.erasing")).exists());
        assert!(!parent.join(format!("{name}.erase-old")).exists());

        let spool = open(dir.path(), &keys).unwrap();
        assert_eq!(spool.spool_id(), spool_id);
        assert_eq!(spool.stats().pending, 140);
        let after = spool.read_after(0, usize::MAX, usize::MAX).unwrap();
        assert_eq!(after, before, "the other device's readings, seqs and all");
        let letters = spool.dead_letters().unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].envelope.device_id, "patient-2");
        let ticket = reading(&spool, "patient-2", 1000);
        assert!(ticket.0 > next, "seqs are never reused");
    }
}

#[test]
fn an_erasure_cut_short_between_its_renames_is_completed_on_the_next_open() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("spool");
    fill(&dir, &KeyRing::none());
    // What a crash between the two renames leaves: the finished copy and
    // the old spool, no spool under its own name.
    let copy = root.path().join("copy");
    std::fs::create_dir(&copy).unwrap();
    for (path, bytes) in files(&dir) {
        let target = copy.join(path.strip_prefix(&dir).unwrap());
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(target, bytes).unwrap();
    }
    std::fs::rename(&dir, root.path().join("spool.erase-old")).unwrap();
    std::fs::rename(&copy, root.path().join("spool.erasing")).unwrap();

    let spool = open(&dir, &KeyRing::none()).unwrap();
    assert_eq!(spool.stats().pending, 300);
    assert!(!root.path().join("spool.erase-old").exists());
    assert!(!root.path().join("spool.erasing").exists());
}

/// A sealed spool long enough for several segment files keeps every
/// reading across restarts and a partial acknowledgement (the segments
/// before the last are summarised from their headers at open).
#[test]
fn a_sealed_spool_of_many_segments_keeps_every_reading_across_restarts() {
    let keys_dir = tempfile::tempdir().unwrap();
    let (_, keys) = key_file(keys_dir.path(), 1);
    let dir = tempfile::tempdir().unwrap();
    let options = SpoolOptions {
        // Segments of a sixteenth of this: 64 KiB.
        max_bytes: 1 << 20,
        max_block_records: 50,
        ..options(&keys)
    };
    let reopen = || Spool::open(dir.path(), options.clone(), SpoolMetrics::default()).unwrap();
    {
        let spool = reopen();
        let tickets: Vec<_> = (0..3000).map(|i| reading(&spool, "patient-1", i)).collect();
        wait(&spool, *tickets.last().unwrap());
        spool.close().unwrap();
    }
    let segments = std::fs::read_dir(dir.path().join("queue")).unwrap().count();
    assert!(segments >= 5, "{segments} segment files");
    let upto = {
        let spool = reopen();
        assert_eq!(spool.stats().pending, 3000);
        let all = spool.read_after(0, usize::MAX, usize::MAX).unwrap();
        assert_eq!(all.len(), 3000);
        spool.ack(all[999].seq, 1000).unwrap();
        spool.close().unwrap();
        all[999].seq
    };
    let spool = reopen();
    assert_eq!(spool.stats().pending, 2000);
    let rest = spool.read_after(0, usize::MAX, usize::MAX).unwrap();
    assert_eq!(rest.len(), 2000);
    assert_eq!(rest[0].seq, upto + 1);
    assert!(rest.windows(2).all(|w| w[1].seq == w[0].seq + 1));
}
