//! The command line: `sip-firewall run` starts the daemon; other subcommands manage it.

use std::{net::SocketAddr, path::PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::admin::commands::{BanCmd, Common, ListCmd};
use crate::config::{Config, ConfigError};
use crate::xdp::config::XdpMode;

#[derive(Debug, Parser)]
#[command(
    name = "sip-firewall",
    version,
    about = "SIP edge firewall: XDP fast path and stateful SIP proxy"
)]
pub struct Cli {
    /// Log format: text (journald-friendly) or json (one object a line); default: `[log]
    /// format` of the config, else text.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<crate::logging::LogFormat>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the firewall (embedded defaults when no config file exists).
    Run(RunArgs),
    /// What the running daemon does: XDP attachment, enforcement, listeners, counts.
    Status(Common),
    /// The XDP counters by verdict, and bans made.
    Stats(Common),
    /// The threat feeds: last load, entries applied and refused (and why).
    Feeds(Common),
    /// A live view of the running daemon: verdict rates, dropped sources, SIP; `q` quits.
    Top(TopArgs),
    /// Write the packets the XDP program judged, by verdict, and (`--layer gate`) what the
    /// user-space gate refused and the message layer answered itself, into a pcapng file
    /// (each packet's verdict or reason in its comment).
    Capture(crate::capture::CaptureArgs),
    /// Every reason the edge would drop or throttle a source now (lists, bans and their
    /// trigger, flood state, trust tier, pressure budget, TCP slots, fraud suspensions), in
    /// the order they decide, and what lifts each.
    Why {
        /// The source: ADDRESS, ADDRESS:PORT or [IPv6]:PORT.
        #[arg(value_parser = crate::admin::why::parse_source)]
        source: (std::net::IpAddr, Option<u16>),
        #[command(flatten)]
        common: Common,
    },
    /// Re-read the daemon's config file (as SIGHUP does) and apply what changed.
    Reload(Common),
    /// Manage bans of the running daemon.
    Ban {
        #[command(subcommand)]
        cmd: BanCmd,
        #[command(flatten)]
        common: Common,
    },
    /// Manage the allow list (trusted sources skip every check).
    Allow {
        #[command(subcommand)]
        cmd: ListCmd,
        #[command(flatten)]
        common: Common,
    },
    /// Manage the deny list (sources dropped outright).
    Deny {
        #[command(subcommand)]
        cmd: ListCmd,
        #[command(flatten)]
        common: Common,
    },
    /// Check a config file, or print the documented defaults.
    Config {
        #[command(subcommand)]
        cmd: ConfigCmd,
    },
    /// The toll-fraud guard: counters, suspended accounts, warnings.
    Fraud {
        #[command(subcommand)]
        cmd: crate::admin::fraud_cli::FraudCmd,
        #[command(flatten)]
        common: Common,
    },
    /// Subscribers of the registrar: print the config line for a new user.
    User {
        #[command(subcommand)]
        cmd: crate::admin::user_cli::UserCmd,
        #[command(flatten)]
        common: Common,
    },
    /// The master secret of `[auth] secret`.
    Secret {
        #[command(subcommand)]
        cmd: SecretCmd,
    },
    /// Write the man pages or shell completions into a directory (used by packaging).
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: Generate,
        /// Directory to write into (created when missing).
        dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretCmd {
    /// Print a new secret (256 random bits as 64 hex digits) for `[auth] secret`; the same on
    /// every node of a cluster.
    Generate,
}

/// What `generate` writes.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Generate {
    /// One man page per command and subcommand (section 1).
    Man,
    /// Completions for bash, zsh and fish.
    Completions,
}

/// Options of `top`.
#[derive(Debug, Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub common: Common,
    /// Seconds between refreshes.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub interval: u64,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Validate a config file; errors name the key and the line.
    Check { file: PathBuf },
    /// Print the default config file, every setting documented.
    Default,
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
    /// On stop, detach the XDP program and remove its pins (default: leave it enforcing).
    #[arg(long)]
    pub detach: bool,
    /// bpffs directory of the pinned maps and links.
    #[arg(long)]
    pub pin_dir: Option<PathBuf>,
    /// Directory of the state database (bans, lists).
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// The admin API's Unix socket.
    #[arg(long)]
    pub admin_socket: Option<PathBuf>,
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
            config.sip.listen = self.sip_listen.iter().map(|a| (*a).into()).collect();
        }
        if self.detach {
            config.xdp.detach_on_stop = true;
        }
        if let Some(d) = &self.pin_dir {
            config.xdp.pin_dir = d.clone();
        }
        if let Some(d) = &self.state_dir {
            config.state.directory = d.clone();
        }
        if let Some(s) = &self.admin_socket {
            config.admin.socket = s.clone();
        }
        if let Some(addr) = self.metrics_listen {
            config.metrics.listen = Some(addr);
        }
        Ok(config)
    }
}
