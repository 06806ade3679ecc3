//! The toll-fraud guard in relay mode, on a fake clock: the operator's registrar checks the
//! credentials, so a call is booked on their account only when the registrar answers 2xx;
//! its 407 to made-up credentials counts nothing; a call that passes a critical threshold
//! is ended by the edge (BYE both ways) and suspends the account, whose next INVITE is
//! refused before it reaches the registrar.

use super::*;

/// The edge's address; the registrar behind it; a phone outside; the trunk gateway the
/// registrar sends calls to.
const EDGE: &str = "192.0.2.10";
const REGISTRAR: &str = "10.0.0.5:5060";
const PHONE: &str = "203.0.113.7:40000";
const GATEWAY: &str = "10.0.0.9:5060";

/// Rule "00": two concurrent calls at most.
const CONCURRENT_2: &str = "[[fraud.rules]]\nprefix = \"00\"\nconcurrent = { critical = 2 }\n";

struct R {
    core: Core,
    now: Instant,
}

impl R {
    fn new(fraud: &str) -> R {
        let text = format!(
            "[sip]\nlisten = [\"0.0.0.0:5060\"]\ndomains = [\"example.com\"]\n\
             [registrar]\nmode = \"relay\"\nrelay_to = \"sip:{REGISTRAR}\"\n[fraud]\n{fraud}\n"
        );
        let now = Instant::now();
        let mut core = super::core(&text, now);
        core.local.set_addrs(vec![EDGE.parse().expect("ip")]);
        R { core, now }
    }

    fn feed(&mut self, text: &str, source: &str) -> Vec<(SocketAddr, String)> {
        let ctx = ctx_on(source, &format!("{EDGE}:5060"), Transport::Datagram);
        super::feed(&mut self.core, self.now, text, &ctx).1
    }

    /// alice's INVITE `n` to `number` at the carrier, with credentials for `user` (whatever
    /// their response: the registrar, not the edge, checks it): what the edge sent.
    fn invite(&mut self, n: u32, number: &str, user: &str) -> Vec<(SocketAddr, String)> {
        let uri = format!("sip:{number}@carrier.example");
        let text = format!(
            "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKi{n}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@example.com>;tag=f{n}\r\nTo: <{uri}>\r\n\
             Call-ID: call-{n}\r\nCSeq: 2 INVITE\r\nContact: <sip:{user}@{PHONE}>\r\n\
             Proxy-Authorization: Digest username=\"{user}\", realm=\"example.com\", \
             nonce=\"theirs\", uri=\"{uri}\", response=\"0123456789abcdef0123456789abcdef\"\r\n\
             Content-Length: 0\r\n\r\n"
        );
        self.feed(&text, PHONE)
    }

    /// The same INVITE as it reached the registrar.
    fn relayed(&mut self, n: u32, number: &str, user: &str) -> String {
        let sent = self.invite(n, number, user);
        sent.iter()
            .find(|(a, m)| a.to_string() == REGISTRAR && m.starts_with("INVITE"))
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| panic!("INVITE {n} not relayed: {sent:?}"))
    }

    /// The registrar answers the relayed `req` with `status`; a 2xx comes from the gateway,
    /// record-routed by the registrar (its entry above ours). What the edge sent on.
    fn answer(&mut self, req: &str, status: &str) -> Vec<(SocketAddr, String)> {
        let extra = if status.starts_with('2') {
            format!("Record-Route: <sip:{REGISTRAR};lr>\r\nContact: <sip:gw@{GATEWAY}>\r\n")
        } else {
            "Proxy-Authenticate: Digest realm=\"example.com\", nonce=\"n2\"\r\n".into()
        };
        let text = format!(
            "SIP/2.0 {status}\r\n{extra}{}Content-Length: 0\r\n\r\n",
            response_lines(req, "gw")
        );
        self.feed(&text, REGISTRAR)
    }

    /// alice's call `n` to `number`, relayed and answered 200 by the gateway: what the edge
    /// sent on.
    fn answered(&mut self, n: u32, number: &str) -> Vec<(SocketAddr, String)> {
        let req = self.relayed(n, number, "alice");
        self.answer(&req, "200 OK")
    }

    /// alice's call 1 to 004930123, relayed and answered 2xx by the gateway: the route set
    /// of her in-dialog requests, the 200's Record-Route reversed (RFC 3261 12.1.2).
    fn answered_call(&mut self) -> String {
        let back = self.answered(1, "004930123");
        let ok = back
            .iter()
            .find(|(_, m)| m.starts_with("SIP/2.0 200"))
            .map(|(_, m)| m.clone())
            .expect("200 to the phone");
        let route: Vec<&str> = ok
            .lines()
            .filter_map(|l| l.strip_prefix("Record-Route: "))
            .rev()
            .collect();
        route.join(", ")
    }

    /// alice's in-dialog `method` (CSeq 3) of call 1 along `route`, with the `extra` header
    /// lines: the request as it reached the registrar.
    fn in_dialog(&mut self, method: &str, route: &str, extra: &str) -> String {
        let text = format!(
            "{method} sip:gw@{GATEWAY} SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bK{method}1\r\n\
             Max-Forwards: 70\r\nRoute: {route}\r\nFrom: <sip:alice@example.com>;tag=f1\r\n\
             To: <sip:004930123@carrier.example>;tag=gw\r\nCall-ID: call-1\r\nCSeq: 3 {method}\r\n\
             {extra}Content-Length: 0\r\n\r\n"
        );
        let sent = self.feed(&text, PHONE);
        sent.iter()
            .find(|(a, m)| a.to_string() == REGISTRAR && m.starts_with(method))
            .map(|(_, m)| m.clone())
            .unwrap_or_else(|| panic!("{method} not relayed: {sent:?}"))
    }

    /// The gateway's 200 to the in-dialog `req`, with the `extra` header lines, through the
    /// registrar (the request's To already carries the gateway's tag): what the edge sent on.
    fn ok_in_dialog(&mut self, req: &str, extra: &str) -> Vec<(SocketAddr, String)> {
        let text = format!(
            "SIP/2.0 200 OK\r\n{extra}{}Content-Length: 0\r\n\r\n",
            response_lines(req, "gw").replace(";tag=gw;tag=gw", ";tag=gw")
        );
        self.feed(&text, REGISTRAR)
    }

    fn advance(&mut self, d: Duration) -> Vec<(SocketAddr, String)> {
        super::advance(&mut self.core, &mut self.now, d, Duration::from_millis(100))
    }

    fn refused(&self, reason: &str) -> u64 {
        let m = &self.core.metrics.fraud;
        m.refused.with_label_values(&[reason]).get()
    }
}

/// The status lines of the answers the edge sent the phone.
fn to_phone(sent: &[(SocketAddr, String)]) -> Vec<String> {
    sent.iter()
        .filter(|(a, m)| a.to_string() == PHONE && m.starts_with("SIP/2.0"))
        .map(|(_, m)| m.lines().next().unwrap_or("").to_string())
        .collect()
}

/// The edge ended call `n` and no other, with a BYE toward the registrar and one toward
/// the phone.
fn assert_ended_both_ways(sent: &[(SocketAddr, String)], n: u32) {
    let call = format!("Call-ID: call-{n}\r\n");
    let byes: Vec<_> = sent.iter().filter(|(_, m)| m.starts_with("BYE")).collect();
    assert!(
        byes.iter().all(|(_, m)| m.contains(&call)),
        "only call {n} ends: {byes:?}"
    );
    let toward = |who: &str| byes.iter().any(|(a, _)| a.to_string() == who);
    assert!(
        toward(REGISTRAR) && toward(PHONE),
        "BYE both ways: {sent:?}"
    );
}

/// Someone with made-up credentials of alice's calls again and again: every INVITE goes to
/// the registrar, which answers 407; the books count none of them (three calls a minute
/// would suspend her), so alice is never suspended, and her own call the registrar accepts
/// is booked as her first.
#[test]
fn refused_credentials_count_nothing() {
    let mut r = R::new(&format!(
        "{CONCURRENT_2}calls_per_minute = {{ critical = 3 }}\n"
    ));
    for n in 1..=5 {
        let req = r.relayed(n, "004930123", "alice");
        let back = r.answer(&req, "407 Proxy Authentication Required");
        assert_eq!(
            to_phone(&back),
            vec!["SIP/2.0 407 Proxy Authentication Required"]
        );
    }
    assert_eq!(r.core.fraud.lock().calls_active(), 0);
    assert!(
        r.core.fraud.lock().take_store_ops().is_empty(),
        "nobody suspended"
    );
    assert_eq!(
        r.core
            .metrics
            .fraud
            .critical
            .with_label_values(&["concurrent"])
            .get(),
        0
    );
    let back = r.answered(6, "004930123");
    assert_eq!(to_phone(&back), vec!["SIP/2.0 200 OK"]);
    assert_eq!(
        r.core.fraud.lock().calls_active(),
        1,
        "the accepted call is booked"
    );
}

/// Calls the registrar answers 2xx are booked on alice's account: two go on; the third
/// passes the critical threshold once answered, so its 2xx goes up, alice is suspended and
/// the edge ends that call with BYE both ways (the other two go on); her next INVITE is
/// refused (403) before it reaches the registrar, and so is one to a denied prefix.
#[test]
fn answered_calls_are_booked_and_the_critical_one_is_ended() {
    let mut r = R::new(&format!("deny_prefixes = [\"00882\"]\n{CONCURRENT_2}"));
    for n in 1..=2 {
        r.answered(n, &format!("00493012{n}"));
    }
    assert_eq!(r.core.fraud.lock().calls_active(), 2);
    let back = r.answered(3, "004930125");
    assert_eq!(
        to_phone(&back),
        vec!["SIP/2.0 200 OK"],
        "the answer goes up"
    );
    let ops = r.core.fraud.lock().take_store_ops();
    assert!(
        matches!(ops.as_slice(), [crate::fraud::StoreOp::Suspend(s)] if s.account == "alice@example.com"),
        "{ops:?}"
    );
    assert_eq!(r.refused("critical"), 1);
    let sent = r.advance(Duration::from_secs(2));
    assert_ended_both_ways(&sent, 3);
    assert_eq!(r.core.fraud.lock().calls_active(), 2);

    let sent = r.invite(4, "0301234567", "alice");
    assert_eq!(to_phone(&sent), vec!["SIP/2.0 403 Account Suspended"]);
    assert!(sent.iter().all(|(a, _)| a.to_string() != REGISTRAR));
    assert_eq!(r.refused("suspended"), 1);
    let sent = r.invite(5, "008821234", "bob");
    assert_eq!(to_phone(&sent), vec!["SIP/2.0 403 Destination Denied"]);
    assert!(sent.iter().all(|(a, _)| a.to_string() != REGISTRAR));
}

/// A booked call's end frees it as in local mode: the caller's BYE goes through the
/// registrar, and its 2xx takes the call off the books.
#[test]
fn a_bye_answered_2xx_frees_the_call() {
    let mut r = R::new(CONCURRENT_2);
    let route = r.answered_call();
    let at_registrar = r.in_dialog("BYE", &route, "");
    assert_eq!(r.core.fraud.lock().calls_active(), 1, "until the BYE's 2xx");
    r.ok_in_dialog(&at_registrar, "");
    assert_eq!(r.core.fraud.lock().calls_active(), 0);
}

/// A bound of the books (`max_calls_per_user`) an answered call passes: the call is not
/// tracked, its 2xx goes up, and the edge ends it at once, BYE both ways (the first call
/// goes on, counted).
#[test]
fn an_answered_call_past_a_bound_is_ended() {
    let mut r = R::new("max_calls_per_user = 1\n");
    r.answered(1, "004930121");
    let back = r.answered(2, "004930122");
    assert_eq!(
        to_phone(&back),
        vec!["SIP/2.0 200 OK"],
        "the answer goes up"
    );
    assert_ended_both_ways(&back, 2);
    assert_eq!(r.refused("user_limit"), 1);
    assert_eq!(r.core.fraud.lock().calls_active(), 1);
}

/// A re-INVITE of a booked call that carries the credentials again (phones resend them)
/// books nothing more and ends nothing.
#[test]
fn a_reinvite_books_nothing() {
    let mut r = R::new(CONCURRENT_2);
    let route = r.answered_call();
    let credentials = format!(
        "Contact: <sip:alice@{PHONE}>\r\n\
         Proxy-Authorization: Digest username=\"alice\", realm=\"example.com\", \
         nonce=\"theirs\", uri=\"sip:gw@{GATEWAY}\", response=\"0123456789abcdef0123456789abcdef\"\r\n"
    );
    let at_registrar = r.in_dialog("INVITE", &route, &credentials);
    let back = r.ok_in_dialog(&at_registrar, &format!("Contact: <sip:gw@{GATEWAY}>\r\n"));
    assert_eq!(to_phone(&back), vec!["SIP/2.0 200 OK"]);
    assert!(back.iter().all(|(_, m)| !m.starts_with("BYE")), "{back:?}");
    let sent = r.advance(Duration::from_secs(2));
    assert!(sent.iter().all(|(_, m)| !m.starts_with("BYE")), "{sent:?}");
    assert_eq!(r.core.fraud.lock().calls_active(), 1);
    assert_eq!(r.refused("duplicate"), 0);
}
