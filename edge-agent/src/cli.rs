//! Command-line interface: `edge-agent run` and `edge-agent config init|check`.
//! Flags override `EDGE_AGENT_*` variables, which override the config file.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::config::{FileConfig, DEFAULT_TOML};

/// edge-agent: MQTT broker, durable spool and uplink for a sensor gateway.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway daemon until Ctrl-C or SIGTERM.
    Run(RunArgs),
    /// Work with the configuration file.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show the running agent's state: devices, ingest rate, spool, uplink.
    Status {
        /// Base URL of the agent's admin API (default: from admin.listen).
        #[arg(long, value_name = "URL")]
        admin_url: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Manage the devices allowed to connect (mqtt.devices_file).
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// Work on the spool files offline (stop the agent first).
    #[command(subcommand)]
    Spool(SpoolCommand),
    /// Manage the keys that encrypt the spool at rest (spool.key_file).
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The audit log of admin commands (audit.file).
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain; exits non-zero naming the first bad line.
    Verify {
        /// The log to check (default: audit.file from the configuration).
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        #[command(flatten)]
        run: RunArgs,
    },
}

/// Runs an `audit` command.
pub fn audit_command(command: AuditCommand) -> anyhow::Result<()> {
    let AuditCommand::Verify { file, run } = command;
    let path = match file {
        Some(path) => path,
        None => crate::audit::path(&run)?,
    };
    let head = audit_log::verify_file(&path)?;
    println!(
        "audit log {} ok: {} line(s), last line hash {}",
        path.display(),
        head.seq,
        head.hash
    );
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Add a new random key and make it the one that seals new blocks (the
    /// file is made, mode 0600, if missing). Older keys stay to open older
    /// blocks. The agent uses the new key from its next start.
    Rotate {
        #[command(flatten)]
        run: RunArgs,
    },
    /// List key ids, when each was made and which one is current (never the keys).
    List {
        #[command(flatten)]
        run: RunArgs,
    },
}

/// Runs a `keys` command against `spool.key_file`.
pub fn keys_command(command: KeysCommand) -> anyhow::Result<()> {
    let (KeysCommand::Rotate { run } | KeysCommand::List { run }) = &command;
    let file = run.load()?.spool.key_file.ok_or_else(|| {
        anyhow::anyhow!("set spool.key_file in the config (or --spool-key-file) first")
    })?;
    match command {
        KeysCommand::Rotate { .. } => {
            let id = crate::spool::rotate_key(&file)?;
            crate::audit::record(run, "keys.rotate", serde_json::json!({ "key_id": id }))?;
            println!(
                "key {id} added to {}; it seals new blocks from the agent's next start",
                file.display()
            );
        }
        KeysCommand::List { .. } => {
            for key in crate::spool::KeyRing::read_file(&file)?.list() {
                let current = if key.current { "  current" } else { "" };
                println!("{}  {}{current}", key.id, key.created);
            }
        }
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// Register a device; the password is read from standard input, or made with --generate.
    Add {
        device_id: String,
        /// Make a random password and print it once.
        #[arg(long)]
        generate: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// List the registered device ids (never their passwords).
    List {
        #[command(flatten)]
        run: RunArgs,
    },
    /// Give a device a new password (standard input, or --generate).
    Rotate {
        device_id: String,
        /// Make a random password and print it once.
        #[arg(long)]
        generate: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Remove a device; it can no longer connect.
    Remove {
        device_id: String,
        #[command(flatten)]
        run: RunArgs,
    },
}

impl DevicesCommand {
    fn run_args(&self) -> &RunArgs {
        match self {
            DevicesCommand::Add { run, .. }
            | DevicesCommand::List { run }
            | DevicesCommand::Rotate { run, .. }
            | DevicesCommand::Remove { run, .. } => run,
        }
    }
}

/// Runs a `devices` command against the configured device file.
pub fn devices_command(command: DevicesCommand) -> anyhow::Result<()> {
    let file = command.run_args().load()?;
    let audit = crate::audit::path(command.run_args())?;
    let path = file.mqtt.devices_file.clone().ok_or_else(|| {
        anyhow::anyhow!("set mqtt.devices_file in the config (or --devices-file) first")
    })?;
    let registry = broker::DeviceRegistry::load(&path)?;
    match command {
        DevicesCommand::List { .. } => {
            for device in registry.list() {
                println!("{device}");
            }
        }
        DevicesCommand::Add {
            device_id,
            generate,
            ..
        } => {
            let password = password(generate)?;
            registry.add(&device_id, &password)?;
            crate::audit::record_at(
                &audit,
                "devices.add",
                serde_json::json!({ "device": device_id }),
            )?;
            report(&device_id, "added", generate.then_some(&password));
        }
        DevicesCommand::Rotate {
            device_id,
            generate,
            ..
        } => {
            let password = password(generate)?;
            registry.rotate(&device_id, &password)?;
            crate::audit::record_at(
                &audit,
                "devices.rotate",
                serde_json::json!({ "device": device_id }),
            )?;
            report(
                &device_id,
                "has a new password",
                generate.then_some(&password),
            );
        }
        DevicesCommand::Remove { device_id, .. } => {
            registry.remove(&device_id)?;
            crate::audit::record_at(
                &audit,
                "devices.remove",
                serde_json::json!({ "device": device_id }),
            )?;
            println!("{device_id} removed");
        }
    }
    Ok(())
}

fn password(generate: bool) -> anyhow::Result<String> {
    if generate {
        let bytes: [u8; 18] = rand::random();
        return Ok(hex::encode(bytes));
    }
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_string();
    if password.is_empty() {
        anyhow::bail!("no password on standard input (pipe one in, or use --generate)");
    }
    Ok(password)
}

fn report(device_id: &str, what: &str, generated: Option<&String>) {
    match generated {
        // Shown once; only its hash is kept.
        Some(password) => println!("{device_id} {what}; password: {password}"),
        None => println!("{device_id} {what}"),
    }
}

#[derive(Debug, Subcommand)]
pub enum SpoolCommand {
    /// Counts: pending readings, bytes, oldest age, dead letters.
    Stats(OfflineArgs),
    /// The oldest pending readings, decoded.
    Peek {
        /// How many readings to show.
        #[arg(long, short = 'n', default_value_t = 10)]
        count: usize,
        #[command(flatten)]
        offline: OfflineArgs,
    },
    /// Every pending reading as JSON lines.
    Export {
        /// Write to FILE instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        offline: OfflineArgs,
    },
    /// Publishes the gateway refused, and batches the collector refused, with the reason.
    DeadLetters(OfflineArgs),
    /// Delete every pending reading (they will never reach the cloud).
    Purge {
        /// Also delete the dead letters.
        #[arg(long)]
        dead_letters: bool,
        /// Confirm: without it nothing is deleted.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        offline: OfflineArgs,
    },
    /// Remove every spooled reading and dead letter of one device (the
    /// right to erasure): the spool is rewritten without them, so no file
    /// keeps them. Other devices' readings keep their place and seqs.
    Erase {
        /// The device whose readings go.
        #[arg(long)]
        device: String,
        /// Confirm: without it nothing is deleted.
        #[arg(long)]
        yes: bool,
        #[command(flatten)]
        offline: OfflineArgs,
    },
    /// Copy every readable reading of a quarantined spool into the live spool.
    Recover {
        /// The quarantined spool, e.g. edge-spool.quarantine-1795900000.
        path: PathBuf,
        #[command(flatten)]
        args: RunArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print a commented default configuration.
    Init,
    /// Check a configuration (file, environment and flags) and print the result.
    Check(Box<RunArgs>),
}

/// Where the spool is, for the offline commands.
#[derive(Debug, clap::Args)]
pub struct OfflineArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub run: RunArgs,
}

impl OfflineArgs {
    pub fn open(&self) -> anyhow::Result<crate::spool::Spool> {
        let (dir, options) = self.run.load()?.spool.validate()?;
        crate::offline::open(&dir, options)
    }
}

/// The admin API's base URL: `--admin-url`, or `admin.listen` from the configuration.
pub fn admin_url(admin_url: Option<String>, run: &RunArgs) -> anyhow::Result<String> {
    if let Some(url) = admin_url {
        return Ok(url);
    }
    let listen = run
        .load()?
        .admin
        .listen
        .unwrap_or_else(|| "127.0.0.1:8481".into());
    Ok(format!("http://{listen}"))
}

/// Runs an offline spool command.
pub fn spool_command(command: SpoolCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match command {
        SpoolCommand::Recover { path, args } => recover(&path, &args),
        SpoolCommand::Stats(offline) => {
            crate::offline::stats(&offline.open()?, offline.json, &mut out)
        }
        SpoolCommand::Peek { count, offline } => {
            crate::offline::peek(&offline.open()?, count, offline.json, &mut out)
        }
        SpoolCommand::Export { out: path, offline } => {
            let written = crate::offline::export(&offline.open()?, path.as_ref(), &mut out)?;
            if let Some(path) = path {
                eprintln!("exported {written} readings to {}", path.display());
            }
            Ok(())
        }
        SpoolCommand::DeadLetters(offline) => {
            crate::offline::dead_letters(&offline.open()?, offline.json, &mut out)
        }
        SpoolCommand::Erase {
            device,
            yes,
            offline,
        } => {
            if !yes {
                anyhow::bail!("erase deletes {device}'s readings for good; add --yes to confirm");
            }
            let (dir, options) = offline.run.load()?.spool.validate()?;
            let erasure = crate::spool::erase_device(&dir, &device, &options.keys)
                .map_err(|err| crate::offline::explain(err, &dir, "erase from"))?;
            crate::audit::record(
                &offline.run,
                "spool.erase",
                serde_json::json!({ "device": device, "spool": dir.display().to_string(), "removed": erasure }),
            )?;
            if offline.json {
                println!("{}", serde_json::to_string(&erasure)?);
            } else {
                println!(
                    "erased {device}: {} readings, {} dead letters ({} blocks rewritten, {} removed)",
                    erasure.readings, erasure.dead_letters, erasure.blocks_rewritten, erasure.blocks_removed
                );
            }
            if erasure.unreadable > 0 {
                eprintln!(
                    "warning: {} damaged blocks or dead letters could not be read; they may hold readings of {device}",
                    erasure.unreadable
                );
            }
            Ok(())
        }
        SpoolCommand::Purge {
            dead_letters,
            yes,
            offline,
        } => {
            if !yes {
                anyhow::bail!("purge deletes readings for good; add --yes to confirm");
            }
            let spool = offline.open()?;
            let purged = spool.purge(dead_letters)?;
            spool.close()?;
            crate::audit::record(
                &offline.run,
                "spool.purge",
                serde_json::json!({ "readings": purged, "dead_letters": dead_letters }),
            )?;
            println!(
                "purged {purged} pending readings{}",
                if dead_letters {
                    " and the dead letters"
                } else {
                    ""
                }
            );
            Ok(())
        }
    }
}

/// Settings that can be given on the command line or in the environment.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// TOML configuration file.
    #[arg(long, short, env = "EDGE_AGENT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Name of this gateway in the cloud.
    #[arg(long, env = "EDGE_AGENT_GATEWAY_ID")]
    pub gateway_id: Option<String>,
    /// MQTT listen address for devices, e.g. 127.0.0.1:1884.
    #[arg(long, env = "EDGE_AGENT_MQTT_LISTEN")]
    pub mqtt_listen: Option<String>,
    /// Directory of the spool.
    #[arg(long, env = "EDGE_AGENT_SPOOL_DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Base URL of the cloud-sync collector.
    #[arg(long, env = "EDGE_AGENT_UPLINK_URL")]
    pub uplink_url: Option<String>,
    /// Bearer token of this gateway at the collector.
    #[arg(long, env = "EDGE_AGENT_UPLINK_TOKEN", hide_env_values = true)]
    pub uplink_token: Option<String>,
    /// PEM file of CA certificates trusted for an https:// collector.
    #[arg(long, env = "EDGE_AGENT_UPLINK_CA_FILE")]
    pub uplink_ca_file: Option<PathBuf>,
    /// PEM client certificate presented to a collector that requires one
    /// (with --uplink-client-key).
    #[arg(long, env = "EDGE_AGENT_UPLINK_CLIENT_CERT")]
    pub uplink_client_cert: Option<PathBuf>,
    /// PEM private key of --uplink-client-cert.
    #[arg(long, env = "EDGE_AGENT_UPLINK_CLIENT_KEY")]
    pub uplink_client_key: Option<PathBuf>,
    /// Listen address of /healthz and /metrics.
    #[arg(long, env = "EDGE_AGENT_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    /// File of registered devices (device_id:argon2 hash lines).
    #[arg(long, env = "EDGE_AGENT_DEVICES_FILE")]
    pub devices_file: Option<PathBuf>,
    /// Key file that encrypts the spool at rest (mode 0600; see `edge-agent keys`).
    #[arg(long, env = "EDGE_AGENT_SPOOL_KEY_FILE")]
    pub spool_key_file: Option<PathBuf>,
    /// Audit log of admin commands (default: edge-audit.log).
    #[arg(long, env = "EDGE_AGENT_AUDIT_FILE")]
    pub audit_file: Option<PathBuf>,
    /// Log format: "human" or "json".
    #[arg(long, env = "EDGE_AGENT_LOG_FORMAT", default_value = "human")]
    pub log_format: String,
}

impl RunArgs {
    /// The file's settings with environment and flags laid over them.
    pub fn load(&self) -> anyhow::Result<FileConfig> {
        let mut file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read config file {}", path.display()))?;
                FileConfig::parse(&text)
                    .with_context(|| format!("config file {}", path.display()))?
            }
            None => FileConfig::default(),
        };
        overlay(&mut file.gateway.id, &self.gateway_id);
        overlay(&mut file.mqtt.listen, &self.mqtt_listen);
        overlay(&mut file.spool.dir, &self.spool_dir);
        overlay(&mut file.uplink.url, &self.uplink_url);
        overlay(&mut file.uplink.token, &self.uplink_token);
        overlay(&mut file.uplink.ca_file, &self.uplink_ca_file);
        overlay(&mut file.uplink.client_cert, &self.uplink_client_cert);
        overlay(&mut file.uplink.client_key, &self.uplink_client_key);
        overlay(&mut file.admin.listen, &self.admin_listen);
        overlay(&mut file.mqtt.devices_file, &self.devices_file);
        overlay(&mut file.spool.key_file, &self.spool_key_file);
        overlay(&mut file.audit.file, &self.audit_file);
        Ok(file)
    }
}

fn overlay<T: Clone>(target: &mut Option<T>, value: &Option<T>) {
    if value.is_some() {
        target.clone_from(value);
    }
}

/// `spool recover`: salvages `path` into the configured live spool.
pub fn recover(path: &std::path::Path, args: &RunArgs) -> anyhow::Result<()> {
    let (dir, options) = args.load()?.spool.validate()?;
    if !path.exists() {
        anyhow::bail!("{} does not exist", path.display());
    }
    let live = crate::spool::Spool::open(&dir, options, crate::metrics::SpoolMetrics::default())
        .with_context(|| {
            format!(
                "cannot open the live spool at {} (is the agent still running? stop it first)",
                dir.display()
            )
        })?;
    let salvage = crate::spool::salvage(path, &live)?;
    live.close()?;
    crate::audit::record(
        args,
        "spool.recover",
        serde_json::json!({ "from": path.display().to_string(), "readings": salvage.readings }),
    )?;
    println!(
        "salvaged {} readings from {} blocks of {} into {} ({} unreadable, {} already delivered and skipped)",
        salvage.readings,
        salvage.blocks,
        path.display(),
        dir.display(),
        salvage.unreadable,
        salvage.delivered
    );
    Ok(())
}

/// Prints the default configuration.
pub fn print_default_config() {
    print!("{DEFAULT_TOML}");
}
