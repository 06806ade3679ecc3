//! The edge's own addresses are its own. With the embedded defaults (no `[sip] domains`,
//! listening on 0.0.0.0), a carrier's OPTIONS ping to `sip:<edge-ip>` or
//! `sip:<edge-ip>:5060` is answered 200 by the edge, from an outsider and from an
//! allow-listed peer: taken for a foreign target, the outsider's would get "403 Relaying
//! Forbidden" and the peer's would be forwarded to the edge itself until Max-Forwards ran out.

use std::{
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use sip_firewall_tests::{
    edge::edge,
    metrics::Metrics,
    netns::{Pair, in_ns},
};

/// An allow-listed peer (a carrier's monitor): a second address on namespace a's side
/// (198.51.100.3).
const PEER: &str = "198.51.100.3";

/// Send `req` from `from` and return the first line of every answer within 2 s (the edge
/// answers at once; more than one answer, or none, is what the test is about).
fn ask(pair: &Pair, from: &str, to: SocketAddr, req: String) -> Vec<String> {
    let from = format!("{from}:5090");
    in_ns(&pair.ns_a, move || {
        let s = UdpSocket::bind(from.as_str())?;
        s.set_read_timeout(Some(Duration::from_millis(200)))?;
        s.send_to(req.as_bytes(), to)?;
        let mut out = Vec::new();
        let t0 = Instant::now();
        let mut buf = [0u8; 4096];
        while t0.elapsed() < Duration::from_secs(2) {
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                out.push(text.lines().next().unwrap_or("").to_string());
                if out.len() > 1 {
                    break;
                }
            }
        }
        Ok(out)
    })
    .expect("ask from namespace a")
}

fn options(ruri: &str, from: &str, n: usize) -> String {
    format!(
        "OPTIONS {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {from}:5090;branch=z9hG4bKping{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:monitor@carrier.example>;tag=m{n}\r\nTo: <{ruri}>\r\n\
         Call-ID: ping-{n}@{from}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn options_ping_to_the_edge_ip() {
    let test = "options_ping_to_the_edge_ip";
    // The embedded defaults but for the allow-listed peer: no domains, no advertise.
    let config = format!("[policy]\nallow = [\"{PEER}/32\"]\n");
    let Some(mut e) = edge(test, "own", &config, false) else {
        return;
    };
    let pair = &e.pair;
    pair.add_a4(3).unwrap();
    let to = e.sip();
    let edge = pair.b(false);
    let outsider = pair.a(false).to_string();
    let mut n = 0;
    let mut seen = Vec::new();
    for ruri in [format!("sip:{edge}"), format!("sip:{edge}:5060")] {
        for from in [outsider.as_str(), PEER] {
            n += 1;
            let answers = ask(pair, from, to, options(&ruri, from, n));
            eprintln!("{test}: OPTIONS {ruri} from {from}: {answers:?}");
            seen.push((format!("OPTIONS {ruri} from {from}"), answers));
        }
    }
    let forwarded = Metrics::scrape(pair).get("sipfw_proxy_forwarded_total{kind=\"request\"}");
    // Stopped before any assertion: a failing test leaves no daemon behind.
    let (code, log) = e.stop();
    for (what, answers) in seen {
        assert_eq!(answers, vec!["SIP/2.0 200 OK"], "{what}");
    }
    assert_eq!(forwarded, 0.0, "nothing forwarded (to itself)");
    assert_eq!(code, 0, "{log}");
}
