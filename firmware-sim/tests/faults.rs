//! Fault injection on the real binaries: `edge-agent` and `cloud-sync` run
//! as child processes on loopback, a simulated fleet publishes QoS 1
//! readings into the agent, and after each fault the verifier must find
//! every acknowledged reading in the collector exactly once.
//!
//! ```text
//! run_fleet (in-process) ──MQTT──▶ edge-agent (child) ──HTTP──▶ [fault proxy] ──▶ cloud-sync (child)
//!        │ ledger of PUBACKed readings                                                 │
//!        └──────────────────────── verify: 0 missing, 0 duplicates ◀── query API ──────┘
//! ```
//!
//! Faults: collector down for 60 s; collector answering 500, 429, 413, 400;
//! 20 × `kill -9` of the agent under load; 5 × `kill -9` of the collector;
//! a full disk under the spool (tmpfs, needs root); corrupt spool files.
//! The tests marked `#[ignore]` reproduce product bugs (listed in
//! `docs/guarantees.md`); run them with `--ignored` once those are fixed.
//! Loads are small (tens of devices, a few readings a second) and every
//! wait is bounded, so the file runs in about 80 s on two cores.
//! `cargo build --workspace --bins` (or `cargo test --workspace`) must have
//! built the two binaries first. `FAULTS_LOG_DIR=/some/dir` keeps every
//! child's whole output there; `FAULTS_RUST_LOG` overrides their log filter.

mod util;

use std::collections::{BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use edge_agent::metrics::SpoolMetrics;
use edge_agent::spool::{Spool, SpoolOptions};
use firmware_sim::{run_fleet, verify, verify_within, FleetConfig, Ledger, Summary, VerifyReport};
use rand::Rng;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use util::procs::{AgentProcess, CollectorProcess};

/// How long a drained spool may take after the fault is gone: the uplink's
/// backoff is capped at 30 s by default, plus the catch-up itself.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(90);

/// A QoS 1 fleet of `devices` devices at `rate` readings/s each, against `broker`.
fn fleet(broker: SocketAddr, prefix: &str, devices: usize, rate: f64) -> FleetConfig {
    FleetConfig {
        broker: broker.to_string(),
        devices,
        device_prefix: prefix.to_string(),
        rate,
        qos: 1,
        inflight: 10,
        progress: false,
        ..FleetConfig::default()
    }
}

/// Runs `config` until `stop` is cancelled (or its own limits), in the background.
fn spawn_fleet(config: FleetConfig, stop: &CancellationToken) -> JoinHandle<Summary> {
    let stop = stop.clone();
    tokio::spawn(async move { run_fleet(config, stop).await.expect("fleet run") })
}

/// Asserts that the collector holds every reading of `ledger` exactly once.
async fn assert_delivered(ledger: &Ledger, collector: &str, what: &str) -> VerifyReport {
    let report = verify(ledger, collector).await.expect("verify");
    let mut text = Vec::new();
    report.print(&mut text).expect("print report");
    assert!(report.is_ok(), "{what}: {}", String::from_utf8_lossy(&text));
    assert_eq!(report.expected, ledger.len() as u64);
    report
}

/// A reading's identity: device, name, time in whole milliseconds.
type Key = (String, String, i64);

fn key(device_id: &str, name: &str, time: f64) -> Key {
    (
        device_id.to_string(),
        name.to_string(),
        (time * 1000.0).round() as i64,
    )
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_60s_then_back() {
    let dir = tempfile::tempdir().unwrap();
    // The collector's port is chosen now and served only after the outage.
    let collector_addr = util::procs::free_addr();
    let mut agent = AgentProcess::start(
        "gw-outage",
        &dir.path().join("spool"),
        &format!("http://{collector_addr}"),
    );

    let stop = CancellationToken::new();
    let mut config = fleet(agent.spec.mqtt, "outage-", 20, 2.0);
    config.duration = Some(Duration::from_secs(60));
    let run = spawn_fleet(config, &stop);
    tokio::time::sleep(Duration::from_secs(5)).await;
    let health = agent
        .health()
        .await
        .expect("agent answers during the outage");
    assert!(
        health["spool"]["pending"].as_u64().unwrap() > 0,
        "readings are spooled while the collector is down: {health}"
    );
    assert!(
        health["uplink"]["last_error"].is_string(),
        "the uplink reports the outage: {health}"
    );
    let summary = run.await.unwrap();
    assert!(summary.acked > 1000, "acknowledged {}", summary.acked);
    let pending = agent.health().await.unwrap()["spool"]["pending"]
        .as_u64()
        .unwrap();
    assert!(
        pending >= summary.acked,
        "nothing left the spool while the collector was down: {pending} pending, {} acked",
        summary.acked
    );

    let collector = CollectorProcess::start_on(collector_addr, &dir.path().join("cloud"));
    let back = Instant::now();
    agent.wait_drained(DRAIN_TIMEOUT).await;
    eprintln!(
        "collector_down_60s_then_back: {} readings caught up {:?} after the collector returned",
        summary.acked,
        back.elapsed()
    );
    assert_delivered(&summary.ledger, &collector.url(), "after the outage").await;
    assert!(agent.stop().success(), "{}", agent.tail.text());
}

/// What the fault proxy answers instead of forwarding.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Status(u16),
    /// 429 with `Retry-After` in seconds.
    TooMany(u64),
}

#[derive(Clone)]
struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    /// Answers still to give to `POST /v1/batches`, first first.
    script: Arc<Mutex<VecDeque<Fault>>>,
    /// Status of every batch post, injected or forwarded, in order.
    seen: Arc<Mutex<Vec<u16>>>,
}

/// A reverse proxy on 127.0.0.1:0 in front of the collector that answers
/// the first batch posts from a script and forwards everything else.
struct FaultProxy {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<u16>>>,
    script: Arc<Mutex<VecDeque<Fault>>>,
    task: JoinHandle<()>,
}

impl FaultProxy {
    async fn start(upstream: String, script: Vec<Fault>) -> FaultProxy {
        let state = ProxyState {
            upstream,
            client: reqwest::Client::new(),
            script: Arc::new(Mutex::new(script.into())),
            seen: Arc::default(),
        };
        let (seen, script) = (state.seen.clone(), state.script.clone());
        let app = axum::Router::new().fallback(forward).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        FaultProxy {
            addr,
            seen,
            script,
            task,
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(State(state): State<ProxyState>, request: Request) -> Response {
    let is_batch =
        request.method() == axum::http::Method::POST && request.uri().path() == "/v1/batches";
    if is_batch {
        let fault = state.script.lock().unwrap().pop_front();
        if let Some(fault) = fault {
            let response = match fault {
                Fault::Status(code) => {
                    let status = StatusCode::from_u16(code).unwrap();
                    (
                        status,
                        [(header::CONTENT_TYPE, "application/json")],
                        r#"{"error":{"code":"injected","message":"fault injected by the test proxy"}}"#,
                    )
                        .into_response()
                }
                Fault::TooMany(secs) => (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, secs.to_string())],
                    "",
                )
                    .into_response(),
            };
            state.seen.lock().unwrap().push(response.status().as_u16());
            return response;
        }
    }
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let url = format!(
        "{}{}",
        state.upstream,
        parts.uri.path_and_query().map_or("/", |p| p.as_str())
    );
    let mut upstream = state.client.request(parts.method, url).body(body);
    for (name, value) in &parts.headers {
        if name != header::HOST && name != header::CONTENT_LENGTH && name != header::CONNECTION {
            upstream = upstream.header(name, value);
        }
    }
    let Ok(answer) = upstream.send().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = answer.status();
    if is_batch {
        state.seen.lock().unwrap().push(status.as_u16());
    }
    let content_type = answer.headers().get(header::CONTENT_TYPE).cloned();
    let bytes = answer.bytes().await.unwrap_or_default();
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    if let Some(content_type) = content_type {
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, content_type);
    }
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_answering_500_429_413_400_in_turn() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let collector = CollectorProcess::start(&dir.path().join("cloud"));
    let script = vec![
        Fault::Status(500),
        Fault::TooMany(1),
        Fault::Status(413),
        Fault::Status(400),
    ];
    let proxy = FaultProxy::start(collector.url(), script).await;
    let mut agent = AgentProcess::start("gw-proxy", &spool_dir, &format!("http://{}", proxy.addr));

    let stop = CancellationToken::new();
    let mut config = fleet(agent.spec.mqtt, "proxy-", 10, 5.0);
    config.duration = Some(Duration::from_secs(10));
    let summary = spawn_fleet(config, &stop).await.unwrap();
    assert!(summary.acked > 200, "acknowledged {}", summary.acked);
    agent.wait_drained(DRAIN_TIMEOUT).await;
    assert!(
        proxy.script.lock().unwrap().is_empty(),
        "every scripted fault was answered"
    );
    let seen = proxy.seen.lock().unwrap().clone();
    assert_eq!(&seen[..4], &[500, 429, 413, 400], "{seen:?}");
    assert!(seen[4..].iter().all(|&s| s == 200), "{seen:?}");

    // The spool is read in-process once the agent has stopped and let go of it.
    assert!(agent.stop().success(), "{}", agent.tail.text());
    let letters = tokio::task::spawn_blocking(move || {
        let spool = Spool::open(&spool_dir, SpoolOptions::default(), SpoolMetrics::default())
            .expect("reopen the stopped agent's spool");
        spool.dead_letters().expect("read the dead letters")
    })
    .await
    .unwrap();
    assert!(
        letters
            .iter()
            .any(|letter| letter.reason.starts_with("400")),
        "the batch refused with 400 is a dead letter: {:?}",
        letters.iter().map(|l| &l.reason).collect::<BTreeSet<_>>()
    );
    let mut dead: BTreeSet<Key> = BTreeSet::new();
    for letter in &letters {
        let records = telemetry::senml::decode_pack(&letter.envelope.payload, 0.0)
            .expect("dead-lettered payloads are the fleet's SenML");
        for record in records {
            dead.insert(key(&letter.envelope.device_id, &record.name, record.time));
        }
    }

    let report = verify(&summary.ledger, &collector.url()).await.unwrap();
    assert!(report.duplicates.is_empty(), "{:?}", report.duplicates);
    assert!(report.wrong_value.is_empty(), "{:?}", report.wrong_value);
    let missing: BTreeSet<Key> = report
        .missing
        .iter()
        .map(|k| key(&k.device_id, &k.name, k.time))
        .collect();
    let acked: BTreeSet<Key> = summary
        .ledger
        .iter()
        .map(|r| key(&r.device_id, &r.name, r.time))
        .collect();
    let dead_acked: BTreeSet<Key> = dead.intersection(&acked).cloned().collect();
    assert!(
        !dead_acked.is_empty(),
        "the refused batch held acknowledged readings"
    );
    assert_eq!(
        missing, dead_acked,
        "exactly the dead-lettered readings are missing from the collector"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_killed_20_times_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let collector = CollectorProcess::start(&dir.path().join("cloud"));
    let mut agent = AgentProcess::start("gw-kill", &dir.path().join("spool"), &collector.url());
    let spool_id = agent.spool_id.clone();

    let stop = CancellationToken::new();
    let run = spawn_fleet(fleet(agent.spec.mqtt, "kill-", 20, 5.0), &stop);
    tokio::time::sleep(Duration::from_secs(1)).await;
    for cycle in 0..20 {
        let pause = rand::rng().random_range(100..=600);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        agent.kill9();
        agent.restart();
        assert_eq!(
            agent.spool_id, spool_id,
            "cycle {cycle}: kill -9 must not cost the spool"
        );
    }
    // Let the devices reconnect and resend before the load stops.
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.cancel();
    let summary = run.await.unwrap();
    eprintln!(
        "agent_killed_20_times_under_load: sent {}, acknowledged {}, connection errors {}",
        summary.sent, summary.acked, summary.errors
    );
    assert!(summary.acked > 300, "acknowledged {}", summary.acked);
    agent.wait_drained(DRAIN_TIMEOUT).await;
    assert_delivered(
        &summary.ledger,
        &collector.url(),
        "after 20 kills of the agent",
    )
    .await;
    assert_no_quarantine(dir.path());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_killed_5_times_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let mut collector = CollectorProcess::start(&dir.path().join("cloud"));
    let agent = AgentProcess::start("gw-ckill", &dir.path().join("spool"), &collector.url());

    let stop = CancellationToken::new();
    let run = spawn_fleet(fleet(agent.spec.mqtt, "ckill-", 20, 5.0), &stop);
    for _ in 0..5 {
        let pause = rand::rng().random_range(500..=1500);
        tokio::time::sleep(Duration::from_millis(pause)).await;
        collector.kill9();
        let down = rand::rng().random_range(0..=500);
        tokio::time::sleep(Duration::from_millis(down)).await;
        collector.restart();
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let summary = run.await.unwrap();
    assert!(summary.acked > 500, "acknowledged {}", summary.acked);
    agent.wait_drained(DRAIN_TIMEOUT).await;
    let retries = agent.metric("edge_uplink_retries_total").await;
    eprintln!(
        "collector_killed_5_times_under_load: acknowledged {}, uplink retries {retries:?}",
        summary.acked
    );
    assert_delivered(
        &summary.ledger,
        &collector.url(),
        "after 5 kills of the collector",
    )
    .await;
}

/// A tmpfs of `size` mounted on `dir` for the guard's life.
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// `None` when mounting is not allowed (not root).
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(std::process::Stdio::null())
            .status();
        matches!(status, Ok(s) if s.success()).then(|| Tmpfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let umount = |lazy: bool| {
            let mut command = std::process::Command::new("umount");
            if lazy {
                command.arg("-l");
            }
            command.arg(&self.dir).status().is_ok_and(|s| s.success())
        };
        if !umount(false) && !umount(true) {
            eprintln!("could not unmount {}", self.dir.display());
        }
    }
}

/// Writes zeros to `path` until the file system refuses more.
fn fill(path: &Path) {
    use std::io::Write;
    let mut file = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    while file.write(&chunk).is_ok_and(|n| n > 0) {}
    let _ = file.sync_all();
}

/// Runs a short probe fleet and returns its summary.
async fn probe(broker: SocketAddr, prefix: &str, duration: Duration) -> Summary {
    let mut config = fleet(broker, prefix, 2, 5.0);
    config.duration = Some(duration);
    run_fleet(config, CancellationToken::new()).await.unwrap()
}

/// Waits until the agent refuses a group commit for lack of space, by its
/// free-space floor or by a failed write; panics after 20 s.
async fn await_disk_refusals(agent: &AgentProcess) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let refusals = || async {
        let floor = agent.metric("edge_spool_rejected_disk_full_total").await;
        let failed = agent.metric("edge_spool_write_errors_total").await;
        floor.unwrap_or(0.0) + failed.unwrap_or(0.0)
    };
    while refusals().await == 0.0 {
        assert!(
            Instant::now() < deadline,
            "no spool write failed on a full disk; agent output:\n{}",
            agent.tail.text()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Mounts a tmpfs of `size` at `<dir>/disk`, or says why the test is skipped.
fn full_disk_mount(dir: &Path, size: &str) -> Option<(Tmpfs, PathBuf)> {
    let mount_point = dir.join("disk");
    match Tmpfs::mount(&mount_point, size) {
        Some(tmpfs) => Some((tmpfs, mount_point)),
        None => {
            println!("skipped: full-disk test needs root to mount a tmpfs");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_withholds_pubacks_and_recovers_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    // Bound before the processes, so dropped (unmounted) after they are killed.
    let Some((_tmpfs, mount_point)) = full_disk_mount(dir.path(), "16m") else {
        return;
    };
    let collector = CollectorProcess::start(&dir.path().join("cloud"));
    let agent = AgentProcess::start("gw-full", &mount_point.join("spool"), &collector.url());

    let stop = CancellationToken::new();
    let run = spawn_fleet(fleet(agent.spec.mqtt, "full-", 10, 5.0), &stop);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = probe(agent.spec.mqtt, "probe-a-", Duration::from_secs(2)).await;
    assert!(
        before.acked > 0,
        "the agent acknowledges before the disk is full"
    );

    let filler = mount_point.join("filler");
    fill(&filler);
    await_disk_refusals(&agent).await;

    // Full: the agent stays up, acknowledges nothing new, and keeps
    // uploading what it had spooled.
    let during = probe(agent.spec.mqtt, "probe-b-", Duration::from_secs(3)).await;
    assert!(during.sent > 0, "the probe could publish");
    assert_eq!(
        during.acked, 0,
        "no PUBACK for a reading that could not be written"
    );
    let health = agent
        .health()
        .await
        .expect("the agent answers /healthz on a full disk");
    assert_eq!(health["status"], "ok", "{health}");
    // What was spooled before the disk filled still reaches the collector.
    let report = verify_within(
        &before.ledger,
        &collector.url(),
        Duration::from_secs(30),
        &CancellationToken::new(),
    )
    .await
    .unwrap();
    assert!(
        report.is_ok(),
        "the uplink keeps draining on a full disk: {} of {} missing; agent output:\n{}",
        report.missing.len(),
        report.expected,
        agent.tail.text()
    );

    std::fs::remove_file(&filler).unwrap();
    let resumed = probe(agent.spec.mqtt, "probe-c-", Duration::from_secs(10)).await;
    assert!(
        resumed.acked > 0,
        "ingest resumes by itself once there is room again; agent output:\n{}",
        agent.tail.text()
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let summary = run.await.unwrap();
    agent.wait_drained(DRAIN_TIMEOUT).await;
    let mut ledger = summary.ledger;
    for probe in [before, during, resumed] {
        ledger.extend(probe.ledger.iter().cloned());
    }
    assert_delivered(&ledger, &collector.url(), "after the full disk").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_restarted_on_a_full_disk_loses_no_acknowledged_reading() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_tmpfs, mount_point)) = full_disk_mount(dir.path(), "16m") else {
        return;
    };
    let collector = CollectorProcess::start(&dir.path().join("cloud"));
    let mut agent = AgentProcess::start("gw-full2", &mount_point.join("spool"), &collector.url());
    let spool_id = agent.spool_id.clone();

    let stop = CancellationToken::new();
    let run = spawn_fleet(fleet(agent.spec.mqtt, "full2-", 10, 5.0), &stop);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let filler = mount_point.join("filler");
    fill(&filler);
    await_disk_refusals(&agent).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    // An operator restarts the stuck gateway, then makes room. The stop may
    // report that it could not flush; it must not hang.
    agent.stop();
    std::fs::remove_file(&filler).unwrap();
    agent.restart();
    assert_eq!(agent.spool_id, spool_id, "the spool survives a full disk");

    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    let summary = run.await.unwrap();
    agent.wait_drained(DRAIN_TIMEOUT).await;
    assert_delivered(
        &summary.ledger,
        &collector.url(),
        "after a restart on a full disk",
    )
    .await;
}

/// The common way a gateway's disk fills: a long outage, flat-out devices,
/// and a spool that outgrows its filesystem before `max_bytes`. The free-space
/// floor stops it first: devices get (almost) no PUBACK and keep their readings,
/// sled never meets ENOSPC, nothing is quarantined, and once the collector
/// is back the backlog drains and ingest resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_outgrowing_its_disk_in_an_outage_stops_cleanly_and_drains() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_tmpfs, mount_point)) = full_disk_mount(dir.path(), "24m") else {
        return;
    };
    let collector_addr = util::procs::free_addr();
    let spool_dir = mount_point.join("spool");
    let agent = AgentProcess::start(
        "gw-outgrown",
        &spool_dir,
        &format!("http://{collector_addr}"),
    );
    let spool_id = agent.spool_id.clone();

    let stop = CancellationToken::new();
    let mut config = fleet(agent.spec.mqtt, "outgrown-", 10, 0.0);
    config.inflight = 50;
    let run = spawn_fleet(config, &stop);
    let deadline = Instant::now() + Duration::from_secs(60);
    while agent
        .metric("edge_spool_rejected_disk_full_total")
        .await
        .unwrap_or(0.0)
        == 0.0
    {
        assert!(
            Instant::now() < deadline,
            "the spool never reached the free-space floor; agent output:\n{}",
            agent.tail.text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // At the floor, publishes keep being refused (sled's own compaction may
    // free a little room now and then, so a few can still get through).
    let refused = agent.metric("edge_spool_rejected_disk_full_total").await;
    let during = probe(agent.spec.mqtt, "outgrown-probe-", Duration::from_secs(2)).await;
    assert!(
        agent.metric("edge_spool_rejected_disk_full_total").await > refused,
        "still refused at the floor; agent output:\n{}",
        agent.tail.text()
    );
    assert_eq!(
        agent.metric("edge_spool_write_errors_total").await,
        Some(0.0),
        "sled never ran out of space; agent output:\n{}",
        agent.tail.text()
    );

    let collector = CollectorProcess::start_on(collector_addr, &dir.path().join("cloud"));
    // Ingest resumes by itself while the backlog drains.
    let mut resumed = probe(agent.spec.mqtt, "outgrown-after0-", Duration::from_secs(5)).await;
    for attempt in 1..=6 {
        if resumed.acked > 0 {
            break;
        }
        let prefix = format!("outgrown-after{attempt}-");
        resumed = probe(agent.spec.mqtt, &prefix, Duration::from_secs(5)).await;
    }
    assert!(
        resumed.acked > 0,
        "ingest resumes once the backlog drains; agent output:\n{}",
        agent.tail.text()
    );
    stop.cancel();
    let summary = run.await.unwrap();
    agent.wait_drained(DRAIN_TIMEOUT).await;
    assert_eq!(agent.spool_id, spool_id);
    assert_no_quarantine(&mount_point);
    let mut ledger = summary.ledger;
    ledger.extend(during.ledger.iter().cloned());
    ledger.extend(resumed.ledger.iter().cloned());
    assert_delivered(
        &ledger,
        &collector.url(),
        "after the spool outgrew its disk",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_under_heavy_load_recovers_and_keeps_the_spool() {
    let dir = tempfile::tempdir().unwrap();
    let Some((_tmpfs, mount_point)) = full_disk_mount(dir.path(), "64m") else {
        return;
    };
    let collector = CollectorProcess::start(&dir.path().join("cloud"));
    let mut agent = AgentProcess::start("gw-heavy", &mount_point.join("spool"), &collector.url());
    let spool_id = agent.spool_id.clone();

    // Flat out: group commits of hundreds of readings, each appended to a
    // segment and synced; another process then takes the last byte.
    let stop = CancellationToken::new();
    let mut config = fleet(agent.spec.mqtt, "heavy-", 10, 0.0);
    config.inflight = 100;
    let run = spawn_fleet(config, &stop);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let filler = mount_point.join("filler");
    fill(&filler);
    await_disk_refusals(&agent).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    std::fs::remove_file(&filler).unwrap();

    let mut config = fleet(agent.spec.mqtt, "heavy-probe-", 2, 5.0);
    config.readings_per_device = Some(5);
    config.duration = Some(Duration::from_secs(15));
    let resumed = run_fleet(config, CancellationToken::new()).await.unwrap();
    stop.cancel();
    let summary = run.await.unwrap();
    assert_eq!(
        resumed.acked,
        10,
        "ingest resumes by itself once there is room again; agent output:\n{}",
        agent.tail.text()
    );
    agent.stop();
    agent.restart();
    assert_eq!(agent.spool_id, spool_id, "the spool survives a full disk");
    agent.wait_drained(DRAIN_TIMEOUT).await;
    let mut ledger = summary.ledger;
    ledger.extend(resumed.ledger.iter().cloned());
    assert_delivered(&ledger, &collector.url(), "after a full disk under load").await;
}

/// Overwrites `len` bytes of `path` at `at` (a fraction of its length) with garbage.
fn scribble(path: &Path, at: f64, len: usize) {
    use std::io::{Seek, SeekFrom, Write};
    let size = std::fs::metadata(path).unwrap().len();
    let mut file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start((size as f64 * at) as u64))
        .unwrap();
    let garbage: Vec<u8> = (0..len).map(|i| (i * 7 + 13) as u8 ^ 0xA5).collect();
    file.write_all(&garbage[..len.min(size as usize)]).unwrap();
    file.sync_all().unwrap();
}

/// The `<spool>.quarantine-*` siblings of `spool_dir`.
fn quarantines(spool_dir: &Path) -> Vec<PathBuf> {
    let name = spool_dir.file_name().unwrap().to_string_lossy().to_string();
    let mut found: Vec<PathBuf> = std::fs::read_dir(spool_dir.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy()
                    .starts_with(&format!("{name}.quarantine-"))
            })
        })
        .collect();
    found.sort();
    found
}

fn assert_no_quarantine(dir: &Path) {
    let spool = dir.join("spool");
    assert!(quarantines(&spool).is_empty(), "{:?}", quarantines(&spool));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_spool_is_quarantined_and_a_fresh_one_starts() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    let collector = CollectorProcess::start(&dir.path().join("cloud"));
    let mut agent = AgentProcess::start("gw-corrupt", &spool_dir, &collector.url());
    let old_id = agent.spool_id.clone();

    let mut config = fleet(agent.spec.mqtt, "corrupt-a-", 10, 10.0);
    config.readings_per_device = Some(20);
    let first = run_fleet(config, CancellationToken::new()).await.unwrap();
    agent.wait_drained(DRAIN_TIMEOUT).await;
    assert!(agent.stop().success(), "{}", agent.tail.text());

    // sled checks its `conf` file with a CRC: a damaged one must not be
    // mistaken for an empty spool, nor stop the gateway.
    scribble(&spool_dir.join("conf"), 0.5, 8);
    let restarted_at = unix_secs();
    agent.restart();
    let quarantined = quarantines(&spool_dir);
    assert_eq!(
        quarantined.len(),
        1,
        "one quarantine folder: {quarantined:?}"
    );
    let name = quarantined[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .to_string();
    let secs: u64 = name
        .rsplit('-')
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{name} ends in unix seconds"));
    assert!(
        (restarted_at..=unix_secs()).contains(&secs),
        "{name} is stamped with the time of the restart"
    );
    assert!(
        quarantined[0].join("db").is_file() && quarantined[0].join("conf").is_file(),
        "the old files were moved aside whole"
    );
    assert_ne!(agent.spool_id, old_id, "a fresh spool has a new spool_id");
    let health = agent.health().await.expect("the agent serves /healthz");
    assert_eq!(health["spool_id"], agent.spool_id.as_str());

    let mut config = fleet(agent.spec.mqtt, "corrupt-b-", 10, 10.0);
    config.readings_per_device = Some(20);
    let second = run_fleet(config, CancellationToken::new()).await.unwrap();
    assert_eq!(second.acked, 200, "the fresh spool accepts readings");
    agent.wait_drained(DRAIN_TIMEOUT).await;
    assert_delivered(&second.ledger, &collector.url(), "through the fresh spool").await;
    assert_delivered(&first.ledger, &collector.url(), "before the corruption").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_spool_log_is_quarantined_not_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let spool_dir = dir.path().join("spool");
    // Nothing listens at the uplink: every reading stays spooled.
    let dead_uplink = format!("http://{}", util::procs::free_addr());
    let mut agent = AgentProcess::start("gw-damaged", &spool_dir, &dead_uplink);
    let old_id = agent.spool_id.clone();
    let mut config = fleet(agent.spec.mqtt, "damaged-", 10, 20.0);
    config.readings_per_device = Some(50);
    let summary = run_fleet(config, CancellationToken::new()).await.unwrap();
    assert_eq!(summary.acked, 500);
    assert!(agent.stop().success(), "{}", agent.tail.text());

    // A few bytes of the log's middle go bad, as a failing flash cell would.
    scribble(&spool_dir.join("db"), 0.5, 64);
    agent.restart();
    let health = agent.health().await.expect("the agent serves /healthz");
    let pending = health["spool"]["pending"].as_u64().unwrap();
    // Either the damage is noticed (quarantine, new spool id) or nothing
    // that was acknowledged is gone.
    let noticed = agent.spool_id != old_id && quarantines(&spool_dir).len() == 1;
    assert!(
        noticed || pending == summary.acked,
        "the damaged spool reopened as {} with {pending} of {} acknowledged readings and no quarantine",
        agent.spool_id,
        summary.acked
    );
}
