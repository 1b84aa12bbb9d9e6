//! `edge-agent status` against a live agent (a real child process).

mod util;

use std::process::Command;

use util::{publish_each_acked, reading, AgentProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_a_live_agents_spool_and_uplink() {
    let dir = tempfile::tempdir().unwrap();
    // Nothing listens at the uplink: readings stay spooled and the uplink retries.
    let agent = AgentProcess::spawn(dir.path(), "http://127.0.0.1:9");
    let payloads = (0..5)
        .map(|i| reading(1_795_000_000.0 + f64::from(i), 20.0))
        .collect();
    publish_each_acked(agent.mqtt, "status-dev", payloads, |_| {}).await;

    let admin = format!("http://{}", agent.admin);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_edge-agent"))
            .args(["status", "--admin-url", &admin])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("gw-test"), "{stdout}");
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("accepted / refused") && l.ends_with("5 / 0")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("spool depth") && l.contains(" 5 readings")),
        "{stdout}"
    );
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("uplink") && l.contains("retrying")),
        "{stdout}"
    );
}

#[test]
fn status_without_an_agent_says_so() {
    let out = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
        .args(["status", "--admin-url", "http://127.0.0.1:9"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the agent"));
}
