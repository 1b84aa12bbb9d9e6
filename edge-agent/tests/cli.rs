//! The `edge-agent` command line, run as a real process.

use std::process::Command;

fn edge_agent(args: &[&str]) -> std::process::Output {
    // Admin commands append to an audit log; keep it out of the crate.
    let audit =
        std::env::temp_dir().join(format!("edge-agent-cli-test-{}.log", std::process::id()));
    Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .env("EDGE_AGENT_AUDIT_FILE", audit)
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

mod offline {
    use super::edge_agent;
    use std::path::Path;
    use std::time::Duration;

    use broker::{Disposition, Incoming, IngestSink};
    use edge_agent::metrics::SpoolMetrics;
    use edge_agent::spool::{Spool, SpoolOptions};
    use telemetry::senml::{encode_pack, RawRecord, Value};

    fn reading(value: f64) -> Vec<u8> {
        encode_pack(&[RawRecord {
            base_time: Some(1_795_000_000.0),
            name: Some("temperature".into()),
            unit: Some("Cel".into()),
            value: Some(Value::Float(value)),
            ..RawRecord::default()
        }])
    }

    /// A closed spool holding three readings and one dead letter.
    fn filled(dir: &Path) {
        let spool = Spool::open(dir, SpoolOptions::default(), SpoolMetrics::default()).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let mut last = None;
        for (i, disposition) in [
            Disposition::Reading,
            Disposition::Reading,
            Disposition::Reading,
            Disposition::Rejected {
                reason: "malformed cbor".into(),
            },
        ]
        .into_iter()
        .enumerate()
        {
            last = Some(
                spool
                    .submit(Incoming {
                        device_id: format!("dev-{i}"),
                        topic: format!("devices/dev-{i}/telemetry"),
                        received_at: now,
                        payload: reading(21.5 + i as f64).into(),
                        qos: 1,
                        disposition,
                    })
                    .unwrap(),
            );
        }
        spool
            .wait_durable(last.unwrap(), Duration::from_secs(10))
            .unwrap();
        spool.close().unwrap();
    }

    fn run(args: &[&str], dir: &Path) -> (bool, String, String) {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--spool-dir", dir.to_str().unwrap()]);
        let out = edge_agent(&all);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    #[test]
    fn stats_peek_export_and_dead_letters_read_a_stopped_spool() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("spool");
        filled(&dir);

        let (ok, out, err) = run(&["spool", "stats"], &dir);
        assert!(ok, "{err}");
        assert!(
            out.lines()
                .any(|l| l.starts_with("pending readings") && l.ends_with(" 3")),
            "{out}"
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with("dead letters") && l.ends_with(" 1")),
            "{out}"
        );
        let (ok, out, _) = run(&["spool", "stats", "--json"], &dir);
        assert!(ok);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["pending"], 3);

        let (ok, out, _) = run(&["spool", "peek", "-n", "2"], &dir);
        assert!(ok);
        assert!(
            out.contains("dev-0") && out.contains("temperature=21.5 Cel"),
            "{out}"
        );
        assert!(!out.contains("dev-2"), "only two readings: {out}");

        let (ok, out, _) = run(&["spool", "export"], &dir);
        assert!(ok);
        let lines: Vec<serde_json::Value> = out
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2]["records"][0]["value"], 23.5);

        let (ok, out, _) = run(&["spool", "dead-letters"], &dir);
        assert!(ok);
        assert!(
            out.contains("dev-3") && out.contains("malformed cbor"),
            "{out}"
        );
    }

    #[test]
    fn purge_needs_yes_and_then_empties_the_spool() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("spool");
        filled(&dir);
        let (ok, _, err) = run(&["spool", "purge"], &dir);
        assert!(!ok && err.contains("--yes"), "{err}");
        let (ok, out, err) = run(&["spool", "purge", "--yes"], &dir);
        assert!(ok, "{err}");
        assert!(out.contains("purged 3"), "{out}");
        let (_, out, _) = run(&["spool", "stats", "--json"], &dir);
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["pending"], 0);
        assert_eq!(
            json["dead_letters"], 1,
            "dead letters stay without --dead-letters"
        );
    }

    #[test]
    fn offline_commands_refuse_a_spool_in_use() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("spool");
        let _held = Spool::open(&dir, SpoolOptions::default(), SpoolMetrics::default()).unwrap();
        let (ok, _, err) = run(&["spool", "stats"], &dir);
        assert!(!ok);
        assert!(err.contains("in use: stop the agent first"), "{err}");
    }
}

#[test]
fn devices_are_managed_without_storing_passwords() {
    use std::io::Write;
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("devices");
    let file_arg = file.to_str().unwrap();

    let out = edge_agent(&[
        "devices",
        "add",
        "dev-1",
        "--generate",
        "--devices-file",
        file_arg,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let generated = stdout.trim().rsplit(' ').next().unwrap().to_string();
    assert_eq!(generated.len(), 36, "{stdout}");

    let audit = dir.path().join("edge-audit.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .env("EDGE_AGENT_AUDIT_FILE", &audit)
        .args(["devices", "add", "dev-2", "--devices-file", file_arg])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"a long enough secret\n")
        .unwrap();
    assert!(child.wait().unwrap().success());

    let list = edge_agent(&["devices", "list", "--devices-file", file_arg]);
    assert_eq!(String::from_utf8_lossy(&list.stdout), "dev-1\ndev-2\n");

    let stored = std::fs::read_to_string(&file).unwrap();
    assert!(!stored.contains(&generated) && !stored.contains("a long enough secret"));
    let registry = broker::DeviceRegistry::load(&file).unwrap();
    assert!(registry.verify("dev-1", &generated));
    assert!(registry.verify("dev-2", "a long enough secret"));

    let rotated = edge_agent(&[
        "devices",
        "rotate",
        "dev-1",
        "--generate",
        "--devices-file",
        file_arg,
    ]);
    assert!(rotated.status.success());
    assert!(
        !registry.verify("dev-1", &generated),
        "the old password stops working"
    );

    let removed = edge_agent(&["devices", "remove", "dev-2", "--devices-file", file_arg]);
    assert!(removed.status.success());
    let again = edge_agent(&["devices", "remove", "dev-2", "--devices-file", file_arg]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("not registered"));
}

#[test]
fn keys_rotate_and_spool_erase_work_from_the_command_line() {
    use broker::{Disposition, Incoming, IngestSink};
    use edge_agent::spool::{KeyRing, Spool, SpoolOptions};

    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("spool.keys");
    let spool_dir = dir.path().join("spool");
    let audit = dir.path().join("audit.log");
    let common = [
        "--spool-key-file",
        keys.to_str().unwrap(),
        "--spool-dir",
        spool_dir.to_str().unwrap(),
        "--audit-file",
        audit.to_str().unwrap(),
    ];
    let run = |args: &[&str]| {
        let out = edge_agent(&[args, &common[..]].concat());
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    };
    for expected in ["key 1 added", "key 2 added"] {
        let (ok, text) = run(&["keys", "rotate"]);
        assert!(ok && text.contains(expected), "{text}");
    }
    let (ok, text) = run(&["keys", "list"]);
    assert!(ok, "{text}");
    let lines: Vec<_> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("1 ") && lines[1].ends_with("current"),
        "{text}"
    );
    let key_text = std::fs::read_to_string(&keys).unwrap();
    let secret = key_text.lines().last().unwrap().split(' ').nth(2).unwrap();
    assert!(!text.contains(secret));

    // Readings of two devices, sealed with key 2.
    let ring = KeyRing::read_file(&keys).unwrap();
    {
        let options = SpoolOptions {
            keys: ring,
            ..SpoolOptions::default()
        };
        let spool = Spool::open(&spool_dir, options, Default::default()).unwrap();
        let mut last = None;
        for i in 0..10u8 {
            let device = if i % 2 == 0 { "gone" } else { "kept" };
            last = Some(
                spool
                    .submit(Incoming {
                        device_id: device.into(),
                        topic: format!("devices/{device}/telemetry"),
                        received_at: 1,
                        payload: vec![i].into(),
                        qos: 1,
                        disposition: Disposition::Reading,
                    })
                    .unwrap(),
            );
        }
        spool
            .wait_durable(last.unwrap(), std::time::Duration::from_secs(10))
            .unwrap();
        spool.close().unwrap();
    }
    let (ok, text) = run(&["spool", "stats"]);
    assert!(ok && text.contains("with key 2"), "{text}");
    let (ok, text) = run(&["spool", "erase", "--device", "gone"]);
    assert!(!ok && text.contains("--yes"), "{text}");
    let (ok, text) = run(&["spool", "erase", "--device", "gone", "--yes"]);
    assert!(ok && text.contains("erased gone: 5 readings"), "{text}");
    let (ok, text) = run(&["spool", "export"]);
    assert!(ok, "{text}");
    assert_eq!(text.lines().count(), 5, "{text}");
    assert!(!text.contains("\"gone\""), "{text}");

    // Both rotations and the erasure are in the audit log, chained.
    let log = std::fs::read_to_string(&audit).unwrap();
    let actions: Vec<_> = log
        .lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap()["action"].clone())
        .collect();
    assert_eq!(
        actions,
        ["keys.rotate", "keys.rotate", "spool.erase"],
        "{log}"
    );
    assert!(log.contains(r#""device":"gone""#), "{log}");
    assert!(!log.contains(secret));
    let (ok, text) = run(&["audit", "verify"]);
    assert!(ok && text.contains("ok: 3 line(s)"), "{text}");
    // An edit of line 1 breaks line 2's link to it.
    std::fs::write(&audit, log.replacen(r#""key_id":1"#, r#""key_id":7"#, 1)).unwrap();
    let (ok, text) = run(&["audit", "verify"]);
    assert!(!ok && text.contains("line 2"), "{text}");

    // A key file others can read is refused, naming the fix.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (ok, text) = run(&["spool", "stats"]);
    assert!(!ok && text.contains("chmod 600"), "{text}");
}
