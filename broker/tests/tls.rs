//! MQTT over TLS on real loopback sockets: publishing through the TLS front,
//! silent and half-handshaking peers that must not hold up anyone else,
//! client-certificate identity, and TLS files checked at start. Every CA,
//! certificate and key is made here with rcgen, in a temporary directory.

mod util;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::{
    Broker, BrokerConfig, BrokerError, DeviceRegistry, Disposition, ReasonLabel, TlsConfig,
};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, MqttOptions, Packet, QoS,
    TlsConfiguration, Transport,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use util::InstantSink;

const PASSWORD: &str = "correct horse battery staple";

/// A certificate authority made for one test.
struct Ca {
    cert: CertificateDer<'static>,
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::default();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca {
            cert: cert.der().clone(),
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf certificate with subject CN `common_name` and these SANs.
    fn issue(&self, common_name: &str, sans: &[&str]) -> Leaf {
        let sans: Vec<String> = sans.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(sans).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.der().clone(),
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            key_der: key.serialize_der(),
        }
    }
}

struct Leaf {
    cert: CertificateDer<'static>,
    cert_pem: String,
    key_pem: String,
    key_der: Vec<u8>,
}

impl Leaf {
    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_der.clone()))
    }
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

/// A server CA and certificate for 127.0.0.1, written to `dir`.
struct ServerPki {
    ca: Ca,
    cert: PathBuf,
    key: PathBuf,
}

fn server_pki(dir: &Path) -> ServerPki {
    let ca = Ca::new("gateway test CA");
    let leaf = ca.issue("gateway", &["127.0.0.1", "localhost"]);
    ServerPki {
        cert: write(dir, "server.pem", &leaf.cert_pem),
        key: write(dir, "server.key", &leaf.key_pem),
        ca,
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client that trusts `ca`, optionally with a client certificate.
fn client_tls(ca: &Ca, client: Option<&Leaf>) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert.clone()).unwrap();
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    Arc::new(match client {
        None => builder.with_no_client_auth(),
        Some(leaf) => builder
            .with_client_auth_cert(vec![leaf.cert.clone()], leaf.key())
            .unwrap(),
    })
}

fn start(
    sink: Arc<InstantSink>,
    tls: TlsConfig,
    devices: Option<Arc<DeviceRegistry>>,
) -> Result<Broker, BrokerError> {
    let config = BrokerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        devices,
        tls: Some(tls),
        ..BrokerConfig::default()
    };
    Broker::start(config, sink)
}

fn tls_config(pki: &ServerPki) -> TlsConfig {
    TlsConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        pki.cert.clone(),
        pki.key.clone(),
    )
}

fn registry(dir: &Path, devices: &[&str]) -> Arc<DeviceRegistry> {
    let registry = DeviceRegistry::load(&dir.join("devices")).unwrap();
    for device in devices {
        registry.add(device, PASSWORD).unwrap();
    }
    Arc::new(registry)
}

fn tls_client(
    addr: SocketAddr,
    client_id: &str,
    login: Option<(&str, &str)>,
    tls: Arc<ClientConfig>,
) -> (AsyncClient, EventLoop) {
    let mut options = MqttOptions::new(client_id, addr.ip().to_string(), addr.port());
    options.set_keep_alive(Duration::from_secs(30));
    if let Some((user, password)) = login {
        options.set_credentials(user, password);
    }
    options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(tls)));
    AsyncClient::new(options, 10)
}

/// How a connection attempt ended.
#[derive(Debug, PartialEq)]
enum Connack {
    Accepted,
    /// A CONNACK with this refusal code.
    Refused(ConnectReturnCode),
    /// Closed (or failed) without a CONNACK.
    Closed,
}

/// Polls until CONNACK or the connection fails.
async fn connack(events: &mut EventLoop) -> Connack {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack))))
                if ack.code == ConnectReturnCode::Success =>
            {
                return Connack::Accepted
            }
            Ok(Ok(Event::Incoming(Packet::ConnAck(ack)))) => return Connack::Refused(ack.code),
            Ok(Ok(_)) => {}
            Ok(Err(ConnectionError::ConnectionRefused(code))) => return Connack::Refused(code),
            Ok(Err(_)) | Err(_) => return Connack::Closed,
        }
    }
}

/// Polls until a PUBACK (true) or the connection fails (false).
async fn puback(events: &mut EventLoop) -> bool {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.poll()).await {
            Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => return true,
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return false,
        }
    }
}

/// Connects, publishes one QoS 1 reading and waits for its PUBACK.
async fn connect_and_publish(
    addr: SocketAddr,
    device: &str,
    login: Option<(&str, &str)>,
    tls: Arc<ClientConfig>,
) -> bool {
    let (client, mut events) = tls_client(addr, &format!("{device}-client"), login, tls);
    if connack(&mut events).await != Connack::Accepted {
        return false;
    }
    client
        .publish(
            format!("devices/{device}/telemetry"),
            QoS::AtLeastOnce,
            false,
            vec![0xa0],
        )
        .await
        .unwrap();
    puback(&mut events).await
}

fn refused(broker: &Broker, reason: &'static str) -> u64 {
    broker
        .metrics()
        .tls_connections_refused
        .get_or_create(&ReasonLabel { reason })
        .get()
}

fn handshakes_failed(broker: &Broker, reason: &'static str) -> u64 {
    broker
        .metrics()
        .tls_handshakes_failed
        .get_or_create(&ReasonLabel { reason })
        .get()
}

/// Waits for a refusal counter to reach `expected`: a connection is counted
/// as it ends on the broker's side, which may be a moment after the client
/// saw it fail.
async fn counted(count: impl Fn() -> u64, expected: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let now = count();
        if now >= expected || Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_publishes_over_tls_with_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let pki = server_pki(dir.path());
    let sink = Arc::new(InstantSink::default());
    let devices = registry(dir.path(), &["dev-a"]);
    let broker = start(sink.clone(), tls_config(&pki), Some(devices)).unwrap();
    let addr = broker.tls_addr().expect("tls listener");
    assert_ne!(addr.port(), 0);

    let tls = client_tls(&pki.ca, None);
    assert!(
        connect_and_publish(addr, "dev-a", Some(("dev-a", PASSWORD)), tls.clone()).await,
        "PUBACK over TLS"
    );
    {
        let items = sink.items.lock().unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].device_id, "dev-a");
        assert_eq!(items[0].qos, 1);
        assert_eq!(items[0].disposition, Disposition::Reading);
    }
    assert!(
        !connect_and_publish(addr, "dev-a", Some(("dev-a", "not the password")), tls).await,
        "the password still counts behind TLS"
    );
    assert_eq!(broker.metrics().connections_refused.get(), 1);
    assert_eq!(broker.metrics().tls_handshakes.get(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_peers_do_not_stall_other_handshakes() {
    let dir = tempfile::tempdir().unwrap();
    let pki = server_pki(dir.path());
    let sink = Arc::new(InstantSink::default());
    let mut config = tls_config(&pki);
    config.handshake_timeout = Duration::from_secs(1);
    let broker = start(sink.clone(), config, None).unwrap();
    let addr = broker.tls_addr().unwrap();
    let tls = client_tls(&pki.ca, None);

    let mut silent = Vec::new();
    for _ in 0..10 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    // Half a ClientHello: the handshake starts and then stalls.
    let mut hello = Vec::new();
    rustls::ClientConnection::new(tls.clone(), ServerName::try_from("localhost").unwrap())
        .unwrap()
        .write_tls(&mut hello)
        .unwrap();
    let mut half = TcpStream::connect(addr).await.unwrap();
    half.write_all(&hello[..hello.len() / 2]).await.unwrap();
    silent.push(half);

    let started = Instant::now();
    let published = tokio::time::timeout(
        Duration::from_secs(2),
        connect_and_publish(addr, "dev-1", None, tls),
    )
    .await;
    assert_eq!(published, Ok(true), "a real client is not held up");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(sink.items.lock().unwrap().len(), 1);

    // Every silent peer is dropped once its handshake time is up.
    for mut peer in silent {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_secs(5), peer.read(&mut byte)).await;
        assert!(
            matches!(read, Ok(Ok(0)) | Ok(Err(_))),
            "silent peer still open: {read:?}"
        );
    }
    assert_eq!(
        counted(|| handshakes_failed(&broker, "timeout"), 11).await,
        11
    );
    assert_eq!(broker.metrics().tls_handshakes.get(), 1);
    assert!(started.elapsed() < Duration::from_secs(4));
}

/// The issue's acceptance case: silent and half-handshaken peers hold TLS
/// connections open while 50 registered devices connect and publish at
/// once, and a device with a wrong password is refused and counted. Every
/// well-behaved device is served long before the silent peers time out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_devices_connect_and_publish_while_silent_peers_hold_connections() {
    let dir = tempfile::tempdir().unwrap();
    let pki = server_pki(dir.path());
    let sink = Arc::new(InstantSink::default());
    let mut config = tls_config(&pki);
    // Far longer than the devices may take: they must not wait for it.
    config.handshake_timeout = Duration::from_secs(60);
    let names: Vec<String> = (0..50).map(|i| format!("dev-{i:02}")).collect();
    let devices = registry(
        dir.path(),
        &names.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let broker = start(sink.clone(), config, Some(devices)).unwrap();
    let addr = broker.tls_addr().unwrap();
    let tls = client_tls(&pki.ca, None);

    let mut silent = Vec::new();
    for _ in 0..5 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let mut hello = Vec::new();
    rustls::ClientConnection::new(tls.clone(), ServerName::try_from("localhost").unwrap())
        .unwrap()
        .write_tls(&mut hello)
        .unwrap();
    for _ in 0..5 {
        let mut half = TcpStream::connect(addr).await.unwrap();
        half.write_all(&hello[..hello.len() / 2]).await.unwrap();
        silent.push(half);
    }

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for name in &names {
        let (name, tls) = (name.clone(), tls.clone());
        tasks.spawn(async move {
            let ok = connect_and_publish(addr, &name, Some((&name, PASSWORD)), tls).await;
            (name, ok)
        });
    }
    let (intruder, tls_intruder) = ("dev-00".to_string(), tls.clone());
    let wrong = tokio::spawn(async move {
        let (_client, mut events) = tls_client(
            addr,
            "intruder",
            Some((&intruder, "not-the-password")),
            tls_intruder,
        );
        connack(&mut events).await
    });
    let mut failed = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        let (name, ok) = joined.unwrap();
        if !ok {
            failed.push(name);
        }
    }
    assert!(
        failed.is_empty(),
        "not served after {:?}: {failed:?}",
        started.elapsed()
    );
    assert_eq!(
        wrong.await.unwrap(),
        Connack::Refused(ConnectReturnCode::BadUserNamePassword)
    );
    assert_eq!(sink.items.lock().unwrap().len(), 50);
    assert_eq!(broker.metrics().tls_handshakes.get(), 51);
    assert_eq!(broker.metrics().connections_refused.get(), 1);
    // The silent peers are still waiting out their handshake time: every
    // device was served while they held their connections.
    assert_eq!(handshakes_failed(&broker, "timeout"), 0);
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_max_connections_new_tls_connections_are_closed_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let pki = server_pki(dir.path());
    let mut config = tls_config(&pki);
    config.max_connections = 2;
    let broker = start(Arc::default(), config, None).unwrap();
    let addr = broker.tls_addr().unwrap();
    let _held = [
        TcpStream::connect(addr).await.unwrap(),
        TcpStream::connect(addr).await.unwrap(),
    ];
    let mut third = TcpStream::connect(addr).await.unwrap();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), third.read(&mut byte)).await;
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    assert_eq!(counted(|| refused(&broker, "limit"), 1).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_never_closes_after_a_refused_login_does_not_keep_its_slot() {
    let dir = tempfile::tempdir().unwrap();
    let pki = server_pki(dir.path());
    let mut config = tls_config(&pki);
    config.max_connections = 1;
    let devices = registry(dir.path(), &["dev-a"]);
    let broker = start(Arc::new(InstantSink::default()), config, Some(devices)).unwrap();
    let addr = broker.tls_addr().unwrap();
    let tls = client_tls(&pki.ca, None);

    // A CONNECT with a wrong password, then silence, never closing.
    let tcp = TcpStream::connect(addr).await.unwrap();
    let mut stream = tokio_rustls::TlsConnector::from(tls.clone())
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let connect = rumqttd::protocol::Packet::Connect(
        rumqttd::protocol::Connect {
            keep_alive: 30,
            client_id: "dev-a-client".into(),
            clean_session: true,
        },
        None,
        None,
        None,
        Some(rumqttd::protocol::Login {
            username: "dev-a".into(),
            password: "not the password".into(),
        }),
    );
    let mut bytes = bytes::BytesMut::new();
    rumqttd::protocol::Protocol::write(&rumqttd::protocol::v4::V4, connect, &mut bytes).unwrap();
    stream.write_all(&bytes).await.unwrap();
    // CONNACK 0x04 (bad user name or password), then the gateway closes its end.
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    assert!(
        matches!(read, Ok(Ok(_)) | Ok(Err(_))),
        "the gateway closes its end: {read:?}"
    );
    assert!(
        answer.is_empty() || answer == [0x20, 0x02, 0x00, 0x04],
        "{answer:?}"
    );

    // Its slot is free again for a real device.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(connect_and_publish(addr, "dev-a", Some(("dev-a", PASSWORD)), tls).await);
    assert_eq!(refused(&broker, "limit"), 0);
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_certificate_is_the_device_identity() {
    let dir = tempfile::tempdir().unwrap();
    let pki = server_pki(dir.path());
    let devices_ca = Ca::new("devices CA");
    let other_ca = Ca::new("someone else's CA");
    let mut config = tls_config(&pki);
    config.client_ca = Some(write(dir.path(), "devices-ca.pem", &devices_ca.pem));
    let sink = Arc::new(InstantSink::default());
    let devices = registry(dir.path(), &["dev-a", "dev-b"]);
    let broker = start(sink.clone(), config, Some(devices)).unwrap();
    let addr = broker.tls_addr().unwrap();

    // No certificate, even with the right password.
    let no_cert = client_tls(&pki.ca, None);
    assert!(!connect_and_publish(addr, "dev-a", Some(("dev-a", PASSWORD)), no_cert).await);
    // A certificate from another CA.
    let foreign = client_tls(&pki.ca, Some(&other_ca.issue("dev-a", &[])));
    assert!(!connect_and_publish(addr, "dev-a", Some(("dev-a", PASSWORD)), foreign).await);
    assert_eq!(
        counted(|| handshakes_failed(&broker, "client_cert"), 2).await,
        2
    );

    // A valid certificate of dev-b cannot log in as dev-a: CONNACK "not authorized".
    let dev_b = client_tls(&pki.ca, Some(&devices_ca.issue("dev-b", &[])));
    let (_client, mut events) = tls_client(addr, "b-as-a", Some(("dev-a", PASSWORD)), dev_b);
    assert_eq!(
        connack(&mut events).await,
        Connack::Refused(ConnectReturnCode::NotAuthorized)
    );
    assert_eq!(
        counted(|| refused(&broker, "identity_mismatch"), 1).await,
        1
    );

    // A valid certificate of an unregistered device.
    let dev_c = client_tls(&pki.ca, Some(&devices_ca.issue("dev-c", &[])));
    assert!(!connect_and_publish(addr, "dev-c", Some(("dev-c", "")), dev_c).await);
    assert_eq!(broker.metrics().connections_refused.get(), 1);
    assert!(sink.items.lock().unwrap().is_empty());

    // dev-a's own certificate, username dev-a, no password.
    let dev_a = client_tls(&pki.ca, Some(&devices_ca.issue("dev-a", &[])));
    assert!(connect_and_publish(addr, "dev-a", Some(("dev-a", "")), dev_a.clone()).await);
    let items = sink.items.lock().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].device_id, "dev-a");

    // The certificate binds topics too: dev-a may not publish as dev-b.
    let (client, mut events) = tls_client(addr, "a-as-b", Some(("dev-a", "")), dev_a);
    assert_eq!(connack(&mut events).await, Connack::Accepted);
    client
        .publish(
            "devices/dev-b/telemetry",
            QoS::AtLeastOnce,
            false,
            vec![0xa0],
        )
        .await
        .unwrap();
    assert!(!puback(&mut events).await);
}

#[test]
fn bad_tls_files_fail_start_with_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let pki = server_pki(dir.path());
    let start_err = |config: TlsConfig| {
        start(Arc::default(), config, None)
            .err()
            .expect("start must fail")
            .to_string()
    };

    let missing = dir.path().join("nowhere.pem");
    let mut config = tls_config(&pki);
    config.cert = missing.clone();
    let message = start_err(config);
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
    assert!(message.contains("certificate"), "{message}");

    let garbage = write(dir.path(), "garbage.key", "this is not a key\n");
    let mut config = tls_config(&pki);
    config.key = garbage.clone();
    let message = start_err(config);
    assert!(
        message.contains(&garbage.display().to_string()),
        "{message}"
    );
    assert!(message.contains("no PEM private key"), "{message}");

    let other = pki.ca.issue("other", &["127.0.0.1"]);
    let wrong_key = write(dir.path(), "other.key", &other.key_pem);
    let mut config = tls_config(&pki);
    config.key = wrong_key.clone();
    let message = start_err(config);
    assert!(
        message.contains(&wrong_key.display().to_string()),
        "{message}"
    );
    assert!(message.contains("does not belong"), "{message}");

    let mut config = tls_config(&pki);
    config.client_ca = Some(pki.key.clone());
    let message = start_err(config);
    assert!(
        message.contains(&pki.key.display().to_string()),
        "{message}"
    );
    assert!(message.contains("client CA"), "{message}");
}
