//! Configuration: the TOML file format (one struct per section), the
//! overrides that environment variables and flags apply on top of it, and
//! the validated runtime [`Config`] the server runs with.
//!
//! Precedence, lowest first: built-in defaults < TOML file < `CLOUD_SYNC_*`
//! environment variables < command-line flags. Defaults live in this file only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default listen address: loopback, so a fresh install is not exposed.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8480";
/// Default data directory, relative to the working directory.
pub const DEFAULT_DATA_DIR: &str = "cloud-sync-data";
/// Default bound on a request body after decompression: 16 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// The value of `store.url` that selects the embedded sled store (the default).
pub const SLED_STORE: &str = "sled";
/// Default bound on the PostgreSQL connections of one collector.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// Default burst of the per-gateway ingest rate limit, batches.
pub const DEFAULT_INGEST_BURST: u32 = 20;
/// Name of the audit log inside `store.data_dir` unless `audit.file` names another.
pub const DEFAULT_AUDIT_FILE_NAME: &str = "audit.log";
/// Default time between two retention runs.
pub const DEFAULT_RETENTION_INTERVAL: &str = "1h";
/// The value of a retention period that keeps data forever.
pub const KEEP_FOREVER: &str = "forever";

/// Runtime configuration, after validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address the HTTP server binds; port 0 picks a free port. Default 127.0.0.1:8480.
    pub listen: SocketAddr,
    /// Directory of the sled store; created when missing. Unused with PostgreSQL.
    pub data_dir: PathBuf,
    /// Which backend stores the data. Default: sled in `data_dir`.
    pub store: StoreBackend,
    /// Plain bearer tokens accepted on `POST /v1/batches` for any gateway
    /// (demos and tests; `token_file` is the managed way). May be empty
    /// when `token_file` is set.
    pub tokens: Vec<String>,
    /// The hashed token file (`cloud-sync tokens`), re-read when it
    /// changes. Default: none.
    pub token_file: Option<PathBuf>,
    /// Whether the query API needs a `read` or `admin` token. Default: on
    /// when `token_file` is set, off otherwise (reads then stay open).
    pub require_read_token: bool,
    /// Per-gateway limit on `POST /v1/batches`; `None` (default) is unlimited.
    pub ingest_rate_limit: Option<RateLimit>,
    /// Serve HTTPS with this certificate and key instead of plain HTTP, and
    /// with `client_ca` require client certificates. Default: none.
    pub tls: Option<TlsFiles>,
    /// Largest request body accepted after decompression, in bytes. Default 16 MiB.
    pub max_body_bytes: usize,
    /// Bounds on each envelope's payload (size, CBOR nesting).
    pub payload_limits: telemetry::Limits,
    /// The hash-chained audit log of admin actions and data reads; `None`
    /// keeps none. Default from the file config: `<data_dir>/audit.log`;
    /// [`Config::new`] (tests, the demo) keeps none.
    pub audit_file: Option<PathBuf>,
    /// What the background retention task deletes; `None` (the default) keeps
    /// everything forever.
    pub retention: Option<Retention>,
}

/// How long data is kept, by point time (SenML time) for points and by
/// arrival at the gateway (`received_at`) for documents.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    /// Period of every device without an override; `None` keeps their data.
    pub default: Option<Duration>,
    /// Per-device periods, winning over `default`; `None` keeps that device's data.
    pub devices: BTreeMap<String, Option<Duration>>,
    /// Time between two runs (the first runs at start). Default 1 h.
    pub interval: Duration,
}

impl Config {
    /// A config with every default, storing in `data_dir` and accepting `tokens`.
    pub fn new(data_dir: impl Into<PathBuf>, tokens: Vec<String>) -> Config {
        Config {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("the default listen address parses"),
            data_dir: data_dir.into(),
            store: StoreBackend::Sled,
            tokens,
            token_file: None,
            require_read_token: false,
            ingest_rate_limit: None,
            tls: None,
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            payload_limits: telemetry::Limits::default(),
            audit_file: None,
            retention: None,
        }
    }

    /// Checks the invariants the server relies on; errors name the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.tokens.is_empty() && self.token_file.is_none() {
            return Err(invalid(
                "auth.tokens",
                "set auth.token_file (managed with `cloud-sync tokens`) or at least one token",
            ));
        }
        if self.require_read_token && self.token_file.is_none() {
            return Err(invalid(
                "auth.require_read_token",
                "read tokens live in auth.token_file, which is not set",
            ));
        }
        if let Some(limit) = &self.ingest_rate_limit {
            if !limit.per_second.is_finite() || limit.per_second <= 0.0 {
                return Err(invalid(
                    "server.ingest_rate_limit",
                    "must be a positive number of batches per second (0 turns it off)",
                ));
            }
            if limit.burst == 0 {
                return Err(invalid("server.ingest_burst", "must be at least 1"));
            }
        }
        for (index, token) in self.tokens.iter().enumerate() {
            if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(invalid(
                    "auth.tokens",
                    format!("token {index} must be non-empty printable ascii without spaces"),
                ));
            }
        }
        if self.max_body_bytes == 0 {
            return Err(invalid("server.max_body_bytes", "must be at least 1"));
        }
        if self.payload_limits.max_bytes == 0 {
            return Err(invalid("payload.max_bytes", "must be at least 1"));
        }
        if self.payload_limits.max_depth == 0 {
            return Err(invalid("payload.max_depth", "must be at least 1"));
        }
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("store.data_dir", "must not be empty"));
        }
        if let StoreBackend::Postgres(postgres) = &self.store {
            if postgres.pool_size == 0 {
                return Err(invalid("store.pool_size", "must be at least 1"));
            }
        }
        if self
            .audit_file
            .as_ref()
            .is_some_and(|f| f.as_os_str().is_empty())
        {
            return Err(invalid("audit.file", "must not be empty"));
        }
        if let Some(retention) = &self.retention {
            if retention.interval.is_zero() {
                return Err(invalid("retention.interval", "must be longer than 0"));
            }
            if retention.default.is_some_and(|d| d.is_zero()) {
                return Err(invalid("retention.default", "must be longer than 0"));
            }
            for (device, period) in &retention.devices {
                telemetry::validate_device_id(device)
                    .map_err(|err| invalid("retention.devices", format!("{device:?}: {err}")))?;
                if period.is_some_and(|d| d.is_zero()) {
                    return Err(invalid(
                        "retention.devices",
                        format!("{device:?}: must be longer than 0"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Where the data lives, for messages: the sled directory, or the
    /// PostgreSQL server and database (never the password).
    pub fn store_description(&self) -> String {
        match &self.store {
            StoreBackend::Sled => format!("sled in {}", self.data_dir.display()),
            StoreBackend::Postgres(postgres) => postgres.url.to_string(),
        }
    }
}

/// A per-gateway token bucket: `per_second` batches on average, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Batches per second, refilled continuously.
    pub per_second: f64,
    /// Most batches posted back to back after an idle spell.
    pub burst: u32,
}

// `per_second` is validated finite, so equality is total in practice.
impl Eq for RateLimit {}

/// The PEM files of the collector's HTTPS listener, read at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server certificate, then any intermediates.
    pub cert: PathBuf,
    /// Its private key: PKCS#8, PKCS#1 or SEC1.
    pub key: PathBuf,
    /// CA certificates that sign the clients' certificates
    /// (`server.tls_client_ca`). When set, a handshake without a certificate
    /// chaining to one of them fails, before any request, for every client
    /// (gateways, the dashboard, query scripts); bearer tokens are still
    /// required on top. Default: none, clients present no certificate.
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// HTTPS with this certificate and key, no client certificates.
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsFiles {
        TlsFiles {
            cert: cert.into(),
            key: key.into(),
            client_ca: None,
        }
    }
}

/// The storage backend of a collector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreBackend {
    /// The embedded sled store in `data_dir`: one process, no setup.
    Sled,
    /// A PostgreSQL database, which any number of collectors may share.
    Postgres(PostgresConfig),
}

/// How a collector reaches PostgreSQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostgresConfig {
    /// Where to connect; options such as `options=-csearch_path=telemetry`
    /// pick the schema.
    pub url: PostgresUrl,
    /// Most connections this collector holds open; each in-flight batch or
    /// query uses one. Default 16.
    pub pool_size: usize,
}

impl PostgresConfig {
    /// A PostgreSQL store at `url` with the default pool size.
    pub fn new(url: &str) -> Result<PostgresConfig, ConfigError> {
        Ok(PostgresConfig {
            url: PostgresUrl::parse(url)?,
            pool_size: DEFAULT_POOL_SIZE,
        })
    }
}

/// A PostgreSQL connection string (`postgres://user:password@host:port/db?options`
/// or `host=... dbname=...`), checked when the config is read. It may hold
/// a password, so `Debug` and `Display` show only user, hosts and database.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    text: String,
    /// Boxed: it is large, and most configs are sled's.
    parsed: Box<tokio_postgres::Config>,
}

impl PostgresUrl {
    /// Parses a connection string; the error never repeats it (it may hold a password).
    pub fn parse(text: &str) -> Result<PostgresUrl, ConfigError> {
        let parsed = text.parse::<tokio_postgres::Config>().map_err(|err| {
            // The parser's reasons name an option or a character, never a value.
            let why = std::error::Error::source(&err).map_or(String::new(), |s| format!(": {s}"));
            invalid(
                "store.url",
                format!(
                    "must be \"{SLED_STORE}\" or a PostgreSQL URL (postgres://user@host/db): {err}{why}"
                ),
            )
        })?;
        if parsed.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(invalid(
                "store.url",
                "sslmode=require: this collector does not speak TLS to PostgreSQL yet",
            ));
        }
        Ok(PostgresUrl {
            text: text.to_owned(),
            parsed: Box::new(parsed),
        })
    }

    /// The parsed connection settings.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.parsed
    }

    /// The connection string as given, password included: never log it.
    pub fn expose(&self) -> &str {
        &self.text
    }
}

impl std::fmt::Display for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let config = &self.parsed;
        write!(f, "postgres://")?;
        if let Some(user) = config.get_user() {
            write!(f, "{user}@")?;
        }
        let ports = config.get_ports();
        for (index, host) in config.get_hosts().iter().enumerate() {
            if index > 0 {
                write!(f, ",")?;
            }
            match host {
                tokio_postgres::config::Host::Tcp(name) => write!(f, "{name}")?,
                #[cfg(unix)]
                tokio_postgres::config::Host::Unix(path) => write!(f, "[{}]", path.display())?,
            }
            if let Some(port) = ports.get(index).or(ports.first()) {
                write!(f, ":{port}")?;
            }
        }
        write!(f, "/{}", config.get_dbname().unwrap_or(""))
    }
}

impl std::fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PostgresUrl({self})")
    }
}

/// Why a configuration cannot be used. The operator must fix the file,
/// the environment or the flags.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file cannot be read.
    #[error("cannot read config file {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The config file is not valid TOML or holds unknown keys.
    #[error("invalid config file {path}, line {line}: {message}")]
    Parse {
        path: PathBuf,
        /// 1-based line of the problem (0 when toml gives no position).
        line: usize,
        message: String,
    },
    /// A field holds an unusable value.
    #[error("invalid config: {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// The TOML file, section by section. Every field is optional.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub server: ServerSection,
    pub store: StoreSection,
    pub auth: AuthSection,
    pub payload: PayloadSection,
    pub audit: AuditSection,
    pub retention: RetentionSection,
}

/// `[server]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// Address to bind, `host:port`. Default 127.0.0.1:8480.
    pub listen: SocketAddr,
    /// Largest request body after decompression, bytes. Default 16 MiB.
    pub max_body_bytes: usize,
    /// Batches per second each gateway may post; 0 (default) is unlimited.
    pub ingest_rate_limit: f64,
    /// Batches a gateway may post back to back. Default 20.
    pub ingest_burst: u32,
    /// PEM certificate chain: with `tls_key`, the listener speaks HTTPS.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// PEM CA certificates: with them every HTTPS client must present a
    /// certificate they signed. Only with `tls_cert` and `tls_key`. Default none.
    pub tls_client_ca: Option<PathBuf>,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: DEFAULT_LISTEN
                .parse()
                .expect("the default listen address parses"),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            ingest_rate_limit: 0.0,
            ingest_burst: DEFAULT_INGEST_BURST,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
        }
    }
}

impl ServerSection {
    fn rate_limit(&self) -> Option<RateLimit> {
        (self.ingest_rate_limit != 0.0).then_some(RateLimit {
            per_second: self.ingest_rate_limit,
            burst: self.ingest_burst,
        })
    }

    fn tls(&self) -> Result<Option<TlsFiles>, ConfigError> {
        match (&self.tls_cert, &self.tls_key) {
            (None, None) if self.tls_client_ca.is_some() => Err(invalid(
                "server.tls_client_ca",
                "is only valid with tls_cert and tls_key (client certificates need HTTPS)",
            )),
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: self.tls_client_ca.clone(),
            })),
            (Some(_), None) => Err(invalid("server.tls_key", "is required with tls_cert")),
            (None, Some(_)) => Err(invalid("server.tls_cert", "is required with tls_key")),
        }
    }
}

/// `[store]`
#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// `"sled"` (the default) or a PostgreSQL URL. May hold a password.
    pub url: String,
    /// Directory of the sled store. Default `cloud-sync-data`.
    pub data_dir: PathBuf,
    /// Most PostgreSQL connections of this collector. Default 16.
    pub pool_size: usize,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            url: SLED_STORE.to_owned(),
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            pool_size: DEFAULT_POOL_SIZE,
        }
    }
}

impl std::fmt::Debug for StoreSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: show only which backend it names.
        let url = if self.url == SLED_STORE {
            SLED_STORE
        } else {
            "<postgres url>"
        };
        f.debug_struct("StoreSection")
            .field("url", &url)
            .field("data_dir", &self.data_dir)
            .field("pool_size", &self.pool_size)
            .finish()
    }
}

impl StoreSection {
    fn backend(&self) -> Result<StoreBackend, ConfigError> {
        if self.url == SLED_STORE {
            return Ok(StoreBackend::Sled);
        }
        if self.url.trim().is_empty() {
            return Err(invalid(
                "store.url",
                format!("must be \"{SLED_STORE}\" or a PostgreSQL URL, got an empty string"),
            ));
        }
        Ok(StoreBackend::Postgres(PostgresConfig {
            url: PostgresUrl::parse(&self.url)?,
            pool_size: self.pool_size,
        }))
    }
}

/// `[auth]`
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    /// Plain bearer tokens, each good for ingest from any gateway (demos,
    /// tests). Default none; with no `token_file` at least one is required.
    pub tokens: Vec<String>,
    /// The hashed token file managed by `cloud-sync tokens`. Default none.
    pub token_file: Option<PathBuf>,
    /// Whether reads need a read (or admin) token. Default: true when
    /// `token_file` is set, false otherwise.
    pub require_read_token: Option<bool>,
}

/// `[payload]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PayloadSection {
    /// Largest device payload decoded as SenML, bytes. Default 64 KiB.
    pub max_bytes: usize,
    /// Deepest CBOR nesting decoded. Default 16.
    pub max_depth: usize,
}

impl Default for PayloadSection {
    fn default() -> Self {
        let limits = telemetry::Limits::default();
        PayloadSection {
            max_bytes: limits.max_bytes,
            max_depth: limits.max_depth,
        }
    }
}

/// `[audit]`
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSection {
    /// Whether to keep the audit log. Default true.
    pub enabled: bool,
    /// The audit log file. Default `<store.data_dir>/audit.log`.
    pub file: Option<PathBuf>,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            enabled: true,
            file: None,
        }
    }
}

/// `[retention]`: periods as humantime durations (`"90d"`, `"12h"`) or `"forever"`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionSection {
    /// Period of every device without an override. Default: forever.
    pub default: Option<String>,
    /// Per-device periods, `{ "dev-1" = "7d" }`, winning over `default`.
    pub devices: BTreeMap<String, String>,
    /// Time between two runs. Default 1h.
    pub interval: Option<String>,
}

impl RetentionSection {
    /// `None` when nothing is ever deleted (no default, no override).
    fn retention(&self) -> Result<Option<Retention>, ConfigError> {
        let default = match &self.default {
            Some(text) => period(text).map_err(|why| invalid("retention.default", why))?,
            None => None,
        };
        let mut devices = BTreeMap::new();
        for (device, text) in &self.devices {
            let keep = period(text)
                .map_err(|why| invalid("retention.devices", format!("{device:?}: {why}")))?;
            devices.insert(device.clone(), keep);
        }
        let interval_text = self
            .interval
            .as_deref()
            .unwrap_or(DEFAULT_RETENTION_INTERVAL);
        let interval = humantime::parse_duration(interval_text).map_err(|err| {
            invalid(
                "retention.interval",
                format!("{interval_text:?} is not a duration such as \"1h\": {err}"),
            )
        })?;
        if default.is_none() && devices.values().all(Option::is_none) {
            return Ok(None);
        }
        Ok(Some(Retention {
            default,
            devices,
            interval,
        }))
    }
}

/// A retention period: a duration, or `None` for "forever".
fn period(text: &str) -> Result<Option<Duration>, String> {
    if text.trim() == KEEP_FOREVER {
        return Ok(None);
    }
    humantime::parse_duration(text).map(Some).map_err(|err| {
        format!("{text:?} is not a duration such as \"90d\" or \"{KEEP_FOREVER}\": {err}")
    })
}

/// Values from the environment or flags; `Some` wins over the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    /// `store.url`: `"sled"` or a PostgreSQL URL.
    pub store: Option<String>,
    pub data_dir: Option<PathBuf>,
    pub pool_size: Option<usize>,
    pub tokens: Option<Vec<String>>,
    pub token_file: Option<PathBuf>,
    pub max_body_bytes: Option<usize>,
    /// `audit.file`.
    pub audit_file: Option<PathBuf>,
}

impl FileConfig {
    /// Parses TOML text; `path` only names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigError> {
        toml::from_str(text).map_err(|err: toml::de::Error| ConfigError::Parse {
            path: path.to_owned(),
            line: err
                .span()
                .map_or(0, |span| text[..span.start].matches('\n').count() + 1),
            // toml's Display draws the source line; one line is enough here.
            message: err.message().trim().replace('\n', " "),
        })
    }

    /// Reads and parses a TOML file.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        FileConfig::parse(&text, path)
    }

    /// Applies environment and flag values on top of the file's.
    pub fn apply(mut self, overrides: Overrides) -> FileConfig {
        if let Some(listen) = overrides.listen {
            self.server.listen = listen;
        }
        if let Some(max) = overrides.max_body_bytes {
            self.server.max_body_bytes = max;
        }
        if let Some(url) = overrides.store {
            self.store.url = url;
        }
        if let Some(dir) = overrides.data_dir {
            self.store.data_dir = dir;
        }
        if let Some(size) = overrides.pool_size {
            self.store.pool_size = size;
        }
        if let Some(tokens) = overrides.tokens {
            self.auth.tokens = tokens;
        }
        if let Some(path) = overrides.token_file {
            self.auth.token_file = Some(path);
        }
        if let Some(path) = overrides.audit_file {
            self.audit.file = Some(path);
        }
        self
    }

    /// The audit log this config names (`audit.file`, else
    /// `<store.data_dir>/audit.log`), or `None` when `audit.enabled` is off.
    /// `cloud-sync tokens` and `audit verify` resolve it the same way.
    pub fn audit_file(&self) -> Option<PathBuf> {
        self.audit.enabled.then(|| {
            self.audit
                .file
                .clone()
                .unwrap_or_else(|| self.store.data_dir.join(DEFAULT_AUDIT_FILE_NAME))
        })
    }

    /// Turns the layered file config into a runtime config.
    pub fn validate(self) -> Result<Config, ConfigError> {
        let audit_file = self.audit_file();
        let config = Config {
            audit_file,
            retention: self.retention.retention()?,
            listen: self.server.listen,
            store: self.store.backend()?,
            data_dir: self.store.data_dir,
            tokens: self.auth.tokens,
            require_read_token: self
                .auth
                .require_read_token
                .unwrap_or(self.auth.token_file.is_some()),
            token_file: self.auth.token_file,
            ingest_rate_limit: self.server.rate_limit(),
            tls: self.server.tls()?,
            max_body_bytes: self.server.max_body_bytes,
            payload_limits: telemetry::Limits {
                max_bytes: self.payload.max_bytes,
                max_depth: self.payload.max_depth,
            },
        };
        config.validate()?;
        Ok(config)
    }
}

/// The token file named by the default config, beside it.
pub const DEFAULT_TOKEN_FILE: &str = "cloud-sync-tokens";

/// The commented default config file printed by `cloud-sync config init`.
pub fn default_toml() -> String {
    let limits = telemetry::Limits::default();
    format!(
        r#"# cloud-sync configuration. Environment variables (CLOUD_SYNC_*) and
# command-line flags override these values.

[server]
# Address to listen on (host:port). Env: CLOUD_SYNC_LISTEN.
listen = "{DEFAULT_LISTEN}"
# Largest request body accepted after decompression, in bytes (16 MiB).
# Env: CLOUD_SYNC_MAX_BODY_BYTES.
max_body_bytes = {DEFAULT_MAX_BODY_BYTES}
# Batches per second each gateway may post (a token bucket per gateway id);
# past it the answer is 429 with Retry-After. 0 turns the limit off.
# A gateway catching up posts up to 4 batches at once, back to back.
ingest_rate_limit = 0
# Batches a gateway may post back to back before the rate applies.
ingest_burst = {DEFAULT_INGEST_BURST}
# Serve HTTPS: the certificate chain and its key, PEM. Both or neither.
# tls_cert = "collector.pem"
# tls_key = "collector.key"
# Require client certificates (mutual TLS): PEM CA certificates that sign
# them. Only with tls_cert and tls_key. Every HTTPS client (gateways with
# uplink.client_cert, the dashboard's browser, query scripts) must then
# present a certificate chaining to one of them, or its handshake fails;
# bearer tokens are still required on top.
# tls_client_ca = "gateways-ca.pem"

[store]
# Where readings are stored: "{SLED_STORE}" for the embedded store in data_dir, or a
# PostgreSQL URL such as "postgres://cloud_sync:secret@db.example:5432/telemetry"
# (add "?options=-csearch_path%3Dmyschema" to use another schema than public).
# The collector creates and migrates its tables at start. Connections are
# plain TCP (no TLS yet): keep the database on a trusted network.
# Env: CLOUD_SYNC_STORE.
url = "{SLED_STORE}"
# Directory of the embedded sled store; created when missing.
# Env: CLOUD_SYNC_DATA_DIR.
data_dir = "{DEFAULT_DATA_DIR}"
# Most PostgreSQL connections this collector opens (unused with sled).
# Env: CLOUD_SYNC_STORE_POOL_SIZE.
pool_size = {DEFAULT_POOL_SIZE}

[auth]
# The token file: one hashed token a line, each an ingest token bound to one
# gateway, a read token (query API, dashboard) or an admin token (both).
# Manage it with `cloud-sync tokens add|list|revoke`; the running collector
# picks up changes. Env: CLOUD_SYNC_TOKEN_FILE.
token_file = "{DEFAULT_TOKEN_FILE}"
# Whether the query API and the dashboard's data need a read or admin token.
# Default: true when token_file is set.
# require_read_token = true
# Plain tokens accepted on POST /v1/batches from any gateway, for demos and
# tests. Env: CLOUD_SYNC_TOKENS (comma-separated).
# tokens = []

[payload]
# Largest device payload decoded, in bytes; larger ones are kept as invalid documents.
max_bytes = {max_bytes}
# Deepest CBOR nesting decoded.
max_depth = {max_depth}

[audit]
# An append-only, hash-chained log (JSON lines) of admin actions (tokens
# added or revoked, device erasures, retention runs) and of data reads
# through the query API. Check it with `cloud-sync audit verify`.
enabled = true
# Default: "audit.log" in store.data_dir. Env: CLOUD_SYNC_AUDIT_FILE.
# file = "{DEFAULT_DATA_DIR}/{DEFAULT_AUDIT_FILE_NAME}"

[retention]
# Delete points whose SenML time, and documents whose arrival at the
# gateway, is older than this ("90d", "12h", "{KEEP_FOREVER}"). Without a
# default and without overrides nothing is ever deleted.
# default = "90d"
# Per-device periods, winning over the default.
# devices = {{ "dev-1" = "7d", "dev-2" = "{KEEP_FOREVER}" }}
# Time between two runs; the first runs when the collector starts.
interval = "{DEFAULT_RETENTION_INTERVAL}"
"#,
        max_bytes = limits.max_bytes,
        max_depth = limits.max_depth,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_parses_and_validates() {
        let config = FileConfig::parse(&default_toml(), Path::new("x.toml"))
            .unwrap()
            .validate()
            .unwrap();
        let mut expected = Config::new(DEFAULT_DATA_DIR, Vec::new());
        expected.token_file = Some(DEFAULT_TOKEN_FILE.into());
        expected.require_read_token = true;
        expected.audit_file = Some(Path::new(DEFAULT_DATA_DIR).join(DEFAULT_AUDIT_FILE_NAME));
        assert_eq!(config, expected);
    }

    #[test]
    fn the_audit_file_defaults_into_the_data_dir() {
        let parse = |text: &str| {
            FileConfig::parse(
                &format!("[auth]\ntokens = [\"t\"]\n{text}"),
                Path::new("c.toml"),
            )
            .unwrap()
            .validate()
            .unwrap()
            .audit_file
        };
        assert_eq!(
            parse("[store]\ndata_dir = \"/var/lib/cs\"\n"),
            Some(PathBuf::from("/var/lib/cs/audit.log"))
        );
        assert_eq!(
            parse("[audit]\nfile = \"/var/log/cs-audit\"\n"),
            Some(PathBuf::from("/var/log/cs-audit"))
        );
        assert_eq!(parse("[audit]\nenabled = false\n"), None);
        let err = FileConfig::parse(
            "[audit]\nfile = \"\"\n[auth]\ntokens = [\"t\"]\n",
            Path::new("c"),
        )
        .unwrap()
        .validate()
        .unwrap_err();
        assert!(err.to_string().contains("audit.file"), "{err}");
    }

    #[test]
    fn retention_periods_parse_and_validate() {
        let parse = |text: &str| {
            FileConfig::parse(
                &format!("[auth]\ntokens = [\"t\"]\n{text}"),
                Path::new("c.toml"),
            )
            .unwrap()
            .validate()
        };
        assert_eq!(parse("").unwrap().retention, None);
        assert_eq!(
            parse("[retention]\ninterval = \"5m\"\n").unwrap().retention,
            None
        );
        let retention = parse(
            "[retention]\ndefault = \"90d\"\ndevices = { \"dev-1\" = \"7d\", \"dev-2\" = \"forever\" }\n",
        )
        .unwrap()
        .retention
        .unwrap();
        assert_eq!(retention.default, Some(Duration::from_secs(90 * 86_400)));
        assert_eq!(
            retention.devices["dev-1"],
            Some(Duration::from_secs(7 * 86_400))
        );
        assert_eq!(retention.devices["dev-2"], None);
        assert_eq!(retention.interval, Duration::from_secs(3600));
        // An override alone is a policy too.
        let only = parse("[retention]\ndevices = { \"dev-1\" = \"1h\" }\n").unwrap();
        assert_eq!(only.retention.unwrap().default, None);
        for (text, field) in [
            (
                "[retention]\ndefault = \"ninety days\"\n",
                "retention.default",
            ),
            ("[retention]\ndefault = \"0s\"\n", "retention.default"),
            (
                "[retention]\ndefault = \"1d\"\ninterval = \"0s\"\n",
                "retention.interval",
            ),
            (
                "[retention]\ndevices = { \"bad/id\" = \"1d\" }\n",
                "retention.devices",
            ),
            (
                "[retention]\ndevices = { \"d\" = \"soon\" }\n",
                "retention.devices",
            ),
        ] {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.contains(field), "{text}: {err}");
        }
    }

    #[test]
    fn auth_and_limits_validate() {
        let parse = |text: &str| FileConfig::parse(text, Path::new("c.toml")).unwrap();
        // Reads stay open with plain tokens only; a token file closes them
        // unless the operator says otherwise.
        assert!(
            !parse("[auth]\ntokens = [\"t\"]\n")
                .validate()
                .unwrap()
                .require_read_token
        );
        let file = parse("[auth]\ntoken_file = \"tokens\"\n")
            .validate()
            .unwrap();
        assert!(file.require_read_token);
        assert!(file.tokens.is_empty());
        let open = parse("[auth]\ntoken_file = \"t\"\nrequire_read_token = false\n");
        assert!(!open.validate().unwrap().require_read_token);
        for (text, field) in [
            (
                "[auth]\ntokens = [\"t\"]\nrequire_read_token = true\n",
                "auth.require_read_token",
            ),
            (
                "[auth]\ntokens = [\"t\"]\n[server]\ningest_rate_limit = -1\n",
                "server.ingest_rate_limit",
            ),
            (
                "[auth]\ntokens = [\"t\"]\n[server]\ningest_rate_limit = 1\ningest_burst = 0\n",
                "server.ingest_burst",
            ),
            (
                "[auth]\ntokens = [\"t\"]\n[server]\ntls_cert = \"c.pem\"\n",
                "server.tls_key",
            ),
            (
                "[auth]\ntokens = [\"t\"]\n[server]\ntls_client_ca = \"ca.pem\"\n",
                "server.tls_client_ca",
            ),
        ] {
            let err = parse(text).validate().unwrap_err().to_string();
            assert!(err.contains(field), "{text}: {err}");
        }
        let limited = parse("[auth]\ntokens = [\"t\"]\n[server]\ningest_rate_limit = 2.5\n")
            .validate()
            .unwrap();
        assert_eq!(
            limited.ingest_rate_limit,
            Some(RateLimit {
                per_second: 2.5,
                burst: DEFAULT_INGEST_BURST
            })
        );
    }

    #[test]
    fn a_client_ca_goes_with_the_https_files() {
        let tls = |server: &str| {
            FileConfig::parse(
                &format!("[auth]\ntokens = [\"t\"]\n[server]\n{server}"),
                Path::new("c.toml"),
            )
            .unwrap()
            .validate()
            .unwrap()
            .tls
        };
        let https = "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n";
        assert_eq!(tls(https), Some(TlsFiles::new("c.pem", "k.pem")));
        let mutual = tls(&format!("{https}tls_client_ca = \"ca.pem\"\n")).unwrap();
        assert_eq!(mutual.client_ca, Some(PathBuf::from("ca.pem")));
        // The files themselves are read at bind (`tls::load`), where a
        // missing or empty one is an error naming the field.
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = FileConfig::parse(
            "[server]\nlisten = \"1.2.3.4:5\"\nlisen = \"1.2.3.4:5\"\n",
            Path::new("c.toml"),
        )
        .unwrap_err();
        let message = err.to_string();
        assert!(
            message.starts_with("invalid config file c.toml, line 3: unknown field `lisen`"),
            "{message}"
        );
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn overrides_win_over_the_file() {
        let file = FileConfig::parse(
            "[server]\nlisten = \"0.0.0.0:1\"\nmax_body_bytes = 10\n[auth]\ntokens = [\"a\"]\n",
            Path::new("c.toml"),
        )
        .unwrap();
        let config = file
            .clone()
            .apply(Overrides {
                listen: Some("127.0.0.1:2".parse().unwrap()),
                tokens: Some(vec!["b".into()]),
                ..Overrides::default()
            })
            .validate()
            .unwrap();
        assert_eq!(config.listen.port(), 2);
        assert_eq!(config.max_body_bytes, 10);
        assert_eq!(config.tokens, vec!["b"]);
        assert_eq!(file.validate().unwrap().listen.port(), 1);
    }

    #[test]
    fn the_store_url_picks_the_backend() {
        let parse = |text: &str| FileConfig::parse(text, Path::new("c.toml")).unwrap();
        let tokens = "[auth]\ntokens = [\"t\"]\n";
        let sled = parse(tokens).validate().unwrap();
        assert_eq!(sled.store, StoreBackend::Sled);
        let postgres = parse(&format!(
            "{tokens}[store]\nurl = \"postgres://u:pw@h:5433/db?options=-csearch_path%3Dx\"\npool_size = 4\n"
        ))
        .validate()
        .unwrap();
        let StoreBackend::Postgres(pg) = &postgres.store else {
            panic!("expected postgres");
        };
        assert_eq!(pg.pool_size, 4);
        assert_eq!(pg.url.config().get_options(), Some("-csearch_path=x"));
        assert_eq!(postgres.store_description(), "postgres://u@h:5433/db");
        // Flags and environment override the file's choice either way.
        let back = parse(&format!("{tokens}[store]\nurl = \"postgres://h/db\"\n"))
            .apply(Overrides {
                store: Some("sled".into()),
                ..Overrides::default()
            })
            .validate()
            .unwrap();
        assert_eq!(back.store, StoreBackend::Sled);
    }

    #[test]
    fn a_bad_store_url_names_the_field_and_hides_the_password() {
        for (url, pool) in [
            ("postgres://u:hunter2@h:notaport/db", 1),
            ("postgres://u:hunter2@h/db?sslmode=require", 1),
            ("", 1),
            ("postgres://u:hunter2@h/db", 0),
        ] {
            let text =
                format!("[auth]\ntokens = [\"t\"]\n[store]\nurl = \"{url}\"\npool_size = {pool}\n");
            let err = FileConfig::parse(&text, Path::new("c.toml"))
                .unwrap()
                .validate()
                .unwrap_err()
                .to_string();
            assert!(err.starts_with("invalid config: store."), "{err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        let text = "[store]\nurl = \"postgres://h/db\"\nbackend = \"x\"\n";
        assert!(FileConfig::parse(text, Path::new("c.toml")).is_err());
    }

    #[test]
    fn errors_name_the_field() {
        let err = FileConfig::default().validate().unwrap_err();
        assert!(
            err.to_string().starts_with("invalid config: auth.tokens:"),
            "{err}"
        );
        let mut config = Config::new("d", vec!["with space".into()]);
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("auth.tokens"));
        config.tokens = vec!["t".into()];
        config.max_body_bytes = 0;
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("server.max_body_bytes"));
    }
}
