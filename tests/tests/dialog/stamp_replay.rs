//! The Record-Route stamp is not a relay pass. An outsider calls bob (a registered
//! subscriber, SIPp REGISTER with digest); bob's phone copies our Record-Route into its
//! 180 as phones do, so the outsider holds a stamp. With it the outsider sends in-dialog
//! MESSAGEs toward an arbitrary host (a "victim" socket in namespace a): from a third
//! address, and from its own. On main both were relayed to the victim; now the first gets
//! 403 and the second goes to bob's phone, the dialog's other party, and the victim gets
//! nothing. Eve's INVITE also carries P-Asserted-Identity and Remote-Party-ID naming the
//! CEO: they never reach bob's phone (RFC 3325; on main they did).

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use sip_firewall_tests::{
    daemon::{DaemonDirs, stop},
    netns::{Pair, in_ns, ip},
    require_root,
};

use crate::support::{Metrics, config, one_at_a_time, register_bob, sipp_installed};

/// The outsider (caller), a third address it also controls, and the host it aims at.
const EVE: &str = "198.51.100.3";
const THIRD: &str = "198.51.100.4";
const BOB_PORT: u16 = 5070;
const VICTIM_PORT: u16 = 5099;

/// An address of namespace a, reachable from namespace b without ARP.
pub fn add_address(pair: &Pair, addr: &str) {
    ip(&[
        "netns",
        "exec",
        &pair.ns_a,
        "ip",
        "addr",
        "add",
        &format!("{addr}/24"),
        "dev",
        pair.if_a,
    ])
    .unwrap();
    ip(&[
        "netns",
        "exec",
        &pair.ns_b,
        "ip",
        "neigh",
        "replace",
        addr,
        "lladdr",
        "02:00:00:00:00:0a",
        "dev",
        pair.if_b,
        "nud",
        "permanent",
    ])
    .unwrap();
}

pub fn socket(pair: &Pair, addr: String) -> UdpSocket {
    in_ns(&pair.ns_a, move || {
        let s = UdpSocket::bind(addr.as_str())?;
        s.set_read_timeout(Some(Duration::from_millis(100)))?;
        Ok(s)
    })
    .expect("socket in namespace a")
}

/// Every datagram `s` receives within `within` (until `until` says stop).
pub fn receive(s: &UdpSocket, within: Duration, until: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let t0 = Instant::now();
    let mut buf = [0u8; 8192];
    while t0.elapsed() < within {
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let stop = until(&text);
            out.push(text);
            if stop {
                break;
            }
        }
    }
    out
}

/// The headers of `req` a UAS copies into its response (RFC 3261 8.2.6.2, 12.1.1).
pub fn answer(req: &str, code: &str) -> String {
    let mut out = format!("SIP/2.0 {code}\r\n");
    for line in req.split("\r\n") {
        let l = line.to_ascii_lowercase();
        if ["via:", "from:", "call-id:", "cseq:", "record-route:"]
            .iter()
            .any(|p| l.starts_with(p))
        {
            out.push_str(line);
            out.push_str("\r\n");
        } else if l.starts_with("to:") {
            out.push_str(&format!("{line};tag=bobtag\r\n"));
        }
    }
    out.push_str(&format!(
        "Contact: <sip:bob@198.51.100.1:{BOB_PORT}>\r\nContent-Length: 0\r\n\r\n"
    ));
    out
}

fn message(from_addr: &str, route: &str, n: usize) -> String {
    format!(
        "MESSAGE sip:victim@198.51.100.1:{VICTIM_PORT} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {from_addr}:5090;branch=z9hG4bKmsg{n};rport\r\nMax-Forwards: 70\r\n\
         Route: {route}\r\nFrom: <sip:eve@evil.example>;tag=eve\r\n\
         To: <sip:bob@example.com>;tag=bobtag\r\nCall-ID: eve-call-1\r\nCSeq: {n} MESSAGE\r\n\
         Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
    )
}

#[test]
fn replayed_stamp_relays_nothing() {
    let test = "replayed_stamp_relays_nothing";
    if !require_root(test) || !sipp_installed(test) {
        return;
    }
    let _turn = one_at_a_time();
    let pair = Pair::new("rr").unwrap();
    add_address(&pair, EVE);
    add_address(&pair, THIRD);
    let d = DaemonDirs::new("rr", &config(""));
    let daemon = d.start(&pair, &["--xdp-mode", "off"]);
    let dir = d.dir.path.clone();
    let proxy = SocketAddr::new(pair.b(false), 5060);

    let r = register_bob(&pair, &dir, BOB_PORT);
    let bob = socket(&pair, format!("198.51.100.1:{BOB_PORT}"));
    let victim = socket(&pair, format!("198.51.100.1:{VICTIM_PORT}"));
    let eve = socket(&pair, format!("{EVE}:5090"));
    let third = socket(&pair, format!("{THIRD}:5090"));

    // Eve calls bob; bob's phone rings (its 180 carries our Record-Route back to Eve).
    let invite = format!(
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {EVE}:5090;branch=z9hG4bKeve1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:eve@evil.example>;tag=eve\r\nTo: <sip:bob@example.com>\r\n\
         Call-ID: eve-call-1\r\nCSeq: 1 INVITE\r\nContact: <sip:eve@{EVE}:5090>\r\n\
         P-Asserted-Identity: <sip:ceo@example.com>\r\nRemote-Party-ID: <sip:ceo@example.com>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    eve.send_to(invite.as_bytes(), proxy).expect("send INVITE");
    let at_bob = receive(&bob, Duration::from_secs(3), |m| m.starts_with("INVITE"));
    let forwarded = at_bob.iter().find(|m| m.starts_with("INVITE")).cloned();
    if let Some(inv) = &forwarded {
        bob.send_to(answer(inv, "180 Ringing").as_bytes(), proxy)
            .expect("send 180");
    }
    let at_eve = receive(&eve, Duration::from_secs(3), |m| {
        m.starts_with("SIP/2.0 180")
    });
    let route = at_eve
        .iter()
        .find(|m| m.starts_with("SIP/2.0 180"))
        .and_then(|m| {
            m.split("\r\n")
                .find_map(|l| l.strip_prefix("Record-Route: ").map(str::to_string))
        });

    let before = Metrics::scrape(&pair);
    let mut at_victim = Vec::new();
    let mut third_got = Vec::new();
    let mut bob_got = Vec::new();
    if let Some(route) = &route {
        // From a third address, toward an arbitrary host.
        third
            .send_to(message(THIRD, route, 2).as_bytes(), proxy)
            .expect("send");
        third_got = receive(&third, Duration::from_secs(1), |m| m.starts_with("SIP/2.0"));
        // From the caller itself, toward the same host.
        eve.send_to(message(EVE, route, 3).as_bytes(), proxy)
            .expect("send");
        bob_got = receive(&bob, Duration::from_secs(1), |m| m.starts_with("MESSAGE"));
        at_victim = receive(&victim, Duration::from_secs(1), |_| false);
    }
    let after = Metrics::scrape(&pair);
    let (code, log) = stop(daemon);

    assert!(r.ok, "bob registers: {}\n{}", r.output, r.trace);
    let forwarded = forwarded.unwrap_or_else(|| panic!("the INVITE reached bob: {at_bob:?}"));
    // RFC 3325: an outsider's asserted identity never reaches the phone.
    assert!(
        !forwarded.contains("P-Asserted-Identity") && !forwarded.contains("Remote-Party-ID"),
        "{forwarded}"
    );
    let route = route.unwrap_or_else(|| panic!("Eve got our Record-Route: {at_eve:?}"));
    eprintln!("{test}: stamp {route}");
    eprintln!(
        "{test}: victim got {} message(s); third address got {:?}; bob got {} MESSAGE(s)",
        at_victim.len(),
        third_got
            .iter()
            .map(|m| m.lines().next().unwrap_or(""))
            .collect::<Vec<_>>(),
        bob_got.iter().filter(|m| m.starts_with("MESSAGE")).count()
    );
    assert!(
        at_victim.is_empty(),
        "{} message(s) relayed to the victim, the first: {:?}",
        at_victim.len(),
        at_victim.first()
    );
    assert!(
        third_got.iter().any(|m| m.starts_with("SIP/2.0 403")),
        "a replay from a third address is refused: {third_got:?}"
    );
    assert!(
        bob_got.iter().any(|m| m.starts_with("MESSAGE")),
        "the caller's in-dialog request reaches the callee: {bob_got:?}"
    );
    let refused = "sipfw_dialog_refused_total{reason=\"not_a_party\"}";
    assert_eq!(after.get(refused) - before.get(refused), 1.0);
    assert_eq!(code, 0, "{log}");
}
