//! Command-line interface of the `cloud-sync` binary (clap derive; the doc
//! comments are the help text).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use cloud_sync::config::{Config, ConfigError, FileConfig, Overrides};

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
