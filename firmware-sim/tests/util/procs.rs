//! The real `edge-agent` and `cloud-sync` binaries as child processes, for
//! tests that kill, stop and restart them: spawn on loopback, wait until
//! they serve, `kill -9`, SIGTERM, restart on the same ports and data.
//!
//! ```text
//! agent:     edge-agent run --log-format json ... → stdout line "edge-agent started"
//!            (fields.spool_id); GET /healthz → spool.pending
//! collector: cloud-sync --log-format json serve ... → stderr line "collector listening"
//!            (fields.addr); GET /healthz → 200
//! ```
//!
//! Every child's output is drained by a thread for its whole life (a full
//! pipe would block its logging); its last lines and distinct ERROR lines
//! are kept so that a failing test can show what the process said. For
//! debugging, `FAULTS_LOG_DIR` keeps whole outputs and `FAULTS_RUST_LOG`
//! sets the children's `RUST_LOG`.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Bearer token every collector accepts and every agent presents.
pub const TOKEN: &str = "fault-injection-token";
/// Longest a process may take to start serving; past it the start failed
/// (a wedged start is a bug, not something to wait out).
pub const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest a SIGTERM'd process may take to exit.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Log lines kept per process for failure messages.
const TAIL_LINES: usize = 40;

/// The path of a workspace binary, next to the test executable's `deps/`.
///
/// Integration tests only get `CARGO_BIN_EXE_*` for their own package, but
/// `cargo test --workspace` builds every package's binaries into the same
/// target directory.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable's path");
    let deps = exe.parent().expect("the test executable's directory");
    let dir = if deps.ends_with("deps") {
        deps.parent().expect("the target profile directory")
    } else {
        deps
    };
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: run `cargo build --workspace --bins` (or `cargo test --workspace`) first",
        path.display()
    );
    path
}

/// A loopback address with a port that was free a moment ago. Another
/// process may take it before we bind it again; callers retry on a clash.
pub fn free_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr")
}

/// What a process said: its last lines, and the first line of each
/// distinct ERROR message (those tell what went wrong long before the end).
#[derive(Clone, Default)]
pub struct LogTail(Arc<Mutex<Lines>>);

/// The lines behind a [`LogTail`].
#[derive(Default)]
pub struct Lines {
    last: VecDeque<String>,
    errors: Vec<(String, String)>,
    /// Every line, when `FAULTS_LOG_DIR` names a directory to keep them in.
    file: Option<std::fs::File>,
}

impl LogTail {
    /// A tail for one process; with `FAULTS_LOG_DIR` set, its whole output
    /// also goes to `$FAULTS_LOG_DIR/<name>-<n>.log`, for debugging.
    fn new(name: &str) -> LogTail {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let file = std::env::var_os("FAULTS_LOG_DIR").and_then(|dir| {
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = Path::new(&dir).join(format!("{name}-{}-{n}.log", std::process::id()));
            std::fs::File::create(path).ok()
        });
        LogTail(Arc::new(Mutex::new(Lines {
            file,
            ..Lines::default()
        })))
    }

    fn push(&self, line: String) {
        let mut lines = self.0.lock().expect("log tail lock");
        if let Some(file) = lines.file.as_mut() {
            let _ = writeln!(file, "{line}");
        }
        if line.contains("ERROR") && lines.errors.len() < TAIL_LINES {
            let message = serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|e| e["fields"]["message"].as_str().map(str::to_string))
                .unwrap_or_else(|| line.clone());
            if !lines.errors.iter().any(|(m, _)| *m == message) {
                lines.errors.push((message, line.clone()));
            }
        }
        if lines.last.len() == TAIL_LINES {
            lines.last.pop_front();
        }
        lines.last.push_back(line);
    }

    /// The distinct errors, then the last lines, each cut to 300 characters.
    pub fn text(&self) -> String {
        let lines = self.0.lock().expect("log tail lock");
        let cut = |l: &String| l.chars().take(300).collect::<String>();
        let mut out = String::from("-- errors:\n");
        for (_, line) in &lines.errors {
            out.push_str(&cut(line));
            out.push('\n');
        }
        out.push_str("-- last lines:\n");
        for line in &lines.last {
            out.push_str(&cut(line));
            out.push('\n');
        }
        out
    }
}

/// Drains `stream` line by line into `tail`; the first line that `detect`
/// maps to `Some` is sent on `found`.
fn drain<T: Send + 'static>(
    stream: impl Read + Send + 'static,
    tail: LogTail,
    found: Option<mpsc::Sender<T>>,
    detect: fn(&serde_json::Value) -> Option<T>,
) {
    std::thread::spawn(move || {
        let mut found = found;
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if found.is_some() {
                if let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) {
                    if let Some(value) = detect(&event) {
                        if let Some(tx) = found.take() {
                            let _ = tx.send(value);
                        }
                    }
                }
            }
            tail.push(line);
        }
    });
}

/// Runs blocking process work without stalling a tokio worker.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current() {
        Ok(_) => tokio::task::block_in_place(f),
        Err(_) => f(),
    }
}

/// Sends SIGTERM through the `kill` command (no libc dependency) and waits
/// for the exit. Panics if the process outlives [`STOP_TIMEOUT`]: it is
/// killed first, so nothing leaks.
fn terminate(child: &mut Child, what: &str, tail: &LogTail) -> ExitStatus {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("run kill -TERM");
    assert!(sent.success(), "kill -TERM {what} failed");
    let deadline = Instant::now() + STOP_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("wait for child") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{what} did not exit within {STOP_TIMEOUT:?} of SIGTERM; last output:\n{}",
                tail.text()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `kill -9`, then reap.
fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// Waits for the start event of a freshly spawned child; on exit or timeout
/// returns what it said.
fn await_start<T>(child: &mut Child, rx: mpsc::Receiver<T>, tail: &LogTail) -> Result<T, String> {
    match rx.recv_timeout(START_TIMEOUT) {
        Ok(value) => Ok(value),
        Err(err) => {
            let timed_out = matches!(err, mpsc::RecvTimeoutError::Timeout);
            kill9(child);
            // Let the draining threads catch the last lines.
            std::thread::sleep(Duration::from_millis(50));
            Err(format!(
                "{}; last output:\n{}",
                if timed_out {
                    format!("no start within {START_TIMEOUT:?}")
                } else {
                    "exited before it started".to_string()
                },
                tail.text()
            ))
        }
    }
}

/// One HTTP/1.1 GET on loopback without an async runtime: status and body.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Some((status, body))
}

/// How an agent is started; kept to restart it the same way.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    pub gateway_id: String,
    pub spool_dir: PathBuf,
    pub uplink_url: String,
    /// Fixed so that a restarted agent is found by the fleet again.
    pub mqtt: SocketAddr,
    /// Fixed too: a restart comes back on the same ports.
    pub admin: SocketAddr,
}

/// An `edge-agent run` child process.
pub struct AgentProcess {
    pub spec: AgentSpec,
    child: Option<Child>,
    /// The spool id the running process reported at start.
    pub spool_id: String,
    pub tail: LogTail,
    http: reqwest::Client,
}

impl AgentProcess {
    /// Starts an agent on a fresh MQTT port (another one if that clashes).
    pub fn start(gateway_id: &str, spool_dir: &Path, uplink_url: &str) -> AgentProcess {
        let mut last = String::new();
        for _ in 0..5 {
            let spec = AgentSpec {
                gateway_id: gateway_id.to_string(),
                spool_dir: spool_dir.to_path_buf(),
                uplink_url: uplink_url.to_string(),
                mqtt: free_addr(),
                admin: free_addr(),
            };
            match blocking(|| spawn_agent(&spec)) {
                Ok((child, spool_id, tail)) => {
                    return AgentProcess {
                        spec,
                        child: Some(child),
                        spool_id,
                        tail,
                        http: client(),
                    }
                }
                Err(err) => last = err,
            }
        }
        panic!("edge-agent did not start: {last}");
    }

    /// Starts the agent again, same ports, spool and uplink, after a kill or
    /// a stop. A port another process grabbed meanwhile is retried for a while.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running agent");
        let mut last = String::new();
        for attempt in 0..20 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
            match blocking(|| spawn_agent(&self.spec)) {
                Ok((child, spool_id, tail)) => {
                    self.child = Some(child);
                    self.spool_id = spool_id;
                    self.tail = tail;
                    return;
                }
                // Only a taken port is worth another try.
                Err(err) if err.contains("ddress") && err.contains("in use") => last = err,
                Err(err) => panic!("edge-agent did not restart: {err}"),
            }
        }
        panic!("edge-agent did not restart: {last}");
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            blocking(|| kill9(&mut child));
        }
    }

    /// Graceful stop (SIGTERM): MQTT closes, the spool is flushed.
    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .expect("stop of an agent that is not running");
        blocking(|| terminate(&mut child, "edge-agent", &self.tail))
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// GET /healthz as JSON; `None` if the agent does not answer.
    pub async fn health(&self) -> Option<serde_json::Value> {
        let response = self
            .http
            .get(format!("http://{}/healthz", self.spec.admin))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        response.json().await.ok()
    }

    /// The value of one metric line of GET /metrics (summed over labels).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let text = self
            .http
            .get(format!("http://{}/metrics", self.spec.admin))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        metric_value(&text, name)
    }

    /// Polls /healthz until `spool.pending` is 0; panics after `timeout`.
    pub async fn wait_drained(&self, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut last = None;
        loop {
            if let Some(health) = self.health().await {
                if health["spool"]["pending"].as_u64() == Some(0) {
                    return;
                }
                last = Some(health);
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "the spool did not drain within {timeout:?}; last /healthz: {last:?}; agent output:\n{}",
                    self.tail.text()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill9(&mut child);
        }
    }
}

fn spawn_agent(spec: &AgentSpec) -> Result<(Child, String, LogTail), String> {
    let mut child = Command::new(binary("edge-agent"))
        .args([
            "run",
            "--log-format",
            "json",
            "--gateway-id",
            &spec.gateway_id,
        ])
        .arg("--spool-dir")
        .arg(&spec.spool_dir)
        .args(["--mqtt-listen", &spec.mqtt.to_string()])
        .args(["--admin-listen", &spec.admin.to_string()])
        .args(["--uplink-url", &spec.uplink_url, "--uplink-token", TOKEN])
        .env("RUST_LOG", rust_log("info,rumqttd=off"))
        .env_remove("EDGE_AGENT_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot spawn edge-agent: {e}"))?;
    let tail = LogTail::new("edge-agent");
    let (tx, rx) = mpsc::channel();
    drain(
        child.stdout.take().expect("piped stdout"),
        tail.clone(),
        Some(tx),
        |event| {
            let fields = &event["fields"];
            (fields["message"] == "edge-agent started")
                .then(|| fields["spool_id"].as_str().unwrap_or_default().to_string())
        },
    );
    drain(
        child.stderr.take().expect("piped stderr"),
        tail.clone(),
        None::<mpsc::Sender<()>>,
        |_| None,
    );
    let spool_id = await_start(&mut child, rx, &tail)?;
    Ok((child, spool_id, tail))
}

/// A `cloud-sync serve` child process on a fixed port.
pub struct CollectorProcess {
    pub addr: SocketAddr,
    pub data_dir: PathBuf,
    child: Option<Child>,
    pub tail: LogTail,
}

impl CollectorProcess {
    /// Starts a collector on a fresh port (another one if that clashes).
    pub fn start(data_dir: &Path) -> CollectorProcess {
        let mut last = String::new();
        for _ in 0..5 {
            let addr = free_addr();
            match blocking(|| spawn_collector(addr, data_dir)) {
                Ok((child, tail)) => {
                    return CollectorProcess {
                        addr,
                        data_dir: data_dir.to_path_buf(),
                        child: Some(child),
                        tail,
                    }
                }
                Err(err) => last = err,
            }
        }
        panic!("cloud-sync did not start: {last}");
    }

    /// Starts a collector on `addr`, retrying while the port is taken.
    pub fn start_on(addr: SocketAddr, data_dir: &Path) -> CollectorProcess {
        let mut collector = CollectorProcess {
            addr,
            data_dir: data_dir.to_path_buf(),
            child: None,
            tail: LogTail::default(),
        };
        collector.restart();
        collector
    }

    /// Starts the collector again on the same port and data directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "restart of a running collector");
        let mut last = String::new();
        for attempt in 0..20 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(100));
            }
            match blocking(|| spawn_collector(self.addr, &self.data_dir)) {
                Ok((child, tail)) => {
                    self.child = Some(child);
                    self.tail = tail;
                    return;
                }
                Err(err) if err.contains("cannot listen") => last = err,
                Err(err) => panic!("cloud-sync did not restart: {err}"),
            }
        }
        panic!("cloud-sync did not restart: {last}");
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            blocking(|| kill9(&mut child));
        }
    }

    pub fn stop(&mut self) -> ExitStatus {
        let mut child = self
            .child
            .take()
            .expect("stop of a collector that is not running");
        blocking(|| terminate(&mut child, "cloud-sync", &self.tail))
    }
}

impl Drop for CollectorProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill9(&mut child);
        }
    }
}

fn spawn_collector(addr: SocketAddr, data_dir: &Path) -> Result<(Child, LogTail), String> {
    let mut child = Command::new(binary("cloud-sync"))
        .args([
            "--log-format",
            "json",
            "serve",
            "--listen",
            &addr.to_string(),
        ])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--token", TOKEN])
        .env("RUST_LOG", rust_log("info"))
        .env_remove("CLOUD_SYNC_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot spawn cloud-sync: {e}"))?;
    let tail = LogTail::new("cloud-sync");
    let (tx, rx) = mpsc::channel();
    drain(
        child.stderr.take().expect("piped stderr"),
        tail.clone(),
        Some(tx),
        |event| (event["fields"]["message"] == "collector listening").then_some(()),
    );
    drain(
        child.stdout.take().expect("piped stdout"),
        tail.clone(),
        None::<mpsc::Sender<()>>,
        |_| None,
    );
    await_start(&mut child, rx, &tail)?;
    let deadline = Instant::now() + START_TIMEOUT;
    while http_get(addr, "/healthz").map(|(status, _)| status) != Some(200) {
        if Instant::now() >= deadline {
            kill9(&mut child);
            return Err(format!(
                "GET /healthz never answered 200; last output:\n{}",
                tail.text()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((child, tail))
}

/// The children's log filter: `FAULTS_RUST_LOG` if set (for debugging), else `default`.
fn rust_log(default: &str) -> String {
    std::env::var("FAULTS_RUST_LOG").unwrap_or_else(|_| default.to_string())
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("http client")
}

/// Sums the samples of metric `name` (any labels) in Prometheus text.
pub fn metric_value(text: &str, name: &str) -> Option<f64> {
    let mut found = None;
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        let value: f64 = rest.rsplit(' ').next()?.parse().ok()?;
        *found.get_or_insert(0.0) += value;
    }
    found
}
