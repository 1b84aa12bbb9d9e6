//! The gateway's durable queue of readings, in sled.
//!
//! ```text
//! tree "queue":    key = first seq of the block (u64 big-endian)
//!                  value = block header + CBOR array of Envelopes (see block.rs)
//! tree "meta":     "spool_id"  -> 16 random bytes, made when the spool is created
//!                  "next_seq"  -> u64 BE, a lower bound for the next seq to assign
//!                  "acked_seq" -> u64 BE, every seq <= this was answered 2xx by the collector
//! tree "dead_letters": key = seq (u64 BE) -> CBOR DeadLetter (refused publish + reason)
//! file "durable-seq": the flushed next_seq, to notice a log sled cut short (watermark.rs)
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
mod quarantine;
mod recover;
mod store;
mod watermark;
mod writer;

pub use block::DeadLetter;
pub use quarantine::open_or_quarantine;
pub use recover::{salvage, Salvage};
pub use store::{FullPolicy, Spool, SpoolError, SpoolOptions, SpoolReport, SpoolStats};
