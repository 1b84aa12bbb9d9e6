//! Mosquitto as a peer under test: a config file rendered into a temporary
//! directory, `mosquitto -c FILE` as a child process on a free loopback
//! port, and, for the store-and-forward setups, an offline consumer that
//! makes the broker keep every message.
//!
//! A store-and-forward buffer built from Mosquitto is a persistent session
//! (clean session off) subscribed to the devices' topics at QoS 1 and
//! disconnected: Mosquitto then queues every matching publish for it. Its
//! limits are lifted (`max_queued_messages 0`) and QoS 0 publishes are
//! queued too (`queue_qos0_messages true`), since the gateway keeps those
//! as well. `sys_interval 1` lets the bench read the store's size from
//! `$SYS` right after a run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

use super::procs::{free_port, Proc};

/// Client id of the offline consumer, fixed so its session is found again.
const CONSUMER_ID: &str = "bench-store-consumer";
/// The devices' topics, as the consumer subscribes to them.
const DEVICES_FILTER: &str = "devices/#";
/// `$SYS` topic with the number of messages in Mosquitto's store.
const STORE_COUNT_TOPIC: &str = "$SYS/broker/store/messages/count";
/// `$SYS` topic with the number of PUBLISH packets received from clients.
const RECEIVED_TOPIC: &str = "$SYS/broker/publish/messages/received";
/// `$SYS` topic with the number of publishes dropped (queue limits of a slow subscriber).
const DROPPED_TOPIC: &str = "$SYS/broker/publish/messages/dropped";
/// How long a retained `$SYS` value may be superseded: `sys_interval` and a half.
const SYS_FRESH: Duration = Duration::from_millis(1500);
/// A persistent database of a million messages takes a few seconds to save
/// at shutdown.
const STOP_GRACE: Duration = Duration::from_secs(60);

/// How a Mosquitto instance under test keeps messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Keep {
    /// No persistence and no consumer: a broker that keeps nothing, the
    /// ceiling of what Mosquitto does on this machine.
    Nothing,
    /// `persistence true` with the default autosave (every 30 minutes):
    /// the queue lives in memory and reaches the disk at the next autosave
    /// or at shutdown.
    DefaultAutosave,
    /// `autosave_on_changes true` + `autosave_interval 1`: the database is
    /// saved after every change, i.e. at each pass of its event loop that
    /// took a message.
    EveryChange,
}

/// What the rendered `mosquitto.conf` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Config {
    pub port: u16,
    /// Where the persistence file goes (`mosquitto.db`).
    pub dir: PathBuf,
    pub keep: Keep,
    /// Mosquitto started as root drops to the user `mosquitto`, who cannot
    /// write into our temporary directory; `user root` keeps it as it is.
    pub as_root: bool,
}

impl Config {
    pub(super) fn render(&self) -> String {
        let mut lines = vec![
            "# written by firmware-sim bench; one instance under test".to_owned(),
            format!("listener {} 127.0.0.1", self.port),
            "allow_anonymous true".to_owned(),
            "log_dest stderr".to_owned(),
            "log_type error".to_owned(),
            "log_type warning".to_owned(),
            "connection_messages false".to_owned(),
            "sys_interval 1".to_owned(),
        ];
        if self.as_root {
            lines.push("user root".to_owned());
        }
        match self.keep {
            Keep::Nothing => lines.push("persistence false".to_owned()),
            Keep::DefaultAutosave | Keep::EveryChange => {
                lines.push("persistence true".to_owned());
                // Mosquitto joins the file name without a separator.
                lines.push(format!("persistence_location {}/", self.dir.display()));
                lines.push("max_queued_messages 0".to_owned());
                lines.push("queue_qos0_messages true".to_owned());
            }
        }
        if self.keep == Keep::EveryChange {
            lines.push("autosave_on_changes true".to_owned());
            lines.push("autosave_interval 1".to_owned());
        }
        let mut text = lines.join("\n");
        text.push('\n');
        text
    }
}

/// A running Mosquitto under test.
pub(super) struct Mosquitto {
    pub proc: Proc,
    pub addr: SocketAddr,
    dir: PathBuf,
}

impl Mosquitto {
    /// Writes the config into `dir`, starts Mosquitto on a free port, waits
    /// until it listens and, unless it is to keep nothing, parks the offline
    /// consumer.
    pub(super) async fn start(dir: &Path, keep: Keep) -> anyhow::Result<Mosquitto> {
        std::fs::create_dir_all(dir)?;
        let addr = free_port()?;
        let config = Config {
            port: addr.port(),
            dir: dir.to_owned(),
            keep,
            as_root: super::procs::running_as_root(),
        };
        let file = dir.join("mosquitto.conf");
        std::fs::write(&file, config.render())?;
        let mut command = Command::new("mosquitto");
        command.arg("-c").arg(&file);
        let mut proc = Proc::spawn("mosquitto", command, dir.join("mosquitto.log"))
            .context("is mosquitto installed? (apt-get install mosquitto)")?;
        proc.wait_listening(addr, Duration::from_secs(10)).await?;
        if keep != Keep::Nothing {
            park_consumer(addr).await?;
        }
        Ok(Mosquitto {
            proc,
            addr,
            dir: dir.to_owned(),
        })
    }

    /// Messages in Mosquitto's store, from `$SYS`. It counts `$SYS`'s own
    /// retained messages too, so compare two readings. Mosquitto publishes
    /// the count only when it changed, at most every `sys_interval` (1 s):
    /// the retained value comes at once, a newer one within a second if the
    /// retained one is stale.
    pub(super) async fn stored_messages(&self) -> anyhow::Result<u64> {
        self.sys_count(STORE_COUNT_TOPIC).await
    }

    /// PUBLISH packets Mosquitto has read from clients since it started,
    /// from `$SYS` as [`Mosquitto::stored_messages`] reads it.
    pub(super) async fn received_publishes(&self) -> anyhow::Result<u64> {
        self.sys_count(RECEIVED_TOPIC).await
    }

    /// Publishes Mosquitto has dropped since it started (a subscriber's
    /// inflight window and `max_queued_messages` were full), from `$SYS` as
    /// [`Mosquitto::stored_messages`] reads it.
    pub(super) async fn dropped_publishes(&self) -> anyhow::Result<u64> {
        self.sys_count(DROPPED_TOPIC).await
    }

    /// A counter under `$SYS`, fresh within a `sys_interval`.
    async fn sys_count(&self, topic: &str) -> anyhow::Result<u64> {
        let mut options = MqttOptions::new(
            format!("bench-sys-{:08x}", rand::random::<u32>()),
            self.addr.ip().to_string(),
            self.addr.port(),
        );
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(options, 10);
        client.subscribe(topic, QoS::AtMostOnce).await?;
        let mut latest = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            // After the retained value, wait one `sys_interval` and a half for a fresher one.
            let until = match latest {
                None => deadline,
                Some((_, at)) => deadline.min(at + SYS_FRESH),
            };
            let event = match tokio::time::timeout_at(until, events.poll()).await {
                Ok(event) => event?,
                Err(_) => break,
            };
            if let Event::Incoming(Packet::Publish(publish)) = event {
                let text = String::from_utf8_lossy(&publish.payload).into_owned();
                let count = text
                    .trim()
                    .parse::<u64>()
                    .with_context(|| format!("{topic}: {text:?}"))?;
                if !publish.retain {
                    latest = Some((count, tokio::time::Instant::now()));
                    break;
                }
                latest = Some((count, tokio::time::Instant::now()));
            }
        }
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
        latest
            .map(|(count, _)| count)
            .with_context(|| format!("no {topic} within 5 s"))
    }

    /// Stops Mosquitto (which saves its database if persistent) and returns
    /// the size of `mosquitto.db`, 0 without one.
    pub(super) fn stop(mut self) -> anyhow::Result<u64> {
        self.proc.terminate(STOP_GRACE)?;
        Ok(std::fs::metadata(self.dir.join("mosquitto.db")).map_or(0, |m| m.len()))
    }
}

/// Connects the consumer with a persistent session, subscribes it to the
/// devices' topics at QoS 1 and disconnects it cleanly: from then on
/// Mosquitto queues every device publish for it.
async fn park_consumer(addr: SocketAddr) -> anyhow::Result<()> {
    let mut options = MqttOptions::new(CONSUMER_ID, addr.ip().to_string(), addr.port());
    options
        .set_clean_session(false)
        .set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(options, 10);
    client.subscribe(DEVICES_FILTER, QoS::AtLeastOnce).await?;
    let parked = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match events.poll().await? {
                Event::Incoming(Packet::SubAck(ack)) => {
                    if ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure))
                    {
                        bail!("mosquitto refused the consumer's subscription");
                    }
                    client.try_disconnect()?;
                }
                Event::Outgoing(Outgoing::Disconnect) => return Ok(()),
                _ => {}
            }
        }
    })
    .await
    .context("the offline consumer did not get its SUBACK within 10 s")?;
    parked
}

/// `mosquitto -h`'s first line, e.g. "mosquitto version 2.0.11".
pub(super) fn version() -> Option<String> {
    let out = Command::new("mosquitto").arg("-h").output().ok()?;
    // It prints the help and exits non-zero; the version is on its first line.
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().next().map(|l| l.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(keep: Keep, as_root: bool) -> String {
        Config {
            port: 41883,
            dir: PathBuf::from("/tmp/bench-x"),
            keep,
            as_root,
        }
        .render()
    }

    #[test]
    fn a_broker_that_keeps_nothing_has_no_persistence() {
        let text = config(Keep::Nothing, false);
        assert!(text.contains("listener 41883 127.0.0.1\n"));
        assert!(text.contains("allow_anonymous true\n"));
        assert!(text.contains("persistence false\n"));
        assert!(!text.contains("persistence_location"));
        assert!(!text.contains("user root"));
    }

    #[test]
    fn store_and_forward_keeps_every_message_and_saves_as_asked() {
        let default = config(Keep::DefaultAutosave, true);
        for line in [
            "persistence true",
            "persistence_location /tmp/bench-x/",
            "max_queued_messages 0",
            "queue_qos0_messages true",
            "user root",
        ] {
            assert!(default.contains(&format!("{line}\n")), "{line}");
        }
        assert!(!default.contains("autosave"), "the default autosave stays");

        let every = config(Keep::EveryChange, false);
        assert!(every.contains("persistence true\n"));
        assert!(every.contains("autosave_on_changes true\nautosave_interval 1\n"));
        // Every directive once; Mosquitto refuses some repeated ones.
        let mut keys: Vec<&str> = every
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|k| *k != "log_type")
            .collect();
        let all = keys.len();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), all);
    }
}
