//! `[xdp]`: the fast path's settings, with their defaults and checks.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::section::{Invalid, duration, invalid};

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

impl XdpSection {
    /// The settings as the XDP program reads them; learned (flood) bans take
    /// `[bans] learned_scope`.
    pub fn kernel_config(&self, learned_scope: BanScopeConfig) -> sip_firewall_common::XdpConfig {
        sip_firewall_common::XdpConfig {
            max_payload: self.max_payload,
            ban_scope: self.ban_scope.scope() as u32,
            via_scan: self.via_scan_bytes,
            flags: if learned_scope == BanScopeConfig::SipPorts {
                sip_firewall_common::XdpConfig::LEARNED_SIP_PORTS
            } else {
                0
            },
            ..Default::default()
        }
        .with_flood(
            self.flood_rate,
            self.flood_burst,
            self.ban_time.as_nanos() as u64,
        )
        .with_known_flood(self.known_flood_rate, self.known_flood_burst)
        .with_pressure_budget(self.pressure_budget)
        .with_ban_prefixes(self.ban_prefix_v4, self.ban_prefix_v6)
    }

    /// Check `[xdp]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.sip_ports.is_empty() {
            return Err(invalid("xdp.sip_ports", "needs at least one port"));
        }
        if self.sip_ports.contains(&0) {
            return Err(invalid("xdp.sip_ports", "port 0 is not a port"));
        }
        if self.sip_ports.len() > sip_firewall_common::maps::PORT_ENTRIES as usize {
            return Err(invalid("xdp.sip_ports", "too many ports (at most 64)"));
        }
        if self.flood_rate > 0 && self.flood_burst == 0 {
            return Err(invalid(
                "xdp.flood_burst",
                "must be at least 1 when flood_rate is set",
            ));
        }
        if !(1..=32).contains(&self.ban_prefix_v4) {
            return Err(invalid("xdp.ban_prefix_v4", "must be between 1 and 32"));
        }
        if !(8..=128).contains(&self.ban_prefix_v6) {
            return Err(invalid("xdp.ban_prefix_v6", "must be between 8 and 128"));
        }
        let max_scan = sip_firewall_common::branch::MAX_VIA_SCAN as u32;
        if !(1500..=max_scan).contains(&self.via_scan_bytes) {
            return Err(invalid(
                "xdp.via_scan_bytes",
                "must be between 1500 and 2048",
            ));
        }
        if self.flood_rate > 1_000_000_000 {
            return Err(invalid("xdp.flood_rate", "at most 1000000000 packets/s"));
        }
        Ok(())
    }
}
