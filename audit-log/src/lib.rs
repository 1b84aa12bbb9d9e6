//! The audit log of admin actions and data reads, shared by the collector
//! (`cloud-sync`) and the gateway (`edge-agent`): `chain.rs` is the line
//! format and its hash chain (pure), `file.rs` appends to and verifies a log
//! file under a lock, so that a daemon and a command run beside it can both
//! write.

pub mod chain;
mod file;

pub use chain::{verify, Broken, BrokenKind, Details, Head, Record, Verifier, GENESIS};
pub use file::{verify_file, AuditError, AuditFile, Entry, VerifyError};

/// The actor of lines written by a command run on the host.
pub const ACTOR_CLI: &str = "cli";
/// The actor of lines written by a daemon on its own (retention runs).
pub const ACTOR_SYSTEM: &str = "system";
