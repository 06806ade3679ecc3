//! HEPv3 framing (the HEP/EEP "HEP3" format of sipcapture, spoken by Homer, heplify-server
//! and `sngrep -L`): a 6-byte header (`HEP3`, total length) and chunks, each a vendor id,
//! a type id and a length (all 16-bit, network order, the length counting the chunk's own
//! 6 bytes) followed by the value. The generic chunks (vendor 0) carry what every
//! collector reads; a packet the XDP program dropped also carries its verdict in a chunk of
//! our own (see [`VERDICT`]).

use std::{
    net::{IpAddr, SocketAddr},
    time::{SystemTime, UNIX_EPOCH},
};

use sip_firewall_common::wire::{IPPROTO_TCP, IPPROTO_UDP};

/// Generic chunk types (vendor 0) of the HEPv3 specification.
pub mod chunk {
    pub const IP_FAMILY: u16 = 0x0001;
    pub const IP_PROTO: u16 = 0x0002;
    pub const IPV4_SRC: u16 = 0x0003;
    pub const IPV4_DST: u16 = 0x0004;
    pub const IPV6_SRC: u16 = 0x0005;
    pub const IPV6_DST: u16 = 0x0006;
    pub const SRC_PORT: u16 = 0x0007;
    pub const DST_PORT: u16 = 0x0008;
    pub const TIME_SEC: u16 = 0x0009;
    pub const TIME_USEC: u16 = 0x000a;
    pub const PROTO_TYPE: u16 = 0x000b;
    pub const CAPTURE_ID: u16 = 0x000c;
    pub const AUTH_KEY: u16 = 0x000e;
    pub const PAYLOAD: u16 = 0x000f;
}

/// The verdict of a packet the XDP program dropped (`banned`, `flood`, ...), as ASCII.
///
/// HEPv3 (section "Chunk types": vendor id 0x0000 is the generic set, whose types the
/// specification assigns; any other vendor id names a vendor's own chunks) has no generic
/// chunk for it: 0x0011 (correlation id) would make Homer group unrelated drops into one
/// call, and 0x0012 is the VLAN id. So the chunk is a vendor one, under a vendor id no HEP
/// vendor uses (0x5346, "SF"): sngrep skips every chunk whose vendor is not 0, and
/// heplify-server (Homer), which reads the type alone, has no generic type 0x0100, so it
/// ignores the chunk too. Both show the packet as the SIP message it is.
pub const VERDICT: (u16, u16) = (0x5346, 0x0100);

/// `AF_INET` and `AF_INET6` as HEP carries them (Linux values).
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// Protocol type 1: SIP.
const PROTO_SIP: u8 = 1;
/// The header: `HEP3` and the total length.
const HEADER: usize = 6;
/// Each chunk's vendor, type and length.
const CHUNK_HEADER: usize = 6;

/// One captured message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Packet {
    pub time: SystemTime,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    /// Carried over TCP (TCP, TLS, WebSocket) rather than UDP.
    pub stream: bool,
    pub payload: Vec<u8>,
    /// The XDP program dropped it, with this verdict; `None`: the proxy received or sent it.
    pub verdict: Option<&'static str>,
}

/// What the capture agent puts in every packet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Agent {
    pub node_id: u32,
    pub password: Option<String>,
}

/// The addresses of a packet in one family: IPv4 when both are (IPv4-mapped IPv6 included),
/// else IPv6 with IPv4 mapped.
fn family(src: IpAddr, dst: IpAddr) -> (IpAddr, IpAddr) {
    match (src.to_canonical(), dst.to_canonical()) {
        (s @ IpAddr::V4(_), d @ IpAddr::V4(_)) => (s, d),
        (s, d) => (IpAddr::V6(v6(s)), IpAddr::V6(v6(d))),
    }
}

fn v6(ip: IpAddr) -> std::net::Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

fn push(out: &mut Vec<u8>, kind: u16, value: &[u8]) -> Option<()> {
    push_vendor(out, (0, kind), value)
}

fn push_vendor(out: &mut Vec<u8>, (vendor, kind): (u16, u16), value: &[u8]) -> Option<()> {
    let len = u16::try_from(CHUNK_HEADER + value.len()).ok()?;
    out.extend_from_slice(&vendor.to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value);
    Some(())
}

/// The HEPv3 packet of `p`; `None` when it does not fit the 16-bit total length.
pub fn encode(p: &Packet, agent: &Agent) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(p.payload.len() + 128);
    out.extend_from_slice(b"HEP3\0\0");
    let (src, dst) = family(p.src.ip(), p.dst.ip());
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            push(&mut out, chunk::IP_FAMILY, &[AF_INET])?;
            push(&mut out, chunk::IP_PROTO, &[proto(p)])?;
            push(&mut out, chunk::IPV4_SRC, &s.octets())?;
            push(&mut out, chunk::IPV4_DST, &d.octets())?;
        }
        (s, d) => {
            push(&mut out, chunk::IP_FAMILY, &[AF_INET6])?;
            push(&mut out, chunk::IP_PROTO, &[proto(p)])?;
            push(&mut out, chunk::IPV6_SRC, &v6(s).octets())?;
            push(&mut out, chunk::IPV6_DST, &v6(d).octets())?;
        }
    }
    push(&mut out, chunk::SRC_PORT, &p.src.port().to_be_bytes())?;
    push(&mut out, chunk::DST_PORT, &p.dst.port().to_be_bytes())?;
    let since = p.time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = u32::try_from(since.as_secs()).unwrap_or(u32::MAX);
    push(&mut out, chunk::TIME_SEC, &secs.to_be_bytes())?;
    push(
        &mut out,
        chunk::TIME_USEC,
        &since.subsec_micros().to_be_bytes(),
    )?;
    push(&mut out, chunk::PROTO_TYPE, &[PROTO_SIP])?;
    push(&mut out, chunk::CAPTURE_ID, &agent.node_id.to_be_bytes())?;
    if let Some(pw) = &agent.password {
        push(&mut out, chunk::AUTH_KEY, pw.as_bytes())?;
    }
    if let Some(verdict) = p.verdict {
        push_vendor(&mut out, VERDICT, verdict.as_bytes())?;
    }
    push(&mut out, chunk::PAYLOAD, &p.payload)?;
    let total = u16::try_from(out.len()).ok()?;
    out[4..HEADER].copy_from_slice(&total.to_be_bytes());
    Some(out)
}

fn proto(p: &Packet) -> u8 {
    if p.stream { IPPROTO_TCP } else { IPPROTO_UDP }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// An OPTIONS over UDP and IPv4, as the proxy received it.
    fn options() -> Packet {
        Packet {
            time: UNIX_EPOCH + Duration::new(0x6000_0001, 2_000),
            src: "192.0.2.1:5062".parse().unwrap(),
            dst: "198.51.100.2:5060".parse().unwrap(),
            stream: false,
            payload: b"OPTIONS".to_vec(),
            verdict: None,
        }
    }

    #[test]
    fn an_ipv4_udp_message_is_the_bytes_of_the_specification() {
        let p = options();
        let agent = Agent {
            node_id: 7,
            password: Some("pw".into()),
        };
        let got = encode(&p, &agent).unwrap();
        #[rustfmt::skip]
        let want: Vec<u8> = [
            &b"HEP3"[..], &[0, 114],
            &[0, 0, 0, 1, 0, 7, 2],                      // family AF_INET
            &[0, 0, 0, 2, 0, 7, 17],                     // UDP
            &[0, 0, 0, 3, 0, 10, 192, 0, 2, 1],          // IPv4 source
            &[0, 0, 0, 4, 0, 10, 198, 51, 100, 2],       // IPv4 destination
            &[0, 0, 0, 7, 0, 8, 0x13, 0xc6],             // source port 5062
            &[0, 0, 0, 8, 0, 8, 0x13, 0xc4],             // destination port 5060
            &[0, 0, 0, 9, 0, 10, 0x60, 0, 0, 1],         // seconds
            &[0, 0, 0, 10, 0, 10, 0, 0, 0, 2],           // microseconds
            &[0, 0, 0, 11, 0, 7, 1],                     // SIP
            &[0, 0, 0, 12, 0, 10, 0, 0, 0, 7],           // capture agent 7
            &[0, 0, 0, 14, 0, 8, b'p', b'w'],            // password
            &[0, 0, 0, 15, 0, 13], b"OPTIONS",           // payload
        ]
        .concat();
        assert_eq!(got, want);
    }

    #[test]
    fn mixed_families_go_as_ipv6_and_oversize_is_refused() {
        let p = Packet {
            time: UNIX_EPOCH,
            src: "[2001:db8::1]:5060".parse().unwrap(),
            dst: "192.0.2.1:5060".parse().unwrap(),
            stream: true,
            payload: vec![b'x'; 10],
            verdict: None,
        };
        let got = encode(&p, &Agent::default()).unwrap();
        assert_eq!(&got[6..13], &[0, 0, 0, 1, 0, 7, AF_INET6]);
        assert_eq!(&got[13..20], &[0, 0, 0, 2, 0, 7, IPPROTO_TCP]);
        let dst = &got[20 + 22 + 6..20 + 22 + 22];
        assert_eq!(
            dst,
            &"::ffff:192.0.2.1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        );
        let big = Packet {
            payload: vec![0; 65_500],
            ..p
        };
        assert_eq!(encode(&big, &Agent::default()), None);
    }

    #[test]
    fn a_dropped_packet_carries_its_verdict_in_our_vendor_chunk_before_the_payload() {
        let p = Packet {
            payload: b"REGISTER".to_vec(),
            verdict: Some("banned"),
            ..options()
        };
        let got = encode(&p, &Agent::default()).unwrap();
        let tail: Vec<u8> = [
            &[0x53, 0x46, 0x01, 0x00, 0, 12][..],
            b"banned",
            &[0, 0, 0, 15, 0, 14],
            b"REGISTER",
        ]
        .concat();
        assert!(got.ends_with(&tail), "{got:?}");
        assert_eq!(usize::from(u16::from_be_bytes([got[4], got[5]])), got.len());
    }
}
