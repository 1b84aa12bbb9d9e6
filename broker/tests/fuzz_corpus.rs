//! The fuzzer's findings, replayed on stable: the seed corpus of the
//! `broker_codec` target (`fuzz/corpus/broker_codec/seed-*`, written by
//! `fuzz/make_seeds.py`) and each reproducer it found, all through the same
//! checks the target runs (`util/invariants.rs`), without sockets.

#[path = "util/invariants.rs"]
mod invariants;

use std::path::PathBuf;

#[test]
fn broker_codec_seeds_hold_the_invariants() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/broker_codec");
    let mut seeds: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", dir.display()))
        .map(|entry| entry.expect("readable corpus entry").path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    for path in seeds {
        eprintln!("{}", path.display());
        invariants::broker_codec(&std::fs::read(&path).expect("readable seed"));
    }
}

/// broker_codec's one finding, in its first minute, minimized by hand: a
/// PUBLISH with QoS 3 closes the connection, and how many bytes after it
/// had been buffered by then depends on how TCP cut the stream. The fault
/// was in the check (it compared those bytes), not in the codec.
#[test]
fn bytes_buffered_after_a_fatal_packet_depend_on_the_segments() {
    // Byte 0: one-byte segments. Then PUBLISH, QoS 3, 2 bytes, and one more byte.
    let input = [0x00, 0x36, 0x02, 0x00, 0x00, 0x00];
    let whole = broker::replay::read_client_bytes(&input[1..], 5, false);
    let split = broker::replay::read_client_bytes(&input[1..], 1, false);
    assert!(whole.error.is_some());
    assert_eq!(whole.error, split.error);
    assert_eq!((whole.unread, split.unread), (1, 0));
    invariants::broker_codec(&input);
}
