//! The proxy core on a fake clock, at the edge of its trust: its own addresses, loops,
//! dialog-bound routing, branches and the sources of responses, identity headers,
//! enumeration, and registrations that follow the client.

use super::*;

/// An edge on a wildcard address whose host has 192.0.2.10; 10.0.0.0/8 is allow-listed.
const EDGE: &str = "192.0.2.10";

struct Edge {
    core: Core,
    now: Instant,
}

fn ctx_t(source: &str, transport: Transport) -> Context {
    super::ctx_on(source, &format!("{EDGE}:5060"), transport)
}

impl Edge {
    fn new(extra: &str) -> Edge {
        let text = format!(
            "[sip]\nlisten = [\"0.0.0.0:5060\"]\n{extra}\n[policy]\nallow = [\"10.0.0.0/8\"]\n"
        );
        let now = Instant::now();
        let mut core = super::core(&text, now);
        core.local.set_addrs(vec![EDGE.parse().expect("ip")]);
        Edge { core, now }
    }

    fn feed(&mut self, text: &str, source: &str) -> Vec<(SocketAddr, String)> {
        self.feed_t(text, source, Transport::Datagram)
    }

    fn feed_t(&mut self, text: &str, source: &str, t: Transport) -> Vec<(SocketAddr, String)> {
        super::feed(&mut self.core, self.now, text, &ctx_t(source, t)).1
    }

    fn refused(&self, reason: &str) -> u64 {
        super::refused(&self.core, reason)
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

/// With no `[sip] domains`, an OPTIONS ping to the edge's own address (with
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
            .any(|l| l.starts_with("SIP/2.0 480")),
        "{sent:?}"
    );
}

/// Never a hop to ourselves, whatever names it: here an outbound proxy
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

/// A request carrying many Vias that look like ours (our branch prefix, made-up loop tags)
/// costs at most `MAX_OUR_VIAS` keyed hashes, and past that many passes it is a loop; a
/// request that spiralled through us fewer times is judged on its tags and forwarded.
#[test]
fn forged_vias_of_ours_cost_a_bounded_number_of_loop_tags() {
    use super::super::loops::{LOOP_TAGS_COMPUTED, MAX_OUR_VIAS};
    let forged = |n: usize| -> String {
        (0..n)
            .map(|i| {
                format!(
                    "Via: SIP/2.0/UDP 10.8.8.{i}:5060;branch={BRANCH_PREFIX}{i:024x}.{i:016x}\r\n"
                )
            })
            .collect()
    };
    let mut e = Edge::new("");
    LOOP_TAGS_COMPUTED.with(|c| c.set(0));
    let req = options("sip:x@10.2.2.2", "z9hG4bKmany", "").replacen(
        "Max-Forwards",
        &format!("{}Max-Forwards", forged(60)),
        1,
    );
    let sent = e.feed(&req, "10.1.1.1:5060");
    assert_eq!(first_line(&sent), vec!["SIP/2.0 482 Loop Detected"]);
    let computed = LOOP_TAGS_COMPUTED.with(|c| c.get());
    assert!(
        computed <= MAX_OUR_VIAS,
        "{computed} loop tags for one request"
    );

    let req = options("sip:x@10.2.2.2", "z9hG4bKfew", "").replacen(
        "Max-Forwards",
        &format!("{}Max-Forwards", forged(MAX_OUR_VIAS - 1)),
        1,
    );
    let sent = e.feed(&req, "10.1.1.1:5060");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(sent[0].1.starts_with("OPTIONS sip:x@10.2.2.2"), "{sent:?}");
}

/// The embedded defaults plus our domain, bob registered from 10.0.0.21:5070 (allow-listed:
/// no digest needed).
fn edge_with_bob(extra: &str) -> Edge {
    let mut e = Edge::new(extra);
    e.core.local.domains = vec!["example.com".into()];
    let reg = "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.21:5070;branch=z9hG4bKreg\r\nFrom: <sip:bob@example.com>;tag=r\r\nTo: <sip:bob@example.com>\r\nCall-ID: reg\r\nCSeq: 1 REGISTER\r\nContact: <sip:bob@10.0.0.21:5070>\r\nContent-Length: 0\r\n\r\n";
    let sent = e.feed(reg, "10.0.0.21:5070");
    assert!(sent[0].1.starts_with("SIP/2.0 200"), "{sent:?}");
    e
}

const CALLER: &str = "198.51.100.7:5060";

fn call_invite(call_id: &str) -> String {
    format!(
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK{call_id}\r\nMax-Forwards: 70\r\nFrom: <sip:eve@evil.example>;tag=ev\r\nTo: <sip:bob@example.com>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:eve@{CALLER}>\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The Record-Route our forwarded INVITE carries.
fn record_route(sent: &[(SocketAddr, String)]) -> String {
    let inv = sent_starting(sent, "INVITE");
    inv.lines()
        .find_map(|l| l.strip_prefix("Record-Route: "))
        .expect("record-routed")
        .to_string()
}

fn in_dialog(
    method: &str,
    ruri: &str,
    route: &str,
    from: &str,
    to: &str,
    call_id: &str,
    branch: &str,
) -> String {
    format!(
        "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.1:5060;branch={branch}\r\nMax-Forwards: 70\r\nRoute: {route}\r\nFrom: {from}\r\nTo: {to}\r\nCall-ID: {call_id}\r\nCSeq: 2 {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The Record-Route stamp binds the dialog (Call-ID, From-tag, both parties). An
/// in-dialog request is relayed only from one party to the other: a stamp replayed from a
/// third address is refused (403, counted), and a party naming a third address as next hop
/// reaches only the other party. Before, the stamp was an HMAC of the Call-ID alone and
/// relayed anything, from anywhere, to wherever the Request-URI said.
#[test]
fn dialog_stamp_binds_the_parties() {
    let mut e = edge_with_bob("");
    let sent = e.feed(&call_invite("d1"), CALLER);
    let rr = record_route(&sent);
    assert!(
        !rr.contains("198.51.100.7") && !rr.contains("10.0.0.21"),
        "{rr}"
    );
    let (eve, bob) = (
        "<sip:eve@evil.example>;tag=ev",
        "<sip:bob@example.com>;tag=bb",
    );
    let to_victim = |branch: &str| {
        let ruri = "sip:victim@203.0.113.50:5080";
        in_dialog("MESSAGE", ruri, &rr, eve, bob, "d1", branch)
    };

    // Replayed from a third address, toward an arbitrary host: refused, nothing relayed.
    let m = to_victim("z9hG4bKm1");
    let sent = e.feed(&m, "203.0.113.9:5060");
    assert_eq!(
        first_line(&sent),
        vec!["SIP/2.0 403 Not A Party Of This Dialog"]
    );
    assert_eq!(e.refused("not_a_party"), 1);

    // From the caller, toward a third address: it reaches the callee only.
    let m = to_victim("z9hG4bKm2");
    let sent = e.feed(&m, CALLER);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, "10.0.0.21:5070".parse().unwrap());

    // The callee's BYE (tags swapped) goes to the caller, where its responses went.
    let bye = in_dialog(
        "BYE",
        "sip:eve@198.51.100.7",
        &rr,
        bob,
        eve,
        "d1",
        "z9hG4bKb1",
    );
    let sent = e.feed(&bye, "10.0.0.21:5070");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, CALLER.parse().unwrap());
    assert!(sent[0].1.starts_with("BYE "));

    // The stamp of this dialog under another Call-ID, or with other tags: not ours (404).
    let m = in_dialog(
        "BYE",
        "sip:bob@10.0.0.21:5070",
        &rr,
        eve,
        bob,
        "d2",
        "z9hG4bKb2",
    );
    let sent = e.feed(&m, CALLER);
    assert_eq!(first_line(&sent), vec!["SIP/2.0 404 Not Here"]);
    let m = in_dialog(
        "BYE",
        "sip:bob@10.0.0.21:5070",
        &rr,
        "<sip:eve@evil.example>;tag=x",
        bob,
        "d1",
        "z9hG4bKb3",
    );
    let sent = e.feed(&m, CALLER);
    assert_eq!(first_line(&sent), vec!["SIP/2.0 404 Not Here"]);
    assert_eq!(e.refused("bad_stamp"), 2);
}

/// The core marks its own final answers among its sends (captures show them with the
/// request they answer); a request it forwards is not marked.
#[test]
fn own_answers_are_marked() {
    let mut e = edge_with_bob("");
    let mut feed = |text: &str| {
        let ctx = ctx_t(CALLER, Transport::Datagram);
        let m = parse(text.as_bytes(), &Limits::default(), ctx.transport).expect("parse");
        e.core.request(&m, &ctx, e.now);
        let (sends, answers) = e.core.take_sends_and_answers();
        let sent: Vec<(SocketAddr, String)> = sends
            .into_iter()
            .map(|(d, b)| (d.addr, String::from_utf8(b).expect("utf8")))
            .collect();
        let firsts: Vec<String> = first_line(&sent).into_iter().map(String::from).collect();
        let marked: Vec<String> = answers.iter().map(|i| firsts[*i].clone()).collect();
        (firsts, marked)
    };
    let (firsts, marked) = feed(&call_invite("m1"));
    assert_eq!(
        firsts,
        [
            "SIP/2.0 100 Trying",
            "INVITE sip:bob@10.0.0.21:5070 SIP/2.0"
        ]
    );
    assert_eq!(marked, ["SIP/2.0 100 Trying"]);
    let stranger = call_invite("m2").replace("sip:bob@example.com", "sip:nobody@example.com");
    let (firsts, marked) = feed(&stranger);
    assert_eq!(firsts, ["SIP/2.0 480 Temporarily Unavailable"]);
    assert_eq!(marked, firsts);
}

/// Two parties on one host (SIPp tests, a PBX with several phones): the exact source
/// decides the direction, else the request's own next hop.
#[test]
fn parties_sharing_an_address() {
    let d = |a: &str| Destination {
        addr: a.parse().unwrap(),
        transport: Transport::Datagram,
    };
    let (a, b) = (d("10.0.0.1:5080"), d("10.0.0.1:5070"));
    let other = |src: &str, text: Option<Destination>| {
        Core::other_party(src.parse().unwrap(), text, a, b, &[])
    };
    assert_eq!(other("10.0.0.1:5080", None), Ok(b));
    assert_eq!(other("10.0.0.1:5070", None), Ok(a));
    assert_eq!(other("10.0.0.1:6000", Some(a)), Ok(a));
    assert_eq!(other("10.0.0.1:6000", None), Err("ambiguous"));
    assert_eq!(other("10.0.0.2:5080", Some(a)), Err("not_a_party"));
    // A load-balanced trunk listed in reply_from_any: any of its addresses is that party.
    let trunk = d("192.0.2.10:5060");
    let lb: Vec<IpNet> = vec!["192.0.2.0/28".parse().unwrap()];
    let src = "192.0.2.11:5060".parse().unwrap();
    assert_eq!(Core::other_party(src, None, a, trunk, &lb), Ok(a));
    assert_eq!(
        Core::other_party(src, None, a, trunk, &[]),
        Err("not_a_party")
    );
    let outside = "192.0.2.20:5060".parse().unwrap();
    assert_eq!(
        Core::other_party(outside, None, a, trunk, &lb),
        Err("not_a_party")
    );
}

/// Loopback, link-local and our own addresses are never a next hop taken from a request's
/// text unless `[proxy] internal_next_hops` lists them.
#[test]
fn internal_next_hops_only_when_configured() {
    let mut e = Edge::new("");
    for (i, ruri) in [
        "sip:x@127.0.0.1:8080",
        "sip:x@169.254.169.254:80",
        "sip:x@[fe80::1]:5060",
    ]
    .iter()
    .enumerate()
    {
        let sent = e.feed(
            &options(ruri, &format!("z9hG4bKint{i}"), ""),
            "10.1.1.1:5060",
        );
        assert_eq!(
            first_line(&sent),
            vec!["SIP/2.0 403 Forbidden Next Hop"],
            "{ruri}"
        );
    }
    assert_eq!(e.refused("internal_hop"), 3);
    let mut e = Edge::new("[proxy]\ninternal_next_hops = [\"127.0.0.0/8\"]");
    let sent = e.feed(
        &options("sip:x@127.0.0.1:8080", "z9hG4bKint9", ""),
        "10.1.1.1:5060",
    );
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, "127.0.0.1:8080".parse().unwrap());
}

/// A response to the request `req` (as the proxy forwarded it), from its UAS.
fn response_to(req: &str, code: u16, to_tag: &str) -> String {
    let lines = response_lines(req, to_tag);
    format!("SIP/2.0 {code} Whatever\r\n{lines}Content-Length: 0\r\n\r\n")
}

/// The branch of the INVITE we forwarded.
fn our_branch(sent: &[(SocketAddr, String)]) -> String {
    let inv = sent_starting(sent, "INVITE");
    let i = inv.find("branch=z9hG4bKsfw").expect("our branch") + 7;
    inv[i..]
        .split([';', '\r'])
        .next()
        .expect("branch")
        .to_string()
}

/// Branches carry 96 random bits (from a counter, one call would tell a subscriber the
/// branches of the next ones), and a response naming an open
/// branch is taken only from where its request went: a spray of forged 603s, for the real
/// branch and for what a counter would have given, from another address fails no call.
#[test]
fn forged_finals_from_elsewhere_fail_no_call() {
    let mut e = edge_with_bob("");
    let first = our_branch(&e.feed(&call_invite("c1"), CALLER));
    let sent = e.feed(&call_invite("c2"), CALLER);
    let second = our_branch(&sent);
    let (r1, r2) = (
        first
            .trim_start_matches("z9hG4bKsfw")
            .split('.')
            .next()
            .unwrap_or(""),
        second
            .trim_start_matches("z9hG4bKsfw")
            .split('.')
            .next()
            .unwrap_or(""),
    );
    assert_eq!((r1.len(), r2.len()), (24, 24), "{first} {second}");
    let common = r1
        .chars()
        .zip(r2.chars())
        .take_while(|(a, b)| a == b)
        .count();
    assert!(common < 8, "no shared salt: {first} {second}");

    let inv = sent_starting(&sent, "INVITE").to_string();
    let forged = |branch: &str| response_to(&inv, 603, "forged").replace(&second, branch);
    let mut guesses = vec![second.clone()];
    for n in 1..=4 {
        guesses.push(format!("z9hG4bKsfw{r1}.{n:x}"));
    }
    for g in &guesses {
        let sent = e.feed(&forged(g), "203.0.113.66:5060");
        assert!(sent.is_empty(), "forged 603 relayed: {sent:?}");
    }
    assert_eq!(
        e.core.metrics.wrong_source.get(),
        1,
        "the real branch, wrong source"
    );
    // bob's own answer still completes the call.
    let sent = e.feed(&response_to(&inv, 200, "bb"), "10.0.0.21:5070");
    assert_eq!(first_line(&sent), vec!["SIP/2.0 200 Whatever"], "{sent:?}");

    // A peer allowed to answer from anywhere (a load-balanced trunk).
    let mut e = edge_with_bob("[proxy]\nreply_from_any = [\"10.0.0.0/8\"]");
    let sent = e.feed(&call_invite("c3"), CALLER);
    let inv = sent_starting(&sent, "INVITE");
    let sent = e.feed(&response_to(inv, 486, "bb"), "10.0.0.99:5060");
    assert!(
        first_line(&sent).contains(&"SIP/2.0 486 Whatever"),
        "{sent:?}"
    );
}

/// An unknown user and a known one who is not registered get the same answer
/// (main: 404 against 480), 480 by default or 404 when configured.
#[test]
fn no_user_enumeration() {
    for (extra, code) in [("", "480"), ("[proxy]\nunavailable = 404\n", "404")] {
        let mut e = Edge::new(&format!(
            "domains = [\"example.com\"]\n{extra}[auth]\nusers = [{{ user = \"alice\", domain = \"example.com\", password = \"pw\" }}]\n"
        ));
        for (i, user) in ["alice", "nobody"].iter().enumerate() {
            let inv = call_invite(&format!("enum{i}"))
                .replace("sip:bob@example.com", &format!("sip:{user}@example.com"));
            let sent = e.feed(&inv, CALLER);
            let finals: Vec<_> = first_line(&sent)
                .into_iter()
                .filter(|l| !l.starts_with("SIP/2.0 100"))
                .map(|l| l[8..11].to_string())
                .collect();
            assert_eq!(finals, vec![code.to_string()], "{user} with {extra:?}");
        }
    }
}

const IDENTITY: &str = "P-Asserted-Identity: <sip:ceo@example.com>\r\nP-Preferred-Identity: <sip:ceo@example.com>\r\nRemote-Party-ID: <sip:ceo@example.com>;party=calling\r\nDiversion: <sip:ceo@example.com>;reason=unconditional\r\n";

fn has_identity(m: &str) -> bool {
    let l = m.to_ascii_lowercase();
    [
        "p-asserted-identity:",
        "p-preferred-identity:",
        "remote-party-id:",
        "diversion:",
    ]
    .iter()
    .any(|h| l.contains(h))
}

/// RFC 3325: identity headers from outside the trust domain never reach the
/// phone (main: an outsider's P-Asserted-Identity did); an allow-listed peer's pass.
#[test]
fn outsiders_assert_no_identity() {
    let mut e = edge_with_bob("");
    let inv =
        call_invite("pai1").replace("Content-Length: 0", &format!("{IDENTITY}Content-Length: 0"));
    let sent = e.feed(&inv, CALLER);
    let to_bob = sent_starting(&sent, "INVITE");
    assert!(!has_identity(to_bob), "{to_bob}");
    // In-dialog, from the same outsider: removed too.
    let rr = record_route(&sent);
    let msg = in_dialog(
        "INFO",
        "sip:bob@10.0.0.21:5070",
        &rr,
        "<sip:eve@evil.example>;tag=ev",
        "<sip:bob@example.com>;tag=bb",
        "pai1",
        "z9hG4bKinfo",
    )
    .replace("Content-Length: 0", &format!("{IDENTITY}Content-Length: 0"));
    let sent = e.feed(&msg, CALLER);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(!has_identity(&sent[0].1), "{}", sent[0].1);
    // A trusted peer (trunk) asserts identities.
    let trunk = inv
        .replace(CALLER, "10.0.0.5:5060")
        .replace("Call-ID: pai1", "Call-ID: pai2")
        .replace("z9hG4bKpai1", "z9hG4bKpai2");
    let sent = e.feed(&trunk, "10.0.0.5:5060");
    let to_bob = sent_starting(&sent, "INVITE");
    assert!(
        to_bob.contains("P-Asserted-Identity: <sip:ceo@example.com>"),
        "{to_bob}"
    );
}

/// RFC 3325 9.1: for an authenticated subscriber the edge asserts the identity itself: the
/// preferred one when the user may assert it (`identities`), else the user's own URI; what
/// the subscriber put in P-Asserted-Identity is dropped. `Privacy: id` removes it toward
/// a next hop outside the trust domain.
#[test]
fn subscribers_assert_only_their_identities() {
    let mut e = Edge::new(
        "domains = [\"example.com\"]\n[proxy]\noutbound = \"10.0.0.5:5060\"\n[auth]\nusers = [{ user = \"bob\", domain = \"example.com\", password = \"pw\", identities = [\"tel:+15551234\"] }]\n",
    );
    let uri = "sip:dave@carrier.example";
    let call = |branch: &str, extra: &str| {
        format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\nFrom: <sip:bob@example.com>;tag=b\r\nTo: <{uri}>\r\nCall-ID: {branch}\r\nCSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        )
    };
    let mut n = 0;
    let mut out = |e: &mut Edge, extra: &str| -> String {
        n += 1;
        let sent = e.feed(&call(&format!("z9hG4bKs{n}a"), ""), "192.0.2.1:5060");
        let chal = sent_starting(&sent, "SIP/2.0 407");
        let nonce = nonce_of(chal);
        let cred = credentials("Proxy-Authorization", &nonce, "00000001", "INVITE", uri) + extra;
        let sent = e.feed(&call(&format!("z9hG4bKs{n}b"), &cred), "192.0.2.1:5060");
        sent.into_iter()
            .find(|(_, m)| m.starts_with("INVITE"))
            .map(|(_, m)| m)
            .unwrap_or_else(|| panic!("forwarded"))
    };
    // Claims to be the CEO: asserted as bob.
    let m = out(&mut e, IDENTITY);
    assert!(
        m.contains("P-Asserted-Identity: <sip:bob@example.com>"),
        "{m}"
    );
    assert!(!m.contains("ceo@"), "{m}");
    // Prefers a number of his: asserted.
    let m = out(&mut e, "P-Preferred-Identity: <tel:+15551234>\r\n");
    assert!(m.contains("P-Asserted-Identity: <tel:+15551234>"), "{m}");
    assert!(!m.contains("P-Preferred-Identity"), "{m}");
    // Privacy: id toward a trunk that is not allow-listed: no identity leaves.
    let mut e2 = Edge::new(
        "domains = [\"example.com\"]\n[proxy]\noutbound = \"203.0.113.5:5060\"\n[auth]\nusers = [{ user = \"bob\", domain = \"example.com\", password = \"pw\" }]\n",
    );
    let m = out(&mut e2, "Privacy: id\r\n");
    assert!(!m.contains("P-Asserted-Identity"), "{m}");
    // ...and kept, with Privacy: id, toward an allow-listed trunk, which must honour it.
    let m = out(&mut e, "Privacy: id\r\n");
    assert!(
        m.contains("P-Asserted-Identity: <sip:bob@example.com>") && m.contains("Privacy: id"),
        "{m}"
    );
}

impl Edge {
    /// Advance the fake clock, running timers every 10ms; what was sent.
    fn advance(&mut self, d: Duration) -> Vec<(SocketAddr, String)> {
        let end = self.now + d;
        let mut out = Vec::new();
        while self.now < end {
            self.now += Duration::from_millis(10).min(end - self.now);
            self.core.tick(self.now);
            out.extend(
                self.core
                    .take_sends()
                    .into_iter()
                    .map(|(d, b)| (d.addr, String::from_utf8(b).expect("utf8"))),
            );
        }
        out
    }

    /// bob registers `contacts` from `source` (allow-listed: no digest); the status line.
    fn register(&mut self, source: &str, contacts: &[&str], n: usize) -> String {
        let lines: String = contacts
            .iter()
            .map(|c| format!("Contact: <{c}>\r\n"))
            .collect();
        let reg = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {source};branch=z9hG4bKreg{n}\r\nFrom: <sip:bob@example.com>;tag=r\r\nTo: <sip:bob@example.com>\r\nCall-ID: reg{n}\r\nCSeq: 1 REGISTER\r\n{lines}Content-Length: 0\r\n\r\n"
        );
        let sent = self.feed(&reg, source);
        sent.first()
            .map(|(_, m)| m.lines().next().unwrap_or("").to_string())
            .unwrap_or_default()
    }
}

fn edge_with_domain() -> Edge {
    let mut e = Edge::new("");
    e.core.local.domains = vec!["example.com".into()];
    e
}

/// An edge with our domain at which bob registered `contacts` from `source` (200).
fn edge_with_contacts(source: &str, contacts: &[&str]) -> Edge {
    let mut e = edge_with_domain();
    assert_eq!(e.register(source, contacts, 1), "SIP/2.0 200 OK");
    e
}

/// A binding's destination is the flow the REGISTER came on, never the host its
/// Contact names (main: a Contact on the source's IP but another port was used, so a
/// REGISTER could aim every call at another service of that host); the authenticated user is
/// recorded; five contacts per address of record by default.
#[test]
fn registrations_follow_the_client() {
    let mut e = edge_with_contacts("10.0.0.21:40000", &["sip:bob@10.0.0.21:5070"]);
    let sent = e.feed(&call_invite("flow1"), CALLER);
    let to: Vec<_> = sent
        .iter()
        .filter(|(_, m)| m.starts_with("INVITE"))
        .map(|(a, _)| *a)
        .collect();
    assert_eq!(to, vec!["10.0.0.21:40000".parse().unwrap()]);
    let b = e.core.store.lock().lookup("bob@example.com", e.now);
    assert_eq!(b[0].authenticated, None, "allow-listed: no credentials");
    assert_eq!(b[0].source, "10.0.0.21:40000".parse().unwrap());

    let five: Vec<String> = (1..=5).map(|i| format!("sip:bob@10.0.0.{i}")).collect();
    let five: Vec<&str> = five.iter().map(String::as_str).collect();
    let mut e = edge_with_contacts("10.0.0.30:5060", &five);
    let status = e.register("10.0.0.30:5060", &["sip:bob@10.0.0.6"], 2);
    assert!(
        !status.starts_with("SIP/2.0 200"),
        "a sixth contact: {status}"
    );
}

/// Forking toward a contact that never answered is limited: once it left a
/// request unanswered, the next requests go to it once, without Timer A retransmissions
/// (main: seven sends per call, whatever happened before), until it answers again.
#[test]
fn silent_contacts_get_no_retransmissions() {
    let mut e = edge_with_contacts("10.0.0.21:5070", &["sip:bob@a"]);
    let sends_to = |sent: &[(SocketAddr, String)]| {
        sent.iter()
            .filter(|(a, m)| *a == "10.0.0.21:5070".parse().unwrap() && m.starts_with("INVITE"))
            .count()
    };
    let mut first = sends_to(&e.feed(&call_invite("s1"), CALLER));
    first += sends_to(&e.advance(Duration::from_secs(40)));
    assert_eq!(first, 7, "Timer A: the first call is retransmitted");
    let mut second = sends_to(&e.feed(&call_invite("s2"), CALLER));
    second += sends_to(&e.advance(Duration::from_secs(40)));
    assert_eq!(second, 1, "a contact that never answered: sent once");
    // It answers a request: retransmissions again.
    let sent = e.feed(&call_invite("s3"), CALLER);
    let inv = sent_starting(&sent, "INVITE").to_string();
    e.feed(&response_to(&inv, 180, "t"), "10.0.0.21:5070");
    assert!(!e.core.is_silent("10.0.0.21:5070".parse().unwrap(), e.now));
    // Timer C (3 min after the 180), the CANCEL's 64*T1: everything ends.
    e.advance(Duration::from_secs(260));
    assert_eq!(e.core.active(), (0, 0));
}
