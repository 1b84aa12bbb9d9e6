//! The `firmware-sim` command: parses arguments, sets up logging and Ctrl-C
//! handling, and hands over to [`firmware_sim::cli::run`].

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use firmware_sim::cli::{self, Cli};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("warn,rumqttd=off")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let shutdown = CancellationToken::new();
    firmware_sim::shutdown::cancel_on_signals(shutdown.clone());
    match cli::run(cli, shutdown).await {
        Ok(code) => code,
        Err(err) => {
            eprintln!("firmware-sim: {err:#}");
            ExitCode::FAILURE
        }
    }
}
