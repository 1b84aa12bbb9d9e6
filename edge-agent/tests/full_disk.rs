//! A full disk on the spool's filesystem: writes are refused (by the
//! free-space floor, or by ENOSPC without it), their acknowledgements are
//! withheld, nothing already durable is lost, and the spool accepts writes
//! again by itself once space returns.
//!
//! Needs root to mount a small tmpfs; elsewhere it says so and skips.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use broker::{Disposition, Incoming, IngestSink};
use edge_agent::metrics::SpoolMetrics;
use edge_agent::spool::{Spool, SpoolOptions};

/// A tmpfs of `size` mounted on a temp dir, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then_some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn put(spool: &Spool, i: u64) -> bool {
    let ticket = spool
        .submit(Incoming {
            device_id: "d".into(),
            topic: "devices/d/telemetry".into(),
            received_at: now_ms() + i % 1000,
            payload: vec![0xa0; 100].into(),
            qos: 1,
            disposition: Disposition::Reading,
        })
        .unwrap();
    spool.wait_durable(ticket, Duration::from_secs(5)).is_ok()
}

/// The floor on free space (`min_free_bytes`, 10 % of this 8 MiB disk)
/// refuses writes before sled meets ENOSPC.
#[test]
fn the_free_space_floor_refuses_writes_before_sled_runs_out() {
    let metrics = fill_refuse_and_resume(SpoolOptions::default());
    assert!(metrics.rejected_disk.get() > 0);
    assert_eq!(metrics.write_errors.get(), 0, "sled never saw ENOSPC");
}

/// Without the floor sled itself fails with ENOSPC; the writer reopens it
/// once space returns.
#[test]
fn writes_fail_without_loss_and_resume_when_space_returns() {
    let metrics = fill_refuse_and_resume(SpoolOptions {
        min_free_bytes: 0,
        ..SpoolOptions::default()
    });
    assert!(metrics.write_errors.get() > 0);
}

fn fill_refuse_and_resume(options: SpoolOptions) -> SpoolMetrics {
    let metrics = SpoolMetrics::default();
    let Some(fs) = Tmpfs::mount("8m") else {
        println!("skipped: full-disk test needs root to mount a tmpfs");
        return metrics;
    };
    let dir = fs.path().join("spool");
    let spool = Spool::open(&dir, options.clone(), metrics.clone()).unwrap();
    let filler: PathBuf = fs.path().join("filler");
    std::fs::write(&filler, vec![0u8; 7 * 1024 * 1024]).unwrap();

    let mut durable = 0u64;
    let mut refused = 0;
    for i in 0..200_000 {
        if put(&spool, i) {
            durable += 1;
        } else {
            refused += 1;
            if refused == 20 {
                break;
            }
        }
    }
    assert_eq!(refused, 20, "the disk filled up");
    assert!(durable > 0);
    // Reads (the uplink's drain) still work on a full disk. A group whose
    // flush failed may still be readable: it was not acknowledged, so the
    // device resends it and the collector recognises the copy.
    let readable = spool.read_after(0, usize::MAX, usize::MAX).unwrap().len() as u64;
    assert!(readable >= durable, "{readable} < {durable}");

    std::fs::remove_file(&filler).unwrap();
    let resumed = (0..50).any(|attempt| {
        std::thread::sleep(Duration::from_millis(100));
        put(&spool, 1_000_000 + attempt)
    });
    assert!(resumed, "writes resume by themselves once space returns");
    let after: u64 = (0..100).map(|i| put(&spool, 2_000_000 + i) as u64).sum();
    assert_eq!(after, 100);

    spool.close().unwrap();
    drop(spool);
    let spool = Spool::open(&dir, options, SpoolMetrics::default()).unwrap();
    let stored = spool.read_after(0, usize::MAX, usize::MAX).unwrap().len() as u64;
    assert!(
        stored >= durable + 101,
        "every acknowledged reading survived: {stored} < {durable} + 101"
    );
    metrics
}
