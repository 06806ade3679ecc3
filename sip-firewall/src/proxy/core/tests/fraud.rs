//! The toll-fraud guard in the proxy core, on a fake clock: destinations refused
//! before anything reaches the trunk, thresholds that suspend an account, and calls ended
//! by the edge with BYE both ways.

use super::*;

const TRUNK: &str = "203.0.113.5:5070";
const PHONE: &str = "192.0.2.1:5060";

struct H {
    core: Core,
    now: Instant,
    nonce: Option<String>,
    nc: u32,
    seq: u32,
}

impl H {
    fn new(fraud: &str) -> H {
        let text = format!(
            "[sip]\ndomains = [\"example.com\"]\nlisten = [\"127.0.0.1:5060\"]\n\
             [proxy]\noutbound = \"{TRUNK}\"\n[policy]\nallow = [\"10.0.0.0/8\"]\n\
             [auth]\nusers = [{{ user = \"alice\", domain = \"example.com\", password = \"pw\" }}]\n\
             [fraud]\n{fraud}\n"
        );
        let now = Instant::now();
        H {
            core: super::core(&text, now),
            now,
            nonce: None,
            nc: 0,
            seq: 0,
        }
    }

    fn feed(&mut self, text: &str, source: &str) -> Vec<(SocketAddr, String)> {
        let ctx = super::ctx_on(source, "127.0.0.1:5060", Transport::Datagram);
        super::feed(&mut self.core, self.now, text, &ctx).1
    }

    fn advance(&mut self, d: Duration) -> Vec<(SocketAddr, String)> {
        super::advance(&mut self.core, &mut self.now, d, Duration::from_millis(100))
    }

    /// alice (authenticated, digest) calls `number` at the trunk: what the edge sent, and the
    /// INVITE as it reached the trunk (if it did).
    fn call(&mut self, number: &str) -> (Vec<(SocketAddr, String)>, Option<String>) {
        self.call_as(number, self.seq + 1)
    }

    /// A call to `number` that reaches the trunk: the INVITE as it did.
    fn forwarded(&mut self, number: &str) -> String {
        let (sent, out) = self.call(number);
        out.unwrap_or_else(|| panic!("{number} not forwarded: {sent:?}"))
    }

    /// A call to `number` refused at the edge: the status line of its final answer.
    fn refusal(&mut self, number: &str) -> String {
        let (sent, out) = self.call(number);
        assert!(out.is_none(), "{number} reached the trunk");
        final_line(&sent)
    }

    /// A call to `number` refused at the edge for a critical threshold it passes (403 Fraud
    /// Limit Exceeded).
    fn assert_tripped(&mut self, number: &str) {
        assert_eq!(self.refusal(number), "SIP/2.0 403 Fraud Limit Exceeded");
    }

    /// The same with the Call-ID and From-tag of call `c` (a new transaction each time).
    fn call_as(&mut self, number: &str, c: u32) -> (Vec<(SocketAddr, String)>, Option<String>) {
        self.seq += 1;
        let n = self.seq;
        let uri = format!("sip:{number}@carrier.example");
        let invite = |auth: &str| {
            format!(
                "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKc{n}x{}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a{c}\r\nTo: <{uri}>\r\n\
                 Call-ID: call-{c}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{PHONE}>\r\n\
                 {auth}Content-Length: 0\r\n\r\n",
                auth.len()
            )
        };
        if self.nonce.is_none() {
            let sent = self.feed(&invite(""), PHONE);
            let chal = sent_starting(&sent, "SIP/2.0 407");
            self.nonce = Some(nonce_of(chal));
        }
        self.nc += 1;
        let nonce = self.nonce.clone().unwrap_or_default();
        let nc = format!("{:08x}", self.nc);
        let cred = credentials_of("alice", "Proxy-Authorization", &nonce, &nc, "INVITE", &uri);
        let sent = self.feed(&invite(&cred), PHONE);
        let out = sent
            .iter()
            .find(|(a, m)| a.to_string() == TRUNK && m.starts_with("INVITE"))
            .map(|(_, m)| m.clone());
        (sent, out)
    }

    /// The trunk answers the INVITE `req` with `code`.
    fn answer(&mut self, req: &str, code: u16) -> Vec<(SocketAddr, String)> {
        self.answer_with(req, code, "")
    }

    /// The same with `extra` header lines.
    fn answer_with(&mut self, req: &str, code: u16, extra: &str) -> Vec<(SocketAddr, String)> {
        let mut out = format!("SIP/2.0 {code} Whatever\r\n{extra}");
        out.push_str(&response_lines(req, "trunk"));
        out.push_str(&format!(
            "Contact: <sip:gw@{TRUNK}>\r\nContent-Length: 0\r\n\r\n"
        ));
        self.feed(&out, TRUNK)
    }

    fn refused(&self, reason: &str) -> u64 {
        self.core
            .metrics
            .fraud
            .refused
            .with_label_values(&[reason])
            .get()
    }
}

fn final_line(sent: &[(SocketAddr, String)]) -> String {
    sent.iter()
        .filter(|(a, m)| {
            a.to_string() == PHONE && m.starts_with("SIP/2.0") && !m.starts_with("SIP/2.0 1")
        })
        .map(|(_, m)| m.lines().next().unwrap_or("").to_string())
        .next()
        .unwrap_or_else(|| "nothing".into())
}

/// A denied prefix, in each international form, is answered 403 and never reaches the
/// trunk; a user limited to national numbers gets 403 for an international one.
#[test]
fn denied_destinations_never_reach_the_trunk() {
    let mut h = H::new(
        "[[fraud.groups]]\nname = \"national\"\nusers = [\"bob\"]\nallow_prefixes = [\"0\"]\n",
    );
    for number in [
        "0019005551234",
        "+19005551234",
        "01119005551234",
        "00881234567",
    ] {
        let (sent, out) = h.call(number);
        assert!(out.is_none(), "{number} reached the trunk: {sent:?}");
        assert_eq!(
            final_line(&sent),
            "SIP/2.0 403 Destination Denied",
            "{number}"
        );
    }
    assert_eq!(h.refused("denied_prefix"), 4);
    let (_, out) = h.call("00493012345");
    assert!(out.is_some(), "an ordinary international call goes out");

    // bob is not alice: alice is unlimited; a group of alice.
    let mut h = H::new(
        "[[fraud.groups]]\nname = \"national\"\nusers = [\"alice@example.com\"]\nallow_prefixes = [\"0\"]\n",
    );
    assert_eq!(
        h.refusal("00493012345"),
        "SIP/2.0 403 Destination Not Allowed"
    );
    assert_eq!(h.refused("not_allowed"), 1);
    let (_, out) = h.call("0301234567");
    assert!(out.is_some(), "a national call goes out");
}

/// Rule "00" with concurrent critical 2. Two calls connect, the third is
/// refused (403) and suspends alice; then even a national call gets 403. The suspension
/// goes to the state database; unblock lifts it.
#[test]
fn concurrent_critical_suspends_the_account() {
    let mut h =
        H::new("[[fraud.rules]]\nprefix = \"00\"\nconcurrent = { warn = 1, critical = 2 }\n");
    for n in 0..2 {
        let out = h.forwarded(&format!("+4930123{n}"));
        let up = h.answer(&out, 200);
        assert!(
            up.iter()
                .any(|(a, m)| a.to_string() == PHONE && m.starts_with("SIP/2.0 200"))
        );
    }
    assert_eq!(h.core.fraud.lock().calls_active(), 2);
    assert_eq!(
        h.core
            .metrics
            .fraud
            .warnings
            .with_label_values(&["concurrent"])
            .get(),
        1,
        "the second call passed the warning threshold"
    );
    h.assert_tripped("0044201234");
    let ops = h.core.fraud.lock().take_store_ops();
    assert!(
        matches!(ops.as_slice(), [crate::fraud::StoreOp::Suspend(s)] if s.account == "alice@example.com"),
        "{ops:?}"
    );
    assert_eq!(h.refusal("0301234567"), "SIP/2.0 403 Account Suspended");
    assert_eq!(h.refused("critical"), 1);
    assert_eq!(h.refused("suspended"), 1);
    assert_eq!(h.core.metrics.fraud.suspended.get(), 1);
    assert_eq!(
        h.core.fraud.lock().unblock("alice", 0),
        vec!["alice@example.com".to_string()]
    );
    let (_, out) = h.call("0301234567");
    assert!(out.is_some(), "unblocked");
}

/// calls_per_minute critical 3: the first three calls in a minute go (each refused by the
/// trunk at once, so none is concurrent), the fourth trips the threshold, not before.
#[test]
fn calls_per_minute_trips_at_the_count() {
    let mut h = H::new("[[fraud.rules]]\nprefix = \"00\"\ncalls_per_minute = { critical = 3 }\n");
    for n in 0..3 {
        let out = h.forwarded(&format!("004930{n}"));
        h.answer(&out, 486);
        h.advance(Duration::from_secs(5));
    }
    assert_eq!(
        h.core.fraud.lock().calls_active(),
        0,
        "failed calls are not in progress"
    );
    h.assert_tripped("0049309");
}

/// sequential critical 2: two calls under "00" in a row go, a national call in between
/// starts the count again, the third in a row trips it.
#[test]
fn sequential_calls_trip_at_the_count() {
    let mut h = H::new("[[fraud.rules]]\nprefix = \"00\"\nsequential = { critical = 2 }\n");
    for number in ["00491", "00492", "0301", "00493", "00494"] {
        let out = h.forwarded(number);
        h.answer(&out, 486);
    }
    h.assert_tripped("00495");
}

/// max_call_duration: a call left up past it gets BYE on both sides, each as the other
/// party would send it, along the dialog's route; one ended by BYE (answered 200) before
/// gets nothing.
#[test]
fn max_call_duration_sends_bye_both_ways() {
    let mut h = H::new("max_call_duration = \"10s\"\n");
    let (_, out) = h.call("0301234567");
    let out = out.expect("forwarded");
    h.answer(&out, 200);
    assert_eq!(h.core.fraud.lock().calls_active(), 1);
    let sent = h.advance(Duration::from_secs(9));
    assert!(sent.iter().all(|(_, m)| !m.starts_with("BYE")), "{sent:?}");
    let sent = h.advance(Duration::from_secs(3));
    // One BYE to each side (and its Timer E retransmissions, same branch).
    let mut byes: Vec<_> = sent.iter().filter(|(_, m)| m.starts_with("BYE")).collect();
    byes.dedup_by_key(|(a, m)| (*a, m.clone()));
    byes.sort_by_key(|(a, _)| *a);
    byes.dedup_by_key(|(a, _)| *a);
    assert_eq!(byes.len(), 2, "{sent:?}");
    let bye_to = |addr: &str| -> String {
        let found = byes.iter().find(|(a, _)| a.to_string() == addr);
        found.map(|(_, m)| m.clone()).expect("a BYE to each side")
    };
    let to_trunk = bye_to(TRUNK);
    assert!(to_trunk.starts_with(&format!("BYE sip:gw@{TRUNK} SIP/2.0")));
    assert!(to_trunk.contains("From: <sip:alice@example.com>;tag=a1"));
    assert!(to_trunk.contains(";tag=trunk"));
    assert!(to_trunk.contains("CSeq: 2 BYE"));
    let to_phone = bye_to(PHONE);
    assert!(to_phone.starts_with(&format!("BYE sip:alice@{PHONE} SIP/2.0")));
    assert!(to_phone.contains("To: <sip:alice@example.com>;tag=a1"));
    assert_eq!(h.core.fraud.lock().calls_active(), 0);
    assert_eq!(h.ended("max_duration"), 1);
    // Our BYE's 200 is taken (its client transaction), not a stray.
    let bye = to_trunk.clone();
    let ok = bye.replacen(&format!("BYE sip:gw@{TRUNK} SIP/2.0"), "SIP/2.0 200 OK", 1);
    let stray_before = h.core.metrics.stray.get();
    h.feed(&ok, TRUNK);
    assert_eq!(h.core.metrics.stray.get(), stray_before);

    // A call the caller ends with BYE first: nothing from the edge later.
    let (_, out) = h.call("0301234568");
    let out = out.expect("forwarded");
    let up = h.answer(&out, 200);
    let ok = sent_starting(&up, "SIP/2.0 200");
    let rr: Vec<&str> = ok
        .lines()
        .filter_map(|l| l.strip_prefix("Record-Route: "))
        .collect();
    let bye = format!(
        "BYE sip:gw@{TRUNK} SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKbye2\r\n\
         Max-Forwards: 70\r\nRoute: {}\r\nFrom: <sip:alice@example.com>;tag=a{}\r\n\
         To: <sip:0301234568@carrier.example>;tag=trunk\r\nCall-ID: call-{}\r\n\
         CSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n",
        rr.join(", "),
        h.seq,
        h.seq
    );
    let sent = h.feed(&bye, PHONE);
    let at_trunk = sent_to(&sent, TRUNK, "BYE");
    assert_eq!(h.core.fraud.lock().calls_active(), 1, "until the BYE's 2xx");
    h.respond(&at_trunk, "200 OK", TRUNK);
    assert_eq!(h.core.fraud.lock().calls_active(), 0);
    let sent = h.advance(Duration::from_secs(12));
    assert!(
        sent.iter().all(|(_, m)| !(m.starts_with("BYE")
            && m.contains("Call-ID: call-2")
            && m.contains(".own;"))),
        "{sent:?}"
    );
}

/// A login from a /16 the account has not used while it has a call from another: a
/// warning event.
#[test]
fn unusual_source_login_is_flagged() {
    let mut h = H::new("");
    let (_, out) = h.call("0301234567");
    h.answer(&out.expect("forwarded"), 200);
    let before = h.core.fraud.lock().events().len();
    h.core
        .fraud
        .lock()
        .login("alice@example.com", "192.0.2.77".parse().unwrap(), 100);
    assert_eq!(
        h.core.fraud.lock().events().len(),
        before,
        "same /16: nothing"
    );
    h.core
        .fraud
        .lock()
        .login("alice@example.com", "198.18.4.4".parse().unwrap(), 100);
    let ev = h.core.fraud.lock().events();
    assert_eq!(
        ev.last().map(|e| e.kind.as_str()),
        Some("unusual_source"),
        "{ev:?}"
    );
}

/// A second INVITE with the Call-ID and From-tag of a ringing call (another transaction) is
/// refused, and its refusal does not untrack the first: when that one connects, it counts
/// against the concurrent limit (before, a duplicate's 403 let the first call go untracked).
#[test]
fn a_duplicate_invite_does_not_untrack_the_call() {
    let mut h = H::new("[[fraud.rules]]\nprefix = \"00\"\nconcurrent = { critical = 1 }\n");
    let (_, first) = h.call("00491");
    let first = first.expect("forwarded");
    let (sent, dup) = h.call_as("00491", 1);
    assert!(dup.is_none());
    assert_eq!(final_line(&sent), "SIP/2.0 403 Call Already In Progress");
    h.answer(&first, 200);
    assert_eq!(h.core.fraud.lock().calls_active(), 1);
    h.assert_tripped("00492");
}

/// on_critical = "block-and-hangup": the suspension also ends the account's answered calls,
/// BYE both ways; "alert" only warns.
#[test]
fn block_and_hangup_ends_calls_and_alert_only_warns() {
    let mut h = H::new(
        "on_critical = \"block-and-hangup\"\n[[fraud.rules]]\nprefix = \"00\"\nconcurrent = { critical = 1 }\n",
    );
    let (_, out) = h.call("00491");
    h.answer(&out.expect("forwarded"), 200);
    let (_, out) = h.call("00492");
    assert!(out.is_none());
    let sent = h.advance(Duration::from_millis(1500));
    let byes: Vec<_> = sent
        .iter()
        .filter(|(_, m)| m.starts_with("BYE") && m.contains("text=\"fraud guard\""))
        .map(|(a, _)| a.to_string())
        .collect();
    assert!(
        byes.contains(&TRUNK.to_string()) && byes.contains(&PHONE.to_string()),
        "{sent:?}"
    );
    assert_eq!(h.core.fraud.lock().calls_active(), 0);

    let mut h = H::new(
        "on_critical = \"alert\"\n[[fraud.rules]]\nprefix = \"00\"\nconcurrent = { critical = 1 }\n",
    );
    let (_, out) = h.call("00491");
    h.answer(&out.expect("forwarded"), 200);
    let (_, out) = h.call("00492");
    assert!(out.is_some(), "alert: forwarded");
    assert_eq!(
        h.core
            .metrics
            .fraud
            .critical
            .with_label_values(&["concurrent"])
            .get(),
        1
    );
    assert_eq!(h.core.metrics.fraud.suspended.get(), 0);
}

/// A call under a rule longer than its critical duration is ended and suspends the account;
/// `total` counts the day's calls.
#[test]
fn duration_and_daily_total() {
    let mut h = H::new(
        "[[fraud.rules]]\nprefix = \"00\"\nduration = { warn = \"2s\", critical = \"5s\" }\ntotal = { critical = 2 }\n",
    );
    let (_, out) = h.call("00491");
    h.answer(&out.expect("forwarded"), 200);
    let sent = h.advance(Duration::from_secs(4));
    assert!(sent.iter().all(|(_, m)| !m.starts_with("BYE")));
    assert_eq!(
        h.core
            .metrics
            .fraud
            .warnings
            .with_label_values(&["duration"])
            .get(),
        1
    );
    let sent = h.advance(Duration::from_secs(3));
    assert!(
        sent.iter()
            .any(|(a, m)| a.to_string() == TRUNK && m.starts_with("BYE")),
        "{sent:?}"
    );
    let (sent, _) = h.call("0301");
    assert_eq!(final_line(&sent), "SIP/2.0 403 Account Suspended");
    h.core.fraud.lock().unblock("alice@example.com", 0);
    // The counters start again after unblock: two calls today pass, the third trips.
    for n in ["00492", "00493"] {
        let (_, out) = h.call(n);
        h.answer(&out.expect("forwarded"), 486);
    }
    let (sent, _) = h.call("00494");
    assert_eq!(final_line(&sent), "SIP/2.0 403 Fraud Limit Exceeded");
}

/// A trusted peer (allow-listed PBX) is an account of its own: the deny list applies to it,
/// with a preloaded Route too.
#[test]
fn trusted_peers_are_accounts_too() {
    let mut h = H::new("");
    let pbx = "10.1.1.1:5060";
    for (i, route) in ["", "Route: <sip:198.51.100.9;lr>\r\n"].iter().enumerate() {
        let inv = format!(
            "INVITE sip:+19005551234@carrier.example SIP/2.0\r\nVia: SIP/2.0/UDP {pbx};branch=z9hG4bKpbx{i}\r\n\
             Max-Forwards: 70\r\n{route}From: <sip:pbx@pbx.example>;tag=p{i}\r\nTo: <sip:+19005551234@carrier.example>\r\n\
             Call-ID: pbx-{i}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        );
        let sent = h.feed(&inv, pbx);
        assert!(
            sent.iter().all(|(_, m)| !m.starts_with("INVITE")),
            "{sent:?}"
        );
        assert!(
            sent.iter()
                .any(|(a, m)| a.to_string() == pbx
                    && m.starts_with("SIP/2.0 403 Destination Denied")),
            "{sent:?}"
        );
    }
    assert_eq!(h.refused("denied_prefix"), 2);
}

/// The call table is bounded (`max_calls`): beyond it new calls get 503, counted, and
/// nothing is forwarded untracked.
#[test]
fn call_table_bound_refuses_with_503() {
    let mut h = H::new("max_calls = 1\n");
    let (_, out) = h.call("0301");
    h.answer(&out.expect("forwarded"), 200);
    assert_eq!(h.refusal("0302"), "SIP/2.0 503 Too Many Calls");
    assert_eq!(h.refused("table_full"), 1);

    // One subscriber cannot fill the table for everyone: max_calls_per_user.
    let mut h = H::new("max_calls_per_user = 2\n");
    for n in ["0301", "0302"] {
        let (_, out) = h.call(n);
        assert!(out.is_some(), "{n}");
    }
    assert_eq!(h.refusal("0303"), "SIP/2.0 503 Too Many Calls");
    assert_eq!(h.refused("user_limit"), 1);
}

/// RFC 4028: a 2xx with Session-Expires 5: an UPDATE within it refreshes the session; then
/// none for 5 seconds (and the parties' grace) ends it (BYE both ways, `session_expired`).
#[test]
fn session_timer_expiry_ends_the_call() {
    let mut h = H::new("");
    let (_, out) = h.call("0301234567");
    let up = h.answer_with(
        &out.expect("forwarded"),
        200,
        "Session-Expires: 5;refresher=uac\r\n",
    );
    let ok = sent_starting(&up, "SIP/2.0 200");
    let rr: Vec<&str> = ok
        .lines()
        .filter_map(|l| l.strip_prefix("Record-Route: "))
        .collect();
    h.advance(Duration::from_secs(3));
    let update = format!(
        "UPDATE sip:gw@{TRUNK} SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKupd1\r\n\
         Max-Forwards: 70\r\nRoute: {}\r\nFrom: <sip:alice@example.com>;tag=a1\r\n\
         To: <sip:0301234567@carrier.example>;tag=trunk\r\nCall-ID: call-1\r\n\
         CSeq: 2 UPDATE\r\nContent-Length: 0\r\n\r\n",
        rr.join(", ")
    );
    let sent = h.feed(&update, PHONE);
    assert!(
        sent.iter()
            .any(|(a, m)| a.to_string() == TRUNK && m.starts_with("UPDATE")),
        "{sent:?}"
    );
    let sent = h.advance(Duration::from_secs(4));
    assert!(
        sent.iter().all(|(_, m)| !m.contains("session expired")),
        "refreshed at 3s"
    );
    // Expiry at 8s, and the parties' grace (RFC 4028 10: min(32s, 5s/3)) after it.
    let sent = h.advance(Duration::from_secs(3));
    let bye = sent
        .iter()
        .find(|(a, m)| a.to_string() == TRUNK && m.contains("text=\"session expired\""))
        .expect("BYE to the callee");
    assert!(
        bye.1.contains("CSeq: 3 BYE"),
        "above the UPDATE's CSeq: {}",
        bye.1
    );
    assert!(
        sent.iter()
            .any(|(a, m)| a.to_string() == PHONE && m.starts_with("BYE"))
    );
    assert_eq!(h.ended("session_expired"), 1);
}

/// Rule "00" with concurrent critical 2: a third international call is refused 403.
const CONCURRENT_2: &str = "[[fraud.rules]]\nprefix = \"00\"\nconcurrent = { critical = 2 }\n";

impl H {
    /// Calls the fraud guard ended for `why`.
    fn ended(&self, why: &str) -> u64 {
        let ended = &self.core.metrics.fraud.calls_ended;
        ended.with_label_values(&[why]).get()
    }

    /// A new call to `number` goes through.
    fn goes_through(&mut self, number: &str) {
        let (sent, out) = self.call(number);
        assert!(out.is_some(), "a new call goes through: {sent:?}");
    }

    /// A call to `number` the trunk answers 200: the 200 as the phone got it.
    fn up(&mut self, number: &str) -> String {
        let out = self.forwarded(number);
        let up = self.answer(&out, 200);
        up.into_iter()
            .find(|(a, m)| a.to_string() == PHONE && m.starts_with("SIP/2.0 200"))
            .map(|(_, m)| m)
            .unwrap_or_else(|| panic!("{number}: no 200 to the phone"))
    }

    /// The party at `source` answers the request `req` with `status`, as a UAS does: its
    /// Vias, From, To (its tag added when there is none), Call-ID and CSeq.
    fn respond(&mut self, req: &str, status: &str, source: &str) -> Vec<(SocketAddr, String)> {
        let mut out = format!("SIP/2.0 {status}\r\n");
        for line in req.split("\r\n").skip(1) {
            let l = line.to_ascii_lowercase();
            if ["via:", "from:", "call-id:", "cseq:"]
                .iter()
                .any(|p| l.starts_with(p))
                || (l.starts_with("to:") && l.contains(";tag="))
            {
                out.push_str(&format!("{line}\r\n"));
            } else if l.starts_with("to:") {
                out.push_str(&format!("{line};tag=uas\r\n"));
            }
        }
        out.push_str("Content-Length: 0\r\n\r\n");
        self.feed(&out, source)
    }
}

/// The first value of header `name` in `msg`.
fn value_of<'a>(msg: &'a str, name: &str) -> &'a str {
    msg.split("\r\n")
        .find_map(|l| l.strip_prefix(&format!("{name}: ")))
        .unwrap_or_else(|| panic!("no {name} in {msg}"))
}

/// A From or To value with its tag replaced by `tag`.
fn retag(value: &str, tag: &str) -> String {
    let base = value.split(";tag=").next().unwrap_or(value);
    format!("{base};tag={tag}")
}

/// What `party` sent that starts with `start`.
fn sent_to(sent: &[(SocketAddr, String)], party: &str, start: &str) -> String {
    sent.iter()
        .find(|(a, m)| a.to_string() == party && m.starts_with(start))
        .map(|(_, m)| m.clone())
        .unwrap_or_else(|| panic!("no {start} to {party}: {sent:?}"))
}

/// The phone's BYE for the call whose 200 it got (`ok`): to its Contact along its
/// Record-Route (RFC 3261 12.1.2), with the tags `from_tag` and `to_tag` and `extra`
/// header lines.
fn bye_from_phone(ok: &str, from_tag: &str, to_tag: &str, extra: &str) -> String {
    let contact = value_of(ok, "Contact");
    let target = contact.trim_start_matches('<').trim_end_matches('>');
    let mut rr: Vec<&str> = ok
        .lines()
        .filter_map(|l| l.strip_prefix("Record-Route: "))
        .collect();
    rr.reverse();
    format!(
        "BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKbye{from_tag}{to_tag}\r\n\
         Max-Forwards: 70\r\nRoute: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\n\
         CSeq: 2 BYE\r\n{extra}Content-Length: 0\r\n\r\n",
        rr.join(", "),
        retag(value_of(ok, "From"), from_tag),
        retag(value_of(ok, "To"), to_tag),
        value_of(ok, "Call-ID"),
    )
}

/// The trunk's BYE for the same call: to the caller's Contact along the Record-Route in
/// order, From and To the other way round.
fn bye_from_trunk(ok: &str) -> String {
    let rr: Vec<&str> = ok
        .lines()
        .filter_map(|l| l.strip_prefix("Record-Route: "))
        .collect();
    format!(
        "BYE sip:alice@{PHONE} SIP/2.0\r\nVia: SIP/2.0/UDP {TRUNK};branch=z9hG4bKtrunkbye\r\n\
         Max-Forwards: 70\r\nRoute: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\n\
         CSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n",
        rr.join(", "),
        value_of(ok, "To"),
        value_of(ok, "From"),
        value_of(ok, "Call-ID"),
    )
}

/// Two international calls up under concurrent critical 2; the caller's BYE for the first,
/// with tags `from_tag` and `to_tag` and `extra` header lines, is relayed and the trunk
/// answers `status`: the call goes on and still counts, so a third international call gets
/// 403.
fn refused_bye_leaves_the_call_counted(from_tag: &str, to_tag: &str, extra: &str, status: &str) {
    let mut h = H::new(CONCURRENT_2);
    let ok = h.up("004930111");
    h.up("004930222");
    let sent = h.feed(&bye_from_phone(&ok, from_tag, to_tag, extra), PHONE);
    let at_trunk = sent_to(&sent, TRUNK, "BYE");
    let sent = h.respond(&at_trunk, status, TRUNK);
    assert_eq!(final_line(&sent), format!("SIP/2.0 {status}"), "relayed");
    assert_eq!(
        h.core.fraud.lock().calls_active(),
        2,
        "{from_tag}/{to_tag} answered {status}: the call goes on"
    );
    h.assert_tripped("004930333");
}

/// A made-up To-tag: the trunk has no such dialog (481, RFC 3261 15.1.2).
#[test]
fn a_bye_with_a_forged_to_tag_answered_481_leaves_the_call_counted() {
    refused_bye_leaves_the_call_counted("a1", "forged", "", "481 Call/Transaction Does Not Exist");
}

/// The dialog's own tags with a Require the trunk lacks (420, RFC 3261 8.2.2.3).
#[test]
fn a_bye_answered_420_leaves_the_call_counted() {
    refused_bye_leaves_the_call_counted(
        "a1",
        "trunk",
        "Require: x-unknown\r\n",
        "420 Bad Extension",
    );
}

/// The callee's tags sent from the caller's side, answered 200 by a lenient trunk: not the
/// answer of the party those tags address (the caller), so it ends nothing.
#[test]
fn a_bye_with_the_callees_tags_from_the_caller_leaves_the_call_counted() {
    refused_bye_leaves_the_call_counted("trunk", "a1", "", "200 OK");
}

/// The caller's real BYE: the call counts while the trunk has not answered; its 200 frees
/// the slot at once (a new call under the cap goes through), ended by `bye`.
#[test]
fn a_bye_answered_200_frees_the_slot_at_once() {
    let mut h = H::new(CONCURRENT_2);
    let ok = h.up("004930111");
    h.up("004930222");
    let sent = h.feed(&bye_from_phone(&ok, "a1", "trunk", ""), PHONE);
    let at_trunk = sent_to(&sent, TRUNK, "BYE");
    assert_eq!(
        h.core.fraud.lock().calls_active(),
        2,
        "the BYE request alone ends nothing"
    );
    let sent = h.respond(&at_trunk, "200 OK", TRUNK);
    assert_eq!(final_line(&sent), "SIP/2.0 200 OK");
    assert_eq!(h.core.fraud.lock().calls_active(), 1);
    assert_eq!(h.ended("bye"), 1);
    h.goes_through("004930333");
}

/// The callee's BYE (from the trunk, relayed to the phone): the phone's 200 frees the slot.
#[test]
fn the_callees_bye_answered_200_frees_the_slot() {
    let mut h = H::new(CONCURRENT_2);
    let ok = h.up("004930111");
    h.up("004930222");
    let sent = h.feed(&bye_from_trunk(&ok), TRUNK);
    let at_phone = sent_to(&sent, PHONE, "BYE");
    assert_eq!(
        h.core.fraud.lock().calls_active(),
        2,
        "the BYE request alone ends nothing"
    );
    let sent = h.respond(&at_phone, "200 OK", PHONE);
    sent_to(&sent, TRUNK, "SIP/2.0 200");
    assert_eq!(h.core.fraud.lock().calls_active(), 1);
    h.goes_through("004930333");
}

/// A CANCEL ends nothing by itself, nor does the trunk's 200 to it: the attempt counts
/// until the INVITE's own final answer (487) comes back through us.
#[test]
fn a_cancel_ends_the_attempt_only_with_the_487() {
    let mut h = H::new("max_calls_per_user = 1\n");
    let (_, out) = h.call("004930111");
    let invite = out.expect("forwarded");
    h.answer(&invite, 180);
    let via = invite
        .split("\r\n")
        .filter(|l| l.starts_with("Via: "))
        .find(|l| l.contains(PHONE))
        .expect("the phone's Via");
    let cancel = format!(
        "CANCEL sip:004930111@carrier.example SIP/2.0\r\n{via}\r\nMax-Forwards: 70\r\n\
         From: <sip:alice@example.com>;tag=a1\r\nTo: <sip:004930111@carrier.example>\r\n\
         Call-ID: call-1\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
    );
    let sent = h.feed(&cancel, PHONE);
    let at_trunk = sent_to(&sent, TRUNK, "CANCEL");
    assert_eq!(h.core.fraud.lock().calls_active(), 1, "the CANCEL alone");
    h.respond(&at_trunk, "200 OK", TRUNK);
    assert_eq!(
        h.core.fraud.lock().calls_active(),
        1,
        "the 200 to the CANCEL"
    );
    assert_eq!(h.refusal("004930222"), "SIP/2.0 503 Too Many Calls");
    let sent = h.answer(&invite, 487);
    assert_eq!(final_line(&sent), "SIP/2.0 487 Whatever");
    assert_eq!(h.core.fraud.lock().calls_active(), 0);
    h.goes_through("004930333");
}

/// The edge's own BYE (max_call_duration) ends the call in the books whatever its answers:
/// the trunk's 481 and the phone's silence change nothing, a new call goes through.
#[test]
fn the_edges_own_bye_frees_the_call_whatever_the_answer() {
    let mut h = H::new("max_call_duration = \"10s\"\nmax_calls_per_user = 1\n");
    h.up("0301234567");
    assert_eq!(h.refusal("0301234568"), "SIP/2.0 503 Too Many Calls");
    let sent = h.advance(Duration::from_secs(11));
    let bye = sent_to(&sent, TRUNK, "BYE");
    sent_to(&sent, PHONE, "BYE");
    h.respond(&bye, "481 Call/Transaction Does Not Exist", TRUNK);
    assert_eq!(h.core.fraud.lock().calls_active(), 0);
    assert_eq!(h.ended("max_duration"), 1);
    h.goes_through("0301234569");
}

/// The caller's BYE that the trunk never answers: the call counts while the BYE's
/// transaction runs; at its timeout the edge ends the call itself, BYE both ways, and only
/// then is the slot free.
#[test]
fn an_unanswered_bye_has_the_edge_end_the_call() {
    let mut h = H::new("max_calls_per_user = 1\n");
    let ok = h.up("0301234567");
    let sent = h.feed(&bye_from_phone(&ok, "a1", "trunk", ""), PHONE);
    sent_to(&sent, TRUNK, "BYE");
    h.advance(Duration::from_secs(30));
    assert_eq!(
        h.core.fraud.lock().calls_active(),
        1,
        "while the BYE may be answered"
    );
    // Timer F: 64*T1 = 32 s.
    let sent = h.advance(Duration::from_secs(5));
    for party in [TRUNK, PHONE] {
        assert!(
            sent.iter().any(|(a, m)| a.to_string() == party
                && m.starts_with("BYE")
                && m.contains("text=\"ended by the edge\"")),
            "the edge's BYE to {party}: {sent:?}"
        );
    }
    assert_eq!(h.core.fraud.lock().calls_active(), 0);
    assert_eq!(h.ended("bye_timeout"), 1);
    h.goes_through("0301234568");
}
