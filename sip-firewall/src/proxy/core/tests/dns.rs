//! RFC 3263 routing on the fake clock: a request to a domain waits for the resolution (the
//! test plays the resolver), is forwarded to the first target, and fails over to the next on
//! a 503, a Timer B timeout and a transport error; names that resolve to nothing are
//! answered, never left hanging.

use super::*;
use crate::proxy::dns::DnsError;

/// Beside [`loopback`]'s: 10.0.0.0/8 is a trusted peer (may relay to foreign domains); no
/// outbound proxy.
const CONFIG: &str = r#"
[dns]
timeout = "3s"
"#;
const PEER: &str = "10.0.0.9:5060";

fn udp(a: &str) -> Destination {
    Destination {
        addr: a.parse().expect("addr"),
        transport: Transport::Datagram,
    }
}

fn harness() -> Loopback {
    Loopback::with_config(&loopback(CONFIG))
}

impl Loopback {
    /// The one name the core asks for: its transaction and the URI.
    fn asked(&mut self) -> (ServerKey, String) {
        let mut q = self.core.take_resolutions();
        assert_eq!(q.len(), 1, "{q:?}");
        q.remove(0)
    }

    /// The peer's INVITE with branch `branch`: the transaction whose Request-URI the core
    /// then asks the resolver for.
    fn invite_asks(&mut self, branch: &str) -> ServerKey {
        self.feed_sent(&invite(branch), PEER);
        self.asked().0
    }

    fn resolved(
        &mut self,
        key: &ServerKey,
        r: Result<Vec<Destination>, DnsError>,
    ) -> Vec<(SocketAddr, String)> {
        self.core.resolved(key, r, self.now);
        self.sent()
    }
}

fn invite(branch: &str) -> String {
    format!(
        "INVITE sip:dave@carrier.example SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5060;branch={branch}\r\nMax-Forwards: 70\r\nFrom: <sip:trunk@pbx.example>;tag=t\r\nTo: <sip:dave@carrier.example>\r\nCall-ID: dns-{branch}\r\nCSeq: 1 INVITE\r\nContact: <sip:trunk@10.0.0.9>\r\nContent-Length: 0\r\n\r\n"
    )
}

fn response(req: &str, code: u16) -> String {
    let lines = response_lines(req, "uas");
    format!("SIP/2.0 {code} Whatever\r\n{lines}Content-Length: 0\r\n\r\n")
}

#[test]
fn a_domain_is_resolved_then_503_and_timeout_fail_over_to_the_next_target() {
    let mut h = harness();
    let sent = h.feed_sent(&invite("z9hG4bKd1"), PEER);
    // The caller hears 100 at once; nothing leaves before the name is resolved.
    assert_eq!(to(&sent, PEER, "SIP/2.0 100").len(), 1, "{sent:?}");
    assert!(
        !sent.iter().any(|(_, m)| m.starts_with("INVITE")),
        "{sent:?}"
    );
    let (key, name) = h.asked();
    assert_eq!(name, "sip:dave@carrier.example");
    // A retransmission while DNS works is absorbed: no second resolution.
    h.feed_sent(&invite("z9hG4bKd1"), PEER);
    assert!(h.core.take_resolutions().is_empty());

    let (a, b, c) = ("203.0.113.1:5060", "203.0.113.2:5060", "203.0.113.3:5060");
    let sent = h.resolved(&key, Ok(vec![udp(a), udp(b), udp(c)]));
    let first = to(&sent, a, "INVITE");
    assert_eq!(first.len(), 1, "the first target only: {sent:?}");
    assert!(to(&sent, b, "INVITE").is_empty());

    // 503 from the first: ACKed, and the request goes to the second (RFC 3263 4.3).
    let sent = h.feed_sent(&response(&first[0], 503), a);
    assert_eq!(to(&sent, a, "ACK").len(), 1, "{sent:?}");
    let second = to(&sent, b, "INVITE");
    assert_eq!(second.len(), 1, "{sent:?}");
    assert!(
        !sent.iter().any(|(d, _)| *d == PEER.parse().unwrap()),
        "{sent:?}"
    );
    // A new Via branch for the new client transaction.
    let via = |m: &str| {
        m.split("\r\n")
            .find(|l| l.starts_with("Via:"))
            .map(str::to_string)
    };
    assert_ne!(via(&first[0]), via(&second[0]));

    // The second never answers: at Timer B the third gets it.
    let sent = h.advance(Duration::from_secs(33));
    // (with its Timer A retransmissions, if the clock ran past them)
    let third = to(&sent, c, "INVITE");
    assert!(!third.is_empty(), "{sent:?}");
    assert!(to(&sent, PEER, "SIP/2.0 408").is_empty(), "{sent:?}");

    // The third answers: relayed to the caller.
    let sent = h.feed_sent(&response(&third[0], 200), c);
    assert_eq!(to(&sent, PEER, "SIP/2.0 200").len(), 1, "{sent:?}");
}

#[test]
fn the_last_target_failing_ends_the_request_as_before() {
    let mut h = harness();
    let key = h.invite_asks("z9hG4bKd2");
    let (a, b) = ("203.0.113.1:5060", "203.0.113.2:5060");
    let sent = h.resolved(&key, Ok(vec![udp(a), udp(b)]));
    let first = to(&sent, a, "INVITE");
    let sent = h.feed_sent(&response(&first[0], 503), a);
    let second = to(&sent, b, "INVITE");
    let sent = h.feed_sent(&response(&second[0], 503), b);
    // No target left: the 503 goes up as 500 (RFC 3261 16.7 step 6).
    assert_eq!(to(&sent, PEER, "SIP/2.0 500").len(), 1, "{sent:?}");
    // A late answer of the first target is no longer the branch's.
    let sent = h.feed_sent(&response(&first[0], 200), a);
    assert!(to(&sent, PEER, "SIP/2.0 200").is_empty(), "{sent:?}");
}

#[test]
fn a_transport_error_fails_over_at_once() {
    let mut h = harness();
    let key = h.invite_asks("z9hG4bKd3");
    let (a, b) = ("203.0.113.1:5060", "203.0.113.2:5060");
    h.resolved(&key, Ok(vec![udp(a), udp(b)]));
    h.core.unreachable(udp(a), h.now);
    let sent = h.sent();
    assert_eq!(to(&sent, b, "INVITE").len(), 1, "{sent:?}");
    // The failed transaction is gone: only the new one is a client transaction.
    assert_eq!(h.core.active().1, 1);
}

#[test]
fn names_that_resolve_to_nothing_are_answered_never_left_hanging() {
    let mut h = harness();
    let key = h.invite_asks("z9hG4bKd4");
    let sent = h.resolved(&key, Err(DnsError::NotFound));
    assert_eq!(to(&sent, PEER, "SIP/2.0 404").len(), 1, "{sent:?}");

    let key = h.invite_asks("z9hG4bKd5");
    let sent = h.resolved(&key, Err(DnsError::Failed("servfail".into())));
    assert_eq!(to(&sent, PEER, "SIP/2.0 503").len(), 1, "{sent:?}");

    // No answer from the resolver at all: 503 at `[dns] timeout` + 2 s, from the core.
    let key = h.invite_asks("z9hG4bKd6");
    let sent = h.advance(Duration::from_secs(6));
    assert_eq!(to(&sent, PEER, "SIP/2.0 503").len(), 1, "{sent:?}");
    // The resolution coming later changes nothing.
    let sent = h.resolved(&key, Ok(vec![udp("203.0.113.1:5060")]));
    assert!(sent.is_empty(), "{sent:?}");

    // DNS naming our own host's services: refused like any internal next hop.
    let key = h.invite_asks("z9hG4bKd7");
    let sent = h.resolved(&key, Ok(vec![udp("127.0.0.1:5080")]));
    assert_eq!(to(&sent, PEER, "SIP/2.0 403").len(), 1, "{sent:?}");
}

#[test]
fn cancel_while_resolving_ends_the_invite_with_487() {
    let mut h = harness();
    let key = h.invite_asks("z9hG4bKd8");
    let cancel = "CANCEL sip:dave@carrier.example SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKd8\r\nMax-Forwards: 70\r\nFrom: <sip:trunk@pbx.example>;tag=t\r\nTo: <sip:dave@carrier.example>\r\nCall-ID: dns-z9hG4bKd8\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n";
    let sent = h.feed_sent(cancel, PEER);
    assert_eq!(to(&sent, PEER, "SIP/2.0 200").len(), 1, "{sent:?}");
    assert_eq!(to(&sent, PEER, "SIP/2.0 487").len(), 1, "{sent:?}");
    let sent = h.resolved(&key, Ok(vec![udp("203.0.113.1:5060")]));
    assert!(
        !sent.iter().any(|(_, m)| m.starts_with("INVITE")),
        "{sent:?}"
    );
}

#[test]
fn a_route_naming_a_domain_is_resolved_too() {
    let mut h = harness();
    let req = invite("z9hG4bKd9").replace(
        "Max-Forwards: 70\r\n",
        "Max-Forwards: 70\r\nRoute: <sip:edge.carrier.example;lr>\r\n",
    );
    h.feed_sent(&req, PEER);
    let (key, name) = h.asked();
    assert_eq!(name, "sip:edge.carrier.example;lr");
    let sent = h.resolved(&key, Ok(vec![udp("203.0.113.7:5060")]));
    assert_eq!(to(&sent, "203.0.113.7:5060", "INVITE").len(), 1, "{sent:?}");
}

#[test]
fn an_outbound_proxy_named_by_domain_is_resolved_with_failover() {
    let text = CONFIG.replace(
        "[dns]",
        "[proxy]\noutbound = \"trunk.carrier.example\"\n[dns]",
    );
    let mut h = Loopback::with_config(&loopback(&text));
    // An IP Request-URI of a foreign host still goes through the outbound proxy.
    let req =
        invite("z9hG4bKd10").replace("sip:dave@carrier.example SIP", "sip:dave@198.51.100.1 SIP");
    h.feed_sent(&req, PEER);
    let (key, name) = h.asked();
    assert_eq!(name, "sip:trunk.carrier.example");
    let (a, b) = ("203.0.113.1:5060", "203.0.113.2:5060");
    let sent = h.resolved(&key, Ok(vec![udp(a), udp(b)]));
    let first = to(&sent, a, "INVITE");
    assert_eq!(first.len(), 1, "{sent:?}");
    let sent = h.feed_sent(&response(&first[0], 503), a);
    assert_eq!(to(&sent, b, "INVITE").len(), 1, "{sent:?}");
    // Not a name, not an address: refused with the key named.
    let bad = CONFIG.replace("[dns]", "[proxy]\noutbound = \"sip:\"\n[dns]");
    let e =
        Config::from_toml(&loopback(&bad), std::path::Path::new("t.toml")).expect_err("refused");
    assert!(e.to_string().contains("outbound"), "{e}");
}
