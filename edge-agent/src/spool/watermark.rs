//! A note, beside the spool's files, of how far its synced seqs reached:
//! the one way to tell a queue that was cut short from one that was simply
//! never written further.
//!
//! The queue's last segment is cut at its first damaged record when nothing
//! whole follows it (segments.rs): exactly right for a write torn by a
//! crash, silent data loss for a bad sector at the end of the log. The
//! writer records, at most once a second and at shutdown, `next_seq` of
//! what has been synced. On open, a spool whose queue ends below that mark
//! lost synced readings and is treated as corrupt (quarantined and left for
//! `edge-agent spool recover`). The mark only ever lags the log, so a crash
//! never makes a sound spool look damaged.
//!
//! ```text
//! <spool dir>/durable-seq:   "<spool_id hex> <next_seq>\n"
//! ```
//!
//! Damage with whole records after it is not seen here; the records it
//! touches are set aside when read.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const FILE: &str = "durable-seq";
const EVERY: Duration = Duration::from_secs(1);

/// What the mark of a spool directory says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Mark {
    pub spool_id: String,
    /// Every seq below this was flushed.
    pub next_seq: u64,
}

/// Reads the mark; `None` if there is none, an error if it is unreadable.
pub(super) fn read(dir: &Path) -> io::Result<Option<Mark>> {
    let text = match fs::read_to_string(dir.join(FILE)) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let invalid = || io::Error::new(io::ErrorKind::InvalidData, format!("{FILE}: {text:?}"));
    let (spool_id, next_seq) = text.trim().split_once(' ').ok_or_else(invalid)?;
    Ok(Some(Mark {
        spool_id: spool_id.to_string(),
        next_seq: next_seq.parse().map_err(|_| invalid())?,
    }))
}

/// The writer's side: remembers the latest flushed `next_seq` and writes it
/// out at most once per second.
pub(super) struct Watermark {
    dir: PathBuf,
    spool_id: String,
    latest: u64,
    written: u64,
    last_write: Option<Instant>,
}

impl Watermark {
    pub fn new(dir: &Path, spool_id: &str, next_seq: u64) -> Watermark {
        Watermark {
            dir: dir.to_path_buf(),
            spool_id: spool_id.to_string(),
            latest: next_seq,
            written: 0,
            last_write: None,
        }
    }

    /// Every seq below `next_seq` is flushed.
    pub fn advance(&mut self, next_seq: u64) {
        self.latest = self.latest.max(next_seq);
        if self.last_write.is_none_or(|at| at.elapsed() >= EVERY) {
            self.write();
        }
    }

    /// Writes the latest mark now if it changed (idle ticks, shutdown).
    pub fn write(&mut self) {
        if self.latest == self.written {
            return;
        }
        self.last_write = Some(Instant::now());
        match self.replace() {
            Ok(()) => self.written = self.latest,
            // A full disk, say: the mark lags, which is always safe.
            Err(err) => tracing::debug!(error = %err, "spool watermark not written"),
        }
    }

    /// Write-then-rename, so a crash leaves the old mark or the new one.
    fn replace(&self) -> io::Result<()> {
        let tmp = self.dir.join(format!("{FILE}.tmp"));
        let mut file = fs::File::create(&tmp)?;
        writeln!(file, "{} {}", self.spool_id, self.latest)?;
        file.sync_all()?;
        fs::rename(&tmp, self.dir.join(FILE))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_only_moves_forward() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        let mut mark = Watermark::new(dir.path(), "ab12", 1);
        mark.advance(10);
        mark.advance(5);
        mark.write();
        assert_eq!(
            read(dir.path()).unwrap(),
            Some(Mark {
                spool_id: "ab12".into(),
                next_seq: 10
            })
        );
        fs::write(dir.path().join(FILE), "garbage").unwrap();
        assert_eq!(
            read(dir.path()).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }
}
