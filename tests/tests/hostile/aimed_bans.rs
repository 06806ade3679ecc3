//! Learned bans aimed at the people the edge protects: one unauthenticated packet with a
//! scanner User-Agent from a registered subscriber's address, or five forged Authorization
//! headers from it, must not ban that address (nothing proves they came from there).

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Duration,
};

use sip_firewall_tests::{
    domain::{config, forged_register},
    edge::sipp_edge,
    metrics::Metrics,
    netns::{Pair, in_ns},
    sipp::register_bob,
};

/// Send `msgs` from `from` (inside namespace a) to the proxy; no answer awaited.
fn send_from(pair: &Pair, from: SocketAddr, msgs: Vec<String>) {
    let to = SocketAddr::new(IpAddr::V4(pair.b4), 5060);
    let to = if from.is_ipv6() {
        SocketAddr::new(IpAddr::V6(pair.b6), 5060)
    } else {
        to
    };
    in_ns(&pair.ns_a, move || {
        let s = UdpSocket::bind(from)?;
        for m in msgs {
            s.send_to(m.as_bytes(), to)?;
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    })
    .expect("send from namespace a");
}

fn scanner_options(from: SocketAddr, n: usize) -> String {
    let host = match from {
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
        SocketAddr::V4(a) => a.to_string(),
    };
    format!(
        "OPTIONS sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {host};branch=z9hG4bK-scan-{n}\r\nMax-Forwards: 70\r\nFrom: <sip:100@example.com>;tag=s{n}\r\nTo: <sip:bob@example.com>\r\nCall-ID: scan-{n}@x\r\nCSeq: 1 OPTIONS\r\nUser-Agent: friendly-scanner\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn unproven_evidence_does_not_ban_a_subscriber() {
    let test = "unproven_evidence_does_not_ban_a_subscriber";
    let Some(mut e) = sipp_edge(test, "aim", &config(""), true) else {
        return;
    };
    let (pair, d) = (&e.pair, &e.dirs);
    let a4 = pair.a4.to_string();

    // bob registers from 198.51.100.1 (namespace a): a known source now.
    let reg = register_bob(pair, e.dir(), 5070);
    assert!(reg.ok, "bob registers: {}", reg.output);

    // The attacker spoofs bob's address: a scanner User-Agent, then five forged
    // Authorization headers (a nonce we never issued), all unauthenticated.
    let spoofed: SocketAddr = format!("{a4}:5071").parse().unwrap();
    let mut msgs = vec![scanner_options(spoofed, 1)];
    msgs.extend((1..=6).map(|n| forged_register(spoofed, n)));
    send_from(pair, spoofed, msgs);
    // The same scanner from an address nobody knows: banned, as before.
    let other = pair.add_a4(3).expect("a second address in namespace a");
    let unknown = SocketAddr::new(IpAddr::V4(other), 5072);
    send_from(pair, unknown, vec![scanner_options(unknown, 2)]);
    let reason = d.wait_ban(&other.to_string(), Duration::from_secs(5));
    assert!(
        reason.as_deref().is_some_and(|r| r.starts_with("scanner")),
        "the unknown scanner is banned: {reason:?}"
    );
    // Everything sent before the control ban was handled (events are applied in order).
    let bans_now = d.bans();
    let m = Metrics::scrape(pair);
    let refused_scanner = m.get("sipfw_ban_refused_total{reason=\"scanner\"}");
    let refused_auth = m.get("sipfw_ban_refused_total{reason=\"auth_unproven\"}");
    eprintln!(
        "bans: {bans_now:?}; refused: scanner {refused_scanner}, unproven auth failures {refused_auth}"
    );
    assert!(
        !bans_now.iter().any(|(ip, _)| *ip == a4),
        "bob's address was banned by unauthenticated evidence: {bans_now:?}"
    );
    assert_eq!(refused_scanner, 1.0, "the refused scanner ban is counted");
    assert!(
        refused_auth >= 5.0,
        "the forged Authorization headers are counted as refused evidence"
    );
    // bob still registers.
    let reg = register_bob(pair, e.dir(), 5073);
    assert!(reg.ok, "bob registers again: {}", reg.output);
    e.stop_clean();
}
