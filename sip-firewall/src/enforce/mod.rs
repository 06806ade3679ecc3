//! Enforcement: bans and allow/deny lists, kept in three places that must agree — the state
//! database (what survives), memory (what user space checks and lists), and the XDP maps (what
//! the kernel drops). Every change goes to the database first, then to the maps, so an
//! acknowledged change is never lost and never only half applied.
//!
//! **Decides**: who is banned, allowed, denied or known good; in user space (the gate) the same
//! policy as XDP where XDP does not see the traffic (no XDP, `lo`, TCP); which evidence may ban
//! (unauthenticated evidence never bans an allow-listed or known source).
//!
//! | module | job |
//! | --- | --- |
//! | `mod.rs` | the [`Enforcer`]: lists, the fast path, cluster sharing |
//! | `bans` | bans in database, memory (bounded) and maps; the batched writer of learned bans |
//! | `known` | known good sources (registered, authenticated, peers) in memory and the KNOWN map |
//! | `feeds` | threat-feed entries in force: vetted (never a trunk or a known source), with their expiry |
//! | `lists` | the allow and deny lists: the config's entries and the state's, the widest prefix they take |
//! | `transactions` | the XDP keys of the proxy's open UDP client transactions |
//! | `learn` | `[bans]` and ban learning from what the proxy and the gate report (auth failures, scanners, request rates) |
//! | `gate` | the user-space gate in front of the message layer |
//! | `refusals` | learned bans refused on known sources: counted and logged |
//! | `pressure` | `[pressure]`: the unknown-source budget adapted to the daemon's CPU and lag |
//! | `publish` | what the enforcer hands the cluster's outbox ([`publish::Publish`]) |
//! | `why` | every check that drops or throttles one source now, read from the deciding state (`sip-firewall why`) |
//!
//! **Config**: `[bans]`, `[policy] allow/deny`, `[xdp] ban_scope`. **Metrics**: `sipfw_bans_total{reason}`,
//! `sipfw_bans_active` (through `metrics::xdp::FastPathSource`), `sipfw_ban_refused_total{reason}`,
//! `sipfw_userspace_drops_total{reason}`, `sipfw_internal_errors_total{kind="learner_queue_full"}`,
//! `sipfw_pressure_budget`, `sipfw_event_loop_lag_seconds`.

mod bans;
pub mod feeds;
pub mod gate;
mod known;
pub mod learn;
pub mod lists;
pub mod live;
pub mod pressure;
pub mod publish;
pub mod refusals;
mod transactions;
pub mod why;
pub mod window;

use std::{collections::HashMap, net::IpAddr};

use ipnet::IpNet;
use sip_firewall_common::{BanReason, BanScope, Counter, Reason};

use self::bans::{MAX_BANS_IN_MEMORY, reason_code};
pub use self::{bans::write_bans, known::known_group};
use crate::{
    clock::unix_now,
    section::in_any,
    state::{BanRecord, StateError, Store},
    xdp::{FastPath, maps::MapsError},
};

/// The sections the enforcer reads. `config.rs` builds it from the whole `Config` (which
/// composes the sections of every unit, `[bans]` included, so this unit never names it).
pub struct Sections<'a> {
    pub xdp: &'a crate::xdp::config::XdpSection,
    pub bans: &'a learn::BansConfig,
    pub pressure: &'a pressure::PressureConfig,
    pub policy: &'a crate::policy::config::PolicyConfig,
    /// The TCP ports of the TLS and WebSocket listeners (`Config::stream_ports`).
    pub stream_ports: Vec<u16>,
}

/// A change could not be made.
#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("XDP maps: {0}")]
    Maps(#[from] MapsError),
    #[error("the ban table is full")]
    Full,
}

/// Bans and lists, with the optional fast path.
pub struct Enforcer {
    store: std::sync::Arc<Store>,
    /// Where learned bans go to be written durably, in batches, by [`write_bans`]; `None`:
    /// written at once.
    writer: Option<tokio::sync::mpsc::Sender<BanRecord>>,
    /// Bits of the prefix learned bans and flood state are kept per (IPv4, IPv6).
    ban_prefix: (u32, u32),
    /// The loaded (and maybe attached) program; dropping it detaches.
    xdp: Option<FastPath>,
    bans: HashMap<IpAddr, BanRecord>,
    /// The lists in force: the config's entries and the state's.
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    /// The entries of `[policy] allow` and `deny`: only a reload removes them.
    config_allow: Vec<IpNet>,
    config_deny: Vec<IpNet>,
    /// Bans made since start, by reason.
    bans_made: HashMap<String, u64>,
    /// Sources known to be good, until when (see [`Enforcer::know`]).
    known: HashMap<IpAddr, std::time::Instant>,
    /// What a manual ban blocks (`[xdp] ban_scope`) and what a learned one does
    /// (`[bans] learned_scope`).
    manual_scope: BanScope,
    learned_scope: BanScope,
    /// Where local changes go to the other nodes (`[cluster]`).
    cluster: Option<Box<dyn publish::Publish>>,
    /// Threat-feed entries in force.
    feeds: feeds::FeedDeny,
}

impl Enforcer {
    /// Load the stored state and the config's lists, and write them all to the maps.
    pub fn new<'a>(
        store: Store,
        xdp: Option<FastPath>,
        config: impl Into<Sections<'a>>,
    ) -> Result<Enforcer, EnforceError> {
        let config = &config.into();
        let mut e = Enforcer {
            store: std::sync::Arc::new(store),
            writer: None,
            ban_prefix: (config.xdp.ban_prefix_v4, config.xdp.ban_prefix_v6),
            xdp,
            bans: HashMap::new(),
            allow: Vec::new(),
            deny: Vec::new(),
            config_allow: Vec::new(),
            config_deny: Vec::new(),
            bans_made: HashMap::new(),
            known: HashMap::new(),
            manual_scope: config.xdp.ban_scope.scope(),
            learned_scope: config.bans.learned_scope.scope(),
            cluster: None,
            feeds: feeds::FeedDeny::default(),
        };
        let now = unix_now();
        for ban in e.store.bans()? {
            if !ban.is_live(now) {
                e.store.del_ban(ban.ip)?;
                continue;
            }
            e.apply_ban(&ban)?;
            e.bans.insert(ban.ip, ban);
        }
        e.load_lists(config.policy)?;
        Ok(e)
    }

    /// The state database (also where subscribers added at run time are kept).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The state database, shared (the cluster task writes its outbox there).
    pub fn store_handle(&self) -> std::sync::Arc<Store> {
        self.store.clone()
    }

    /// Write learned bans through `writer` (see [`write_bans`]) from now on; the store to
    /// give that task.
    pub fn set_ban_writer(
        &mut self,
        writer: tokio::sync::mpsc::Sender<BanRecord>,
    ) -> std::sync::Arc<Store> {
        self.writer = Some(writer);
        self.store.clone()
    }

    /// Whether the fast path is attached somewhere.
    pub fn has_fast_path(&self) -> bool {
        self.xdp
            .as_ref()
            .is_some_and(|x| !x.attachments().is_empty())
    }

    /// Interfaces with the program, and their mode.
    pub fn attachments(&self) -> Vec<(String, String)> {
        self.xdp.as_ref().map_or_else(Vec::new, |x| {
            x.attachments()
                .into_iter()
                .map(|(i, m)| (i, m.to_string()))
                .collect()
        })
    }

    /// Attach the loaded program to `iface`; the mode used.
    pub fn attach(
        &mut self,
        iface: &str,
        mode: crate::xdp::config::XdpMode,
    ) -> Result<&'static str, crate::xdp::XdpError> {
        match self.xdp.as_mut() {
            Some(x) => x.attach(iface, mode),
            None => Ok("off"),
        }
    }

    /// Detach and unload the fast path (on shutdown).
    pub fn stop_fast_path(&mut self) {
        self.xdp = None;
    }

    /// Share local changes with the other nodes from now on.
    pub fn set_cluster(&mut self, outbox: impl publish::Publish + 'static) {
        self.cluster = Some(Box::new(outbox));
    }

    fn share(&self, change: publish::LocalChange) {
        if let Some(c) = &self.cluster {
            c.publish(change);
        }
    }

    /// A ban made on another node: stored, in memory and in the maps as it was made there
    /// (same key, reason and expiry); not shared again.
    pub fn cluster_ban(&mut self, ban: &BanRecord) -> Result<(), EnforceError> {
        if !ban.is_live(unix_now()) || self.bans.get(&ban.ip) == Some(ban) {
            return Ok(());
        }
        if reason_code(&ban.reason) == BanReason::Manual as u32 {
            // What Redis sends is bounded like the rest: at the bound a manual ban from
            // another node is refused here (the caller counts and logs it).
            if self.bans.len() >= MAX_BANS_IN_MEMORY && !self.bans.contains_key(&ban.ip) {
                self.forget_expired_bans();
                if self.bans.len() >= MAX_BANS_IN_MEMORY {
                    return Err(EnforceError::Full);
                }
            }
            self.apply_ban(ban)?;
            self.store.put_ban(ban)?;
            self.bans.insert(ban.ip, ban.clone());
        } else {
            self.apply_ban(ban)?;
            // Learned elsewhere: the same bounded table and batched writes as learned here
            // (a flood of bans on one node must not become one commit per ban on the others).
            self.keep_learned(ban.clone())?;
        }
        Ok(())
    }

    /// A ban lifted on another node; whether there was one here.
    pub fn cluster_unban(&mut self, ip: IpAddr) -> Result<bool, EnforceError> {
        let outbox = self.cluster.take();
        let r = self.unban(ip);
        self.cluster = outbox;
        r
    }

    /// Write the fast path's settings from `config` (live reload); ban scopes too.
    pub fn set_xdp_settings<'a>(
        &mut self,
        config: impl Into<Sections<'a>>,
    ) -> Result<(), EnforceError> {
        let config = &config.into();
        if let Some(fp) = &mut self.xdp {
            fp.maps
                .set_config(&config.xdp.kernel_config(config.bans.learned_scope))?;
            fp.maps
                .set_ports(&config.xdp.sip_ports, &config.stream_ports)?;
        }
        self.manual_scope = config.xdp.ban_scope.scope();
        self.learned_scope = config.bans.learned_scope.scope();
        Ok(())
    }

    /// Write the fast path's limits as the gate holds them (the pressure governor's budget);
    /// without a fast path, nothing to do.
    pub fn set_kernel_limits(
        &mut self,
        limits: &sip_firewall_common::XdpConfig,
    ) -> Result<(), EnforceError> {
        if let Some(fp) = &mut self.xdp {
            fp.maps.set_config(limits)?;
        }
        Ok(())
    }

    /// The user-space verdict on a source: `Allowed`, `Denied`, `Banned`, or `None` (judge
    /// it further). The same order as the XDP program.
    pub fn source_verdict(&self, ip: IpAddr) -> Option<Reason> {
        let ip = ip.to_canonical();
        if in_any(&self.allow, ip) {
            return Some(Reason::Allowed);
        }
        if in_any(&self.deny, ip) || self.feed_denies(ip) {
            return Some(Reason::Denied);
        }
        if self.is_banned(ip) {
            Some(Reason::Banned)
        } else {
            None
        }
    }

    /// Handles on the maps for the periodic sweep, when the fast path is loaded.
    pub fn map_janitor(&self) -> Result<Option<crate::xdp::maps::MapJanitor>, EnforceError> {
        match self.xdp.as_ref() {
            Some(x) => Ok(Some(x.maps.janitor()?)),
            None => Ok(None),
        }
    }

    /// The XDP counters, when the fast path is attached.
    pub fn xdp_counters(&self) -> Option<[Counter; Reason::COUNT as usize]> {
        self.xdp.as_ref().and_then(|x| x.maps.counters().ok())
    }

    /// One of the XDP program's counters (summed over the CPUs), if it is loaded.
    pub fn xdp_counter(&self, reason: Reason) -> Option<Counter> {
        self.xdp.as_ref().and_then(|x| x.maps.counter(reason).ok())
    }
}

impl crate::metrics::xdp::FastPathSource for Enforcer {
    fn attached(&self) -> bool {
        self.has_fast_path()
    }
    fn bans_active(&self) -> usize {
        Enforcer::bans_active(self)
    }
    fn bans_made(&self) -> &HashMap<String, u64> {
        Enforcer::bans_made(self)
    }
    fn counters(&self) -> Option<[Counter; Reason::COUNT as usize]> {
        self.xdp_counters()
    }
}

#[cfg(test)]
impl Enforcer {
    /// An enforcer of `config` on a fresh store in [`crate::state::scratch_dir`] `tag`, and
    /// that directory (for the test to remove).
    pub(crate) fn scratch(
        tag: &str,
        config: &crate::config::Config,
    ) -> (Enforcer, std::path::PathBuf) {
        let dir = crate::state::scratch_dir(tag);
        let store = Store::open(&dir).expect("a store in a fresh directory");
        let e = Enforcer::new(store, None, config).expect("an enforcer on a fresh store");
        (e, dir)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    use crate::{config::Config, state::List};

    fn store(tag: &str) -> (Store, std::path::PathBuf) {
        let d = crate::state::scratch_dir(&format!("enf-{tag}"));
        (Store::open(&d).unwrap(), d)
    }

    #[test]
    fn bans_and_lists_persist_and_judge() {
        let (s, dir) = store("persist");
        let mut config = Config::default();
        config.policy.deny = vec!["198.51.100.0/24".parse().unwrap()];
        let mut e = Enforcer::new(s, None, &config).unwrap();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        assert_eq!(e.source_verdict(ip), None);
        e.ban(ip, Some(Duration::from_secs(3600)), "manual: test")
            .unwrap();
        assert_eq!(e.source_verdict(ip), Some(Reason::Banned));
        assert_eq!(
            e.source_verdict("::ffff:192.0.2.9".parse().unwrap()),
            Some(Reason::Banned)
        );
        assert_eq!(
            e.source_verdict("198.51.100.3".parse().unwrap()),
            Some(Reason::Denied)
        );
        assert!(
            e.list_add(List::Allow, &"192.0.2.0/24".parse().unwrap())
                .unwrap()
        );
        assert_eq!(e.source_verdict(ip), Some(Reason::Allowed), "allow first");
        assert_eq!(e.bans_made().get("manual"), Some(&1));
        drop(e);

        let e = Enforcer::new(Store::open(&dir).unwrap(), None, &config).unwrap();
        assert_eq!(e.source_verdict(ip), Some(Reason::Allowed), "lists survive");
        let mut e = e;
        assert!(
            e.list_del(List::Allow, &"192.0.2.0/24".parse().unwrap())
                .unwrap()
        );
        assert_eq!(e.source_verdict(ip), Some(Reason::Banned), "bans survive");
        let bans = e.bans().unwrap();
        assert_eq!(bans.len(), 1);
        assert_eq!(bans[0].reason, "manual: test");
        assert!(e.unban(ip).unwrap());
        assert!(!e.unban(ip).unwrap());
        assert_eq!(e.bans_made().get("manual"), None, "counts are since start");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reason_codes() {
        assert_eq!(reason_code("flood"), BanReason::Flood as u32);
        assert_eq!(
            reason_code("scanner: friendly-scanner"),
            BanReason::Scanner as u32
        );
        assert_eq!(reason_code("because I said so"), BanReason::Manual as u32);
    }
}
