//! The daemon's configuration: one TOML file, embedded defaults when absent.
//!
//! Every section rejects unknown keys, so a typo is an error that names the key and its line
//! (the `toml` crate reports both) instead of a setting silently ignored.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

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
    pub registrar: crate::proxy::config::RegistrarConfig,
    pub auth: crate::proxy::config::AuthConfig,
    pub admin: AdminConfig,
    pub state: StateConfig,
    pub bans: crate::enforce::learn::BansConfig,
    pub log: crate::logging::LogConfig,
    pub fraud: crate::fraud::FraudConfig,
    pub tls: TlsConfig,
    pub ws: WsConfig,
    /// `[wss]`: WebSocket over TLS (the `[tls]` certificate, the `[ws]` settings).
    pub wss: crate::server::ws::WssConfig,
    /// `[cluster]`: bans, lists and subscribers shared through Redis; absent: one node.
    pub cluster: Option<crate::cluster::ClusterConfig>,
    pub dns: crate::proxy::dns::DnsConfig,
}

/// `[ws]`: SIP over WebSocket (RFC 7118) for browsers. Connections share the TCP bounds
/// (`[sip] max_tcp_connections`, `max_tcp_per_source`) and `tcp_idle_timeout`; a message
/// is at most `[sip] max_message_bytes`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WsConfig {
    /// Addresses to accept WebSocket upgrades on; empty: no WebSocket listener.
    pub listen: Vec<SocketAddr>,
    /// Origins allowed to connect (as browsers send them, e.g. "https://phone.example.com");
    /// empty: any origin. An upgrade from another origin is refused with 403.
    pub origins: Vec<String>,
    /// Largest WebSocket frame accepted (bytes); a larger one closes the connection.
    pub max_frame_bytes: usize,
    /// A ping is sent after this long without traffic; the pong (or any message) keeps the
    /// connection within `tcp_idle_timeout`.
    #[serde(deserialize_with = "duration")]
    pub ping_interval: Duration,
    /// An upgrade not finished within this is abandoned.
    #[serde(deserialize_with = "duration")]
    pub handshake_timeout: Duration,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            listen: Vec::new(),
            origins: Vec::new(),
            max_frame_bytes: 16384,
            ping_interval: Duration::from_secs(20),
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

/// `[tls]`: SIP over TLS (RFC 3261 26.2, RFC 5630). Connections share the TCP bounds
/// (`[sip] max_tcp_connections`, `max_tcp_per_source`) and `tcp_idle_timeout`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Addresses to accept TLS on (usually port 5061); empty: no TLS listener.
    pub listen: Vec<SocketAddr>,
    /// PEM certificate chain we present (as a server, and as a client to TLS next hops).
    pub certificate: Option<PathBuf>,
    /// PEM private key of `certificate`.
    pub private_key: Option<PathBuf>,
    /// PEM CA certificates: client certificates must chain to them (a client presenting an
    /// untrusted certificate is refused), and TLS next hops are verified against them
    /// instead of the built-in web roots.
    pub ca: Option<PathBuf>,
    /// Refuse clients that present no certificate (needs `ca`).
    pub require_client_certificate: bool,
    /// A TLS handshake not finished within this is abandoned (a handshake flood holds no
    /// slot for long).
    #[serde(deserialize_with = "duration")]
    pub handshake_timeout: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            listen: Vec::new(),
            certificate: None,
            private_key: None,
            ca: None,
            require_client_certificate: false,
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

/// `[admin]`: the admin API the CLI talks to.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// Unix socket of the admin API (created with mode 0600).
    pub socket: PathBuf,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            socket: PathBuf::from(crate::admin::DEFAULT_SOCKET),
        }
    }
}

/// `[state]`: where bans, lists and users are kept across restarts.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// Directory of the state database.
    pub directory: PathBuf,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            directory: PathBuf::from("/var/lib/sip-firewall"),
        }
    }
}

/// `[sip]`: the SIP listeners and the message layer's limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// Addresses the daemon listens on, each on UDP and TCP.
    pub listen: Vec<SocketAddr>,
    /// Domains this proxy is responsible for (registrar and authentication realm).
    pub domains: Vec<String>,
    /// Largest whole message accepted (bytes).
    pub max_message_bytes: usize,
    /// Largest single header line accepted, folded lines included (bytes).
    pub max_header_bytes: usize,
    /// Largest Request-URI accepted (bytes).
    pub max_request_uri_bytes: usize,
    /// A TCP connection that sends no complete message for this long is closed.
    #[serde(deserialize_with = "duration")]
    pub tcp_idle_timeout: Duration,
    /// Answer UDP requests at their source port even without `rport` in the top Via (as
    /// NAT'd clients need); false follows RFC 3261 18.2.2 strictly (the sent-by port).
    pub force_rport: bool,
    /// Most TCP connections at once, accepted and opened by the proxy together; more are
    /// refused (closed at once) and counted.
    pub max_tcp_connections: usize,
    /// Most TCP connections at once with one source address (IPv6: one /64), both directions.
    pub max_tcp_per_source: usize,
    /// Most server transactions at once; a new request beyond gets 503 with Retry-After.
    pub max_transactions: usize,
    /// Most server transactions at once from one source address (IPv6: one /64); allow-listed
    /// sources are bound by `max_transactions` only.
    pub max_transactions_per_source: usize,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 5060))],
            domains: Vec::new(),
            max_message_bytes: 16384,
            max_header_bytes: 2048,
            max_request_uri_bytes: 512,
            tcp_idle_timeout: Duration::from_secs(30),
            force_rport: true,
            max_tcp_connections: 1024,
            max_tcp_per_source: 32,
            max_transactions: 100_000,
            max_transactions_per_source: 1_000,
        }
    }
}

/// How the XDP program is attached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum XdpMode {
    /// Native (driver) mode, falling back to generic mode with a warning.
    #[default]
    Auto,
    /// Native (driver) mode only.
    Native,
    /// Generic (skb) mode only.
    Generic,
    /// No XDP: every check runs in user space.
    Off,
}

/// What bans and deny entries block.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BanScopeConfig {
    /// All traffic from the source.
    #[default]
    All,
    /// Only traffic to the SIP ports.
    SipPorts,
}

impl BanScopeConfig {
    /// The scope as the XDP program stores it.
    pub fn scope(self) -> sip_firewall_common::BanScope {
        match self {
            BanScopeConfig::All => sip_firewall_common::BanScope::All,
            BanScopeConfig::SipPorts => sip_firewall_common::BanScope::SipPorts,
        }
    }
}

/// `[xdp]`: the fast path.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct XdpSection {
    /// Interfaces to attach to.
    pub interfaces: Vec<String>,
    pub mode: XdpMode,
    /// UDP and TCP ports judged as SIP.
    pub sip_ports: Vec<u16>,
    /// Sustained packets per second allowed per source (IPv6: per /64); 0 disables the limit.
    pub flood_rate: u32,
    /// Packets a source may send at once above the sustained rate.
    pub flood_burst: u32,
    /// The flood limit of known sources (registered, recently authenticated, peers of ours:
    /// an office of phones behind one NAT, a trunk): packets per second and burst. Over it
    /// they are throttled (excess dropped and counted), never banned. 0 disables it.
    pub known_flood_rate: u32,
    pub known_flood_burst: u32,
    /// Bits of the prefix flood state and learned bans are kept per: IPv4 (1..=32) and IPv6
    /// (8..=128). One subscriber usually owns a whole IPv6 /64; rotating addresses in it
    /// must neither reset the limit nor fill the ban map.
    pub ban_prefix_v4: u32,
    pub ban_prefix_v6: u32,
    /// How long a source over the flood limit is banned.
    #[serde(deserialize_with = "duration")]
    pub ban_time: Duration,
    /// Largest UDP payload accepted on the SIP ports (bytes); 0 disables the check.
    pub max_payload: u32,
    pub ban_scope: BanScopeConfig,
    /// SIP requests per second from unknown sources together (not registered, not recently
    /// authenticated, not a peer of ours) admitted while more arrive; known sources always
    /// pass. 0 disables the budget.
    pub pressure_budget: u32,
    /// Bytes of a SIP response the XDP program scans for its topmost Via (1500 to 2048); a
    /// Via beyond them is left to user space.
    pub via_scan_bytes: u32,
    /// bpffs directory where the maps and links are pinned, so that a restarted daemon takes
    /// them over without a gap.
    pub pin_dir: PathBuf,
    /// On stop, detach the program and remove the pins (`--detach`). By default they stay,
    /// and the kernel keeps enforcing bans until the next daemon takes over.
    pub detach_on_stop: bool,
}

impl Default for XdpSection {
    fn default() -> Self {
        XdpSection {
            interfaces: Vec::new(),
            mode: XdpMode::Auto,
            sip_ports: vec![5060],
            flood_rate: 50,
            flood_burst: 100,
            // 300 phones behind one NAT re-registering at 150/s with digest: ~300
            // requests/s, their retransmissions and our requests' answers.
            known_flood_rate: 1000,
            known_flood_burst: 2000,
            ban_prefix_v4: 32,
            ban_prefix_v6: 64,
            ban_time: Duration::from_secs(300),
            max_payload: 16384,
            ban_scope: BanScopeConfig::All,
            pressure_budget: 2000,
            via_scan_bytes: 1500,
            pin_dir: PathBuf::from("/sys/fs/bpf/sip-firewall"),
            detach_on_stop: false,
        }
    }
}

/// `[policy]`: who is trusted and who is refused outright.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Trusted prefixes (trunks, PBXs): every check is skipped for them.
    pub allow: Vec<IpNet>,
    /// Refused prefixes: dropped.
    pub deny: Vec<IpNet>,
    /// User-Agent substrings (case-insensitive) of scanners whose requests are dropped
    /// silently; absent: the default list (friendly-scanner, sipvicious, sipcli, ...).
    pub scanners: Option<Vec<String>>,
}

/// `[metrics]`: the Prometheus endpoint.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of `GET /metrics`; absent disables it.
    pub listen: Option<SocketAddr>,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            listen: Some(SocketAddr::from(([127, 0, 0, 1], 9464))),
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
        let invalid = |key, message: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            message: message.to_string(),
        };
        if self.xdp.sip_ports.is_empty() {
            return Err(invalid("xdp.sip_ports", "needs at least one port"));
        }
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
        if self.tls.require_client_certificate && self.tls.ca.is_none() {
            return Err(invalid("tls.require_client_certificate", "needs tls.ca"));
        }
        if self.xdp.sip_ports.contains(&0) {
            return Err(invalid("xdp.sip_ports", "port 0 is not a port"));
        }
        if self.xdp.sip_ports.len() > sip_firewall_common::maps::PORT_ENTRIES as usize {
            return Err(invalid("xdp.sip_ports", "too many ports (at most 64)"));
        }
        if self.xdp.flood_rate > 0 && self.xdp.flood_burst == 0 {
            return Err(invalid(
                "xdp.flood_burst",
                "must be at least 1 when flood_rate is set",
            ));
        }
        if !(1..=32).contains(&self.xdp.ban_prefix_v4) {
            return Err(invalid("xdp.ban_prefix_v4", "must be between 1 and 32"));
        }
        if !(8..=128).contains(&self.xdp.ban_prefix_v6) {
            return Err(invalid("xdp.ban_prefix_v6", "must be between 8 and 128"));
        }
        let max_scan = sip_firewall_common::branch::MAX_VIA_SCAN as u32;
        if !(1500..=max_scan).contains(&self.xdp.via_scan_bytes) {
            return Err(invalid(
                "xdp.via_scan_bytes",
                "must be between 1500 and 2048",
            ));
        }
        if self.xdp.flood_rate > 1_000_000_000 {
            return Err(invalid("xdp.flood_rate", "at most 1000000000 packets/s"));
        }
        if self.sip.max_message_bytes < 256 {
            return Err(invalid("sip.max_message_bytes", "must be at least 256"));
        }
        if self.sip.max_header_bytes < 64 || self.sip.max_header_bytes > self.sip.max_message_bytes
        {
            return Err(invalid(
                "sip.max_header_bytes",
                "must be at least 64 and at most sip.max_message_bytes",
            ));
        }
        if self.sip.max_request_uri_bytes < 16
            || self.sip.max_request_uri_bytes > self.sip.max_header_bytes
        {
            return Err(invalid(
                "sip.max_request_uri_bytes",
                "must be at least 16 and at most sip.max_header_bytes",
            ));
        }
        if self.sip.tcp_idle_timeout.is_zero() {
            return Err(invalid("sip.tcp_idle_timeout", "must be longer than 0s"));
        }
        if self.sip.max_tcp_connections == 0 {
            return Err(invalid("sip.max_tcp_connections", "must be at least 1"));
        }
        crate::proxy::config::validate(
            &self.proxy,
            &self.timers,
            &self.registrar,
            &self.auth,
            &self.sip.domains,
        )
        .map_err(|e| invalid(e.key, &e.message))?;
        self.fraud
            .validate()
            .map_err(|e| invalid(e.key, &e.message))?;
        Ok(())
    }
}

/// Whether `ip` lies in one of `nets`.
pub fn in_any(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(&ip))
}

/// Durations are written as humans write them: `30s`, `5m`, `1h 30m`.
pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "{e} (write durations like \"30s\", \"5m\", \"1h\")"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("test.toml"))
    }

    #[test]
    fn default_file_is_the_defaults() {
        let c = parse(DEFAULT_FILE).unwrap();
        let d = Config::default();
        assert_eq!(c.sip.listen, d.sip.listen);
        assert_eq!(c.sip.max_message_bytes, d.sip.max_message_bytes);
        assert_eq!(c.sip.tcp_idle_timeout, d.sip.tcp_idle_timeout);
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
        let c = parse(include_str!("../config/example.toml")).unwrap();
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
    }

    #[test]
    fn tls_listen_needs_a_certificate() {
        let e = parse("[tls]\nlisten = [\"0.0.0.0:5061\"]\n").unwrap_err();
        assert!(e.to_string().contains("tls.listen"), "{e}");
        let e = parse("[tls]\nrequire_client_certificate = true\n").unwrap_err();
        assert!(e.to_string().contains("needs tls.ca"), "{e}");
    }

    #[test]
    fn empty_file_is_defaults() {
        let c = parse("").unwrap();
        assert_eq!(c.xdp.sip_ports, vec![5060]);
        assert_eq!(c.sip.max_message_bytes, 16384);
        assert_eq!(c.xdp.ban_time, Duration::from_secs(300));
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let err = parse("[xdp]\nsip_ports = [5060]\nflod_rate = 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("flod_rate"), "{err}");
        assert!(err.contains("line 3"), "{err}");
    }

    #[test]
    fn wrong_type_names_line() {
        let err = parse("[xdp]\nflood_rate = \"fast\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn durations_and_lists() {
        let c = parse(
            "[xdp]\nban_time = \"1h 30m\"\nmode = \"generic\"\n[policy]\nallow = [\"192.0.2.0/24\", \"2001:db8::/32\"]\n",
        )
        .unwrap();
        assert_eq!(c.xdp.ban_time, Duration::from_secs(5400));
        assert_eq!(c.xdp.mode, XdpMode::Generic);
        assert!(in_any(&c.policy.allow, "192.0.2.9".parse().unwrap()));
        assert!(!in_any(&c.policy.allow, "198.51.100.1".parse().unwrap()));
        let err = parse("[xdp]\nban_time = \"soon\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("ban_time") || err.contains("line 2"), "{err}");
    }

    #[test]
    fn impossible_values() {
        let err = parse("[xdp]\nsip_ports = []\n").unwrap_err().to_string();
        assert!(err.contains("xdp.sip_ports"), "{err}");
        let err = parse("[xdp]\nflood_rate = 10\nflood_burst = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("xdp.flood_burst"), "{err}");
    }
}
