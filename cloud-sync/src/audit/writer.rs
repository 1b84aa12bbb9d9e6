//! The collector's one audit writer: a dedicated thread owning the
//! [`AuditFile`], fed by a bounded channel.
//!
//! ```text
//! handlers ──(entry, waiter?)──▶ channel (AUDIT_QUEUE) ──▶ writer thread:
//!                                                           take one, then every queued one (≤ MAX_GROUP)
//!                                                           append them all, one fdatasync
//!                                                           answer the waiters
//! ```
//!
//! Admin actions ([`AuditLog::record`]) wait for the sync of their line.
//! Reads ([`AuditLog::record_read`]) only queue theirs: a query is not
//! slowed by a disk sync, and lines queued together share one. The channel
//! is bounded, so when the disk falls behind, reads wait for room rather
//! than go unrecorded. A crash loses the read lines still queued (at most
//! [`AUDIT_QUEUE`]); every admin line that was answered is on disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, oneshot};

use crate::api::LogGate;
use audit_log::Details;
use audit_log::{AuditError, AuditFile, Entry};

/// Lines waiting for the writer.
pub const AUDIT_QUEUE: usize = 4096;
/// Most lines written by one append (one sync).
const MAX_GROUP: usize = 1024;

struct Job {
    /// `None`: only wait for what was queued before (a flush).
    entry: Option<Entry>,
    done: Option<oneshot::Sender<Result<(), AuditError>>>,
}

/// The handle of the collector's audit log; cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    jobs: mpsc::Sender<Job>,
    path: Arc<PathBuf>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("path", &self.path)
            .finish()
    }
}

impl AuditLog {
    /// Opens the log at `path` and starts its writer thread, which counts
    /// written lines in `lines` and lines it could not write in `errors`.
    pub fn start(path: &Path, lines: Counter, errors: Counter) -> Result<AuditLog, AuditError> {
        let file = AuditFile::open(path)?;
        let (jobs, queue) = mpsc::channel(AUDIT_QUEUE);
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || write_loop(file, queue, lines, errors))
            .map_err(|source| AuditError::Io {
                path: path.to_owned(),
                source,
            })?;
        Ok(AuditLog {
            jobs,
            path: Arc::new(path.to_owned()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records an admin action and waits until its line is on disk.
    pub async fn record(
        &self,
        actor: &str,
        action: &str,
        details: Details,
    ) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        let job = Job {
            entry: Some(Entry::now(actor, action, details)),
            done: Some(done),
        };
        self.jobs.send(job).await.map_err(|_| AuditError::Stopped)?;
        wait.await.map_err(|_| AuditError::Stopped)?
    }

    /// Queues a read's line without waiting for the disk; a failure to
    /// write it is logged and counted by the writer.
    pub async fn record_read(&self, actor: &str, details: Details) {
        let job = Job {
            entry: Some(Entry::now(actor, "data.read", details)),
            done: None,
        };
        if self.jobs.send(job).await.is_err() {
            tracing::error!("the audit log writer has stopped; a read went unrecorded");
        }
    }

    /// Waits until every line queued before is written (shutdown, tests).
    pub async fn flush(&self) -> Result<(), AuditError> {
        let (done, wait) = oneshot::channel();
        let job = Job {
            entry: None,
            done: Some(done),
        };
        self.jobs.send(job).await.map_err(|_| AuditError::Stopped)?;
        wait.await.map_err(|_| AuditError::Stopped)?
    }
}

/// The writer thread: runs until every handle is dropped and the queue is empty.
fn write_loop(
    mut file: AuditFile,
    mut queue: mpsc::Receiver<Job>,
    lines: Counter,
    errors: Counter,
) {
    let gate = LogGate::new(Duration::from_secs(10));
    while let Some(first) = queue.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }
        let entries: Vec<Entry> = jobs.iter_mut().filter_map(|j| j.entry.take()).collect();
        let result = if entries.is_empty() {
            Ok(())
        } else {
            file.append(&entries).map(drop)
        };
        match &result {
            Ok(()) => {
                lines.inc_by(entries.len() as u64);
            }
            Err(err) => {
                errors.inc_by(entries.len() as u64);
                // Admin actions get the error back; reads only this line.
                if let Some(suppressed) = gate.pass() {
                    tracing::error!(
                        error = %err,
                        lines = entries.len(),
                        suppressed,
                        "cannot write the audit log; these actions are unrecorded"
                    );
                }
            }
        }
        for job in jobs {
            if let Some(done) = job.done {
                let _ = done.send(match &result {
                    Ok(()) => Ok(()),
                    Err(err) => Err(err.duplicate()),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_are_grouped_and_admin_lines_wait_for_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let (lines, errors) = (Counter::default(), Counter::default());
        let log = AuditLog::start(&path, lines.clone(), errors.clone()).unwrap();
        for i in 0..100 {
            let mut details = Details::new();
            details.insert("i".into(), i.into());
            log.record_read("3f9a2c1b", details).await;
        }
        log.record("cli", "token.add", Details::new())
            .await
            .unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 101);
        assert!(text.lines().last().unwrap().contains("token.add"));
        assert_eq!(lines.get(), 101);
        assert_eq!(errors.get(), 0);
        assert_eq!(crate::audit::verify_file(&path).unwrap().seq, 101);
    }
}
