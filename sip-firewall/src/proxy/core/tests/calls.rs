//! The proxy core on a fake clock: forking, best response, CANCEL, timeouts, strays,
//! retransmissions, policy, and that every transaction is freed.

use super::*;

/// Beside [`loopback`]'s: bob, a subscriber. 10.0.0.0/8 is allow-listed (registers
/// without digest); outsiders are 192.0.2.0/24.
const CONFIG: &str = r#"
[auth]
users = [{ user = "bob", domain = "example.com", password = "pw" }]
"#;

/// A core of `CONFIG` whose observer records what it hears, with bob registered from
/// 10.0.0.21:21.
fn observed_with_bob() -> (Loopback, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let mut h = Loopback::observed_by(&loopback(CONFIG), rec.clone());
    h.register(21);
    (h, rec)
}

fn harness() -> Loopback {
    Loopback::with_config(&loopback(CONFIG))
}

/// The one INVITE in what the core sent: where it went, and its text.
fn only_invite(sent: &[(SocketAddr, String)]) -> &(SocketAddr, String) {
    let invites = starting(sent, "INVITE");
    assert_eq!(invites.len(), 1, "{sent:?}");
    invites[0]
}

/// The harness with bob registered from 10.0.0.21:21 (his contact there).
fn harness_with_bob() -> Loopback {
    let mut h = harness();
    h.register(21);
    h
}

impl Loopback {
    /// Our stamp of dialog `call_id` (From-tag `c`) between `caller` and `callee`, now.
    fn stamp(&self, call_id: &str, caller: Destination, callee: Destination) -> String {
        let now = self.core.unix_secs(self.now);
        self.core.keys.stamp.seal(now, call_id, "c", caller, callee)
    }

    /// The caller's INVITE with branch `branch`: the request as it reached bob's contact 21.
    fn invite_to_bob(&mut self, branch: &str) -> String {
        let (_, sent) = self.feed(&invite(branch), "192.0.2.1:5060");
        sent_to(&sent, 21)
    }

    /// `d` later (the timers run) no transaction is left, client or server.
    fn all_ended_after(&mut self, d: Duration) {
        self.advance(d);
        assert_eq!(self.core.active(), (0, 0));
    }

    fn register(&mut self, contact_port: u16) {
        let msg = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.{contact_port}:{contact_port};branch=z9hG4bKreg{contact_port}\r\nFrom: <sip:bob@example.com>;tag=r\r\nTo: <sip:bob@example.com>\r\nCall-ID: reg{contact_port}\r\nCSeq: 1 REGISTER\r\nContact: <sip:bob@10.0.0.{contact_port}:{contact_port}>\r\nContent-Length: 0\r\n\r\n"
        );
        let src = format!("10.0.0.{contact_port}:{contact_port}");
        let (_, sent) = self.feed(&msg, &src);
        assert!(sent[0].1.starts_with("SIP/2.0 200"), "{sent:?}");
    }
}

fn invite(branch: &str) -> String {
    format!(
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\nMax-Forwards: 70\r\nRoute: <sip:evil.example.net;lr>\r\nFrom: <sip:carol@other.org>;tag=c\r\nTo: <sip:bob@example.com>\r\nCall-ID: call-{branch}\r\nCSeq: 1 INVITE\r\nContact: <sip:carol@192.0.2.1>\r\nContent-Length: 0\r\n\r\n"
    )
}

/// A response to the request `req` (as the proxy forwarded it), from its UAS.
fn response(req: &str, code: u16, to_tag: &str) -> String {
    let lines = response_lines(req, to_tag);
    format!("SIP/2.0 {code} Whatever\r\n{lines}Content-Length: 0\r\n\r\n")
}

/// What was sent to the port `port` (each branch's contact has its own).
fn sent_to(sent: &[(SocketAddr, String)], port: u16) -> String {
    sent.iter()
        .find(|(a, _)| a.port() == port)
        .unwrap_or_else(|| panic!("nothing sent to port {port}"))
        .1
        .clone()
}

/// What the core sent that starts with `prefix` (a method or a status).
fn starting<'a>(sent: &'a [(SocketAddr, String)], prefix: &str) -> Vec<&'a (SocketAddr, String)> {
    sent.iter().filter(|(_, m)| m.starts_with(prefix)).collect()
}

fn starts(sent: &[(SocketAddr, String)], prefix: &str) -> usize {
    starting(sent, prefix).len()
}

#[test]
fn parallel_fork_2xx_cancels_the_other_branch() {
    let mut h = harness_with_bob();
    h.register(22);
    let (a, sent) = h.feed(&invite("z9hG4bKinv1"), "192.0.2.1:5060");
    assert_eq!(a, Action::Absorb);
    // 100 to the caller first (before the callees can answer), one INVITE per contact,
    // each to its contact's address.
    assert_eq!(starts(&sent, "SIP/2.0 100"), 1);
    assert!(sent[0].1.starts_with("SIP/2.0 100"), "{sent:?}");
    let invites = starting(&sent, "INVITE");
    assert_eq!(invites.len(), 2);
    let to21 = &sent_to(&sent, 21);
    let to22 = &sent_to(&sent, 22);
    assert!(to21.starts_with("INVITE sip:bob@10.0.0.21:21 SIP/2.0"));
    // Our Via on top with a unique branch, rport/received on the caller's, Max-Forwards
    // decremented, Record-Route added, the preloaded Route of an outsider stripped.
    assert!(to21.contains("\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsfw"));
    assert!(to21.contains("Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKinv1;rport=5060"));
    assert!(to21.contains("Max-Forwards: 69"));
    let stamp = h.core.keys.stamp.seal(
        h.core.unix_secs(h.now),
        "call-z9hG4bKinv1",
        "c",
        Destination {
            addr: "192.0.2.1:5060".parse().unwrap(),
            transport: Transport::Datagram,
        },
        Destination {
            addr: "10.0.0.21:21".parse().unwrap(),
            transport: Transport::Datagram,
        },
    );
    assert!(to21.contains(&format!(
        "Record-Route: <sip:127.0.0.1:5060;lr;sfw={stamp}>"
    )));
    assert!(!to21.contains("evil.example.net"));

    // Branch 21 rings: relayed upstream, our Via removed.
    let (_, sent) = h.feed(&response(to21, 180, "t21"), "10.0.0.21:21");
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, "192.0.2.1:5060".parse().unwrap());
    assert!(sent[0].1.starts_with("SIP/2.0 180"));
    assert!(!sent[0].1.contains("z9hG4bKsfw"));
    // Branch 22 answers: the 200 goes up, branch 21 (which rang) is cancelled.
    let (_, sent) = h.feed(&response(to22, 200, "t22"), "10.0.0.22:22");
    assert_eq!(starts(&sent, "SIP/2.0 200"), 1);
    let cancels = starting(&sent, "CANCEL");
    assert_eq!(cancels.len(), 1);
    assert_eq!(cancels[0].0.port(), 21);
    assert!(cancels[0].1.contains("CSeq: 1 CANCEL"));
    // A 2xx retransmission still matches (RFC 6026 Accepted) and goes up.
    let (_, sent) = h.feed(&response(to22, 200, "t22"), "10.0.0.22:22");
    assert_eq!(starts(&sent, "SIP/2.0 200"), 1);
    // Branch 21 answers 487: acknowledged hop by hop, not relayed (a 2xx went up).
    let (_, sent) = h.feed(&response(to21, 487, "t21"), "10.0.0.21:21");
    assert_eq!(starts(&sent, "ACK"), 1);
    assert_eq!(starts(&sent, "SIP/2.0"), 0);
    // Everything ends and is freed.
    h.all_ended_after(Duration::from_secs(60));
}

#[test]
fn best_response_and_timeout() {
    let mut h = harness_with_bob();
    h.register(22);
    let to21 = h.invite_to_bob("z9hG4bKinv2");
    // 486 on one branch: nothing goes up while the other is pending.
    let (_, sent) = h.feed(&response(&to21, 486, "t21"), "10.0.0.21:21");
    assert_eq!(starts(&sent, "SIP/2.0"), 0);
    // The other never answers: Timer A retransmits, Timer B (32s) times it out; the best
    // of 486 and the timeout's 408 is the 486 (same class, first kept).
    let sent = h.advance(Duration::from_secs(33));
    assert!(
        sent.iter()
            .filter(|(a, m)| a.port() == 22 && m.starts_with("INVITE"))
            .count()
            >= 5,
        "Timer A retransmissions"
    );
    let finals: Vec<_> = sent
        .iter()
        .filter(|(a, m)| a.port() == 5060 && m.starts_with("SIP/2.0 4"))
        .collect();
    // The 486 once: the caller is an outsider that proved nothing (not allow-listed, not
    // authenticated), so no Timer G toward it; its own retransmissions would be
    // answered.
    assert_eq!(finals.len(), 1, "{finals:?}");
    assert!(finals[0].1.starts_with("SIP/2.0 486"), "{finals:?}");
    h.all_ended_after(Duration::from_secs(60));
}

#[test]
fn no_branch_answers_408() {
    let mut h = harness_with_bob();
    h.feed(&invite("z9hG4bKinv3"), "192.0.2.1:5060");
    let sent = h.advance(Duration::from_secs(33));
    let finals = starting(&sent, "SIP/2.0 4");
    assert!(!finals.is_empty());
    assert!(
        finals.iter().all(|(_, m)| m.starts_with("SIP/2.0 408")),
        "{finals:?}"
    );
    h.all_ended_after(Duration::from_secs(60));
}

#[test]
fn cancel_matched_or_481() {
    let mut h = harness_with_bob();
    let to21 = h.invite_to_bob("z9hG4bKinv4");
    let cancel = invite("z9hG4bKinv4")
        .replace("INVITE sip", "CANCEL sip")
        .replace("1 INVITE", "1 CANCEL");
    // Before any provisional: 200 to the CANCEL, but no CANCEL downstream yet (9.1).
    let (_, sent) = h.feed(&cancel, "192.0.2.1:5060");
    assert_eq!(starts(&sent, "SIP/2.0 200"), 1);
    assert_eq!(starts(&sent, "CANCEL"), 0);
    // The provisional arrives: now the CANCEL goes; the 487 goes up.
    let (_, sent) = h.feed(&response(&to21, 180, "t"), "10.0.0.21:21");
    assert_eq!(starts(&sent, "CANCEL"), 1);
    let (_, sent) = h.feed(&response(&to21, 487, "t"), "10.0.0.21:21");
    assert_eq!(starts(&sent, "SIP/2.0 487"), 1);
    assert_eq!(starts(&sent, "ACK"), 1);
    // A CANCEL for nothing: 481.
    let stray = cancel.replace("z9hG4bKinv4", "z9hG4bKnothing");
    let (_, sent) = h.feed(&stray, "192.0.2.1:5060");
    assert!(sent[0].1.starts_with("SIP/2.0 481"), "{sent:?}");
    h.all_ended_after(Duration::from_secs(60));
}

#[test]
fn retransmissions_absorbed_and_acks() {
    let mut h = harness();
    // Unregistered subscriber: 480 (no 100 first: after a 100 the UAC would stop
    // retransmitting, and a lost 480 would never be recovered), retransmitted INVITE gets
    // the same answer again, and the ACK (same branch) is absorbed.
    let (_, first) = h.feed(&invite("z9hG4bKinv5"), "192.0.2.1:5060");
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(first[0].1.starts_with("SIP/2.0 480"));
    let (a, again) = h.feed(&invite("z9hG4bKinv5"), "192.0.2.1:5060");
    assert_eq!(a, Action::Absorb);
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].1, first[0].1, "the last response, byte for byte");
    let ack = invite("z9hG4bKinv5")
        .replace("INVITE sip", "ACK sip")
        .replace("1 INVITE", "1 ACK");
    let (a, sent) = h.feed(&ack, "192.0.2.1:5060");
    assert_eq!(a, Action::Absorb);
    assert!(sent.is_empty());
    h.all_ended_after(Duration::from_secs(40));
}

#[test]
fn strays_scanners_and_policy() {
    let mut h = harness();
    let stray = "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKsfwdead.1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:c@d>;tag=2\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";
    let (a, sent) = h.feed(stray, "10.0.0.9:5060");
    assert_eq!(
        a,
        Action::Drop {
            reason: "stray_response"
        }
    );
    assert!(sent.is_empty());
    let scanner = invite("z9hG4bKscan").replace(
        "Content-Length: 0",
        "User-Agent: friendly-scanner\r\nContent-Length: 0",
    );
    let (a, sent) = h.feed(&scanner, "192.0.2.66:5060");
    assert_eq!(a, Action::Drop { reason: "scanner" });
    assert!(sent.is_empty(), "scanners learn nothing");
    // In-dialog request without our Route: 404.
    let bye = "BYE sip:bob@10.0.0.21 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKbye\r\nFrom: <sip:carol@other.org>;tag=c\r\nTo: <sip:bob@example.com>;tag=b\r\nCall-ID: y\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n";
    let (_, sent) = h.feed(bye, "192.0.2.1:5060");
    assert!(sent[0].1.starts_with("SIP/2.0 404"), "{sent:?}");
    // Outsider to a foreign domain: 403, nothing forwarded.
    let relay =
        invite("z9hG4bKrelay").replace("sip:bob@example.com SIP", "sip:bob@198.51.100.1 SIP");
    let (_, sent) = h.feed(&relay, "192.0.2.1:5060");
    assert_eq!(starts(&sent, "INVITE"), 0);
    assert_eq!(starts(&sent, "SIP/2.0 403"), 1);
    // A user of ours calling out must authenticate first: 407 with both algorithms.
    let out = relay
        .replace("carol@other.org", "bob@example.com")
        .replace("z9hG4bKrelay", "z9hG4bKout");
    let (_, sent) = h.feed(&out, "192.0.2.1:5060");
    let chal = sent_starting(&sent, "SIP/2.0 407");
    assert!(chal.contains("Proxy-Authenticate: Digest realm=\"example.com\""));
    assert!(chal.contains("algorithm=SHA-256") && chal.contains("algorithm=MD5"));
    // OPTIONS to the proxy itself: 200.
    let ping = "OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKping\r\nFrom: <sip:x@other.org>;tag=1\r\nTo: <sip:127.0.0.1>\r\nCall-ID: p\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let (_, sent) = h.feed(ping, "192.0.2.1:5060");
    assert!(sent[0].1.starts_with("SIP/2.0 200"));
    h.all_ended_after(Duration::from_secs(40));
}

#[test]
fn in_dialog_loose_routing() {
    let mut h = harness();
    let bye = |route: &str, branch: &str| {
        format!(
            "BYE sip:bob@10.0.0.21:21 SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1;branch={branch}\r\nRoute: {route}\r\nFrom: <sip:carol@other.org>;tag=c\r\nTo: <sip:bob@example.com>;tag=b\r\nCall-ID: y\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        )
    };
    // A Route naming us without the stamp of this dialog (forged, or from another
    // dialog): not ours to relay, whatever it says.
    let party = |a: &str| Destination {
        addr: a.parse().unwrap(),
        transport: Transport::Datagram,
    };
    let (caller, callee) = (party("192.0.2.1:5060"), party("10.0.0.21:21"));
    let other = h.stamp("another-call", caller, callee);
    for (route, branch) in [
        ("<sip:127.0.0.1:5060;lr>".to_string(), "z9hG4bKf1"),
        (format!("<sip:127.0.0.1:5060;lr;sfw={other}>"), "z9hG4bKf2"),
    ] {
        let (_, sent) = h.feed(&bye(&route, branch), "192.0.2.1:5060");
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert!(sent[0].1.starts_with("SIP/2.0 404"), "{sent:?}");
    }
    let stamp = h.stamp("y", caller, callee);
    let (_, sent) = h.feed(
        &bye(
            &format!("<sip:127.0.0.1:5060;lr;sfw={stamp}>"),
            "z9hG4bKbye2",
        ),
        "192.0.2.1:5060",
    );
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, "10.0.0.21:21".parse().unwrap());
    assert!(!sent[0].1.contains("Route:"), "our Route popped");
    let ok = response(&sent[0].1, 200, "b");
    let (_, up) = h.feed(&ok, "10.0.0.21:21");
    assert_eq!(up.len(), 1);
    assert!(up[0].1.starts_with("SIP/2.0 200"));
    assert!(up[0].1.contains("CSeq: 2 BYE"));
    h.all_ended_after(Duration::from_secs(40));
}

#[test]
fn authenticated_user_goes_out_through_the_outbound_proxy() {
    let config = format!("{CONFIG}[proxy]\noutbound = \"203.0.113.5:5070\"\n");
    let mut h = Loopback::with_config(&loopback(&config));
    let call = |branch: &str, auth: &str| {
        format!(
            "INVITE sip:dave@carrier.example SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch={branch}\r\nFrom: <sip:bob@example.com>;tag=b\r\nTo: <sip:dave@carrier.example>\r\nCall-ID: out\r\nCSeq: 1 INVITE\r\n{auth}Content-Length: 0\r\n\r\n"
        )
    };
    let (_, sent) = h.feed(&call("z9hG4bKo1", ""), "192.0.2.1:5060");
    let chal = sent_starting(&sent, "SIP/2.0 407");
    let nonce = nonce_of(chal);
    let uri = "sip:dave@carrier.example";
    let cred = credentials("Proxy-Authorization", &nonce, "00000001", "INVITE", uri);
    let (_, sent) = h.feed(&call("z9hG4bKo2", &cred), "192.0.2.1:5060");
    let out = only_invite(&sent);
    assert_eq!(out.0, "203.0.113.5:5070".parse().unwrap());
    assert!(
        !out.1.contains("Proxy-Authorization"),
        "our credentials stripped"
    );
    // The same credentials again (new transaction): a replayed nonce-count, challenged.
    let (_, sent) = h.feed(&call("z9hG4bKo3", &cred), "192.0.2.1:5060");
    assert_eq!(starts(&sent, "INVITE"), 0);
    assert_eq!(starts(&sent, "SIP/2.0 407"), 1);
    // Someone else's identity with bob's credentials: 403.
    let (_, sent) = h.feed(
        &call("z9hG4bKo4", &cred).replace("From: <sip:bob@", "From: <sip:carol@"),
        "192.0.2.1:5060",
    );
    assert_eq!(starts(&sent, "SIP/2.0 403"), 1);
}

#[test]
fn trusted_peer_reaches_foreign_targets() {
    let mut h = harness();
    let from_trunk = |branch: &str, route: &str| {
        invite(branch)
            .replace("sip:bob@example.com SIP", "sip:dave@198.51.100.7:5080 SIP")
            .replace("192.0.2.1:5060;branch", "10.1.1.1:5060;branch")
            .replace("<sip:evil.example.net;lr>", route)
    };
    // No Route: to the Request-URI.
    let msg = from_trunk("z9hG4bKtrunk1", "<sip:198.51.100.9;lr>")
        .replace("Route: <sip:198.51.100.9;lr>\r\n", "");
    let (_, sent) = h.feed(&msg, "10.1.1.1:5060");
    let out = only_invite(&sent);
    assert_eq!(out.0, "198.51.100.7:5080".parse().unwrap());
    assert!(out.1.contains("Record-Route: <sip:127.0.0.1:5060;lr;sfw="));
    // A trusted peer's preloaded Route is honoured (an outsider's is stripped).
    let (_, sent) = h.feed(
        &from_trunk("z9hG4bKtrunk2", "<sip:198.51.100.9;lr>"),
        "10.1.1.1:5060",
    );
    let out = only_invite(&sent);
    assert_eq!(out.0, "198.51.100.9:5060".parse().unwrap());
    assert!(out.1.contains("Route: <sip:198.51.100.9;lr>"));
}

#[test]
fn timer_c_cancels_a_branch_that_rings_forever() {
    let mut h = harness_with_bob();
    let to21 = h.invite_to_bob("z9hG4bKinvC");
    h.feed(&response(&to21, 180, "t"), "10.0.0.21:21");
    // Timer C (3 minutes after the last provisional): the branch is cancelled.
    let sent = h.advance(Duration::from_secs(179));
    assert_eq!(starts(&sent, "CANCEL"), 0);
    let sent = h.advance(Duration::from_secs(2));
    let cancels = starting(&sent, "CANCEL");
    // The CANCEL and its Timer E retransmissions, all the same request.
    assert!(!cancels.is_empty());
    assert!(cancels.iter().all(|c| c.1 == cancels[0].1));
    // The UAS answers neither the CANCEL nor the INVITE: after 64*T1 the branch is given
    // up and the caller gets 408; then everything is freed.
    let sent = h.advance(Duration::from_secs(33));
    assert!(starts(&sent, "SIP/2.0 408") >= 1, "{sent:?}");
    h.all_ended_after(Duration::from_secs(60));
}

/// Records what the observer hooks report.
#[derive(Default)]
struct Recorder(std::sync::Mutex<Vec<String>>);

impl crate::seams::Observer for Recorder {
    fn client_transaction_created(&self, branch: &str, dest: Destination) {
        self.0
            .lock()
            .unwrap()
            .push(format!("created {branch} {}", dest.addr));
    }
    fn client_transaction_terminated(&self, branch: &str, dest: Destination) {
        self.0
            .lock()
            .unwrap()
            .push(format!("terminated {branch} {}", dest.addr));
    }
    fn auth_failure(&self, source: SocketAddr, user: Option<&str>, reason: &str) {
        self.0
            .lock()
            .unwrap()
            .push(format!("auth {source} {user:?} {reason}"));
    }
    fn scanner(&self, source: SocketAddr, user_agent: &str) {
        self.0
            .lock()
            .unwrap()
            .push(format!("scanner {source} {user_agent}"));
    }
    fn refused_target(&self, source: SocketAddr, user: &str, code: u16) {
        self.0
            .lock()
            .unwrap()
            .push(format!("refused {source} {user} {code}"));
    }
}

/// The evidence of a sweep over user names: each new request whose target user is refused
/// (480 unregistered or unknown, 403 not ours to relay) names that user to the observer;
/// a call that is forwarded, a challenge and a request without a user name do not.
#[test]
fn refused_targets_are_reported() {
    let (mut h, rec) = observed_with_bob();
    let target = |user: &str, host: &str, n: usize| {
        invite(&format!("z9hG4bKsweep{n}"))
            .replace("Route: <sip:evil.example.net;lr>\r\n", "")
            .replace(
                "INVITE sip:bob@example.com",
                &format!("INVITE sip:{user}@{host}"),
            )
    };
    let (_, sent) = h.feed(&target("bob", "example.com", 1), "192.0.2.9:5060");
    assert!(!sent_to(&sent, 21).is_empty(), "bob's call is forwarded");
    let (_, sent) = h.feed(&target("100", "example.com", 2), "192.0.2.9:5060");
    assert_eq!(starts(&sent, "SIP/2.0 480"), 1, "{sent:?}");
    let (_, sent) = h.feed(&target("101", "elsewhere.example", 3), "192.0.2.9:5060");
    assert_eq!(starts(&sent, "SIP/2.0 403"), 1, "{sent:?}");
    let challenge = "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKch\r\nFrom: <sip:102@example.com>;tag=1\r\nTo: <sip:102@example.com>\r\nCall-ID: ch\r\nCSeq: 1 REGISTER\r\nContent-Length: 0\r\n\r\n";
    let (_, sent) = h.feed(challenge, "192.0.2.9:5060");
    assert_eq!(starts(&sent, "SIP/2.0 401"), 1, "{sent:?}");
    let foreign = challenge
        .replace("sip:example.com", "sip:elsewhere.example")
        .replace("102@example.com", "103@elsewhere.example")
        .replace("z9hG4bKch", "z9hG4bKfr");
    let (_, sent) = h.feed(&foreign, "192.0.2.9:5060");
    assert_eq!(starts(&sent, "SIP/2.0 403"), 1, "{sent:?}");
    let refused: Vec<String> = rec
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.starts_with("refused"))
        .cloned()
        .collect();
    assert_eq!(
        refused,
        vec![
            "refused 192.0.2.9:5060 100 480".to_string(),
            "refused 192.0.2.9:5060 101 403".to_string(),
            "refused 192.0.2.9:5060 103 403".to_string()
        ]
    );
}

#[test]
fn observer_hooks_for_the_fast_path() {
    let (mut h, rec) = observed_with_bob();
    let to21 = h.invite_to_bob("z9hG4bKobs");
    h.feed(&response(&to21, 486, "t"), "10.0.0.21:21");
    h.advance(Duration::from_secs(40));
    let scan = invite("z9hG4bKscan2").replace(
        "Content-Length: 0",
        "User-Agent: sipvicious\r\nContent-Length: 0",
    );
    h.feed(&scan, "192.0.2.66:5060");
    let bad = "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.7;branch=z9hG4bKbad\r\nFrom: <sip:bob@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: bad\r\nCSeq: 1 REGISTER\r\nAuthorization: Digest username=\"bob\", realm=\"example.com\", nonce=\"forged\", uri=\"sip:example.com\", response=\"0\", qop=auth, nc=00000001, cnonce=\"c\"\r\nContent-Length: 0\r\n\r\n";
    h.feed(bad, "192.0.2.7:5060");
    let events = rec.0.lock().unwrap().clone();
    let created: Vec<_> = events.iter().filter(|e| e.starts_with("created")).collect();
    assert_eq!(created.len(), 1, "{events:?}");
    assert!(created[0].starts_with("created z9hG4bKsfw") && created[0].ends_with("10.0.0.21:21"));
    let branch = created[0].split(' ').nth(1).unwrap();
    assert!(
        events.contains(&format!("terminated {branch} 10.0.0.21:21")),
        "{events:?}"
    );
    assert!(
        events.contains(&"scanner 192.0.2.66:5060 sipvicious".to_string()),
        "{events:?}"
    );
    assert!(
        events.contains(&"auth 192.0.2.7:5060 Some(\"bob\") bad_nonce".to_string()),
        "{events:?}"
    );
}

#[test]
fn our_cancel_does_not_retire_the_invite_branch() {
    let (mut h, rec) = observed_with_bob();
    let to21 = h.invite_to_bob("z9hG4bKcx");
    h.feed(&response(&to21, 180, "t"), "10.0.0.21:21");
    let cancel = invite("z9hG4bKcx")
        .replace("INVITE sip", "CANCEL sip")
        .replace("1 INVITE", "1 CANCEL");
    let (_, sent) = h.feed(&cancel, "192.0.2.1:5060");
    let ours = sent_starting(&sent, "CANCEL").to_string();
    h.feed(&response(&ours, 200, "t"), "10.0.0.21:21");
    // The CANCEL's transaction ends (Timer K) while the INVITE's still waits for its 487.
    h.advance(Duration::from_secs(6));
    let ended = |rec: &Recorder| {
        rec.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| e.starts_with("terminated"))
            .count()
    };
    assert_eq!(ended(&rec), 0, "the INVITE's branch is still live");
    let (_, sent) = h.feed(&response(&to21, 487, "t"), "10.0.0.21:21");
    assert_eq!(starts(&sent, "SIP/2.0 487"), 1);
    h.advance(Duration::from_secs(40));
    assert_eq!(ended(&rec), 1);
    assert_eq!(h.core.active(), (0, 0));
}

/// Amplification: a copy of a request (same top Via, so the same transaction by
/// RFC 3261 17.2.3) from another source gets nothing, and is counted; the original source's
/// retransmission still gets the stored answer.
#[test]
fn copies_from_another_source_get_nothing() {
    let mut h = harness();
    let opt = "OPTIONS sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKcopy1\r\nVia: SIP/2.0/UDP 192.0.2.50;branch=z9hG4bKx\r\nMax-Forwards: 70\r\nFrom: <sip:carol@other.org>;tag=c\r\nTo: <sip:bob@example.com>\r\nCall-ID: copy1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
    let (_, sent) = h.feed(opt, "192.0.2.1:5060");
    assert_eq!(sent.len(), 1, "{sent:?}");
    for port in 5061..5071 {
        let (a, sent) = h.feed(opt, &format!("192.0.2.1:{port}"));
        assert!(
            sent.is_empty(),
            "answered a copy from port {port}: {sent:?}"
        );
        assert!(matches!(a, Action::Drop { .. }));
    }
    let (a, sent) = h.feed(opt, "198.51.100.9:5060");
    assert!(sent.is_empty() && matches!(a, Action::Drop { .. }));
    assert_eq!(
        h.core
            .metrics
            .retransmissions
            .with_label_values(&["foreign_source"])
            .get(),
        11
    );
    // The original source's retransmission: the stored answer, to it.
    let (_, sent) = h.feed(opt, "192.0.2.1:5060");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, "192.0.2.1:5060".parse::<SocketAddr>().unwrap());
    // An ACK from elsewhere does not end an INVITE transaction of another source.
    let inv = invite("z9hG4bKcopy2");
    let (_, sent) = h.feed(&inv, "192.0.2.1:5060");
    assert!(
        sent.iter()
            .any(|(_, m)| m.starts_with("SIP/2.0 480") || m.starts_with("SIP/2.0 404")),
        "{sent:?}"
    );
    let ack = inv
        .replacen("INVITE sip", "ACK sip", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 ACK");
    let (a, sent) = h.feed(&ack, "192.0.2.2:5060");
    assert!(sent.is_empty() && matches!(a, Action::Drop { .. }), "{a:?}");
}

/// Timer G still resends a relayed final toward a source that proved it receives (an
/// allow-listed peer), until it ACKs.
#[test]
fn timer_g_only_toward_verified_sources() {
    let mut h = harness_with_bob();
    // Without the preloaded Route (an allow-listed peer's would be honoured).
    let inv = invite("z9hG4bKtrusted")
        .replace("192.0.2.1", "10.0.0.99")
        .replace("Route: <sip:evil.example.net;lr>\r\n", "");
    let (_, sent) = h.feed(&inv, "10.0.0.99:5060");
    let to21 = sent_to(&sent, 21);
    h.feed(&response(&to21, 486, "t21"), "10.0.0.21:21");
    let sent = h.advance(Duration::from_secs(3));
    let resends = sent
        .iter()
        .filter(|(a, m)| a.port() == 5060 && m.starts_with("SIP/2.0 486"))
        .count();
    assert!(
        resends >= 2,
        "Timer G toward the allow-listed caller: {resends}"
    );
    h.all_ended_after(Duration::from_secs(60));
}

/// Held resources: server transactions are bounded per source and in total; a
/// request beyond gets 503 with Retry-After statelessly (no transaction), counted; freed
/// transactions make room again.
#[test]
fn transactions_bounded_per_source_and_in_total() {
    let cfg = loopback(CONFIG).replace(
        "listen = [\"127.0.0.1:5060\"]",
        "listen = [\"127.0.0.1:5060\"]\nmax_transactions = 5\nmax_transactions_per_source = 3",
    );
    let mut h = Loopback::with_config(&cfg);
    let opt = |src: &str, n: usize| {
        let b: String = src.chars().filter(char::is_ascii_digit).collect();
        format!(
            "OPTIONS sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {src};branch=z9hG4bKcap{b}x{n}\r\nMax-Forwards: 70\r\nFrom: <sip:x@other.org>;tag=c\r\nTo: <sip:bob@example.com>\r\nCall-ID: cap{n}x{b}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let is_503 = |a: &Action| matches!(a, Action::Reply { code: 503, extra, .. } if extra.iter().any(|e| e.starts_with("Retry-After:")));
    let before = crate::metrics::limits_refused("transactions_per_source");
    for n in 0..3 {
        let (a, _) = h.feed(&opt("192.0.2.1:5060", n), "192.0.2.1:5060");
        assert_eq!(a, Action::Absorb, "{n}");
    }
    let (a, sent) = h.feed(&opt("192.0.2.1:5060", 3), "192.0.2.1:5060");
    assert!(is_503(&a) && sent.is_empty(), "{a:?}");
    assert_eq!(h.core.active().0, 3, "no transaction for the refused one");
    assert!(crate::metrics::limits_refused("transactions_per_source") > before);
    // Another source still gets in, until the total.
    for n in 0..2 {
        let (a, _) = h.feed(&opt("192.0.2.2:5060", n), "192.0.2.2:5060");
        assert_eq!(a, Action::Absorb);
    }
    let (a, _) = h.feed(&opt("192.0.2.2:5060", 2), "192.0.2.2:5060");
    assert!(is_503(&a), "total reached: {a:?}");
    let (a, _) = h.feed(&opt("10.0.0.9:5060", 0), "10.0.0.9:5060");
    assert!(
        is_503(&a),
        "allow-listed sources are bound by the total: {a:?}"
    );
    // Timer J ends them; then there is room again.
    h.all_ended_after(Duration::from_secs(40));
    assert!(h.core.servers.no_source_counted());
    let (a, _) = h.feed(&opt("192.0.2.1:5060", 9), "192.0.2.1:5060");
    assert_eq!(a, Action::Absorb);
}

/// A subscriber cannot REGISTER bindings from a spoofed source with a nonce it
/// got at its own address: challenged again with stale=true, nothing bound; from its own
/// address the same credentials work.
#[test]
fn register_from_a_spoofed_source_with_someone_elses_nonce() {
    let mut h = harness();
    let reg = |src: &str, auth: &str| {
        format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {src};branch=z9hG4bKsp{}\r\nMax-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=b\r\nTo: <sip:bob@example.com>\r\nCall-ID: spoof@x\r\nCSeq: {} REGISTER\r\nContact: <sip:bob@203.0.113.50:5060>\r\n{auth}Content-Length: 0\r\n\r\n",
            auth.len(),
            auth.len() % 1000 + 1
        )
    };
    let (_, sent) = h.feed(&reg("192.0.2.1:5060", ""), "192.0.2.1:5060");
    let challenge = &sent[0].1;
    assert!(challenge.starts_with("SIP/2.0 401"), "{challenge}");
    let nonce = nonce_of(challenge);
    let creds = |nc: &str| credentials("Authorization", &nonce, nc, "REGISTER", "sip:example.com");
    let (_, sent) = h.feed(
        &reg("203.0.113.9:5060", &creds("00000001")),
        "203.0.113.9:5060",
    );
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert!(
        sent[0].1.starts_with("SIP/2.0 401") && sent[0].1.contains("stale=true"),
        "{}",
        sent[0].1
    );
    assert!(unbound(&h.core, "bob@example.com", h.now));
    let (_, sent) = h.feed(&reg("192.0.2.1:5060", &creds("00000002")), "192.0.2.1:5060");
    assert!(sent[0].1.starts_with("SIP/2.0 200"), "{}", sent[0].1);
    assert_eq!(
        h.core.store.lock().lookup("bob@example.com", h.now).len(),
        1
    );
}

/// A CANCEL matching someone's INVITE (same top Via) from another source cancels nothing:
/// 481 statelessly (no transaction that would stand in the way of the real CANCEL), and the
/// call keeps ringing; from the INVITE's source it cancels.
#[test]
fn cancel_from_another_source_cancels_nothing() {
    let mut h = harness_with_bob();
    let inv = invite("z9hG4bKcx1");
    let (_, sent) = h.feed(&inv, "192.0.2.1:5060");
    let to21 = sent_to(&sent, 21);
    h.feed(&response(&to21, 180, "t21"), "10.0.0.21:21");
    let cancel = inv
        .replacen("INVITE sip", "CANCEL sip", 1)
        .replace("CSeq: 1 INVITE", "CSeq: 1 CANCEL");
    let (a, sent) = h.feed(&cancel, "198.51.100.77:5060");
    assert!(sent.is_empty(), "{sent:?}");
    assert!(matches!(a, Action::Reply { code: 481, .. }), "{a:?}");
    let (_, sent) = h.feed(&cancel, "192.0.2.1:5060");
    assert!(
        sent.iter().any(|(_, m)| m.starts_with("CANCEL")),
        "{sent:?}"
    );
    assert!(
        sent.iter().any(|(_, m)| m.starts_with("SIP/2.0 200")),
        "{sent:?}"
    );
}
