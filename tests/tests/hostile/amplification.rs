//! Amplification: bytes the edge sends toward an address that never completed
//! a handshake, over the bytes it received from it, per kind of request, from a namespace over
//! UDP. The daemon runs with short timers (T1 = 50 ms), so a window of 4 s covers every
//! Timer G resend the edge would make (64*T1 = 3.2 s). Printed per kind; asserted: 0 for
//! copies of a request from other source ports, no answer resent by timer toward an
//! unverified source, and the first answer to a minimal request at most twice its size.

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use sip_firewall_tests::{
    domain::config,
    edge::edge,
    metrics::Metrics,
    netns::{Pair, in_ns},
    ua::{Request, response_to},
};

/// Covers Timer G at T1 = 50 ms (3.2 s) with room.
const WINDOW: Duration = Duration::from_secs(4);

/// A minimal request (RFC 3261 8.1.1 headers only) of `method` to `ruri` from `local`;
/// `vias` extra Via headers under the top one.
fn request(method: &str, ruri: &str, local: SocketAddr, tag: &str, vias: usize) -> Vec<u8> {
    let mut m = format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{tag};rport\r\n"
    );
    for i in 0..vias {
        m.push_str(&format!(
            "Via: SIP/2.0/UDP 192.0.2.{i}:5060;branch=z9hG4bK{tag}v{i}\r\n"
        ));
    }
    // A REGISTER names the address of record in From and To.
    let (from, to) = if method == "REGISTER" {
        ("bob@example.com", "bob@example.com")
    } else {
        ("mallory@example.org", ruri.trim_start_matches("sip:"))
    };
    m.push_str(&format!(
        "Max-Forwards: 70\r\nFrom: <sip:{from}>;tag={tag}\r\nTo: <sip:{to}>\r\nCall-ID: {tag}@x\r\nCSeq: 1 {method}\r\n"
    ));
    if method == "INVITE" || method == "REGISTER" {
        m.push_str(&format!("Contact: <sip:mallory@{local}>\r\n"));
    }
    m.push_str("Content-Length: 0\r\n\r\n");
    m.into_bytes()
}

/// One sender: its socket, what it sent, what came back (each datagram's size and first line).
struct Probe {
    kind: &'static str,
    sock: UdpSocket,
    sent: usize,
    got: Vec<(usize, String)>,
}

impl Probe {
    fn new(pair: &Pair, kind: &'static str) -> Probe {
        let sock = in_ns(&pair.ns_a, || Ok(UdpSocket::bind("198.51.100.1:0")?)).unwrap();
        sock.set_nonblocking(true).unwrap();
        Probe {
            kind,
            sock,
            sent: 0,
            got: Vec::new(),
        }
    }

    fn local(&self) -> SocketAddr {
        self.sock.local_addr().unwrap()
    }

    fn send(&mut self, to: SocketAddr, bytes: &[u8]) {
        self.sent += self.sock.send_to(bytes, to).unwrap();
    }

    fn poll(&mut self) {
        let mut buf = [0u8; 65535];
        while let Ok((n, _)) = self.sock.recv_from(&mut buf) {
            let first = String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_string();
            self.got.push((n, first));
        }
    }

    fn received(&self) -> usize {
        self.got.iter().map(|g| g.0).sum()
    }

    /// Answers with a final status (>= 200).
    fn finals(&self) -> usize {
        self.got
            .iter()
            .filter(|(_, l)| l.get(8..9).is_some_and(|c| c != "1"))
            .count()
    }
}

/// The allow-listed phone where alice is registered (no digest for allow-listed sources): it
/// answers every INVITE with 486, so the edge relays a non-2xx final to the caller.
const PHONE: &str = "198.51.100.5:5070";

#[test]
fn amplification_factors() {
    let allow = config("[policy]\nallow = [\"198.51.100.5/32\"]\n");
    let Some(mut e) = edge("amplification_factors", "amp", &allow, false) else {
        return;
    };
    let (pair, to) = (&e.pair, e.sip());
    pair.add_a4(5).unwrap();
    let phone = in_ns(&pair.ns_a, || Ok(UdpSocket::bind(PHONE)?)).unwrap();
    phone
        .set_read_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    // Allow-listed: registered without digest.
    let reg = Request {
        method: "REGISTER",
        uri: "sip:example.com",
        via: &format!("SIP/2.0/UDP {PHONE};branch=z9hG4bKphone;rport"),
        from: "<sip:alice@example.com>;tag=ph",
        to: "<sip:alice@example.com>",
        call_id: "phone@x",
        cseq: 1,
        extra: &format!("Contact: <sip:alice@{PHONE}>\r\n"),
    };
    phone.send_to(reg.text().as_bytes(), to).unwrap();
    let mut buf = [0u8; 65535];
    let (n, _) = phone.recv_from(&mut buf).expect("the phone registers");
    assert!(
        buf[..n].starts_with(b"SIP/2.0 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    phone.set_nonblocking(true).unwrap();

    // Kinds with one minimal request each.
    let kinds: [(&str, &str, &str, usize); 8] = [
        ("OPTIONS to us", "OPTIONS", "sip:example.com", 0),
        ("OPTIONS to a user", "OPTIONS", "sip:bob@example.com", 0),
        ("INVITE to a user", "INVITE", "sip:bob@example.com", 0),
        ("MESSAGE to a user", "MESSAGE", "sip:bob@example.com", 0),
        ("INVITE, relayed 486", "INVITE", "sip:alice@example.com", 0),
        ("REGISTER, no credentials", "REGISTER", "sip:example.com", 0),
        (
            "INVITE to a foreign domain",
            "INVITE",
            "sip:someone@example.net",
            0,
        ),
        (
            "OPTIONS to a user, 16 Vias",
            "OPTIONS",
            "sip:bob@example.com",
            15,
        ),
    ];
    let mut probes = Vec::new();
    for (i, (kind, method, ruri, vias)) in kinds.iter().enumerate() {
        let mut p = Probe::new(pair, kind);
        let req = request(method, ruri, p.local(), &format!("amp{i}"), *vias);
        p.send(to, &req);
        probes.push(p);
    }
    // Copies of someone's request (same bytes, same top Via) from ten other source ports,
    // after the original was answered: a spoofer would aim these at a victim.
    let original = {
        let mut p = Probe::new(pair, "original of the copies");
        let req = request("OPTIONS", "sip:bob@example.com", p.local(), "ampcopy", 15);
        p.send(to, &req);
        std::thread::sleep(Duration::from_millis(200));
        (p, req)
    };
    let mut copies: Vec<Probe> = (0..10)
        .map(|_| Probe::new(pair, "copy from another port"))
        .collect();
    for c in &mut copies {
        c.send(to, &original.1);
    }
    let mut original_probe = original.0;

    let t0 = Instant::now();
    while t0.elapsed() < WINDOW {
        for p in &mut probes {
            p.poll();
        }
        for c in &mut copies {
            c.poll();
        }
        original_probe.poll();
        while let Ok((n, from)) = phone.recv_from(&mut buf) {
            // The phone answers every INVITE 486: the edge relays a non-2xx final.
            let m = String::from_utf8_lossy(&buf[..n]);
            if m.starts_with("INVITE ") {
                let busy = response_to(&m, "486 Busy Here", "busy", "");
                let _ = phone.send_to(busy.as_bytes(), from);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }

    println!(
        "{:<30} {:>6} {:>7} {:>6} {:>8} {:>8}  answers",
        "request kind", "sent", "first", "total", "first/x", "total/x"
    );
    let row = |p: &Probe| {
        let first = p.got.first().map_or(0, |g| g.0);
        println!(
            "{:<30} {:>6} {:>7} {:>6} {:>8.2} {:>8.2}  {:?}",
            p.kind,
            p.sent,
            first,
            p.received(),
            first as f64 / p.sent as f64,
            p.received() as f64 / p.sent as f64,
            p.got
                .iter()
                .map(|g| g.1.get(8..11).unwrap_or("?"))
                .collect::<Vec<_>>()
        );
    };
    for p in &probes {
        row(p);
    }
    row(&original_probe);
    let copy_sent: usize = copies.iter().map(|c| c.sent).sum();
    let copy_got: usize = copies.iter().map(Probe::received).sum();
    println!(
        "{:<30} {:>6} {:>7} {:>6} {:>8.2} {:>8.2}  (10 ports together)",
        "copies from 10 other ports",
        copy_sent,
        0,
        copy_got,
        0.0,
        copy_got as f64 / copy_sent as f64
    );

    assert_eq!(copy_got, 0, "answers to copies of another source's request");
    let all = probes.iter().chain([&original_probe]);
    for p in all {
        assert!(!p.got.is_empty(), "{}: no answer at all", p.kind);
        assert!(
            p.finals() <= 1,
            "{}: a final answer resent by timer: {:?}",
            p.kind,
            p.got
        );
        let first = p.got[0].0;
        assert!(
            first <= 2 * p.sent,
            "{}: first answer {first} bytes for {} sent",
            p.kind,
            p.sent
        );
    }
    let m = Metrics::scrape(pair);
    assert_eq!(
        m.get("sipfw_proxy_retransmissions_total{direction=\"foreign_source\"}"),
        10.0,
        "copies counted"
    );
    e.stop_clean();
}
