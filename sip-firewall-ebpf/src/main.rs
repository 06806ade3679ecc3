//! The XDP program of sip-firewall.
//!
//! Decides, in this order: allow list (pass), deny list (drop), ban map (drop while live),
//! then for a TCP SYN to a SIP stream port (TCP, TLS, WebSocket): the flood limit per source
//! (a connection flood is a flood: drop and ban; counted as `connection` when within it);
//! for UDP to a SIP port: flood limit per source (drop and ban), payload size, payload
//! sanity (keep-alive, STUN Binding request, SIP request or status line; anything else
//! dropped). It decides from maps the daemon fills; every packet moves exactly one counter.
#![no_std]
#![no_main]

mod capture;
mod loops;
mod maps;
mod masked;
mod packet;
mod payload;
mod program;
mod scan;
mod stray;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns},
    macros::xdp,
    programs::XdpContext,
};
use sip_firewall_common::{
    BanEvent, BanReason, BanScope, BanValue, IpKey, Reason, XdpConfig,
    addr::{KeyWords, flood_group_words},
    branch::{TopBranch, peer_hash_words},
    gcra,
    maps::{
        FILLED_BANS, FILLED_KNOWN, FILLED_LEARNED_BANS, FILLED_TRANSACTIONS, PORT_DATAGRAM,
        PORT_STREAM,
    },
    payload::PayloadClass,
};

use crate::{
    maps::{
        ALLOW, BAN_CACHE, BAN_EVENTS, BANS, CONFIG, CachedBan, DENY, FLOOD, KNOWN, LEARNED_BANS,
        PRESSURE, SIP_PORTS, TRANSACTIONS, cache_slot, count, filled, host_key, key, launder,
        mark_filled, may_hold,
    },
    packet::{IPPROTO_TCP, IPPROTO_UDP, Ip, be16_at, parse_ip, ptr_at},
};

const UDP_HLEN: usize = 8;
/// The furthest a UDP payload can start: Ethernet, a VLAN tag, IPv6 with the longest chain
/// of extension headers walked (IPv4 with 40 bytes of options is shorter), and UDP.
const MAX_PAYLOAD_OFFSET: usize =
    14 + 4 + 40 + sip_firewall_common::maps::MAX_IPV6_EXT_BYTES + UDP_HLEN;

#[xdp]
pub fn sip_firewall(ctx: XdpContext) -> u32 {
    let len = (ctx.data_end() - ctx.data()) as u64;
    let reason = judge(&ctx);
    count(reason, len);
    // Returns only when no capture runs (or the tap is missing): the tap decides the same.
    capture::offer(&ctx, reason);
    action(reason)
}

/// What the program does with a packet of this verdict.
#[inline(always)]
pub fn action(reason: Reason) -> u32 {
    if reason.is_drop() {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

#[inline(always)]
fn judge(ctx: &XdpContext) -> Reason {
    let Some(ip) = parse_ip(ctx) else {
        return Reason::Passed;
    };
    let Some(cfg) = CONFIG.get(0) else {
        return Reason::Passed;
    };
    if cfg.flags & XdpConfig::HAS_ALLOW != 0 && ALLOW.get(host_key(*key(&ip.src))).is_some() {
        return Reason::Allowed;
    }

    // A ban on all traffic drops the source before its port is even looked up: the
    // cheapest path is the one floods take. The deny list follows `ban_scope`; each ban
    // entry carries its own scope (`ban_scope = "sip-ports"` narrows them all).
    let scope_all = cfg.ban_scope == BanScope::All as u32;
    if scope_all && is_denied(cfg, key(&ip.src)) {
        return Reason::Denied;
    }
    // Flood state and learned bans are kept per prefix (IPv6 /64 by default): rotating
    // addresses inside it neither resets the limit nor makes a ban per address.
    let group = cfg.ban_key_words(ip.src);
    let banned = live_ban_scope(&ip.src, key(&group));
    if scope_all && banned == Some(BanScope::All as u32) {
        return Reason::Banned;
    }
    // The port's flags (PORT_DATAGRAM, PORT_STREAM); 0: not a SIP port.
    let port_flags = if ip.has_ports {
        match be16_at(ctx, ip.l4 + 2) {
            Some(p) => SIP_PORTS.get(u32::from(p)).map_or(0, |f| *f),
            None => 0,
        }
    } else {
        0
    };
    let sip_port = port_flags != 0;
    if sip_port {
        if !scope_all && is_denied(cfg, key(&ip.src)) {
            return Reason::Denied;
        }
        if banned.is_some() {
            return Reason::Banned;
        }
    }
    if ip.bad_chain {
        // An IPv6 chain we cannot see the end of: its ports cannot be judged, and passing
        // it would let junk past every check below. Dropped after the allow,
        // deny and ban checks, so a trusted source's AH or Mobility traffic still passes.
        return Reason::Malformed;
    }
    if sip_port && ip.proto == IPPROTO_TCP && port_flags & PORT_STREAM != 0 {
        return new_connection(ctx, cfg, &ip, key(&group));
    }
    if !sip_port || ip.proto != IPPROTO_UDP || port_flags & PORT_DATAGRAM == 0 {
        return Reason::Passed;
    }
    datagram(ctx, cfg, &ip, &group)
}

/// UDP to a SIP port from a source neither allowed, denied nor banned: the flood limit of
/// its group, the UDP header, the payload's size, then its content.
#[inline(always)]
fn datagram(ctx: &XdpContext, cfg: &XdpConfig, ip: &Ip, group: &KeyWords) -> Reason {
    let now = unsafe { bpf_ktime_get_ns() };
    let known = is_known(key(&flood_group_words(ip.src)));
    if let Some(over) = flood_verdict(cfg, key(group), now, known) {
        return over;
    }

    // A UDP header cut short is not ours to judge: the kernel drops it.
    let Some(udp_len) = be16_at(ctx, ip.l4 + 4) else {
        return Reason::Passed;
    };
    if ptr_at(ctx, ip.l4, UDP_HLEN).is_none() {
        return Reason::Passed;
    }
    let Some(sport) = be16_at(ctx, ip.l4) else {
        return Reason::Passed;
    };
    let udp_len = udp_len as usize;
    if udp_len < UDP_HLEN {
        return Reason::Malformed;
    }
    let payload_len = udp_len - UDP_HLEN;
    if cfg.max_payload != 0 && payload_len > cfg.max_payload as usize {
        return Reason::Oversize;
    }
    // From here on every path (VLAN or not, IPv4 header length, IPv6 fragment header...)
    // carries the same unknowns: laundering the payload's offset and length lets the verifier
    // check the payload scans once instead of once per path.
    let (Some(off), Some(payload_len)) = (launder(ip.l4 + UDP_HLEN), launder(payload_len)) else {
        return Reason::Passed;
    };
    if off > MAX_PAYLOAD_OFFSET || payload_len > 0xffff {
        return Reason::Passed;
    }
    // The bytes the checks read: the first line, or as much of a response as the Via scan
    // may look at.
    let want = if payload_len < scan::SCAN_BYTES {
        payload_len
    } else {
        scan::SCAN_BYTES
    };
    let Some(copied) = scan::copy(ctx, off, want) else {
        // Cannot read the payload: user space judges it.
        return Reason::Passed;
    };
    payload_verdict(cfg, ip, sport, copied, payload_len, known)
}

/// The verdict on a SIP port's payload of `len` bytes, the first `copied` of them in the
/// scan buffer: junk is dropped, a response must answer an open transaction of ours (when
/// the daemon records them), a request from an unknown source spends the pressure budget.
#[inline(always)]
fn payload_verdict(
    cfg: &XdpConfig,
    ip: &Ip,
    sport: u16,
    copied: usize,
    len: usize,
    known: bool,
) -> Reason {
    match payload::classify(copied, len) {
        PayloadClass::Malformed => Reason::Malformed,
        PayloadClass::Response if cfg.flags & XdpConfig::STRAY_CHECK != 0 => {
            // Hashed only for a response, and before the Via scan, not on each of its paths
            // (hashed after it, the address stays live across the scan and the verifier's
            // states stop converging).
            let peer = peer_hash_words(&ip.src, sport);
            let bound = cfg.via_scan as usize;
            match stray::top_branch(copied, bound) {
                // The key binds the peer the request went to: a reply for an open branch
                // from anywhere else is a stray, unless that peer may answer
                // from anywhere.
                TopBranch::Key(k)
                    if is_open_transaction(k ^ peer)
                        || (cfg.flags & XdpConfig::ANY_PEER_KEYS != 0
                            && is_open_transaction(k)) =>
                {
                    Reason::Passed
                }
                TopBranch::Key(_) | TopBranch::Missing => Reason::StrayReply,
                // Not decided within the bound: user space checks it anyway.
                TopBranch::Beyond => Reason::Passed,
            }
        }
        PayloadClass::Response => Reason::Passed,
        PayloadClass::Request if cfg.pressure_interval_ns != 0 && !known => {
            if over_pressure_budget(cfg) {
                Reason::Pressure
            } else {
                Reason::Passed
            }
        }
        PayloadClass::Request | PayloadClass::KeepAlive | PayloadClass::Stun => Reason::Passed,
    }
}

/// The flood limit of a source group: `None` within it; over it `Throttled` for a known
/// source (trust tiers: an office behind one NAT, a trunk has its own, larger budget, and is
/// never banned), else `Flood` and a learned ban.
#[inline(always)]
fn flood_verdict(cfg: &XdpConfig, group: &IpKey, now: u64, known: bool) -> Option<Reason> {
    if known {
        if over_limit(
            group,
            now,
            cfg.known_flood_interval_ns,
            cfg.known_flood_tolerance_ns,
        ) {
            return Some(Reason::Throttled);
        }
    } else if over_limit(group, now, cfg.flood_interval_ns, cfg.flood_tolerance_ns) {
        let scope = if cfg.flags & XdpConfig::LEARNED_SIP_PORTS != 0 {
            BanScope::SipPorts
        } else {
            BanScope::All
        };
        ban(group, now, cfg.flood_ban_ns, BanReason::Flood, scope);
        return Some(Reason::Flood);
    }
    None
}

/// A TCP segment to a SIP stream port: a SYN (without ACK) opens a connection and spends the
/// source's flood budget, so a SYN or TLS-handshake flood from one source is banned here
/// before the kernel builds connection state for it; every other segment passes (the
/// connection's own traffic is judged by the daemon per message).
#[inline(always)]
fn new_connection(ctx: &XdpContext, cfg: &XdpConfig, ip: &Ip, group: &IpKey) -> Reason {
    // Byte 13 of the TCP header holds the flags (read with byte 12, the data offset).
    let Some(offset_flags) = be16_at(ctx, ip.l4 + 12) else {
        return Reason::Passed;
    };
    const SYN: u16 = 0x02;
    const ACK: u16 = 0x10;
    if offset_flags & (SYN | ACK) != SYN {
        return Reason::Passed;
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let known = is_known(key(&flood_group_words(ip.src)));
    flood_verdict(cfg, group, now, known).unwrap_or(Reason::Connection)
}

/// Whether the daemon knows the source group `group` (IPv4 address, IPv6 /64) to be good
/// (and the knowledge has not expired).
#[inline(always)]
fn is_known(group: &IpKey) -> bool {
    if !may_hold(FILLED_KNOWN) {
        return false;
    }
    match KNOWN.get_ptr(group) {
        Some(expires) => unsafe { *expires > bpf_ktime_get_coarse_ns() },
        None => false,
    }
}

/// The global budget of SIP requests from unknown sources (GCRA on one shared timestamp):
/// below it nothing changes; above it, requests beyond the budget are dropped.
#[inline(always)]
fn over_pressure_budget(cfg: &XdpConfig) -> bool {
    let Some(tat) = PRESSURE.get_ptr_mut(0) else {
        return false;
    };
    let now = unsafe { bpf_ktime_get_ns() };
    // Shared by every CPU: a lost update admits or drops one request more, never more.
    match gcra::admit(
        unsafe { *tat },
        now,
        cfg.pressure_interval_ns,
        cfg.pressure_tolerance_ns,
    ) {
        Some(next) => {
            unsafe { *tat = next };
            false
        }
        None => true,
    }
}

/// Whether `key` names a client transaction of the proxy that is still open.
#[inline(always)]
fn is_open_transaction(key: u64) -> bool {
    if !may_hold(FILLED_TRANSACTIONS) {
        return false;
    }
    match TRANSACTIONS.get_ptr(&key) {
        Some(expires) => unsafe { *expires > bpf_ktime_get_coarse_ns() },
        None => false,
    }
}

/// Whether the deny list holds `src`.
#[inline(always)]
fn is_denied(cfg: &XdpConfig, src: &IpKey) -> bool {
    cfg.flags & XdpConfig::HAS_DENY != 0 && DENY.get(host_key(*src)).is_some()
}

/// The scope of a live ban of `src`, if any: a manual ban of the address, or a learned ban
/// of its prefix `group`. Expired entries are deleted on sight. An empty map is not looked
/// up.
#[inline(always)]
fn live_ban_scope(src: &KeyWords, group: &IpKey) -> Option<u32> {
    let version = filled(FILLED_BANS);
    if version != 0
        && let Some(scope) = manual_ban(src, version)
    {
        return Some(scope);
    }
    if !may_hold(FILLED_LEARNED_BANS) {
        return None;
    }
    let ban = LEARNED_BANS.get_ptr(group)?;
    let (expires, scope) = unsafe { ((*ban).expires_ns, (*ban).scope) };
    if is_live(expires) {
        return Some(scope);
    }
    let _ = LEARNED_BANS.remove(group);
    None
}

/// The scope of a live manual ban of `src`, `version` the flag of the manual bans read
/// before: from this CPU's copy while the daemon has changed nothing since it was made (a
/// banned source's flood costs no hash lookup), else from the map, and the copy made.
#[inline(always)]
fn manual_ban(src: &KeyWords, version: u64) -> Option<u32> {
    let slot = BAN_CACHE.get_ptr_mut(cache_slot(src));
    if let Some(c) = slot {
        let c = unsafe { &*c };
        if c.version == version && c.src[0] == src[0] && c.src[1] == src[1] && is_live(c.expires_ns)
        {
            return Some(c.scope);
        }
    }
    let ban = BANS.get_ptr(key(src))?;
    let (expires, scope) = unsafe { ((*ban).expires_ns, (*ban).scope) };
    if is_live(expires) {
        if let Some(c) = slot {
            unsafe {
                *c = CachedBan {
                    src: *src,
                    version,
                    expires_ns: expires,
                    scope,
                    _pad: 0,
                }
            };
        }
        return Some(scope);
    }
    let _ = BANS.remove(key(src));
    None
}

/// Whether a ban expiring at `expires_ns` is live. The coarse clock (same time line, tick
/// resolution) is cheaper, and bans last seconds; it is read only when an entry is found,
/// so a source that is not banned never pays it, and a ban without end does not either.
#[inline(always)]
fn is_live(expires_ns: u64) -> bool {
    expires_ns == u64::MAX || expires_ns > unsafe { bpf_ktime_get_coarse_ns() }
}

/// GCRA (a token bucket kept as one timestamp) per source group: the group's theoretical
/// arrival time may run at most `tolerance` ahead of now. `interval` 0: no limit.
#[inline(always)]
fn over_limit(group: &IpKey, now: u64, interval: u64, tolerance: u64) -> bool {
    if interval == 0 {
        return false;
    }
    match FLOOD.get_ptr_mut(group) {
        // Shared between CPUs: a lost update only shifts one packet's accounting.
        Some(tat) => match gcra::admit(unsafe { *tat }, now, interval, tolerance) {
            Some(next) => {
                unsafe { *tat = next };
                false
            }
            None => true,
        },
        None => {
            let _ = FLOOD.insert(group, &(now + interval), 0);
            false
        }
    }
}

/// Ban the prefix `src` for `duration_ns` (a learned ban) and tell user space.
#[inline(always)]
fn ban(src: &IpKey, now: u64, duration_ns: u64, reason: BanReason, scope: BanScope) {
    let expires_ns = now.saturating_add(duration_ns);
    let value = BanValue {
        expires_ns,
        reason: reason as u32,
        scope: scope as u32,
    };
    // LRU: when full, the least recently seen learned ban goes; manual bans are elsewhere.
    let _ = LEARNED_BANS.insert(src, &value, 0);
    mark_filled(FILLED_LEARNED_BANS);
    let event = BanEvent {
        addr: *src,
        expires_ns,
        reason: reason as u32,
        _pad: 0,
    };
    // A full ring only loses the notification: the ban itself is already in the map.
    let _ = BAN_EVENTS.output::<BanEvent>(&event, 0);
}
