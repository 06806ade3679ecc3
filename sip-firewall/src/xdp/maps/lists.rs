//! The allow and deny lists: a trie each, keyed by prefix; the program reads them only
//! when the settings say they have entries (kept up to date here).

use aya::maps::{LpmTrie, MapData};
use ipnet::IpNet;
use sip_firewall_common::{IpKey, maps as names};

use super::{MapsError, XdpMaps, key_net, map_err, net_key, remove_missing_ok};

/// The prefix lists, each a trie of its own.
#[derive(Clone, Copy)]
enum Prefixes {
    Allow,
    Deny,
}

impl XdpMaps {
    pub fn allow_add(&mut self, net: &IpNet) -> Result<(), MapsError> {
        self.net_add(Prefixes::Allow, net)
    }

    pub fn deny_add(&mut self, net: &IpNet) -> Result<(), MapsError> {
        self.net_add(Prefixes::Deny, net)
    }

    pub fn allow_remove(&mut self, net: &IpNet) -> Result<bool, MapsError> {
        self.net_remove(Prefixes::Allow, net)
    }

    pub fn deny_remove(&mut self, net: &IpNet) -> Result<bool, MapsError> {
        self.net_remove(Prefixes::Deny, net)
    }

    pub fn allow_list(&self) -> Vec<IpNet> {
        self.nets(Prefixes::Allow)
    }

    pub fn deny_list(&self) -> Vec<IpNet> {
        self.nets(Prefixes::Deny)
    }

    /// The trie of `list`, and its map's name.
    fn trie_mut(&mut self, list: Prefixes) -> (&mut LpmTrie<MapData, IpKey, u8>, &'static str) {
        match list {
            Prefixes::Allow => (&mut self.allow, names::ALLOW_LIST),
            Prefixes::Deny => (&mut self.deny, names::DENY_LIST),
        }
    }

    /// Add `net` to `list`.
    fn net_add(&mut self, list: Prefixes, net: &IpNet) -> Result<(), MapsError> {
        let (trie, name) = self.trie_mut(list);
        trie.insert(&net_key(net), 1, 0).map_err(map_err(name))?;
        self.write_config()
    }

    /// Remove `net` from `list`; whether it was there.
    fn net_remove(&mut self, list: Prefixes, net: &IpNet) -> Result<bool, MapsError> {
        let (trie, name) = self.trie_mut(list);
        let was = remove_missing_ok(trie.remove(&net_key(net)), name)?;
        self.write_config()?;
        Ok(was)
    }

    /// The prefixes of `list`.
    fn nets(&self, list: Prefixes) -> Vec<IpNet> {
        let trie = match list {
            Prefixes::Allow => &self.allow,
            Prefixes::Deny => &self.deny,
        };
        trie.keys()
            .filter_map(Result::ok)
            .filter_map(|k| key_net(&k))
            .collect()
    }
}
