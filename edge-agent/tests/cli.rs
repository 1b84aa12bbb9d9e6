//! The `edge-agent` command line, run as a real process.

use std::process::Command;

fn edge_agent(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(args)
        .output()
        .expect("run edge-agent")
}

#[test]
fn config_init_prints_a_config_that_checks() {
    let out = edge_agent(&["config", "init"]);
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    let check = edge_agent(&[
        "config",
        "check",
        "--config",
        path.to_str().unwrap(),
        "--uplink-token",
        "t",
    ]);
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("configuration is valid"));
}

#[test]
fn a_bad_config_is_one_clear_line_and_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, "[spool]\nmax_age = \"forever\"\n").unwrap();
    let out = edge_agent(&[
        "config",
        "check",
        "--config",
        path.to_str().unwrap(),
        "--uplink-token",
        "t",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.starts_with("edge-agent: "), "{stderr}");
    assert!(stderr.contains("spool.max_age"), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
}

#[test]
fn spool_recover_refuses_a_missing_path() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("live");
    let out = edge_agent(&[
        "spool",
        "recover",
        "/nonexistent/spool",
        "--spool-dir",
        live.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not exist"));
}
