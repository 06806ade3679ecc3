//! `sip-firewall`: the daemon and its command line.

use clap::Parser;
use sip_firewall::cli::{Cli, Command};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        Command::User { cmd } => return sip_firewall::auth::cli::run(cmd),
        Command::Run(args) => args
            .config()
            .map_err(anyhow::Error::from)
            .and_then(sip_firewall::daemon::run_blocking),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sip-firewall: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
