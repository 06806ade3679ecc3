//! Map names, keys and values shared by the XDP program and the daemon.
//!
//! Names are the BPF object names (at most 15 bytes) and the names under which the maps are
//! pinned; both sides refer to them only through these constants.

use crate::addr::{IpKey, KeyWords, flood_group_words, from_words, to_words, words_v4_mapped};

/// The first byte of a mask word.
const FIRST_BYTE: u64 = u64::from_ne_bytes([0xff, 0, 0, 0, 0, 0, 0, 0]);

/// LPM trie of allowed prefixes: key `lpm_trie::Key<IpKey>`, value `u8` (1).
pub const ALLOW_LIST: &str = "SIPFW_ALLOW";
/// LPM trie of denied prefixes: key `lpm_trie::Key<IpKey>`, value `u8` (1).
pub const DENY_LIST: &str = "SIPFW_DENY";
/// Hash of manual bans (the CLI, the operator): key [`IpKey`] (exact address), value
/// [`BanValue`]. Learned bans never evict them.
pub const BANS: &str = "SIPFW_BANS";
/// LRU hash of learned bans (flood, scanner, auth failures, request rate): key [`IpKey`] of
/// the source's ban prefix ([`crate::addr::prefix_key`] with `ban_prefix_v4`/`_v6`), value
/// [`BanValue`]. When full, the least recently seen ban goes, never a manual one.
pub const LEARNED_BANS: &str = "SIPFW_LBANS";
/// LRU hash of flood state per source group: key [`IpKey`] (see
/// [`crate::addr::flood_group`]), value `u64` (theoretical arrival time, monotonic ns).
pub const FLOOD: &str = "SIPFW_FLOOD";
/// Array with one [`XdpConfig`].
pub const CONFIG: &str = "SIPFW_CONFIG";
/// Array indexed by port number (host byte order, [`PORT_ENTRIES`] entries: an array lookup
/// is inlined by the verifier, a hash lookup was a call and ~20 ns a packet) of `u8` flags,
/// 0 for a port that is not SIP: [`PORT_DATAGRAM`] (UDP judged as SIP:
/// flood limit, payload checks, strays) and [`PORT_STREAM`] (TCP connections counted and
/// their SYNs rate-limited per source). `[xdp] sip_ports` have both; the TLS and WebSocket
/// listen ports only the second.
pub const SIP_PORTS: &str = "SIPFW_PORTS";
/// [`SIP_PORTS`] flag: UDP to this port is SIP.
pub const PORT_DATAGRAM: u8 = 1;
/// [`SIP_PORTS`] flag: TCP to this port carries SIP (plain, TLS or WebSocket).
pub const PORT_STREAM: u8 = 2;
/// Per-CPU array of [`crate::Counter`], indexed by [`crate::Reason`].
pub const COUNTERS: &str = "SIPFW_COUNTERS";
/// Hash of open client transactions: key `u64` ([`crate::branch::peer_key`] of our Via
/// branch and the peer the request went to, or [`crate::branch::branch_key`] alone for
/// peers that may answer from anywhere), value `u64` (expiry, monotonic ns).
pub const TRANSACTIONS: &str = "SIPFW_TXNS";
/// Hash of sources the daemon knows to be good (registered contacts, recently
/// authenticated sources, peers of live transactions): key [`IpKey`] of the source's
/// [`crate::addr::flood_group`] (IPv4 address, IPv6 /64), value `u64` (expiry, monotonic
/// ns). Under pressure they always pass; they have their own flood budget and are
/// throttled over it, never flood-banned.
pub const KNOWN: &str = "SIPFW_KNOWN";
/// Array with one `u64`: the theoretical arrival time of the global budget of SIP requests
/// from unknown sources (GCRA, like the flood limit).
pub const PRESSURE: &str = "SIPFW_PRESSURE";
/// Ring buffer of [`BanEvent`]s: bans the XDP program made by itself.
pub const BAN_EVENTS: &str = "SIPFW_EVENTS";
/// Array of `u64`, one per map the program may skip ([`FILLED_BANS`],
/// [`FILLED_LEARNED_BANS`], [`FILLED_KNOWN`]): 0 when that map is empty, so the program does
/// not look it up (a hash lookup is a helper call, ~20 ns a packet). Whoever inserts
/// (the daemon, the program for its flood bans) sets it after the insert; the janitor clears
/// it when its sweep leaves the map empty, then looks again and sets it back if an entry
/// came in meanwhile.
///
/// The daemon writes each flag as a version, a value it never wrote before, after every
/// change it makes to that map (removals too): the program keeps the manual bans it found
/// per CPU ([`BAN_CACHE_SLOTS`]) and trusts such a copy only while [`FILLED_BANS`] still
/// holds the version it read before the lookup.
pub const FILLED: &str = "SIPFW_FILLED";
/// Slots of the program's per-CPU copy of the manual bans it found (direct-mapped by
/// source): a flood from a banned address costs no hash lookup once its ban is there.
pub const BAN_CACHE_SLOTS: u32 = 256;
/// [`FILLED`] slot of [`BANS`].
pub const FILLED_BANS: u32 = 0;
/// [`FILLED`] slot of [`LEARNED_BANS`].
pub const FILLED_LEARNED_BANS: u32 = 1;
/// [`FILLED`] slot of [`KNOWN`].
pub const FILLED_KNOWN: u32 = 2;
/// [`FILLED`] slot of [`TRANSACTIONS`]: with no transaction open, every response whose
/// topmost branch is found is a stray, without a lookup.
pub const FILLED_TRANSACTIONS: u32 = 3;
/// Slots of [`FILLED`].
pub const FILLED_SLOTS: u32 = 4;

/// The maps pinned in the daemon's pin directory (the rest belong to one program). The
/// capture maps are pinned so that `sip-firewall capture` finds them.
pub const PINNED: [&str; 21] = [
    ALLOW_LIST,
    DENY_LIST,
    BANS,
    LEARNED_BANS,
    FILLED,
    FLOOD,
    CONFIG,
    SIP_PORTS,
    COUNTERS,
    TRANSACTIONS,
    KNOWN,
    PRESSURE,
    crate::capture::CAPTURE,
    crate::capture::CAPTURE_ON,
    crate::capture::CAPTURE_PROG,
    crate::capture::CAPTURE_REASON,
    crate::capture::CAPTURE_LOST,
    crate::capture::CAPTURE_RINGS[0],
    crate::capture::CAPTURE_RINGS[1],
    crate::capture::CAPTURE_RINGS[2],
    crate::capture::CAPTURE_RINGS[3],
];

/// Capacity of the allow and deny tries.
pub const LIST_ENTRIES: u32 = 65_536;
/// Capacity of the manual ban map.
pub const BAN_ENTRIES: u32 = 65_536;
/// Capacity of the learned ban LRU map.
pub const LEARNED_BAN_ENTRIES: u32 = 262_144;
/// Capacity of the flood LRU map (least recently seen sources are evicted first).
pub const FLOOD_ENTRIES: u32 = 262_144;
/// Capacity of the transactions map.
pub const TRANSACTION_ENTRIES: u32 = 262_144;
/// Capacity of the known-sources map.
pub const KNOWN_ENTRIES: u32 = 262_144;
/// Entries of the SIP ports array: one per port number.
pub const PORT_ENTRIES: u32 = 65_536;
/// Size of the ban-event ring buffer in bytes (a power of two, a multiple of the page size).
pub const BAN_EVENTS_BYTES: u32 = 256 * 1024;

/// IPv6 extension headers (Hop-by-Hop, Routing, Fragment, Destination Options) the XDP
/// program walks before the transport header. RFC 8200 4.1 allows each at most once (the
/// Destination Options twice): 6 covers every legal chain; a longer one is malformed.
pub const MAX_IPV6_EXT_HEADERS: usize = 6;
/// Most bytes of IPv6 extension headers walked in total: beyond it the packet is malformed
/// (no honest SIP datagram carries hundreds of bytes of options). Keeps the payload offset
/// bounded for the verifier.
pub const MAX_IPV6_EXT_BYTES: usize = 512;

/// Maximum length of an LPM key's data in bits.
pub const LPM_MAX_PREFIX: u32 = 128;

/// A ban: the source is dropped until `expires_ns` (kernel `CLOCK_MONOTONIC`, the clock of
/// `bpf_ktime_get_ns`). `u64::MAX` never expires.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BanValue {
    pub expires_ns: u64,
    /// A [`BanReason`] as `u32`.
    pub reason: u32,
    /// A [`BanScope`] as `u32`: what this ban blocks (learned bans only the SIP ports by
    /// default, manual ones what `[xdp] ban_scope` says).
    pub scope: u32,
}

/// Why a source is banned.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BanReason {
    /// The XDP flood limit.
    Flood = 1,
    /// An operator, through the CLI.
    Manual = 2,
    /// A scanner User-Agent.
    Scanner = 3,
    /// Too many failed digest authentications.
    AuthFailure = 4,
    /// Too many requests per window seen in user space (TCP, or UDP that passed XDP).
    RequestRate = 5,
}

impl BanReason {
    pub const fn name(self) -> &'static str {
        match self {
            BanReason::Flood => "flood",
            BanReason::Manual => "manual",
            BanReason::Scanner => "scanner",
            BanReason::AuthFailure => "auth_failure",
            BanReason::RequestRate => "request_rate",
        }
    }

    pub const fn from_u32(v: u32) -> Option<BanReason> {
        match v {
            1 => Some(BanReason::Flood),
            2 => Some(BanReason::Manual),
            3 => Some(BanReason::Scanner),
            4 => Some(BanReason::AuthFailure),
            5 => Some(BanReason::RequestRate),
            _ => None,
        }
    }
}

/// What a ban or a deny entry blocks.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BanScope {
    /// All traffic from the source, as fail2ban does (default).
    All = 0,
    /// Only UDP and TCP to the SIP ports.
    SipPorts = 1,
}

/// Sent by the XDP program through [`BAN_EVENTS`] when it bans a source by itself.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BanEvent {
    pub addr: IpKey,
    pub expires_ns: u64,
    /// A [`BanReason`] as `u32`.
    pub reason: u32,
    pub _pad: u32,
}

/// The program's settings, element 0 of [`CONFIG`]. All zero means: no flood limit, no
/// payload limit, bans on all traffic.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct XdpConfig {
    /// Flood limit: ns between packets at the sustained rate (1e9 / rate); 0 disables it.
    pub flood_interval_ns: u64,
    /// Flood limit: how far ahead of now a source may run, `(burst - 1) * interval`.
    pub flood_tolerance_ns: u64,
    /// How long a flood ban lasts.
    pub flood_ban_ns: u64,
    /// Largest UDP payload accepted on the SIP ports; 0 disables the check.
    pub max_payload: u32,
    /// A [`BanScope`] as `u32`.
    pub ban_scope: u32,
    /// [`XdpConfig::HAS_ALLOW`] and [`XdpConfig::HAS_DENY`]: an empty list is not looked up
    /// (each trie lookup costs a helper call on every packet).
    pub flags: u32,
    /// Bytes of a response scanned for its topmost Via (1500..=MAX_VIA_SCAN).
    pub via_scan: u32,
    /// Pressure: ns between SIP requests of unknown sources at the budget (1e9 / budget);
    /// 0 disables the budget.
    pub pressure_interval_ns: u64,
    /// Pressure: how far ahead of now the budget may run (one second's worth).
    pub pressure_tolerance_ns: u64,
    /// The flood limit of known sources ([`KNOWN`]): ns between packets at their sustained
    /// rate; over it they are throttled (dropped), never banned. 0: no limit for them.
    pub known_flood_interval_ns: u64,
    /// ... and how far ahead of now a known source may run.
    pub known_flood_tolerance_ns: u64,
    /// Masks of an IPv4 (mapped) and an IPv6 source: the prefix its flood state and
    /// learned bans are kept per (`[xdp] ban_prefix_v4`, `ban_prefix_v6`). All zero (unset):
    /// /32 and /64. Masks, not lengths: the program ANDs two words, without branches. Kept
    /// as [`KeyWords`] (the mask's bytes in memory, 8-aligned), which the program reads with
    /// two loads.
    pub ban_mask_v4: KeyWords,
    pub ban_mask_v6: KeyWords,
}

impl XdpConfig {
    /// The allow list has entries.
    pub const HAS_ALLOW: u32 = 1;
    /// The deny list has entries.
    pub const HAS_DENY: u32 = 2;
    /// Responses are matched against [`TRANSACTIONS`]; a stray one is dropped. Set by the
    /// daemon when its proxy records its client transactions there.
    pub const STRAY_CHECK: u32 = 4;
    /// Bans the program makes by itself (flood) block only the SIP ports
    /// ([`BanScope::SipPorts`]); without it, all traffic. `[bans] learned_scope`.
    pub const LEARNED_SIP_PORTS: u32 = 8;
    /// Some transactions have a key of their branch alone (peers allowed to answer from
    /// another address, `[proxy] reply_from_any`): look it up when the key bound to the
    /// response's source misses.
    pub const ANY_PEER_KEYS: u32 = 16;

    /// Settings for a budget of `per_second` SIP requests from unknown sources together
    /// (bursts of one second's worth); 0 disables it.
    pub const fn with_pressure_budget(mut self, per_second: u32) -> Self {
        let (interval, tolerance) = gcra_settings(per_second, per_second);
        self.pressure_interval_ns = interval;
        self.pressure_tolerance_ns = tolerance;
        self
    }

    /// Keep flood state and learned bans per IPv4 /`v4_bits` (1..=32) and IPv6 /`v6_bits`
    /// (8..=128).
    pub const fn with_ban_prefixes(mut self, v4_bits: u32, v6_bits: u32) -> Self {
        let v4_bits = if v4_bits > 32 { 32 } else { v4_bits };
        // An IPv4 key is mapped: its first 96 bits (::ffff:) are always kept.
        self.ban_mask_v4 = to_words(&mask(crate::addr::V4_MAPPED_PREFIX_BITS + v4_bits));
        self.ban_mask_v6 = to_words(&mask(v6_bits));
        self
    }

    /// The key a source's flood state and learned bans are kept under.
    #[inline(always)]
    pub fn ban_key(&self, src: IpKey) -> IpKey {
        from_words(self.ban_key_words(to_words(&src)))
    }

    /// [`XdpConfig::ban_key`] on words (what the XDP program computes; `ban_key` is this).
    #[inline(always)]
    pub fn ban_key_words(&self, src: KeyWords) -> KeyWords {
        let mask = if words_v4_mapped(&src) {
            &self.ban_mask_v4
        } else {
            &self.ban_mask_v6
        };
        // Unset (a valid mask keeps at least the first byte).
        if mask[0] & FIRST_BYTE == 0 {
            return flood_group_words(src);
        }
        [src[0] & mask[0], src[1] & mask[1]]
    }

    /// Settings for the known sources' own budget: `rate` packets per second, bursts of
    /// `burst`; 0 disables it.
    pub const fn with_known_flood(mut self, rate_pps: u32, burst: u32) -> Self {
        let (interval, tolerance) = gcra_settings(rate_pps, burst);
        self.known_flood_interval_ns = interval;
        self.known_flood_tolerance_ns = tolerance;
        self
    }

    /// Settings for a flood limit of `rate` packets per second with bursts of `burst`.
    pub const fn with_flood(mut self, rate_pps: u32, burst: u32, ban_ns: u64) -> Self {
        let (interval, tolerance) = gcra_settings(rate_pps, burst);
        self.flood_interval_ns = interval;
        self.flood_tolerance_ns = tolerance;
        self.flood_ban_ns = ban_ns;
        self
    }
}

/// A 16-byte mask of the first `bits` bits (at most 128).
const fn mask(bits: u32) -> IpKey {
    let bits = if bits > 128 { 128 } else { bits };
    let mut m = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        let start = (i * 8) as u32;
        if start + 8 <= bits {
            m[i] = 0xff;
        } else if start < bits {
            m[i] = 0xffu8 << (8 - (bits - start));
        }
        i += 1;
    }
    m
}

/// GCRA interval and tolerance of `rate` per second with bursts of `burst` ((0, 0) for rate 0).
const fn gcra_settings(rate: u32, burst: u32) -> (u64, u64) {
    if rate == 0 {
        return (0, 0);
    }
    let interval = 1_000_000_000 / rate as u64;
    let interval = if interval == 0 { 1 } else { interval };
    let burst = if burst == 0 { 1 } else { burst };
    (interval, interval * (burst as u64 - 1))
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::BanValue {}
    unsafe impl aya::Pod for super::BanEvent {}
    unsafe impl aya::Pod for super::XdpConfig {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn layouts_are_fixed() {
        assert_eq!(size_of::<BanValue>(), 16);
        assert_eq!(size_of::<BanEvent>(), 32);
        assert_eq!(size_of::<XdpConfig>(), 104);
    }

    #[test]
    fn map_names_fit_bpf_obj_name() {
        // Every pinned map (the capture maps among them), and the one that is not.
        for n in PINNED.iter().chain(&[BAN_EVENTS]) {
            assert!(n.len() <= 15, "{n} is longer than BPF_OBJ_NAME_LEN - 1");
        }
    }

    #[test]
    fn ban_keys_by_prefix() {
        use crate::addr::{prefix_key, v4_key};
        let v4 = v4_key([192, 0, 2, 77]);
        let v6 = [
            0x20, 0x01, 0x0d, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ];
        let unset = XdpConfig::default();
        assert_eq!(unset.ban_key(v4), v4);
        assert_eq!(unset.ban_key(v6), prefix_key(v6, 32, 64));
        for (b4, b6) in [(32, 64), (24, 56), (1, 8), (32, 128), (20, 60)] {
            let c = XdpConfig::default().with_ban_prefixes(b4, b6);
            assert_eq!(c.ban_key(v4), prefix_key(v4, b4, b6), "{b4}");
            assert_eq!(c.ban_key(v6), prefix_key(v6, b4, b6), "{b6}");
        }
    }

    #[test]
    fn flood_settings() {
        let c = XdpConfig::default().with_flood(100, 20, 5);
        assert_eq!(c.flood_interval_ns, 10_000_000);
        assert_eq!(c.flood_tolerance_ns, 190_000_000);
        assert_eq!(c.flood_ban_ns, 5);
        let off = XdpConfig::default().with_flood(0, 20, 5);
        assert_eq!(off.flood_interval_ns, 0);
        // The pressure budget: bursts of one second's worth.
        let p = XdpConfig::default().with_pressure_budget(100);
        assert_eq!(p.pressure_interval_ns, 10_000_000);
        assert_eq!(p.pressure_tolerance_ns, 990_000_000);
        let off = XdpConfig::default().with_pressure_budget(0);
        assert_eq!(
            (off.pressure_interval_ns, off.pressure_tolerance_ns),
            (0, 0)
        );
    }

    #[test]
    fn ban_reasons_round_trip() {
        for r in [
            BanReason::Flood,
            BanReason::Manual,
            BanReason::Scanner,
            BanReason::AuthFailure,
            BanReason::RequestRate,
        ] {
            assert_eq!(BanReason::from_u32(r as u32), Some(r));
        }
        assert_eq!(BanReason::from_u32(0), None);
    }
}
