//! The collector's dashboard in a real headless Chromium: a collector filled
//! by a short simulated run (5 devices × 20 readings through an edge agent);
//! the fleet page must list every device with its latest value and a device
//! page's chart must have drawn data points, not only loaded. (Reads are
//! open there: the collector has plain tokens only.) A collector whose reads
//! need a token must show the sign-in form instead. Screenshots
//! of the pages are kept in `target/test-artifacts/dashboard-*.png`.
//!
//! Chromium is Debian's `chromium` (`.ci/run` installs it; `CHROMIUM` names
//! another binary). Without it the test skips, unless `CI=true`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use edge_agent::{Agent, FileConfig};
use firmware_sim::{run_fleet, FleetConfig};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

const DEVICES: usize = 5;
const READINGS: u64 = 20;
/// Readings per second per device: 20 readings span ~10 s, so the
/// 5-minute chart (1 s buckets) draws a line rather than one dot.
const RATE: f64 = 2.0;
const TOKEN: &str = "dashboard-token";
/// Virtual time Chromium lets the page run (fetches, uPlot) before it dumps
/// the DOM or takes the screenshot.
const VIRTUAL_TIME_MS: u32 = 10_000;
/// Wall-clock bound of one Chromium run.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_table_lists_devices_and_device_chart_draws_points() {
    let Some(chromium) = chromium().await else {
        return;
    };
    let cloud_dir = tempfile::tempdir().unwrap();
    let spool_dir = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();

    let mut config = cloud_sync::Config::new(cloud_dir.path(), vec![TOKEN.to_string()]);
    config.listen = "127.0.0.1:0".parse().unwrap();
    let collector = cloud_sync::Server::bind(config).await.unwrap();
    let url = format!("http://{}", collector.local_addr());
    let collector_task = tokio::spawn(collector.run(stop.clone()));

    let mut file = FileConfig::default();
    file.gateway.id = Some("gw-dashboard".into());
    file.mqtt.listen = Some("127.0.0.1:0".into());
    file.admin.listen = Some("127.0.0.1:0".into());
    file.spool.dir = Some(spool_dir.path().to_path_buf());
    file.uplink.url = Some(url.clone());
    file.uplink.token = Some(TOKEN.into());
    let agent = Agent::start(file.validate().unwrap()).await.unwrap();

    let fleet = FleetConfig {
        broker: agent.mqtt_addr().to_string(),
        devices: DEVICES,
        readings_per_device: Some(READINGS),
        rate: RATE,
        qos: 1,
        progress: false,
        ..FleetConfig::default()
    };
    let device_ids: Vec<String> = (0..DEVICES).map(|i| fleet.device_id(i)).collect();
    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        run_fleet(fleet, CancellationToken::new()),
    )
    .await
    .expect("the fleet finished within 60 s")
    .unwrap();
    let expected = DEVICES as u64 * READINGS;
    assert_eq!(summary.acked, expected, "every reading acknowledged");
    wait_for_points(&url, expected).await;

    // The fleet page: one row per device, each with its latest value.
    let dom = chromium.dump_dom(&format!("{url}/#/")).await;
    for id in &device_ids {
        let row = element(&dom, &format!("<tr data-device=\"{id}\""), "</tr>")
            .unwrap_or_else(|| panic!("no row for {id} in the fleet table:\n{dom}"));
        assert!(row.contains("data-stale=\"false\""), "{id} is stale: {row}");
        assert!(row.contains("gw-dashboard"), "{id} has no gateway: {row}");
        // Device 0 measures temperature (the sensor kinds cycle by index).
        if id == &device_ids[0] {
            assert!(row.contains("temperature 2"), "no latest value: {row}");
        }
    }
    assert!(dom.contains("id=\"updated\""), "{dom}");

    // A device page: the chart drew points from the aggregates.
    let device_url = format!("{url}/#/devices/{}?range=5m", device_ids[0]);
    let dom = chromium.dump_dom(&device_url).await;
    let chart = element(&dom, "<section class=\"chart\"", ">")
        .unwrap_or_else(|| panic!("no chart on the device page:\n{dom}"));
    assert!(
        chart.contains("data-measurement=\"temperature\""),
        "{chart}"
    );
    let drawn = attribute(chart, "data-points")
        .unwrap_or_else(|| panic!("the chart never finished drawing: {chart}"));
    let drawn: usize = drawn.parse().unwrap();
    assert!(drawn > 1, "the chart drew {drawn} points");
    assert!(
        drawn <= READINGS as usize,
        "one point per 1 s bucket at most, drew {drawn}"
    );

    let artifacts = artifacts_dir();
    for (name, page) in [
        ("dashboard-device.png", device_url.clone()),
        ("dashboard-fleet.png", format!("{url}/#/")),
        ("dashboard-gateways.png", format!("{url}/#/gateways")),
    ] {
        let path = artifacts.join(name);
        chromium.screenshot(&page, &path).await;
        eprintln!("screenshot: {}", path.display());
    }

    agent.shutdown().await.unwrap();
    stop.cancel();
    collector_task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_read_token_the_dashboard_asks_for_one() {
    let Some(chromium) = chromium().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut config = cloud_sync::Config::new(dir.path().join("cloud"), Vec::new());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.token_file = Some(dir.path().join("tokens"));
    config.require_read_token = true;
    let collector = cloud_sync::Server::bind(config).await.unwrap();
    let url = format!("http://{}", collector.local_addr());
    let stop = CancellationToken::new();
    let collector_task = tokio::spawn(collector.run(stop.clone()));

    let dom = chromium.dump_dom(&format!("{url}/#/")).await;
    let form = element(&dom, "<form id=\"login\"", ">")
        .unwrap_or_else(|| panic!("no sign-in form:\n{dom}"));
    assert!(
        !form.contains("hidden"),
        "the sign-in form is hidden: {form}"
    );
    let main = element(&dom, "<main id=\"view\"", ">").unwrap();
    assert!(
        main.contains("hidden"),
        "the page shows behind the form: {main}"
    );
    assert!(dom.contains("needs a read token"), "{dom}");
    let path = artifacts_dir().join("dashboard-login.png");
    chromium.screenshot(&format!("{url}/#/"), &path).await;
    eprintln!("screenshot: {}", path.display());

    stop.cancel();
    collector_task.await.unwrap().unwrap();
}

/// Waits until the collector holds `expected` points in all.
async fn wait_for_points(url: &str, expected: u64) {
    let stored = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let devices: serde_json::Value = reqwest::get(format!("{url}/v1/devices"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let points: u64 = devices["devices"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d["points"].as_u64().unwrap())
                .sum();
            if points == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(stored.is_ok(), "the collector never held {expected} points");
}

/// The text from `start` to the next `end` (inclusive) in `html`.
fn element<'a>(html: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = html.find(start)?;
    let len = html[from..].find(end)? + end.len();
    Some(&html[from..from + len])
}

/// The value of `name="..."` in a start tag.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let marker = format!(" {name}=\"");
    let from = tag.find(&marker)? + marker.len();
    let len = tag[from..].find('"')?;
    Some(&tag[from..from + len])
}

/// `target/test-artifacts/`, created; `CARGO_TARGET_DIR` when set.
fn artifacts_dir() -> PathBuf {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|dir| workspace.join(dir))
        .unwrap_or_else(|| workspace.join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A headless Chromium with a throwaway profile.
struct Chromium {
    binary: String,
    profile: tempfile::TempDir,
}

/// Chromium if it runs; `None` (the test skips) when it does not and CI is
/// not set; under `CI=true` a missing browser fails the test.
async fn chromium() -> Option<Chromium> {
    let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".to_owned());
    let found = Command::new(&binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .is_ok_and(|status| status.success());
    if !found {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true");
        assert!(
            !ci,
            "CI=true requires a headless browser, but {binary:?} does not run; \
             install Debian's chromium (.ci/run does) or set CHROMIUM"
        );
        eprintln!(
            "skipping the dashboard browser test: {binary:?} not found (apt-get install chromium)"
        );
        return None;
    }
    Some(Chromium {
        binary,
        profile: tempfile::tempdir().unwrap(),
    })
}

impl Chromium {
    /// The DOM of `url` after its scripts ran.
    async fn dump_dom(&self, url: &str) -> String {
        let stdout = self.run(&["--dump-dom".to_owned(), url.to_owned()]).await;
        String::from_utf8(stdout).unwrap()
    }

    /// A 1280×900 PNG of `url` at `path`.
    async fn screenshot(&self, url: &str, path: &Path) {
        let _ = std::fs::remove_file(path);
        self.run(&[
            format!("--screenshot={}", path.display()),
            "--window-size=1280,900".to_owned(),
            url.to_owned(),
        ])
        .await;
        assert!(path.exists(), "chromium wrote no screenshot at {path:?}");
    }

    async fn run(&self, args: &[String]) -> Vec<u8> {
        // Root in a container: no sandbox; no GPU; a small /dev/shm.
        let output = Command::new(&self.binary)
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", self.profile.path().display()))
            .arg(format!("--virtual-time-budget={VIRTUAL_TIME_MS}"))
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let output = tokio::time::timeout(CHROMIUM_TIMEOUT, output)
            .await
            .unwrap_or_else(|_| panic!("chromium {args:?} ran longer than {CHROMIUM_TIMEOUT:?}"))
            .unwrap();
        assert!(
            output.status.success(),
            "chromium {args:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }
}
