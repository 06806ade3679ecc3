//! The command line: `sip-firewall run` starts the daemon; other subcommands manage it.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, ConfigError, XdpMode};

#[derive(Debug, Parser)]
#[command(
    name = "sip-firewall",
    version,
    about = "SIP edge firewall: XDP fast path and stateful SIP proxy"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the firewall (embedded defaults when no config file exists).
    Run(RunArgs),
    /// Subscribers of the registrar: print the config line for a new user.
    User {
        #[command(subcommand)]
        cmd: crate::auth::cli::UserCmd,
    },
}

/// Options of `run`; each overrides the config file.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Config file (default /etc/sip-firewall/sip-firewall.toml; embedded defaults when absent).
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Interface to attach the XDP program to (repeat for several).
    #[arg(long = "iface", short = 'i')]
    pub ifaces: Vec<String>,
    /// How to attach XDP: auto (native, else generic), native, generic, off.
    #[arg(long, value_enum)]
    pub xdp_mode: Option<XdpMode>,
    /// Address to listen on for SIP over UDP and TCP (repeat for several).
    #[arg(long = "sip-listen")]
    pub sip_listen: Vec<SocketAddr>,
    /// Address of the Prometheus endpoint.
    #[arg(long)]
    pub metrics_listen: Option<SocketAddr>,
}

impl RunArgs {
    /// The configuration: the file (or defaults) with the command line on top.
    pub fn config(&self) -> Result<Config, ConfigError> {
        let mut config = Config::load(self.config.as_deref())?;
        if !self.ifaces.is_empty() {
            config.xdp.interfaces = self.ifaces.clone();
        }
        if let Some(mode) = self.xdp_mode {
            config.xdp.mode = mode;
        }
        if !self.sip_listen.is_empty() {
            config.sip.listen = self.sip_listen.clone();
        }
        if let Some(addr) = self.metrics_listen {
            config.metrics.listen = Some(addr);
        }
        Ok(config)
    }
}
