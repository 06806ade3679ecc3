//! A dual-homed edge: the daemon in namespace b listens on its inside address (198.51.100.2,
//! toward alice's phone in namespace a) and on its outside address (203.0.113.1, toward bob's
//! phone in namespace c), with no `advertise`. Neither phone has a route to the other's
//! subnet and b forwards nothing: what crosses is the edge's SIP. Calls both ways, each with
//! a re-INVITE from either side and a BYE, complete only if every message leaves from the
//! address that routes to its destination, with Via and Record-Route naming it (one
//! Record-Route entry per side, RFC 5658). With `[proxy] topology_hiding = "outside"` (the
//! inside allow-listed), the same calls work, and so do an UPDATE from each callee, a call
//! from inside cancelled while it rings, a call from outside redirected by the inside phone,
//! a call from inside forked to two outside phones, and a call from inside that outlives a
//! reload (`flows`); no byte that reaches the outside phones names an inside address (Via,
//! Record-Route, Contact) or the inside phone's Call-IDs, which name its host; each phone
//! sees its own Call-ID in every message of its dialogs.
//! In relay mode with the registrar outside, no inner Path entry reaches it
//! (`relay_path`).

mod flows;
mod relay_path;

use std::{net::SocketAddr, time::Duration};

use sip_firewall_tests::{
    domain::SHORT_TIMERS,
    edge::Edge,
    netns::Side,
    require_root,
    ua::{
        Account, header, headers, in_dialog, in_dialog_as_callee, msg::ack_of_failure, status,
        udp::Phone,
    },
};

const INSIDE: &str = "198.51.100.2:5060";
const OUTSIDE: &str = "203.0.113.1:5060";

/// The inside's addresses: the phone's and the edge's.
const INSIDE_NET: &str = "198.51.100.";

/// The edge's config: one plain and one table listen entry (both spellings), no advertise;
/// `extra` appended (sections of its own).
fn config(extra: &str) -> String {
    format!(
        "[sip]\nlisten = [\"{INSIDE}\", {{ addr = \"{OUTSIDE}\" }}]\ndomains = [\"example.com\"]\n\
         {SHORT_TIMERS}[auth]\nalgorithms = [\"MD5\"]\nusers = [\n\
         {{ user = \"alice\", domain = \"example.com\", password = \"alice-pw\" }},\n\
         {{ user = \"bob\", domain = \"example.com\", password = \"bob-pw\" }},\n]\n{extra}"
    )
}

/// `phone` sends `req` and waits for its final response while `peer` receives (and
/// answers 200) what the edge relays, until `req` (its From and CSeq: the edge may show the
/// peer another Call-ID) reached it.
fn across(phone: &mut Phone, peer: &mut Phone, req: &str) -> Option<String> {
    let before = peer.requests.len();
    let same = |r: &String| {
        header(r, "From") == header(req, "From") && header(r, "CSeq") == header(req, "CSeq")
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

/// `phone` registers its own contact, answering a digest challenge when there is one (an
/// allow-listed phone gets none).
fn register(phone: &mut Phone) {
    let user = phone.ua.account.user.clone();
    let port = phone.ua.sent_by.rsplit(':').next().unwrap_or_default();
    let call_id = format!("reg-{user}-{port}");
    let mut last = phone.register_once(&call_id, None, 3600, "");
    if let Some(chal) = last.as_ref().filter(|r| status(r) == 401) {
        let uri = format!("sip:{}", phone.ua.account.domain);
        let auth = phone.ua.authorize(chal, "REGISTER", &uri);
        last = phone.register_once(&call_id, None, 3600, &auth);
    }
    assert_eq!(last.as_deref().map(status), Some(200), "{user}: {last:?}");
}

/// `caller` calls `callee_aor` (the callee's phone answers 200 with To-tag `ph`); the
/// caller, then the callee, sends a re-INVITE; the caller hangs up. Each request's final
/// answer must be 200, and what reaches each phone must name the edge's address on its
/// side (`caller_side`, `callee_side`); the callee gets `rr` Record-Route entries (two, one
/// per side; one when the callee is outside and the edge hides the inside). A `challenged`
/// caller answers a 407 first (an allow-listed one gets none).
fn call(
    caller: &mut Phone,
    callee: &mut Phone,
    callee_aor: &str,
    sides: (&str, &str),
    rr: (usize, bool),
) {
    let (caller_side, callee_side) = sides;
    let (rr, challenged) = rr;
    // Named after the caller's host, as phones do (RFC 3261 8.1.1.4).
    let host = caller.ua.sent_by.split(':').next().unwrap_or_default();
    let call_id = format!("dual-{}@{host}", caller.ua.account.user);
    let mut invite = caller.ua.invite(callee_aor, "c1", &call_id, 1, "");
    if challenged {
        let chal = caller.final_of(&invite).expect("the challenge");
        assert_eq!(status(&chal), 407, "{chal}");
        caller.send(&ack_of_failure(&invite, &chal));
        let auth = caller.ua.authorize(&chal, "INVITE", callee_aor);
        invite = caller.ua.invite(callee_aor, "c1", &call_id, 2, &auth);
    }
    let ok = across(caller, callee, &invite);
    let ok = ok.unwrap_or_else(|| panic!("{call_id}: no answer"));
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
    let entries = headers(&got, "Record-Route");
    assert!(
        entries.len() == rr
            && entries[0].starts_with(&format!("<sip:{callee_side};lr;"))
            && entries
                .get(1)
                .is_none_or(|e| e.starts_with(&format!("<sip:{caller_side};lr;"))),
        "{got}"
    );
    let cseq = header(&invite, "CSeq")
        .and_then(|c| c.split(' ').next())
        .and_then(|n| n.parse::<u32>().ok())
        .unwrap_or(1);
    caller.send(&in_dialog("ACK", &ok, &caller.ua.via(), "ph", cseq));

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
    // RFC 3261 12.2.1.1: to the caller's own Contact (given back when it was sealed), in
    // the caller's own Call-ID (12: whatever the callee was shown).
    let target = format!("INVITE {} SIP/2.0\r\n", caller.ua.contact);
    assert!(relayed.starts_with(&target), "{relayed}");
    assert_eq!(
        header(&relayed, "Call-ID"),
        Some(call_id.as_str()),
        "{relayed}"
    );
    callee.send(&in_dialog_as_callee("ACK", &got, &callee.ua.via(), "ph", 1));

    let update = in_dialog_as_callee("UPDATE", &got, &callee.ua.via(), "ph", 2);
    let answer = across(callee, caller, &update).expect("the callee's UPDATE answered");
    assert_eq!(status(&answer), 200, "{answer}");

    let bye = in_dialog("BYE", &ok, &caller.ua.via(), "ph", 4);
    let answer = across(caller, callee, &bye).expect("the BYE answered");
    assert_eq!(status(&answer), 200, "{answer}");
    assert!(callee.requests.iter().any(|r| r.starts_with("BYE ")));
}

/// The namespaces, the edge with `config` in b, alice's phone inside (a) and bob's
/// outside (c), both registered; then calls both ways, bob's Record-Route count `rr_out`,
/// and `then` (the edge, the outside, alice, bob) while the edge still runs.
fn calls_both_ways(
    test: &str,
    config: &str,
    rr_out: usize,
    then: impl FnOnce(&Edge, &Side, &mut Phone, &mut Phone),
) -> Option<(Phone, Phone)> {
    if !require_root(test) {
        return None;
    }
    let mut edge = Edge::new("dual", config);
    let side = edge.pair.add_side().expect("namespace c");
    edge.dirs.listen = String::new();
    edge.run(&["--xdp-mode", "off"]);

    let inside: SocketAddr = INSIDE.parse().expect("inside");
    let mut alice = Phone::in_ns(
        &edge.pair,
        "198.51.100.1:5070",
        Account::new("alice", "example.com", "alice-pw"),
    );
    let mut bob = outside_phone(&side, 5070, Account::new("bob", "example.com", "bob-pw"));
    assert_eq!(alice.proxy, inside);
    register(&mut alice);
    register(&mut bob);

    // An allow-listed inside (the hiding case: one entry outside) is not challenged.
    let trusted = rr_out == 1;
    let (to_bob, to_alice) = ("sip:bob@example.com", "sip:alice@example.com");
    call(
        &mut alice,
        &mut bob,
        to_bob,
        (INSIDE, OUTSIDE),
        (rr_out, !trusted),
    );
    call(&mut bob, &mut alice, to_alice, (OUTSIDE, INSIDE), (2, true));
    then(&edge, &side, &mut alice, &mut bob);
    Some((alice, bob))
}

/// `account`'s phone on `port` of the outside namespace, talking to the edge's outside
/// address.
fn outside_phone(side: &Side, port: u16, account: Account) -> Phone {
    let outside: SocketAddr = OUTSIDE.parse().expect("outside");
    let sock = sip_firewall_tests::ua::udp::socket_in_ns(
        &side.ns_c,
        &format!("{}:{port}", side.c4),
        Duration::from_millis(50),
    );
    Phone::new(sock, outside, account)
}

/// Calls both ways between an inside and an outside phone through a dual-homed edge
/// without `advertise`: each leg leaves from the address of its side.
#[test]
fn calls_cross_a_dual_homed_edge_both_ways() {
    let test = "dual_homed::calls_cross_a_dual_homed_edge_both_ways";
    calls_both_ways(test, &config(""), 2, |_, _, _, _| {});
}

/// The same calls, a cancelled, a redirected, a reloaded and a forked one, with the inside
/// hidden from the outside: every byte the outside phones received is searched for the
/// inside's addresses and Call-IDs.
#[test]
fn the_outside_sees_no_inside_address() {
    let test = "dual_homed::the_outside_sees_no_inside_address";
    let hiding = format!(
        "[policy]\nallow = [\"{INSIDE_NET}0/24\"]\n[proxy]\ntopology_hiding = \"outside\"\n"
    );
    let then = |edge: &Edge, side: &Side, alice: &mut Phone, bob: &mut Phone| {
        flows::cancelled_call(alice, bob);
        flows::redirected_call(alice, bob);
        flows::reloaded_call(edge, alice, bob);
        flows::forked_call(side, alice, bob);
    };
    let Some((_, bob)) = calls_both_ways(test, &config(&hiding), 1, then) else {
        return;
    };
    assert!(bob.received.len() > 10, "{}", bob.received.len());
    // alice's Call-IDs name her host: neither it nor their own part may reach bob (either
    // of his phones).
    let inner = ["dual-alice", "cancel-alice", "reload-alice", "fork-alice"];
    for m in &bob.received {
        for inner in std::iter::once(INSIDE_NET).chain(inner) {
            assert!(!m.contains(inner), "{inner}: {m}");
        }
    }
}
