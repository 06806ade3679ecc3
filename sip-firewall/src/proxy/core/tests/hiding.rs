//! Topology hiding at the edge (`super::super::hide`), on a fake clock: the Call-ID of a
//! dialog made inside leaves sealed in every message toward the outside (INVITE, 180/200,
//! ACK, re-INVITE, UPDATE, BYE from either side, CANCEL and the ACK of a 487) and comes
//! back inner, the edge's own BYE included; a dialog made outside keeps its Call-ID both
//! ways; a fork seals on its outside branch only; a dialog keeps its text across a reload,
//! a roll of the secret and another node taking it over; a seal replayed toward another
//! outsider stays sealed; the answer to an outside REGISTER lists no inside device; a 3xx
//! from inside leaves with sealed targets that a new request from outside reaches; a
//! REGISTER from a proxy inside reaches a registrar outside with the inner Path sealed in
//! ours, restored as the Route of what the registrar sends back through it (a forged seal
//! refused), and with no Path when it was routed past us; an inside phone's REGISTER reaches
//! a registrar outside with its Contact sealed as a binding of ours, the 200 brings the phone
//! its own back and the registrar's INVITE to the binding reaches the phone (a tampered one
//! refused); a transfer names each dialog in Refer-To, Replaces and Join as its recipient
//! knows it. Every byte to the outside is searched for the inside's addresses and Call-IDs.

use super::*;

const EDGE: &str = "192.0.2.10";
/// alice's phone, inside (allow-listed), and bob's, outside.
const ALICE: &str = "10.1.0.9:5070";
const BOB: &str = "203.0.113.5:5060";
/// What the outside must never see: the inside's addresses and alice's Call-IDs.
const INSIDE: [&str; 4] = ["10.1.", "in-1", "in-2", "in-3"];
/// carol, a user of ours, and her phone outside.
const CAROL_USER: &str =
    "users = [{ user = \"carol\", domain = \"example.com\", password = \"pw\" }]\n";
const CAROL: &str = "203.0.113.7:5060";

struct Hiding {
    core: Core,
    now: Instant,
    /// Everything the edge sent outside (anywhere but 10.0.0.0/8).
    outside: Vec<String>,
}

impl Hiding {
    fn new() -> Hiding {
        Hiding::with("")
    }

    /// The edge with `extra` lines of its own after `[auth] secret`.
    fn with(extra: &str) -> Hiding {
        let now = Instant::now();
        Hiding {
            core: super::core(&config(&"c3".repeat(32), extra), now),
            now,
            outside: Vec::new(),
        }
    }

    /// The edge restarted after a roll of its secret: the one of [`Hiding::with`] now
    /// previous.
    fn rolled(&mut self) {
        let previous = format!("previous_secrets = [\"{}\"]\n", "c3".repeat(32));
        self.core = super::core(&config(&"d4".repeat(32), &previous), self.now);
    }

    fn feed(&mut self, text: &str, source: &str) -> Vec<(SocketAddr, String)> {
        let ctx = super::ctx_on(source, &format!("{EDGE}:5060"), Transport::Datagram);
        let sent = super::feed(&mut self.core, self.now, text, &ctx).1;
        self.keep_outside(&sent);
        sent
    }

    /// Feed `text` from `source`: the one message starting with `start` sent to `to`.
    fn one(&mut self, text: &str, source: &str, to: &str, start: &str) -> String {
        let sent = self.feed(text, source);
        let got = super::to(&sent, to, start);
        assert_eq!(got.len(), 1, "{start} to {to}: {sent:?}");
        got[0].clone()
    }

    /// Advance the clock by `d`, the timers run: what was sent.
    fn advance(&mut self, d: Duration) -> Vec<(SocketAddr, String)> {
        let step = Duration::from_millis(100);
        let sent = super::advance(&mut self.core, &mut self.now, d, step);
        self.keep_outside(&sent);
        sent
    }

    fn keep_outside(&mut self, sent: &[(SocketAddr, String)]) {
        let outside = sent
            .iter()
            .filter(|(a, _)| !matches!(a.ip(), IpAddr::V4(v) if v.octets()[0] == 10));
        self.outside.extend(outside.map(|(_, m)| m.clone()));
    }

    /// `user` registers at example.com from `addr`: digest-challenged when outside.
    fn register(&mut self, user: &str, addr: &str) {
        let register = |n: u32, auth: &str| {
            let mut lines = vec![
                format!("Via: SIP/2.0/UDP {addr};branch=z9hG4bK{user}{n}"),
                format!("From: <sip:{user}@example.com>;tag=r"),
                format!("To: <sip:{user}@example.com>"),
                format!("Call-ID: reg-{user}@{addr}"),
                format!("CSeq: {n} REGISTER"),
                format!("Contact: <sip:{user}@{addr}>"),
            ];
            lines.extend((!auth.is_empty()).then(|| auth.trim_end().to_string()));
            msg("REGISTER sip:example.com SIP/2.0", &lines)
        };
        let sent = self.feed(&register(1, ""), addr);
        let mut last = super::sent_starting(&sent, "SIP/2.0 ").to_string();
        if last.starts_with("SIP/2.0 401") {
            let nonce = super::nonce_of(&last);
            let (header, nc, uri) = ("Authorization", "00000001", "sip:example.com");
            let creds = super::credentials_of(user, header, &nonce, nc, "REGISTER", uri);
            last = self.one(&register(2, &creds), addr, addr, "SIP/2.0 200");
        }
        assert!(last.starts_with("SIP/2.0 200"), "{last}");
        // RFC 3261 10.2.4: its own binding, whatever else it is not shown.
        assert!(
            last.contains(&format!("Contact: <sip:{user}@{addr}>")),
            "{last}"
        );
    }

    /// Nothing the outside received names the inside.
    fn outside_saw_nothing_inside(&self) {
        assert!(!self.outside.is_empty());
        for m in &self.outside {
            for inner in INSIDE {
                assert!(!m.contains(inner), "{inner} in {m}");
            }
        }
    }
}

/// The edge's configuration, `[auth] secret` `secret` followed by `extra`.
fn config(secret: &str, extra: &str) -> String {
    format!(
        "[sip]\nlisten = [\"{EDGE}:5060\"]\ndomains = [\"example.com\"]\n\
         [policy]\nallow = [\"10.0.0.0/8\"]\n[proxy]\ntopology_hiding = \"outside\"\n\
         [auth]\nsecret = \"{secret}\"\n{extra}"
    )
}

/// A message: its first line, header lines, no body.
fn msg(start: &str, lines: &[String]) -> String {
    let head: String = lines.iter().map(|l| format!("{l}\r\n")).collect();
    format!("{start}\r\n{head}Content-Length: 0\r\n\r\n")
}

/// The values of header `name` in `m`, entry by entry (a comma-separated line split).
fn values(m: &str, name: &str) -> Vec<String> {
    let prefix = format!("{}:", name.to_ascii_lowercase());
    m.split("\r\n")
        .filter(|l| l.to_ascii_lowercase().starts_with(&prefix))
        .flat_map(|l| l[prefix.len()..].split(',').map(|v| v.trim().to_string()))
        .collect()
}

/// The URI of the Contact of `m` (the first one).
fn contact_in(m: &str) -> String {
    let c = bound(m).into_iter().next().unwrap_or_default();
    c.trim_start_matches('<').trim_end_matches('>').to_string()
}

/// The Contacts of `m` but those it removes (`;expires=0`: a REGISTER hidden in the first
/// hours of a day removes the previous day's binding, `hide::binding`).
fn bound(m: &str) -> Vec<String> {
    let mut c = values(m, "Contact");
    c.retain(|v| !v.ends_with(";expires=0"));
    c
}

fn call_id_in(m: &str) -> String {
    values(m, "Call-ID").concat()
}

/// A response to `req` as received: its Via, From, To, Call-ID and CSeq as they are.
fn reply(status: &str, req: &str) -> String {
    let lines: Vec<String> = req
        .split("\r\n")
        .skip(1)
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            ["via:", "from:", "to:", "call-id:", "cseq:"]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .map(str::to_string)
        .collect();
    msg(&format!("SIP/2.0 {status}"), &lines)
}

/// A response of a UAS that sets To-tag `tag` (and copies the Record-Route) to `req`.
fn answer(status: &str, req: &str, tag: &str, contact: &str) -> String {
    format!(
        "SIP/2.0 {status}\r\n{}Contact: <{contact}>\r\nContent-Length: 0\r\n\r\n",
        super::response_lines(req, tag)
    )
}

/// A request of a dialog: `method` to `ruri` from `via` (branch `branch`), with the
/// From, To, Call-ID, CSeq number and route set given.
struct Req<'a> {
    ruri: &'a str,
    via: &'a str,
    from: String,
    to: String,
    call_id: &'a str,
    routes: Vec<String>,
}

impl<'a> Req<'a> {
    /// alice's request to bob's phone in `call_id`, with `to` after bob's AOR (`;tag=b`
    /// once he answered), along `routes`.
    fn alice(call_id: &'a str, to: &str, routes: Vec<String>) -> Req<'a> {
        Req {
            ruri: "sip:bob@203.0.113.5:5060",
            via: ALICE,
            from: "<sip:alice@example.com>;tag=a".into(),
            to: format!("<sip:bob@203.0.113.5>{to}"),
            call_id,
            routes,
        }
    }

    /// bob's request to `ruri` (not in a dialog) in `call_id`.
    fn bob(ruri: &'a str, call_id: &'a str) -> Req<'a> {
        Req {
            ruri,
            via: BOB,
            from: "<sip:bob@other.org>;tag=b".into(),
            to: "<sip:alice@example.com>".into(),
            call_id,
            routes: Vec::new(),
        }
    }

    /// bob's request in the dialog that alice's INVITE `inv` (as he got it) set up: to
    /// its Contact (`target`) along its Record-Route (RFC 3261 12.1.1), in `call_id`.
    fn bob_in_dialog(inv: &str, target: &'a str, call_id: &'a str) -> Req<'a> {
        Req {
            from: "<sip:bob@203.0.113.5>;tag=b".into(),
            to: "<sip:alice@example.com>;tag=a".into(),
            routes: values(inv, "Record-Route"),
            ..Req::bob(target, call_id)
        }
    }

    fn make(&self, method: &str, branch: &str, cseq: u32) -> String {
        let mut lines = vec![
            format!("Via: SIP/2.0/UDP {};branch=z9hG4bK{branch}", self.via),
            "Max-Forwards: 70".into(),
        ];
        lines.extend(self.routes.iter().map(|r| format!("Route: {r}")));
        lines.extend([
            format!("From: {}", self.from),
            format!("To: {}", self.to),
            format!("Call-ID: {}", self.call_id),
            format!("CSeq: {cseq} {method}"),
            format!("Contact: <sip:{}>", self.via),
        ]);
        msg(&format!("{method} {} SIP/2.0", self.ruri), &lines)
    }
}

/// alice calls bob: bob's INVITE (as received), alice's 200.
fn alice_calls_bob(h: &mut Hiding, call_id: &str, branch: &str) -> (String, String) {
    let alice = Req::alice(call_id, "", Vec::new());
    let inv = h.one(&alice.make("INVITE", branch, 1), ALICE, BOB, "INVITE ");
    let ringing = answer("180 Ringing", &inv, "b", "sip:bob@203.0.113.5:5060");
    let at_alice = h.one(&ringing, BOB, ALICE, "SIP/2.0 180");
    assert_eq!(call_id_in(&at_alice), call_id);
    (inv, at_alice)
}

/// bob answers alice's `inv` (her `call_id`) 200: alice's side of the dialog, along the
/// route set of the 200 she gets (RFC 3261 12.1.2: its Record-Route reversed).
fn bob_answers<'a>(h: &mut Hiding, inv: &str, call_id: &'a str) -> Req<'a> {
    let ok = answer("200 OK", inv, "b", "sip:bob@203.0.113.5:5060");
    let ok_at_alice = h.one(&ok, BOB, ALICE, "SIP/2.0 200");
    assert_eq!(call_id_in(&ok_at_alice), call_id);
    let mut routes = values(&ok_at_alice, "Record-Route");
    routes.reverse();
    Req::alice(call_id, ";tag=b", routes)
}

/// A dialog made inside: bob sees one sealed Call-ID in every message of it, alice her
/// own; requests from bob's side reach alice with hers.
#[test]
fn a_dialog_made_inside_shows_the_outside_a_sealed_call_id() {
    let mut h = Hiding::new();
    let (inv, _) = alice_calls_bob(&mut h, "in-1@10.1.0.9", "a1");
    let sealed = call_id_in(&inv);
    assert!(sealed.starts_with("sfwth-"), "{inv}");
    let alice = bob_answers(&mut h, &inv, "in-1@10.1.0.9");
    let ack = h.one(&alice.make("ACK", "a1ack", 1), ALICE, BOB, "ACK ");
    assert_eq!(call_id_in(&ack), sealed);
    let reinvite = h.one(&alice.make("INVITE", "a1re", 2), ALICE, BOB, "INVITE ");
    assert_eq!(call_id_in(&reinvite), sealed);
    let ok2 = answer("200 OK", &reinvite, "b", "sip:bob@203.0.113.5:5060");
    assert_eq!(
        call_id_in(&h.one(&ok2, BOB, ALICE, "SIP/2.0 200")),
        "in-1@10.1.0.9"
    );

    // bob's requests: to alice's sealed Contact along the route set he was given.
    let target = contact_in(&inv);
    let bob = Req::bob_in_dialog(&inv, &target, &sealed);
    for (method, branch) in [("UPDATE", "b1up"), ("BYE", "b1bye")] {
        let at_alice = h.one(&bob.make(method, branch, 1), BOB, ALICE, method);
        assert_eq!(call_id_in(&at_alice), "in-1@10.1.0.9", "{at_alice}");
        assert!(
            at_alice.starts_with(&format!("{method} sip:{ALICE} ")),
            "{at_alice}"
        );
        let back = h.one(&reply("200 OK", &at_alice), ALICE, BOB, "SIP/2.0 200");
        assert_eq!(call_id_in(&back), sealed, "{back}");
    }
    h.outside_saw_nothing_inside();
}

/// The edge's own BYE (`[fraud] max_call_duration`) of a call made inside: bob's in the
/// sealed Call-ID he knows, alice's in her own.
#[test]
fn the_edges_own_bye_carries_each_sides_call_id() {
    let mut h = Hiding::with("[fraud]\nmax_call_duration = \"10s\"\n");
    let (inv, _) = alice_calls_bob(&mut h, "in-1@10.1.0.9", "a1");
    bob_answers(&mut h, &inv, "in-1@10.1.0.9");
    let sent = h.advance(Duration::from_secs(11));
    for (to, call_id) in [(BOB, call_id_in(&inv)), (ALICE, "in-1@10.1.0.9".into())] {
        let byes = super::to(&sent, to, "BYE ");
        assert!(!byes.is_empty(), "{sent:?}");
        for bye in byes {
            assert_eq!(call_id_in(&bye), call_id, "{bye}");
        }
    }
    h.outside_saw_nothing_inside();
}

/// A call made inside and cancelled: bob's CANCEL and the edge's ACK of his 487 carry the
/// INVITE's sealed Call-ID; alice's 487 her own.
#[test]
fn a_cancel_and_the_ack_of_a_487_carry_the_invites_sealed_call_id() {
    let mut h = Hiding::new();
    let (inv, _) = alice_calls_bob(&mut h, "in-2@10.1.0.9", "a2");
    let sealed = call_id_in(&inv);
    let alice = Req::alice("in-2@10.1.0.9", "", Vec::new());
    let cancel = h.one(&alice.make("CANCEL", "a2", 1), ALICE, BOB, "CANCEL ");
    assert_eq!(call_id_in(&cancel), sealed);
    h.feed(&reply("200 OK", &cancel), BOB);
    let terminated = answer("487 Request Terminated", &inv, "b", "sip:bob@203.0.113.5");
    let sent = h.feed(&terminated, BOB);
    let ack = super::to(&sent, BOB, "ACK ");
    assert_eq!(ack.len(), 1, "{sent:?}");
    assert_eq!(call_id_in(&ack[0]), sealed);
    let at_alice = super::to(&sent, ALICE, "SIP/2.0 487");
    assert_eq!(at_alice.len(), 1, "{sent:?}");
    assert_eq!(call_id_in(&at_alice[0]), "in-2@10.1.0.9");
    h.outside_saw_nothing_inside();
}

/// alice registers from inside; bob (outside) calls her with `call_id`: her INVITE.
fn bob_calls_alice(h: &mut Hiding, call_id: &str, branch: &str) -> String {
    h.register("alice", ALICE);
    let bob = Req::bob("sip:alice@example.com", call_id);
    h.one(&bob.make("INVITE", branch, 1), BOB, ALICE, "INVITE ")
}

/// A dialog made outside: bob's Call-ID reaches alice as it is, and every message to bob,
/// alice's BYE included, carries it unchanged.
#[test]
fn a_dialog_made_outside_keeps_the_callers_call_id() {
    let mut h = Hiding::new();
    let theirs = "out-1@203.0.113.5";
    let inv = bob_calls_alice(&mut h, theirs, "b1");
    assert_eq!(call_id_in(&inv), theirs);
    let ok = answer("200 OK", &inv, "a", &format!("sip:alice@{ALICE}"));
    let at_bob = h.one(&ok, ALICE, BOB, "SIP/2.0 200");
    assert_eq!(call_id_in(&at_bob), theirs);
    let alice = Req {
        ruri: "sip:bob@203.0.113.5:5060",
        via: ALICE,
        from: "<sip:alice@example.com>;tag=a".into(),
        to: "<sip:bob@other.org>;tag=b".into(),
        call_id: theirs,
        routes: values(&inv, "Record-Route"),
    };
    let bye = h.one(&alice.make("BYE", "a1bye", 1), ALICE, BOB, "BYE ");
    assert_eq!(call_id_in(&bye), theirs, "{bye}");
    h.outside_saw_nothing_inside();

    // A Call-ID that only looks like one of our seals is bob's own.
    let forged = "sfwth-00112233445566778899aabbccddeeff00";
    let inv = bob_calls_alice(&mut h, forged, "b2");
    assert_eq!(call_id_in(&inv), forged);
}

/// A 302 from inside leaves with a sealed target and no inner host; bob's new INVITE to it
/// reaches the inner target, another host's is refused. A dialog's sealed Contact is no
/// redirect target.
#[test]
fn a_redirect_from_inside_keeps_working_sealed() {
    let mut h = Hiding::new();
    let inv = bob_calls_alice(&mut h, "out-2@203.0.113.5", "b3");
    let moved = answer("302 Moved", &inv, "a", "sip:carol@10.1.0.20:5080");
    let at_bob = h.one(&moved, ALICE, BOB, "SIP/2.0 302");
    let target = contact_in(&at_bob);
    assert!(target.starts_with("sip:sfwth-"), "{at_bob}");
    let bob = Req::bob(&target, "out-2@203.0.113.5");
    let again = h.one(
        &bob.make("INVITE", "b4", 2),
        BOB,
        "10.1.0.20:5080",
        "INVITE ",
    );
    assert!(
        again.starts_with("INVITE sip:carol@10.1.0.20:5080 SIP/2.0"),
        "{again}"
    );
    h.outside_saw_nothing_inside();

    // The target is bob's: from another host outside it reaches nobody.
    let carol = Req {
        via: CAROL,
        ..Req::bob(&target, "out-5@203.0.113.7")
    };
    let sent = h.feed(&carol.make("INVITE", "c1", 1), CAROL);
    assert!(super::to(&sent, "10.1.0.20:5080", "INVITE ").is_empty());
    assert_eq!(super::to(&sent, CAROL, "SIP/2.0 404").len(), 1, "{sent:?}");

    // alice's sealed dialog Contact, from a 200, reaches nobody as a new request.
    let inv = bob_calls_alice(&mut h, "out-3@203.0.113.5", "b5");
    let ok = answer("200 OK", &inv, "a", &format!("sip:alice@{ALICE}"));
    let at_bob = h.one(&ok, ALICE, BOB, "SIP/2.0 200");
    let contact = contact_in(&at_bob);
    let bob = Req::bob(&contact, "out-4@203.0.113.5");
    let sent = h.feed(&bob.make("INVITE", "b6", 1), BOB);
    assert!(super::to(&sent, ALICE, "INVITE ").is_empty(), "{sent:?}");
}

/// `m` with header line `line` added.
fn with_header(m: &str, line: &str) -> String {
    m.replacen("Content-Length:", &format!("{line}\r\nContent-Length:"), 1)
}

/// A transfer across the boundary: what names another dialog names it as its recipient
/// knows it. alice's REFER to bob names her dialog with him (made inside) sealed in its
/// Refer-To's Replaces, as bob knows it, and a dialog made outside (Join) by its own
/// Call-ID; bob's INVITE with Replaces of the sealed dialog reaches alice with her own
/// Call-ID in it; a forged seal reaches her as it came.
#[test]
fn a_transfer_names_each_dialog_as_its_recipient_knows_it() {
    let mut h = Hiding::new();
    let (inv, _) = alice_calls_bob(&mut h, "in-1@10.1.0.9", "a1");
    let sealed = call_id_in(&inv);
    let alice = bob_answers(&mut h, &inv, "in-1@10.1.0.9");
    let refer = with_header(
        &alice.make("REFER", "a1ref", 2),
        "Refer-To: <sip:carol@203.0.113.7?Replaces=in-1%4010.1.0.9%3Bto-tag%3Db%3Bfrom-tag%3Da>",
    );
    let refer = with_header(&refer, "Join: out-9@203.0.113.7;to-tag=x;from-tag=y");
    let at_bob = h.one(&refer, ALICE, BOB, "REFER ");
    assert_eq!(
        values(&at_bob, "Refer-To"),
        [format!(
            "<sip:carol@203.0.113.7?Replaces={sealed}%3Bto-tag%3Db%3Bfrom-tag%3Da>"
        )],
        "{at_bob}"
    );
    assert_eq!(
        values(&at_bob, "Join"),
        ["out-9@203.0.113.7;to-tag=x;from-tag=y"]
    );

    h.register("alice", ALICE);
    let bob = Req::bob("sip:alice@example.com", "out-7@203.0.113.5");
    let replacing = with_header(
        &bob.make("INVITE", "b7", 1),
        &format!("Replaces: {sealed};to-tag=a;from-tag=b"),
    );
    let at_alice = h.one(&replacing, BOB, ALICE, "INVITE ");
    assert_eq!(
        values(&at_alice, "Replaces"),
        ["in-1@10.1.0.9;to-tag=a;from-tag=b"]
    );
    let forged = "sfwth-00112233445566778899aabbccddeeff00;to-tag=a;from-tag=b";
    let bob = Req::bob("sip:alice@example.com", "out-8@203.0.113.5");
    let replacing = with_header(&bob.make("INVITE", "b8", 1), &format!("Replaces: {forged}"));
    let at_alice = h.one(&replacing, BOB, ALICE, "INVITE ");
    assert_eq!(values(&at_alice, "Replaces"), [forged]);
    h.outside_saw_nothing_inside();
}

/// A sealed Call-ID that an outsider replays toward another outsider leaves sealed again:
/// the edge opens its seals for the inside only.
#[test]
fn a_sealed_call_id_replayed_outside_stays_sealed() {
    let mut h = Hiding::with(CAROL_USER);
    let (inv, _) = alice_calls_bob(&mut h, "in-1@10.1.0.9", "a1");
    let sealed = call_id_in(&inv);
    h.register("carol", CAROL);

    let replay = Req::bob("sip:carol@example.com", &sealed).make("INVITE", "b9", 1);
    let at_carol = h.one(&replay, BOB, CAROL, "INVITE ");
    assert_eq!(call_id_in(&at_carol), sealed, "{at_carol}");
    let ok = answer("200 OK", &at_carol, "c", &format!("sip:carol@{CAROL}"));
    assert_eq!(call_id_in(&h.one(&ok, CAROL, BOB, "SIP/2.0 200")), sealed);
    h.outside_saw_nothing_inside();
}

/// alice calls carol, registered inside and outside (the answer to the outside REGISTER
/// lists the outside binding only): the outside branch gets the sealed
/// Call-ID, the inside one alice's; the outside answers, the inside branch is cancelled in
/// alice's Call-ID, and alice gets the 200 in hers.
#[test]
fn a_fork_seals_the_call_id_on_its_outside_branch_only() {
    let mut h = Hiding::with(CAROL_USER);
    let desk = "10.1.0.30:5060";
    // The desk first: the 200 to carol's phone outside does not list it.
    h.register("carol", desk);
    h.register("carol", CAROL);
    let alice = Req {
        ruri: "sip:carol@example.com",
        to: "<sip:carol@example.com>".into(),
        ..Req::alice("in-3@10.1.0.9", "", Vec::new())
    };
    let sent = h.feed(&alice.make("INVITE", "a3", 1), ALICE);
    let outside = super::to(&sent, CAROL, "INVITE ");
    let inside = super::to(&sent, desk, "INVITE ");
    assert_eq!((outside.len(), inside.len()), (1, 1), "{sent:?}");
    assert!(call_id_in(&outside[0]).starts_with("sfwth-"));
    assert_eq!(call_id_in(&inside[0]), "in-3@10.1.0.9");
    h.feed(
        &answer("180 Ringing", &inside[0], "d", &format!("sip:carol@{desk}")),
        desk,
    );
    let ok = answer("200 OK", &outside[0], "c", &format!("sip:carol@{CAROL}"));
    let sent = h.feed(&ok, CAROL);
    let cancel = super::to(&sent, desk, "CANCEL ");
    assert_eq!(cancel.len(), 1, "{sent:?}");
    assert_eq!(call_id_in(&cancel[0]), "in-3@10.1.0.9");
    let at_alice = super::to(&sent, ALICE, "SIP/2.0 200");
    assert_eq!(at_alice.len(), 1, "{sent:?}");
    assert_eq!(call_id_in(&at_alice[0]), "in-3@10.1.0.9");
    h.outside_saw_nothing_inside();
}

/// A dialog made inside, `change` done to the edge once it is up: alice's re-INVITE
/// reaches bob in the sealed Call-ID he knows, bob's `method` reaches alice in hers.
fn dialog_survives(change: impl FnOnce(&mut Hiding), method: &str) {
    let mut h = Hiding::new();
    let (inv, _) = alice_calls_bob(&mut h, "in-1@10.1.0.9", "a1");
    let sealed = call_id_in(&inv);
    let alice = bob_answers(&mut h, &inv, "in-1@10.1.0.9");
    change(&mut h);
    let reinvite = h.one(&alice.make("INVITE", "a1re", 2), ALICE, BOB, "INVITE ");
    assert_eq!(call_id_in(&reinvite), sealed);
    let target = contact_in(&inv);
    let bob = Req::bob_in_dialog(&inv, &target, &sealed);
    let at_alice = h.one(&bob.make(method, "b1", 1), BOB, ALICE, method);
    assert_eq!(call_id_in(&at_alice), "in-1@10.1.0.9");
    h.outside_saw_nothing_inside();
}

/// Across a roll of the secret (the edge restarted with the old one previous), a dialog
/// made before it keeps its sealed Call-ID both ways.
#[test]
fn a_dialog_keeps_its_sealed_call_id_across_a_secret_roll() {
    dialog_survives(Hiding::rolled, "BYE");
}

/// A reload mid-dialog changes nothing the outside sees.
#[test]
fn a_reload_keeps_a_dialogs_sealed_call_id() {
    dialog_survives(
        |h| {
            let text = config(&"c3".repeat(32), "");
            let reloaded = Config::from_toml(&text, std::path::Path::new("t.toml"));
            h.core.reconfigure(&reloaded.expect("config"));
        },
        "UPDATE",
    );
}

/// Another node of the same secret (a fresh core: nothing of the dialog in memory) takes
/// the dialog over: the seals are stateless.
#[test]
fn another_node_takes_a_dialog_over() {
    dialog_survives(
        |h| h.core = super::core(&config(&"c3".repeat(32), ""), h.now),
        "BYE",
    );
}

/// An operator's registrar outside the allow-list; a proxy inside, between alice's phone and
/// the edge.
const REGISTRAR: &str = "203.0.113.50:5060";
const INNER_PROXY: &str = "10.1.0.5:5060";
const INNER_PATH: &str = "<sip:10.1.0.5:5060;lr;ob>";

/// alice's REGISTER as the inner proxy relays it: its Via over hers, its Path entry (RFC
/// 3327 4), the `route` lines before it.
fn register_through_inner_proxy(route: &[String]) -> String {
    let mut lines = vec![
        format!("Via: SIP/2.0/UDP {INNER_PROXY};branch=z9hG4bKp1"),
        format!("Via: SIP/2.0/UDP {ALICE};branch=z9hG4bKa1"),
        "Max-Forwards: 69".into(),
    ];
    lines.extend(route.iter().cloned());
    lines.extend([
        format!("Path: {INNER_PATH}"),
        "From: <sip:alice@example.com>;tag=r".into(),
        "To: <sip:alice@example.com>".into(),
        "Call-ID: reg-path".into(),
        "CSeq: 1 REGISTER".into(),
        "Supported: path".into(),
        format!("Contact: <sip:alice@{ALICE}>"),
    ]);
    msg("REGISTER sip:example.com SIP/2.0", &lines)
}

/// The registrar's INVITE to alice's contact through the Path entry `path` (RFC 3327 5).
fn invite_through(path: &str, n: u32) -> String {
    invite_to(&format!("sip:alice@{ALICE}"), path, n)
}

/// The registrar's INVITE to `ruri` through the Path entry `path` (RFC 3327 5; no Route
/// when `path` is empty).
fn invite_to(ruri: &str, path: &str, n: u32) -> String {
    let route = (!path.is_empty()).then(|| format!("Route: {path}"));
    msg(
        &format!("INVITE {ruri} SIP/2.0"),
        &[
            format!("Via: SIP/2.0/UDP {REGISTRAR};branch=z9hG4bKg{n}"),
            "Max-Forwards: 69".into(),
        ]
        .into_iter()
        .chain(route)
        .chain([
            "From: <sip:bob@other.org>;tag=b".into(),
            "To: <sip:alice@example.com>".into(),
            format!("Call-ID: back-{n}"),
            "CSeq: 1 INVITE".into(),
            format!("Contact: <sip:bob@{BOB}>"),
        ])
        .collect::<Vec<_>>(),
    )
}

/// Relay mode, its registrar outside: a REGISTER relayed by a proxy inside leaves with our
/// Path entry only, the inner one sealed in it; the registrar's 200 reaches the proxy with
/// the Path as sent; the registrar's INVITE through our entry reaches the proxy with the
/// inner Path as its Route set (RFC 3327 5). A sealed Path with a digit changed is refused
/// and counted, nothing goes inside.
#[test]
fn an_inner_path_leaves_sealed_and_comes_back_as_the_route() {
    let mut h = Hiding::with(&format!(
        "[registrar]\nmode = \"relay\"\nrelay_to = \"sip:{REGISTRAR}\"\n"
    ));
    let reg = register_through_inner_proxy(&[]);
    let out = h.one(&reg, INNER_PROXY, REGISTRAR, "REGISTER ");
    let path = values(&out, "Path");
    assert_eq!(path.len(), 1, "{out}");
    assert!(
        path[0].starts_with("<sip:192.0.2.10:5060;lr;ob;sfwf=") && path[0].contains(";sfwp="),
        "{out}"
    );
    assert!(!out.contains("10.1."), "{out}");

    let ok = reply("200 OK", &out).replace(
        "Content-Length",
        &format!(
            "Path: {}\r\nContact: <sip:alice@{ALICE}>;expires=600\r\nContent-Length",
            path[0]
        ),
    );
    let at_proxy = h.one(&ok, REGISTRAR, INNER_PROXY, "SIP/2.0 200");
    let echoed = values(&at_proxy, "Path");
    assert!(
        echoed.len() == 2 && !echoed[0].contains("sfwp=") && echoed[1] == INNER_PATH,
        "{at_proxy}"
    );

    let inv = h.one(
        &invite_through(&path[0], 1),
        REGISTRAR,
        INNER_PROXY,
        "INVITE ",
    );
    assert_eq!(values(&inv, "Route"), vec![INNER_PATH.to_string()], "{inv}");

    let i = path[0].find("sfwp=").expect("sealed") + 12;
    let flipped = if &path[0][i..=i] == "0" { "1" } else { "0" };
    let forged = format!("{}{flipped}{}", &path[0][..i], &path[0][i + 1..]);
    let sent = h.feed(&invite_through(&forged, 2), REGISTRAR);
    assert!(
        sent.iter().all(|(a, _)| a.to_string() != INNER_PROXY),
        "{sent:?}"
    );
    assert!(
        super::to(&sent, REGISTRAR, "SIP/2.0 403").len() == 1,
        "{sent:?}"
    );
    assert_eq!(super::refused(&h.core, "bad_hidden_path"), 1);
}

/// A REGISTER a proxy inside (trusted) routes through the edge to a registrar outside
/// (preloaded Route) leaves with no Path at all: the edge put no entry of its own in it to
/// carry the inner one.
#[test]
fn a_preloaded_register_leaves_without_the_inner_path() {
    let mut h = Hiding::new();
    let reg = register_through_inner_proxy(&[format!("Route: <sip:{REGISTRAR};lr>")]);
    let out = h.one(&reg, INNER_PROXY, REGISTRAR, "REGISTER ");
    assert!(values(&out, "Path").is_empty(), "{out}");
    assert!(!out.contains("10.1."), "{out}");

    // The registrar calls the binding it was given: alice's phone gets its own contact.
    let binding = contact_in(&out);
    assert!(binding.starts_with("sip:sfwth-"), "{out}");
    let inv = h.one(&invite_to(&binding, "", 1), REGISTRAR, ALICE, "INVITE ");
    assert!(
        inv.starts_with(&format!("INVITE sip:alice@{ALICE} SIP/2.0")),
        "{inv}"
    );
}

/// alice's phone, inside, registers itself in relay mode at a registrar outside: its
/// Contact leaves sealed as a URI of ours, the header parameters as they were; the 200
/// brings it its own contact back with what the registrar granted (RFC 3261 10.2.4), and
/// relay mode learns the flow from it; the registrar's INVITE to the sealed binding, through
/// our Path entry, reaches the phone at its own contact. The binding with a digit changed
/// reaches nobody and is counted.
#[test]
fn an_inside_phones_binding_leaves_sealed_and_is_reached() {
    let mut h = Hiding::with(&format!(
        "[registrar]\nmode = \"relay\"\nrelay_to = \"sip:{REGISTRAR}\"\n"
    ));
    let params =
        ";expires=600;+sip.instance=\"<urn:uuid:00000000-0000-0000-0000-000000000001>\";reg-id=1";
    let reg = msg(
        "REGISTER sip:example.com SIP/2.0",
        &[
            format!("Via: SIP/2.0/UDP {ALICE};branch=z9hG4bKa1"),
            "From: <sip:alice@example.com>;tag=r".into(),
            "To: <sip:alice@example.com>".into(),
            "Call-ID: reg-self".into(),
            "CSeq: 1 REGISTER".into(),
            format!("Contact: <sip:alice@{ALICE};ob>{params}"),
        ],
    );
    let out = h.one(&reg, ALICE, REGISTRAR, "REGISTER ");
    assert!(!out.contains("10.1."), "{out}");
    let contact = bound(&out);
    assert_eq!(contact.len(), 1, "{out}");
    let binding = contact[0]
        .strip_suffix(params)
        .expect("the parameters kept");
    assert!(binding.starts_with("<sip:sfwth-") && binding.ends_with("@192.0.2.10:5060>"));
    let binding = binding.trim_matches(['<', '>']);
    let path = values(&out, "Path");

    let ok = reply("200 OK", &out).replace(
        "Content-Length",
        &format!("Contact: <{binding}>;expires=300\r\nContent-Length"),
    );
    let at_alice = h.one(&ok, REGISTRAR, ALICE, "SIP/2.0 200");
    assert_eq!(
        values(&at_alice, "Contact"),
        vec![format!("<sip:alice@{ALICE};ob>;expires=300")],
        "{at_alice}"
    );

    let inv = h.one(
        &invite_to(binding, &path[0], 1),
        REGISTRAR,
        ALICE,
        "INVITE ",
    );
    assert!(
        inv.starts_with(&format!("INVITE sip:alice@{ALICE};ob SIP/2.0")),
        "{inv}"
    );
    h.outside_saw_nothing_inside();

    let i = binding.find("sfwth-").expect("sealed") + 8;
    let flipped = if &binding[i..=i] == "0" { "1" } else { "0" };
    let forged = format!("{}{flipped}{}", &binding[..i], &binding[i + 1..]);
    let sent = h.feed(&invite_to(&forged, &path[0], 2), REGISTRAR);
    assert!(sent.iter().all(|(a, _)| a.to_string() != ALICE), "{sent:?}");
    assert_eq!(super::refused(&h.core, "bad_hidden_contact"), 1);
}

/// In the first hours of a day an inside phone's REGISTER also removes its binding of the
/// day before (`;expires=0`), so the registrar does not hold it twice; its outbound
/// parameters stay on today's binding only.
#[test]
fn a_register_after_the_day_turns_removes_yesterdays_binding() {
    let mut h = Hiding::with(&format!(
        "[registrar]\nmode = \"relay\"\nrelay_to = \"sip:{REGISTRAR}\"\n"
    ));
    let register = |h: &mut Hiding, n: u32| {
        let reg = msg(
            "REGISTER sip:example.com SIP/2.0",
            &[
                format!("Via: SIP/2.0/UDP {ALICE};branch=z9hG4bKd{n}"),
                "From: <sip:alice@example.com>;tag=r".into(),
                "To: <sip:alice@example.com>".into(),
                "Call-ID: reg-day".into(),
                format!("CSeq: {n} REGISTER"),
                format!("Contact: <sip:alice@{ALICE}>;expires=600;reg-id=1"),
            ],
        );
        values(&h.one(&reg, ALICE, REGISTRAR, "REGISTER "), "Contact")
    };
    let day = h.core.origin.1 / 86_400 * 86_400;
    h.core.origin.1 = day - 30;
    let yesterday = register(&mut h, 1);
    assert_eq!(yesterday.len(), 1, "{yesterday:?}");
    let old = yesterday[0]
        .strip_suffix(";expires=600;reg-id=1")
        .expect("kept");
    h.core.origin.1 = day + 10;
    let today = register(&mut h, 2);
    assert_eq!(today.len(), 2, "{today:?}");
    assert!(today[0].ends_with(";expires=600;reg-id=1") && !today[0].starts_with(old));
    assert_eq!(today[1], format!("{old};expires=0"));
    h.core.origin.1 = day + 3600;
    assert_eq!(register(&mut h, 3).len(), 1, "a lifetime into the day");
    h.outside_saw_nothing_inside();
}
