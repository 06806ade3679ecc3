//! `[registrar]`: its defaults and checks; `config::Config` holds it as `registrar`.

use std::time::Duration;

use serde::Deserialize;

use crate::section::{Invalid, NextHop, duration, invalid};

/// Who keeps the bindings: the edge itself, or the operator's registrar behind it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The edge is the registrar: `[auth] users` (or the cluster's) and its location store.
    #[default]
    Local,
    /// REGISTER and our domains' requests go to `relay_to`, the operator's registrar; the
    /// edge adds a Path entry with a flow token naming the phone's flow (RFC 3327, RFC 5626)
    /// and holds no credential (`crate::registrar::relay`).
    Relay,
}

/// Which contacts the registrar keeps alive (`registrar::keepalive`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeepaliveMode {
    /// Contacts behind NAT: their source differs from their Contact, or their Contact asks
    /// for its flow (RFC 5626 `;ob`).
    #[default]
    Nat,
    /// Every contact whose flow this node holds.
    All,
    /// None: bindings live until they expire or are removed.
    Off,
}

/// `[registrar]`: bindings of addresses of record (RFC 3261 10.3).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrarConfig {
    /// Shortest registration accepted; shorter ones get 423 with Min-Expires (seconds).
    pub min_expires: u32,
    /// Longest registration granted; longer ones are cut to this (seconds).
    pub max_expires: u32,
    /// Registration length when the request names none (seconds).
    pub default_expires: u32,
    /// Most contacts bound to one address of record.
    pub max_contacts: usize,
    /// `local` (the edge binds) or `relay` (to `relay_to`).
    pub mode: Mode,
    /// The registrar of relay mode: `sip:10.0.0.5:5060`, `10.0.0.5:5060` or a name
    /// resolved by RFC 3263.
    pub relay_to: Option<NextHop>,
    /// Most flows of relayed registrations the edge remembers in total.
    pub max_relayed: usize,
    /// Most flows of relayed registrations from one source address (phones behind one NAT
    /// share it).
    pub max_relayed_per_source: usize,
    /// Which contacts are pinged (`"nat"`, `"all"`, `"off"`).
    pub keepalive: KeepaliveMode,
    /// How often each kept-alive contact is pinged.
    #[serde(deserialize_with = "duration")]
    pub keepalive_interval: Duration,
    /// Pings in a row a contact may leave unanswered before its binding is removed.
    pub keepalive_failures: u32,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            // Few: each contact is a branch of every call to the address of record.
            max_contacts: 5,
            mode: Mode::Local,
            relay_to: None,
            max_relayed: 100_000,
            max_relayed_per_source: 256,
            keepalive: KeepaliveMode::Nat,
            // Below the 30 s many NATs keep an idle UDP mapping (RFC 5626 4.4.1 suggests
            // 95-120 s for flows the client keeps alive itself).
            keepalive_interval: Duration::from_secs(30),
            keepalive_failures: 3,
        }
    }
}

impl RegistrarConfig {
    /// Check `[registrar]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.min_expires == 0 {
            return Err(invalid("registrar.min_expires", "must be at least 1"));
        }
        if self.max_expires < self.min_expires {
            return Err(invalid(
                "registrar.max_expires",
                "must be at least registrar.min_expires",
            ));
        }
        if !(self.min_expires..=self.max_expires).contains(&self.default_expires) {
            return Err(invalid(
                "registrar.default_expires",
                "must lie between min_expires and max_expires",
            ));
        }
        if self.max_contacts == 0 {
            return Err(invalid("registrar.max_contacts", "must be at least 1"));
        }
        if self.mode == Mode::Relay && self.relay_to.is_none() {
            return Err(invalid(
                "registrar.relay_to",
                "mode = \"relay\" needs the registrar to relay to, e.g. relay_to = \"sip:10.0.0.5:5060\"",
            ));
        }
        if self.max_relayed == 0 || self.max_relayed_per_source == 0 {
            return Err(invalid(
                "registrar.max_relayed",
                "max_relayed and max_relayed_per_source must be at least 1",
            ));
        }
        if self.keepalive_interval < Duration::from_secs(1) {
            return Err(invalid(
                "registrar.keepalive_interval",
                "must be at least 1s (write it like \"30s\"); turn pings off with keepalive = \"off\"",
            ));
        }
        if self.keepalive_failures == 0 {
            return Err(invalid(
                "registrar.keepalive_failures",
                "must be at least 1 (pings a contact may miss before its binding is removed)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RegistrarConfig, String> {
        let c: RegistrarConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        c.validate()
            .map_err(|e| format!("{}: {}", e.key, e.message))?;
        Ok(c)
    }

    #[test]
    fn relay_mode_needs_a_registrar() {
        assert_eq!(parse("").expect("defaults").mode, Mode::Local);
        let e = parse("mode = \"relay\"").unwrap_err();
        assert!(e.starts_with("registrar.relay_to"), "{e}");
        let c = parse("mode = \"relay\"\nrelay_to = \"sip:10.0.0.5:5060\"").expect("relay");
        assert_eq!(
            c.relay_to,
            Some(NextHop::Addr("10.0.0.5:5060".parse().expect("addr")))
        );
        let c = parse("mode = \"relay\"\nrelay_to = \"sip:10.0.0.5\"").expect("relay");
        assert_eq!(
            c.relay_to,
            Some(NextHop::Addr("10.0.0.5:5060".parse().expect("addr")))
        );
        let c = parse("mode = \"relay\"\nrelay_to = \"pbx.example.com\"").expect("relay");
        assert_eq!(
            c.relay_to,
            Some(NextHop::Name("sip:pbx.example.com".into()))
        );
        assert!(parse("mode = \"proxy\"").is_err());
    }
}
