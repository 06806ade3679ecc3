//! A dual-homed edge: the daemon in namespace b listens on its inside address (198.51.100.2,
//! toward alice's phone in namespace a) and on its outside address (203.0.113.1, toward bob's
//! phone in namespace c), with no `advertise`. Neither phone has a route to the other's
//! subnet and b forwards nothing: what crosses is the edge's SIP. Calls both ways, each with
//! a re-INVITE from either side and a BYE, complete only if every message leaves from the
//! address that routes to its destination, with Via and Record-Route naming it (one
//! Record-Route entry per side, RFC 5658).

mod support;

use std::{net::SocketAddr, time::Duration};

use sip_firewall_tests::{
    edge::Edge,
    require_root,
    ua::{Account, header, headers, in_dialog, in_dialog_as_callee, status, udp::Phone},
};
use support::SHORT_TIMERS;

const INSIDE: &str = "198.51.100.2:5060";
const OUTSIDE: &str = "203.0.113.1:5060";

/// The edge's config: one plain and one table listen entry (both spellings), no advertise.
fn config() -> String {
    format!(
        "[sip]\nlisten = [\"{INSIDE}\", {{ addr = \"{OUTSIDE}\" }}]\ndomains = [\"example.com\"]\n\
         {SHORT_TIMERS}[auth]\nalgorithms = [\"MD5\"]\nusers = [\n\
         {{ user = \"alice\", domain = \"example.com\", password = \"alice-pw\" }},\n\
         {{ user = \"bob\", domain = \"example.com\", password = \"bob-pw\" }},\n]\n"
    )
}

/// `phone` sends `req` and waits for its final response while `peer` receives (and
/// answers 200) what the edge relays, until `req` (its Call-ID and CSeq) reached it.
fn across(phone: &mut Phone, peer: &mut Phone, req: &str) -> Option<String> {
    let before = peer.requests.len();
    let same = |r: &String| {
        header(r, "Call-ID") == header(req, "Call-ID") && header(r, "CSeq") == header(req, "CSeq")
    };
    std::thread::scope(|s| {
        let listening = s.spawn(|| {
            peer.listen(Duration::from_secs(5), |r| r[before..].iter().any(same));
        });
        let last = phone.final_of(req);
        let _ = listening.join();
        last
    })
}

/// `caller` calls `callee_aor` (the callee's phone answers 200 with To-tag `ph`); the
/// caller, then the callee, sends a re-INVITE; the caller hangs up. Each request's final
/// answer must be 200, and what reaches each phone must name the edge's address on its
/// side (`caller_side`, `callee_side`).
fn call(caller: &mut Phone, callee: &mut Phone, callee_aor: &str, sides: (&str, &str)) {
    let (caller_side, callee_side) = sides;
    let call_id = format!("dual-{}", caller.ua.account.user);
    let invite = caller.ua.invite(callee_aor, "c1", &call_id, 1, "");
    let chal = caller.final_of(&invite).expect("the challenge");
    assert_eq!(status(&chal), 407, "{chal}");
    caller.send(&sip_firewall_tests::ua::msg::ack_of_failure(&invite, &chal));
    let auth = caller.ua.authorize(&chal, "INVITE", callee_aor);
    let invite = caller.ua.invite(callee_aor, "c1", &call_id, 2, &auth);
    let ok = across(caller, callee, &invite).unwrap_or_else(|| panic!("{call_id}: no answer"));
    assert_eq!(status(&ok), 200, "{ok}");
    let got = callee.requests.last().cloned().expect("the INVITE");
    // RFC 3261 18.1.1: our Via is where the answer comes back to, on the callee's side.
    let via = headers(&got, "Via");
    assert!(
        via.first()
            .is_some_and(|v| v.starts_with(&format!("SIP/2.0/UDP {callee_side};"))),
        "{got}"
    );
    // RFC 5658: an entry per side, the callee's on top.
    let rr = headers(&got, "Record-Route");
    assert!(
        rr.len() == 2
            && rr[0].starts_with(&format!("<sip:{callee_side};lr;"))
            && rr[1].starts_with(&format!("<sip:{caller_side};lr;")),
        "{got}"
    );
    caller.send(&in_dialog("ACK", &ok, &caller.ua.via(), "ph", 2));

    let reinvite = in_dialog("INVITE", &ok, &caller.ua.via(), "ph", 3);
    let answer = across(caller, callee, &reinvite).expect("the caller's re-INVITE answered");
    assert_eq!(status(&answer), 200, "{answer}");
    assert!(
        header(callee.requests.last().expect("re-INVITE"), "Via")
            .is_some_and(|v| v.contains(callee_side))
    );
    caller.send(&in_dialog("ACK", &ok, &caller.ua.via(), "ph", 3));

    let back = in_dialog_as_callee("INVITE", &got, &callee.ua.via(), "ph", 1);
    let answer = across(callee, caller, &back).expect("the callee's re-INVITE answered");
    assert_eq!(status(&answer), 200, "{answer}");
    let relayed = caller
        .requests
        .last()
        .cloned()
        .expect("re-INVITE at the caller");
    assert!(
        header(&relayed, "Via").is_some_and(|v| v.contains(caller_side)),
        "{relayed}"
    );
    callee.send(&in_dialog_as_callee("ACK", &got, &callee.ua.via(), "ph", 1));

    let bye = in_dialog("BYE", &ok, &caller.ua.via(), "ph", 4);
    let answer = across(caller, callee, &bye).expect("the BYE answered");
    assert_eq!(status(&answer), 200, "{answer}");
    assert!(callee.requests.iter().any(|r| r.starts_with("BYE ")));
}

/// Calls both ways between an inside and an outside phone through a dual-homed edge
/// without `advertise`: each leg leaves from the address of its side.
#[test]
fn calls_cross_a_dual_homed_edge_both_ways() {
    const TEST: &str = "dual_homed::calls_cross_a_dual_homed_edge_both_ways";
    if !require_root(TEST) {
        return;
    }
    let mut edge = Edge::new("dual", &config());
    let side = edge.pair.add_side().expect("namespace c");
    edge.dirs.listen = String::new();
    edge.run(&["--xdp-mode", "off"]);

    let inside: SocketAddr = INSIDE.parse().expect("inside");
    let outside: SocketAddr = OUTSIDE.parse().expect("outside");
    let mut alice = Phone::in_ns(
        &edge.pair,
        "198.51.100.1:5070",
        Account::new("alice", "example.com", "alice-pw"),
    );
    let sock = sip_firewall_tests::ua::udp::socket_in_ns(
        &side.ns_c,
        &format!("{}:5070", side.c4),
        Duration::from_millis(50),
    );
    let mut bob = Phone::new(sock, outside, Account::new("bob", "example.com", "bob-pw"));
    assert_eq!(alice.proxy, inside);
    for phone in [&mut alice, &mut bob] {
        let user = phone.ua.account.user.clone();
        let (_, last) = phone.register(&format!("reg-{user}"), None, 3600);
        assert_eq!(last.as_deref().map(status), Some(200), "{user}: {last:?}");
    }

    call(
        &mut alice,
        &mut bob,
        "sip:bob@example.com",
        (INSIDE, OUTSIDE),
    );
    call(
        &mut bob,
        &mut alice,
        "sip:alice@example.com",
        (OUTSIDE, INSIDE),
    );
}
