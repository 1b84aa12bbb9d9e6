//! `cloud-sync tokens add|list|revoke` through the real binary: the token
//! is printed once on stdout, the file and `list` never show it, a revoked
//! id is gone, and mistakes are one-line errors with a failing exit code.

use std::path::Path;
use std::process::{Command, Output};

fn cloud_sync(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cloud-sync"))
        .args(args)
        .env_remove("CLOUD_SYNC_CONFIG")
        .env_remove("CLOUD_SYNC_TOKEN_FILE")
        .output()
        .expect("run cloud-sync")
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
fn the_file_comes_from_the_config_and_a_role_is_required() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    let tokens = dir.path().join("from-config");
    std::fs::write(
        &config,
        format!("[auth]\ntoken_file = {:?}\n", tokens.to_str().unwrap()),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    ok(&["tokens", "--config", config, "add", "--admin"]);
    assert!(Path::new(&tokens).exists());

    let err = failure(&["tokens", "--config", config, "add"]);
    assert!(err.contains("--gateway"), "{err}");
    let err = failure(&["tokens", "add", "--read"]);
    assert!(err.contains("no token file"), "{err}");
    let err = failure(&["tokens", "--config", config, "add", "--gateway", "bad/id"]);
    assert!(err.contains("gateway id"), "{err}");
}
