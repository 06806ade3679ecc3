//! The dialog stamp of our Record-Route at the edge, on a fake clock: its lifetime, the
//! secrets it opens under, the work a Route set of made-up stamps costs, and that the
//! parties a stamp names pass the same next-hop check as any other target.

use super::*;

/// The edge's address (its only one), and the secrets of these tests.
const EDGE: &str = "192.0.2.10";
const SECRET_A: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const SECRET_B: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
/// The caller (an outsider) and the callee of the dialogs here.
const CALLER: &str = "203.0.113.5:5060";
const CALLEE: &str = "198.51.100.7:5080";

struct Edge {
    core: Core,
    now: Instant,
}

impl Edge {
    /// An edge on `EDGE:5060` with `[auth]` and `[proxy]` lines of its own.
    fn new(auth: &str, proxy: &str) -> Edge {
        let text = format!(
            "[sip]\nlisten = [\"{EDGE}:5060\"]\n[proxy]\n{proxy}\n[policy]\nallow = [\"10.0.0.0/8\"]\n[auth]\n{auth}\n"
        );
        let now = Instant::now();
        Edge {
            core: super::core(&text, now),
            now,
        }
    }

    fn with_secret(secret: &str) -> Edge {
        Edge::new(&format!("secret = \"{secret}\""), "")
    }

    fn feed(&mut self, text: &str, source: &str) -> Vec<(SocketAddr, String)> {
        let ctx = super::ctx_on(source, &format!("{EDGE}:5060"), Transport::Datagram);
        super::feed(&mut self.core, self.now, text, &ctx).1
    }

    /// [`Edge::feed`] for a message as large as a datagram (`[sip] max_message_bytes`
    /// raised to 65535).
    fn feed_large(&mut self, text: &str, source: &str) -> Vec<(SocketAddr, String)> {
        use sip_firewall_sip::{Limits, parse::parse};
        let ctx = super::ctx_on(source, &format!("{EDGE}:5060"), Transport::Datagram);
        let limits = Limits {
            max_message_bytes: 65_535,
            ..Limits::default()
        };
        let m = parse(text.as_bytes(), &limits, ctx.transport).expect("parse");
        self.core.request(&m, &ctx, self.now);
        super::sent(&mut self.core)
    }

    /// Our stamp of dialog `call_id` (From-tag `c`), sealed now.
    fn stamp(&self, call_id: &str, caller: &str, callee: &str) -> String {
        let d = |a: &str| Destination {
            addr: a.parse().expect("addr"),
            transport: Transport::Datagram,
        };
        let now = self.core.unix_secs(self.now);
        self.core
            .keys
            .stamp
            .seal(now, call_id, "c", d(caller), d(callee))
    }

    /// The caller's BYE of `call` (branch `branch`) along a stamp naming the callee `to`:
    /// the edge sends one message, and to `to`.
    fn bye_goes_to(&mut self, call: &str, branch: &str, to: &str) {
        let route = our_route(&self.stamp(call, CALLER, to));
        let sent = self.feed(&bye(call, branch, &[route]), CALLER);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].0, to.parse().unwrap());
    }

    fn refused(&self, reason: &str) -> u64 {
        super::refused(&self.core, reason)
    }

    fn previous_key(&self) -> u64 {
        self.core
            .metrics
            .auth_previous_key
            .with_label_values(&["stamp"])
            .get()
    }
}

/// A BYE of dialog `call_id` from the caller (From-tag `c`) along `routes`.
fn bye(call_id: &str, branch: &str, routes: &[String]) -> String {
    // As many entries to a Route line as `[sip] max_header_bytes` (2048) takes.
    let route: String = routes
        .chunks(13)
        .map(|c| format!("Route: {}\r\n", c.join(", ")))
        .collect();
    format!(
        "BYE sip:bob@{CALLEE} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch={branch}\r\nMax-Forwards: 70\r\n{route}From: <sip:carol@other.org>;tag=c\r\nTo: <sip:bob@example.com>;tag=b\r\nCall-ID: {call_id}\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    )
}

fn our_route(stamp: &str) -> String {
    format!("<sip:{EDGE};lr;sfw={stamp}>")
}

fn first_lines(sent: &[(SocketAddr, String)]) -> Vec<(SocketAddr, &str)> {
    sent.iter()
        .map(|(a, m)| (*a, m.lines().next().unwrap_or("")))
        .collect()
}

/// A stamp older than `[proxy] stamp_lifetime` is refused like a bad one (404), counted
/// `stamp_expired`; until then it relays.
#[test]
fn stamps_expire_after_their_lifetime() {
    let mut e = Edge::new(
        &format!("secret = \"{SECRET_A}\""),
        "stamp_lifetime = \"10m\"",
    );
    let route = our_route(&e.stamp("exp", CALLER, CALLEE));
    e.now += Duration::from_secs(9 * 60);
    let sent = e.feed(
        &bye("exp", "z9hG4bKexp1", std::slice::from_ref(&route)),
        CALLER,
    );
    assert_eq!(
        first_lines(&sent),
        vec![(
            CALLEE.parse().unwrap(),
            "BYE sip:bob@198.51.100.7:5080 SIP/2.0"
        )]
    );
    e.now += Duration::from_secs(2 * 60);
    let sent = e.feed(&bye("exp", "z9hG4bKexp2", &[route]), CALLER);
    assert_eq!(
        first_lines(&sent),
        vec![(CALLER.parse().unwrap(), "SIP/2.0 404 Not Here")]
    );
    assert_eq!(e.refused("stamp_expired"), 1);
    assert_eq!(e.refused("bad_stamp"), 0);
}

/// Without `stamp_lifetime`, a stamp lasts an hour longer than `[fraud] max_call_duration`
/// (4 h by default): the longest call keeps its in-dialog requests.
#[test]
fn stamps_outlast_the_longest_call_by_default() {
    let mut e = Edge::with_secret(SECRET_A);
    let route = our_route(&e.stamp("long", CALLER, CALLEE));
    e.now += Duration::from_secs(5 * 3600 - 60);
    let sent = e.feed(
        &bye("long", "z9hG4bKlong1", std::slice::from_ref(&route)),
        CALLER,
    );
    assert_eq!(sent[0].0, CALLEE.parse().unwrap(), "{sent:?}");
    e.now += Duration::from_secs(120);
    let sent = e.feed(&bye("long", "z9hG4bKlong2", &[route]), CALLER);
    assert!(sent[0].1.starts_with("SIP/2.0 404"), "{sent:?}");
    assert_eq!(e.refused("stamp_expired"), 1);
}

/// A stamp sealed under a secret that is now in `previous_secrets` still relays, counted
/// in `sipfw_auth_previous_key_total{what="stamp"}`; once that secret is dropped, 404.
#[test]
fn stamps_of_a_previous_secret_relay_until_it_is_dropped() {
    let a = Edge::with_secret(SECRET_A);
    let route = our_route(&a.stamp("roll", CALLER, CALLEE));
    let mut rolled = Edge::new(
        &format!("secret = \"{SECRET_B}\"\nprevious_secrets = [\"{SECRET_A}\"]"),
        "",
    );
    let sent = rolled.feed(
        &bye("roll", "z9hG4bKroll1", std::slice::from_ref(&route)),
        CALLER,
    );
    assert_eq!(sent[0].0, CALLEE.parse().unwrap(), "{sent:?}");
    assert_eq!(rolled.previous_key(), 1);
    // New stamps are the current secret's: not counted.
    let new = our_route(&rolled.stamp("roll2", CALLER, CALLEE));
    let sent = rolled.feed(&bye("roll2", "z9hG4bKroll2", &[new]), CALLER);
    assert_eq!(sent[0].0, CALLEE.parse().unwrap(), "{sent:?}");
    assert_eq!(rolled.previous_key(), 1);
    let mut dropped = Edge::with_secret(SECRET_B);
    let sent = dropped.feed(&bye("roll", "z9hG4bKroll3", &[route]), CALLER);
    assert!(sent[0].1.starts_with("SIP/2.0 404"), "{sent:?}");
    assert_eq!(dropped.refused("bad_stamp"), 1);
    assert_eq!(dropped.previous_key(), 0);
}

/// A made-up stamp that reaches the cipher: our key id (public, in every stamp we hand
/// out) and random-looking bytes of the right length.
fn made_up(e: &Edge, n: usize) -> String {
    let id = &e.stamp("x", CALLER, CALLEE)[..2];
    format!("{id}{:0116x}", n)
}

/// A BYE whose Route names us 120 times, each with a made-up stamp: refused with 483 before
/// any stamp is opened (on main each entry's stamp was tried under every key). Within the
/// bound, one stamp is opened (the topmost), however many entries carry one.
#[test]
fn a_route_set_of_made_up_stamps_costs_one_open_at_most() {
    let mut e = Edge::with_secret(SECRET_A);
    let many: Vec<String> = (0..120).map(|n| our_route(&made_up(&e, n))).collect();
    route::counters::take();
    let sent = e.feed_large(&bye("dos", "z9hG4bKdos1", &many), CALLER);
    let (opened, decrypted) = route::counters::take();
    assert_eq!(
        first_lines(&sent),
        vec![(CALLER.parse().unwrap(), "SIP/2.0 483 Too Many Hops")]
    );
    assert_eq!((opened, decrypted), (0, 0), "no stamp opened");
    assert_eq!(e.refused("too_many_routes"), 1);
    assert_eq!(e.refused("bad_stamp"), 0);

    let four = &many[..route::MAX_OUR_ROUTES];
    let sent = e.feed(&bye("dos", "z9hG4bKdos2", four), CALLER);
    let (opened, decrypted) = route::counters::take();
    assert_eq!(
        first_lines(&sent),
        vec![(CALLER.parse().unwrap(), "SIP/2.0 404 Not Here")]
    );
    assert_eq!(opened, 1, "the topmost stamp only");
    assert!(decrypted <= 2, "{decrypted}: one per distinct dialog tag");

    // A 2xx ACK with the same Route set: dropped, no stamp opened.
    let ack = bye("dos", "z9hG4bKdos3", &many).replace("BYE", "ACK");
    let ack = ack.replace("CSeq: 2 ACK", "CSeq: 1 ACK");
    assert!(e.feed_large(&ack, CALLER).is_empty());
    assert_eq!(route::counters::take(), (0, 0));
    assert_eq!(e.refused("too_many_routes"), 2);
}

/// A spiral through a hop that does not record-route leaves our entries adjacent: the
/// topmost is the pass the request is on, and relays.
#[test]
fn the_topmost_of_our_adjacent_entries_is_the_one_opened() {
    let mut e = Edge::with_secret(SECRET_A);
    let pbx = "198.51.100.9:5060";
    let first = our_route(&e.stamp("spiral", CALLER, pbx));
    let second = our_route(&e.stamp("spiral", pbx, CALLEE));
    let sent = e.feed(&bye("spiral", "z9hG4bKsp1", &[first, second]), CALLER);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, pbx.parse().unwrap());
    assert!(!sent[0].1.contains("Route:"), "{}", sent[0].1);
}

/// A stamp forged with the edge's own key (a leaked or guessed secret), naming a callee on
/// loopback, link-local or our own address: refused like such a Request-URI (403, counted
/// `internal_hop`), nothing sent there; relayed only when `[proxy] internal_next_hops`
/// lists it.
#[test]
fn a_stamp_toward_an_internal_address_is_refused_unless_listed() {
    let mut e = Edge::with_secret(SECRET_A);
    for (i, inside) in [
        "127.0.0.1:8080",
        "169.254.169.254:80",
        "[fe80::1]:5060",
        "192.0.2.10:5070",
    ]
    .iter()
    .enumerate()
    {
        let call = format!("inside{i}");
        let route = our_route(&e.stamp(&call, CALLER, inside));
        let sent = e.feed(&bye(&call, &format!("z9hG4bKin{i}"), &[route]), CALLER);
        assert_eq!(
            first_lines(&sent),
            vec![(CALLER.parse().unwrap(), "SIP/2.0 403 Forbidden Next Hop")],
            "{inside}"
        );
    }
    assert_eq!(e.refused("internal_hop"), 4);
    // The other direction: a forged caller on loopback, the request from the callee.
    let route = our_route(&e.stamp("back", "127.0.0.1:8080", CALLEE));
    let from_callee = bye("back", "z9hG4bKback", &[route])
        .replace(&format!("UDP {CALLER}"), &format!("UDP {CALLEE}"))
        .replace("tag=c", "tag=x")
        .replace("tag=b", "tag=c");
    let sent = e.feed(&from_callee, CALLEE);
    assert_eq!(
        first_lines(&sent),
        vec![(CALLEE.parse().unwrap(), "SIP/2.0 403 Forbidden Next Hop")]
    );

    let mut e = Edge::new(
        &format!("secret = \"{SECRET_A}\""),
        "internal_next_hops = [\"127.0.0.0/8\"]",
    );
    e.bye_goes_to("listed", "z9hG4bKlisted", "127.0.0.1:8080");
}

/// What the edge sends to by configuration, and what this host sends, are no forgery: a
/// stamp naming `[proxy] outbound` relays toward it, and an in-dialog request from this very
/// host relays toward an internal party (a lab of phones on loopback).
#[test]
fn the_outbound_proxy_and_requests_from_this_host_pass() {
    let mut e = Edge::new(
        &format!("secret = \"{SECRET_A}\""),
        "outbound = \"127.0.0.1:5080\"",
    );
    e.bye_goes_to("out", "z9hG4bKout1", "127.0.0.1:5080");
    // Another port of the same address is no outbound proxy.
    let route = our_route(&e.stamp("out2", CALLER, "127.0.0.1:8080"));
    let sent = e.feed(&bye("out2", "z9hG4bKout2", &[route]), CALLER);
    assert!(sent[0].1.starts_with("SIP/2.0 403"), "{sent:?}");

    let mut e = Edge::with_secret(SECRET_A);
    for (i, caller) in ["127.0.0.1:5070", "192.0.2.10:5070"].iter().enumerate() {
        let call = format!("lab{i}");
        let route = our_route(&e.stamp(&call, caller, "127.0.0.1:5090"));
        let from_host = bye(&call, &format!("z9hG4bKlab{i}"), &[route])
            .replace(&format!("UDP {CALLER}"), &format!("UDP {caller}"));
        let sent = e.feed(&from_host, caller);
        assert_eq!(sent.len(), 1, "{caller}: {sent:?}");
        assert_eq!(sent[0].0, "127.0.0.1:5090".parse().unwrap());
    }
    assert_eq!(e.refused("internal_hop"), 0);
}
