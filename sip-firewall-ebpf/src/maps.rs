//! The maps of the XDP program. Names, key and value types come from
//! `sip_firewall_common::maps`, where the daemon finds them too.
//!
//! The state maps are pinned by name: the daemon loads them from its pin directory in bpffs,
//! so a restarted daemon (and its new program) takes over the same bans, lists, flood state
//! and counters. Loaded without a pin directory (tests), aya pins them under /sys/fs/bpf.

use aya_ebpf::{
    macros::map,
    maps::{
        Array, HashMap, LruHashMap, PerCpuArray, RingBuf,
        lpm_trie::{Key, LpmTrie},
    },
};
use sip_firewall_common::{
    Counter, IpKey, Reason,
    addr::KeyWords,
    maps::{
        BAN_CACHE_SLOTS, BAN_ENTRIES, BAN_EVENTS_BYTES, BanValue, FILLED_SLOTS, FLOOD_ENTRIES,
        KNOWN_ENTRIES, LEARNED_BAN_ENTRIES, LIST_ENTRIES, PORT_ENTRIES, TRANSACTION_ENTRIES,
        XdpConfig,
    },
};

#[map(name = "SIPFW_ALLOW")]
pub static ALLOW: LpmTrie<IpKey, u8> = LpmTrie::pinned(LIST_ENTRIES, 0);

#[map(name = "SIPFW_DENY")]
pub static DENY: LpmTrie<IpKey, u8> = LpmTrie::pinned(LIST_ENTRIES, 0);

#[map(name = "SIPFW_BANS")]
pub static BANS: HashMap<IpKey, BanValue> = HashMap::pinned(BAN_ENTRIES, 0);

#[map(name = "SIPFW_LBANS")]
pub static LEARNED_BANS: LruHashMap<IpKey, BanValue> = LruHashMap::pinned(LEARNED_BAN_ENTRIES, 0);

/// Which of the maps above (and KNOWN) may hold entries (`sip_firewall_common::maps::FILLED`).
/// Pinned: a restarted daemon's program and the one it replaces see the same flags.
#[map(name = "SIPFW_FILLED")]
pub static FILLED: Array<u64> = Array::pinned(FILLED_SLOTS, 0);

/// A manual ban the program found in `BANS`, kept per CPU with the version of `FILLED_BANS`
/// read before the lookup: trusted while that version is still there.
#[repr(C)]
pub struct CachedBan {
    pub src: KeyWords,
    pub version: u64,
    pub expires_ns: u64,
    pub scope: u32,
    pub _pad: u32,
}

/// The manual bans found, direct-mapped by source (`cache_slot`). Per CPU: no other writer.
#[map(name = "SIPFW_BANCACHE")]
pub static BAN_CACHE: PerCpuArray<CachedBan> = PerCpuArray::with_max_entries(BAN_CACHE_SLOTS, 0);

/// The slot of `BAN_CACHE` for a source: the top bits of a multiplicative hash of its words.
#[inline(always)]
pub fn cache_slot(src: &KeyWords) -> u32 {
    let h = (src[0] ^ src[1]).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 56) as u32 & (BAN_CACHE_SLOTS - 1)
}

#[map(name = "SIPFW_FLOOD")]
pub static FLOOD: LruHashMap<IpKey, u64> = LruHashMap::pinned(FLOOD_ENTRIES, 0);

#[map(name = "SIPFW_CONFIG")]
pub static CONFIG: Array<XdpConfig> = Array::pinned(1, 0);

#[map(name = "SIPFW_PORTS")]
pub static SIP_PORTS: Array<u8> = Array::pinned(PORT_ENTRIES, 0);

#[map(name = "SIPFW_COUNTERS")]
pub static COUNTERS: PerCpuArray<Counter> = PerCpuArray::pinned(Reason::COUNT, 0);

#[map(name = "SIPFW_TXNS")]
pub static TRANSACTIONS: HashMap<u64, u64> = HashMap::pinned(TRANSACTION_ENTRIES, 0);

#[map(name = "SIPFW_KNOWN")]
pub static KNOWN: HashMap<IpKey, u64> = HashMap::pinned(KNOWN_ENTRIES, 0);

#[map(name = "SIPFW_PRESSURE")]
pub static PRESSURE: Array<u64> = Array::pinned(1, 0);

#[map(name = "SIPFW_EVENTS")]
pub static BAN_EVENTS: RingBuf = RingBuf::with_byte_size(BAN_EVENTS_BYTES, 0);

/// Scratch slot used to hand a scan result past the verifier (see [`launder`]).
#[map(name = "SIPFW_SCRATCH")]
pub static SCRATCH: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Hide `v` from the verifier's value tracking: distinct values reaching the same code make
/// distinct states, each verified again; a value reloaded from map memory is one unknown.
#[inline(always)]
pub fn launder(v: usize) -> Option<usize> {
    let slot = SCRATCH.get_ptr_mut(0)?;
    // Volatile: LLVM must not forward the stored value to the load.
    unsafe {
        core::ptr::write_volatile(slot, v as u64);
        Some(core::ptr::read_volatile(slot) as usize)
    }
}

/// Where a strided scan goes on (see `stray.rs`): kept in map memory, which the verifier
/// reads as an unknown, so the callbacks converge instead of being followed position by
/// position.
#[map(name = "SIPFW_SCANPOS")]
pub static SCAN_POS: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

/// Whether the map of `FILLED` slot `slot` may hold entries: an array lookup, which the
/// verifier inlines, before a hash lookup, which is a helper call.
#[inline(always)]
pub fn may_hold(slot: u32) -> bool {
    filled(slot) != 0
}

/// The flag of `FILLED` slot `slot`: 0 for an empty map, else the version last written.
/// (The lookup cannot fail; if it did, `u64::MAX`: look up, keep nothing.)
#[inline(always)]
pub fn filled(slot: u32) -> u64 {
    FILLED.get(slot).map_or(u64::MAX, |v| *v)
}

/// The map of `FILLED` slot `slot` has an entry now (set after the insert).
#[inline(always)]
pub fn mark_filled(slot: u32) {
    if let Some(v) = FILLED.get_ptr_mut(slot) {
        unsafe { *v = 1 };
    }
}

/// The key bytes of `w`, in place (its words hold them in memory): what the maps are keyed
/// by, without a copy.
#[inline(always)]
pub fn key(w: &KeyWords) -> &IpKey {
    // Same 16 bytes; `IpKey` needs less alignment than the words have.
    unsafe { &*(w as *const KeyWords as *const IpKey) }
}

/// An exact-address LPM key (`/128`) for a lookup.
#[inline(always)]
pub fn host_key(addr: IpKey) -> Key<IpKey> {
    Key::new(128, addr)
}

/// Count one packet of `len` bytes under `reason`.
#[inline(always)]
pub fn count(reason: Reason, len: u64) {
    if let Some(c) = COUNTERS.get_ptr_mut(reason as u32) {
        // Per-CPU slot: no other writer, plain adds are enough.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
}
