//! Threat-feed entries in force (`feeds`): prefixes of denied sources, each until its
//! expiry, in the XDP deny trie (beside the deny list) and in the user-space gate's verdict.
//!
//! **Decides** which entries of a feed may be applied ([`Enforcer::feed_sync`]): never one
//! wider than the lists' bound ([`super::lists::check`]), never one that covers an
//! allow-listed prefix or a known good source (registered, recently authenticated, a peer of
//! our transactions: `known`), and no more than the feed's bound or the trie's room. A
//! poisoned feed must not take a trunk or a phone off the air. An entry held by the deny
//! list or by another feed stays in the trie when this feed drops it.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    net::IpAddr,
};

use ipnet::IpNet;
use sip_firewall_common::maps::LIST_ENTRIES;

use sip_firewall_common::BanReason;

use super::{EnforceError, Enforcer, bans::reason_code, known::known_group, lists};

/// Why an entry of a feed is not applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refused {
    /// Wider than the lists' bound.
    TooWide,
    /// Covers an allow-listed prefix.
    AllowListed,
    /// Covers a known good source.
    Known,
    /// Beyond the feed's `max_entries`, or the deny trie's room.
    OverBound,
}

impl Refused {
    /// Its `state` in `sipfw_feed_entries` and in `sip-firewall feeds`.
    pub fn name(self) -> &'static str {
        match self {
            Refused::TooWide => "too_wide",
            Refused::AllowListed => "allow_listed",
            Refused::Known => "known",
            Refused::OverBound => "over_bound",
        }
    }
}

/// What one sync of a feed did.
#[derive(Debug, Default)]
pub struct FeedSync {
    /// Entries in force for this feed.
    pub applied: usize,
    /// Entries not applied, and why.
    pub refused: Vec<(IpNet, Refused)>,
}

/// The feeds' entries in force.
#[derive(Default)]
pub(super) struct FeedDeny {
    /// Per feed: its prefixes in force, until when (unix seconds).
    feeds: HashMap<String, HashMap<IpNet, u64>>,
    /// Per prefix length in the IPv4-mapped key space: masked key, latest expiry over feeds.
    by_len: BTreeMap<u8, HashMap<u128, u64>>,
}

/// An address in the one key space of the lists: IPv4 mapped into `::ffff:0:0/96`.
fn mapped(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// A prefix in that key space: (masked key, length).
fn mapped_net(net: &IpNet) -> (u128, u8) {
    let len = match net {
        IpNet::V4(n) => n.prefix_len() + 96,
        IpNet::V6(n) => n.prefix_len(),
    };
    (mapped(net.network()) & mask(len), len)
}

fn mask(len: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(len)).unwrap_or(0)
}

impl FeedDeny {
    /// Whether a feed denies `ip` at `now` (unix seconds).
    pub(super) fn denies(&self, ip: IpAddr, now: u64) -> bool {
        let key = mapped(ip);
        self.by_len.iter().any(|(len, keys)| {
            keys.get(&(key & mask(*len)))
                .is_some_and(|until| *until > now)
        })
    }

    /// Whether any feed holds `net`.
    pub(super) fn holds(&self, net: &IpNet) -> bool {
        self.feeds.values().any(|f| f.contains_key(net))
    }

    /// Distinct prefixes held by feeds other than `feed`.
    fn others(&self, feed: &str) -> HashSet<IpNet> {
        self.feeds
            .iter()
            .filter(|(name, _)| name.as_str() != feed)
            .flat_map(|(_, nets)| nets.keys().copied())
            .collect()
    }

    fn rebuild_lookup(&mut self) {
        self.by_len.clear();
        for nets in self.feeds.values() {
            for (net, until) in nets {
                let (key, len) = mapped_net(net);
                let e = self.by_len.entry(len).or_default().entry(key).or_insert(0);
                *e = (*e).max(*until);
            }
        }
    }
}

impl Enforcer {
    /// Put `wanted` (prefix, until when in unix seconds) in force as feed `feed`'s entries,
    /// in place of what it held: each entry vetted (see the module doc), at most `max`.
    pub fn feed_sync(
        &mut self,
        feed: &str,
        wanted: &[(IpNet, u64)],
        max: usize,
    ) -> Result<FeedSync, EnforceError> {
        let now = crate::clock::unix_now();
        let known = self.known_keys();
        let others = self.feeds.others(feed);
        let deny: HashSet<IpNet> = self.deny.iter().copied().collect();
        let room = (LIST_ENTRIES as usize)
            .saturating_sub(deny.union(&others).count())
            .min(max);
        let mut out = FeedSync::default();
        let mut keep: HashMap<IpNet, u64> = HashMap::new();
        for (net, until) in wanted {
            let net = net.trunc();
            if *until <= now || keep.contains_key(&net) {
                continue;
            }
            let refused = if lists::check(&net).is_err() {
                Some(Refused::TooWide)
            } else if self
                .allow
                .iter()
                .any(|a| a.contains(&net) || net.contains(a))
            {
                Some(Refused::AllowListed)
            } else if covers_known(&net, &known) {
                Some(Refused::Known)
            } else if keep.len() >= room && !others.contains(&net) && !deny.contains(&net) {
                Some(Refused::OverBound)
            } else {
                None
            };
            match refused {
                Some(r) => out.refused.push((net, r)),
                None => {
                    keep.insert(net, *until);
                }
            }
        }
        let before = self.feeds.feeds.remove(feed).unwrap_or_default();
        for net in keep.keys().filter(|n| !before.contains_key(n)) {
            if !self.feeds.holds(net) && !deny.contains(net) {
                self.feed_trie(net, true)?;
            }
        }
        for net in before.keys().filter(|n| !keep.contains_key(n)) {
            if !self.feeds.holds(net) && !deny.contains(net) {
                self.feed_trie(net, false)?;
            }
        }
        out.applied = keep.len();
        self.feeds.feeds.insert(feed.to_string(), keep);
        self.feeds.rebuild_lookup();
        Ok(out)
    }

    /// Whether a feed entry in force covers `ip`.
    pub fn feed_denies(&self, ip: IpAddr) -> bool {
        self.feeds.denies(ip, crate::clock::unix_now())
    }

    fn feed_trie(&mut self, net: &IpNet, add: bool) -> Result<(), EnforceError> {
        if let Some(x) = self.xdp.as_mut() {
            if add {
                x.maps.deny_add(net)?;
            } else {
                x.maps.deny_remove(net)?;
            }
        }
        Ok(())
    }

    /// The live learned bans as a feed of the `cidr` format (`GET /feed`): one prefix a line
    /// (the ban prefix, `[xdp] ban_prefix_v4`/`_v6`), its reason's kind and end as a comment,
    /// so that another edge or a PBX can take them. Manual bans stay local.
    pub fn learned_feed(&self) -> String {
        let now = crate::clock::unix_now();
        let mut out = String::from("# sip-firewall learned bans (format: cidr)\n");
        let mut bans: Vec<&crate::state::BanRecord> = self
            .bans
            .values()
            .filter(|b| b.is_live(now) && reason_code(&b.reason) != BanReason::Manual as u32)
            .collect();
        bans.sort_by_key(|b| b.ip);
        for b in bans {
            let len = match b.ip {
                IpAddr::V4(_) => self.ban_prefix.0,
                IpAddr::V6(_) => self.ban_prefix.1,
            };
            let net = u8::try_from(len)
                .ok()
                .and_then(|l| IpNet::new(b.ip, l).ok())
                .unwrap_or_else(|| IpNet::from(b.ip));
            let kind = b.reason.split(':').next().unwrap_or("").trim();
            let until = b
                .expires_unix
                .map_or("never".to_string(), |t| t.to_string());
            out.push_str(&format!("{net} # {kind}, until {until}\n"));
        }
        out
    }

    /// The known good sources now, as their groups in the lists' key space, sorted.
    fn known_keys(&self) -> Vec<u128> {
        let now = std::time::Instant::now();
        let mut v: Vec<u128> = self
            .known
            .iter()
            .filter(|(_, until)| **until > now)
            .map(|(ip, _)| mapped(known_group(*ip)))
            .collect();
        v.sort_unstable();
        v
    }
}

/// Whether `net` and a known group (an IPv4 address, an IPv6 /64) overlap: the net covers a
/// group's key, or lies inside a group.
fn covers_known(net: &IpNet, known: &[u128]) -> bool {
    let (key, len) = mapped_net(net);
    if matches!(net, IpNet::V6(_)) && len >= 64 {
        let group = mapped(known_group(net.network()));
        if known.binary_search(&group).is_ok() {
            return true;
        }
    }
    let last = key | !mask(len);
    let from = known.partition_point(|k| *k < key);
    known.get(from).is_some_and(|k| *k <= last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    /// An enforcer of `config` on a fresh state directory named by `tag` (removed after).
    fn enforcer(tag: &str, config: &Config) -> (Enforcer, std::path::PathBuf) {
        Enforcer::scratch(&format!("feeds-{tag}"), config)
    }

    /// A poisoned feed: entries covering the allow-listed trunk, a known phone's address or
    /// its IPv6 /64, and half the Internet are refused; the attacker's are applied, each until
    /// its expiry; a second sync without an entry removes it; the bound is counted.
    #[test]
    fn a_feed_never_covers_the_trunk_or_a_known_source() {
        let mut config = Config::default();
        config.policy.allow = vec![net("192.0.2.0/28")];
        let (mut e, d) = enforcer("poisoned", &config);
        let phone: IpAddr = "198.51.100.20".parse().unwrap();
        let phone6: IpAddr = "2001:db8:5::1".parse().unwrap();
        e.know(phone, std::time::Duration::from_secs(60)).unwrap();
        e.know(phone6, std::time::Duration::from_secs(60)).unwrap();
        let later = crate::clock::unix_now() + 3600;
        let wanted: Vec<(IpNet, u64)> = [
            "203.0.113.7/32",
            "192.0.2.5/32",
            "192.0.0.0/16",
            "198.51.100.0/24",
            "2001:db8:5::99/128",
            "0.0.0.0/1",
            "2001:db8:6::/48",
            "203.0.113.8/32",
        ]
        .iter()
        .map(|s| (net(s), later))
        .collect();
        let got = e.feed_sync("evil", &wanted, 2).unwrap();
        let refused: Vec<(String, &str)> = got
            .refused
            .iter()
            .map(|(n, r)| (n.to_string(), r.name()))
            .collect();
        assert_eq!(
            refused,
            vec![
                ("192.0.2.5/32".to_string(), "allow_listed"),
                ("192.0.0.0/16".to_string(), "allow_listed"),
                ("198.51.100.0/24".to_string(), "known"),
                ("2001:db8:5::99/128".to_string(), "known"),
                ("0.0.0.0/1".to_string(), "too_wide"),
                ("203.0.113.8/32".to_string(), "over_bound"),
            ]
        );
        assert_eq!(got.applied, 2);
        use sip_firewall_common::Reason;
        let attacker: IpAddr = "203.0.113.7".parse().unwrap();
        assert_eq!(e.source_verdict(attacker), Some(Reason::Denied));
        assert_eq!(
            e.source_verdict("2001:db8:6::1".parse().unwrap()),
            Some(Reason::Denied)
        );
        assert_eq!(e.source_verdict(phone), None);
        assert_eq!(
            e.source_verdict("192.0.2.5".parse().unwrap()),
            Some(Reason::Allowed)
        );
        // Expired: no longer denied, even before the next sync removes it.
        let now = crate::clock::unix_now();
        let got = e
            .feed_sync("evil", &[(net("203.0.113.7/32"), now + 1)], 3)
            .unwrap();
        assert_eq!(got.applied, 1);
        assert!(!e.feeds.denies(attacker, now + 2));
        assert_eq!(e.source_verdict("2001:db8:6::1".parse().unwrap()), None);
        e.feed_sync("evil", &[], 3).unwrap();
        assert_eq!(e.source_verdict(attacker), None);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// The learned bans served as a feed read back as the same prefixes in the `cidr`
    /// format; manual bans are not served.
    #[test]
    fn learned_bans_served_as_a_feed_read_back() {
        let (mut e, d) = enforcer("served", &Config::default());
        let hour = Some(std::time::Duration::from_secs(3600));
        e.ban("203.0.113.7".parse().unwrap(), hour, "scanner: svwar")
            .unwrap();
        e.ban("2001:db8:7::9".parse().unwrap(), hour, "auth_failure: 5")
            .unwrap();
        e.ban("198.51.100.9".parse().unwrap(), hour, "by hand")
            .unwrap();
        let text = e.learned_feed();
        let got =
            crate::feeds::parse::parse(crate::feeds::config::FeedFormat::Cidr, text.as_bytes())
                .unwrap();
        assert_eq!(
            got.nets,
            vec![net("203.0.113.7/32"), net("2001:db8:7::/64")],
            "{text}"
        );
        assert_eq!(got.invalid, 0);
        let _ = std::fs::remove_dir_all(&d);
    }
}
