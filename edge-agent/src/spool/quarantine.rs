//! A spool that cannot be opened because its files are corrupt must not
//! wedge the gateway: it is moved aside, whole, into a timestamped sibling
//! folder (`<dir>.quarantine-<unix seconds>`), and a fresh spool with a new
//! `spool_id` takes its place. `edge-agent spool recover PATH` later salvages
//! what is readable from the quarantined copy.
//!
//! Only corruption leads here. A spool that is locked by another process or
//! unreadable for lack of permission is an operator's problem and fails the
//! start with a clear error; moving it aside would hide data.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::error;

use super::store::{Spool, SpoolError, SpoolOptions};
use crate::metrics::SpoolMetrics;

/// Opens the spool in `dir`; if it is corrupt, quarantines it and opens a
/// fresh one. Returns the spool and, if one was made, the quarantine folder.
/// Blocks; call from a blocking context.
pub fn open_or_quarantine(
    dir: &Path,
    options: &SpoolOptions,
    metrics: &SpoolMetrics,
) -> Result<(Spool, Option<PathBuf>), SpoolError> {
    let reason = match open_catching_panics(dir, options, metrics) {
        Ok(spool) => return Ok((spool, None)),
        Err(err) if err.is_corrupt() => err.to_string(),
        Err(err) => return Err(err),
    };
    let aside = quarantine_path(dir);
    std::fs::rename(dir, &aside).map_err(|e| SpoolError::Storage {
        path: dir.to_path_buf(),
        source: sled::Error::Io(e),
    })?;
    metrics.quarantined.inc();
    error!(
        spool = %dir.display(),
        quarantine = %aside.display(),
        reason,
        "spool is corrupt: moved aside, starting a fresh spool; salvage it with `edge-agent spool recover`"
    );
    let spool = open_catching_panics(dir, options, metrics)?;
    Ok((spool, Some(aside)))
}

/// sled can panic on some damaged files instead of returning an error.
fn open_catching_panics(
    dir: &Path,
    options: &SpoolOptions,
    metrics: &SpoolMetrics,
) -> Result<Spool, SpoolError> {
    catch_unwind(AssertUnwindSafe(|| {
        Spool::open(dir, options.clone(), metrics.clone())
    }))
    .unwrap_or_else(|panic| {
        let reason = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "sled panicked while opening".into());
        Err(SpoolError::Corrupt {
            path: dir.to_path_buf(),
            reason,
        })
    })
}

fn quarantine_path(dir: &Path) -> PathBuf {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut name = dir
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_else(|| "spool".into());
    name.push(format!(".quarantine-{secs}"));
    let mut path = dir.with_file_name(&name);
    // Two quarantines within a second keep both copies.
    let mut n = 1;
    while path.exists() {
        let mut numbered = name.clone();
        numbered.push(format!("-{n}"));
        path = dir.with_file_name(numbered);
        n += 1;
    }
    path
}
