//! Salvage from a quarantined (or any other) spool: every block that still
//! decodes is copied into the live spool as new readings with new seqs.
//! Readings the old spool had already delivered (seq <= its `acked_seq`) are
//! skipped; anything delivered twice anyway is recognised by the collector,
//! which identifies a point by `(device_id, name, time)`.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::time::Duration;

use broker::{Disposition, Incoming, IngestSink, Ticket};
use serde::Serialize;

use super::block;
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
pub fn salvage(from: &Path, into: &Spool) -> Result<Salvage, SpoolError> {
    let unreadable = |reason: String| SpoolError::Corrupt {
        path: from.to_path_buf(),
        reason,
    };
    let db = catch_unwind(AssertUnwindSafe(|| super::store::sled_config(from).open()))
        .map_err(|_| unreadable("sled panicked while opening it".into()))?
        .map_err(|e| unreadable(format!("nothing readable: {e}")))?;
    let acked_seq = db
        .open_tree("meta")
        .ok()
        .and_then(|meta| meta.get(ACKED_SEQ).ok().flatten())
        .and_then(|v| v.as_ref().try_into().ok().map(u64::from_be_bytes))
        .unwrap_or(0);

    let mut salvage = Salvage::default();
    let mut last = None;
    for tree in ["queue", "corrupt_blocks"] {
        let Ok(tree) = db.open_tree(tree) else {
            salvage.unreadable += 1;
            continue;
        };
        let mut entries = tree.iter();
        loop {
            // A damaged page can make iteration itself fail or panic.
            let entry = match catch_unwind(AssertUnwindSafe(|| entries.next())) {
                Ok(Some(Ok(entry))) => entry,
                Ok(None) => break,
                Ok(Some(Err(_))) | Err(_) => {
                    salvage.unreadable += 1;
                    break;
                }
            };
            let Ok(envelopes) = block::decode(&entry.1, into.keys()) else {
                salvage.unreadable += 1;
                continue;
            };
            salvage.blocks += 1;
            for envelope in envelopes {
                if envelope.seq <= acked_seq {
                    salvage.delivered += 1;
                    continue;
                }
                let ticket = into
                    .submit(Incoming {
                        device_id: envelope.device_id,
                        topic: envelope.topic,
                        received_at: envelope.received_at,
                        payload: envelope.payload.into_vec().into(),
                        qos: 1,
                        disposition: Disposition::Reading,
                    })
                    .map_err(|e| into.storage_error_from(e))?;
                last = Some(ticket);
                salvage.readings += 1;
            }
        }
    }
    if let Some(Ticket(seq)) = last {
        into.wait_durable(Ticket(seq), Duration::from_secs(60))
            .map_err(|e| into.storage_error_from(e))?;
    }
    Ok(salvage)
}
