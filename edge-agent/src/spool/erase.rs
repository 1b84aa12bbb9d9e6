//! Erasure of one device from a spool (`edge-agent spool erase --device`):
//! the spool is copied without that device's readings and dead letters into
//! a fresh directory (new segment files, a new sled database), which then
//! replaces the old one. Deleting in place would leave the old values in
//! segment files and sled's log until some later trim or compaction; a copy
//! leaves nothing of the device in any file that remains.
//!
//! ```text
//! <dir>.erasing    the copy being made (removed if a previous run died)
//! <dir>.erase-old  the old spool, between the two renames of the swap
//! ```
//!
//! Invariants: the copy keeps the spool id, `next_seq`, `acked_seq`, the
//! watermark and the sealing file, so seqs are never reused and the
//! collector keeps deduplicating; readings of other devices keep their seqs
//! and their blocks; the old spool is removed only after the copy is flushed
//! and renamed into place. If the swap is interrupted between its renames,
//! [`finish_interrupted`] (run by every open) completes it.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::block;
use super::seal::{self, KeyRing};
use super::segments::{place_key, Item, Next, Queue, SegmentBuilder};
use super::store::{import_sled_queue, open_sled, sled_config, SpoolError, NEXT_SEQ};

/// What an erasure removed and what it could not look into.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Erasure {
    /// Readings of the device removed from the queue.
    pub readings: u64,
    /// Dead letters of the device removed.
    pub dead_letters: u64,
    /// Blocks rewritten without the device's readings (others kept).
    pub blocks_rewritten: u64,
    /// Blocks that held only the device's readings, removed whole.
    pub blocks_removed: u64,
    /// Blocks or dead letters that do not decode (damaged or tampered),
    /// kept as they are: nobody can tell whose readings they hold.
    pub unreadable: u64,
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    dir.with_file_name(name)
}

/// Completes a swap that an earlier erasure started and did not finish.
pub fn finish_interrupted(dir: &Path) -> std::io::Result<()> {
    let old = sibling(dir, ".erase-old");
    let new = sibling(dir, ".erasing");
    if !old.exists() {
        return Ok(());
    }
    if !dir.exists() {
        // Died between the renames: the copy was complete (it is renamed
        // only after its flush), so it becomes the spool.
        std::fs::rename(&new, dir)?;
    }
    std::fs::remove_dir_all(&old)
}

/// Removes every reading and dead letter of `device_id` from the spool in
/// `dir`. The agent must be stopped (sled holds a lock on the files).
pub fn erase_device(dir: &Path, device_id: &str, keys: &KeyRing) -> Result<Erasure, SpoolError> {
    let io = |err: std::io::Error| SpoolError::Storage {
        path: dir.to_path_buf(),
        source: sled::Error::Io(err),
    };
    let storage = |source| SpoolError::Storage {
        path: dir.to_path_buf(),
        source,
    };
    finish_interrupted(dir).map_err(io)?;
    if !dir.join("conf").exists() {
        return Err(io(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no spool here",
        )));
    }
    let sealed_with = seal::check(dir, keys).map_err(|err| SpoolError::Key {
        path: dir.to_path_buf(),
        reason: err.to_string(),
    })?;
    let copy_dir = sibling(dir, ".erasing");
    if copy_dir.exists() {
        std::fs::remove_dir_all(&copy_dir).map_err(io)?;
    }
    let mut erasure = Erasure::default();
    {
        let old = open_sled(dir).map_err(storage)?;
        import_sled_queue(&old, dir).map_err(io)?;
        let new = sled_config(&copy_dir).open().map_err(storage)?;
        let next_seq = copy_queue(dir, &copy_dir, &new, device_id, keys, &mut erasure).map_err(
            |e| match e {
                CopyError::Io(e) => io(e),
                CopyError::Sled(e) => storage(e),
            },
        )?;
        for name in old.tree_names() {
            let from = old.open_tree(&name).map_err(storage)?;
            let to = new.open_tree(&name).map_err(storage)?;
            for entry in from.iter() {
                let (key, value) = entry.map_err(storage)?;
                let kept = match name.as_ref() {
                    b"corrupt_blocks" => {
                        filter_block(&value, device_id, keys, &mut erasure).map(|(_, bytes)| bytes)
                    }
                    b"dead_letters" => match block::decode_dead_letter(&value, keys) {
                        Ok(letter) if letter.envelope.device_id == device_id => {
                            erasure.dead_letters += 1;
                            None
                        }
                        Ok(_) => Some(value.to_vec()),
                        Err(_) => {
                            erasure.unreadable += 1;
                            Some(value.to_vec())
                        }
                    },
                    _ => Some(value.to_vec()),
                };
                if let Some(value) = kept {
                    to.insert(key, value).map_err(storage)?;
                }
            }
        }
        // Seqs stay unique even if the erased readings were the newest.
        let meta = new.open_tree("meta").map_err(storage)?;
        let stored = meta
            .get(NEXT_SEQ)
            .map_err(storage)?
            .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
            .unwrap_or(0);
        meta.insert(NEXT_SEQ, &stored.max(next_seq).to_be_bytes())
            .map_err(storage)?;
        new.flush().map_err(storage)?;
    }
    for file in ["durable-seq", "sealing"] {
        let from = dir.join(file);
        if from.exists() {
            std::fs::copy(&from, copy_dir.join(file)).map_err(io)?;
            std::fs::File::open(copy_dir.join(file))
                .and_then(|f| f.sync_all())
                .map_err(io)?;
        }
    }
    // Rewritten blocks are sealed with the current key: the copy must list it.
    seal::record_current(&copy_dir, keys, &sealed_with).map_err(io)?;
    let old_dir = sibling(dir, ".erase-old");
    std::fs::rename(dir, &old_dir).map_err(io)?;
    std::fs::rename(&copy_dir, dir).map_err(io)?;
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::File::open(parent)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
    }
    std::fs::remove_dir_all(&old_dir).map_err(io)?;
    Ok(erasure)
}

enum CopyError {
    Io(std::io::Error),
    Sled(sled::Error),
}

/// Copies the queue of the spool in `dir` into new segments in `copy_dir`
/// without the device's readings; damaged ranges go to the copy's
/// `corrupt_blocks`, as they are. Returns the old queue's next seq.
fn copy_queue(
    dir: &Path,
    copy_dir: &Path,
    copy: &sled::Db,
    device_id: &str,
    keys: &KeyRing,
    erasure: &mut Erasure,
) -> Result<u64, CopyError> {
    let (queue, opened) = Queue::open(dir).map_err(CopyError::Io)?;
    let corrupt = copy.open_tree("corrupt_blocks").map_err(CopyError::Sled)?;
    let mut segments = SegmentBuilder::new(copy_dir);
    let mut failed = None;
    queue
        .visit(0, |item| {
            let step = match item {
                Item::Block {
                    first_seq, bytes, ..
                } => match filter_block(bytes, device_id, keys, erasure) {
                    Some((first, kept)) => segments
                        .push(first.unwrap_or(first_seq), kept)
                        .map_err(CopyError::Io),
                    None => Ok(()),
                },
                Item::Damaged {
                    segment,
                    offset,
                    bytes,
                } => {
                    erasure.unreadable += 1;
                    queue.mark_damaged(segment, offset, offset + bytes.len() as u64);
                    corrupt
                        .insert(place_key(segment, offset), bytes)
                        .map(|_| ())
                        .map_err(CopyError::Sled)
                }
            };
            match step {
                Ok(()) => Next::Continue,
                Err(err) => {
                    failed = Some(err);
                    Next::Stop
                }
            }
        })
        .map_err(CopyError::Io)?;
    if let Some(err) = failed {
        return Err(err);
    }
    segments.finish().map_err(CopyError::Io)?;
    Ok(opened.next_seq)
}

/// The block without the device's readings (with its first seq if it was
/// rewritten), `None` when nothing is left.
fn filter_block(
    value: &[u8],
    device_id: &str,
    keys: &KeyRing,
    erasure: &mut Erasure,
) -> Option<(Option<u64>, Vec<u8>)> {
    let envelopes = match block::decode(value, keys) {
        Ok(envelopes) => envelopes,
        Err(_) => {
            erasure.unreadable += 1;
            return Some((None, value.to_vec()));
        }
    };
    let before = envelopes.len();
    let rest: Vec<_> = envelopes
        .into_iter()
        .filter(|e| e.device_id != device_id)
        .collect();
    let removed = (before - rest.len()) as u64;
    erasure.readings += removed;
    match (removed, rest.is_empty()) {
        (0, _) => Some((None, value.to_vec())),
        (_, true) => {
            erasure.blocks_removed += 1;
            None
        }
        (_, false) => {
            erasure.blocks_rewritten += 1;
            Some((Some(rest[0].seq), block::encode(&rest, keys)))
        }
    }
}
