//! Typed access to the XDP program's maps.
//!
//! The daemon owns the maps: it fills them from its configuration and state, and reads the
//! counters back. Addresses are stored as [`IpKey`]s (IPv4-mapped), prefixes as LPM keys.

mod filled;
mod janitor;
mod lists;
mod source;

use std::{
    net::{IpAddr, SocketAddr},
    os::fd::AsFd as _,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use aya::{
    Ebpf,
    maps::{Array, HashMap, LpmTrie, MapData, MapError, PerCpuArray, lpm_trie::Key},
};
use ipnet::IpNet;
use sip_firewall_common::{
    BanScope, BanValue, Counter, IpKey, Reason, XdpConfig,
    addr::flood_group,
    addr::{V4_MAPPED_PREFIX_BITS, is_v4_mapped, v4_key},
    branch::{branch_key, peer_key},
    maps as names,
};

use filled::{duplicate_filled, mark_filled};
use janitor::Filling;
pub use janitor::{MapFill, MapJanitor};
pub use source::SourceEntries;

/// A map could not be found, opened or changed.
#[derive(Debug, thiserror::Error)]
pub enum MapsError {
    #[error("creating or opening the maps: {0}")]
    Load(String),
    #[error("the XDP program has no map {0} (program and daemon built from different trees?)")]
    Missing(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

fn map_err(name: &'static str) -> impl FnOnce(MapError) -> MapsError {
    move |source| MapsError::Map { name, source }
}

/// A handle of its own on hash map `m` (a duplicate descriptor), for a user that must not
/// wait for whoever owns `m`.
fn duplicate<K: aya::Pod, V: aya::Pod>(
    m: &HashMap<MapData, K, V>,
    name: &'static str,
) -> Result<HashMap<MapData, K, V>, MapsError> {
    use aya::maps::IterableMap as _;
    let fd = m
        .map()
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| MapsError::Load(format!("{name}: {e}")))?;
    let map = MapData::from_fd(fd)
        .and_then(aya::maps::Map::from_map_data)
        .map_err(map_err(name))?;
    HashMap::try_from(map).map_err(map_err(name))
}

/// The key of an address.
pub fn ip_key(ip: IpAddr) -> IpKey {
    match ip {
        IpAddr::V4(v4) => v4_key(v4.octets()),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4_key(v4.octets()),
            None => v6.octets(),
        },
    }
}

/// The address of a key.
pub fn key_ip(key: &IpKey) -> IpAddr {
    if is_v4_mapped(key) {
        IpAddr::from([key[12], key[13], key[14], key[15]])
    } else {
        IpAddr::from(*key)
    }
}

/// The LPM key of a prefix.
pub fn net_key(net: &IpNet) -> Key<IpKey> {
    let net = net.trunc();
    match net {
        IpNet::V4(n) => Key::new(
            V4_MAPPED_PREFIX_BITS + u32::from(n.prefix_len()),
            v4_key(n.addr().octets()),
        ),
        IpNet::V6(n) => Key::new(u32::from(n.prefix_len()), n.addr().octets()),
    }
}

/// The prefix of an LPM key.
pub fn key_net(key: &Key<IpKey>) -> Option<IpNet> {
    let data = key.data();
    let len = key.prefix_len();
    if is_v4_mapped(&data) && len >= V4_MAPPED_PREFIX_BITS {
        IpNet::new(key_ip(&data), (len - V4_MAPPED_PREFIX_BITS) as u8).ok()
    } else {
        IpNet::new(IpAddr::from(data), len as u8).ok()
    }
}

/// The transaction map alone, through a descriptor of its own (see
/// [`XdpMaps::transaction_keys`]).
pub struct TransactionKeys {
    map: HashMap<MapData, u64, u64>,
    filled: Array<MapData, u64>,
    /// The janitor's count of the times it cleared the transactions' flag, shared.
    cleared: Arc<AtomicU64>,
    /// That count when this handle last set the flag: until the janitor clears it again,
    /// an insert need not set it (one syscall per transaction, not two).
    marked: u64,
}

impl TransactionKeys {
    /// Same as [`XdpMaps::transaction_open`].
    pub fn open(
        &mut self,
        branch: &str,
        peer: Option<SocketAddr>,
        expires_ns: u64,
    ) -> Result<(), MapsError> {
        self.map
            .insert(transaction_key(branch, peer), expires_ns, 0)
            .map_err(map_err(names::TRANSACTIONS))?;
        // Read after the insert: a clear counted later looks at the map after it, and sees
        // this entry; a clear counted before is seen here.
        let cleared = self.cleared.load(Ordering::SeqCst);
        if cleared != self.marked {
            mark_filled(&mut self.filled, names::FILLED_TRANSACTIONS)?;
            self.marked = cleared;
        }
        Ok(())
    }
}

/// The transactions-map key of the client transaction of `branch` sent to `peer` (`None`:
/// a peer that may answer from any address), as the XDP program computes it from a
/// response's topmost Via and its source address and port.
pub fn transaction_key(branch: &str, peer: Option<SocketAddr>) -> u64 {
    let k = branch_key(branch.as_bytes());
    match peer {
        Some(p) => peer_key(k, &ip_key(p.ip()), p.port()),
        None => k,
    }
}

/// The maps of one loaded program.
pub struct XdpMaps {
    allow: LpmTrie<MapData, IpKey, u8>,
    deny: LpmTrie<MapData, IpKey, u8>,
    /// Bans, learned bans, flood state, known sources, transactions.
    filling: Filling,
    config: Array<MapData, XdpConfig>,
    ports: Array<MapData, u8>,
    /// What [`XdpMaps::ports`] holds, once read or written (the array has an entry per
    /// port number: a change writes only the entries that differ).
    port_flags: Option<Vec<u8>>,
    counters: PerCpuArray<MapData, Counter>,
    pressure: Array<MapData, u64>,
    /// The settings last written, without the list flags (kept up to date here).
    settings: XdpConfig,
}

impl XdpMaps {
    /// Take the maps out of a loaded object (the ring buffer of ban events stays there for
    /// [`super::events`]).
    pub fn take(ebpf: &mut Ebpf) -> Result<XdpMaps, MapsError> {
        /// The map `name`, as the kind of map `M` (a hash map, an array, a trie).
        fn take<M: TryFrom<aya::maps::Map, Error = MapError>>(
            ebpf: &mut Ebpf,
            name: &'static str,
        ) -> Result<M, MapsError> {
            let map = ebpf.take_map(name).ok_or(MapsError::Missing(name))?;
            M::try_from(map).map_err(map_err(name))
        }
        let mut filling = Filling {
            bans: take(ebpf, names::BANS)?,
            learned_bans: take(ebpf, names::LEARNED_BANS)?,
            flood: take(ebpf, names::FLOOD)?,
            known: take(ebpf, names::KNOWN)?,
            transactions: take(ebpf, names::TRANSACTIONS)?,
            filled: take(ebpf, names::FILLED)?,
            transactions_cleared: Arc::new(AtomicU64::new(0)),
        };
        // Pinned maps taken over may hold entries (and flags of a program that did not keep
        // them): say what they hold now.
        filling.refresh_filled()?;
        Ok(XdpMaps {
            allow: take(ebpf, names::ALLOW_LIST)?,
            deny: take(ebpf, names::DENY_LIST)?,
            filling,
            config: take(ebpf, names::CONFIG)?,
            ports: take(ebpf, names::SIP_PORTS)?,
            port_flags: None,
            counters: take(ebpf, names::COUNTERS)?,
            pressure: take(ebpf, names::PRESSURE)?,
            settings: XdpConfig::default(),
        })
    }

    /// Write the program's settings (the list flags are derived from the lists). The flags
    /// the daemon sets at run time ([`XdpConfig::STRAY_CHECK`], [`XdpConfig::ANY_PEER_KEYS`])
    /// stay on once on: a config's limits never carry them, and a reload or the pressure
    /// governor writing new limits must not turn the stray-reply check off (only
    /// [`XdpMaps::set_stray_check`] and [`XdpMaps::set_any_peer_keys`] turn them off).
    pub fn set_config(&mut self, config: &XdpConfig) -> Result<(), MapsError> {
        const RUN_TIME: u32 = XdpConfig::STRAY_CHECK | XdpConfig::ANY_PEER_KEYS;
        let kept = self.settings.flags & RUN_TIME;
        self.settings = *config;
        self.settings.flags = config.flags | kept;
        self.write_config()
    }

    /// Write the settings with flags that say which lists have entries.
    fn write_config(&mut self) -> Result<(), MapsError> {
        let mut c = self.settings;
        c.flags &= !(XdpConfig::HAS_ALLOW | XdpConfig::HAS_DENY);
        if self.allow.keys().next().is_some() {
            c.flags |= XdpConfig::HAS_ALLOW;
        }
        if self.deny.keys().next().is_some() {
            c.flags |= XdpConfig::HAS_DENY;
        }
        self.config.set(0, c, 0).map_err(map_err(names::CONFIG))
    }

    /// Replace the set of SIP ports: UDP and TCP (`[xdp] sip_ports`).
    pub fn set_sip_ports(&mut self, ports: &[u16]) -> Result<(), MapsError> {
        self.set_ports(ports, &[])
    }

    /// Replace the set of SIP ports: `sip` are judged as SIP over UDP and TCP, `stream` (the
    /// TLS and WebSocket listen ports) over TCP only (their SYNs spend the flood budget).
    pub fn set_ports(&mut self, sip: &[u16], stream: &[u16]) -> Result<(), MapsError> {
        use sip_firewall_common::maps::{PORT_DATAGRAM, PORT_ENTRIES, PORT_STREAM};
        let mut want = vec![0u8; PORT_ENTRIES as usize];
        for p in stream {
            want[usize::from(*p)] = PORT_STREAM;
        }
        for p in sip {
            want[usize::from(*p)] = PORT_DATAGRAM | PORT_STREAM;
        }
        let old = match self.port_flags.take() {
            Some(old) => old,
            // Pinned maps taken over from an earlier daemon: read what they hold once.
            None => (0..PORT_ENTRIES)
                .map(|i| self.ports.get(&i, 0))
                .collect::<Result<_, _>>()
                .map_err(map_err(names::SIP_PORTS))?,
        };
        for (i, (&w, &o)) in want.iter().zip(&old).enumerate() {
            if w != o {
                // The index is a port number: below PORT_ENTRIES, which fits a u32.
                self.ports
                    .set(i as u32, w, 0)
                    .map_err(map_err(names::SIP_PORTS))?;
            }
        }
        self.port_flags = Some(want);
        Ok(())
    }

    /// `ip` (its group: the IPv4 address, the IPv6 /64) is known good until `expires_ns`
    /// (monotonic): under pressure it always passes, and it has the known flood budget.
    pub fn known_add(&mut self, ip: IpAddr, expires_ns: u64) -> Result<(), MapsError> {
        self.filling
            .known
            .insert(flood_group(ip_key(ip)), expires_ns, 0)
            .map_err(map_err(names::KNOWN))?;
        mark_filled(&mut self.filling.filled, names::FILLED_KNOWN)
    }

    /// Forget a known source; whether it was known.
    pub fn known_remove(&mut self, ip: IpAddr) -> Result<bool, MapsError> {
        remove_missing_ok(
            self.filling.known.remove(&flood_group(ip_key(ip))),
            names::KNOWN,
        )
    }

    /// Turn the stray-reply check on or off.
    pub fn set_stray_check(&mut self, on: bool) -> Result<(), MapsError> {
        self.set_flag(XdpConfig::STRAY_CHECK, on)
    }

    /// A client transaction of ours is open until `expires_ns` (monotonic): responses whose
    /// topmost Via carries `branch` pass when they come from `peer` (from anywhere for
    /// `None`, which needs [`XdpMaps::set_any_peer_keys`]).
    pub fn transaction_open(
        &mut self,
        branch: &str,
        peer: Option<SocketAddr>,
        expires_ns: u64,
    ) -> Result<(), MapsError> {
        self.filling
            .transactions
            .insert(transaction_key(branch, peer), expires_ns, 0)
            .map_err(map_err(names::TRANSACTIONS))?;
        mark_filled(&mut self.filling.filled, names::FILLED_TRANSACTIONS)
    }

    /// Whether some transaction keys are of the branch alone (peers that may answer from
    /// any address): the program then looks them up too.
    pub fn set_any_peer_keys(&mut self, on: bool) -> Result<(), MapsError> {
        self.set_flag(XdpConfig::ANY_PEER_KEYS, on)
    }

    /// Turn a run-time flag of the settings on or off, and write them.
    fn set_flag(&mut self, flag: u32, on: bool) -> Result<(), MapsError> {
        if on {
            self.settings.flags |= flag;
        } else {
            self.settings.flags &= !flag;
        }
        self.write_config()
    }

    /// A handle of its own on the transaction map (a duplicate descriptor): the proxy writes
    /// keys through it synchronously, under no lock but its own.
    pub fn transaction_keys(&self) -> Result<TransactionKeys, MapsError> {
        Ok(TransactionKeys {
            map: duplicate(&self.filling.transactions, names::TRANSACTIONS)?,
            filled: duplicate_filled(&self.filling.filled)?,
            cleared: self.filling.transactions_cleared.clone(),
            // Not marked yet: its first insert sets the flag.
            marked: u64::MAX,
        })
    }

    /// The transaction of `branch` to `peer` is over; whether it was recorded.
    pub fn transaction_close(
        &mut self,
        branch: &str,
        peer: Option<SocketAddr>,
    ) -> Result<bool, MapsError> {
        remove_missing_ok(
            self.filling
                .transactions
                .remove(&transaction_key(branch, peer)),
            names::TRANSACTIONS,
        )
    }

    /// Drop expired transaction keys (a daemon that died may have left some); how many.
    pub fn transactions_expire(&mut self, now_ns: u64) -> Result<usize, MapsError> {
        let old: Vec<u64> = self
            .filling
            .transactions
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, exp)| *exp <= now_ns)
            .map(|(k, _)| k)
            .collect();
        for k in &old {
            remove_missing_ok(self.filling.transactions.remove(k), names::TRANSACTIONS)?;
        }
        Ok(old.len())
    }

    /// Ban `ip` until `expires_ns` (monotonic; `u64::MAX` never expires).
    pub fn ban(&mut self, ip: IpAddr, expires_ns: u64, reason: u32) -> Result<(), MapsError> {
        self.ban_scoped(ip, expires_ns, reason, BanScope::All)
    }

    /// Ban `ip` until `expires_ns` for traffic in `scope` only.
    pub fn ban_scoped(
        &mut self,
        ip: IpAddr,
        expires_ns: u64,
        reason: u32,
        scope: BanScope,
    ) -> Result<(), MapsError> {
        let value = BanValue {
            expires_ns,
            reason,
            scope: scope as u32,
        };
        self.filling
            .bans
            .insert(ip_key(ip), value, 0)
            .map_err(map_err(names::BANS))?;
        mark_filled(&mut self.filling.filled, names::FILLED_BANS)
    }

    /// A learned ban: of `ip`'s ban prefix (see [`XdpConfig::ban_key`]), in the LRU map
    /// where it can never evict a manual ban. The key banned.
    pub fn ban_learned(
        &mut self,
        ip: IpAddr,
        expires_ns: u64,
        reason: u32,
        scope: BanScope,
    ) -> Result<IpAddr, MapsError> {
        let key = self.settings.ban_key(ip_key(ip));
        let value = BanValue {
            expires_ns,
            reason,
            scope: scope as u32,
        };
        self.filling
            .learned_bans
            .insert(key, value, 0)
            .map_err(map_err(names::LEARNED_BANS))?;
        mark_filled(&mut self.filling.filled, names::FILLED_LEARNED_BANS)?;
        Ok(key_ip(&key))
    }

    /// The address a learned ban of `ip` is kept under (its ban prefix).
    pub fn ban_prefix_of(&self, ip: IpAddr) -> IpAddr {
        key_ip(&self.settings.ban_key(ip_key(ip)))
    }

    /// Lift the manual ban of `ip` and the learned ban of its prefix; whether there was one.
    pub fn unban(&mut self, ip: IpAddr) -> Result<bool, MapsError> {
        let manual = remove_missing_ok(self.filling.bans.remove(&ip_key(ip)), names::BANS)?;
        if manual {
            mark_filled(&mut self.filling.filled, names::FILLED_BANS)?;
        }
        let learned = remove_missing_ok(
            self.filling
                .learned_bans
                .remove(&self.settings.ban_key(ip_key(ip))),
            names::LEARNED_BANS,
        )?;
        Ok(manual || learned)
    }

    /// Every ban entry, manual and learned, expired or not.
    pub fn bans(&self) -> Vec<(IpAddr, BanValue)> {
        self.filling
            .bans
            .iter()
            .chain(self.filling.learned_bans.iter())
            .filter_map(Result::ok)
            .map(|(k, v)| (key_ip(&k), v))
            .collect()
    }

    /// The counters, summed over CPUs, indexed by [`Reason`].
    pub fn counters(&self) -> Result<[Counter; Reason::COUNT as usize], MapsError> {
        let mut out = [Counter::default(); Reason::COUNT as usize];
        for (slot, reason) in out.iter_mut().zip(Reason::ALL) {
            *slot = self.counter(reason)?;
        }
        Ok(out)
    }

    /// One reason's counter, summed over the CPUs (one lookup, where [`XdpMaps::counters`]
    /// takes one per reason).
    pub fn counter(&self, reason: Reason) -> Result<Counter, MapsError> {
        let per_cpu = self
            .counters
            .get(&(reason as u32), 0)
            .map_err(map_err(names::COUNTERS))?;
        let mut sum = Counter::default();
        for c in per_cpu.iter() {
            sum.packets += c.packets;
            sum.bytes += c.bytes;
        }
        Ok(sum)
    }
}

/// Removing an absent key is not an error for us: report whether it was there.
fn remove_missing_ok(r: Result<(), MapError>, name: &'static str) -> Result<bool, MapsError> {
    source::found(r, name).map(|was| was.is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip() {
        for ip in ["192.0.2.1", "2001:db8::1", "::ffff:198.51.100.7"] {
            let ip: IpAddr = ip.parse().unwrap();
            let back = key_ip(&ip_key(ip));
            match ip {
                IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
                    assert_eq!(back, IpAddr::V4(v6.to_ipv4_mapped().unwrap()))
                }
                _ => assert_eq!(back, ip),
            }
        }
        for net in ["192.0.2.0/24", "10.0.0.0/8", "2001:db8::/32", "0.0.0.0/0"] {
            let net: IpNet = net.parse().unwrap();
            assert_eq!(key_net(&net_key(&net)), Some(net));
        }
        let k = net_key(&"192.0.2.0/24".parse().unwrap());
        assert_eq!(k.prefix_len(), 120);
    }
}
