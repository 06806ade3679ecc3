//! `sip-firewall`: the daemon and its command line.

use std::process::ExitCode;

use clap::Parser;
use sip_firewall::{
    admin::commands,
    cli::{Cli, Command, ConfigCmd},
    config::{Config, DEFAULT_FILE},
    state::List,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Run(args) => report(
            args.config()
                .map_err(anyhow::Error::from)
                .and_then(sip_firewall::daemon::run_blocking),
        ),
        Command::Status(common) => commands::status(&common),
        Command::Stats(common) => commands::stats(&common),
        Command::Ban { cmd, common } => commands::ban(&common, cmd),
        Command::Allow { cmd, common } => commands::list(&common, List::Allow, cmd),
        Command::Deny { cmd, common } => commands::list(&common, List::Deny, cmd),
        Command::User { cmd, common } => sip_firewall::auth::cli::run(cmd, &common),
        Command::Fraud { cmd, common } => sip_firewall::fraud::cli::run(cmd, &common),
        Command::Config { cmd } => match cmd {
            ConfigCmd::Default => {
                print!("{DEFAULT_FILE}");
                ExitCode::SUCCESS
            }
            ConfigCmd::Check { file } => match Config::load(Some(&file)) {
                Ok(_) => {
                    println!("{}: ok", file.display());
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sip-firewall: {e}");
                    ExitCode::from(1)
                }
            },
        },
    }
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sip-firewall: {e:#}");
            ExitCode::FAILURE
        }
    }
}
