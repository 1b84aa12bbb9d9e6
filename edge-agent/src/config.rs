//! Configuration: a TOML file, then `EDGE_AGENT_*` environment variables,
//! then command-line flags, each overriding the one before. `FileConfig` is
//! what the file holds (every field optional, defaults in one place);
//! `validate` turns it into the runtime `Config`, naming the field at fault.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::spool::{FullPolicy, KeyRing, SpoolOptions};

/// The commented default configuration printed by `edge-agent config init`.
pub const DEFAULT_TOML: &str = r#"# edge-agent configuration. Every setting is optional; shown are the defaults.
# Environment variables (EDGE_AGENT_UPLINK_TOKEN, ...) and flags override this file.

[gateway]
# Name of this gateway in the cloud: [A-Za-z0-9_.-]{1,64}. Default: the host name.
# id = "gateway-1"

[mqtt]
# Where devices connect (MQTT 3.1.1). Port 0 picks a free port.
listen = "127.0.0.1:1884"
# Largest payload accepted, in bytes; larger publishes are refused.
max_payload_bytes = 65536
# Deepest nesting of CBOR arrays, maps and tags accepted in a payload.
max_depth = 16
# Time a new connection has to send CONNECT.
connect_timeout = "5s"
# Most concurrent device connections.
max_connections = 10000
# Longest a PUBACK waits for the spool; past it the connection is dropped.
durable_timeout = "10s"
# Registered devices (device_id:argon2 hash lines, managed with `edge-agent
# devices`). When set, a device connects with username = its device id and
# may publish only under devices/{device_id}/. When unset, any client may
# publish as any device: for a closed network or a demo only.
# devices_file = "devices"

# MQTT over TLS: a second listener, on beside mqtt.listen. Keep mqtt.listen
# on 127.0.0.1 (the default) so that devices on the network can only come in
# over TLS. The files are read and checked at start; a bad one stops it.
# [mqtt.tls]
# Where devices connect over TLS (MQTT over TLS is conventionally port 8883).
# listen = "0.0.0.0:8883"
# PEM server certificate (then any intermediates) and its private key.
# cert = "server.pem"
# key = "server.key"
# PEM CA certificates that sign device certificates. When set, every TLS
# client must present a certificate from them; its subject CN is the device
# id, the CONNECT username must equal it, and no password is needed (with
# devices_file set, the device must still be registered there).
# client_ca = "devices-ca.pem"
# Time a client has to complete the TLS handshake; silent peers are dropped.
# handshake_timeout = "10s"
# Most concurrent TLS connections (handshaking or open); more are closed at
# once. mqtt.max_connections still bounds all connections together.
# max_connections = 10000

[spool]
# Directory of the sled spool.
dir = "edge-spool"
# Longest a group commit waits for more publishes before it flushes. It
# waits no longer than the last write and sync took, so a fast disk is
# synced more often (lower PUBACK latency) and a slow one less often.
flush_interval = "2ms"
# Most readings written (and flushed) in one group commit.
max_block_records = 1000
# Refused publishes kept for inspection.
max_dead_letters = 10000
# Most bytes of readings kept on disk; past it, full_policy applies.
max_bytes = 1073741824
# Readings older than this are dropped, sent or not.
max_age = "7days"
# "drop-oldest": delete the oldest readings to make room (counted in
# edge_spool_dropped_total{reason="full"}); "reject-new": stop acknowledging
# QoS 1 publishes, so devices keep their readings and resend them later.
full_policy = "drop-oldest"
# Free space left on the spool's filesystem (capped at 10 % of it): below it,
# new readings get no PUBACK, as on a full disk, before sled runs out of room.
min_free_bytes = 67108864
# Encryption at rest: a key file (mode 0600, made and rotated with `edge-agent
# keys rotate`) whose last key seals every new block and dead letter with
# XChaCha20-Poly1305. The keys may come from EDGE_AGENT_SPOOL_KEYS instead
# (the file's text); never put a key in this file. A sealed spool opened
# without its key is refused and left untouched. Unset: no encryption.
# key_file = "/etc/edge-agent/spool.keys"

[uplink]
# Base URL of the cloud-sync collector: http:// or https://.
url = "http://127.0.0.1:8480"
# PEM file of CA certificates trusted for an https:// collector, on top of the
# system's trust store (a private CA, or the collector's self-signed certificate).
# ca_file = "collector-ca.pem"
# A client certificate for a collector that requires one (its
# server.tls_client_ca): the PEM certificate (then any intermediates) and its
# private key (PKCS#8, PKCS#1 or SEC1, unencrypted). Both or neither; read and
# checked at start. Keep the key file mode 0600. The token is still required.
# client_cert = "gateway.pem"
# client_key = "gateway.key"
# Bearer token of this gateway (required).
# token = "..."
# A batch closes at this many readings, this many bytes, or this long after its first reading.
max_batch_records = 1000
max_batch_bytes = 1048576
linger = "100ms"
# Give up on a request after this long and retry.
request_timeout = "30s"
# Retries wait between these bounds, doubling, with jitter.
backoff_min = "100ms"
backoff_max = "30s"
# Request body compression: "zstd", "gzip" or "none".
compression = "zstd"
# Batch requests in flight at once while catching up after an outage.
concurrency = 4

[admin]
# /healthz and /metrics. Port 0 picks a free port.
listen = "127.0.0.1:8481"

[audit]
# Hash-chained log (JSON lines) of admin commands run on this gateway:
# spool erase, purge and recover, keys rotate, devices add, rotate and remove.
# Check it with `edge-agent audit verify`. Keep it outside spool.dir.
file = "edge-audit.log"
"#;

/// The configuration file as written; absent fields take defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    #[serde(default)]
    pub gateway: GatewaySection,
    #[serde(default)]
    pub mqtt: MqttSection,
    #[serde(default)]
    pub spool: SpoolSection,
    #[serde(default)]
    pub uplink: UplinkSection,
    #[serde(default)]
    pub admin: AdminSection,
    #[serde(default)]
    pub audit: AuditSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    pub id: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttSection {
    pub listen: Option<String>,
    pub max_payload_bytes: Option<usize>,
    pub max_depth: Option<usize>,
    pub connect_timeout: Option<String>,
    pub max_connections: Option<usize>,
    pub durable_timeout: Option<String>,
    pub devices_file: Option<PathBuf>,
    pub tls: Option<TlsSection>,
}

/// `[mqtt.tls]`: present means the TLS listener is on, and then `listen`,
/// `cert` and `key` are required.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSection {
    pub listen: Option<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub client_ca: Option<PathBuf>,
    pub handshake_timeout: Option<String>,
    pub max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolSection {
    pub dir: Option<PathBuf>,
    pub flush_interval: Option<String>,
    pub max_block_records: Option<usize>,
    pub max_dead_letters: Option<u64>,
    pub max_bytes: Option<u64>,
    pub max_age: Option<String>,
    pub full_policy: Option<String>,
    pub min_free_bytes: Option<u64>,
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkSection {
    pub url: Option<String>,
    pub token: Option<String>,
    pub ca_file: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub max_batch_records: Option<usize>,
    pub max_batch_bytes: Option<usize>,
    pub linger: Option<String>,
    pub request_timeout: Option<String>,
    pub backoff_min: Option<String>,
    pub backoff_max: Option<String>,
    pub compression: Option<String>,
    pub concurrency: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminSection {
    pub listen: Option<String>,
}

/// `[audit]`: where the gateway's audit log of admin commands goes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    pub file: Option<PathBuf>,
}

/// Request body compression on the uplink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

/// Uplink settings, after validation.
#[derive(Debug, Clone)]
pub struct UplinkConfig {
    /// Base URL of the collector, without a trailing slash.
    pub url: String,
    pub token: String,
    /// Extra trusted CAs for an https collector (`uplink.ca_file`), added to
    /// the system's trust store. Empty by default.
    pub ca_certs: CaCertificates,
    /// The certificate the gateway presents to a collector that requires
    /// one (`uplink.client_cert` and `uplink.client_key`). Default: none.
    pub client_identity: Option<ClientIdentity>,
    pub max_batch_records: usize,
    pub max_batch_bytes: usize,
    pub linger: Duration,
    pub request_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub compression: Compression,
    /// Batch requests in flight at once while a backlog drains (default 4).
    /// Acks stay in seq order; live traffic still goes one batch per linger.
    pub concurrency: usize,
}

/// CA certificates read from `uplink.ca_file`.
#[derive(Clone, Default)]
pub struct CaCertificates {
    /// Where they came from, for messages.
    pub file: Option<PathBuf>,
    pub certs: Vec<reqwest::Certificate>,
}

impl std::fmt::Debug for CaCertificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaCertificates")
            .field("file", &self.file)
            .field("certs", &self.certs.len())
            .finish()
    }
}

impl CaCertificates {
    /// Reads a PEM bundle; errors name the field and the file.
    pub fn load(path: &Path) -> anyhow::Result<CaCertificates> {
        let pem = std::fs::read(path)
            .with_context(|| format!("uplink.ca_file {}: cannot read", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("uplink.ca_file {}: not PEM", path.display()))?;
        if certs.is_empty() {
            bail!(
                "uplink.ca_file {}: no PEM certificate found",
                path.display()
            );
        }
        let ca = CaCertificates {
            file: Some(path.to_path_buf()),
            certs,
        };
        // A PEM block that is not an X.509 certificate fails only when the
        // client is built: find it now, not at the first upload.
        http_client(&ca, None, Duration::from_secs(30))?;
        Ok(ca)
    }
}

/// The gateway's client certificate and key, from `uplink.client_cert` and
/// `uplink.client_key`. `Debug` shows the file names only: the key never
/// reaches a log line or `config check`.
#[derive(Clone)]
pub struct ClientIdentity {
    /// PEM certificate, then any intermediates.
    pub cert_file: PathBuf,
    /// PEM private key of that certificate.
    pub key_file: PathBuf,
    identity: reqwest::Identity,
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientIdentity")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .finish_non_exhaustive()
    }
}

impl ClientIdentity {
    /// Reads the certificate and key and checks that they belong together;
    /// errors name the field and the file, never the file's contents.
    pub fn load(cert: &Path, key: &Path) -> anyhow::Result<ClientIdentity> {
        let cert_pem = std::fs::read(cert)
            .with_context(|| format!("uplink.client_cert {}: cannot read", cert.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&cert_pem)
            .with_context(|| format!("uplink.client_cert {}: not PEM", cert.display()))?;
        if certs.is_empty() {
            bail!(
                "uplink.client_cert {}: no PEM certificate found",
                cert.display()
            );
        }
        let key_pem = std::fs::read(key)
            .with_context(|| format!("uplink.client_key {}: cannot read", key.display()))?;
        // reqwest takes the certificates and the key as one PEM buffer; with
        // the certificates checked above, a failure here is the key's.
        let mut pem = cert_pem;
        pem.push(b'\n');
        pem.extend_from_slice(&key_pem);
        let identity = reqwest::Identity::from_pem(&pem).with_context(|| {
            format!(
                "uplink.client_key {}: no PEM private key found (PKCS#8, PKCS#1 or SEC1, unencrypted)",
                key.display()
            )
        })?;
        let identity = ClientIdentity {
            cert_file: cert.to_path_buf(),
            key_file: key.to_path_buf(),
            identity,
        };
        // rustls checks that the key is the certificate's (and that it can
        // sign with it) only when the client is built: do it now.
        http_client(
            &CaCertificates::default(),
            Some(&identity),
            Duration::from_secs(30),
        )?;
        Ok(identity)
    }
}

impl UplinkConfig {
    /// The uplink's HTTP client: rustls (ring) with the system's roots plus
    /// `uplink.ca_file`, presenting the client certificate when there is one.
    pub fn http_client(&self) -> anyhow::Result<reqwest::Client> {
        http_client(
            &self.ca_certs,
            self.client_identity.as_ref(),
            self.request_timeout,
        )
    }
}

fn http_client(
    ca: &CaCertificates,
    identity: Option<&ClientIdentity>,
    timeout: Duration,
) -> anyhow::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder().timeout(timeout);
    for cert in &ca.certs {
        builder = builder.add_root_certificate(cert.clone());
    }
    if let Some(identity) = identity {
        builder = builder.identity(identity.identity.clone());
    }
    builder.build().with_context(|| match (identity, &ca.file) {
        // The CA bundle was checked alone when it was loaded.
        (Some(identity), _) => format!(
            "uplink.client_cert {} with uplink.client_key {}: unusable (is the key the certificate's?)",
            identity.cert_file.display(),
            identity.key_file.display()
        ),
        (None, Some(path)) => format!("uplink.ca_file {}: unusable certificate", path.display()),
        (None, None) => "cannot build the uplink http client".to_string(),
    })
}

/// The agent's runtime configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub gateway_id: String,
    pub mqtt: broker::BrokerConfig,
    pub spool_dir: PathBuf,
    pub spool: SpoolOptions,
    pub uplink: UplinkConfig,
    pub admin_listen: SocketAddr,
}

impl FileConfig {
    pub fn parse(text: &str) -> anyhow::Result<FileConfig> {
        Ok(toml::from_str(text)?)
    }

    /// Checks every field and fills in defaults.
    pub fn validate(self) -> anyhow::Result<Config> {
        let gateway_id = self.gateway.id.unwrap_or_else(default_gateway_id);
        telemetry::validate_device_id(&gateway_id).context("gateway.id")?;

        let mqtt = self.mqtt;
        let defaults = broker::BrokerConfig::default();
        let mut limits = telemetry::Limits::default();
        limits.max_bytes = mqtt.max_payload_bytes.unwrap_or(limits.max_bytes);
        limits.max_depth = mqtt.max_depth.unwrap_or(limits.max_depth);
        if limits.max_bytes == 0 || limits.max_bytes > 16 * 1024 * 1024 {
            bail!("mqtt.max_payload_bytes must be between 1 and 16777216");
        }
        if limits.max_depth == 0 || limits.max_depth > 64 {
            bail!("mqtt.max_depth must be between 1 and 64");
        }
        let devices = match &mqtt.devices_file {
            Some(path) => Some(std::sync::Arc::new(
                broker::DeviceRegistry::load(path).context("mqtt.devices_file")?,
            )),
            None => None,
        };
        let tls = match mqtt.tls {
            Some(section) => Some(section.validate()?),
            None => None,
        };
        let mqtt = broker::BrokerConfig {
            devices,
            tls,
            listen: addr("mqtt.listen", mqtt.listen, defaults.listen)?,
            max_connections: mqtt.max_connections.unwrap_or(defaults.max_connections),
            limits,
            connect_timeout: duration(
                "mqtt.connect_timeout",
                mqtt.connect_timeout,
                defaults.connect_timeout,
            )?,
            durable_timeout: duration(
                "mqtt.durable_timeout",
                mqtt.durable_timeout,
                defaults.durable_timeout,
            )?,
            ..defaults
        };
        if mqtt.connect_timeout > Duration::from_millis(u16::MAX.into()) {
            bail!("mqtt.connect_timeout must be at most 65s");
        }

        let (spool_dir, spool) = self.spool.validate()?;

        let up = self.uplink;
        let url = up.url.unwrap_or_else(|| "http://127.0.0.1:8480".into());
        let parsed = reqwest::Url::parse(&url).with_context(|| format!("uplink.url {url:?}"))?;
        if parsed.scheme() != "http" && parsed.scheme() != "https" {
            bail!("uplink.url must be an http:// or https:// URL, not {url:?}");
        }
        let ca_certs = match &up.ca_file {
            Some(path) => CaCertificates::load(path)?,
            None => CaCertificates::default(),
        };
        let client_identity = match (&up.client_cert, &up.client_key) {
            (Some(cert), Some(key)) => Some(ClientIdentity::load(cert, key)?),
            (None, None) => None,
            (Some(_), None) => bail!("uplink.client_key is required with uplink.client_cert"),
            (None, Some(_)) => bail!("uplink.client_cert is required with uplink.client_key"),
        };
        let token = up.token.unwrap_or_default();
        if token.is_empty() {
            bail!(
                "uplink.token is required (config file, EDGE_AGENT_UPLINK_TOKEN or --uplink-token)"
            );
        }
        let compression = match up.compression.as_deref().unwrap_or("zstd") {
            "zstd" => Compression::Zstd,
            "gzip" => Compression::Gzip,
            "none" => Compression::None,
            other => bail!("uplink.compression must be zstd, gzip or none, not {other:?}"),
        };
        let uplink = UplinkConfig {
            url: url.trim_end_matches('/').to_string(),
            token,
            ca_certs,
            client_identity,
            max_batch_records: up.max_batch_records.unwrap_or(1000),
            max_batch_bytes: up.max_batch_bytes.unwrap_or(1024 * 1024),
            linger: duration("uplink.linger", up.linger, Duration::from_millis(100))?,
            request_timeout: duration(
                "uplink.request_timeout",
                up.request_timeout,
                Duration::from_secs(30),
            )?,
            backoff_min: duration(
                "uplink.backoff_min",
                up.backoff_min,
                Duration::from_millis(100),
            )?,
            backoff_max: duration(
                "uplink.backoff_max",
                up.backoff_max,
                Duration::from_secs(30),
            )?,
            compression,
            concurrency: up.concurrency.unwrap_or(crate::uplink::DEFAULT_CONCURRENCY),
        };
        if uplink.concurrency == 0 {
            bail!("uplink.concurrency must be at least 1");
        }
        if uplink.max_batch_records == 0 || uplink.max_batch_bytes == 0 {
            bail!("uplink.max_batch_records and uplink.max_batch_bytes must be at least 1");
        }
        if uplink.backoff_min.is_zero() || uplink.backoff_min > uplink.backoff_max {
            bail!("uplink.backoff_min must be above zero and at most uplink.backoff_max");
        }

        Ok(Config {
            gateway_id,
            mqtt,
            spool_dir,
            spool,
            uplink,
            admin_listen: addr(
                "admin.listen",
                self.admin.listen,
                SocketAddr::from(([127, 0, 0, 1], 8481)),
            )?,
        })
    }
}

impl TlsSection {
    /// The TLS listener's settings; its files are read and checked here
    /// too, so that `config check` finds a bad certificate or key.
    fn validate(self) -> anyhow::Result<broker::TlsConfig> {
        let required =
            |field: &str| anyhow::anyhow!("mqtt.tls.{field} is required with [mqtt.tls]");
        let listen = self.listen.ok_or_else(|| required("listen"))?;
        let listen: SocketAddr = listen.parse().with_context(|| {
            format!("mqtt.tls.listen {listen:?} is not an address like 0.0.0.0:8883")
        })?;
        let mut tls = broker::TlsConfig::new(
            listen,
            self.cert.ok_or_else(|| required("cert"))?,
            self.key.ok_or_else(|| required("key"))?,
        );
        tls.client_ca = self.client_ca;
        tls.handshake_timeout = duration(
            "mqtt.tls.handshake_timeout",
            self.handshake_timeout,
            tls.handshake_timeout,
        )?;
        if tls.handshake_timeout.is_zero() {
            bail!("mqtt.tls.handshake_timeout must be above zero");
        }
        tls.max_connections = self.max_connections.unwrap_or(tls.max_connections);
        if tls.max_connections == 0 {
            bail!("mqtt.tls.max_connections must be at least 1");
        }
        tls.load().context("mqtt.tls")?;
        Ok(tls)
    }
}

impl SpoolSection {
    /// The spool directory and options; used by `run` and by the offline
    /// `spool` commands, which need no uplink settings.
    pub fn validate(&self) -> anyhow::Result<(PathBuf, SpoolOptions)> {
        let spool_defaults = SpoolOptions::default();
        let full_policy = match self.full_policy.as_deref().unwrap_or("drop-oldest") {
            "drop-oldest" => FullPolicy::DropOldest,
            "reject-new" => FullPolicy::RejectNew,
            other => bail!("spool.full_policy must be drop-oldest or reject-new, not {other:?}"),
        };
        let spool = SpoolOptions {
            max_bytes: self.max_bytes.unwrap_or(spool_defaults.max_bytes),
            max_age: duration(
                "spool.max_age",
                self.max_age.clone(),
                spool_defaults.max_age,
            )?,
            full_policy,
            flush_interval: duration(
                "spool.flush_interval",
                self.flush_interval.clone(),
                spool_defaults.flush_interval,
            )?,
            max_block_records: self
                .max_block_records
                .unwrap_or(spool_defaults.max_block_records),
            max_dead_letters: self
                .max_dead_letters
                .unwrap_or(spool_defaults.max_dead_letters),
            min_free_bytes: self.min_free_bytes.unwrap_or(spool_defaults.min_free_bytes),
            keys: KeyRing::load(self.key_file.as_deref()).context("spool.key_file")?,
            ..spool_defaults
        };
        if spool.max_bytes < 64 * 1024 {
            bail!("spool.max_bytes must be at least 65536");
        }
        if spool.max_block_records == 0 {
            bail!("spool.max_block_records must be at least 1");
        }

        let dir = self
            .dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("edge-spool"));
        Ok((dir, spool))
    }
}

fn addr(field: &str, value: Option<String>, default: SocketAddr) -> anyhow::Result<SocketAddr> {
    match value {
        None => Ok(default),
        Some(v) => v
            .parse()
            .with_context(|| format!("{field} {v:?} is not an address like 127.0.0.1:1884")),
    }
}

fn duration(field: &str, value: Option<String>, default: Duration) -> anyhow::Result<Duration> {
    match value {
        None => Ok(default),
        Some(v) => humantime::parse_duration(&v)
            .with_context(|| format!("{field} {v:?} is not a duration like \"2ms\" or \"30s\"")),
    }
}

/// The host name made into a valid gateway id, or "gateway".
fn default_gateway_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let id: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .take(telemetry::MAX_DEVICE_ID_LEN)
        .collect();
    if id.is_empty() {
        "gateway".into()
    } else {
        id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_toml_parses_to_the_defaults() {
        let mut file = FileConfig::parse(DEFAULT_TOML).unwrap();
        file.uplink.token = Some("t".into());
        let config = file.validate().unwrap();
        assert_eq!(config.mqtt.listen, "127.0.0.1:1884".parse().unwrap());
        assert_eq!(config.spool.flush_interval, Duration::from_millis(2));
        assert_eq!(config.uplink.linger, Duration::from_millis(100));
        assert_eq!(config.uplink.compression, Compression::Zstd);
        assert_eq!(config.admin_listen, "127.0.0.1:8481".parse().unwrap());
        assert_eq!(config.spool_dir, PathBuf::from("edge-spool"));
        let defaults = SpoolOptions::default();
        assert_eq!(config.spool.max_bytes, defaults.max_bytes);
        assert_eq!(config.spool.max_age, defaults.max_age);
        assert_eq!(config.spool.full_policy, FullPolicy::DropOldest);
    }

    #[test]
    fn errors_name_the_field() {
        let err = FileConfig::parse("[spool]\nflush_interval = \"soon\"\n[uplink]\ntoken = \"t\"")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(
            format!("{err:#}").contains("spool.flush_interval"),
            "{err:#}"
        );
        let err = FileConfig::default().validate().unwrap_err();
        assert!(err.to_string().contains("uplink.token"), "{err}");
        let err = FileConfig::parse("[mqtt]\nlisten = \"nowhere\"\n[uplink]\ntoken = \"t\"")
            .unwrap()
            .validate()
            .unwrap_err();
        assert!(format!("{err:#}").contains("mqtt.listen"), "{err:#}");
    }

    #[test]
    fn tls_settings_are_required_and_their_files_checked() {
        let validate = |tls: &str| {
            FileConfig::parse(&format!("[mqtt.tls]\n{tls}\n[uplink]\ntoken = \"t\""))
                .unwrap()
                .validate()
                .map(|config| config.mqtt.tls)
        };
        let err = validate("listen = \"127.0.0.1:0\"\ncert = \"c.pem\"").unwrap_err();
        assert!(err.to_string().contains("mqtt.tls.key"), "{err}");
        let err = validate("listen = \"nowhere\"\ncert = \"c.pem\"\nkey = \"k.pem\"").unwrap_err();
        assert!(format!("{err:#}").contains("mqtt.tls.listen"), "{err:#}");

        let dir = tempfile::tempdir().unwrap();
        let cert = dir.path().join("missing.pem");
        let err = validate(&format!(
            "listen = \"127.0.0.1:0\"\ncert = {cert:?}\nkey = \"k.pem\""
        ))
        .unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("mqtt.tls"), "{message}");
        assert!(message.contains(&cert.display().to_string()), "{message}");

        let config = FileConfig::parse("[uplink]\ntoken = \"t\"")
            .unwrap()
            .validate()
            .unwrap();
        assert!(config.mqtt.tls.is_none(), "TLS is off by default");
    }

    #[test]
    fn the_commented_tls_section_is_valid_once_uncommented() {
        let start = DEFAULT_TOML.find("# [mqtt.tls]").unwrap();
        let end = DEFAULT_TOML.find("[spool]").unwrap();
        let block: String = DEFAULT_TOML[start..end]
            .lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest) if rest.starts_with('[') || rest.contains(" = ") => rest,
                _ => line,
            })
            .map(|line| format!("{line}\n"))
            .collect();
        let text = format!("{}{block}{}", &DEFAULT_TOML[..start], &DEFAULT_TOML[end..]);
        let mut file = FileConfig::parse(&text).unwrap();
        file.uplink.token = Some("t".into());
        let tls = file.mqtt.tls.as_ref().expect("a [mqtt.tls] section");
        assert_eq!(tls.handshake_timeout.as_deref(), Some("10s"));
        assert_eq!(tls.client_ca, Some(PathBuf::from("devices-ca.pem")));
        // The example files do not exist here: the error names the first.
        let err = file.validate().unwrap_err();
        assert!(format!("{err:#}").contains("server.pem"), "{err:#}");
    }

    #[test]
    fn https_uplinks_and_their_ca_file_are_checked() {
        let validate = |uplink: &str| {
            FileConfig::parse(&format!("[uplink]\ntoken = \"t\"\n{uplink}"))
                .unwrap()
                .validate()
        };
        let config = validate("url = \"https://collector.example:8480\"").unwrap();
        assert_eq!(config.uplink.url, "https://collector.example:8480");
        assert!(config.uplink.ca_certs.certs.is_empty());
        let err = validate("url = \"ftp://collector.example\"").unwrap_err();
        assert!(err.to_string().contains("uplink.url"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing.pem");
        let err = validate(&format!("ca_file = {missing:?}")).unwrap_err();
        let message = format!("{err:#}");
        assert!(message.contains("uplink.ca_file"), "{message}");
        assert!(message.contains("missing.pem"), "{message}");
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let err = validate(&format!("ca_file = {not_pem:?}")).unwrap_err();
        assert!(format!("{err:#}").contains("no PEM certificate"), "{err:#}");
    }

    #[test]
    fn client_certificates_come_in_pairs_and_their_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let self_signed = |cn: &str| {
            let key = rcgen::KeyPair::generate().unwrap();
            let mut params = rcgen::CertificateParams::default();
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
            (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
        };
        let (cert_pem, key_pem) = self_signed("gw-1");
        let cert = write("gw.pem", cert_pem);
        let key = write("gw.key", key_pem.clone());
        let other_key = write("other.key", self_signed("gw-2").1);
        let missing = dir.path().join("missing.pem");
        let garbage = write("garbage.pem", "hello".into());
        let validate = |cert: Option<&Path>, key: Option<&Path>| {
            let mut file = FileConfig::parse("[uplink]\ntoken = \"t\"").unwrap();
            file.uplink.client_cert = cert.map(Path::to_path_buf);
            file.uplink.client_key = key.map(Path::to_path_buf);
            file.validate().map(|config| config.uplink.client_identity)
        };

        assert!(validate(None, None).unwrap().is_none(), "off by default");
        let identity = validate(Some(&cert), Some(&key)).unwrap().unwrap();
        assert_eq!(
            (identity.cert_file.as_path(), identity.key_file.as_path()),
            (cert.as_path(), key.as_path())
        );
        // The key's bytes never show, not even in `Debug` of the whole config.
        let config = format!("{:?}", validate(Some(&cert), Some(&key)).unwrap());
        let key_body = key_pem.lines().nth(1).unwrap();
        assert!(
            !config.contains(key_body) && !config.contains("PRIVATE"),
            "{config}"
        );

        for (cert, key, expected) in [
            (Some(&cert), None, vec!["uplink.client_key is required"]),
            (None, Some(&key), vec!["uplink.client_cert is required"]),
            (
                Some(&missing),
                Some(&key),
                vec!["uplink.client_cert", "missing.pem"],
            ),
            (
                Some(&garbage),
                Some(&key),
                vec!["uplink.client_cert", "garbage.pem", "no PEM certificate"],
            ),
            // A key in place of the certificate holds no certificate either.
            (
                Some(&key),
                Some(&key),
                vec!["uplink.client_cert", "gw.key", "no PEM certificate"],
            ),
            (
                Some(&cert),
                Some(&missing),
                vec!["uplink.client_key", "missing.pem"],
            ),
            (
                Some(&cert),
                Some(&garbage),
                vec!["uplink.client_key", "garbage.pem", "no PEM private key"],
            ),
            (
                Some(&cert),
                Some(&cert),
                vec!["uplink.client_key", "gw.pem", "no PEM private key"],
            ),
            (
                Some(&cert),
                Some(&other_key),
                vec!["uplink.client_cert", "uplink.client_key", "other.key"],
            ),
        ] {
            let err = validate(cert.map(PathBuf::as_path), key.map(PathBuf::as_path)).unwrap_err();
            let message = format!("{err:#}");
            for part in expected {
                assert!(message.contains(part), "{part:?} not in {message}");
            }
            assert!(!message.contains("PRIVATE"), "{message}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = FileConfig::parse("[mqtt]\nlisen = \"127.0.0.1:1\"").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
    }
}
