//! The proxy's configuration sections: `[proxy]` and `[timers]`, each with its defaults and
//! its checks; `config::Config` holds one field per section (`[auth]` is `auth::config`'s,
//! `[registrar]` is `registrar::config`'s).

use std::time::Duration;

use serde::Deserialize;

use crate::{
    auth::config::AuthConfig,
    registrar::config::{Mode, RegistrarConfig},
    section::{Invalid, NextHop, duration, invalid, is_hostport_text, opt_duration},
};

/// The sections the proxy reads. `config.rs` builds it from the whole `Config` (which
/// composes the sections of every unit, this one's included, so the proxy never names it).
#[derive(Clone, Copy)]
pub struct Sections<'a> {
    pub sip: &'a crate::server::config::SipConfig,
    pub tls: &'a crate::server::config::TlsConfig,
    pub ws: &'a crate::server::config::WsConfig,
    pub wss: &'a crate::server::ws::WssConfig,
    pub policy: &'a crate::policy::config::PolicyConfig,
    pub proxy: &'a ProxyConfig,
    pub timers: &'a TimersConfig,
    pub registrar: &'a RegistrarConfig,
    pub auth: &'a AuthConfig,
    pub fraud: &'a crate::fraud::config::FraudConfig,
    pub dns: &'a super::dns::DnsConfig,
}

/// `[proxy]`: how requests are forwarded.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// `host[:port]` written into our Via and Record-Route (a `[sip] listen` entry's own
    /// `advertise` wins for what leaves from it); default: the listen address a message
    /// leaves from (the first listen address, or the first domain when that address is a
    /// wildcard).
    pub advertise: Option<String>,
    /// The outbound proxy or trunk that requests to foreign domains go to (from
    /// authenticated local users and allow-listed peers only): `ip:port`, or a name
    /// (`trunk.example.com`, `trunk.example.com:5080`, `sip:trunk.example.com;transport=tcp`)
    /// resolved by RFC 3263 with failover between its targets. Absent: foreign targets are
    /// reached directly, by address or by DNS.
    pub outbound: Option<NextHop>,
    /// Relay mode's call server (`[registrar] mode = "relay"`): the initial requests other
    /// than REGISTER that relay mode sends inward (to our domains, and from our phones) go
    /// here instead of to `[registrar] relay_to`, which keeps REGISTER; requests from it
    /// down a flow token are accepted as the registrar's. Same forms as `relay_to`. Absent:
    /// everything goes to `relay_to`. Only relay mode reads it (refused otherwise).
    pub inbound: Option<NextHop>,
    /// Loopback, link-local or own addresses that a request's Request-URI or Route, or the
    /// dialog stamp of an in-dialog request, may name as its next hop (none by default:
    /// nobody outside steers the edge toward the services of its own host or link).
    #[serde(default)]
    pub internal_next_hops: Vec<ipnet::IpNet>,
    /// Peers whose responses may come from another address or transport than their request
    /// went to (a load-balanced trunk); everyone else's are dropped as strays. Within one
    /// listed network, any address also counts as the same party of a dialog.
    #[serde(default)]
    pub reply_from_any: Vec<ipnet::IpNet>,
    /// The answer to a request for a user of ours who is unknown or not registered: the
    /// same for both (480 or 404), so that nobody outside can tell who exists.
    pub unavailable: u16,
    /// Identity headers (RFC 3325, and older ones) removed from requests from outside the
    /// trust domain; for our authenticated users the edge sets P-Asserted-Identity itself.
    pub identity_headers: Vec<String>,
    /// How long the dialog stamp of our Record-Route stays valid; older stamps are refused
    /// (404). The Record-Route of a dialog is fixed when it is created (RFC 3261 12.1: a
    /// re-INVITE does not renew it), so this outlasts the longest call. Absent:
    /// [`STAMP_MARGIN`] more than `[fraud] max_call_duration`, [`STAMP_LIFETIME_UNBOUNDED`]
    /// when calls have no limit.
    #[serde(deserialize_with = "opt_duration")]
    pub stamp_lifetime: Option<Duration>,
    /// Topology hiding (`super::hide`): "off", or "outside": toward destinations that are
    /// not allow-listed, no Via, Record-Route entry or Contact names a host inside.
    pub topology_hiding: TopologyHiding,
    /// How many shards the proxy's call state is split into, each behind its own lock
    /// (a message goes to the shard of its Call-ID, `sip_firewall_common::shard`), so
    /// that workers on several cores do not queue on one lock. Absent: the number of
    /// CPUs. At most [`sip_firewall_common::shard::MAX_SHARDS`].
    pub shards: Option<usize>,
}

/// `[proxy] topology_hiding`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TopologyHiding {
    /// Messages leave with every Via and Record-Route entry they carry.
    #[default]
    Off,
    /// Toward destinations outside `[policy] allow`, only our Via and Record-Route entry,
    /// Contacts sealed (`super::hide`).
    Outside,
}

/// How much longer than `[fraud] max_call_duration` stamps last by default.
pub const STAMP_MARGIN: Duration = Duration::from_secs(3600);
/// The default stamp lifetime when `[fraud] max_call_duration` is "0s" (no limit).
pub const STAMP_LIFETIME_UNBOUNDED: Duration = Duration::from_secs(24 * 3600);
/// The shortest `[proxy] stamp_lifetime`.
const MIN_STAMP_LIFETIME: Duration = Duration::from_secs(60);

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            advertise: None,
            outbound: None,
            inbound: None,
            internal_next_hops: Vec::new(),
            reply_from_any: Vec::new(),
            unavailable: 480,
            identity_headers: [
                "P-Asserted-Identity",
                "P-Preferred-Identity",
                "Remote-Party-ID",
                "Diversion",
            ]
            .map(String::from)
            .to_vec(),
            stamp_lifetime: None,
            topology_hiding: TopologyHiding::Off,
            shards: None,
        }
    }
}

/// `[timers]`: RFC 3261 17 timers. T1, T2 and T4 are the base values; every lettered timer
/// defaults to the value RFC 3261 Table 4 derives from them and can be set on its own.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TimersConfig {
    /// Round-trip estimate (500ms).
    #[serde(deserialize_with = "duration")]
    pub t1: Duration,
    /// Longest retransmit interval for non-INVITE requests and INVITE responses (4s).
    #[serde(deserialize_with = "duration")]
    pub t2: Duration,
    /// Longest time a message stays in the network (5s).
    #[serde(deserialize_with = "duration")]
    pub t4: Duration,
    /// INVITE retransmit interval, initially (T1).
    #[serde(deserialize_with = "opt_duration")]
    pub a: Option<Duration>,
    /// INVITE transaction timeout (64*T1).
    #[serde(deserialize_with = "opt_duration")]
    pub b: Option<Duration>,
    /// Proxy INVITE transaction timeout (3 minutes).
    #[serde(deserialize_with = "duration")]
    pub c: Duration,
    /// Wait time for response retransmits after a non-2xx to INVITE (32s).
    #[serde(deserialize_with = "duration")]
    pub d: Duration,
    /// Non-INVITE retransmit interval, initially (T1).
    #[serde(deserialize_with = "opt_duration")]
    pub e: Option<Duration>,
    /// Non-INVITE transaction timeout (64*T1).
    #[serde(deserialize_with = "opt_duration")]
    pub f: Option<Duration>,
    /// INVITE response retransmit interval, initially (T1).
    #[serde(deserialize_with = "opt_duration")]
    pub g: Option<Duration>,
    /// Wait time for the ACK (64*T1).
    #[serde(deserialize_with = "opt_duration")]
    pub h: Option<Duration>,
    /// Wait time for ACK retransmits (T4).
    #[serde(deserialize_with = "opt_duration")]
    pub i: Option<Duration>,
    /// Wait time for non-INVITE request retransmits (64*T1).
    #[serde(deserialize_with = "opt_duration")]
    pub j: Option<Duration>,
    /// Wait time for non-INVITE response retransmits (T4).
    #[serde(deserialize_with = "opt_duration")]
    pub k: Option<Duration>,
}

impl Default for TimersConfig {
    fn default() -> Self {
        TimersConfig {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
            a: None,
            b: None,
            c: Duration::from_secs(180),
            d: Duration::from_secs(32),
            e: None,
            f: None,
            g: None,
            h: None,
            i: None,
            j: None,
            k: None,
        }
    }
}

impl ProxyConfig {
    /// How long dialog stamps stay valid: `stamp_lifetime`, else a little longer than the
    /// longest call `[fraud]` allows.
    pub fn effective_stamp_lifetime(&self, fraud: &crate::fraud::config::FraudConfig) -> Duration {
        self.stamp_lifetime
            .unwrap_or(if fraud.max_call_duration.is_zero() {
                STAMP_LIFETIME_UNBOUNDED
            } else {
                fraud.max_call_duration.saturating_add(STAMP_MARGIN)
            })
    }

    /// How many shards the proxy has: `shards`, else one per CPU.
    pub fn effective_shards(&self) -> usize {
        self.shards
            .unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            })
            .clamp(1, sip_firewall_common::shard::MAX_SHARDS as usize)
    }

    /// Check `[proxy]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.stamp_lifetime.is_some_and(|l| l < MIN_STAMP_LIFETIME) {
            return Err(invalid(
                "proxy.stamp_lifetime",
                "must be at least 1m (and longer than the longest call: in-dialog requests \
                 of older dialogs get 404)",
            ));
        }
        if let Some(a) = &self.advertise
            && !is_hostport_text(a)
        {
            return Err(invalid("proxy.advertise", "must be host or host:port"));
        }
        let max = sip_firewall_common::shard::MAX_SHARDS as usize;
        if self.shards.is_some_and(|n| n == 0 || n > max) {
            return Err(invalid(
                "proxy.shards",
                format!("must be between 1 and {max}"),
            ));
        }
        if !matches!(self.unavailable, 404 | 480) {
            return Err(invalid("proxy.unavailable", "must be 480 or 404"));
        }
        if let Some(h) = self
            .identity_headers
            .iter()
            .find(|h| h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        {
            return Err(invalid(
                "proxy.identity_headers",
                format!("{h:?} is not a header name"),
            ));
        }
        Ok(())
    }

    /// Check `[proxy]` against `[registrar]`: `inbound` is a next hop of relay mode only
    /// (in local mode the edge routes our domains' requests itself, by its bindings).
    pub fn validate_with(&self, registrar: &RegistrarConfig) -> Result<(), Invalid> {
        if self.inbound.is_some() && registrar.mode != Mode::Relay {
            return Err(invalid(
                "proxy.inbound",
                "is the call server of relay mode only: set [registrar] mode = \"relay\" \
                 (with relay_to), or remove proxy.inbound",
            ));
        }
        Ok(())
    }
}

impl TimersConfig {
    /// Check `[timers]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.t1.is_zero() {
            return Err(invalid("timers.t1", "must be longer than 0s"));
        }
        if self.t2 < self.t1 {
            return Err(invalid("timers.t2", "must be at least timers.t1"));
        }
        if self.t4.is_zero() {
            return Err(invalid("timers.t4", "must be longer than 0s"));
        }
        if self.c < Duration::from_secs(180) {
            // RFC 3261 16.6 step 11: Timer C MUST be larger than 3 minutes.
            return Err(invalid("timers.c", "must be at least 3m (RFC 3261 16.6)"));
        }
        for (key, v) in [
            ("timers.a", self.a),
            ("timers.b", self.b),
            ("timers.e", self.e),
            ("timers.f", self.f),
            ("timers.g", self.g),
            ("timers.h", self.h),
            ("timers.j", self.j),
        ] {
            if v.is_some_and(|d| d.is_zero()) {
                return Err(invalid(key, "must be longer than 0s"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<(), String> {
        let c = crate::config::Config::from_toml(text, std::path::Path::new("t.toml"))
            .map_err(|e| e.to_string())?;
        let _ = c;
        Ok(())
    }

    #[test]
    fn default_file_documents_the_defaults() {
        let c = crate::config::Config::from_toml(
            crate::config::DEFAULT_FILE,
            std::path::Path::new("default.toml"),
        )
        .unwrap();
        let t = TimersConfig::default();
        assert_eq!((c.timers.t1, c.timers.t2, c.timers.t4), (t.t1, t.t2, t.t4));
        assert_eq!((c.timers.c, c.timers.d), (t.c, t.d));
        let r = RegistrarConfig::default();
        assert_eq!(
            (c.registrar.min_expires, c.registrar.max_expires),
            (r.min_expires, r.max_expires)
        );
        assert_eq!(
            (c.registrar.default_expires, c.registrar.max_contacts),
            (r.default_expires, r.max_contacts)
        );
        let a = AuthConfig::default();
        assert_eq!(c.auth.algorithms, a.algorithms);
        assert_eq!(c.auth.nonce_lifetime, a.nonce_lifetime);
        assert!(c.proxy.advertise.is_none() && c.proxy.outbound.is_none());
        let p = ProxyConfig::default();
        assert_eq!(c.proxy.unavailable, p.unavailable);
        assert_eq!(c.proxy.identity_headers, p.identity_headers);
        assert!(c.policy.scanners.is_none());
        let f = crate::fraud::config::FraudConfig::default();
        assert_eq!(c.fraud.deny_prefixes, f.deny_prefixes);
        assert_eq!(c.fraud.international_prefixes, f.international_prefixes);
        assert_eq!(c.fraud.max_call_duration, f.max_call_duration);
        assert_eq!(c.fraud.on_critical, f.on_critical);
        assert_eq!(c.fraud.max_calls, f.max_calls);
        assert_eq!(c.fraud.max_calls_per_user, f.max_calls_per_user);
    }

    #[test]
    fn shards_are_one_to_the_most_the_kernel_steers() {
        let shards = |t: &str| {
            crate::config::Config::from_toml(t, std::path::Path::new("t.toml"))
                .map(|c| c.proxy.effective_shards())
                .map_err(|e| e.to_string())
        };
        assert_eq!(shards("[proxy]\nshards = 1\n"), Ok(1));
        assert_eq!(shards("[proxy]\nshards = 64\n"), Ok(64));
        assert!(shards("").is_ok_and(|n| n >= 1), "one per CPU");
        for bad in ["0", "65"] {
            let e = shards(&format!("[proxy]\nshards = {bad}\n")).expect_err(bad);
            assert!(e.contains("proxy.shards"), "{e}");
        }
    }

    #[test]
    fn stamp_lifetime_outlasts_the_longest_call() {
        let c = |t: &str| {
            let c = crate::config::Config::from_toml(t, std::path::Path::new("t.toml")).unwrap();
            c.proxy.effective_stamp_lifetime(&c.fraud)
        };
        let h = |n: u64| Duration::from_secs(n * 3600);
        assert_eq!(c(""), h(5), "max_call_duration 4h by default");
        assert_eq!(c("[fraud]\nmax_call_duration = \"30m\"\n"), h(1) + h(1) / 2);
        assert_eq!(c("[fraud]\nmax_call_duration = \"0s\"\n"), h(24));
        assert_eq!(c("[proxy]\nstamp_lifetime = \"2h\"\n"), h(2));
        assert!(check("[proxy]\nstamp_lifetime = \"1m\"\n").is_ok());
    }

    #[test]
    fn defaults_valid() {
        assert!(check("").is_ok());
        let t = TimersConfig::default();
        assert_eq!(t.t1, Duration::from_millis(500));
    }

    #[test]
    fn errors_name_key() {
        let e = check("[timers]\nt1 = \"0s\"\n").unwrap_err();
        assert!(e.contains("timers.t1"), "{e}");
        let e = check("[timers]\nc = \"1m\"\n").unwrap_err();
        assert!(e.contains("timers.c"), "{e}");
        let e = check("[registrar]\nmin_expires = 100\nmax_expires = 50\n").unwrap_err();
        assert!(e.contains("registrar.max_expires"), "{e}");
        let e = check("[proxy]\nunavailable = 403\n").unwrap_err();
        assert!(e.contains("proxy.unavailable"), "{e}");
        let e = check("[proxy]\ninbound = \"10.0.0.6:5060\"\n").unwrap_err();
        assert!(e.contains("proxy.inbound"), "{e}");
        let ok = check(
            "[proxy]\ninbound = \"sip:10.0.0.6\"\n[registrar]\nmode = \"relay\"\nrelay_to = \"10.0.0.5:5060\"\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
        let e = check("[proxy]\nstamp_lifetime = \"59s\"\n").unwrap_err();
        assert!(e.contains("proxy.stamp_lifetime"), "{e}");
        let e = check("[auth]\nalgorithms = [\"SHA-1\"]\n").unwrap_err();
        assert!(e.contains("auth.algorithms"), "{e}");
        let e = check(
            "[sip]\ndomains=[\"a.com\"]\n[[auth.users]]\nuser = \"bob\"\ndomain = \"b.com\"\npassword = \"x\"\n",
        )
        .unwrap_err();
        assert!(e.contains("auth.users"), "{e}");
        let e =
            check("[auth]\nusers = [{ user = \"bob\", domain = \"a.com\", pasword = \"x\" }]\n")
                .unwrap_err();
        assert!(e.contains("pasword"), "{e}");
        let ok = check(
            "[sip]\ndomains=[\"a.com\"]\n[auth]\nusers = [{ user = \"bob\", domain = \"a.com\", password = \"x\" }]\n[timers]\nt1 = \"100ms\"\nb = \"10s\"\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
    }
}
