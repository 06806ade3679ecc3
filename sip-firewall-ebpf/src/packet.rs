//! Header parsing: Ethernet, one VLAN tag, IPv4 (any header length), IPv6 (its extension
//! header chain walked, up to a bound), and the UDP/TCP ports.
//!
//! Every read is bounds-checked against `data_end` right before it.

use aya_ebpf::{helpers::bpf_xdp_load_bytes, programs::XdpContext};
pub use sip_firewall_common::wire::{IPPROTO_TCP, IPPROTO_UDP};
use sip_firewall_common::{
    addr::{KeyWords, v4_words},
    maps::{MAX_IPV6_EXT_BYTES, MAX_IPV6_EXT_HEADERS},
    wire::{ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6},
};
// IPv6 extension headers (RFC 8200 4, IANA "IPv6 Extension Header Types").
const IPPROTO_HOPOPTS: u8 = 0;
const IPPROTO_ROUTING: u8 = 43;
const IPPROTO_IPV6_FRAGMENT: u8 = 44;
const IPPROTO_DSTOPTS: u8 = 60;
const IPPROTO_AH: u8 = 51;
const IPPROTO_MOBILITY: u8 = 135;
const IPPROTO_HIP: u8 = 139;
const IPPROTO_SHIM6: u8 = 140;
const IPPROTO_EXPERIMENT1: u8 = 253;
const IPPROTO_EXPERIMENT2: u8 = 254;

/// A pointer to `len` bytes at `off`, or `None` when they are not all in the packet.
#[inline(always)]
pub fn ptr_at(ctx: &XdpContext, off: usize, len: usize) -> Option<*const u8> {
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + len > end {
        return None;
    }
    Some((start + off) as *const u8)
}

/// The byte at `off`.
#[inline(always)]
pub fn byte_at(ctx: &XdpContext, off: usize) -> Option<u8> {
    let p = ptr_at(ctx, off, 1)?;
    Some(unsafe { *p })
}

/// The big-endian `u16` at `off`.
#[inline(always)]
pub fn be16_at(ctx: &XdpContext, off: usize) -> Option<u16> {
    let p = ptr_at(ctx, off, 2)?;
    let (hi, lo) = unsafe { (*p, *p.add(1)) };
    Some(u16::from_be_bytes([hi, lo]))
}

/// `N` bytes at a variable offset `off`, copied by `bpf_xdp_load_bytes`: the helper checks
/// the bounds itself, where a direct read at an offset that varies over hundreds of bytes
/// needs a check LLVM rewrites into a form the verifier rejects.
#[inline(always)]
pub fn load<const N: usize>(ctx: &XdpContext, off: usize) -> Option<[u8; N]> {
    let mut out = [0u8; N];
    let rc = unsafe {
        bpf_xdp_load_bytes(
            ctx.ctx,
            off as u32,
            out.as_mut_ptr() as *mut core::ffi::c_void,
            N as u32,
        )
    };
    if rc != 0 {
        return None;
    }
    Some(out)
}

/// 8 bytes at `off`, as a native-endian word (their bytes unchanged in memory).
#[inline(always)]
fn word_at(ctx: &XdpContext, off: usize) -> Option<u64> {
    let p = ptr_at(ctx, off, 8)?;
    Some(u64::from_ne_bytes(unsafe {
        core::ptr::read_unaligned(p as *const [u8; 8])
    }))
}

/// 4 bytes at `off`.
#[inline(always)]
fn addr4_at(ctx: &XdpContext, off: usize) -> Option<[u8; 4]> {
    let p = ptr_at(ctx, off, 4)?;
    Some(unsafe { core::ptr::read_unaligned(p as *const [u8; 4]) })
}

/// What the program needs to know of an IP packet.
pub struct Ip {
    /// Source address (IPv4-mapped for IPv4), as the words of its key.
    pub src: KeyWords,
    /// Transport protocol (after the walked Fragment header for IPv6).
    pub proto: u8,
    /// Offset of the transport header.
    pub l4: usize,
    /// Whether a UDP or TCP header starts at `l4`: false for other protocols and for
    /// fragments other than the first (they carry no ports).
    pub has_ports: bool,
    /// An IPv6 extension header chain we cannot see the end of: longer than
    /// [`MAX_IPV6_EXT_HEADERS`] headers or [`MAX_IPV6_EXT_BYTES`] bytes, or a header we do
    /// not walk (AH, Mobility, HIP, Shim6, experimental). Its ports cannot be judged, so it
    /// is dropped as malformed rather than passed.
    pub bad_chain: bool,
}

/// Whether `proto` is an extension header the program walks.
#[inline(always)]
fn is_walked_ext(proto: u8) -> bool {
    proto == IPPROTO_HOPOPTS
        || proto == IPPROTO_ROUTING
        || proto == IPPROTO_IPV6_FRAGMENT
        || proto == IPPROTO_DSTOPTS
}

/// Whether `proto` is an extension header the program does not walk (its length field is
/// not the one of RFC 8200 4.3, or it hides what follows).
#[inline(always)]
fn is_unwalked_ext(proto: u8) -> bool {
    proto == IPPROTO_AH
        || proto == IPPROTO_MOBILITY
        || proto == IPPROTO_HIP
        || proto == IPPROTO_SHIM6
        || proto == IPPROTO_EXPERIMENT1
        || proto == IPPROTO_EXPERIMENT2
}

/// Parse up to the transport header. `None` for anything that is not IPv4 or IPv6 we can
/// read (ARP, other ethertypes, truncated headers): such packets pass untouched (the kernel
/// drops truncated ones).
#[inline(always)]
pub fn parse_ip(ctx: &XdpContext) -> Option<Ip> {
    let mut ethertype = be16_at(ctx, 12)?;
    let mut l3 = ETH_HLEN;
    if ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        ethertype = be16_at(ctx, 16)?;
        l3 = ETH_HLEN + 4;
    }
    if ethertype == ETH_P_IPV4 {
        let ver_ihl = byte_at(ctx, l3)?;
        if ver_ihl >> 4 != 4 {
            return None;
        }
        let ihl = ((ver_ihl & 0x0f) as usize) * 4;
        if ihl < 20 {
            return None;
        }
        let frag = be16_at(ctx, l3 + 6)?;
        let proto = byte_at(ctx, l3 + 9)?;
        let src = addr4_at(ctx, l3 + 12)?;
        Some(Ip {
            src: v4_words(src),
            proto,
            l4: l3 + ihl,
            has_ports: frag & 0x1fff == 0 && (proto == IPPROTO_UDP || proto == IPPROTO_TCP),
            bad_chain: false,
        })
    } else if ethertype == ETH_P_IPV6 {
        let first = byte_at(ctx, l3)?;
        if first >> 4 != 6 {
            return None;
        }
        let mut proto = byte_at(ctx, l3 + 6)?;
        let src = [word_at(ctx, l3 + 8)?, word_at(ctx, l3 + 16)?];
        let first_ext = l3 + 40;
        let mut l4 = first_ext;
        let mut later_fragment = false;
        let mut too_long = false;
        for _ in 0..MAX_IPV6_EXT_HEADERS {
            if proto == IPPROTO_IPV6_FRAGMENT {
                let h = load::<4>(ctx, l4)?;
                proto = h[0];
                later_fragment = u16::from_be_bytes([h[2], h[3]]) & 0xfff8 != 0;
                l4 += 8;
                if later_fragment {
                    // What follows is the middle of a datagram, not a header.
                    break;
                }
            } else if is_walked_ext(proto) {
                // Hop-by-Hop, Routing, Destination Options: Hdr Ext Len in 8-octet units,
                // not counting the first 8 (RFC 8200 4.3, 4.4, 4.6).
                let h = load::<2>(ctx, l4)?;
                proto = h[0];
                l4 += (h[1] as usize + 1) * 8;
            } else {
                break;
            }
            if l4 > first_ext + MAX_IPV6_EXT_BYTES {
                too_long = true;
                break;
            }
        }
        let bad_chain =
            !later_fragment && (too_long || is_walked_ext(proto) || is_unwalked_ext(proto));
        Some(Ip {
            src,
            proto,
            l4,
            has_ports: !bad_chain
                && !later_fragment
                && (proto == IPPROTO_UDP || proto == IPPROTO_TCP),
            bad_chain,
        })
    } else {
        None
    }
}
