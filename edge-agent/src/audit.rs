//! The gateway's audit log: what operators did to the gateway's data and
//! credentials from its command line (`spool erase`, `spool purge`, `spool
//! recover`, `keys rotate`, `devices add|rotate|remove`), one hash-chained
//! JSON line each, in the format of the `audit-log` crate that the
//! collector's log shares. `edge-agent audit verify` checks the chain.
//!
//! The file is `audit.file` (default `edge-audit.log`, beside the default
//! spool directory; never inside it, since `spool erase` replaces that
//! directory). A line is synced to disk before the command reports success;
//! if it cannot be written, the command fails after its action, saying so,
//! so that the operator knows the record is missing.

use std::path::{Path, PathBuf};

use anyhow::Context;
use audit_log::{AuditFile, Details, Entry, ACTOR_CLI};

use crate::cli::RunArgs;

/// The default audit log, relative to the working directory like the spool.
pub const DEFAULT_FILE: &str = "edge-audit.log";

/// The audit log file the configuration names.
pub fn path(run: &RunArgs) -> anyhow::Result<PathBuf> {
    Ok(run
        .load()?
        .audit
        .file
        .unwrap_or_else(|| PathBuf::from(DEFAULT_FILE)))
}

/// Appends one line for a command run on this host: `details` plus the
/// login that ran it (`$SUDO_USER`, else `$USER`), when known.
pub fn record(run: &RunArgs, action: &str, details: serde_json::Value) -> anyhow::Result<()> {
    record_at(&path(run)?, action, details)
}

/// [`record`] to the log at `path`.
pub fn record_at(path: &Path, action: &str, details: serde_json::Value) -> anyhow::Result<()> {
    let mut details: Details = match details {
        serde_json::Value::Object(map) => map,
        other => Details::from_iter([("value".to_string(), other)]),
    };
    if let Some(user) = std::env::var("SUDO_USER")
        .ok()
        .or_else(|| std::env::var("USER").ok())
    {
        details.insert("user".into(), user.into());
    }
    AuditFile::open(path)
        .and_then(|mut file| file.append(&[Entry::now(ACTOR_CLI, action, details)]))
        .with_context(|| {
            format!(
                "{action} was done, but its audit line could not be written to {}",
                path.display()
            )
        })?;
    Ok(())
}
