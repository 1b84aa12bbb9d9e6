//! The collector's audit log. The line format, the hash chain and the file
//! side (append under an exclusive `flock`, so that the collector and
//! `cloud-sync tokens` may write at once; verify) live in the `audit-log`
//! crate, shared with edge-agent. `writer.rs` is the collector's one
//! writer: a thread fed by a bounded channel that writes queued lines in
//! groups, one `fdatasync` per group.

mod writer;

pub use self::writer::AuditLog;
pub use audit_log::{
    verify_file, AuditError, AuditFile, Details, Entry, Head, VerifyError, ACTOR_CLI, ACTOR_SYSTEM,
};

/// The actor of reads when reads need no token.
pub const ACTOR_ANONYMOUS: &str = "anonymous";
