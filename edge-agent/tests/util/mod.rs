//! Shared helpers for edge-agent integration tests: a child-process agent and
//! a simple MQTT publisher that knows which publishes were acknowledged.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rumqttc::{AsyncClient, Event, EventLoop, MqttOptions, Packet, QoS};
use telemetry::senml::{encode_pack, RawRecord, Value};

/// An `edge-agent run` child process and the addresses it reported.
pub struct AgentProcess {
    pub child: Child,
    pub mqtt: SocketAddr,
    pub admin: SocketAddr,
}

impl AgentProcess {
    /// Starts the real binary on port 0 with its spool in `spool_dir`.
    pub fn spawn(spool_dir: &Path, uplink_url: &str) -> AgentProcess {
        AgentProcess::spawn_with(spool_dir, uplink_url, &[])
    }

    /// Like [`AgentProcess::spawn`], with more arguments for `run`.
    pub fn spawn_with(spool_dir: &Path, uplink_url: &str, extra: &[&str]) -> AgentProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_edge-agent"))
            .args(["run", "--log-format", "json", "--gateway-id", "gw-test"])
            .args(extra)
            .arg("--spool-dir")
            .arg(spool_dir)
            .args([
                "--mqtt-listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
            ])
            .args(["--uplink-url", uplink_url, "--uplink-token", "test-token"])
            .env("RUST_LOG", "info,rumqttd=off")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn edge-agent");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let (mqtt, admin) = loop {
            let line = lines
                .next()
                .expect("agent exited before it started")
                .expect("read agent output");
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let fields = &event["fields"];
            if fields["message"] == "edge-agent started" {
                let mqtt = fields["mqtt"].as_str().unwrap().parse().unwrap();
                let admin = fields["admin"].as_str().unwrap().parse().unwrap();
                break (mqtt, admin);
            }
        };
        // Keep draining the agent's output so it never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        AgentProcess { child, mqtt, admin }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A SenML pack with one temperature reading at `time` seconds.
pub fn reading(time: f64, value: f64) -> Vec<u8> {
    encode_pack(&[RawRecord {
        base_time: Some(time),
        name: Some("temperature".into()),
        unit: Some("Cel".into()),
        value: Some(Value::Float(value)),
        ..RawRecord::default()
    }])
}

/// Connects one MQTT client as `device_id`.
pub async fn connect(addr: SocketAddr, device_id: &str) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(device_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    options.set_max_packet_size(1 << 20, 1 << 20);
    AsyncClient::new(options, 16)
}

/// Publishes `payloads` one at a time at QoS 1 (inflight 1), calling
/// `on_ack` with the index of each acknowledged one. Stops at the first
/// connection error and returns how many were acknowledged.
pub async fn publish_each_acked(
    addr: SocketAddr,
    device_id: &str,
    payloads: Vec<Vec<u8>>,
    mut on_ack: impl FnMut(usize),
) -> usize {
    let (client, mut events) = connect(addr, device_id).await;
    let topic = format!("devices/{device_id}/telemetry");
    for (index, payload) in payloads.into_iter().enumerate() {
        if client
            .publish(&topic, QoS::AtLeastOnce, false, payload)
            .await
            .is_err()
        {
            return index;
        }
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => {
                    on_ack(index);
                    break;
                }
                Ok(_) => {}
                Err(_) => return index,
            }
        }
    }
    let _ = client.disconnect().await;
    usize::MAX
}
