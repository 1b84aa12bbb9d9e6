//! Command-line interface of the `cloud-sync` binary (clap derive; the doc
//! comments are the help text).

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use cloud_sync::config::{Config, ConfigError, FileConfig, Overrides};
use cloud_sync::tokens::{Role, TokenFile};

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
#[derive(Debug, Args)]
pub struct TokenFileArgs {
    /// TOML config file whose auth.token_file to use.
    #[arg(long, short, global = true, env = "CLOUD_SYNC_CONFIG")]
    pub config: Option<PathBuf>,
    /// The token file itself (overrides the config file's).
    #[arg(long, global = true, env = "CLOUD_SYNC_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
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

/// Runs a `tokens` command.
pub fn tokens_command(file: TokenFileArgs, command: TokensCommand) -> anyhow::Result<()> {
    let path = file.path()?;
    let tokens = TokenFile::load(&path)?;
    match command {
        TokensCommand::Add(args) => {
            let role = match (args.gateway, args.read, args.admin) {
                (Some(gateway_id), _, _) => Role::Ingest { gateway_id },
                (None, true, _) => Role::Read,
                _ => Role::Admin,
            };
            let (info, token) = tokens.add(role)?;
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
            println!("revoked {} token {}", info.role.name(), info.id);
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print a commented default config file, with a fresh random token, to stdout.
    Init,
    /// Load the config as `serve` would, validate it and report problems.
    Check(ServeArgs),
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
