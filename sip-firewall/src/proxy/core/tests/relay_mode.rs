//! Relay mode: REGISTER to the operator's registrar with our Path entry and flow token,
//! its answers relayed and learned, requests from it down the flow the token names (and
//! from nobody else, nor with a forged or stale token), the registrar's refusals of
//! credentials counted as the source's authentication failures; `[proxy] inbound` taking
//! the calls; the registered flows kept alive, and dropped when dead or closed.

use std::sync::Mutex;

use super::*;

/// The edge's address; the registrar behind it; a phone outside.
const EDGE: &str = "192.0.2.10";
const REGISTRAR: &str = "10.0.0.5:5060";
const PHONE: &str = "203.0.113.7:40000";

/// What the core told its observer.
#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl Observer for Recorder {
    fn authenticated(&self, source: SocketAddr, user: &str) {
        self.push(format!("authenticated {source} {user}"));
    }
    fn auth_failure(&self, source: SocketAddr, _user: Option<&str>, reason: &str) {
        self.push(format!("auth_failure {source} {reason}"));
    }
}

impl Recorder {
    fn push(&self, s: String) {
        if let Ok(mut v) = self.0.lock() {
            v.push(s);
        }
    }
    fn take(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }
}

struct Relay {
    core: Core,
    now: Instant,
    seen: Arc<Recorder>,
}

impl Relay {
    fn new() -> Relay {
        Relay::with("", "")
    }

    /// Relay mode with `proxy`, the `[proxy]` section's lines.
    fn with_proxy(proxy: &str) -> Relay {
        Relay::with(proxy, "")
    }

    /// Relay mode with `proxy` and `registrar`, lines of the `[proxy]` and `[registrar]`
    /// sections.
    fn with(proxy: &str, registrar: &str) -> Relay {
        let text = format!(
            "[sip]\nlisten = [\"0.0.0.0:5060\"]\ndomains = [\"example.com\"]\n\
             [proxy]\n{proxy}\n\
             [registrar]\nmode = \"relay\"\nrelay_to = \"sip:{REGISTRAR}\"\n{registrar}\n"
        );
        let now = Instant::now();
        let config = Config::from_toml(&text, std::path::Path::new("t.toml")).expect("config");
        let seen = Arc::new(Recorder::default());
        let mut core =
            Core::new(&config, ProxyMetrics::new(None), seen.clone(), now).expect("core");
        core.local.set_addrs(vec![EDGE.parse().expect("ip")]);
        Relay { core, now, seen }
    }

    fn feed(&mut self, text: &str, source: &str) -> Vec<(SocketAddr, String)> {
        self.feed_t(text, source, Transport::Datagram)
    }

    fn feed_t(&mut self, text: &str, source: &str, t: Transport) -> Vec<(SocketAddr, String)> {
        let ctx = ctx_on(source, &format!("{EDGE}:5060"), t);
        feed(&mut self.core, self.now, text, &ctx).1
    }

    /// alice's REGISTER number `n` from `source`, with `extra` headers (credentials).
    fn register(&mut self, source: &str, n: u32, extra: &str, t: Transport) -> String {
        let via = if t == Transport::Stream { "TCP" } else { "UDP" };
        let text = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/{via} {source};branch=z9hG4bKr{n}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a\r\nTo: <sip:alice@example.com>\r\n\
             Call-ID: reg-{source}\r\nCSeq: {n} REGISTER\r\nContact: <sip:alice@192.168.1.20:5060>\r\n\
             {extra}Content-Length: 0\r\n\r\n"
        );
        let sent = self.feed_t(&text, source, t);
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert_eq!(sent[0].0, REGISTRAR.parse::<SocketAddr>().expect("addr"));
        sent[0].1.clone()
    }

    /// The registrar answers the relayed `req` with `status` and `extra` headers: what the
    /// edge sent on.
    fn answer(&mut self, req: &str, status: &str, extra: &str) -> Vec<(SocketAddr, String)> {
        let text = format!(
            "SIP/2.0 {status}\r\n{}{extra}Content-Length: 0\r\n\r\n",
            response_lines(req, "reg")
        );
        self.feed(&text, REGISTRAR)
    }
}

fn header<'a>(m: &'a str, name: &str) -> Option<&'a str> {
    m.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(": ")))
}

const CREDENTIALS: &str = "Authorization: Digest username=\"alice\", realm=\"example.com\", \
    nonce=\"theirs\", uri=\"sip:example.com\", response=\"0123456789abcdef0123456789abcdef\"\r\n";

/// A REGISTER goes to the registrar with our Path entry on top (its flow token), `Supported:
/// path`, the phone's credentials untouched; the registrar's 401 and 200 come back to the
/// phone; the 200 registers the flow (a known-good source, counted for `status`), the
/// challenge to no credentials is no failure, and the edge holds no binding of its own.
#[test]
fn register_is_relayed_with_path_and_its_answers_come_back() {
    let mut r = Relay::new();
    let req = r.register(PHONE, 1, "", Transport::Datagram);
    let path = header(&req, "Path").expect("a Path entry");
    // Our advertised host (here the first domain: a wildcard listen address, no advertise).
    assert!(
        path.starts_with("<sip:example.com:5060;lr;ob;sfwf="),
        "{path}"
    );
    assert_eq!(header(&req, "Supported"), Some("path"));
    let back = r.answer(
        &req,
        "401 Unauthorized",
        "WWW-Authenticate: Digest realm=\"example.com\", nonce=\"theirs\"\r\n",
    );
    assert_eq!(back.len(), 1);
    assert_eq!(back[0].0, PHONE.parse::<SocketAddr>().expect("addr"));
    assert!(back[0].1.starts_with("SIP/2.0 401"), "{}", back[0].1);
    assert!(back[0].1.contains("nonce=\"theirs\""));
    assert!(
        r.seen.take().is_empty(),
        "a challenge to no credentials is no failure"
    );

    let req = r.register(PHONE, 2, CREDENTIALS, Transport::Datagram);
    assert_eq!(
        header(&req, "Authorization"),
        CREDENTIALS
            .strip_prefix("Authorization: ")
            .map(|c| c.trim_end())
    );
    let back = r.answer(
        &req,
        "200 OK",
        "Contact: <sip:alice@192.168.1.20:5060>;expires=600\r\n",
    );
    assert!(back[0].1.starts_with("SIP/2.0 200"), "{}", back[0].1);
    assert_eq!(r.core.relayed_flows(), 1);
    assert_eq!(r.seen.take(), vec![format!("authenticated {PHONE} alice")]);
    assert!(
        r.core.store.lock().is_empty(),
        "the edge binds nothing itself"
    );
}

/// A wrong password the registrar refuses is an authentication failure of the phone's
/// source, as a local one is; a `stale=true` challenge is not.
#[test]
fn the_registrars_refusals_are_failures_of_the_source() {
    let mut r = Relay::new();
    let req = r.register(PHONE, 1, CREDENTIALS, Transport::Datagram);
    r.answer(
        &req,
        "401 Unauthorized",
        "WWW-Authenticate: Digest realm=\"example.com\", nonce=\"n2\"\r\n",
    );
    assert_eq!(
        r.seen.take(),
        vec![format!("auth_failure {PHONE} registrar_refused")]
    );
    let req = r.register(PHONE, 2, CREDENTIALS, Transport::Datagram);
    r.answer(
        &req,
        "401 Unauthorized",
        "WWW-Authenticate: Digest realm=\"example.com\", nonce=\"n3\", stale=true\r\n",
    );
    assert!(r.seen.take().is_empty(), "a stale nonce is no failure");
    let req = r.register(PHONE, 3, CREDENTIALS, Transport::Datagram);
    r.answer(&req, "403 Forbidden", "");
    assert_eq!(
        r.seen.take(),
        vec![format!("auth_failure {PHONE} registrar_refused")]
    );
    assert_eq!(r.core.relayed_flows(), 0);
}

fn invite_from_registrar(route: &str, branch: &str) -> String {
    format!(
        "INVITE sip:alice@192.168.1.20:5060 SIP/2.0\r\nVia: SIP/2.0/UDP {REGISTRAR};branch=z9hG4bK{branch}\r\n\
         Max-Forwards: 69\r\nRoute: {route}\r\nFrom: <sip:bob@example.com>;tag=b\r\n\
         To: <sip:alice@example.com>\r\nCall-ID: call-{branch}\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:bob@10.0.0.5>\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The registrar's INVITE (branch `branch`) along the Path entry `path`: what the edge
/// forwarded.
fn invite_down(r: &mut Relay, path: &str, branch: &str) -> (SocketAddr, String) {
    let sent = r.feed(&invite_from_registrar(path, branch), REGISTRAR);
    sent.into_iter()
        .find(|(_, m)| m.starts_with("INVITE"))
        .expect("forwarded")
}

/// alice registered from `source` over `t`: the Path entry the registrar routes back with.
fn registered(r: &mut Relay, source: &str, t: Transport) -> String {
    let req = r.register(source, 1, CREDENTIALS, t);
    r.answer(
        &req,
        "200 OK",
        "Contact: <sip:alice@192.168.1.20:5060>;expires=600\r\n",
    );
    header(&req, "Path").expect("Path").to_string()
}

/// A request from the registrar through our Path entry goes down the flow its token names
/// (the phone's NATed source), record-routed; over TCP, to the registering connection's
/// peer address.
#[test]
fn requests_from_the_registrar_go_down_the_flow() {
    let mut r = Relay::new();
    let path = registered(&mut r, PHONE, Transport::Datagram);
    let inv = invite_down(&mut r, &path, "i1");
    assert_eq!(inv.0, PHONE.parse::<SocketAddr>().expect("addr"));
    assert!(header(&inv.1, "Route").is_none(), "{}", inv.1);
    assert!(header(&inv.1, "Record-Route").is_some(), "{}", inv.1);

    let tcp_phone = "203.0.113.8:51123";
    let path = registered(&mut r, tcp_phone, Transport::Stream);
    let inv = invite_down(&mut r, &path, "i2");
    assert_eq!(inv.0, tcp_phone.parse::<SocketAddr>().expect("addr"));
    assert!(inv.1.contains("SIP/2.0/TCP"), "{}", inv.1);
}

/// Nobody but the registrar (or an allow-listed host) gets anything down a flow; a token
/// with one digit changed gets 403, a flow no longer registered 430 (RFC 5626 5.3).
#[test]
fn flows_are_not_an_open_relay() {
    let mut r = Relay::new();
    let path = registered(&mut r, PHONE, Transport::Datagram);
    let sent = r.feed(&invite_from_registrar(&path, "o1"), "198.51.100.66:5060");
    assert!(
        sent.iter()
            .all(|(a, m)| a.port() != 40000 && !m.starts_with("INVITE")),
        "{sent:?}"
    );
    assert!(sent[0].1.starts_with("SIP/2.0 403"), "{sent:?}");
    assert_eq!(super::refused(&r.core, "flow_outsider"), 1);

    let at = path.find("sfwf=").expect("token") + 5;
    let mut forged = path.clone().into_bytes();
    forged[at + 20] = if forged[at + 20] == b'0' { b'1' } else { b'0' };
    let forged = String::from_utf8(forged).expect("utf8");
    let sent = r.feed(&invite_from_registrar(&forged, "o2"), REGISTRAR);
    assert!(sent[0].1.starts_with("SIP/2.0 403"), "{sent:?}");
    assert_eq!(super::refused(&r.core, "bad_flow_token"), 1);

    // alice unregisters: her flow's token is stale.
    let req = r.register(PHONE, 5, "Expires: 0\r\n", Transport::Datagram);
    r.answer(&req, "200 OK", "");
    assert_eq!(r.core.relayed_flows(), 0);
    let sent = r.feed(&invite_from_registrar(&path, "o3"), REGISTRAR);
    assert!(sent[0].1.starts_with("SIP/2.0 430"), "{sent:?}");
    assert_eq!(super::refused(&r.core, "flow_failed"), 1);
}

/// alice's call to bob (our domain) from the phone, with her credentials.
fn call_from_phone() -> String {
    format!(
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKc1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>\r\n\
         Call-ID: c1\r\nCSeq: 2 INVITE\r\nContact: <sip:alice@192.168.1.20:5060>\r\n\
         Proxy-Authorization: Digest username=\"alice\", realm=\"example.com\", nonce=\"x\", \
         uri=\"sip:bob@example.com\", response=\"00\"\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The INVITE the edge sent of `sent`.
fn forwarded_invite(sent: &[(SocketAddr, String)]) -> &(SocketAddr, String) {
    sent.iter()
        .find(|(_, m)| m.starts_with("INVITE"))
        .expect("forwarded")
}

/// A phone's call to our domain goes to the registrar, record-routed, with its credentials;
/// an outsider's request toward a foreign domain is refused (no open relay).
#[test]
fn calls_from_phones_go_to_the_registrar() {
    let mut r = Relay::new();
    let invite = call_from_phone();
    let sent = r.feed(&invite, PHONE);
    let inv = forwarded_invite(&sent);
    assert_eq!(inv.0, REGISTRAR.parse::<SocketAddr>().expect("addr"));
    assert!(header(&inv.1, "Proxy-Authorization").is_some(), "{}", inv.1);
    assert!(header(&inv.1, "Record-Route").is_some(), "{}", inv.1);

    let foreign = invite
        .replace("bob@example.com", "x@carrier.example")
        .replace("alice@example.com", "eve@evil.example")
        .replace("c1", "c2");
    let sent = r.feed(&foreign, "198.51.100.66:5060");
    assert!(sent[0].1.starts_with("SIP/2.0 403"), "{sent:?}");
}

/// The call server of `[proxy] inbound`, beside the registrar.
const INBOUND: &str = "10.0.0.6:5060";

/// With `[proxy] inbound`, a phone's call goes to the call server, its REGISTER still to
/// the registrar.
#[test]
fn inbound_takes_the_calls_and_relay_to_the_registrations() {
    let mut r = Relay::with_proxy(&format!("inbound = \"{INBOUND}\""));
    let sent = r.feed(&call_from_phone(), PHONE);
    let inv = forwarded_invite(&sent);
    assert_eq!(inv.0, INBOUND.parse::<SocketAddr>().expect("addr"));
    assert!(header(&inv.1, "Proxy-Authorization").is_some(), "{}", inv.1);
    assert!(header(&inv.1, "Record-Route").is_some(), "{}", inv.1);
    // `register` asserts it went to the registrar.
    let req = r.register(PHONE, 1, CREDENTIALS, Transport::Datagram);
    assert!(header(&req, "Path").is_some(), "{req}");
}

/// The call server's request through our Path entry goes down the flow, as the
/// registrar's does; an outsider's still gets 403.
#[test]
fn the_inbound_host_routes_down_flows_and_outsiders_do_not() {
    let mut r = Relay::with_proxy(&format!("inbound = \"sip:{INBOUND}\""));
    let path = registered(&mut r, PHONE, Transport::Datagram);
    let invite = invite_from_registrar(&path, "n1").replace(REGISTRAR, INBOUND);
    let sent = r.feed(&invite, INBOUND);
    assert_eq!(
        forwarded_invite(&sent).0,
        PHONE.parse::<SocketAddr>().expect("addr")
    );
    let invite = invite_from_registrar(&path, "n2").replace(REGISTRAR, "198.51.100.66:5060");
    let sent = r.feed(&invite, "198.51.100.66:5060");
    assert!(sent[0].1.starts_with("SIP/2.0 403"), "{sent:?}");
    assert_eq!(super::refused(&r.core, "flow_outsider"), 1);
}

/// The Record-Route values of a message, top first.
fn record_routes(m: &str) -> Vec<&str> {
    m.lines()
        .filter_map(|l| l.strip_prefix("Record-Route: "))
        .collect()
}

/// A call passes us twice (phone -> edge -> registrar -> edge -> phone) and the registrar
/// record-routes: an in-dialog BYE passes us, the registrar, and us again with the same
/// Request-URI. The second pass is a spiral (the registrar consumed its Route entry), not a
/// loop: it reaches the callee.
#[test]
fn in_dialog_spirals_through_the_registrar_are_no_loop() {
    let mut r = Relay::new();
    let callee = "203.0.113.9:40001";
    let path = registered(&mut r, callee, Transport::Datagram);
    let invite = format!(
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKs1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>\r\n\
         Call-ID: spiral\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@192.168.1.20:5060>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let sent = r.feed(&invite, PHONE);
    let first = &sent
        .iter()
        .find(|(_, m)| m.starts_with("INVITE"))
        .expect("to the registrar")
        .1;
    // The registrar sends it on through the callee's Path, record-routing.
    let k_rr = "<sip:10.0.0.5:5060;lr>";
    let second = first.replacen(
        "INVITE sip:bob@example.com SIP/2.0\r\n",
        &format!(
            "INVITE sip:bob@192.168.1.30:5060 SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {REGISTRAR};branch=z9hG4bKk1\r\nRoute: {path}\r\n\
                 Record-Route: {k_rr}\r\n"
        ),
        1,
    );
    let sent = r.feed(&second, REGISTRAR);
    let to_callee = &sent
        .iter()
        .find(|(_, m)| m.starts_with("INVITE"))
        .expect("to the callee");
    assert_eq!(to_callee.0, callee.parse::<SocketAddr>().expect("addr"));
    let rr = record_routes(&to_callee.1);
    assert_eq!(rr.len(), 3, "{rr:?}");

    // The caller's BYE: its route set is the Record-Route in reverse.
    let route: Vec<&str> = rr.iter().rev().copied().collect();
    let bye = |via: &str, route: &str| {
        format!(
            "BYE sip:bob@192.168.1.30:5060 SIP/2.0\r\n{via}Max-Forwards: 70\r\nRoute: {route}\r\n\
             From: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>;tag=b\r\n\
             Call-ID: spiral\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let sent = r.feed(
        &bye(
            &format!("Via: SIP/2.0/UDP {PHONE};branch=z9hG4bKs2\r\n"),
            &route.join(", "),
        ),
        PHONE,
    );
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].0, REGISTRAR.parse::<SocketAddr>().expect("addr"));
    // The registrar pops its entry and sends it back to us.
    let vias: String = sent[0]
        .1
        .lines()
        .filter(|l| l.starts_with("Via: "))
        .map(|l| format!("{l}\r\n"))
        .collect();
    let again = bye(
        &format!("Via: SIP/2.0/UDP {REGISTRAR};branch=z9hG4bKk2\r\n{vias}"),
        route.last().expect("our second entry"),
    );
    let sent = r.feed(&again, REGISTRAR);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(
        sent[0].0,
        callee.parse::<SocketAddr>().expect("addr"),
        "{}",
        sent[0].1
    );
    assert!(sent[0].1.starts_with("BYE "), "{}", sent[0].1);
}

/// Keep-alives every 2 s, a flow gone after 2 unanswered, in keep-alive mode `mode`.
fn keeping_alive(mode: &str) -> Relay {
    Relay::with(
        "",
        &format!("keepalive = \"{mode}\"\nkeepalive_interval = \"2s\"\nkeepalive_failures = 2"),
    )
}

impl Relay {
    /// Time passes by `secs` (timers fire each 100 ms): what the edge sent.
    fn advance(&mut self, secs: u64) -> Vec<(SocketAddr, String)> {
        let (total, step) = (Duration::from_secs(secs), Duration::from_millis(100));
        super::advance(&mut self.core, &mut self.now, total, step)
    }
}

/// A relayed UDP flow behind NAT (its Contact names a private address) gets an OPTIONS
/// down the flow each interval; answered, it stays; silent, it leaves the relayed table
/// when the next ping is due, and the registrar's request down its token gets 430.
#[test]
fn relayed_udp_flows_behind_nat_are_pinged_and_dropped_when_silent() {
    let mut r = keeping_alive("nat");
    let path = registered(&mut r, PHONE, Transport::Datagram);
    let pings = to(&r.advance(2), PHONE, "OPTIONS sip:alice@192.168.1.20:5060 ");
    assert_eq!(pings.len(), 1, "one ping in the first interval");
    r.feed(
        &format!(
            "SIP/2.0 200 OK\r\n{}Content-Length: 0\r\n\r\n",
            response_lines(&pings[0], "ph")
        ),
        PHONE,
    );
    let count = |r: &Relay, e: &str| {
        let events = &r.core.metrics.keepalive.events;
        events.with_label_values(&[e]).get()
    };
    assert_eq!(count(&r, "answered"), 1);
    // Silent from now on: 2 pings unanswered, gone when the third is due.
    let mut unanswered = 0;
    for _ in 0..4 {
        unanswered += to(&r.advance(2), PHONE, "OPTIONS").len();
    }
    assert_eq!(unanswered, 2);
    assert_eq!(r.core.relayed_flows(), 0);
    assert_eq!(count(&r, "removed_unanswered"), 1);
    let sent = r.feed(&invite_from_registrar(&path, "k1"), REGISTRAR);
    assert!(sent[0].1.starts_with("SIP/2.0 430"), "{sent:?}");
}

/// A relayed TCP flow is pinged with a double CRLF on its connection; when the connection
/// closes the flow leaves the relayed table at once: 430 down its token.
#[test]
fn a_relayed_tcp_flow_goes_with_its_connection() {
    let mut r = keeping_alive("nat");
    let tcp_phone = "203.0.113.8:51123";
    let path = registered(&mut r, tcp_phone, Transport::Stream);
    assert_eq!(to(&r.advance(2), tcp_phone, "\r\n\r\n").len(), 1);
    let dest = Destination {
        addr: tcp_phone.parse().expect("addr"),
        transport: Transport::Stream,
    };
    r.core.flow_closed(dest, r.now);
    assert_eq!(r.core.relayed_flows(), 0);
    let sent = r.feed(&invite_from_registrar(&path, "k2"), REGISTRAR);
    assert!(sent[0].1.starts_with("SIP/2.0 430"), "{sent:?}");
}

/// `[registrar] keepalive` decides for relayed flows as for local bindings: "nat" pings a
/// phone whose Contact names its NAT address only when its flow differs; "all" pings it
/// too; "off" pings none.
#[test]
fn relayed_flows_follow_the_keepalive_mode() {
    // The Contact `registered` sends (192.168.1.20:5060), as the source: no NAT.
    let direct = "192.168.1.20:5060";
    for (mode, natted, direct_pinged) in [("nat", 1, 0), ("all", 1, 1), ("off", 0, 0)] {
        let mut r = keeping_alive(mode);
        registered(&mut r, PHONE, Transport::Datagram);
        registered(&mut r, direct, Transport::Datagram);
        let sent = r.advance(2);
        assert_eq!(to(&sent, PHONE, "OPTIONS").len(), natted, "{mode}");
        assert_eq!(to(&sent, direct, "OPTIONS").len(), direct_pinged, "{mode}");
    }
}
