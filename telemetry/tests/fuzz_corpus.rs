//! The fuzzers' findings, replayed on stable: the seed corpora of the
//! `senml_decode` and `sync_batch_decode` targets (`fuzz/corpus/*/seed-*`,
//! written by `fuzz/make_seeds.py`) through the same checks the targets run
//! (`util/invariants.rs`). A reproducer a fuzzer finds joins them here as a
//! named test (none so far: see the runs in `docs/security.md`).

#[path = "util/invariants.rs"]
mod invariants;

use std::path::PathBuf;

/// The committed seeds of one fuzz target, by file name.
fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut seeds: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|err| panic!("cannot read {}: {err}", dir.display()))
        .map(|entry| entry.expect("readable corpus entry").path())
        .filter(|path| {
            path.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
        })
        .map(|path| {
            let bytes = std::fs::read(&path).expect("readable seed");
            (path.display().to_string(), bytes)
        })
        .collect();
    seeds.sort();
    assert!(!seeds.is_empty(), "no seeds in {}", dir.display());
    seeds
}

#[test]
fn senml_decode_seeds_hold_the_invariants() {
    for (name, bytes) in seeds("senml_decode") {
        eprintln!("{name}");
        invariants::senml_decode(&bytes);
    }
}

#[test]
fn sync_batch_decode_seeds_hold_the_invariants() {
    for (name, bytes) in seeds("sync_batch_decode") {
        eprintln!("{name}");
        invariants::sync_batch_decode(&bytes);
    }
}
