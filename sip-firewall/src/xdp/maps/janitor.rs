//! The sweep of the maps that fill up (bans, learned bans, flood state, known sources,
//! transactions): expired entries deleted, fill counted for `sipfw_map_entries` and
//! `sipfw_map_capacity`, through descriptors of its own so the walk holds no lock of the
//! daemon.

use aya::maps::{HashMap, MapData};
use sip_firewall_common::{BanValue, IpKey, maps as names};

use super::{MapsError, XdpMaps, duplicate};

/// The maps that fill up: those of [`XdpMaps`], and the janitor's own descriptors of them.
pub(super) struct Filling {
    pub(super) bans: HashMap<MapData, IpKey, BanValue>,
    pub(super) learned_bans: HashMap<MapData, IpKey, BanValue>,
    pub(super) flood: HashMap<MapData, IpKey, u64>,
    pub(super) known: HashMap<MapData, IpKey, u64>,
    pub(super) transactions: HashMap<MapData, u64, u64>,
}

/// The maps that fill up, through descriptors of their own: counts their entries and
/// deletes the expired ones (the program deletes a ban only when its source comes back).
pub struct MapJanitor(Filling);

/// One map's fill after a sweep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapFill {
    pub map: &'static str,
    pub entries: u64,
    pub capacity: u64,
    /// Expired entries deleted by this sweep.
    pub swept: u64,
}

impl MapJanitor {
    /// Delete what expired before `now_ns` (monotonic) and count what is left, map by map.
    /// Walks every entry: seconds of syscalls for full maps, so run it off the hot path.
    pub fn sweep(&mut self, now_ns: u64) -> Vec<MapFill> {
        fn sweep_map<K: aya::Pod + Eq, V: aya::Pod>(
            m: &mut HashMap<MapData, K, V>,
            name: &'static str,
            capacity: u32,
            expired: impl Fn(&V) -> bool,
        ) -> MapFill {
            let mut entries = 0u64;
            let mut dead = Vec::new();
            for (k, v) in m.iter().filter_map(Result::ok) {
                entries += 1;
                if expired(&v) {
                    dead.push(k);
                }
            }
            // Deleted after the walk: deleting under the iterator restarts it.
            let mut swept = 0;
            for k in dead {
                if m.remove(&k).is_ok() {
                    swept += 1;
                }
            }
            MapFill {
                map: name,
                entries: entries - swept,
                capacity: u64::from(capacity),
                swept,
            }
        }
        vec![
            sweep_map(&mut self.0.bans, names::BANS, names::BAN_ENTRIES, |b| {
                b.expires_ns <= now_ns
            }),
            sweep_map(
                &mut self.0.learned_bans,
                names::LEARNED_BANS,
                names::LEARNED_BAN_ENTRIES,
                |b| b.expires_ns <= now_ns,
            ),
            // Flood state is an LRU of timestamps: counted, never swept.
            sweep_map(
                &mut self.0.flood,
                names::FLOOD,
                names::FLOOD_ENTRIES,
                |_| false,
            ),
            sweep_map(&mut self.0.known, names::KNOWN, names::KNOWN_ENTRIES, |e| {
                *e <= now_ns
            }),
            sweep_map(
                &mut self.0.transactions,
                names::TRANSACTIONS,
                names::TRANSACTION_ENTRIES,
                |e| *e <= now_ns,
            ),
        ]
    }
}

impl XdpMaps {
    /// Handles of their own on the maps that fill up, for [`MapJanitor`] (which walks them
    /// without holding whoever owns these maps).
    pub fn janitor(&self) -> Result<MapJanitor, MapsError> {
        let m = &self.filling;
        Ok(MapJanitor(Filling {
            bans: duplicate(&m.bans, names::BANS)?,
            learned_bans: duplicate(&m.learned_bans, names::LEARNED_BANS)?,
            flood: duplicate(&m.flood, names::FLOOD)?,
            known: duplicate(&m.known, names::KNOWN)?,
            transactions: duplicate(&m.transactions, names::TRANSACTIONS)?,
        }))
    }
}
