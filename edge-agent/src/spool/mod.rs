//! The gateway's durable queue of readings, in sled.
//!
//! ```text
//! tree "queue":    key = first seq of the block (u64 big-endian)
//!                  value = block header + CBOR array of Envelopes, sealed
//!                  when a key ring is configured (see block.rs, seal.rs)
//! tree "meta":     "spool_id"  -> 16 random bytes, made when the spool is created
//!                  "next_seq"  -> u64 BE, a lower bound for the next seq to assign
//!                  "acked_seq" -> u64 BE, every seq <= this was answered 2xx by the collector
//! tree "dead_letters": key = seq (u64 BE) -> CBOR DeadLetter (refused publish + reason),
//!                  sealed like blocks when a key ring is configured
//! tree "corrupt_blocks": blocks that stopped decoding or opening, as they were
//! file "durable-seq": the flushed next_seq, to notice a log sled cut short (watermark.rs)
//! file "sealing":  the key ids that sealed something here, each with a check
//!                  value, to refuse a wrong key before touching sled (seal.rs)
//! ```
//!
//! Invariants:
//! - seqs start at 1 and strictly increase; a block holds consecutive
//!   readings in seq order (seqs of refused publishes are skipped);
//! - a block is written by one group commit and deleted only once every seq
//!   in it is <= `acked_seq`, i.e. after the collector's 2xx for all of it;
//! - `next_seq` on open is the largest of the stored hint, the last block's
//!   last seq + 1 and `acked_seq` + 1, so a seq is never reused.

mod block;
mod erase;
mod quarantine;
mod recover;
mod seal;
mod store;
mod watermark;
mod writer;

pub use block::DeadLetter;
pub use erase::{erase_device, Erasure};
pub use quarantine::open_or_quarantine;
pub use recover::{salvage, Salvage};
pub use seal::{rotate as rotate_key, KeyInfo, KeyMismatch, KeyRing, SealError, KEYS_ENV};
pub use store::{FullPolicy, Spool, SpoolError, SpoolOptions, SpoolReport, SpoolStats};
