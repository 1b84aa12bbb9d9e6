//! Salvage from a quarantined (or any other) spool: every block that still
//! decodes (in its segments, and in sled trees of older spools) is copied into the live spool as new readings with new seqs.
//! Readings the old spool had already delivered (seq <= its `acked_seq`) are
//! skipped; anything delivered twice anyway is recognised by the collector,
//! which identifies a point by `(device_id, name, time)`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Duration;

use broker::{Disposition, Incoming, IngestSink, Ticket};
use serde::Serialize;

use super::block;
use super::segments::{Item, Next, Queue};
use super::store::{Spool, SpoolError, ACKED_SEQ};

/// What a salvage found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Salvage {
    /// Blocks that decoded.
    pub blocks: u64,
    /// Blocks (or tree entries) that could not be read.
    pub unreadable: u64,
    /// Readings copied into the live spool.
    pub readings: u64,
    /// Readings skipped because the old spool had already delivered them.
    pub delivered: u64,
}

/// Copies what is readable in the spool at `from` into `into`. Blocks; call
/// it with the agent stopped (the live spool is opened by the caller).
///
/// The segments are read even when sled's files are past opening; then
/// the old `acked_seq` is unknown and everything readable is copied (the
/// collector recognises what it has).
pub fn salvage(from: &Path, into: &Spool) -> Result<Salvage, SpoolError> {
    let unreadable = |reason: String| SpoolError::Corrupt {
        path: from.to_path_buf(),
        reason,
    };
    let queue =
        Queue::open_read_only(from).map_err(|e| unreadable(format!("queue segments: {e}")))?;
    let db = catch_unwind(AssertUnwindSafe(|| super::store::sled_config(from).open()))
        .ok()
        .and_then(Result::ok);
    if db.is_none() && queue.segments().is_empty() {
        return Err(unreadable(
            "nothing readable: no segments, and sled does not open".into(),
        ));
    }
    let acked_seq = db
        .as_ref()
        .and_then(|db| db.open_tree("meta").ok())
        .and_then(|meta| meta.get(ACKED_SEQ).ok().flatten())
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0);

    let mut copier = Copier {
        into,
        acked_seq,
        salvage: Salvage::default(),
        last: None,
    };
    let mut failed = None;
    queue
        .visit(0, |item| {
            match item {
                Item::Block { bytes, .. } => {
                    if let Err(err) = copier.block(bytes) {
                        failed = Some(err);
                        return Next::Stop;
                    }
                }
                Item::Damaged {
                    segment,
                    offset,
                    bytes,
                } => {
                    copier.salvage.unreadable += 1;
                    queue.mark_damaged(segment, offset, offset + bytes.len() as u64);
                }
            }
            Next::Continue
        })
        .map_err(|e| unreadable(format!("queue segments: {e}")))?;
    if let Some(err) = failed {
        return Err(err);
    }
    // A spool from before the queue left sled, and blocks set aside.
    if let Some(db) = &db {
        for tree in ["queue", "corrupt_blocks"] {
            let Ok(tree) = db.open_tree(tree) else {
                copier.salvage.unreadable += 1;
                continue;
            };
            let mut entries = tree.iter();
            loop {
                // A damaged page can make iteration itself fail or panic.
                let entry = match catch_unwind(AssertUnwindSafe(|| entries.next())) {
                    Ok(Some(Ok(entry))) => entry,
                    Ok(None) => break,
                    Ok(Some(Err(_))) | Err(_) => {
                        copier.salvage.unreadable += 1;
                        break;
                    }
                };
                copier.block(&entry.1)?;
            }
        }
    }
    if let Some(Ticket(seq)) = copier.last {
        into.wait_durable(Ticket(seq), Duration::from_secs(60))
            .map_err(|e| into.storage_error_from(e))?;
    }
    Ok(copier.salvage)
}

/// Submits the undelivered readings of old blocks to the live spool.
struct Copier<'a> {
    into: &'a Spool,
    acked_seq: u64,
    salvage: Salvage,
    last: Option<Ticket>,
}

impl Copier<'_> {
    fn block(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        let Ok(envelopes) = block::decode(bytes, self.into.keys()) else {
            self.salvage.unreadable += 1;
            return Ok(());
        };
        self.salvage.blocks += 1;
        for envelope in envelopes {
            if envelope.seq <= self.acked_seq {
                self.salvage.delivered += 1;
                continue;
            }
            let ticket = self
                .into
                .submit(Incoming {
                    device_id: envelope.device_id,
                    topic: envelope.topic,
                    received_at: envelope.received_at,
                    payload: envelope.payload.into_vec().into(),
                    qos: 1,
                    disposition: Disposition::Reading,
                })
                .map_err(|e| self.into.storage_error_from(e))?;
            self.last = Some(ticket);
            self.salvage.readings += 1;
        }
        Ok(())
    }
}
