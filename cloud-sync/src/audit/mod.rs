//! The collector's audit log: the file side of the hash chain whose line
//! format lives in `telemetry::audit` (shared with edge-agent).
//!
//! `file.rs` appends under an exclusive `flock` (the collector and `cloud-sync
//! tokens` may write at once), continues the chain from the file's last line
//! and moves a torn last line aside; it also verifies a file
//! (`cloud-sync audit verify`). `writer.rs` is the collector's one writer: a
//! thread fed by a bounded channel that writes queued lines in groups, one
//! `fdatasync` per group.

mod file;
mod writer;

pub use self::file::{verify_file, AuditError, AuditFile, Entry, VerifyError};
pub use self::writer::AuditLog;
pub use telemetry::audit::{Details, Head};

/// The actor of lines written by a command run on the host (`cloud-sync tokens`).
pub const ACTOR_CLI: &str = "cli";
/// The actor of lines written by the collector itself (retention runs).
pub const ACTOR_SYSTEM: &str = "system";
/// The actor of reads when reads need no token.
pub const ACTOR_ANONYMOUS: &str = "anonymous";
