//! `sip-firewall`: the daemon and its command line.

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser};
use sip_firewall::{
    admin::commands,
    cli::{Cli, Command, ConfigCmd, Generate, SecretCmd},
    config::{Config, DEFAULT_FILE},
    logging::{self, LogFormat},
    state::List,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run(args) => {
            let config = args.config();
            let format = cli
                .log_format
                .or_else(|| config.as_ref().ok().map(|c| c.log.format))
                .unwrap_or_default();
            logging::init(format);
            // A reload reads the same file with the same command line on top.
            sip_firewall::reload::set_source(move || args.config());
            report(
                config
                    .map_err(anyhow::Error::from)
                    .and_then(sip_firewall::daemon::run_blocking),
            )
        }
        command => {
            logging::init(cli.log_format.unwrap_or(LogFormat::Text));
            tool(command)
        }
    }
}

/// Every command but `run`.
fn tool(command: Command) -> ExitCode {
    match command {
        Command::Run(_) => ExitCode::from(2),
        Command::Status(common) => commands::status(&common),
        Command::Stats(common) => commands::stats(&common),
        Command::Why { source, common } => sip_firewall::admin::why::why(&common, source),
        Command::Feeds(common) => commands::feeds(&common),
        Command::Reload(common) => commands::reload(&common),
        Command::Capture(args) => report(sip_firewall::capture::command(&args)),
        Command::Top(args) => sip_firewall::admin::top::run(
            &commands::socket(&args.common),
            std::time::Duration::from_secs(args.interval),
        ),
        Command::Ban { cmd, common } => commands::ban(&common, cmd),
        Command::Allow { cmd, common } => commands::list(&common, List::Allow, cmd),
        Command::Deny { cmd, common } => commands::list(&common, List::Deny, cmd),
        Command::User { cmd, common } => sip_firewall::admin::user_cli::run(cmd, &common),
        Command::Generate { what, dir } => report(generate(what, &dir)),
        Command::Fraud { cmd, common } => sip_firewall::admin::fraud_cli::run(cmd, &common),
        Command::Secret {
            cmd: SecretCmd::Generate,
        } => match sip_firewall::auth::keys::generate() {
            Ok(s) => {
                println!("{s}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sip-firewall: {e}");
                ExitCode::from(1)
            }
        },
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

/// Man pages (one per command and subcommand) or completions, from the CLI definition.
fn generate(what: Generate, dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let cmd = Cli::command();
    match what {
        Generate::Man => {
            clap_mangen::generate_to(cmd, dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
        }
        Generate::Completions => {
            use clap_complete::Shell;
            for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
                let mut cmd = Cli::command();
                let path = clap_complete::generate_to(shell, &mut cmd, "sip-firewall", dir)
                    .with_context(|| format!("writing {shell} completions"))?;
                println!("{}", path.display());
            }
        }
    }
    Ok(())
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
