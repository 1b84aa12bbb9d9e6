//! The whole path encrypted and authenticated: a collector serving HTTPS
//! with a certificate from a throw-away CA (rcgen, temp dir) and a hashed
//! token file; a gateway whose `uplink.ca_file` names that CA delivers
//! every reading with its ingest token, while a gateway without the CA
//! delivers nothing, keeps its readings spooled and reports why.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cloud_sync::tokens::{Role, TokenFile};
use edge_agent::{Agent, FileConfig};
use firmware_sim::{run_fleet, FleetConfig};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tokio_util::sync::CancellationToken;

const DEVICES: usize = 3;
const READINGS: u64 = 10;

struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A CA and a collector certificate for 127.0.0.1, as PEM files in `dir`.
fn pki(dir: &Path) -> Pki {
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "test collector CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    Pki {
        ca: write("ca.pem", ca.pem()),
        cert: write("collector.pem", cert.pem()),
        key: write("collector.key", key.serialize_pem()),
    }
}

async fn start_agent(
    gateway_id: &str,
    spool: &Path,
    url: &str,
    token: &str,
    ca: Option<&Path>,
) -> Agent {
    let mut file = FileConfig::default();
    file.gateway.id = Some(gateway_id.into());
    file.mqtt.listen = Some("127.0.0.1:0".into());
    file.admin.listen = Some("127.0.0.1:0".into());
    file.spool.dir = Some(spool.to_path_buf());
    file.uplink.url = Some(url.into());
    file.uplink.token = Some(token.into());
    file.uplink.ca_file = ca.map(Path::to_path_buf);
    file.uplink.backoff_max = Some("200ms".into());
    Agent::start(file.validate().unwrap()).await.unwrap()
}

async fn publish(agent: &Agent, prefix: &str) {
    let summary = tokio::time::timeout(
        Duration::from_secs(60),
        run_fleet(
            FleetConfig {
                broker: agent.mqtt_addr().to_string(),
                devices: DEVICES,
                readings_per_device: Some(READINGS),
                rate: 0.0,
                qos: 1,
                progress: false,
                device_prefix: prefix.into(),
                ..FleetConfig::default()
            },
            CancellationToken::new(),
        ),
    )
    .await
    .expect("the fleet finished within 60 s")
    .unwrap();
    assert_eq!(summary.acked, DEVICES as u64 * READINGS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_delivers_over_https_with_its_ca_and_fails_clearly_without() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let tokens = TokenFile::load(&dir.path().join("tokens")).unwrap();
    let (_, gw_token) = tokens
        .add(Role::Ingest {
            gateway_id: "gw-tls".into(),
        })
        .unwrap();
    let (_, other_token) = tokens
        .add(Role::Ingest {
            gateway_id: "gw-no-ca".into(),
        })
        .unwrap();
    let (_, read_token) = tokens.add(Role::Read).unwrap();

    let mut config = cloud_sync::Config::new(dir.path().join("cloud"), Vec::new());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.token_file = Some(dir.path().join("tokens"));
    config.require_read_token = true;
    config.tls = Some(cloud_sync::config::TlsFiles {
        cert: pki.cert.clone(),
        key: pki.key.clone(),
    });
    let collector = cloud_sync::Server::bind(config).await.unwrap();
    let url = format!("https://{}", collector.local_addr());
    let stop = CancellationToken::new();
    let collector_task = tokio::spawn(collector.run(stop.clone()));

    // With the CA: every reading arrives.
    let spool = dir.path().join("spool-tls");
    let agent = start_agent("gw-tls", &spool, &url, &gw_token, Some(&pki.ca)).await;
    publish(&agent, "tls-dev-").await;
    let drained = tokio::time::timeout(Duration::from_secs(60), async {
        while agent.spool().stats().pending > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(drained.is_ok(), "the gateway never drained over https");
    let reader = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let devices: serde_json::Value = reader
        .get(format!("{url}/v1/devices"))
        .bearer_auth(&read_token)
        .send()
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
    assert_eq!(points, DEVICES as u64 * READINGS, "{devices}");
    agent.shutdown().await.unwrap();

    // Without the CA: nothing is delivered, the readings stay spooled and
    // the agent's health says the certificate is the problem.
    let spool = dir.path().join("spool-no-ca");
    let agent = start_agent("gw-no-ca", &spool, &url, &other_token, None).await;
    publish(&agent, "no-ca-dev-").await;
    let health = format!("http://{}/healthz", agent.admin_addr());
    let error = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let health: serde_json::Value =
                reqwest::get(&health).await.unwrap().json().await.unwrap();
            if let Some(error) = health["uplink"]["last_error"].as_str() {
                return error.to_owned();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the uplink reported no error within 30 s");
    assert!(error.contains("invalid peer certificate"), "{error}");
    assert!(error.contains("uplink.ca_file"), "{error}");
    assert_eq!(agent.spool().stats().pending, DEVICES as u64 * READINGS);
    agent.shutdown().await.unwrap();

    stop.cancel();
    collector_task.await.unwrap().unwrap();
}
