//! The whole path encrypted and authenticated: a collector serving HTTPS
//! with a certificate from a throw-away CA (rcgen, temp dir) and a hashed
//! token file; a gateway whose `uplink.ca_file` names that CA delivers
//! every reading with its ingest token, while a gateway without the CA
//! delivers nothing, keeps its readings spooled and reports why. With
//! `server.tls_client_ca` the collector also requires client certificates:
//! a gateway presenting one its CA signed delivers everything, gateways
//! without one or with one from another CA deliver nothing and say why.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cloud_sync::tokens::{Role, TokenFile};
use edge_agent::{Agent, FileConfig};
use firmware_sim::{run_fleet, FleetConfig};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use tokio_util::sync::CancellationToken;

const DEVICES: usize = 3;
const READINGS: u64 = 10;

struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

/// A self-signed CA called `name`, and the issuer that signs with it.
fn ca(name: &str) -> (rcgen::Certificate, Issuer<'static, KeyPair>) {
    let mut params = CertificateParams::default();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    (cert, Issuer::new(params, key))
}

fn write(dir: &Path, name: &str, text: String) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A CA and a collector certificate for 127.0.0.1, as PEM files in `dir`.
fn pki(dir: &Path) -> Pki {
    let (ca, issuer) = ca("test collector CA");
    let params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    Pki {
        ca: write(dir, "ca.pem", ca.pem()),
        cert: write(dir, "collector.pem", cert.pem()),
        key: write(dir, "collector.key", key.serialize_pem()),
    }
}

/// A client CA called `name` and a client certificate `cn` it signed, as
/// PEM files in `dir` (file names start with `cn`).
fn client_pki(dir: &Path, name: &str, cn: &str) -> Pki {
    let (ca, issuer) = ca(name);
    let mut params = CertificateParams::default();
    params.distinguished_name.push(DnType::CommonName, cn);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, &issuer).unwrap();
    Pki {
        ca: write(dir, &format!("{cn}-ca.pem"), ca.pem()),
        cert: write(dir, &format!("{cn}.pem"), cert.pem()),
        key: write(dir, &format!("{cn}.key"), key.serialize_pem()),
    }
}

async fn start_agent(
    gateway_id: &str,
    spool: &Path,
    url: &str,
    token: &str,
    ca: Option<&Path>,
    client: Option<&Pki>,
) -> Agent {
    let mut file = FileConfig::default();
    file.gateway.id = Some(gateway_id.into());
    file.mqtt.listen = Some("127.0.0.1:0".into());
    file.admin.listen = Some("127.0.0.1:0".into());
    file.spool.dir = Some(spool.to_path_buf());
    file.uplink.url = Some(url.into());
    file.uplink.token = Some(token.into());
    file.uplink.ca_file = ca.map(Path::to_path_buf);
    file.uplink.client_cert = client.map(|pki| pki.cert.clone());
    file.uplink.client_key = client.map(|pki| pki.key.clone());
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

/// The uplink's last error from the agent's `/healthz`, once it has one
/// that holds `needle`. Waiting for it, rather than taking the first error,
/// matters when the collector refuses a client certificate: hyper reports
/// the TLS alert only if the request was already handed to the connection;
/// when the connection dies first, the error is a bare "connection closed".
async fn uplink_error(agent: &Agent, needle: &str) -> String {
    let health = format!("http://{}/healthz", agent.admin_addr());
    let mut last = None;
    let found = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let health: serde_json::Value =
                reqwest::get(&health).await.unwrap().json().await.unwrap();
            if let Some(error) = health["uplink"]["last_error"].as_str() {
                if error.contains(needle) {
                    return error.to_owned();
                }
                last = Some(error.to_owned());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("no uplink error with {needle:?} within 30 s; last: {last:?}"))
}

/// Waits until the agent's spool holds no pending reading.
async fn drain(agent: &Agent) {
    let drained = tokio::time::timeout(Duration::from_secs(60), async {
        while agent.spool().stats().pending > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(drained.is_ok(), "the gateway never drained over https");
}

/// Points stored at the collector, summed over its devices.
async fn points(reader: &reqwest::Client, url: &str, token: &str) -> u64 {
    let devices: serde_json::Value = reader
        .get(format!("{url}/v1/devices"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    devices["devices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["points"].as_u64().unwrap())
        .sum()
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
    config.tls = Some(cloud_sync::config::TlsFiles::new(
        pki.cert.clone(),
        pki.key.clone(),
    ));
    let collector = cloud_sync::Server::bind(config).await.unwrap();
    let url = format!("https://{}", collector.local_addr());
    let stop = CancellationToken::new();
    let collector_task = tokio::spawn(collector.run(stop.clone()));

    // With the CA: every reading arrives.
    let spool = dir.path().join("spool-tls");
    let agent = start_agent("gw-tls", &spool, &url, &gw_token, Some(&pki.ca), None).await;
    publish(&agent, "tls-dev-").await;
    drain(&agent).await;
    let reader = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    assert_eq!(
        points(&reader, &url, &read_token).await,
        DEVICES as u64 * READINGS
    );
    agent.shutdown().await.unwrap();

    // Without the CA: nothing is delivered, the readings stay spooled and
    // the agent's health says the certificate is the problem.
    let spool = dir.path().join("spool-no-ca");
    let agent = start_agent("gw-no-ca", &spool, &url, &other_token, None, None).await;
    publish(&agent, "no-ca-dev-").await;
    let error = uplink_error(&agent, "invalid peer certificate").await;
    assert!(error.contains("uplink.ca_file"), "{error}");
    assert_eq!(agent.spool().stats().pending, DEVICES as u64 * READINGS);
    agent.shutdown().await.unwrap();

    stop.cancel();
    collector_task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_requiring_client_certificates_takes_only_gateways_with_one_it_trusts() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let gateways = client_pki(dir.path(), "test gateways CA", "gw-mtls");
    let stranger = client_pki(dir.path(), "some other CA", "gw-other-ca");
    let tokens = TokenFile::load(&dir.path().join("tokens")).unwrap();
    let token = |gateway_id: &str| {
        tokens
            .add(Role::Ingest {
                gateway_id: gateway_id.into(),
            })
            .unwrap()
            .1
    };
    let (mtls_token, no_cert_token, other_ca_token) =
        (token("gw-mtls"), token("gw-no-cert"), token("gw-other-ca"));
    let (_, read_token) = tokens.add(Role::Read).unwrap();

    let mut config = cloud_sync::Config::new(dir.path().join("cloud"), Vec::new());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.token_file = Some(dir.path().join("tokens"));
    config.require_read_token = true;
    let mut tls = cloud_sync::config::TlsFiles::new(pki.cert.clone(), pki.key.clone());
    tls.client_ca = Some(gateways.ca.clone());
    config.tls = Some(tls);
    let collector = cloud_sync::Server::bind(config).await.unwrap();
    let url = format!("https://{}", collector.local_addr());
    let stop = CancellationToken::new();
    let collector_task = tokio::spawn(collector.run(stop.clone()));

    // With a certificate from the gateways' CA: every reading arrives.
    let spool = dir.path().join("spool-mtls");
    let agent = start_agent(
        "gw-mtls",
        &spool,
        &url,
        &mtls_token,
        Some(&pki.ca),
        Some(&gateways),
    )
    .await;
    publish(&agent, "mtls-dev-").await;
    drain(&agent).await;
    agent.shutdown().await.unwrap();
    // Readers need a certificate too; with one, the token is still required.
    let cert_and_key = [
        std::fs::read(&gateways.cert).unwrap(),
        std::fs::read(&gateways.key).unwrap(),
    ]
    .join(&b"\n"[..]);
    let reader = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap(),
        )
        .identity(reqwest::Identity::from_pem(&cert_and_key).unwrap())
        .build()
        .unwrap();
    assert_eq!(
        points(&reader, &url, &read_token).await,
        DEVICES as u64 * READINGS
    );
    let anonymous = reader
        .get(format!("{url}/v1/devices"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), reqwest::StatusCode::UNAUTHORIZED);

    // Without a certificate, or with one from another CA: the handshake
    // fails, nothing is delivered, the readings stay spooled and the
    // agent's health says the client certificate is the problem.
    let refused = [
        ("gw-no-cert", &no_cert_token, None),
        ("gw-other-ca", &other_ca_token, Some(&stranger)),
    ];
    for (gateway_id, token, client) in refused {
        let spool = dir.path().join(format!("spool-{gateway_id}"));
        let agent = start_agent(gateway_id, &spool, &url, token, Some(&pki.ca), client).await;
        publish(&agent, &format!("{gateway_id}-dev-")).await;
        let error = uplink_error(&agent, "received fatal alert").await;
        assert!(
            error.contains("uplink.client_cert"),
            "{gateway_id}: {error}"
        );
        assert_eq!(
            agent.spool().stats().pending,
            DEVICES as u64 * READINGS,
            "{gateway_id}"
        );
        agent.shutdown().await.unwrap();
    }
    assert_eq!(
        points(&reader, &url, &read_token).await,
        DEVICES as u64 * READINGS,
        "only gw-mtls's readings arrived"
    );
    // Every refused handshake is counted.
    let metrics = reader
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let failed: f64 = metrics
        .lines()
        .find(|line| line.starts_with("cloud_sync_tls_handshakes_failed_total{reason=\"error\"}"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no failed handshakes counted:\n{metrics}"));
    assert!(failed >= 2.0, "{failed} failed handshakes counted");

    stop.cancel();
    collector_task.await.unwrap().unwrap();
}
