//! Child processes of the benchmarks and what `/proc` says about them: the
//! release binaries next to this one, started on free loopback ports and
//! stopped (SIGTERM, then SIGKILL) when dropped, so an error or Ctrl-C
//! leaves nothing running; CPU time and peak memory of any pid.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// A release binary next to the running one.
pub(super) fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the running executable")?;
    let dir = exe
        .parent()
        .context("the running executable has no directory")?;
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{} not found; build it first: cargo build --release -p edge-agent -p cloud-sync -p firmware-sim",
            path.display()
        );
    }
    Ok(path)
}

/// A port nobody listens on right now (the collector takes it later).
pub(super) fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// A child process that is sent SIGTERM (then SIGKILL) when dropped.
pub(super) struct Proc {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Proc {
    /// Starts `command` with stdout and stderr going to the file `log`.
    pub(super) fn spawn(
        name: &'static str,
        mut command: Command,
        log: PathBuf,
    ) -> anyhow::Result<Proc> {
        let file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        Ok(Proc { name, child, log })
    }

    /// Waits until something accepts TCP connections on `addr`.
    pub(super) async fn wait_listening(
        &mut self,
        addr: SocketAddr,
        limit: Duration,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            if self.exited() {
                bail!("{} exited at start; {}", self.name, self.log_tail());
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{} did not listen on {addr} within {limit:?}", self.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(super) fn exited(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then waits up to `grace` for a clean exit.
    pub(super) fn terminate(&mut self, grace: Duration) -> anyhow::Result<()> {
        if self.exited() {
            bail!("{} exited early; see {}", self.name, self.log_tail());
        }
        // libc is not a dependency; kill(1) is everywhere this runs.
        Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .context("cannot run kill")?;
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                if !status.success() {
                    bail!("{} stopped with {status}; {}", self.name, self.log_tail());
                }
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!("{} did not stop within {grace:?} of SIGTERM", self.name)
    }

    pub(super) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(5)..].join("\n");
        format!("last log lines:\n{tail}")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if !self.exited() {
            let _ = self.terminate(Duration::from_secs(5));
        }
    }
}

/// Starts `edge-agent run` on free ports with the uplink pointing at
/// `collector`; returns it with its admin and MQTT addresses.
pub(super) async fn spawn_agent(
    bin: &Path,
    dir: &Path,
    config: &Path,
    collector: SocketAddr,
    token: &str,
) -> anyhow::Result<(Proc, SocketAddr, SocketAddr)> {
    let log = dir.join("edge-agent.stderr");
    let mut child = Command::new(bin)
        .args([
            "run",
            "--log-format",
            "json",
            "--gateway-id",
            "bench-gateway",
        ])
        .arg("--config")
        .arg(config)
        .arg("--spool-dir")
        .arg(dir.join("spool"))
        .args([
            "--mqtt-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--uplink-url", &format!("http://{collector}")])
        .args(["--uplink-token", token])
        .env("RUST_LOG", "info,rumqttd=off")
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let stdout = child.stdout.take().context("agent stdout")?;
    let agent = Proc {
        name: "edge-agent",
        child,
        log,
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        for line in lines.by_ref() {
            let Ok(line) = line else { return };
            let Ok(event) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let fields = &event["fields"];
            if fields["message"] == "edge-agent started" {
                let addr = |key: &str| fields[key].as_str().and_then(|s| s.parse().ok());
                let _ = tx.send((addr("admin"), addr("mqtt")));
                break;
            }
        }
        // Keep reading so the agent never blocks on a full pipe.
        for _ in lines {}
    });
    let started =
        tokio::task::spawn_blocking(move || rx.recv_timeout(Duration::from_secs(30))).await?;
    match started {
        Ok((Some(admin), Some(mqtt))) => Ok((agent, admin, mqtt)),
        Ok(_) => bail!("cannot parse the addresses in the agent's start line"),
        Err(_) => bail!("edge-agent did not start; {}", agent.log_tail()),
    }
}

/// Starts `cloud-sync serve` on `listen` with its sled store (and audit
/// log) in `data_dir`, or with `store` (a PostgreSQL URL) as its store and
/// only the audit log in `data_dir`.
pub(super) fn spawn_collector(
    bin: &Path,
    data_dir: &Path,
    store: Option<&str>,
    listen: SocketAddr,
    token: &str,
    log_dir: &Path,
) -> anyhow::Result<Proc> {
    let log = log_dir.join(format!("cloud-sync-{}.log", listen.port()));
    let file = std::fs::File::create(&log)?;
    let mut command = Command::new(bin);
    command
        .args(["serve", "--listen", &listen.to_string()])
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--token", token]);
    match store {
        // The environment rather than argv: a password in the URL stays out of `ps`.
        Some(url) => command.env("CLOUD_SYNC_STORE", url),
        // Sled means sled, whatever the caller's environment says.
        None => command.env_remove("CLOUD_SYNC_STORE"),
    };
    let child = command
        .env("RUST_LOG", "warn")
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    Ok(Proc {
        name: "cloud-sync",
        child,
        log,
    })
}

/// Waits until the collector answers `/healthz`.
pub(super) async fn wait_ready(
    client: &reqwest::Client,
    collector: &mut Proc,
    addr: SocketAddr,
) -> anyhow::Result<()> {
    let url = format!("http://{addr}/healthz");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if collector.exited() {
            bail!("cloud-sync exited at start; {}", collector.log_tail());
        }
        if let Ok(response) = client.get(&url).send().await {
            if response.status().is_success() {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("cloud-sync did not answer on {addr} within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The agent's `spool.pending` from `/healthz`.
pub(super) async fn pending(client: &reqwest::Client, url: &str) -> anyhow::Result<u64> {
    let health = healthz(client, url).await?;
    health["spool"]["pending"]
        .as_u64()
        .with_context(|| format!("no spool.pending in {health}"))
}

/// The agent's `/healthz` body.
pub(super) async fn healthz(
    client: &reqwest::Client,
    url: &str,
) -> anyhow::Result<serde_json::Value> {
    let body = client
        .get(url)
        .send()
        .await
        .with_context(|| format!("GET {url}"))?
        .text()
        .await?;
    serde_json::from_str(&body).with_context(|| format!("GET {url}: not JSON: {body}"))
}

/// A `Vm*:` line of `/proc/PID/status`, in KiB.
pub(super) fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Resets VmHWM to the current RSS (Linux 4.0+; best effort).
pub(super) fn reset_hwm(pid: u32) {
    let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
}

/// User plus system CPU time of `pid` so far, in seconds (0 if unknown).
pub(super) fn cpu_seconds(pid: u32, ticks_per_second: f64) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name, which may hold spaces, in parentheses.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of proc(5); `rest` starts at field 3.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / ticks_per_second
}

pub(super) fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU time this process has used so far, user plus system, in seconds
/// (what `getrusage(RUSAGE_SELF)` reports, read from `/proc/self/stat`).
pub(super) fn own_cpu_seconds(ticks_per_second: f64) -> f64 {
    cpu_seconds(std::process::id(), ticks_per_second)
}

/// The 1, 5 and 15 minute load averages of `/proc/loadavg`.
pub(super) fn load_average() -> Option<[f64; 3]> {
    parse_loadavg(&std::fs::read_to_string("/proc/loadavg").ok()?)
}

fn parse_loadavg(text: &str) -> Option<[f64; 3]> {
    let mut fields = text.split_whitespace().map(|f| f.parse::<f64>().ok());
    Some([fields.next()??, fields.next()??, fields.next()??])
}

/// Whether this process runs as root (effective uid 0, from `/proc/self/status`).
pub(super) fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            // Real, effective, saved, filesystem.
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// Bytes of the files under `dir`, recursively (what the data takes on disk,
/// before file-system blocks are rounded up).
pub(super) fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.metadata() {
            Ok(meta) if meta.is_dir() => dir_bytes(&entry.path()),
            Ok(meta) => meta.len(),
            Err(_) => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loadavg_is_the_first_three_fields() {
        assert_eq!(
            parse_loadavg("3.18 2.56 3.74 2/345 6789\n"),
            Some([3.18, 2.56, 3.74])
        );
        assert_eq!(parse_loadavg("3.18 x 1"), None);
        assert_eq!(parse_loadavg(""), None);
    }

    #[test]
    fn this_process_has_cpu_time_and_memory() {
        let ticks = clock_ticks_per_second();
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(spin.elapsed());
        }
        assert!(own_cpu_seconds(ticks) > 0.0);
        assert!(status_kib(std::process::id(), "VmHWM:").unwrap_or(0) > 0);
    }
}
