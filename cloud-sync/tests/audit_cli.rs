//! `cloud-sync audit verify` through the real binary: it passes on an
//! untouched log, and exits non-zero naming the first bad line when a line
//! was edited or deleted, or when the file ends in a torn line.

use std::path::Path;
use std::process::{Command, Output};

use cloud_sync::audit::{AuditFile, Details, Entry};

fn verify(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cloud-sync"))
        .args(["audit", "verify"])
        .args(args)
        .env_remove("CLOUD_SYNC_CONFIG")
        .env_remove("CLOUD_SYNC_AUDIT_FILE")
        .output()
        .expect("run cloud-sync")
}

/// A log of five lines, written as the collector writes them.
fn five_lines(path: &Path) {
    let mut log = AuditFile::open(path).unwrap();
    for i in 0..5 {
        let mut details = Details::new();
        details.insert("device".into(), format!("dev-{i}").into());
        log.append(&[Entry::now("3f9a2c1b", "device.erase", details)])
            .unwrap();
    }
}

/// Runs `audit verify --file`, asserting it fails; returns stderr.
fn refused(path: &Path) -> String {
    let output = verify(&["--file", path.to_str().unwrap()]);
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        !output.status.success(),
        "verify passed a bad log: {stderr}"
    );
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    stderr
}

#[test]
fn an_untouched_log_passes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    five_lines(&path);
    let output = verify(&["--file", path.to_str().unwrap()]);
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("ok: 5 line(s), last line hash "),
        "{stdout}"
    );

    // The config's audit.file, as `serve` resolves it.
    let config = dir.path().join("c.toml");
    std::fs::write(
        &config,
        format!("[audit]\nfile = {:?}\n", path.to_str().unwrap()),
    )
    .unwrap();
    let output = verify(&["--config", config.to_str().unwrap()]);
    assert!(output.status.success());
}

#[test]
fn an_edited_line_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    five_lines(&path);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("dev-2", "dev-9")).unwrap();
    let err = refused(&path);
    // Line 3 was edited: line 4 no longer chains to it.
    assert!(
        err.contains("line 4: prev is not the hash of line 3: line 3 was changed"),
        "{err}"
    );
}

#[test]
fn a_deleted_line_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    five_lines(&path);
    let text = std::fs::read_to_string(&path).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, l)| l)
        .collect();
    std::fs::write(&path, kept.join("\n") + "\n").unwrap();
    let err = refused(&path);
    assert!(err.contains("line 2: seq is 3, expected 2"), "{err}");

    let first_gone: Vec<&str> = text.lines().skip(1).collect();
    std::fs::write(&path, first_gone.join("\n") + "\n").unwrap();
    let err = refused(&path);
    assert!(err.contains("line 1:"), "{err}");
}

#[test]
fn a_torn_last_line_and_a_missing_file_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.log");
    five_lines(&path);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str("{\"seq\":6,");
    std::fs::write(&path, text).unwrap();
    let err = refused(&path);
    assert!(err.contains("line 6: torn"), "{err}");
    let err = refused(&dir.path().join("nothing-here.log"));
    assert!(err.contains("nothing-here.log"), "{err}");
}
