//! Relay mode with the operator's registrar outside (not allow-listed) on the dual-homed
//! edge that hides the inside: a REGISTER a proxy inside relays reaches the registrar with
//! the edge's Path entry only (the inner one sealed in it); the registrar's 200 reaches the
//! proxy with the Path as it sent it, and the registrar's INVITE through the edge's entry
//! reaches the proxy with the inner Path as its Route (RFC 3327 5). The REGISTER's Contact
//! reaches the registrar sealed as a URI of the edge's, the 200 brings the proxy its own
//! back, and the registrar's INVITE to the sealed binding reaches the inner contact. No
//! byte the registrar received names an inside address.

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use sip_firewall_tests::{
    domain::SHORT_TIMERS,
    edge::Edge,
    require_root,
    ua::{
        headers, response_to,
        udp::{socket_in, socket_in_ns},
    },
};

use super::{INSIDE, INSIDE_NET, OUTSIDE};

/// The proxy inside (alice's phone behind it) and the registrar outside.
const PROXY: &str = "198.51.100.1:5090";
const REGISTRAR: &str = "203.0.113.2:5080";
const INNER_PATH: &str = "<sip:198.51.100.1:5090;lr>";
const ALICE: &str = "sip:alice@198.51.100.1:5070";

/// The next message `sock` receives that starts with `start`, within a few seconds; every
/// message received is kept in `got`.
fn next(sock: &UdpSocket, start: &str, got: &mut Vec<String>) -> Option<String> {
    let mut buf = [0u8; 8192];
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(5) {
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            got.push(m.clone());
            if m.starts_with(start) {
                return Some(m);
            }
        }
    }
    None
}

/// A request from `via` with the `route` lines, no body.
fn request(start: &str, via: &str, route: &str, rest: &str) -> String {
    format!(
        "{start} SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK{}\r\nMax-Forwards: 69\r\n\
         {route}{rest}Content-Length: 0\r\n\r\n",
        start.len()
    )
}

#[test]
fn a_registrar_outside_sees_no_inner_path() {
    if !require_root("dual_homed::a_registrar_outside_sees_no_inner_path") {
        return;
    }
    let config = format!(
        "[sip]\nlisten = [\"{INSIDE}\", \"{OUTSIDE}\"]\ndomains = [\"example.com\"]\n\
         {SHORT_TIMERS}[policy]\nallow = [\"{INSIDE_NET}0/24\"]\n\
         [proxy]\ntopology_hiding = \"outside\"\n\
         [registrar]\nmode = \"relay\"\nrelay_to = \"sip:{REGISTRAR}\"\n"
    );
    let mut edge = Edge::new("dpath", &config);
    let side = edge.pair.add_side().expect("namespace c");
    edge.dirs.listen = String::new();
    edge.run(&["--xdp-mode", "off"]);
    let proxy = socket_in(&edge.pair, PROXY, Duration::from_millis(50));
    let registrar = socket_in_ns(&side.ns_c, REGISTRAR, Duration::from_millis(50));
    let inside: SocketAddr = INSIDE.parse().expect("inside");
    let outside: SocketAddr = OUTSIDE.parse().expect("outside");
    let (mut at_registrar, mut at_proxy) = (Vec::new(), Vec::new());

    let aor = "From: <sip:alice@example.com>;tag=r\r\nTo: <sip:alice@example.com>\r\n";
    let register = request(
        "REGISTER sip:example.com",
        PROXY,
        &format!("Path: {INNER_PATH}\r\n"),
        &format!("{aor}Call-ID: reg-path\r\nCSeq: 1 REGISTER\r\nContact: <{ALICE}>\r\n"),
    );
    let _ = proxy.send_to(register.as_bytes(), inside);
    let reg = next(&registrar, "REGISTER ", &mut at_registrar).expect("the REGISTER");
    let path = headers(&reg, "Path");
    assert!(path.len() == 1 && path[0].contains(";sfwp="), "{reg}");
    let path = path[0].to_string();
    // In the first hour of a day it also removes the day before's binding (`;expires=0`).
    let contact: Vec<&str> = headers(&reg, "Contact")
        .into_iter()
        .flat_map(|c| c.split(", "))
        .filter(|c| !c.ends_with(";expires=0"))
        .collect();
    assert!(
        contact.len() == 1 && contact[0].starts_with("<sip:sfwth-"),
        "{reg}"
    );
    let binding = contact[0].trim_matches(['<', '>']).to_string();
    let bound = format!("Path: {path}\r\nContact: <{binding}>;expires=600\r\n");
    let _ = registrar.send_to(
        response_to(&reg, "200 OK", "rg", &bound).as_bytes(),
        outside,
    );
    let ok = next(&proxy, "SIP/2.0 200", &mut at_proxy).expect("the 200 at the proxy");
    assert_eq!(
        headers(&ok, "Path").last().copied(),
        Some(INNER_PATH),
        "{ok}"
    );
    assert_eq!(
        headers(&ok, "Contact"),
        vec![format!("<{ALICE}>;expires=600")],
        "{ok}"
    );

    let invite = request(
        &format!("INVITE {binding}"),
        REGISTRAR,
        &format!("Route: {path}\r\n"),
        "From: <sip:bob@example.com>;tag=b\r\nTo: <sip:alice@example.com>\r\n\
         Call-ID: back-1\r\nCSeq: 1 INVITE\r\n",
    );
    let _ = registrar.send_to(invite.as_bytes(), outside);
    let inv = next(&proxy, "INVITE ", &mut at_proxy).expect("the INVITE at the proxy");
    assert!(inv.starts_with(&format!("INVITE {ALICE} ")), "{inv}");
    assert_eq!(headers(&inv, "Route"), vec![INNER_PATH], "{inv}");
    let busy = response_to(&inv, "486 Busy Here", "px", "");
    let _ = proxy.send_to(busy.as_bytes(), inside);
    next(&registrar, "SIP/2.0 486", &mut at_registrar).expect("the 486 at the registrar");

    for m in &at_registrar {
        assert!(!m.contains(INSIDE_NET), "{m}");
    }
}
