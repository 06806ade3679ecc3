//! The daemon's configuration: one TOML file, embedded defaults when absent.
//!
//! This file only composes: each unit owns its section type with its defaults and checks
//! (`server::config` `[sip]`, `xdp::config` `[xdp]`, `proxy::config` `[proxy] [timers]
//! [registrar]`, `auth::config` `[auth]`, `enforce::learn` `[bans]`, `fraud::config`
//! `[fraud]`, `state` `[state]`, `metrics::http` `[metrics]`,
//! `logging` `[log]`, `cluster` `[cluster]`, `proxy::dns` `[dns]`, `hep::config` `[hep]`); the serde helpers and
//! the error of a check are `section.rs`'s; `server::config` has `[sip]`, `[tls]` and `[ws]`.
//! `policy::config` has `[policy]`; `[admin]` is still here (the admin unit sits above this
//! module).
//!
//! Every section rejects unknown keys, so a typo is an error that names the key and its line
//! (the `toml` crate reports both) instead of a setting silently ignored.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::section::{Invalid, invalid};
use crate::{
    metrics::http::MetricsConfig,
    policy::config::PolicyConfig,
    server::config::{SipConfig, TlsConfig, WsConfig},
    state::StateConfig,
    xdp::config::XdpSection,
};

/// The documented default file (`sip-firewall config default`).
pub const DEFAULT_FILE: &str = include_str!("../config/default.toml");

/// Where the daemon looks for its file when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/sip-firewall/sip-firewall.toml";

/// An error in a configuration file: what is wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {key}: {message}")]
    Invalid {
        path: PathBuf,
        key: &'static str,
        message: String,
    },
}

/// The whole configuration.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub sip: SipConfig,
    pub xdp: XdpSection,
    pub policy: PolicyConfig,
    pub metrics: MetricsConfig,
    pub proxy: crate::proxy::config::ProxyConfig,
    pub timers: crate::proxy::config::TimersConfig,
    pub registrar: crate::registrar::RegistrarConfig,
    pub auth: crate::auth::config::AuthConfig,
    pub admin: AdminConfig,
    pub state: StateConfig,
    pub bans: crate::enforce::learn::BansConfig,
    /// `[pressure]`: how the unknown-source budget adapts (`enforce::pressure`).
    pub pressure: crate::enforce::pressure::PressureConfig,
    pub log: crate::logging::LogConfig,
    pub fraud: crate::fraud::FraudConfig,
    pub tls: TlsConfig,
    pub ws: WsConfig,
    /// `[wss]`: WebSocket over TLS (the `[tls]` certificate, the `[ws]` settings).
    pub wss: crate::server::ws::WssConfig,
    /// `[cluster]`: bans, lists and subscribers shared through Redis; absent: one node.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    pub dns: crate::proxy::dns::DnsConfig,
    /// `[hep]`: SIP messages to a Homer collector or sngrep (`hep`).
    pub hep: crate::hep::config::HepConfig,
    /// `[[feeds]]`: threat feeds taken into the deny path (`feeds`).
    pub feeds: Vec<crate::feeds::config::FeedConfig>,
}

/// Where the socket lives unless `[admin] socket` says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/sip-firewall/admin.sock";

/// `[admin]`: the admin API the CLI talks to (here, not in `admin/`: that unit loads the
/// configuration and drives a reload, so it sits above this module).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Unix socket of the admin API (created with mode 0600).
    pub socket: PathBuf,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            socket: PathBuf::from(DEFAULT_SOCKET),
        }
    }
}

impl<'a> From<&'a Config> for crate::proxy::config::Sections<'a> {
    fn from(c: &'a Config) -> Self {
        crate::proxy::config::Sections {
            sip: &c.sip,
            tls: &c.tls,
            ws: &c.ws,
            wss: &c.wss,
            policy: &c.policy,
            proxy: &c.proxy,
            timers: &c.timers,
            registrar: &c.registrar,
            auth: &c.auth,
            fraud: &c.fraud,
            dns: &c.dns,
        }
    }
}

impl<'a> From<&'a Config> for crate::enforce::Sections<'a> {
    fn from(c: &'a Config) -> Self {
        crate::enforce::Sections {
            xdp: &c.xdp,
            bans: &c.bans,
            pressure: &c.pressure,
            policy: &c.policy,
            stream_ports: c.stream_ports(),
        }
    }
}

impl Config {
    /// The TCP ports SIP streams arrive on besides `[xdp] sip_ports`: the TLS, WebSocket and
    /// secure WebSocket listeners. XDP counts their new connections and rate-limits their SYNs per source.
    pub fn stream_ports(&self) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .tls
            .listen
            .iter()
            .chain(&self.ws.listen)
            .chain(&self.wss.listen)
            .map(|a| a.port())
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// Parse a configuration from TOML text; `path` names the file in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Load `path`; when `path` is the default path and does not exist, the embedded defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, explicit) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_PATH), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Config::from_toml(&text, &path),
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        self.check().map_err(|e| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: e.key,
            message: e.message,
        })
    }

    /// Each section's own checks, then those that span sections. `[tls]` and `[ws]` are
    /// checked here until they move next to their listeners.
    fn check(&self) -> Result<(), Invalid> {
        self.xdp.validate()?;
        self.pressure.validate()?;
        if !self.tls.listen.is_empty()
            && (self.tls.certificate.is_none() || self.tls.private_key.is_none())
        {
            return Err(invalid(
                "tls.listen",
                "needs tls.certificate and tls.private_key",
            ));
        }
        if !self.wss.listen.is_empty()
            && (self.tls.certificate.is_none() || self.tls.private_key.is_none())
        {
            return Err(invalid(
                "wss.listen",
                "needs tls.certificate and tls.private_key",
            ));
        }
        if self.ws.max_frame_bytes == 0 {
            return Err(invalid("ws.max_frame_bytes", "must be at least 1"));
        }
        if self.ws.ping_interval.is_zero() {
            return Err(invalid("ws.ping_interval", "must be more than 0"));
        }
        if !self.tls.trusted_peers.is_empty() && self.tls.ca.is_none() {
            return Err(invalid("tls.trusted_peers", "needs tls.ca"));
        }
        if self.tls.require_client_certificate && self.tls.ca.is_none() {
            return Err(invalid("tls.require_client_certificate", "needs tls.ca"));
        }
        self.sip.validate()?;
        self.proxy.validate()?;
        self.proxy.validate_with(&self.registrar)?;
        self.policy.validate()?;
        crate::feeds::config::validate(&self.feeds)?;
        self.timers.validate()?;
        self.registrar.validate()?;
        self.auth.validate(&self.sip.domains)?;
        self.fraud.validate()?;
        self.hep.validate()
    }
}

#[cfg(test)]
mod tests {
    use std::{net::SocketAddr, time::Duration};

    use super::*;
    use crate::{section::in_any, xdp::config::XdpMode};

    /// The config of `text` (it must be taken).
    fn parse(text: &str) -> Config {
        Config::from_toml(text, Path::new("test.toml")).unwrap()
    }

    /// What refusing `text` says (it must be refused).
    fn refusal(text: &str) -> String {
        Config::from_toml(text, Path::new("test.toml"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn default_file_is_the_defaults() {
        let c = parse(DEFAULT_FILE);
        let d = Config::default();
        assert_eq!(c.sip.listen, d.sip.listen);
        assert_eq!(c.sip.max_message_bytes, d.sip.max_message_bytes);
        assert_eq!(c.sip.tcp_idle_timeout, d.sip.tcp_idle_timeout);
        assert_eq!(c.sip.udp_threads, d.sip.udp_threads);
        assert_eq!(c.xdp.sip_ports, d.xdp.sip_ports);
        assert_eq!(c.xdp.flood_rate, d.xdp.flood_rate);
        assert_eq!(c.xdp.flood_burst, d.xdp.flood_burst);
        assert_eq!(c.xdp.ban_time, d.xdp.ban_time);
        assert_eq!(c.xdp.pin_dir, d.xdp.pin_dir);
        assert_eq!(c.metrics.listen, d.metrics.listen);
        assert_eq!(c.admin.socket, d.admin.socket);
        assert_eq!(c.state.directory, d.state.directory);
        assert_eq!(c.tls.listen, d.tls.listen);
        assert_eq!(c.tls.handshake_timeout, d.tls.handshake_timeout);
        assert_eq!(c.ws.listen, d.ws.listen);
        assert_eq!(c.wss.listen, d.wss.listen);
        assert_eq!(c.tls.trusted_peers, d.tls.trusted_peers);
        assert_eq!(c.dns.nameservers, d.dns.nameservers);
        assert_eq!(c.dns.timeout, d.dns.timeout);
        assert_eq!(c.dns.max_cached, d.dns.max_cached);
        assert_eq!(c.ws.origins, d.ws.origins);
        assert_eq!(c.ws.max_frame_bytes, d.ws.max_frame_bytes);
        assert_eq!(c.ws.ping_interval, d.ws.ping_interval);
        assert_eq!(c.ws.handshake_timeout, d.ws.handshake_timeout);
        assert_eq!(
            c.tls.require_client_certificate,
            d.tls.require_client_certificate
        );
    }

    #[test]
    fn example_file_parses() {
        let c = parse(include_str!("../config/example.toml"));
        assert_eq!(c.xdp.sip_ports, vec![5060, 5080]);
        assert_eq!(c.policy.allow.len(), 2);
        assert_eq!(c.xdp.mode, XdpMode::Native);
        assert_eq!(c.fraud.rules.len(), 2);
        assert_eq!(c.fraud.groups.len(), 1);
        assert_eq!(c.tls.listen, vec![SocketAddr::from(([0, 0, 0, 0], 5061))]);
        assert_eq!(
            c.ws.origins,
            vec!["https://phone.voip.example.com".to_string()]
        );
        assert_eq!(c.wss.listen, vec![SocketAddr::from(([0, 0, 0, 0], 8443))]);
        assert_eq!(
            c.tls.trusted_peers,
            vec!["trunk.carrier.example".to_string()]
        );
        assert_eq!(
            c.proxy.outbound,
            Some(crate::section::NextHop::Name("sip:carrier.example".into()))
        );
    }

    #[test]
    fn tls_listen_needs_a_certificate() {
        let e = refusal("[tls]\nlisten = [\"0.0.0.0:5061\"]\n");
        assert!(e.to_string().contains("tls.listen"), "{e}");
        let e = refusal("[tls]\nrequire_client_certificate = true\n");
        assert!(e.to_string().contains("needs tls.ca"), "{e}");
    }

    #[test]
    fn empty_file_is_defaults() {
        let c = parse("");
        assert_eq!(c.xdp.sip_ports, vec![5060]);
        assert_eq!(c.sip.max_message_bytes, 16384);
        assert_eq!(c.xdp.ban_time, Duration::from_secs(300));
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = refusal("[xdp]\nsip_ports = [5060]\nflod_rate = 3\n");
        assert!(err.contains("flod_rate"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    /// `[sip] listen` entries: an address, or a table with its own advertise; a bad
    /// address, an unknown key or an unusable advertise names the key and what to write.
    #[test]
    fn listen_entries_take_both_spellings() {
        let c = parse(
            "[sip]\nlisten = [\"10.0.1.1:5060\", { addr = \"10.0.2.1:5060\", advertise = \"198.51.100.7\" }]\n",
        );
        let want: Vec<std::net::SocketAddr> = vec![
            "10.0.1.1:5060".parse().unwrap(),
            "10.0.2.1:5060".parse().unwrap(),
        ];
        assert_eq!(c.sip.addrs(), want);
        assert_eq!(c.sip.listen[0].advertise, None);
        assert_eq!(c.sip.listen[1].advertise.as_deref(), Some("198.51.100.7"));
        for (bad, says) in [
            ("[\"10.0.1.1\"]", "ip:port"),
            (
                "[{ addr = \"10.0.1.1:5060\", advertize = \"x\" }]",
                "advertize",
            ),
            (
                "[{ addr = \"10.0.1.1:5060\", advertise = \"a b\" }]",
                "host or host:port",
            ),
        ] {
            let err = refusal(&format!("[sip]\nlisten = {bad}\n"));
            assert!(
                err.contains("sip.listen") || err.contains("line 2"),
                "{err}"
            );
            assert!(err.contains(says), "{err}");
        }
    }

    #[test]
    fn wrong_type_names_line() {
        let err = refusal("[xdp]\nflood_rate = \"fast\"\n");
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn durations_and_lists() {
        let c = parse(
            "[xdp]\nban_time = \"1h 30m\"\nmode = \"generic\"\n[policy]\nallow = [\"192.0.2.0/24\", \"2001:db8::/32\"]\n",
        );
        assert_eq!(c.xdp.ban_time, Duration::from_secs(5400));
        assert_eq!(c.xdp.mode, XdpMode::Generic);
        assert!(in_any(&c.policy.allow, "192.0.2.9".parse().unwrap()));
        assert!(!in_any(&c.policy.allow, "198.51.100.1".parse().unwrap()));
        let err = refusal("[xdp]\nban_time = \"soon\"\n");
        assert!(err.contains("ban_time") || err.contains("line 2"), "{err}");
    }

    #[test]
    fn impossible_values() {
        let err = refusal("[xdp]\nsip_ports = []\n");
        assert!(err.contains("xdp.sip_ports"), "{err}");
        let err = refusal("[xdp]\nflood_rate = 10\nflood_burst = 0\n");
        assert!(err.contains("xdp.flood_burst"), "{err}");
    }
}
