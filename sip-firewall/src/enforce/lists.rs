//! The allow and deny lists: what is in force is the config's entries (`[policy] allow`,
//! `deny`) and the state's (`allow add`, `deny add`, or another node of the cluster), in
//! memory and in the XDP maps.
//!
//! **Decides**: which prefixes are in force; that an entry of the config file stays in
//! force until a reload removes it from the config (a `del` here or from another node, or a
//! cluster load that lacks it, only removes the state's copy); and the widest prefix a list
//! takes ([`check`]), which the admin API applies unless `--force` and the cluster applies
//! to what comes from Redis.
//!
//! IPv4 and IPv6 share the XDP program's key space, IPv4 mapped into `::ffff:0:0/96`
//! (`sip_firewall_common::addr`): an IPv6 prefix is judged by the IPv4 addresses it covers
//! too, so `::ffff:0.0.0.0/96` and `::/32` count as IPv4 /0.

use ipnet::{IpNet, Ipv6Net};

use super::{EnforceError, Enforcer, publish};
use crate::{policy::config::PolicyConfig, state::List};

/// The widest IPv4 prefix taken without `--force`.
pub const MIN_PREFIX_V4: u8 = 8;
/// The widest IPv6 prefix taken without `--force`.
pub const MIN_PREFIX_V6: u8 = 32;

/// The IPv4-mapped range (RFC 4291 2.5.5.2) every IPv4 key lives in.
const V4_MAPPED: Ipv6Net =
    Ipv6Net::new_assert(std::net::Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0), 96);

/// A prefix wider than the bound.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{net} is wider than /{bound}{what}, the widest an allow or deny entry may be: one entry \
     would pass or drop a large part of the Internet; give a narrower prefix, or add --force \
     to take it anyway"
)]
pub struct TooWide {
    pub net: IpNet,
    /// The bound it broke, in the family it is judged in.
    pub bound: u8,
    /// Why an IPv6 prefix is judged as IPv4 (empty otherwise).
    what: &'static str,
}

/// Whether `net` is narrow enough for the lists (see the module doc).
pub fn check(net: &IpNet) -> Result<(), TooWide> {
    let net = net.trunc();
    let too_wide = |bound: u8, what: &'static str| TooWide { net, bound, what };
    match net {
        IpNet::V4(n) if n.prefix_len() < MIN_PREFIX_V4 => Err(too_wide(MIN_PREFIX_V4, "")),
        IpNet::V4(_) => Ok(()),
        IpNet::V6(n) if V4_MAPPED.contains(&n) => {
            if n.prefix_len() - 96 < MIN_PREFIX_V4 {
                Err(too_wide(MIN_PREFIX_V4, " (as the IPv4 prefix it maps)"))
            } else {
                Ok(())
            }
        }
        IpNet::V6(n) if n.contains(&V4_MAPPED) => Err(too_wide(
            MIN_PREFIX_V4,
            " (it covers every IPv4 address, ::ffff:0:0/96)",
        )),
        IpNet::V6(n) if n.prefix_len() < MIN_PREFIX_V6 => Err(too_wide(MIN_PREFIX_V6, "")),
        IpNet::V6(_) => Ok(()),
    }
}

impl Enforcer {
    /// The config's entries and the state's, in memory and in the maps (at start).
    pub(super) fn load_lists(&mut self, policy: &PolicyConfig) -> Result<(), EnforceError> {
        for (list, from_config) in [(List::Allow, &policy.allow), (List::Deny, &policy.deny)] {
            let config: Vec<IpNet> = from_config.iter().map(IpNet::trunc).collect();
            let mut nets = config.clone();
            for n in self.store.nets(list)? {
                if !nets.contains(&n) {
                    nets.push(n);
                }
            }
            for n in &nets {
                self.apply_net(list, n, true)?;
            }
            // Maps taken over from an earlier run keep what it put there (a feed's entries,
            // a deny entry deleted while no daemon ran): the trie holds the lists alone.
            if list == List::Deny
                && let Some(x) = self.xdp.as_mut()
            {
                for stale in x.maps.deny_list().into_iter().filter(|n| !nets.contains(n)) {
                    x.maps.deny_remove(&stale)?;
                }
            }
            *self.list_mut(list) = nets;
            *self.config_list_mut(list) = config;
        }
        Ok(())
    }

    fn list_mut(&mut self, list: List) -> &mut Vec<IpNet> {
        match list {
            List::Allow => &mut self.allow,
            List::Deny => &mut self.deny,
        }
    }

    fn config_list_mut(&mut self, list: List) -> &mut Vec<IpNet> {
        match list {
            List::Allow => &mut self.config_allow,
            List::Deny => &mut self.config_deny,
        }
    }

    /// Whether `net` is an entry of the config file's list (`[policy] allow` or `deny`).
    pub fn is_config_net(&self, list: List, net: &IpNet) -> bool {
        let net = net.trunc();
        match list {
            List::Allow => self.config_allow.contains(&net),
            List::Deny => self.config_deny.contains(&net),
        }
    }

    fn apply_net(&mut self, list: List, net: &IpNet, add: bool) -> Result<(), EnforceError> {
        if let Some(x) = self.xdp.as_mut() {
            match (list, add) {
                (List::Allow, true) => x.maps.allow_add(net)?,
                (List::Deny, true) => x.maps.deny_add(net)?,
                (List::Allow, false) => {
                    x.maps.allow_remove(net)?;
                }
                // A feed's entry of the same prefix stays (`feeds`).
                (List::Deny, false) if !self.feeds.holds(net) => {
                    x.maps.deny_remove(net)?;
                }
                (List::Deny, false) => {}
            }
        }
        Ok(())
    }

    /// A list change made on another node; not shared again. The cluster checked the
    /// prefix against [`check`]; a removal leaves the config's entries in force.
    pub fn cluster_list(
        &mut self,
        list: List,
        net: &IpNet,
        add: bool,
    ) -> Result<bool, EnforceError> {
        let outbox = self.cluster.take();
        let r = if add {
            self.list_add(list, net)
        } else {
            self.list_del(list, net)
        };
        self.cluster = outbox;
        r
    }

    /// Add a prefix to a list; false when it was there already. The caller applies the
    /// bound ([`check`]) or was told to take the prefix anyway.
    pub fn list_add(&mut self, list: List, net: &IpNet) -> Result<bool, EnforceError> {
        let net = net.trunc();
        self.share(publish::LocalChange::ListAdd { list, net });
        self.store.put_net(list, &net)?;
        self.apply_net(list, &net, true)?;
        let nets = self.list_mut(list);
        if nets.contains(&net) {
            return Ok(false);
        }
        nets.push(net);
        Ok(true)
    }

    /// Remove a prefix from the state's list; whether it was there. An entry of the config
    /// file stays in force (a reload removes it).
    pub fn list_del(&mut self, list: List, net: &IpNet) -> Result<bool, EnforceError> {
        let net = net.trunc();
        self.share(publish::LocalChange::ListDel { list, net });
        let stored = self.store.del_net(list, &net)?;
        if self.is_config_net(list, &net) {
            return Ok(stored);
        }
        self.apply_net(list, &net, false)?;
        let nets = self.list_mut(list);
        let before = nets.len();
        nets.retain(|n| *n != net);
        Ok(stored || nets.len() != before)
    }

    /// An entry of the config's list added or removed by a live reload. A removed entry the
    /// state also holds (added at run time) stays in force.
    pub fn config_net(&mut self, list: List, net: &IpNet, on: bool) -> Result<(), EnforceError> {
        let net = net.trunc();
        let config = self.config_list_mut(list);
        config.retain(|n| *n != net);
        if on {
            config.push(net);
        } else if self.store.nets(list)?.contains(&net) {
            return Ok(());
        }
        self.apply_net(list, &net, on)?;
        let nets = self.list_mut(list);
        if !on {
            nets.retain(|n| *n != net);
        } else if !nets.contains(&net) {
            nets.push(net);
        }
        Ok(())
    }

    /// The prefixes of a list.
    pub fn list(&self, list: List) -> Vec<IpNet> {
        match list {
            List::Allow => self.allow.clone(),
            List::Deny => self.deny.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn the_bound_holds_for_both_families_and_the_mapped_range() {
        for ok in [
            "10.0.0.0/8",
            "192.0.2.1/32",
            "2001:db8::/32",
            "2001:db8::1/128",
            "::ffff:10.0.0.0/104",
            "::1/128",
        ] {
            assert_eq!(check(&net(ok)), Ok(()), "{ok}");
        }
        for (wide, bound) in [
            ("0.0.0.0/0", 8),
            ("10.0.0.0/7", 8),
            ("::/0", 8),
            ("::/32", 8),
            ("::ffff:0.0.0.0/96", 8),
            ("::ffff:10.0.0.0/103", 8),
            ("2001::/16", 32),
            ("2001:db8::/31", 32),
        ] {
            let e = check(&net(wide)).unwrap_err();
            assert_eq!(e.bound, bound, "{wide}");
            let text = e.to_string();
            assert!(
                text.contains(&net(wide).trunc().to_string())
                    && text.contains(&format!("/{bound}"))
                    && text.contains("--force"),
                "{text}"
            );
        }
    }

    /// `[policy] allow` entries stay in force whatever removes the state's copy (a `del`
    /// here or from another node); only a reload that drops them from the config does.
    #[test]
    fn config_entries_are_removed_by_a_reload_only() {
        let mut config = Config::default();
        config.policy.allow = vec![net("192.0.2.0/24")];
        config.policy.deny = vec![net("198.51.100.0/24")];
        let (mut e, d) = Enforcer::scratch("lists", &config);
        let trunk = "192.0.2.7".parse().unwrap();
        let denied = "198.51.100.7".parse().unwrap();
        use sip_firewall_common::Reason;
        assert!(
            !e.cluster_list(List::Allow, &net("192.0.2.0/24"), false)
                .unwrap()
        );
        assert!(
            !e.cluster_list(List::Deny, &net("198.51.100.0/24"), false)
                .unwrap()
        );
        assert_eq!(e.source_verdict(trunk), Some(Reason::Allowed));
        assert_eq!(e.source_verdict(denied), Some(Reason::Denied));
        // Also added at run time, then deleted: the config's entry holds.
        e.list_add(List::Allow, &net("192.0.2.0/24")).unwrap();
        assert!(e.list_del(List::Allow, &net("192.0.2.0/24")).unwrap());
        assert_eq!(e.source_verdict(trunk), Some(Reason::Allowed));
        assert!(e.is_config_net(List::Allow, &net("192.0.2.0/24")));
        // A state entry is removed as before.
        e.cluster_list(List::Allow, &net("203.0.113.0/24"), true)
            .unwrap();
        assert!(
            e.cluster_list(List::Allow, &net("203.0.113.0/24"), false)
                .unwrap()
        );
        assert_eq!(e.source_verdict("203.0.113.1".parse().unwrap()), None);
        // A reload that drops the config's entry does remove it.
        e.config_net(List::Allow, &net("192.0.2.0/24"), false)
            .unwrap();
        assert_eq!(e.source_verdict(trunk), None);
        assert!(!e.is_config_net(List::Allow, &net("192.0.2.0/24")));
        let _ = std::fs::remove_dir_all(&d);
    }
}
