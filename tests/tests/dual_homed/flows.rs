//! The flows of the hiding test beyond plain calls: a cancelled call, a redirected one, a
//! forked one, and one that outlives a reload. Each leaves what it received in the phones'
//! `received`, searched by the test.

use std::{net::SocketAddr, time::Duration};

use sip_firewall_tests::{
    edge::Edge,
    netns::Side,
    ua::{
        Account, header, in_dialog, in_dialog_as_callee,
        msg::{ack_of_failure, cancel_of},
        response_to, status,
        udp::Phone,
    },
};

use super::{across, register};

/// The next request `phone` receives that starts with `start`, within a few seconds,
/// unanswered (kept in its `received`), with where it came from.
pub fn next_request(phone: &mut Phone, start: &str) -> Option<(String, SocketAddr)> {
    let t0 = std::time::Instant::now();
    let mut buf = [0u8; 8192];
    while t0.elapsed() < Duration::from_secs(5) {
        let Ok((n, from)) = phone.sock.recv_from(&mut buf) else {
            continue;
        };
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        phone.received.push(m.clone());
        if m.starts_with(start) {
            return Some((m, from));
        }
    }
    None
}

/// The next response to `req` (its CSeq) with status `code` at `phone`, within its wait.
pub fn response_of(phone: &mut Phone, req: &str, code: u16) -> Option<String> {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < phone.wait {
        if let Some(m) = phone.receive()
            && status(&m) == code
            && header(&m, "CSeq") == header(req, "CSeq")
        {
            return Some(m);
        }
    }
    None
}

/// alice (inside) calls bob, whose phone rings and never answers; alice cancels. bob gets
/// the CANCEL and, after his 487, the edge's ACK in the INVITE's Call-ID (RFC 3261 9.1,
/// 17.1.1.3); alice gets her 487 in her own.
pub fn cancelled_call(alice: &mut Phone, bob: &mut Phone) {
    let host = alice.ua.sent_by.split(':').next().unwrap_or_default();
    let call_id = format!("cancel-alice@{host}");
    let invite = alice
        .ua
        .invite("sip:bob@example.com", "c9", &call_id, 1, "");
    alice.send(&invite);
    let (inv, edge) = next_request(bob, "INVITE ").expect("the INVITE at bob");
    let ring = response_to(&inv, "180 Ringing", "pc", "");
    let _ = bob.sock.send_to(ring.as_bytes(), edge);
    response_of(alice, &invite, 180).expect("180 at alice");
    let cancel = cancel_of(&invite);
    let ok = alice.final_of(&cancel).expect("the CANCEL answered");
    assert_eq!(status(&ok), 200, "{ok}");
    cancelled_at(bob, &inv, edge, "pc");
    let terminated = response_of(alice, &invite, 487).expect("487 at alice");
    assert_eq!(header(&terminated, "Call-ID"), Some(call_id.as_str()));
    alice.send(&ack_of_failure(&invite, &terminated));
}

/// bob (outside) calls alice, whose phone redirects him (302) to a contact on her host: bob
/// gets it sealed, and his new INVITE to it reaches that contact through the edge (the
/// call then goes on as any other: ACK, BYE).
pub fn redirected_call(alice: &mut Phone, bob: &mut Phone) {
    let host = bob.ua.sent_by.split(':').next().unwrap_or_default();
    let call_id = format!("moved-bob@{host}");
    let aor = "sip:alice@example.com";
    let first = bob.ua.invite(aor, "m1", &call_id, 1, "");
    let chal = bob.final_of(&first).expect("the challenge");
    assert_eq!(status(&chal), 407, "{chal}");
    bob.send(&ack_of_failure(&first, &chal));
    let auth = bob.ua.authorize(&chal, "INVITE", aor);
    let second = bob.ua.invite(aor, "m1", &call_id, 2, &auth);
    let moved_to = "sip:alice-moved@198.51.100.1:5070";
    let moved = std::thread::scope(|s| {
        s.spawn(|| {
            let (inv, edge) = next_request(alice, "INVITE ").expect("the INVITE at alice");
            let contact = format!("Contact: <{moved_to}>\r\n");
            let resp = response_to(&inv, "302 Moved Temporarily", "mv", &contact);
            let _ = alice.sock.send_to(resp.as_bytes(), edge);
        });
        bob.final_of(&second)
    });
    let moved = moved.expect("the 302 at bob");
    assert_eq!(status(&moved), 302, "{moved}");
    bob.send(&ack_of_failure(&second, &moved));
    let target = header(&moved, "Contact").unwrap_or_default();
    let target = target.trim_start_matches('<').trim_end_matches('>');
    assert!(target.starts_with("sip:sfwth-"), "{moved}");
    let again = bob.ua.invite(target, "m1", &call_id, 3, "");
    let ok = across(bob, alice, &again).expect("the redirected INVITE answered");
    assert_eq!(status(&ok), 200, "{ok}");
    let got = alice.requests.last().cloned().unwrap_or_default();
    assert!(
        got.starts_with(&format!("INVITE {moved_to} SIP/2.0")),
        "{got}"
    );
    bob.send(&in_dialog("ACK", &ok, &bob.ua.via(), "ph", 3));
    let bye = in_dialog("BYE", &ok, &bob.ua.via(), "ph", 4);
    let answer = across(bob, alice, &bye).expect("the BYE answered");
    assert_eq!(status(&answer), 200, "{answer}");
}

/// bob registers a second phone (outside too); alice (inside) calls bob: both phones ring,
/// the first answers 200, the second gets the edge's CANCEL (RFC 3261 16.7 step 10) and,
/// after its 487, the ACK; then alice hangs up. Both branches see the INVITE's Call-ID
/// sealed; what the second phone received joins bob's `received`.
pub fn forked_call(side: &Side, alice: &mut Phone, bob: &mut Phone) {
    let mut second = super::outside_phone(side, 5072, Account::new("bob", "example.com", "bob-pw"));
    register(&mut second);
    let host = alice.ua.sent_by.split(':').next().unwrap_or_default();
    let call_id = format!("fork-alice@{host}");
    let invite = alice
        .ua
        .invite("sip:bob@example.com", "f1", &call_id, 1, "");
    let (ok, inv) = std::thread::scope(|s| {
        let losing = s.spawn(|| losing_branch(&mut second));
        let winning = s.spawn(|| {
            let (inv, edge) = next_request(bob, "INVITE ").expect("the INVITE at bob");
            let ring = response_to(&inv, "180 Ringing", "ph", "");
            let _ = bob.sock.send_to(ring.as_bytes(), edge);
            // Both branches ring before one answers (RFC 3261 9.1: a CANCEL follows a
            // provisional answer).
            std::thread::sleep(Duration::from_millis(300));
            let contact = format!("Contact: <{}>\r\n", bob.ua.contact);
            let ok = response_to(&inv, "200 OK", "ph", &contact);
            let _ = bob.sock.send_to(ok.as_bytes(), edge);
            inv
        });
        let ok = alice.final_of(&invite);
        losing.join().expect("the losing branch");
        (ok, winning.join().expect("the winning branch"))
    });
    let ok = ok.expect("the 200 at alice");
    assert_eq!(status(&ok), 200, "{ok}");
    assert!(
        header(&inv, "Call-ID").is_some_and(|c| c.starts_with("sfwth-")),
        "{inv}"
    );
    alice.send(&in_dialog("ACK", &ok, &alice.ua.via(), "ph", 1));
    let bye = in_dialog("BYE", &ok, &alice.ua.via(), "ph", 2);
    let answer = across(alice, bob, &bye).expect("the BYE answered");
    assert_eq!(status(&answer), 200, "{answer}");
    bob.received.append(&mut second.received);
}

/// The branch that loses the race: it rings, then is cancelled ([`cancelled_at`]).
fn losing_branch(phone: &mut Phone) {
    let (inv, edge) = next_request(phone, "INVITE ").expect("the INVITE at the second phone");
    let ring = response_to(&inv, "180 Ringing", "f2", "");
    let _ = phone.sock.send_to(ring.as_bytes(), edge);
    cancelled_at(phone, &inv, edge, "f2");
}

/// `phone`, ringing for `inv` (from the edge at `edge`, To-tag `tag`), gets the edge's
/// CANCEL, answers it 200 and the INVITE 487, and gets the ACK of the 487: both in the
/// INVITE's Call-ID (RFC 3261 9.1, 17.1.1.3).
fn cancelled_at(phone: &mut Phone, inv: &str, edge: SocketAddr, tag: &str) {
    let (cancel, _) = next_request(phone, "CANCEL ").expect("the edge's CANCEL");
    let same = header(&cancel, "Call-ID") == header(inv, "Call-ID");
    assert!(same, "{cancel}");
    for resp in [
        response_to(&cancel, "200 OK", tag, ""),
        response_to(inv, "487 Request Terminated", tag, ""),
    ] {
        let _ = phone.sock.send_to(resp.as_bytes(), edge);
    }
    let (ack, _) = next_request(phone, "ACK ").expect("the ACK of the 487");
    assert_eq!(header(&ack, "Call-ID"), header(inv, "Call-ID"), "{ack}");
}

/// alice (inside) calls bob; between the 200/ACK and the BYE the edge reloads a changed
/// config (`policy.allow` gains an entry): bob's BYE and its 200 still cross, and alice
/// gets it in her own Call-ID.
pub fn reloaded_call(edge: &Edge, alice: &mut Phone, bob: &mut Phone) {
    let host = alice.ua.sent_by.split(':').next().unwrap_or_default();
    let call_id = format!("reload-alice@{host}");
    let invite = alice
        .ua
        .invite("sip:bob@example.com", "r1", &call_id, 1, "");
    let ok = across(alice, bob, &invite).expect("the INVITE answered");
    assert_eq!(status(&ok), 200, "{ok}");
    let got = bob.requests.last().cloned().expect("the INVITE at bob");
    alice.send(&in_dialog("ACK", &ok, &alice.ua.via(), "ph", 1));

    let file = edge.dir().join("sip-firewall.toml");
    let text = std::fs::read_to_string(&file).expect("the config");
    let changed = text.replace("allow = [\"", "allow = [\"192.0.2.0/24\", \"");
    assert_ne!(changed, text, "{text}");
    edge.write_config(&changed);
    let reload = edge.cli(&["reload"]);
    let said = String::from_utf8_lossy(&reload.stdout);
    assert!(
        reload.status.success() && said.contains("policy.allow"),
        "{said}"
    );

    let bye = in_dialog_as_callee("BYE", &got, &bob.ua.via(), "ph", 1);
    let answer = across(bob, alice, &bye).expect("the BYE answered after the reload");
    assert_eq!(status(&answer), 200, "{answer}");
    let at_alice = alice.requests.last().cloned().unwrap_or_default();
    assert!(at_alice.starts_with("BYE "), "{at_alice}");
    assert_eq!(
        header(&at_alice, "Call-ID"),
        Some(call_id.as_str()),
        "{at_alice}"
    );
}
