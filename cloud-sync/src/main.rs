//! The `cloud-sync` binary: parses arguments, sets up logging, runs the
//! collector until Ctrl-C or SIGTERM. All logic lives in the library.

mod cli;

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use cloud_sync::config::default_toml;
use cloud_sync::Server;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use crate::cli::{Cli, Command, ConfigCommand, LogFormat};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match run(cli.command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("cloud-sync: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Config {
            command: ConfigCommand::Init,
        } => {
            print!("{}", default_toml());
            Ok(())
        }
        Command::Config {
            command: ConfigCommand::Check(args),
        } => {
            let config = args.load()?;
            let tokens = match &config.token_file {
                // Read it as `serve` would, so that a bad line shows now.
                Some(path) => format!(
                    "token file {} ({} token(s))",
                    path.display(),
                    cloud_sync::tokens::TokenFile::load(path)?.list().len()
                ),
                None => format!("{} plain token(s)", config.tokens.len()),
            };
            println!(
                "config ok: listen {}{}, store {}, {tokens}, reads {}, audit log {}, retention {}",
                config.listen,
                match &config.tls {
                    Some(tls) if tls.client_ca.is_some() =>
                        " (https, client certificates required)",
                    Some(_) => " (https)",
                    None => "",
                },
                config.store_description(),
                if config.require_read_token {
                    "need a token"
                } else {
                    "open"
                },
                config
                    .audit_file
                    .as_ref()
                    .map_or("off".to_owned(), |p| p.display().to_string()),
                match &config.retention {
                    Some(r) => format!(
                        "{} (every {}, {} override(s))",
                        r.default
                            .map_or("forever".to_owned(), |d| humantime::format_duration(d)
                                .to_string()),
                        humantime::format_duration(r.interval),
                        r.devices.len()
                    ),
                    None => "forever".to_owned(),
                }
            );
            Ok(())
        }
        Command::Tokens { file, command } => cli::tokens_command(file, command),
        Command::Audit { command } => cli::audit_command(command),
        Command::Serve(args) => {
            let config = args.load()?;
            let server = Server::bind(config).await?;
            let shutdown = CancellationToken::new();
            tokio::spawn(cancel_on_signal(shutdown.clone()));
            server.run(shutdown).await.context("collector failed")
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Cancels `shutdown` on the first Ctrl-C or SIGTERM.
async fn cancel_on_signal(shutdown: CancellationToken) {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for sigterm");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("ctrl-c received, shutting down"),
        () = terminate => tracing::info!("sigterm received, shutting down"),
    }
    shutdown.cancel();
}
