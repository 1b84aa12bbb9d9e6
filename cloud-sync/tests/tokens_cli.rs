//! `cloud-sync tokens add|list|revoke` through the real binary: the token
//! is printed once on stdout, the file and `list` never show it, a revoked
//! id is gone, `add` and `revoke` are recorded in the audit log (by id,
//! never the token), and mistakes are one-line errors with a failing exit
//! code.

use std::path::Path;
use std::process::{Command, Output};

/// Runs the binary in `dir`, where the default audit log
/// (`cloud-sync-data/audit.log`) then lands.
fn cloud_sync_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cloud-sync"))
        .args(args)
        .current_dir(dir)
        .env_remove("CLOUD_SYNC_CONFIG")
        .env_remove("CLOUD_SYNC_TOKEN_FILE")
        .env_remove("CLOUD_SYNC_AUDIT_FILE")
        .env_remove("CLOUD_SYNC_DATA_DIR")
        .output()
        .expect("run cloud-sync")
}

fn cloud_sync(args: &[&str]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    cloud_sync_in(dir.path(), args)
}

fn ok_in(dir: &Path, args: &[&str]) -> (String, String) {
    let output = cloud_sync_in(dir, args);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{args:?}: {stderr}");
    (stdout, stderr)
}

fn ok(args: &[&str]) -> (String, String) {
    let output = cloud_sync(args);
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{args:?}: {stderr}");
    (stdout, stderr)
}

fn failure(args: &[&str]) -> String {
    let output = cloud_sync(args);
    assert!(!output.status.success(), "{args:?} should fail");
    String::from_utf8(output.stderr).unwrap()
}

#[test]
fn add_list_revoke() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    let file = file.to_str().unwrap();

    let (token, note) = ok(&["tokens", "--token-file", file, "add", "--gateway", "gw-1"]);
    let token = token.trim();
    assert!(token.starts_with("cst_") && token.len() == 47, "{token}");
    assert!(
        note.contains("ingest token") && note.contains("gw-1"),
        "{note}"
    );
    let id = note.split_whitespace().nth(3).unwrap().to_owned();
    // The flag may come after the subcommand too.
    let (read, _) = ok(&["tokens", "add", "--read", "--token-file", file]);

    let (list, _) = ok(&["tokens", "--token-file", file, "list"]);
    assert!(list.starts_with("ID"), "{list}");
    assert!(
        list.contains(&id) && list.contains("ingest") && list.contains("gw-1"),
        "{list}"
    );
    assert!(list.contains("read"), "{list}");
    let stored = std::fs::read_to_string(file).unwrap();
    for shown in [list.as_str(), stored.as_str()] {
        assert!(!shown.contains(&token[4..]), "a token leaked: {shown}");
        assert!(!shown.contains(read.trim()), "a token leaked: {shown}");
    }
    assert!(!list.contains("sha256"), "list shows no hashes: {list}");

    let (revoked, _) = ok(&["tokens", "--token-file", file, "revoke", &id]);
    assert!(revoked.contains(&id), "{revoked}");
    let (list, _) = ok(&["tokens", "--token-file", file, "list"]);
    assert!(!list.contains(&id), "{list}");
    assert_eq!(list.lines().count(), 2, "{list}");

    let err = failure(&["tokens", "--token-file", file, "revoke", &id]);
    assert!(err.contains("no token with id"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
}

#[test]
fn add_and_revoke_are_recorded_in_the_audit_log() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens");
    let file = file.to_str().unwrap();
    let (token, note) = ok_in(
        dir.path(),
        &["tokens", "--token-file", file, "add", "--gateway", "gw-1"],
    );
    let id = note.split_whitespace().nth(3).unwrap().to_owned();
    ok_in(dir.path(), &["tokens", "--token-file", file, "list"]);
    ok_in(dir.path(), &["tokens", "--token-file", file, "revoke", &id]);

    // Without a config: `<default data dir>/audit.log`, as `serve` would use.
    let default = dir.path().join("cloud-sync-data/audit.log");
    let log = std::fs::read_to_string(&default).unwrap();
    assert!(
        !log.contains(&token.trim()[4..]),
        "a token in the audit log: {log}"
    );
    assert!(!log.contains("sha256"), "{log}");
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "list is not recorded: {log}");
    assert_eq!(lines[0]["action"], "token.add");
    assert_eq!(lines[0]["actor"], "cli");
    assert_eq!(
        lines[0]["details"],
        serde_json::json!({"id": id, "role": "ingest", "gateway": "gw-1"})
    );
    assert_eq!(lines[1]["action"], "token.revoke");
    assert_eq!(lines[1]["seq"], 2);

    // --audit-file names another log.
    let other = dir.path().join("elsewhere.log");
    ok_in(
        dir.path(),
        &[
            "tokens",
            "--token-file",
            file,
            "--audit-file",
            other.to_str().unwrap(),
            "add",
            "--read",
        ],
    );
    assert_eq!(std::fs::read_to_string(&other).unwrap().lines().count(), 1);
}

#[test]
fn the_file_comes_from_the_config_and_a_role_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let tokens = dir.path().join("from-config");
    let audit = dir.path().join("audit.log");
    std::fs::write(
        &config,
        format!(
            "[auth]\ntoken_file = {:?}\n[audit]\nfile = {:?}\n",
            tokens.to_str().unwrap(),
            audit.to_str().unwrap()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    ok(&["tokens", "--config", config, "add", "--admin"]);
    assert!(Path::new(&tokens).exists());
    assert!(std::fs::read_to_string(&audit)
        .unwrap()
        .contains("\"role\":\"admin\""));

    let err = failure(&["tokens", "--config", config, "add"]);
    assert!(err.contains("--gateway"), "{err}");
    let err = failure(&["tokens", "add", "--read"]);
    assert!(err.contains("no token file"), "{err}");
    let err = failure(&["tokens", "--config", config, "add", "--gateway", "bad/id"]);
    assert!(err.contains("gateway id"), "{err}");
}
