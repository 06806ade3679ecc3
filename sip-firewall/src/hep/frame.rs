//! A frame the XDP program copied, read back in user space: Ethernet (with up to two VLAN
//! tags), IPv4 or IPv6, then UDP or TCP; the addresses, ports and the transport payload (the
//! SIP bytes). The copy is hostile input and may be cut short by the snap length: every
//! length is checked against what was copied, and anything else (ARP, a later IPv4
//! fragment, an IPv6 extension header, another protocol) is not read.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use sip_firewall_common::wire::{
    ETH_HLEN, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, IPPROTO_TCP, IPPROTO_UDP,
};

/// VLAN tags read at most (802.1ad outer, 802.1Q inner).
const MAX_TAGS: usize = 2;

/// One parsed frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// TCP rather than UDP.
    pub stream: bool,
    /// The transport payload, as much of it as was copied.
    pub payload: &'a [u8],
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(
        b.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

/// The frame's addresses and payload; `None` when it is not UDP or TCP over IP, or too
/// short for its own headers.
pub fn parse(frame: &[u8]) -> Option<Frame<'_>> {
    let mut ethertype = be16(frame, 12)?;
    let mut at = ETH_HLEN;
    for _ in 0..MAX_TAGS {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        ethertype = be16(frame, at + 2)?;
        at += 4;
    }
    let ip = frame.get(at..)?;
    let (src, dst, proto, l4) = match ethertype {
        ETH_P_IPV4 => ipv4(ip)?,
        ETH_P_IPV6 => ipv6(ip)?,
        _ => return None,
    };
    let (sport, dport, payload) = match proto {
        IPPROTO_UDP => {
            let udp_len = usize::from(be16(l4, 4)?);
            if udp_len < 8 {
                return None;
            }
            // The copy may stop before the datagram ends (snap length): what is there.
            let end = udp_len.min(l4.len());
            (be16(l4, 0)?, be16(l4, 2)?, l4.get(8..end)?)
        }
        IPPROTO_TCP => {
            let off = usize::from(*l4.get(12)? >> 4) * 4;
            if off < 20 {
                return None;
            }
            (be16(l4, 0)?, be16(l4, 2)?, l4.get(off..)?)
        }
        _ => return None,
    };
    Some(Frame {
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
        stream: proto == IPPROTO_TCP,
        payload,
    })
}

/// Source, destination, protocol and the bytes after the IPv4 header (bounded by its total
/// length); `None` for a later fragment (no transport header in it).
fn ipv4(ip: &[u8]) -> Option<(IpAddr, IpAddr, u8, &[u8])> {
    let first = *ip.first()?;
    let hlen = usize::from(first & 0x0f) * 4;
    if first >> 4 != 4 || hlen < 20 {
        return None;
    }
    let total = usize::from(be16(ip, 2)?);
    if be16(ip, 6)? & 0x1fff != 0 || total < hlen {
        return None;
    }
    let src: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
    let dst: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
    let l4 = ip.get(hlen..total.min(ip.len()))?;
    Some((
        IpAddr::V4(Ipv4Addr::from(src)),
        IpAddr::V4(Ipv4Addr::from(dst)),
        *ip.get(9)?,
        l4,
    ))
}

/// As [`ipv4`] for IPv6 without extension headers (SIP over UDP or TCP carries none).
fn ipv6(ip: &[u8]) -> Option<(IpAddr, IpAddr, u8, &[u8])> {
    if *ip.first()? >> 4 != 6 {
        return None;
    }
    let payload_len = usize::from(be16(ip, 4)?);
    let src: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
    let dst: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
    let end = 40usize.saturating_add(payload_len).min(ip.len());
    Some((
        IpAddr::V6(Ipv6Addr::from(src)),
        IpAddr::V6(Ipv6Addr::from(dst)),
        *ip.get(6)?,
        ip.get(40..end)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
        let len = (8 + payload.len()) as u16;
        [
            &sport.to_be_bytes()[..],
            &dport.to_be_bytes(),
            &len.to_be_bytes(),
            &[0, 0],
            payload,
        ]
        .concat()
    }

    fn eth(tags: &[u16], ethertype: u16) -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];
        for tpid in tags {
            f.extend_from_slice(&tpid.to_be_bytes());
            f.extend_from_slice(&100u16.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    fn v4(tags: &[u16], proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = eth(tags, ETH_P_IPV4);
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&((20 + l4.len()) as u16).to_be_bytes());
        f.extend_from_slice(&[
            0, 1, 0x40, 0, 64, proto, 0, 0, 192, 0, 2, 7, 198, 51, 100, 2,
        ]);
        f.extend_from_slice(l4);
        f
    }

    fn v6(proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = eth(&[], ETH_P_IPV6);
        f.extend_from_slice(&[0x60, 0, 0, 0]);
        f.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        f.extend_from_slice(&[proto, 64]);
        f.extend_from_slice(&"2001:db8::7".parse::<Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        f.extend_from_slice(l4);
        f
    }

    #[test]
    fn ipv4_udp_with_and_without_vlan_tags() {
        let sip = b"REGISTER sip:example.com SIP/2.0\r\n\r\n";
        for tags in [&[][..], &[ETH_P_8021Q], &[ETH_P_8021AD, ETH_P_8021Q]] {
            let mut f = v4(tags, IPPROTO_UDP, &udp(5062, 5060, sip));
            // Ethernet padding after the datagram is not its payload.
            f.extend_from_slice(&[0; 6]);
            let got = parse(&f).expect("parses");
            assert_eq!(got.src, "192.0.2.7:5062".parse().unwrap(), "{tags:?}");
            assert_eq!(got.dst, "198.51.100.2:5060".parse().unwrap());
            assert!(!got.stream);
            assert_eq!(got.payload, sip);
        }
    }

    #[test]
    fn ipv6_udp_and_tcp() {
        let f = v6(IPPROTO_UDP, &udp(5062, 5060, b"OPTIONS"));
        let got = parse(&f).expect("udp");
        assert_eq!(got.src, "[2001:db8::7]:5062".parse().unwrap());
        assert_eq!(got.dst, "[2001:db8::2]:5060".parse().unwrap());
        assert_eq!(got.payload, b"OPTIONS");
        let mut tcp = vec![0x13, 0xc6, 0x13, 0xc4, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18];
        tcp.extend_from_slice(&[0; 6]);
        tcp.extend_from_slice(b"INVITE");
        let f = v6(IPPROTO_TCP, &tcp);
        let got = parse(&f).expect("tcp");
        assert!(got.stream);
        assert_eq!((got.src.port(), got.dst.port()), (5062, 5060));
        assert_eq!(got.payload, b"INVITE");
    }

    #[test]
    fn a_copy_cut_by_the_snap_length_keeps_what_is_there() {
        let f = v4(&[], IPPROTO_UDP, &udp(5062, 5060, &[b'x'; 100]));
        let got = parse(&f[..f.len() - 40]).expect("parses");
        assert_eq!(got.payload.len(), 60);
    }

    #[test]
    fn what_is_not_udp_or_tcp_over_ip_is_refused_and_garbage_never_panics() {
        assert_eq!(parse(&eth(&[], 0x0806)), None, "ARP");
        assert_eq!(parse(&v4(&[], 1, &[8, 0, 0, 0])), None, "ICMP");
        let mut later = v4(&[], IPPROTO_UDP, &udp(1, 2, b"x"));
        later[ETH_HLEN + 7] = 8; // fragment offset 8
        assert_eq!(parse(&later), None, "a later fragment");
        let mut short_udp = v4(&[], IPPROTO_UDP, &udp(1, 2, b"x"));
        short_udp[ETH_HLEN + 20 + 5] = 4; // UDP length under its header
        assert_eq!(parse(&short_udp), None);
        let f = v4(&[ETH_P_8021Q], IPPROTO_UDP, &udp(5062, 5060, b"REGISTER"));
        for n in 0..f.len() {
            let _ = parse(&f[..n]);
        }
        let mut x: u32 = 0x1234_5678;
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..(x % 120) as usize)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = parse(&bytes);
            let mut tagged = f.clone();
            tagged.truncate(ETH_HLEN + 4);
            tagged.extend_from_slice(&bytes);
            let _ = parse(&tagged);
        }
    }
}
