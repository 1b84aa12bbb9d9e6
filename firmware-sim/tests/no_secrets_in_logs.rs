//! Data minimisation: a full run of the real binaries with every secret in
//! play (device passwords, ingest/read/admin tokens, a spool key) and
//! readings carrying a known marker, logged at DEBUG, then every line the
//! processes wrote, both `/metrics` pages and both audit logs are searched
//! for the secrets and the marker. None may be there; the marker must have
//! reached the collector's API (so the search looked at a run that carried it).

mod util;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use telemetry::senml::{encode_pack, RawRecord, Value};
use util::procs::{binary, free_addr, http_get};

/// In a string value and in the value's digits.
const MARKER: &str = "PAYLOAD-MARKER-5e1f0c";
const MARKER_VALUE: f64 = 271_828.182_845;
const MARKER_DIGITS: &str = "271828.18";
/// Verbose on purpose: what DEBUG logs must not carry either.
const RUST_LOG: &str =
    "debug,rumqttd=info,hyper=info,h2=info,reqwest=info,sled=info,tokio_postgres=info";

/// Runs a command to completion; its stdout.
fn run(bin: &str, args: &[&str]) -> String {
    let out = Command::new(binary(bin))
        .args(args)
        .env_remove("EDGE_AGENT_CONFIG")
        .env_remove("CLOUD_SYNC_CONFIG")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{bin} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The last whitespace-separated word of the first line: a printed secret.
fn last_word(text: &str) -> String {
    text.lines()
        .next()
        .unwrap()
        .split_whitespace()
        .last()
        .unwrap()
        .to_string()
}

fn spawn(bin: &str, args: &[&str], log: &Path) -> Child {
    let file = std::fs::File::create(log).unwrap();
    Command::new(binary(bin))
        .args(args)
        .env("RUST_LOG", RUST_LOG)
        .env_remove("EDGE_AGENT_CONFIG")
        .env_remove("CLOUD_SYNC_CONFIG")
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap()
}

fn wait_healthy(addr: std::net::SocketAddr, child: &mut Child, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while http_get(addr, "/healthz").map(|(status, _)| status) != Some(200) {
        assert!(child.try_wait().unwrap().is_none(), "exited: {}", read(log));
        assert!(Instant::now() < deadline, "not healthy: {}", read(log));
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Connects as `device` with `password`; the CONNACK's code, after publishing
/// `payloads` at QoS 1 and waiting for their PUBACKs when it was accepted.
async fn publish(
    mqtt: std::net::SocketAddr,
    device: &str,
    password: &str,
    payloads: &[Vec<u8>],
) -> Option<rumqttc::ConnectReturnCode> {
    let mut options = MqttOptions::new(device, mqtt.ip().to_string(), mqtt.port());
    options.set_credentials(device, password);
    let (client, mut events) = AsyncClient::new(options, 16);
    let mut acked = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let event = tokio::time::timeout_at(deadline, events.poll())
            .await
            .ok()?;
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                if ack.code != rumqttc::ConnectReturnCode::Success {
                    return Some(ack.code);
                }
                for payload in payloads {
                    client
                        .publish(
                            format!("devices/{device}/telemetry"),
                            QoS::AtLeastOnce,
                            false,
                            payload.clone(),
                        )
                        .await
                        .unwrap();
                }
            }
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                acked += 1;
                if acked == payloads.len() {
                    let _ = client.disconnect().await;
                    return Some(rumqttc::ConnectReturnCode::Success);
                }
            }
            Ok(_) => {}
            Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return Some(code),
            Err(err) => panic!("{device}: {err}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_metrics_and_audit_logs_carry_no_secret_and_no_payload_value() {
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (tokens, devices, keys) = (p("tokens"), p("devices"), p("spool.keys"));
    let (collector_audit, agent_audit) = (p("collector-audit.log"), p("agent-audit.log"));

    // Secrets, made the way an operator makes them.
    let token_args = |role: &[&str]| {
        let mut args = vec![
            "tokens",
            "--token-file",
            &tokens,
            "--audit-file",
            &collector_audit,
            "add",
        ];
        args.extend_from_slice(role);
        last_word(&run("cloud-sync", &args))
    };
    let ingest = token_args(&["--gateway", "gw-min"]);
    let read_token = token_args(&["--read"]);
    let admin = token_args(&["--admin"]);
    let device_args = |device: &str| {
        last_word(&run(
            "edge-agent",
            &[
                "devices",
                "add",
                device,
                "--generate",
                "--devices-file",
                &devices,
                "--audit-file",
                &agent_audit,
            ],
        ))
    };
    let password = device_args("dev-secret");
    let other_password = device_args("dev-other");
    run(
        "edge-agent",
        &[
            "keys",
            "rotate",
            "--spool-key-file",
            &keys,
            "--audit-file",
            &agent_audit,
        ],
    );
    let key = std::fs::read_to_string(&keys)
        .unwrap()
        .lines()
        .last()
        .unwrap()
        .split(' ')
        .nth(2)
        .unwrap()
        .to_string();
    let secrets = [
        ("ingest token", ingest.clone()),
        ("read token", read_token.clone()),
        ("admin token", admin.clone()),
        ("device password", password.clone()),
        ("other device password", other_password.clone()),
        ("spool key", key),
    ];
    for (what, secret) in &secrets {
        assert!(secret.len() >= 16, "{what}: {secret:?}");
    }

    let collector = free_addr();
    let (mqtt, admin_api) = (free_addr(), free_addr());
    let collector_log = dir.path().join("collector.log");
    let agent_log = dir.path().join("agent.log");
    let mut collector_child = spawn(
        "cloud-sync",
        &[
            "serve",
            "--listen",
            &collector.to_string(),
            "--data-dir",
            &p("store"),
            "--token-file",
            &tokens,
            "--audit-file",
            &collector_audit,
        ],
        &collector_log,
    );
    wait_healthy(collector, &mut collector_child, &collector_log);
    let mut agent_child = spawn(
        "edge-agent",
        &[
            "run",
            "--gateway-id",
            "gw-min",
            "--spool-dir",
            &p("spool"),
            "--mqtt-listen",
            &mqtt.to_string(),
            "--admin-listen",
            &admin_api.to_string(),
            "--uplink-url",
            &format!("http://{collector}"),
            "--uplink-token",
            &ingest,
            "--devices-file",
            &devices,
            "--spool-key-file",
            &keys,
            "--audit-file",
            &agent_audit,
        ],
        &agent_log,
    );
    wait_healthy(admin_api, &mut agent_child, &agent_log);

    // Readings carrying the marker, a payload that is refused (dead
    // letter), a wrong password, and a second device that is then erased.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let record = |name: &str, value: Value, time: f64| RawRecord {
        base_time: Some(time),
        name: Some(name.into()),
        value: Some(value),
        ..RawRecord::default()
    };
    let payloads = vec![
        encode_pack(&[
            record("temperature", Value::Float(MARKER_VALUE), now - 2.0),
            record("note", Value::String(MARKER.into()), now - 2.0),
        ]),
        encode_pack(&[record("temperature", Value::Float(MARKER_VALUE), now - 1.0)]),
        // Not CBOR: refused by the gateway, kept as a dead letter.
        format!("{{\"text\": \"{MARKER}\"}}").into_bytes(),
    ];
    let accepted = publish(mqtt, "dev-secret", &password, &payloads).await;
    assert_eq!(accepted, Some(rumqttc::ConnectReturnCode::Success));
    let refused = publish(mqtt, "dev-secret", &other_password, &payloads[..1]).await;
    assert_eq!(
        refused,
        Some(rumqttc::ConnectReturnCode::BadUserNamePassword)
    );
    let other = publish(mqtt, "dev-other", &other_password, &payloads[..1]).await;
    assert_eq!(other, Some(rumqttc::ConnectReturnCode::Success));

    // The marker reached the collector: the run carried it end to end.
    let http = reqwest::Client::new();
    let query = format!("http://{collector}/v1/devices/dev-secret/points?name=temperature&from=0");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = http
            .get(&query)
            .bearer_auth(&read_token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if body.contains("271828.18") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the marker never reached the collector: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let erased = http
        .delete(format!("http://{collector}/v1/devices/dev-other"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(erased.status(), 200);
    let metrics = [
        http_get(collector, "/metrics").unwrap().1,
        http_get(admin_api, "/metrics").unwrap().1,
    ]
    .concat();
    assert!(
        metrics.contains("edge_mqtt_connections_refused_total"),
        "{metrics}"
    );
    stop(agent_child);
    stop(collector_child);

    let logs = [read(&collector_log), read(&agent_log)].concat();
    let audits = [
        read(Path::new(&collector_audit)),
        read(Path::new(&agent_audit)),
    ]
    .concat();
    // The logs are the real thing: DEBUG lines, the devices, the refusal.
    assert!(
        logs.contains("DEBUG") || logs.contains("\"level\":\"DEBUG\""),
        "{logs}"
    );
    assert!(logs.contains("dev-secret"), "{logs}");
    assert!(
        audits.contains("device.erase") && audits.contains("data.read"),
        "{audits}"
    );
    for (name, text) in [
        ("logs", &logs),
        ("metrics", &metrics),
        ("audit logs", &audits),
    ] {
        for (what, secret) in &secrets {
            assert!(
                !text.contains(secret.as_str()),
                "the {what} is in the {name}"
            );
        }
        for marker in [MARKER, MARKER_DIGITS] {
            assert!(
                !text.contains(marker),
                "the payload marker {marker} is in the {name}"
            );
        }
    }
}
