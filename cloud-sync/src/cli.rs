//! Command-line interface of the `cloud-sync` binary (clap derive; the doc
//! comments are the help text).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use cloud_sync::audit::{verify_file, AuditFile, Details, Entry, ACTOR_CLI};
use cloud_sync::config::{Config, ConfigError, FileConfig, Overrides};
use cloud_sync::tokens::{Role, TokenFile, TokenInfo};

/// The cloud collector of the edge telemetry pipeline.
#[derive(Debug, Parser)]
#[command(name = "cloud-sync", version)]
pub struct Cli {
    /// Log output format. Verbosity comes from RUST_LOG (default: info).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "CLOUD_SYNC_LOG_FORMAT")]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the collector until Ctrl-C or SIGTERM.
    Serve(ServeArgs),
    /// Work with configuration files.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage the API tokens of the token file (`auth.token_file`); a
    /// running collector picks up changes without a restart.
    Tokens {
        #[command(flatten)]
        file: TokenFileArgs,
        #[command(subcommand)]
        command: TokensCommand,
    },
    /// Work with the audit log (`audit.file`).
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of the audit log: exits non-zero and names the
    /// first bad line when a line was changed, removed or inserted. On
    /// success prints the number of lines and the last line's hash; keep
    /// that head elsewhere to detect a later removal of the last lines.
    Verify(VerifyArgs),
}

/// Which audit log: --file, else the config's `audit.file`, else the
/// default `<store.data_dir>/audit.log`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The audit log to check.
    #[arg(long, env = "CLOUD_SYNC_AUDIT_FILE")]
    pub file: Option<PathBuf>,
    /// TOML config file whose audit.file (or store.data_dir) to use.
    #[arg(long, short, env = "CLOUD_SYNC_CONFIG")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Make a new token and print it, once, to stdout (details go to stderr).
    Add(AddArgs),
    /// List tokens: id, role, gateway, created. Never tokens or hashes.
    List,
    /// Remove a token by id; the collector refuses it from its next request on.
    Revoke {
        /// The id shown by `add` and `list`.
        id: String,
    },
}

/// Exactly one role.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("role").required(true).args(["gateway", "read", "admin"])))]
pub struct AddArgs {
    /// An ingest token, good only for batches of this gateway id.
    #[arg(long)]
    pub gateway: Option<String>,
    /// A read token: the query API and the dashboard.
    #[arg(long)]
    pub read: bool,
    /// An admin token: reads, and batches of any gateway.
    #[arg(long)]
    pub admin: bool,
}

/// Which token file: --token-file, else the config file's `auth.token_file`.
/// Which audit log `add` and `revoke` write to: --audit-file, else the
/// config file's `audit.file`, else `<store.data_dir>/audit.log` (the same
/// as `serve` with that config).
#[derive(Debug, Args)]
pub struct TokenFileArgs {
    /// TOML config file whose auth.token_file and audit.file to use.
    #[arg(long, short, global = true, env = "CLOUD_SYNC_CONFIG")]
    pub config: Option<PathBuf>,
    /// The token file itself (overrides the config file's).
    #[arg(long, global = true, env = "CLOUD_SYNC_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The audit log that records `add` and `revoke` (overrides the config file's).
    #[arg(long, global = true, env = "CLOUD_SYNC_AUDIT_FILE")]
    pub audit_file: Option<PathBuf>,
}

impl TokenFileArgs {
    fn path(&self) -> anyhow::Result<PathBuf> {
        if let Some(path) = &self.token_file {
            return Ok(path.clone());
        }
        let Some(config) = &self.config else {
            anyhow::bail!(
                "no token file: pass --token-file PATH or --config FILE with auth.token_file"
            );
        };
        FileConfig::load(config)?
            .auth
            .token_file
            .with_context(|| format!("{} sets no auth.token_file", config.display()))
    }
}

impl TokenFileArgs {
    /// The audit log, `None` when the config turns it off.
    fn audit_path(&self) -> anyhow::Result<Option<PathBuf>> {
        if let Some(path) = &self.audit_file {
            return Ok(Some(path.clone()));
        }
        audit_path_of(self.config.as_deref())
    }
}

/// The audit log a config file names (the built-in default without one).
fn audit_path_of(config: Option<&std::path::Path>) -> anyhow::Result<Option<PathBuf>> {
    let file = match config {
        Some(path) => FileConfig::load(path)?,
        None => FileConfig::default(),
    };
    Ok(file.audit_file())
}

/// The audit details of a token: id, role, gateway. Never the token or its hash.
fn token_details(info: &TokenInfo) -> Details {
    let mut details = Details::new();
    details.insert("id".into(), info.id.clone().into());
    details.insert("role".into(), info.role.name().into());
    if let Some(gateway) = info.role.gateway_id() {
        details.insert("gateway".into(), gateway.into());
    }
    details
}

/// Runs a `tokens` command.
pub fn tokens_command(file: TokenFileArgs, command: TokensCommand) -> anyhow::Result<()> {
    let path = file.path()?;
    let tokens = TokenFile::load(&path)?;
    // Opened before any change, so that an unwritable log stops the change.
    let mut audit = match &command {
        TokensCommand::List => None,
        TokensCommand::Add(_) | TokensCommand::Revoke { .. } => file
            .audit_path()?
            .map(|path| AuditFile::open(&path))
            .transpose()?,
    };
    let mut record = |action: &str, info: &TokenInfo| -> anyhow::Result<()> {
        if let Some(audit) = audit.as_mut() {
            audit
                .append(&[Entry::now(ACTOR_CLI, action, token_details(info))])
                .with_context(|| format!("{action} {} is done but not recorded", info.id))?;
        }
        Ok(())
    };
    match command {
        TokensCommand::Add(args) => {
            let role = match (args.gateway, args.read, args.admin) {
                (Some(gateway_id), _, _) => Role::Ingest { gateway_id },
                (None, true, _) => Role::Read,
                _ => Role::Admin,
            };
            let (info, token) = tokens.add(role)?;
            record("token.add", &info)?;
            let gateway = info
                .role
                .gateway_id()
                .map(|g| format!(" for gateway {g}"))
                .unwrap_or_default();
            eprintln!(
                "added {} token {}{gateway} to {}; it is shown only now:",
                info.role.name(),
                info.id,
                path.display()
            );
            println!("{token}");
        }
        TokensCommand::List => {
            println!("{:<10} {:<7} {:<24} CREATED", "ID", "ROLE", "GATEWAY");
            for info in tokens.list() {
                println!(
                    "{:<10} {:<7} {:<24} {}",
                    info.id,
                    info.role.name(),
                    info.role.gateway_id().unwrap_or("-"),
                    info.created
                );
            }
        }
        TokensCommand::Revoke { id } => {
            let info = tokens.revoke(&id)?;
            record("token.revoke", &info)?;
            println!("revoked {} token {}", info.role.name(), info.id);
        }
    }
    Ok(())
}

/// Runs an `audit` command.
pub fn audit_command(command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::Verify(args) => {
            let path = match args.file {
                Some(path) => path,
                None => audit_path_of(args.config.as_deref())?.context(
                    "the config turns the audit log off (audit.enabled = false); pass --file PATH",
                )?,
            };
            let head = verify_file(&path)?;
            println!(
                "audit log {} ok: {} line(s), last line hash {}",
                path.display(),
                head.seq,
                head.hash
            );
            Ok(())
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print a commented default config file, with a fresh random token, to stdout.
    Init,
    /// Load the config as `serve` would, validate it and report problems.
    Check(Box<ServeArgs>),
}

/// Where the configuration comes from: file < CLOUD_SYNC_* environment < flags.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML config file (see `cloud-sync config init`).
    #[arg(long, short, env = "CLOUD_SYNC_CONFIG")]
    pub config: Option<PathBuf>,

    /// Address to listen on, host:port [default: 127.0.0.1:8480].
    #[arg(long, env = "CLOUD_SYNC_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Where to store: "sled" (embedded, in --data-dir) or a PostgreSQL URL,
    /// postgres://user:password@host:5432/db [default: sled].
    #[arg(long, env = "CLOUD_SYNC_STORE", hide_env_values = true)]
    pub store: Option<String>,

    /// Directory of the embedded store [default: cloud-sync-data].
    #[arg(long, env = "CLOUD_SYNC_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Most PostgreSQL connections this collector opens [default: 16].
    #[arg(long, env = "CLOUD_SYNC_STORE_POOL_SIZE")]
    pub store_pool_size: Option<usize>,

    /// Bearer token accepted from gateways; repeat the flag or separate with commas.
    #[arg(
        long = "token",
        env = "CLOUD_SYNC_TOKENS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub tokens: Option<Vec<String>>,

    /// The hashed token file managed by `cloud-sync tokens`.
    #[arg(long, env = "CLOUD_SYNC_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// Largest request body after decompression, bytes [default: 16 MiB].
    #[arg(long, env = "CLOUD_SYNC_MAX_BODY_BYTES")]
    pub max_body_bytes: Option<usize>,

    /// The audit log [default: audit.log in the data directory].
    #[arg(long, env = "CLOUD_SYNC_AUDIT_FILE")]
    pub audit_file: Option<PathBuf>,
}

impl ServeArgs {
    /// Layers the file, the environment and the flags into a runtime config.
    pub fn load(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        file.apply(Overrides {
            listen: self.listen,
            store: self.store,
            data_dir: self.data_dir,
            pool_size: self.store_pool_size,
            tokens: self.tokens,
            token_file: self.token_file,
            max_body_bytes: self.max_body_bytes,
            audit_file: self.audit_file,
        })
        .validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[server]\nlisten = \"127.0.0.1:1\"\n[auth]\ntokens = [\"file\"]\n",
        )
        .unwrap();
        let cli = Cli::try_parse_from([
            "cloud-sync",
            "serve",
            "--config",
            path.to_str().unwrap(),
            "--token",
            "a,b",
            "--listen",
            "127.0.0.1:2",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        let config = args.load().unwrap();
        assert_eq!(config.listen.port(), 2);
        assert_eq!(config.tokens, vec!["a", "b"]);
        assert_eq!(config.store, cloud_sync::config::StoreBackend::Sled);
    }

    #[test]
    fn store_flag_selects_postgres() {
        let cli = Cli::try_parse_from([
            "cloud-sync",
            "serve",
            "--token",
            "t",
            "--store",
            "postgres://collector:hunter2@db.example:5433/telemetry",
            "--store-pool-size",
            "3",
        ])
        .unwrap();
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        let config = args.load().unwrap();
        let cloud_sync::config::StoreBackend::Postgres(postgres) = &config.store else {
            panic!("expected postgres, got {:?}", config.store);
        };
        assert_eq!(postgres.pool_size, 3);
        // The password never shows.
        let shown = format!("{} {config:?}", config.store_description());
        assert!(
            shown.contains("postgres://collector@db.example:5433/telemetry"),
            "{shown}"
        );
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
