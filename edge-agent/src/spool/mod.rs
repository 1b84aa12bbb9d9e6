//! The gateway's durable queue of readings: blocks in segment files of its
//! own, everything else in sled.
//!
//! ```text
//! dir "queue/":    append-only segment files of blocks (segments.rs): a
//!                  block = block header + CBOR array of Envelopes, sealed
//!                  when a key ring is configured (see block.rs, seal.rs)
//! sled tree "meta": "spool_id"  -> 16 random bytes, made when the spool is created
//!                  "next_seq"  -> u64 BE, a lower bound for the next seq to
//!                                 assign (written with dead letters, purges
//!                                 and erasures; the segments bound the rest)
//!                  "acked_seq" -> u64 BE, every seq <= this was answered 2xx by the collector
//! sled tree "dead_letters": key = seq (u64 BE) -> CBOR DeadLetter (refused publish + reason),
//!                  sealed like blocks when a key ring is configured
//! sled tree "corrupt_blocks": blocks (or damaged ranges of a segment) that
//!                  stopped decoding, as they were; key = segment ++ offset
//! file "durable-seq": the synced next_seq, to notice a queue cut short (watermark.rs)
//! file "sealing":  the key ids that sealed something here, each with a check
//!                  value, to refuse a wrong key before touching anything (seal.rs)
//! ```
//!
//! A spool written when the queue was a sled tree (`queue`) has its blocks
//! moved into segments by the first open.
//!
//! Invariants:
//! - seqs start at 1 and strictly increase; a block holds consecutive
//!   readings in seq order (seqs of refused publishes are skipped);
//! - a block is written by one group commit; a segment is deleted only once
//!   every seq in it is <= `acked_seq` (the collector's 2xx for all of it),
//!   or by the bounds (`max_bytes`, `max_age`), which count what they drop;
//! - `next_seq` on open is the largest of the stored hint, the queue's end
//!   and `acked_seq` + 1, so a seq is never reused.

mod block;
mod erase;
mod quarantine;
mod recover;
mod seal;
mod segments;
mod store;
mod watermark;
mod writer;

pub use block::DeadLetter;
pub use erase::{erase_device, Erasure};
pub use quarantine::open_or_quarantine;
pub use recover::{salvage, Salvage};
pub use seal::{rotate as rotate_key, KeyInfo, KeyMismatch, KeyRing, SealError, KEYS_ENV};
pub use store::{FullPolicy, Spool, SpoolError, SpoolOptions, SpoolReport, SpoolStats};
