//! The two pipelines `bench forward` compares, each started from nothing in
//! its own directory, with the receiving end that can be stopped for the
//! outage and started again on the same port:
//!
//! ```text
//!  fleet ──MQTT──▶ edge-agent (spool) ──HTTP batches──▶ cloud-sync   (release binaries; outage: SIGTERM, restart on the same port and data dir)
//!  fleet ──MQTT──▶ Mosquitto ──▶ Node-RED mqtt in ──▶ http request ──POST per message──▶ sink   (outage: port and connections closed, re-bound)
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rumqttc::{AsyncClient, MqttOptions, QoS};
use serde::Serialize;

use super::node_red::NodeRed;
use super::sink::{Sink, PROBE};
use crate::bench::mosquitto::{Keep, Mosquitto};
use crate::bench::procs::{
    free_port, sibling_binary, spawn_agent, spawn_collector, wait_ready, Proc,
};

/// A pipeline under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum System {
    /// edge-agent spooling to sled and uploading batches to cloud-sync.
    EdgeAgent,
    /// Mosquitto, then a Node-RED flow `mqtt in` → `http request`, then the bench's sink.
    NodeRed,
}

impl System {
    pub const ALL: [System; 2] = [System::EdgeAgent, System::NodeRed];

    /// How the report names it.
    pub fn label(self) -> &'static str {
        match self {
            System::EdgeAgent => "edge-agent → cloud-sync",
            System::NodeRed => "Mosquitto → Node-RED → sink",
        }
    }
}

/// The agent's retry ceiling here: the default (30 s) would leave the
/// agent asleep well after the collector is back and stretch the bench; it
/// changes when ours delivers, not what it delivers.
const AGENT_BACKOFF_MAX: &str = "2s";
/// Topic of the readiness probe; under `devices/` so the flow takes it.
const PROBE_TOPIC: &str = "devices/bench-probe/telemetry";
/// Node-RED loads its palette for a few seconds on a busy machine.
const READY_LIMIT: Duration = Duration::from_secs(60);
/// Time a stopped child gets to exit after SIGTERM.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// A running pipeline.
pub(super) enum Pipeline {
    EdgeAgent(Ours),
    NodeRed(Theirs),
}

/// edge-agent and the real cloud-sync it uploads to.
pub(super) struct Ours {
    agent: Proc,
    mqtt: SocketAddr,
    collector: Collector,
}

/// The real cloud-sync, which can be stopped and started again with the
/// same port, token and data.
struct Collector {
    /// `None` during the outage.
    proc: Option<Proc>,
    bin: PathBuf,
    addr: SocketAddr,
    /// Kept across the restart: what was stored before the outage stays.
    data_dir: PathBuf,
    token: String,
    dir: PathBuf,
    /// How often it has been started (each start logs to its own folder).
    starts: u32,
    http: reqwest::Client,
}

/// Mosquitto, Node-RED and the counting sink.
pub(super) struct Theirs {
    // Dropped first: Node-RED stops before its broker and its sink go.
    node_red: NodeRed,
    mosquitto: Mosquitto,
    sink: Sink,
}

/// What a pipeline says about itself once the run is over.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Extras {
    /// Requests the sink answered, resends included (Node-RED only).
    pub sink_requests: Option<u64>,
    /// Requests Node-RED logged as failed (Node-RED only).
    pub failed_requests: Option<u64>,
    /// Publishes Mosquitto dropped, from `$SYS/broker/publish/messages/dropped`
    /// (a full queue for a slow subscriber; Node-RED only).
    pub broker_dropped: Option<u64>,
}

impl Pipeline {
    /// Starts `system` with its data under `dir`.
    pub(super) async fn start(
        system: System,
        dir: &Path,
        node_red_dir: Option<&Path>,
    ) -> anyhow::Result<Pipeline> {
        match system {
            System::EdgeAgent => Ok(Pipeline::EdgeAgent(Ours::start(dir).await?)),
            System::NodeRed => {
                let node_red_dir = node_red_dir.context("the Node-RED folder")?;
                Ok(Pipeline::NodeRed(Theirs::start(dir, node_red_dir).await?))
            }
        }
    }

    /// Where the devices publish.
    pub(super) fn broker(&self) -> SocketAddr {
        match self {
            Pipeline::EdgeAgent(ours) => ours.mqtt,
            Pipeline::NodeRed(theirs) => theirs.mosquitto.addr,
        }
    }

    /// The process that forwards: edge-agent, or Node-RED's `node`.
    pub(super) fn forwarder_pid(&self) -> u32 {
        match self {
            Pipeline::EdgeAgent(ours) => ours.agent.pid(),
            Pipeline::NodeRed(theirs) => theirs.node_red.proc.pid(),
        }
    }

    /// A separate broker process, if the pipeline has one (ours is inside edge-agent).
    pub(super) fn broker_pid(&self) -> Option<u32> {
        match self {
            Pipeline::EdgeAgent(_) => None,
            Pipeline::NodeRed(theirs) => Some(theirs.mosquitto.proc.pid()),
        }
    }

    /// Distinct readings delivered so far; `None` when the receiving end
    /// cannot say right now (our collector during the outage).
    pub(super) async fn delivered(&self) -> Option<u64> {
        match self {
            Pipeline::EdgeAgent(ours) => ours.collector.stored_points().await.ok(),
            Pipeline::NodeRed(theirs) => Some(theirs.sink.unique()),
        }
    }

    /// The receiving end goes away: port closed, connections reset.
    pub(super) async fn take_down(&mut self) -> anyhow::Result<()> {
        match self {
            Pipeline::EdgeAgent(ours) => ours.collector.stop(),
            Pipeline::NodeRed(theirs) => theirs.sink.stop().await,
        }
    }

    /// The receiving end comes back on the same port (and, for ours, the same data).
    pub(super) async fn bring_back(&mut self) -> anyhow::Result<()> {
        match self {
            Pipeline::EdgeAgent(ours) => ours.collector.start().await,
            Pipeline::NodeRed(theirs) => theirs.sink.restart().await,
        }
    }

    /// Whether a child process died on its own.
    pub(super) fn check_alive(&mut self) -> anyhow::Result<()> {
        let dead = match self {
            Pipeline::EdgeAgent(ours) => {
                if ours.agent.exited() {
                    Some(ours.agent.log_tail())
                } else {
                    match &mut ours.collector.proc {
                        Some(collector) => collector.exited().then(|| collector.log_tail()),
                        None => None,
                    }
                }
            }
            Pipeline::NodeRed(theirs) => {
                if theirs.node_red.proc.exited() {
                    Some(theirs.node_red.proc.log_tail())
                } else if theirs.mosquitto.proc.exited() {
                    Some(theirs.mosquitto.proc.log_tail())
                } else {
                    None
                }
            }
        };
        match dead {
            Some(tail) => bail!("a process of the pipeline exited during the run; {tail}"),
            None => Ok(()),
        }
    }

    /// Stops everything and returns what only the pipeline knows.
    pub(super) async fn finish(self) -> anyhow::Result<Extras> {
        match self {
            Pipeline::EdgeAgent(mut ours) => {
                ours.agent.terminate(STOP_GRACE)?;
                ours.collector.stop()?;
                Ok(Extras::default())
            }
            Pipeline::NodeRed(theirs) => {
                let Theirs {
                    mut node_red,
                    mosquitto,
                    mut sink,
                } = theirs;
                let broker_dropped = mosquitto.dropped_publishes().await.ok();
                let failed_requests = Some(node_red.failed_requests());
                // Its exit status says nothing about the forwarding measured.
                if let Err(err) = node_red.proc.terminate(STOP_GRACE) {
                    eprintln!("  (Node-RED did not stop cleanly: {err:#})");
                }
                mosquitto.stop()?;
                sink.stop().await?;
                Ok(Extras {
                    sink_requests: Some(sink.requests()),
                    failed_requests,
                    broker_dropped,
                })
            }
        }
    }
}

impl Ours {
    async fn start(dir: &Path) -> anyhow::Result<Ours> {
        let agent_bin = sibling_binary("edge-agent")?;
        let mut collector = Collector {
            proc: None,
            bin: sibling_binary("cloud-sync")?,
            addr: free_port()?,
            data_dir: dir.join("cloud"),
            token: format!("{:032x}", rand::random::<u128>()),
            dir: dir.to_owned(),
            starts: 0,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
        };
        // The collector first, so the agent's first upload finds it.
        collector.start().await?;
        let config = dir.join("edge-agent.toml");
        std::fs::write(
            &config,
            format!("[uplink]\nbackoff_max = \"{AGENT_BACKOFF_MAX}\"\n"),
        )?;
        let (agent, _admin, mqtt) =
            spawn_agent(&agent_bin, dir, &config, collector.addr, &collector.token).await?;
        Ok(Ours {
            agent,
            mqtt,
            collector,
        })
    }
}

impl Collector {
    async fn start(&mut self) -> anyhow::Result<()> {
        if self.proc.is_some() {
            return Ok(());
        }
        self.starts += 1;
        // spawn_collector truncates its log; each start gets its own folder.
        let log_dir = self.dir.join(format!("collector-{}", self.starts));
        std::fs::create_dir_all(&log_dir)?;
        let mut proc = spawn_collector(
            &self.bin,
            &self.data_dir,
            None,
            self.addr,
            &self.token,
            &log_dir,
        )?;
        wait_ready(&self.http, &mut proc, self.addr).await?;
        self.proc = Some(proc);
        Ok(())
    }

    /// SIGTERM, as an operator or a crashed host takes it away; the port
    /// is closed once it has exited.
    fn stop(&mut self) -> anyhow::Result<()> {
        match self.proc.take() {
            Some(mut proc) => proc.terminate(STOP_GRACE),
            None => Ok(()),
        }
    }

    /// Points the collector holds, all devices: each reading is one point,
    /// and the store keeps a resent reading once.
    async fn stored_points(&self) -> anyhow::Result<u64> {
        let url = format!("http://{}/v1/devices", self.addr);
        let body = self
            .http
            .get(&url)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        let json: serde_json::Value =
            serde_json::from_str(&body).with_context(|| format!("GET {url}: not JSON"))?;
        let devices = json["devices"]
            .as_array()
            .with_context(|| format!("GET {url}: no devices array"))?;
        Ok(devices.iter().filter_map(|d| d["points"].as_u64()).sum())
    }
}

impl Theirs {
    async fn start(dir: &Path, node_red_dir: &Path) -> anyhow::Result<Theirs> {
        let sink = Sink::start().await?;
        // Mosquitto's defaults, as a small deployment runs it; Node-RED's
        // persistent session is its only consumer.
        let mosquitto = Mosquitto::start(&dir.join("mosquitto"), Keep::Nothing).await?;
        let node_red = NodeRed::start(node_red_dir, dir, mosquitto.addr, &sink.url())?;
        let mut theirs = Theirs {
            node_red,
            mosquitto,
            sink,
        };
        theirs.wait_ready().await?;
        Ok(theirs)
    }

    /// Publishes a probe every half second until one has gone all the way
    /// through Node-RED to the sink: then the flow is subscribed and posting.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let addr = self.mosquitto.addr;
        let mut options = MqttOptions::new(
            format!("bench-forward-probe-{:08x}", rand::random::<u32>()),
            addr.ip().to_string(),
            addr.port(),
        );
        options.set_keep_alive(Duration::from_secs(30));
        let (client, mut events) = AsyncClient::new(options, 10);
        let deadline = Instant::now() + READY_LIMIT;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let ready = loop {
            tokio::select! {
                event = events.poll() => {
                    if event.is_err() {
                        // rumqttc reconnects on the next poll; do not spin.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
                _ = tick.tick() => {
                    if self.sink.probes() > 0 {
                        break Ok(());
                    }
                    if self.node_red.proc.exited() {
                        break Err(anyhow::anyhow!(
                            "Node-RED exited at start; {}",
                            self.node_red.proc.log_tail()
                        ));
                    }
                    if Instant::now() > deadline {
                        break Err(anyhow::anyhow!(
                            "no probe reached the sink through Node-RED within {READY_LIMIT:?}; {}",
                            self.node_red.proc.log_tail()
                        ));
                    }
                    let _ = client.try_publish(PROBE_TOPIC, QoS::AtLeastOnce, false, PROBE);
                }
            }
        };
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
        ready
    }
}
