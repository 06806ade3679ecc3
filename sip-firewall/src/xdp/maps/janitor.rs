//! The sweep of the maps that fill up (bans, learned bans, flood state, known sources,
//! transactions): expired entries deleted, fill counted for `sipfw_map_entries` and
//! `sipfw_map_capacity`, through descriptors of its own so the walk holds no lock of the
//! daemon.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use aya::maps::{Array, HashMap, MapData};
use sip_firewall_common::{BanValue, IpKey, maps as names};

use super::{
    MapsError, XdpMaps, duplicate,
    filled::{duplicate_filled, fresh_version},
    map_err,
};

/// The maps that fill up: those of [`XdpMaps`], and the janitor's own descriptors of them.
pub(super) struct Filling {
    pub(super) bans: HashMap<MapData, IpKey, BanValue>,
    pub(super) learned_bans: HashMap<MapData, IpKey, BanValue>,
    pub(super) flood: HashMap<MapData, IpKey, u64>,
    pub(super) known: HashMap<MapData, IpKey, u64>,
    pub(super) transactions: HashMap<MapData, u64, u64>,
    /// Which of bans, learned bans, known sources and transactions may hold entries
    /// (`FILLED`).
    pub(super) filled: Array<MapData, u64>,
    /// How many times the transactions' flag was cleared (see `TransactionKeys`).
    pub(super) transactions_cleared: Arc<AtomicU64>,
}

impl Filling {
    /// Set each flag of `FILLED` to what its map holds now. A flag is cleared before its map
    /// is looked at, and set again if an entry is there: an insert that races the clear
    /// sets the flag after itself, or is seen here. A flag already set is left as it is (a
    /// version of its own, see `FILLED`); one set here is a fresh version.
    pub(super) fn refresh_filled(&mut self) -> Result<(), MapsError> {
        fn any<K: aya::Pod, V: aya::Pod>(m: &HashMap<MapData, K, V>) -> bool {
            m.keys().next().is_some()
        }
        for slot in [
            names::FILLED_BANS,
            names::FILLED_LEARNED_BANS,
            names::FILLED_KNOWN,
            names::FILLED_TRANSACTIONS,
        ] {
            let has = |f: &Filling| match slot {
                names::FILLED_BANS => any(&f.bans),
                names::FILLED_LEARNED_BANS => any(&f.learned_bans),
                names::FILLED_KNOWN => any(&f.known),
                _ => any(&f.transactions),
            };
            let set = self.filled.get(&slot, 0).map_err(map_err(names::FILLED))? != 0;
            if has(self) {
                if set {
                    Ok(())
                } else {
                    self.filled.set(slot, fresh_version(), 0)
                }
            } else {
                self.filled.set(slot, 0, 0).and_then(|()| {
                    // Counted after the clear, before the look: an insert that read the
                    // count before it is seen by the look (see `TransactionKeys::open`).
                    if slot == names::FILLED_TRANSACTIONS {
                        self.transactions_cleared.fetch_add(1, Ordering::SeqCst);
                    }
                    match has(self) {
                        true => self.filled.set(slot, fresh_version(), 0),
                        false => Ok(()),
                    }
                })
            }
            .map_err(map_err(names::FILLED))?;
        }
        Ok(())
    }
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
        let fills = vec![
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
        ];
        // The program skips the maps this leaves empty. A failed write leaves a flag as it
        // was: set, it costs a lookup; clear, the entry's inserter set it after the insert.
        if let Err(e) = self.0.refresh_filled() {
            tracing::warn!("cannot update which maps hold entries: {e}");
        }
        fills
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
            filled: duplicate_filled(&m.filled)?,
            transactions_cleared: m.transactions_cleared.clone(),
        }))
    }
}
