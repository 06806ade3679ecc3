//! `FILLED`, the program's flags of which maps may hold entries (see
//! `sip_firewall_common::maps::FILLED`): the versions the daemon writes into it.

use std::{
    os::fd::AsFd as _,
    sync::atomic::{AtomicU64, Ordering},
};

use aya::maps::{Array, MapData};
use sip_firewall_common::maps as names;

use super::{MapsError, map_err};

/// A handle of its own on the array `FILLED` (see [`super::duplicate`]).
pub(super) fn duplicate_filled(m: &Array<MapData, u64>) -> Result<Array<MapData, u64>, MapsError> {
    use aya::maps::IterableMap as _;
    let fd = m
        .map()
        .fd()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| MapsError::Load(format!("{}: {e}", names::FILLED)))?;
    let map = MapData::from_fd(fd)
        .and_then(aya::maps::Map::from_map_data)
        .map_err(map_err(names::FILLED))?;
    Array::try_from(map).map_err(map_err(names::FILLED))
}

/// Tell the program that the map of `FILLED` slot `slot` changed and may hold entries:
/// after every insert, and after removing a manual ban (which the program may have kept a
/// copy of under the version before).
pub(super) fn mark_filled(filled: &mut Array<MapData, u64>, slot: u32) -> Result<(), MapsError> {
    filled
        .set(slot, fresh_version(), 0)
        .map_err(map_err(names::FILLED))
}

/// A `FILLED` version this process never handed out before, never 0: the monotonic clock,
/// bumped past the last one (a restarted daemon starts after what its predecessor wrote).
pub(super) fn fresh_version() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = crate::clock::monotonic_ns();
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let next = now.max(last + 1);
        match LAST.compare_exchange_weak(last, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return next,
            Err(seen) => last = seen,
        }
    }
}
