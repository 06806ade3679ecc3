//! The frames of the gate layer: a message the daemon refused or answered, with an IPv4 or
//! IPv6 header and a UDP header made up around it, carrying the real addresses and ports,
//! so that tshark decodes it as SIP like any captured datagram (link type RAW: the frame
//! starts with the IP header). A message of a stream transport (TCP, TLS, WebSocket) is
//! shown the same way, as UDP: one frame is one whole message, and the packet comment
//! says it came over a stream. The UDP checksum is left out (zero) over IPv4; over IPv6,
//! where zero is not allowed, it is computed when the whole message is in the frame.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

/// IP protocol number of UDP.
const UDP: u8 = 17;

/// The frame of a message between `src` and `dst`: `data` is its first bytes, `len` its
/// whole length. Returns the frame and its length on the wire (headers plus `len`).
pub fn udp_frame(src: SocketAddr, dst: SocketAddr, data: &[u8], len: u32) -> (Vec<u8>, u32) {
    let udp_len = 8 + len as usize;
    let (mut frame, header) = match (v4(src.ip()), v4(dst.ip())) {
        (Some(s), Some(d)) => (ipv4_header(s.octets(), d.octets(), udp_len), 20),
        _ => (ipv6_header(v6(src.ip()), v6(dst.ip()), udp_len), 40),
    };
    let udp_start = frame.len();
    frame.extend_from_slice(&src.port().to_be_bytes());
    frame.extend_from_slice(&dst.port().to_be_bytes());
    frame.extend_from_slice(&saturate(udp_len).to_be_bytes());
    frame.extend_from_slice(&[0, 0]);
    frame.extend_from_slice(data);
    if header == 40 && data.len() == len as usize && udp_len <= usize::from(u16::MAX) {
        let sum = udp6_checksum(&frame[8..40], &frame[udp_start..]);
        frame[udp_start + 6..udp_start + 8].copy_from_slice(&sum.to_be_bytes());
    }
    let wire = u32::try_from(header + udp_len).unwrap_or(u32::MAX);
    (frame, wire)
}

/// An IPv4 address, or an IPv6 one mapped from IPv4 (a dual-stack socket's view).
fn v4(ip: IpAddr) -> Option<std::net::Ipv4Addr> {
    match ip {
        IpAddr::V4(a) => Some(a),
        IpAddr::V6(a) => a.to_ipv4_mapped(),
    }
}

fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(a) => a.to_ipv6_mapped(),
        IpAddr::V6(a) => a,
    }
}

/// A length in a 16-bit field: a message too long for one (only a stream's could be) is
/// written as the largest, the frame's own length telling the truth.
fn saturate(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

fn ipv4_header(src: [u8; 4], dst: [u8; 4], udp_len: usize) -> Vec<u8> {
    let total = saturate(20 + udp_len).to_be_bytes();
    let mut h = vec![
        0x45, 0, total[0], total[1], 0, 0, 0x40, 0, 64, UDP, 0, 0, src[0], src[1], src[2], src[3],
        dst[0], dst[1], dst[2], dst[3],
    ];
    let sum = checksum(&h, 0);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h
}

fn ipv6_header(src: Ipv6Addr, dst: Ipv6Addr, udp_len: usize) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&saturate(udp_len).to_be_bytes());
    h.extend_from_slice(&[UDP, 64]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h
}

/// The UDP checksum over IPv6 (RFC 8200 8.1): `addrs` the source and destination, `udp`
/// the header (checksum zero) and payload.
fn udp6_checksum(addrs: &[u8], udp: &[u8]) -> u16 {
    let mut pseudo = 0u32;
    for w in addrs.chunks(2) {
        pseudo += u32::from(u16::from_be_bytes([w[0], w[1]]));
    }
    pseudo += udp.len() as u32 + u32::from(UDP);
    match checksum(udp, pseudo) {
        0 => 0xffff,
        s => s,
    }
}

/// The Internet checksum (RFC 1071) of `data`, starting from the partial sum `sum`.
fn checksum(data: &[u8], mut sum: u32) -> u16 {
    for w in data.chunks(2) {
        let hi = w[0];
        let lo = w.get(1).copied().unwrap_or(0);
        sum += u32::from(u16::from_be_bytes([hi, lo]));
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"OPTIONS sip:x SIP/2.0\r\n\r\n";

    #[test]
    fn ipv4_frame() {
        let src: SocketAddr = "192.0.2.7:5070".parse().unwrap();
        let dst: SocketAddr = "[::ffff:198.51.100.1]:5060".parse().unwrap();
        let (f, wire) = udp_frame(src, dst, MSG, MSG.len() as u32);
        assert_eq!(f.len(), 28 + MSG.len());
        assert_eq!(wire as usize, f.len());
        assert_eq!(f[0], 0x45);
        assert_eq!(u16::from_be_bytes([f[2], f[3]]) as usize, f.len());
        assert_eq!(f[9], UDP);
        assert_eq!(&f[12..16], &[192, 0, 2, 7]);
        assert_eq!(&f[16..20], &[198, 51, 100, 1]);
        // A header with its checksum sums to zero.
        assert_eq!(checksum(&f[..20], 0), 0);
        assert_eq!(u16::from_be_bytes([f[20], f[21]]), 5070);
        assert_eq!(u16::from_be_bytes([f[22], f[23]]), 5060);
        assert_eq!(u16::from_be_bytes([f[24], f[25]]) as usize, 8 + MSG.len());
        assert_eq!(&f[28..], MSG);
    }

    #[test]
    fn ipv6_frame_and_a_cut_message() {
        let src: SocketAddr = "[2001:db8::7]:5070".parse().unwrap();
        let dst: SocketAddr = "[2001:db8::1]:5060".parse().unwrap();
        let (f, wire) = udp_frame(src, dst, MSG, MSG.len() as u32);
        assert_eq!(f.len(), 48 + MSG.len());
        assert_eq!(wire as usize, f.len());
        assert_eq!(f[0] >> 4, 6);
        assert_eq!(u16::from_be_bytes([f[4], f[5]]) as usize, 8 + MSG.len());
        assert_eq!((f[6], f[7]), (UDP, 64));
        assert_eq!(
            &f[8..24],
            &src.ip().to_string().parse::<Ipv6Addr>().unwrap().octets()
        );
        assert_eq!(u16::from_be_bytes([f[40], f[41]]), 5070);
        assert_eq!(&f[48..], MSG);
        // The checksum verifies: summed again with the pseudo-header, it gives zero.
        let sum = udp6_checksum(&f[8..40], &f[40..]);
        assert!(sum == 0 || sum == 0xffff, "{sum:#x}");
        // Ten bytes of a 500-byte message: the lengths say 500, no checksum.
        let (cut, wire) = udp_frame(src, dst, &MSG[..10], 500);
        assert_eq!(cut.len(), 58);
        assert_eq!(wire, 548);
        assert_eq!(u16::from_be_bytes([cut[4], cut[5]]), 508);
        assert_eq!(&cut[46..48], &[0, 0]);
        // An IPv4 side and an IPv6 side: both in IPv6, the IPv4 one mapped.
        let (mixed, _) = udp_frame("192.0.2.7:1".parse().unwrap(), dst, MSG, MSG.len() as u32);
        assert_eq!(mixed[0] >> 4, 6);
        assert_eq!(
            &mixed[8..24],
            &"::ffff:192.0.2.7".parse::<Ipv6Addr>().unwrap().octets()
        );
    }
}
