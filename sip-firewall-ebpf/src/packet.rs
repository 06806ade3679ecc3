//! Header parsing: Ethernet, one VLAN tag, IPv4 (any header length), IPv6 (with at most one
//! Fragment header walked), and the UDP/TCP ports.
//!
//! Every read is bounds-checked against `data_end` right before it.

use aya_ebpf::programs::XdpContext;
use sip_firewall_common::{IpKey, addr::v4_key};

const ETH_HLEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
const IPPROTO_IPV6_FRAGMENT: u8 = 44;

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

/// 16 bytes at `off`.
#[inline(always)]
fn addr16_at(ctx: &XdpContext, off: usize) -> Option<IpKey> {
    let p = ptr_at(ctx, off, 16)?;
    Some(unsafe { core::ptr::read_unaligned(p as *const IpKey) })
}

/// 4 bytes at `off`.
#[inline(always)]
fn addr4_at(ctx: &XdpContext, off: usize) -> Option<[u8; 4]> {
    let p = ptr_at(ctx, off, 4)?;
    Some(unsafe { core::ptr::read_unaligned(p as *const [u8; 4]) })
}

/// What the program needs to know of an IP packet.
pub struct Ip {
    /// Source address (IPv4-mapped for IPv4).
    pub src: IpKey,
    /// Transport protocol (after the walked Fragment header for IPv6).
    pub proto: u8,
    /// Offset of the transport header.
    pub l4: usize,
    /// Whether a UDP or TCP header starts at `l4`: false for other protocols, for
    /// fragments other than the first (they carry no ports) and for IPv6 extension headers
    /// we do not walk.
    pub has_ports: bool,
}

/// Parse up to the transport header. `None` for anything that is not IPv4 or IPv6 we can
/// read (ARP, other ethertypes, truncated headers, IPv6 extension headers we do not walk):
/// such packets pass untouched.
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
            src: v4_key(src),
            proto,
            l4: l3 + ihl,
            has_ports: frag & 0x1fff == 0 && (proto == IPPROTO_UDP || proto == IPPROTO_TCP),
        })
    } else if ethertype == ETH_P_IPV6 {
        let first = byte_at(ctx, l3)?;
        if first >> 4 != 6 {
            return None;
        }
        let mut proto = byte_at(ctx, l3 + 6)?;
        let src = addr16_at(ctx, l3 + 8)?;
        let mut l4 = l3 + 40;
        let mut later_fragment = false;
        if proto == IPPROTO_IPV6_FRAGMENT {
            proto = byte_at(ctx, l4)?;
            later_fragment = be16_at(ctx, l4 + 2)? & 0xfff8 != 0;
            l4 += 8;
        }
        Some(Ip {
            src,
            proto,
            l4,
            // Another extension header (or ICMPv6...) is not ours to walk.
            has_ports: !later_fragment && (proto == IPPROTO_UDP || proto == IPPROTO_TCP),
        })
    } else {
        None
    }
}
