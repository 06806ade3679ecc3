//! One unauthenticated UDP packet must not stop the daemon. A quoted-pair (`\`) before a
//! multi-byte UTF-8 character in a Digest parameter is where a byte-indexed scanner panics
//! ("byte index is not a char boundary"), killing the SIP listener task; the packet is
//! answered (a challenge) and the daemon goes on.

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use sip_firewall_tests::{domain::config, edge::edge, metrics::Metrics, netns::in_ns};

/// An OPTIONS ping to the edge itself from `sock`: the status code of the answer, if one came
/// within a second.
pub fn ping(sock: &UdpSocket, to: SocketAddr, n: u32) -> Option<u16> {
    let local = sock.local_addr().ok()?;
    let msg = format!(
        "OPTIONS sip:example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP {local};branch=z9hG4bK-ping-{n}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:monitor@probe.invalid>;tag=p{n}\r\n\
         To: <sip:example.com>\r\n\
         Call-ID: ping-{n}@probe.invalid\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n"
    );
    sock.send_to(msg.as_bytes(), to).ok()?;
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(2) {
        let Ok((len, _)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let text = String::from_utf8_lossy(&buf[..len]);
        if text.contains(&format!("z9hG4bK-ping-{n}")) {
            return text.get(8..11)?.parse().ok();
        }
    }
    None
}

#[test]
fn backslash_before_multibyte_character_does_not_stop_the_daemon() {
    let test = "backslash_before_multibyte_character_does_not_stop_the_daemon";
    let Some(mut e) = edge(test, "crash", &config(""), false) else {
        return;
    };
    let to = e.sip();
    let sock = in_ns(&e.pair.ns_a, || Ok(UdpSocket::bind("198.51.100.1:0")?)).unwrap();
    let local = sock.local_addr().unwrap();
    assert_eq!(ping(&sock, to, 0), Some(200), "the edge answers before");

    // The hostile packet: OPTIONS to a user of our domain, "from" one of our users
    // (so the proxy reads its credentials), with the hostile parameter in Authorization and
    // Proxy-Authorization; and the same in a REGISTER (Authorization).
    let hostile = "Digest username=\"\\\u{e9}\", realm=\"example.com\", nonce=\"x\", uri=\"sip:bob@example.com\", response=\"0\"";
    for (i, (method, ruri)) in [
        ("OPTIONS", "sip:bob@example.com"),
        ("REGISTER", "sip:example.com"),
    ]
    .into_iter()
    .enumerate()
    {
        let msg = format!(
            "{method} {ruri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK-crash-{i}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:bob@example.com>;tag=c{i}\r\n\
             To: <sip:bob@example.com>\r\n\
             Call-ID: crash-{i}@attacker\r\n\
             CSeq: 1 {method}\r\n\
             Authorization: {hostile}\r\n\
             Proxy-Authorization: {hostile}\r\n\
             Content-Length: 0\r\n\r\n"
        );
        sock.send_to(msg.as_bytes(), to).unwrap();
    }
    // Still alive and still answering: a few pings, each within a second or two.
    for n in 1..=3 {
        assert!(
            e.child().try_wait().unwrap().is_none(),
            "the daemon exited after the hostile packet"
        );
        assert_eq!(ping(&sock, to, n), Some(200), "ping {n} after the packet");
    }
    // The credentials were read as malformed or wrong, not as a crash.
    let m = Metrics::scrape(&e.pair);
    assert_eq!(m.sum("sipfw_internal_errors_total"), 0.0, "no panic caught");
    e.stop_clean();
}
