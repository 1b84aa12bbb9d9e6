//! `edge-agent` binary: parses arguments, sets up logging, runs the library.

use std::process::ExitCode;

use clap::Parser;
use edge_agent::cli::{print_default_config, spool_command, Cli, Command, ConfigCommand};
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("edge-agent: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Config(ConfigCommand::Init) => {
            print_default_config();
            Ok(())
        }
        Command::Config(ConfigCommand::Check(args)) => {
            let config = args.load()?.validate()?;
            println!(
                "configuration is valid: gateway {}, mqtt {}, spool {}, uplink {}, admin {}",
                config.gateway_id,
                config.mqtt.listen,
                config.spool_dir.display(),
                config.uplink.url,
                config.admin_listen
            );
            Ok(())
        }
        Command::Spool(command) => spool_command(command),
        Command::Devices(command) => edge_agent::cli::devices_command(command),
        Command::Keys(command) => edge_agent::cli::keys_command(command),
        Command::Audit(command) => edge_agent::cli::audit_command(command),
        Command::Status {
            admin_url,
            json,
            run,
        } => {
            let url = edge_agent::cli::admin_url(admin_url, &run)?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(edge_agent::status::status(
                &url,
                json,
                &mut std::io::stdout().lock(),
            ))
        }
        Command::Run(args) => {
            init_tracing(&args.log_format)?;
            let config = args.load()?.validate()?;
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let shutdown = CancellationToken::new();
                tokio::spawn(cancel_on_signal(shutdown.clone()));
                edge_agent::run(config, shutdown).await
            })
        }
    }
}

fn init_tracing(format: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // vendor/rumqttd logs a device's routine connection events at INFO or
        // below (PATCHES.md #3); its warnings and errors are the broker's own.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rumqttd=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        "human" => builder.init(),
        "json" => builder.json().init(),
        other => anyhow::bail!("--log-format must be human or json, not {other:?}"),
    }
    Ok(())
}

/// Caps glibc's malloc at two arenas, unless the operator chose a number
/// (`MALLOC_ARENA_MAX`, or `glibc.malloc.arena_max` in `GLIBC_TUNABLES`).
///
/// By default glibc gives every thread that allocates an arena of its own
/// (up to 8 per core), and each arena keeps the high-water mark of what was
/// freed into it. The agent's connections are allocated on the MQTT workers,
/// their queues grown on rumqttd's router thread and freed on either, so with
/// 1,000 connections flat out three arenas of about 8 MiB each held their
/// own slack: peak RSS 40 and 42 MiB with glibc's default, 37 and 31 MiB with
/// two arenas, throughput unchanged (vendor/rumqttd/PATCHES.md #8). Runs
/// first in `main`, before any other thread exists; glibc's per-thread
/// caches keep small allocations off the arena locks either way.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    let tuned = std::env::var_os("MALLOC_ARENA_MAX").is_some()
        || std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max"));
    if !tuned {
        // SAFETY: mallopt only sets a malloc parameter, and no other thread
        // exists yet to allocate concurrently.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

/// Cancels `shutdown` on Ctrl-C or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    shutdown.cancel();
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    shutdown.cancel();
}
