//! Node-RED as the peer of `bench forward`: the version pinned in
//! `bench/node-red/package-lock.json` (installed with `npm ci` when
//! `node_modules` is missing), its static flow copied into a fresh userDir,
//! started as `node red.js` with the broker and sink URLs in the environment
//! variables the flow reads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context};

use crate::bench::procs::Proc;

/// The flow's `mqtt-broker` node reads the broker URL from this variable.
pub(super) const MQTT_URL_ENV: &str = "FORWARD_MQTT_URL";
/// The flow's `http request` node reads the sink URL from this variable.
pub(super) const SINK_URL_ENV: &str = "FORWARD_SINK_URL";
/// Node-RED's entry point inside the install folder.
const RED_JS: &str = "node_modules/node-red/red.js";
/// What marks the folder: the pinned lock file and the flow.
const MARKERS: [&str; 3] = ["package-lock.json", "flows.json", "settings.js"];

/// The folder with Node-RED's `package.json`, lock file, flow and settings:
/// `dir` if given, else `bench/node-red` under the current directory, else
/// the one of the checkout this binary was built from. Absolute, since
/// Node-RED resolves a relative settings path against its own install.
pub(super) fn locate(dir: Option<&Path>) -> anyhow::Result<PathBuf> {
    let candidates = match dir {
        Some(dir) => vec![dir.to_owned()],
        None => vec![
            PathBuf::from("bench/node-red"),
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/node-red"),
        ],
    };
    let found = candidates
        .iter()
        .find(|dir| MARKERS.iter().all(|file| dir.join(file).is_file()));
    let Some(found) = found else {
        bail!(
            "no Node-RED bench folder (with {}) at {}; run from the repository root or pass --node-red-dir",
            MARKERS.join(", "),
            candidates
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        );
    };
    found
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", found.display()))
}

/// Installs the pinned Node-RED into `dir/node_modules` with `npm ci` unless
/// it is there already (`bench/run.sh` does the same before the suite).
pub(super) fn ensure_installed(dir: &Path) -> anyhow::Result<()> {
    if dir.join(RED_JS).is_file() {
        return Ok(());
    }
    eprintln!(
        "Node-RED is not installed in {}; installing the version pinned in package-lock.json (npm ci)",
        dir.join("node_modules").display()
    );
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund"])
        .current_dir(dir)
        .stdin(Stdio::null())
        // stdout is the report's; npm's chatter goes with the progress lines.
        .stdout(Stdio::from(std::io::stderr()))
        .status()
        .context("cannot run npm; install Node.js 18.5 or later with npm")?;
    if !status.success() {
        bail!("npm ci in {} failed with {status}", dir.display());
    }
    if !dir.join(RED_JS).is_file() {
        bail!("npm ci in {} left no {RED_JS}", dir.display());
    }
    Ok(())
}

/// The installed Node-RED's version, from its `package.json`.
pub(super) fn version(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("node_modules/node-red/package.json")).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    json["version"].as_str().map(str::to_owned)
}

/// `node --version`, e.g. "v20.20.2".
pub(super) fn node_version() -> Option<String> {
    let out = Command::new("node").arg("--version").output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_owned()).filter(|v| !v.is_empty())
}

/// A running Node-RED.
pub(super) struct NodeRed {
    pub proc: Proc,
    log: PathBuf,
}

impl NodeRed {
    /// Copies the flow into `work/user-dir` (Node-RED may write next to its
    /// flow file; the repository's copy stays untouched) and starts
    /// Node-RED on it, logging to `work/node-red.log`.
    pub(super) fn start(
        dir: &Path,
        work: &Path,
        broker: SocketAddr,
        sink_url: &str,
    ) -> anyhow::Result<NodeRed> {
        let user_dir = work.join("user-dir");
        std::fs::create_dir_all(&user_dir)?;
        let flows = user_dir.join("flows.json");
        std::fs::copy(dir.join("flows.json"), &flows)
            .with_context(|| format!("cannot copy {}/flows.json", dir.display()))?;
        let mut command = Command::new("node");
        command
            .arg(dir.join(RED_JS))
            .arg("--settings")
            .arg(dir.join("settings.js"))
            .arg("--userDir")
            .arg(&user_dir)
            .arg(&flows)
            .env(MQTT_URL_ENV, format!("mqtt://{broker}"))
            .env(SINK_URL_ENV, sink_url);
        let log = work.join("node-red.log");
        let proc = Proc::spawn("node-red", command, log.clone())
            .context("is Node.js installed? (node must be on PATH)")?;
        Ok(NodeRed { proc, log })
    }

    /// Requests the `http request` node reported as failed, one `[error]`
    /// log line each (connection refused, timeout).
    pub(super) fn failed_requests(&self) -> u64 {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        count_failed(&text)
    }
}

fn count_failed(log: &str) -> u64 {
    log.lines()
        .filter(|line| line.contains("[error] [http request:"))
        .count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in flow is what the bench and `docs/benchmarks.md` say:
    /// QoS 1 persistent session in, one POST per message out, addresses from
    /// the environment variables the bench sets.
    #[test]
    fn the_flow_reads_the_bench_variables_and_keeps_a_qos1_session() {
        let dir = locate(None).unwrap();
        let flows: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("flows.json")).unwrap())
                .unwrap();
        let node = |kind: &str| {
            flows
                .as_array()
                .unwrap()
                .iter()
                .find(|n| n["type"] == kind)
                .unwrap_or_else(|| panic!("no {kind} node"))
                .clone()
        };
        let broker = node("mqtt-broker");
        assert_eq!(broker["broker"], format!("${{{MQTT_URL_ENV}}}"));
        assert_eq!(broker["cleansession"], false);
        assert!(broker["clientid"].as_str().is_some_and(|id| !id.is_empty()));
        let mqtt_in = node("mqtt in");
        assert_eq!(
            (&mqtt_in["qos"], &mqtt_in["topic"]),
            (&"1".into(), &"devices/#".into())
        );
        assert_eq!(mqtt_in["datatype"], "buffer");
        let request = node("http request");
        assert_eq!(request["url"], format!("${{{SINK_URL_ENV}}}"));
        assert_eq!(request["method"], "POST");
        assert_eq!(mqtt_in["wires"][0][0], request["id"]);
    }

    #[test]
    fn failed_requests_are_the_http_request_error_lines() {
        let log = "29 Nov 04:36:08 - [info] Started flows\n\
                   29 Nov 04:36:17 - [error] [http request:sink] RequestError: connect ECONNREFUSED 127.0.0.1:28832\n\
                   29 Nov 04:36:17 - [error] [http request:sink] RequestError: connect ECONNREFUSED 127.0.0.1:28832\n\
                   29 Nov 04:36:18 - [error] [mqtt-broker:bench mosquitto] Connection failed\n";
        assert_eq!(count_failed(log), 2);
    }
}
