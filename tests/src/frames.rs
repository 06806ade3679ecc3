//! Crafted Ethernet frames. Checksums are left zero: XDP does not check them and these frames
//! never reach a socket.

use std::net::IpAddr;

/// How to shape a frame beyond its addresses.
#[derive(Clone, Debug, Default)]
pub struct Shape {
    /// One VLAN tag with this TPID (0x8100 or 0x88A8).
    pub vlan_tpid: Option<u16>,
    /// Bytes of IPv4 options (a multiple of 4, at most 40).
    pub ipv4_options: usize,
    /// Fragment offset in 8-byte units (0 for the first fragment).
    pub frag_offset: u16,
    /// More-fragments flag (IPv4) / M flag (IPv6 Fragment header).
    pub more_fragments: bool,
    /// IPv6: put a Fragment header in front of the transport header.
    pub ipv6_frag_header: bool,
    /// IPv6: extension headers before the transport header (and before the Fragment header
    /// of `ipv6_frag_header`), in order: (next-header value, length in bytes, a multiple of
    /// 8, at least 8). A Fragment header (44) here takes `frag_offset` and `more_fragments`;
    /// for other types the bytes after the first two are PadN-style zeros.
    pub ipv6_ext: Vec<(u8, usize)>,
    /// Overrides the UDP length field (to claim a larger datagram than the frame holds).
    pub udp_len_override: Option<u16>,
    /// Cut the frame to this many bytes.
    pub truncate: Option<usize>,
    /// The UDP source port (default 5062).
    pub src_port: Option<u16>,
}

fn eth(ethertype: u16, shape: &Shape) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    if let Some(tpid) = shape.vlan_tpid {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&100u16.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn ip(src: IpAddr, dst: IpAddr, proto: u8, l4: &[u8], shape: &Shape) -> Vec<u8> {
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let mut f = eth(0x0800, shape);
            let hlen = 20 + shape.ipv4_options;
            let total = (hlen + l4.len()) as u16;
            f.push(0x40 | (hlen / 4) as u8);
            f.push(0);
            f.extend_from_slice(&total.to_be_bytes());
            f.extend_from_slice(&[0x12, 0x34]);
            let flags = if shape.more_fragments { 0x2000 } else { 0 } | shape.frag_offset;
            f.extend_from_slice(&flags.to_be_bytes());
            f.push(64);
            f.push(proto);
            f.extend_from_slice(&[0, 0]);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
            // NOP options, then the transport header.
            f.extend(std::iter::repeat_n(1u8, shape.ipv4_options));
            f.extend_from_slice(l4);
            f
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let mut f = eth(0x86DD, shape);
            let mut chain: Vec<(u8, usize)> = shape.ipv6_ext.clone();
            if shape.ipv6_frag_header {
                chain.push((44, 8));
            }
            let ext_len: usize = chain.iter().map(|(_, n)| n).sum();
            let plen = (l4.len() + ext_len) as u16;
            f.extend_from_slice(&[0x60, 0, 0, 0]);
            f.extend_from_slice(&plen.to_be_bytes());
            f.push(chain.first().map_or(proto, |(t, _)| *t));
            f.push(64);
            f.extend_from_slice(&s.octets());
            f.extend_from_slice(&d.octets());
            for (i, (kind, len)) in chain.iter().enumerate() {
                let next = chain.get(i + 1).map_or(proto, |(t, _)| *t);
                let mut h = vec![0u8; (*len).max(8)];
                h[0] = next;
                if *kind == 44 {
                    let off = (shape.frag_offset << 3) | u16::from(shape.more_fragments);
                    h[2..4].copy_from_slice(&off.to_be_bytes());
                    h[4..8].copy_from_slice(&[0, 0, 0, 1]);
                } else {
                    // Hdr Ext Len: 8-octet units, not counting the first 8 (RFC 8200 4.3).
                    h[1] = (h.len() / 8 - 1) as u8;
                }
                f.extend_from_slice(&h);
            }
            f.extend_from_slice(l4);
            f
        }
        _ => panic!("mixed address families"),
    }
}

fn finish(mut f: Vec<u8>, shape: &Shape) -> Vec<u8> {
    if let Some(n) = shape.truncate {
        f.truncate(n);
    }
    f
}

/// A UDP datagram from `src` to `dst:dport` (source port 5062 unless `shape.src_port`).
pub fn udp(src: IpAddr, dst: IpAddr, dport: u16, payload: &[u8], shape: &Shape) -> Vec<u8> {
    let len = shape.udp_len_override.unwrap_or((8 + payload.len()) as u16);
    let mut l4 = Vec::with_capacity(8 + payload.len());
    l4.extend_from_slice(&shape.src_port.unwrap_or(5062).to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&len.to_be_bytes());
    l4.extend_from_slice(&[0, 0]);
    l4.extend_from_slice(payload);
    finish(ip(src, dst, 17, &l4, shape), shape)
}

/// A TCP SYN from `src` to `dst:dport`.
pub fn tcp_syn(src: IpAddr, dst: IpAddr, dport: u16, shape: &Shape) -> Vec<u8> {
    let mut l4 = Vec::with_capacity(20);
    l4.extend_from_slice(&40000u16.to_be_bytes());
    l4.extend_from_slice(&dport.to_be_bytes());
    l4.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    finish(ip(src, dst, 6, &l4, shape), shape)
}

/// An ICMP echo request (an IP packet without ports).
pub fn icmp_echo(src: IpAddr, dst: IpAddr) -> Vec<u8> {
    let proto = if src.is_ipv4() { 1 } else { 58 };
    ip(
        src,
        dst,
        proto,
        &[8, 0, 0, 0, 0, 1, 0, 1],
        &Shape::default(),
    )
}

/// An ARP request.
pub fn arp() -> Vec<u8> {
    let mut f = eth(0x0806, &Shape::default());
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 192, 0, 2, 1]);
    f.extend_from_slice(&[0, 0, 0, 0, 0, 0, 192, 0, 2, 2]);
    f
}

/// A STUN Binding request.
pub fn stun_binding() -> Vec<u8> {
    stun_with(&[])
}

/// A STUN Binding request carrying `attributes` (bytes after the header, counted in its
/// length).
pub fn stun_with(attributes: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; 20];
    m[1] = 1;
    m[2..4].copy_from_slice(&(attributes.len() as u16).to_be_bytes());
    m[4..8].copy_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    m[8..20].copy_from_slice(b"transactid12");
    m.extend_from_slice(attributes);
    m
}

/// A minimal, well-formed SIP request.
pub fn sip_request(method: &str, n: usize) -> Vec<u8> {
    format!(
        "{method} sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.2:5062;branch=z9hG4bK-{n}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag={n}\r\nTo: <sip:alice@example.com>\r\nCall-ID: {n}@test\r\nCSeq: 1 {method}\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// A SIP response with a given branch.
pub fn sip_response(code: u16, branch: &str) -> Vec<u8> {
    format!(
        "SIP/2.0 {code} Whatever\r\nVia: SIP/2.0/UDP 198.51.100.1:5060;branch={branch}\r\nFrom: <sip:bob@example.com>;tag=1\r\nTo: <sip:alice@example.com>;tag=2\r\nCall-ID: x@test\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Fill in the IPv4 header checksum of an untagged frame (for frames the stack must accept).
pub fn set_ipv4_checksum(f: &mut [u8]) {
    let ip = &mut f[14..34];
    ip[10] = 0;
    ip[11] = 0;
    let mut sum = 0u32;
    for w in ip.chunks(2) {
        sum += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    let c = !(sum as u16);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Address a frame from `veth-a` to `veth-b` of a [`crate::netns::Pair`].
pub fn set_pair_macs(f: &mut [u8]) {
    f[..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x0b]);
    f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x0a]);
}
