//! The audit log file: open (continuing the chain from the last line),
//! append lines durably, and verify a whole file.
//!
//! ```text
//! append(entries):
//!   flock(LOCK_EX)                          one writer at a time, across processes
//!   if the file's length is not what this handle last wrote or read:
//!     re-read the head: the last complete line's seq and hash
//!     (a torn tail, bytes after the last "\n", is moved to <file>.torn first)
//!   write every line with its "\n" in one write_all (O_APPEND), then fdatasync
//!   flock(LOCK_UN)
//! verify: flock(LOCK_SH), every line through crate::chain::Verifier;
//!         a last line without "\n" is reported as torn
//! ```
//!
//! A torn tail is what a crash in the middle of a write leaves: the line was
//! never complete, so its action was never confirmed to anyone. The next
//! writer moves it aside (appends it to `<file>.torn`, truncates) and logs a
//! WARN; `audit verify` reports it until then. A last complete line that is
//! not a record is damage that a person must look at: opening fails.

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::chain::{Broken, Details, Head, Verifier};

/// One action to record; the file adds `seq` and `prev`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub at: SystemTime,
    /// A token id, `cli`, `system` or `anonymous`; never a token.
    pub actor: String,
    /// Dotted action name, such as `device.erase`.
    pub action: String,
    /// Parameters and counts; never payload values, passwords or tokens.
    pub details: Details,
}

impl Entry {
    /// An entry at the current time.
    pub fn now(actor: &str, action: &str, details: Details) -> Entry {
        Entry {
            at: SystemTime::now(),
            actor: actor.to_owned(),
            action: action.to_owned(),
            details,
        }
    }
}

/// Why the audit log cannot be opened or written.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The file or its directory cannot be created, read, locked, written or
    /// synced (permissions, full disk); the action it records was not
    /// confirmed. Fix the cause; the next write continues the chain.
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The last complete line is not an audit record: the file was damaged
    /// or edited. Run `audit verify` (cloud-sync or edge-agent), keep the file as evidence
    /// and start a new one (move it aside).
    #[error("audit log {path} ends in a line that is not an audit record ({reason}); run `audit verify` (cloud-sync or edge-agent) and move the file aside")]
    Damaged { path: PathBuf, reason: String },
    /// The collector's writer thread has stopped (it panicked); see the logs.
    #[error("the audit log writer has stopped")]
    Stopped,
}

impl AuditError {
    /// A copy for each waiter of a failed group (`io::Error` is not `Clone`).
    pub fn duplicate(&self) -> AuditError {
        match self {
            AuditError::Io { path, source } => AuditError::Io {
                path: path.clone(),
                source: std::io::Error::new(source.kind(), source.to_string()),
            },
            AuditError::Damaged { path, reason } => AuditError::Damaged {
                path: path.clone(),
                reason: reason.clone(),
            },
            AuditError::Stopped => AuditError::Stopped,
        }
    }
}

/// Why `audit verify` fails.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// The file cannot be opened or read.
    #[error("audit log {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A line fails the chain: changed, removed, inserted or not a record.
    #[error("audit log {path}, {broken}")]
    Broken { path: PathBuf, broken: Broken },
    /// The last line has no "\n": a write was cut short by a crash; the next
    /// collector start or `tokens` command moves it to `<file>.torn`.
    #[error("audit log {path}, line {line}: torn (no newline at the end of the file): a write was cut short; the next writer moves it to {path}.torn")]
    Torn { path: PathBuf, line: u64 },
}

/// An open audit log and the head of its chain.
#[derive(Debug)]
pub struct AuditFile {
    path: PathBuf,
    file: File,
    head: Head,
    /// The file's length after this handle's last read or write; another
    /// process appended (or the file was cut) when it differs.
    known_len: u64,
}

impl AuditFile {
    /// Opens (or creates, mode 0600, with its directory) the log at `path`
    /// and reads the head of its chain.
    pub fn open(path: &Path) -> Result<AuditFile, AuditError> {
        let io = |source| AuditError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let mut options = OpenOptions::new();
        options.read(true).append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path).map_err(io)?;
        let mut audit = AuditFile {
            path: path.to_owned(),
            file,
            head: Head::genesis(),
            known_len: u64::MAX,
        };
        let _lock = lock(&audit.file, true).map_err(io)?;
        audit.refresh()?;
        Ok(audit)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The chain's head as of this handle's last read or write.
    pub fn head(&self) -> &Head {
        &self.head
    }

    /// Appends one line per entry, in order, and syncs them to disk before
    /// returning. Returns the head after the last one.
    pub fn append(&mut self, entries: &[Entry]) -> Result<Head, AuditError> {
        let path = self.path.clone();
        let io = |source| AuditError::Io { path, source };
        let _lock = lock(&self.file, true).map_err(io)?;
        self.refresh()?;
        let mut head = self.head.clone();
        let mut text = String::new();
        for entry in entries {
            let at = humantime::format_rfc3339_millis(entry.at).to_string();
            text.push_str(&head.append(&at, &entry.actor, &entry.action, entry.details.clone()));
            text.push('\n');
        }
        let written = self
            .file
            .write_all(text.as_bytes())
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.head = head;
                self.known_len = self.known_len.saturating_add(text.len() as u64);
                Ok(self.head.clone())
            }
            Err(source) => {
                // Part of it may be on disk: read the file again next time.
                self.known_len = u64::MAX;
                Err(AuditError::Io {
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// Re-reads the head when the file is not as this handle left it. The
    /// caller holds the exclusive lock.
    fn refresh(&mut self) -> Result<(), AuditError> {
        let path = self.path.clone();
        let io = |source| AuditError::Io {
            path: path.clone(),
            source,
        };
        let len = self.file.metadata().map_err(io)?.len();
        if len == self.known_len {
            return Ok(());
        }
        let last_newline = rfind_newline(&mut self.file, len).map_err(io)?;
        let complete = last_newline.map_or(0, |at| at + 1);
        if complete < len {
            self.move_torn_tail(complete, len).map_err(io)?;
        }
        self.head = match last_newline {
            None => Head::genesis(),
            Some(end) => {
                let start = rfind_newline(&mut self.file, end)
                    .map_err(io)?
                    .map_or(0, |at| at + 1);
                let mut line = vec![0; (end - start) as usize];
                self.file.seek(SeekFrom::Start(start)).map_err(io)?;
                self.file.read_exact(&mut line).map_err(io)?;
                let damaged = |reason: String| AuditError::Damaged {
                    path: path.clone(),
                    reason,
                };
                let line = String::from_utf8(line).map_err(|_| damaged("not UTF-8".into()))?;
                Head::after(&line).map_err(|kind| damaged(kind.to_string()))?
            }
        };
        self.known_len = complete;
        Ok(())
    }

    /// Appends the bytes `from..len` (an unfinished line) to `<file>.torn`
    /// and cuts the file back to `from`.
    fn move_torn_tail(&mut self, from: u64, len: u64) -> std::io::Result<()> {
        let mut tail = vec![0; (len - from) as usize];
        self.file.seek(SeekFrom::Start(from))?;
        self.file.read_exact(&mut tail)?;
        let torn_path = torn_path(&self.path);
        let mut options = OpenOptions::new();
        options.append(true).create(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut torn = options.open(&torn_path)?;
        torn.write_all(&tail)?;
        torn.write_all(b"\n")?;
        torn.sync_data()?;
        self.file.set_len(from)?;
        self.file.sync_data()?;
        tracing::warn!(
            path = %self.path.display(),
            bytes = tail.len(),
            moved_to = %torn_path.display(),
            "the audit log ended in a torn line (a write cut short); moved it aside"
        );
        Ok(())
    }
}

/// `<file>.torn`: where torn tails go.
fn torn_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".torn");
    PathBuf::from(name)
}

/// The position of the last `\n` before `end`, reading backwards in chunks.
fn rfind_newline(file: &mut File, end: u64) -> std::io::Result<Option<u64>> {
    const CHUNK: u64 = 64 * 1024;
    let mut end = end;
    let mut buf = Vec::new();
    while end > 0 {
        let start = end.saturating_sub(CHUNK);
        buf.resize((end - start) as usize, 0);
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut buf)?;
        if let Some(at) = buf.iter().rposition(|&b| b == b'\n') {
            return Ok(Some(start + at as u64));
        }
        end = start;
    }
    Ok(None)
}

/// An advisory lock on the whole file, released on drop. It holds a
/// duplicate of the descriptor (same open file, same lock), so that the
/// file stays free to read and write while locked.
struct Lock(#[cfg_attr(not(unix), allow(dead_code))] File);

fn lock(file: &File, exclusive: bool) -> std::io::Result<Lock> {
    let held = file.try_clone()?;
    #[cfg(unix)]
    {
        use rustix::fs::{flock, FlockOperation};
        let operation = if exclusive {
            FlockOperation::LockExclusive
        } else {
            FlockOperation::LockShared
        };
        flock(&held, operation)?;
    }
    #[cfg(not(unix))]
    let _ = exclusive;
    Ok(Lock(held))
}

impl Drop for Lock {
    fn drop(&mut self) {
        #[cfg(unix)]
        let _ = rustix::fs::flock(&self.0, rustix::fs::FlockOperation::Unlock);
    }
}

/// Checks the whole chain of the log at `path`; returns its head (the
/// number of lines is `head.seq`).
pub fn verify_file(path: &Path) -> Result<Head, VerifyError> {
    let io = |source| VerifyError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    // Shared: a writer's half-written line is not mistaken for a torn one.
    let _lock = lock(&file, false).map_err(io)?;
    let mut reader = BufReader::new(&file);
    let mut verifier = Verifier::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
            return Ok(verifier.head().clone());
        }
        let number = verifier.head().seq + 1;
        if line.pop() != Some(b'\n') {
            return Err(VerifyError::Torn {
                path: path.to_owned(),
                line: number,
            });
        }
        let broken = |broken| VerifyError::Broken {
            path: path.to_owned(),
            broken,
        };
        let text = std::str::from_utf8(&line).map_err(|_| {
            broken(Broken {
                line: number,
                kind: crate::chain::BrokenKind::NotARecord("not UTF-8".into()),
            })
        })?;
        verifier.push(text).map_err(broken)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str) -> Entry {
        Entry::now("cli", action, Details::new())
    }

    #[test]
    fn appends_continue_the_chain_across_handles() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/audit.log");
        let mut a = AuditFile::open(&path).unwrap();
        a.append(&[entry("a.one"), entry("a.two")]).unwrap();
        // Another process (here: handle) appends in between.
        let mut b = AuditFile::open(&path).unwrap();
        assert_eq!(b.head().seq, 2);
        b.append(&[entry("b.three")]).unwrap();
        let head = a.append(&[entry("a.four")]).unwrap();
        assert_eq!(head.seq, 4);
        assert_eq!(verify_file(&path).unwrap(), head);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_torn_tail_is_reported_then_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        AuditFile::open(&path)
            .unwrap()
            .append(&[entry("x.one"), entry("x.two")])
            .unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        let whole = bytes.len();
        bytes.extend_from_slice(b"{\"seq\":3,\"at\":");
        std::fs::write(&path, &bytes).unwrap();
        let err = verify_file(&path).unwrap_err();
        assert!(matches!(err, VerifyError::Torn { line: 3, .. }), "{err}");

        let mut reopened = AuditFile::open(&path).unwrap();
        assert_eq!(reopened.head().seq, 2);
        assert_eq!(std::fs::metadata(&path).unwrap().len(), whole as u64);
        let torn = std::fs::read_to_string(torn_path(&path)).unwrap();
        assert_eq!(torn, "{\"seq\":3,\"at\":\n");
        reopened.append(&[entry("x.three")]).unwrap();
        assert_eq!(verify_file(&path).unwrap().seq, 3);
    }

    #[test]
    fn a_damaged_last_line_stops_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        AuditFile::open(&path)
            .unwrap()
            .append(&[entry("x.one")])
            .unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("not a record\n");
        std::fs::write(&path, text).unwrap();
        let err = AuditFile::open(&path).unwrap_err();
        assert!(matches!(err, AuditError::Damaged { .. }), "{err}");
        let err = verify_file(&path).unwrap_err().to_string();
        assert!(err.contains("line 2: not an audit record"), "{err}");
    }

    #[test]
    fn long_logs_find_their_last_line_across_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let mut log = AuditFile::open(&path).unwrap();
        let mut big = Details::new();
        big.insert("pad".into(), "x".repeat(70_000).into());
        log.append(&[entry("a"), Entry::now("cli", "big", big), entry("b")])
            .unwrap();
        let reopened = AuditFile::open(&path).unwrap();
        assert_eq!(reopened.head(), log.head());
        assert_eq!(verify_file(&path).unwrap().seq, 3);
    }
}
