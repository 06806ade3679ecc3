//! The proxy core on a fake clock, at the edge of its trust: its own addresses, loops,
//! dialog-bound routing, branches and the sources of responses, identity headers,
//! enumeration, and registrations that follow the client (issues 9 and 10).

use super::*;
use crate::proxy::{NoObserver, ProxyMetrics};
use sip_firewall_sip::{Limits, parse::parse};

/// An edge on a wildcard address whose host has 192.0.2.10; 10.0.0.0/8 is allow-listed.
const EDGE: &str = "192.0.2.10";

struct Edge {
    core: Core,
    now: Instant,
}

fn ctx_t(source: &str, transport: Transport) -> Context {
    Context {
        source: source.parse().expect("addr"),
        local: format!("{EDGE}:5060").parse().expect("addr"),
        transport,
    }
}

impl Edge {
    fn new(extra: &str) -> Edge {
        let text = format!(
            "[sip]\nlisten = [\"0.0.0.0:5060\"]\n{extra}\n[policy]\nallow = [\"10.0.0.0/8\"]\n"
        );
        let config = Config::from_toml(&text, std::path::Path::new("t.toml")).expect("config");
        let now = Instant::now();
        let mut core =
            Core::new(&config, ProxyMetrics::new(None), Arc::new(NoObserver), now).expect("core");
        core.local.set_addrs(vec![EDGE.parse().expect("ip")]);
        Edge { core, now }
    }

    fn feed(&mut self, text: &str, source: &str) -> Vec<(SocketAddr, String)> {
        self.feed_t(text, source, Transport::Datagram)
    }

    fn feed_t(&mut self, text: &str, source: &str, t: Transport) -> Vec<(SocketAddr, String)> {
        let m = parse(text.as_bytes(), &Limits::default(), t).expect("parse");
        if m.is_request() {
            self.core.request(&m, &ctx_t(source, t), self.now);
        } else {
            self.core.response(&m, &ctx_t(source, t), self.now);
        }
        self.core
            .take_sends()
            .into_iter()
            .map(|(d, b)| (d.addr, String::from_utf8(b).expect("utf8")))
            .collect()
    }

    fn refused(&self, reason: &str) -> u64 {
        self.core
            .metrics
            .dialog_refused
            .with_label_values(&[reason])
            .get()
    }
}

fn options(ruri: &str, branch: &str, extra: &str) -> String {
    format!(
        "OPTIONS {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 10.9.9.9:5060;branch={branch}\r\nMax-Forwards: 70\r\n{extra}From: <sip:mon@carrier.net>;tag=m\r\nTo: <{ruri}>\r\nCall-ID: {branch}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    )
}

fn first_line(sent: &[(SocketAddr, String)]) -> Vec<&str> {
    sent.iter()
        .map(|(_, m)| m.lines().next().unwrap_or(""))
        .collect()
}

/// Issue 9 item 3: with no `[sip] domains`, an OPTIONS ping to the edge's own address (with
/// or without our port) is answered 200 by the edge, from an outsider and from an
/// allow-listed peer alike; before, the outsider got 403 and the peer's ping was forwarded
/// to the edge itself until Max-Forwards ran out.
#[test]
fn options_to_our_own_address_is_ours() {
    let mut e = Edge::new("");
    for (i, ruri) in [
        format!("sip:{EDGE}"),
        format!("sip:{EDGE}:5060"),
        format!("sip:[::ffff:{EDGE}]"),
        "sip:0.0.0.0:5060".to_string(),
    ]
    .iter()
    .enumerate()
    {
        for src in ["198.51.100.9:5060", "10.1.1.1:5060"] {
            let sent = e.feed(
                &options(ruri, &format!("z9hG4bKp{i}{}", &src[..2]), ""),
                src,
            );
            assert_eq!(
                first_line(&sent),
                vec!["SIP/2.0 200 OK"],
                "{ruri} from {src}"
            );
            assert_eq!(sent[0].0, src.parse().unwrap());
        }
    }
    // Not our port: not us (forwarded for the trusted peer, refused for an outsider).
    let sent = e.feed(
        &options(&format!("sip:{EDGE}:5070"), "z9hG4bKnp", ""),
        "198.51.100.9:5060",
    );
    assert_eq!(first_line(&sent), vec!["SIP/2.0 403 Relaying Forbidden"]);
    // INVITE to a user at our address: answered here, never relayed to ourselves.
    let inv = options(&format!("sip:bob@{EDGE}"), "z9hG4bKinv", "").replace("OPTIONS", "INVITE");
    let sent = e.feed(&inv, "10.1.1.1:5060");
    assert!(
        sent.iter()
            .all(|(a, m)| a.ip() != EDGE.parse::<std::net::IpAddr>().unwrap()
                && m.starts_with("SIP/2.0")),
        "{sent:?}"
    );
    assert!(
        first_line(&sent)
            .iter()
            .any(|l| l.starts_with("SIP/2.0 404")),
        "{sent:?}"
    );
}

/// Issue 9 item 3: never a hop to ourselves, whatever names it: here an outbound proxy
/// configured as one of our own addresses (a Route or Request-URI naming us is ours and is
/// answered or popped, above).
#[test]
fn no_hop_to_ourselves() {
    let mut e = Edge::new(&format!("[proxy]\noutbound = \"[::ffff:{EDGE}]:5060\""));
    let req = options("sip:x@carrier.net", "z9hG4bKself", "");
    let sent = e.feed(&req, "10.1.1.1:5060");
    assert_eq!(first_line(&sent), vec!["SIP/2.0 482 Loop Detected"]);
    assert_eq!(e.refused("own_address"), 1);
}

/// RFC 3261 16.3 step 4: the same request coming back through us is answered 482; one
/// whose Request-URI changed since (a spiral) is forwarded.
#[test]
fn loop_detected_spiral_forwarded() {
    let mut e = Edge::new("");
    let sent = e.feed(
        &options("sip:x@10.2.2.2", "z9hG4bKorig", ""),
        "10.1.1.1:5060",
    );
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, "10.2.2.2:5060".parse().unwrap());
    let out = sent[0].1.clone();
    // The next hop sends it back to us, adding its own Via on top.
    let back = out.replacen(
        "Via: ",
        "Via: SIP/2.0/UDP 10.2.2.2:5060;branch=z9hG4bKnext\r\nVia: ",
        1,
    );
    let sent = e.feed(&back, "10.2.2.2:5060");
    assert_eq!(first_line(&sent), vec!["SIP/2.0 482 Loop Detected"]);
    assert_eq!(e.refused("loop"), 1);
    // A spiral: the next hop changed the Request-URI.
    let spiral = back
        .replace("OPTIONS sip:x@10.2.2.2", "OPTIONS sip:y@10.3.3.3")
        .replace("z9hG4bKnext", "z9hG4bKnext2");
    let sent = e.feed(&spiral, "10.2.2.2:5060");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].1.starts_with("OPTIONS sip:y@10.3.3.3"), "{sent:?}");
}
