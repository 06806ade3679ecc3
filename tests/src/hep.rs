//! A HEPv3 collector for the tests: a UDP socket that receives what the daemon exports, and
//! a decoder of the HEPv3 framing written from the specification (sipcapture's HEP3: `HEP3`,
//! a 16-bit total length, then chunks of vendor, type and length, 16 bits each in network
//! order, the length counting the chunk's 6 bytes), apart from the daemon's encoder so that
//! one cannot hide the other's mistake; and sngrep as a collector (`Sngrep`).

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

/// One decoded HEP packet: the chunks the tests look at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Captured {
    /// 2 (IPv4) or 10 (IPv6).
    pub family: u8,
    /// 17 (UDP) or 6 (TCP).
    pub proto: u8,
    pub src: Option<SocketAddr>,
    pub dst: Option<SocketAddr>,
    pub node_id: Option<u32>,
    pub password: Option<String>,
    /// 1: SIP.
    pub proto_type: Option<u8>,
    pub payload: String,
    /// The XDP verdict of a dropped packet: sip-firewall's vendor chunk (vendor 0x5346,
    /// type 0x0100), which collectors that read generic chunks only skip.
    pub verdict: Option<String>,
}

impl Captured {
    /// The payload's first line (`INVITE sip:... SIP/2.0`, `SIP/2.0 200 OK`).
    pub fn first_line(&self) -> &str {
        self.payload.lines().next().unwrap_or_default()
    }
}

fn be16(b: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(..2)?.try_into().ok()?))
}

/// sip-firewall's vendor id and the type of its verdict chunk.
pub const VERDICT_CHUNK: (u16, u16) = (0x5346, 0x0100);

/// Decode one HEPv3 packet; `None` when it is not one (bad magic, lengths that do not add up).
pub fn decode(b: &[u8]) -> Option<Captured> {
    if b.get(..4)? != b"HEP3" || usize::from(be16(b.get(4..)?)?) != b.len() {
        return None;
    }
    let mut c = Captured::default();
    let (mut sip, mut dip, mut sport, mut dport) = (None, None, None, None);
    let mut at = 6;
    while at < b.len() {
        let kind = be16(b.get(at + 2..)?)?;
        let len = usize::from(be16(b.get(at + 4..)?)?);
        let v = b.get(at + 6..at.checked_add(len)?)?;
        let vendor = be16(b.get(at..)?)?;
        if (vendor, kind) == VERDICT_CHUNK {
            c.verdict = Some(String::from_utf8_lossy(v).into_owned());
        }
        if vendor == 0 {
            match kind {
                1 => c.family = *v.first()?,
                2 => c.proto = *v.first()?,
                3 => sip = Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(v).ok()?))),
                4 => dip = Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(v).ok()?))),
                5 => sip = Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(v).ok()?))),
                6 => dip = Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(v).ok()?))),
                7 => sport = be16(v),
                8 => dport = be16(v),
                11 => c.proto_type = v.first().copied(),
                12 => c.node_id = Some(u32::from_be_bytes(v.try_into().ok()?)),
                14 => c.password = Some(String::from_utf8_lossy(v).into_owned()),
                15 => c.payload = String::from_utf8_lossy(v).into_owned(),
                _ => {}
            }
        }
        at += len.max(6);
    }
    c.src = Some(SocketAddr::new(sip?, sport?));
    c.dst = Some(SocketAddr::new(dip?, dport?));
    Some(c)
}

/// What `socket` receives until it has been quiet for `quiet` (at most `limit` in all),
/// decoded; undecodable datagrams are returned as `Err` with their length.
pub fn receive(
    socket: &UdpSocket,
    quiet: Duration,
    limit: Duration,
) -> Vec<Result<Captured, usize>> {
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut buf = vec![0u8; 65_535];
    let _ = socket.set_read_timeout(Some(quiet));
    while t0.elapsed() < limit {
        match socket.recv(&mut buf) {
            Ok(n) => out.push(decode(&buf[..n]).ok_or(n)),
            Err(_) => break,
        }
    }
    out
}

/// `sngrep -N -L udp:ADDR:PORT` in a namespace: sngrep as the HEP collector, headless
/// (its device capture on the namespace's loopback, where no SIP goes, so every dialog it
/// counts came by HEP). Killed when dropped.
pub struct Sngrep(Option<std::process::Child>);

impl Sngrep {
    /// Start it in `ns` listening on `at`; None when sngrep is not installed (`cargo xtask
    /// setup` installs it).
    pub fn start(ns: &str, at: SocketAddr) -> Option<Sngrep> {
        let installed = std::process::Command::new("sngrep")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
        if !installed {
            return None;
        }
        let child = std::process::Command::new("ip")
            .args(["netns", "exec", ns, "sngrep", "-N", "-d", "lo", "-L"])
            .arg(format!("udp:{at}"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sngrep");
        // Until its socket is bound (at most 5 s).
        let t0 = Instant::now();
        let port = format!(":{}", at.port());
        while t0.elapsed() < Duration::from_secs(5) {
            let ss = std::process::Command::new("ip")
                .args(["netns", "exec", ns, "ss", "-lun"])
                .output()
                .expect("ss");
            if String::from_utf8_lossy(&ss.stdout).contains(&port) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Sngrep(Some(child)))
    }

    /// Stop it (SIGINT); the dialogs it counted last, and what it printed.
    pub fn finish(mut self) -> (u64, String) {
        let Some(child) = self.0.take() else {
            return (0, String::new());
        };
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let (out, _) = crate::sipp::wait_bounded(child, Duration::from_secs(5));
        let said = crate::said(&out);
        let count = said
            .rsplit("Dialog count: ")
            .next()
            .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        (count, said)
    }
}

impl Drop for Sngrep {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_chunks_and_refuses_a_bad_length() {
        #[rustfmt::skip]
        let b: Vec<u8> = [
            &b"HEP3"[..], &[0, 65],
            &[0, 0, 0, 1, 0, 7, 2], &[0, 0, 0, 2, 0, 7, 17],
            &[0, 0, 0, 3, 0, 10, 192, 0, 2, 1], &[0, 0, 0, 4, 0, 10, 192, 0, 2, 2],
            &[0, 0, 0, 7, 0, 8, 0x13, 0xc4], &[0, 0, 0, 8, 0, 8, 0x13, 0xc5],
            &[0, 0, 0, 15, 0, 9], b"BYE",
        ]
        .concat();
        let c = decode(&b).unwrap();
        assert_eq!(c.src, Some("192.0.2.1:5060".parse().unwrap()));
        assert_eq!(c.dst, Some("192.0.2.2:5061".parse().unwrap()));
        assert_eq!((c.family, c.proto, c.first_line()), (2, 17, "BYE"));
        assert_eq!(c.verdict, None);
        let mut short = b.clone();
        short[5] = 64;
        assert_eq!(decode(&short), None);
        // A dropped packet's verdict, in the vendor chunk before the payload.
        let mut dropped = b[..56].to_vec();
        dropped.extend_from_slice(&[0x53, 0x46, 0x01, 0x00, 0, 12]);
        dropped.extend_from_slice(b"banned");
        dropped.extend_from_slice(&[0, 0, 0, 15, 0, 9]);
        dropped.extend_from_slice(b"BYE");
        let n = dropped.len() as u16;
        dropped[4..6].copy_from_slice(&n.to_be_bytes());
        let c = decode(&dropped).unwrap();
        assert_eq!(
            (c.verdict.as_deref(), c.first_line()),
            (Some("banned"), "BYE")
        );
    }
}
