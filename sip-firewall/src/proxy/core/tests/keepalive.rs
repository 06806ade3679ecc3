//! NAT keep-alives: contacts behind NAT are pinged down the flow they registered on (an
//! OPTIONS over UDP, a double-CRLF on streams); one that goes silent, or whose connection
//! closes, loses its binding at once and a call to it gets 480 at once; a forged answer
//! from elsewhere keeps nothing alive; calls to a live stream contact ride its connection.

use super::*;

const EDGE: &str = "192.0.2.10";
const CALLER: &str = "198.51.100.7:5060";
/// Pings every 2 s, a binding gone after 2 unanswered.
const CONF: &str = "[sip]\nlisten = [\"0.0.0.0:5060\"]\n[policy]\nallow = [\"10.0.0.0/8\"]\n\
                    [registrar]\nkeepalive_interval = \"2s\"\nkeepalive_failures = 2\n";

struct Edge {
    core: Core,
    now: Instant,
}

impl Edge {
    fn new() -> Edge {
        let now = Instant::now();
        let mut core = super::core(CONF, now);
        core.local.set_addrs(vec![EDGE.parse().expect("ip")]);
        core.local.domains = vec!["example.com".into()];
        Edge { core, now }
    }

    fn feed(&mut self, text: &str, source: &str, t: Transport) -> Vec<(SocketAddr, String)> {
        let ctx = ctx_on(source, &format!("{EDGE}:5060"), t);
        feed(&mut self.core, self.now, text, &ctx).1
    }

    /// bob registers `contact` from `source` over `t` (allow-listed: no digest).
    fn register(&mut self, contact: &str, source: &str, t: Transport) {
        let reg = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {source};branch=z9hG4bKreg\r\n\
             From: <sip:bob@example.com>;tag=r\r\nTo: <sip:bob@example.com>\r\nCall-ID: reg\r\n\
             CSeq: 1 REGISTER\r\nContact: <{contact}>\r\nContent-Length: 0\r\n\r\n"
        );
        let sent = self.feed(&reg, source, t);
        assert!(sent[0].1.starts_with("SIP/2.0 200"), "{sent:?}");
    }

    fn advance(&mut self, secs: u64) -> Vec<(SocketAddr, String)> {
        let step = Duration::from_millis(100);
        advance(
            &mut self.core,
            &mut self.now,
            Duration::from_secs(secs),
            step,
        )
    }

    /// A call to bob: what the core sent (the forwarded INVITE, or our answer to the caller).
    fn call(&mut self, call_id: &str) -> Vec<(SocketAddr, String)> {
        let invite = invite(call_id);
        self.feed(&invite, CALLER, Transport::Datagram)
    }

    /// A call to bob, and the sends it made with their destinations.
    fn call_raw(&mut self, call_id: &str) -> Vec<(Destination, Vec<u8>)> {
        let invite = invite(call_id);
        let m = parse(invite.as_bytes(), &Limits::default(), Transport::Datagram).expect("parse");
        let ctx = ctx_on(CALLER, &format!("{EDGE}:5060"), Transport::Datagram);
        self.core.request(&m, &ctx, self.now);
        self.core.take_sends()
    }

    fn count(&self, event: &str) -> u64 {
        self.core
            .metrics
            .keepalive
            .events
            .with_label_values(&[event])
            .get()
    }
}

fn invite(call_id: &str) -> String {
    format!(
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bK{call_id}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:eve@far.example>;tag=ev\r\nTo: <sip:bob@example.com>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:eve@{CALLER}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// The answer bob's phone gives to the ping `options`.
fn answer(options: &str) -> String {
    format!(
        "SIP/2.0 200 OK\r\n{}Content-Length: 0\r\n\r\n",
        response_lines(options, "ph")
    )
}

/// Over UDP: an OPTIONS every interval to the NAT's address; its answer from there keeps the
/// binding; a forged 200 from elsewhere does not; silent, the binding goes and a call gets
/// 480 at once.
#[test]
fn udp_contacts_behind_nat_are_pinged_and_dropped_when_silent() {
    let mut e = Edge::new();
    let nat = "10.0.0.21:40000";
    e.register("sip:bob@192.168.1.5:5060", nat, Transport::Datagram);
    let pings = to(
        &e.advance(2),
        nat,
        "OPTIONS sip:bob@192.168.1.5:5060 SIP/2.0",
    );
    assert_eq!(pings.len(), 1, "one ping in the first interval");
    // A forged answer from another host: a stray, nothing kept alive.
    let a = e.feed(&answer(&pings[0]), "10.0.0.99:40000", Transport::Datagram);
    assert!(a.is_empty());
    assert_eq!(e.count("wrong_source"), 1);
    // Answered by the phone, pinged and answered for a while: still bound.
    e.feed(&answer(&pings[0]), nat, Transport::Datagram);
    for _ in 0..3 {
        let pings = to(&e.advance(2), nat, "OPTIONS");
        assert_eq!(pings.len(), 1);
        e.feed(&answer(&pings[0]), nat, Transport::Datagram);
    }
    assert_eq!(e.count("answered"), 4);
    assert_eq!(
        to(&e.call("c1"), nat, "INVITE").len(),
        1,
        "a live contact is called"
    );
    // Silent from now on: 2 pings unanswered, gone when the third is due.
    let mut unanswered = 0;
    for _ in 0..4 {
        unanswered += to(&e.advance(2), nat, "OPTIONS").len();
    }
    assert_eq!(unanswered, 2);
    assert!(unbound(&e.core, "bob@example.com", e.now));
    assert_eq!(e.count("removed_unanswered"), 1);
    let sent = e.call("c2");
    assert_eq!(to(&sent, CALLER, "SIP/2.0 480").len(), 1, "{sent:?}");
}

/// Over TCP and WebSocket: calls ride the registering connection (not the port the Contact
/// names); a double-CRLF ping each interval, kept alive by the pong; silent or closed, the
/// binding goes at once.
#[test]
fn stream_contacts_ride_their_connection_and_go_with_it() {
    for (t, contact) in [
        (Transport::Stream, "sip:bob@10.0.0.22:5060;transport=tcp"),
        (Transport::Ws, "sip:bob@k3j9.invalid;transport=ws"),
    ] {
        let mut e = Edge::new();
        let flow = "10.0.0.22:40001";
        e.register(contact, flow, t);
        let dest = Destination {
            addr: flow.parse().unwrap(),
            transport: t,
        };
        // The call rides the registering connection, and only it (never a new one).
        let sends = e.call_raw("c1");
        let invites: Vec<_> = sends
            .iter()
            .filter(|(_, b)| b.starts_with(b"INVITE"))
            .map(|(d, _)| *d)
            .collect();
        assert_eq!(invites, vec![dest], "{t:?}");
        assert_eq!(e.core.held_flows(&sends), vec![dest]);
        for _ in 0..3 {
            let pings = to(&e.advance(2), flow, "\r\n\r\n");
            assert_eq!(pings, vec!["\r\n\r\n".to_string()], "{t:?}");
            e.core.flow_pong(dest);
        }
        assert_eq!(e.count("pong"), 3);
        assert_eq!(
            e.core.store.lock().lookup("bob@example.com", e.now).len(),
            1
        );
        e.core.flow_closed(dest, e.now);
        assert!(unbound(&e.core, "bob@example.com", e.now), "{t:?}");
        assert_eq!(e.count("removed_closed"), 1);
        assert_eq!(to(&e.call("c2"), CALLER, "SIP/2.0 480").len(), 1);
        // Silent (no pong): gone within the tolerance too.
        e.register(contact, flow, t);
        e.advance(2 * 3);
        assert!(unbound(&e.core, "bob@example.com", e.now), "{t:?}");
        assert_eq!(e.count("removed_unanswered"), 1);
    }
}

/// STUN keep-alives over UDP (RFC 5626 4.4.2): answered only from the registered flow (not
/// another port of the same host, not before the REGISTER), and they keep the flow alive as
/// the OPTIONS answers do.
#[test]
fn stun_is_answered_only_from_a_registered_udp_flow_and_proves_it_alive() {
    let mut e = Edge::new();
    let nat = "10.0.0.21:40000";
    let flow = |a: &str| Destination {
        addr: a.parse().expect("literal address"),
        transport: Transport::Datagram,
    };
    assert!(!e.core.flow_stun(flow(nat), e.now), "not registered yet");
    e.register("sip:bob@192.168.1.5:5060;ob", nat, Transport::Datagram);
    assert!(e.core.flow_stun(flow(nat), e.now));
    assert!(!e.core.flow_stun(flow("10.0.0.21:40001"), e.now));
    assert_eq!((e.count("stun_answered"), e.count("stun_refused")), (1, 2));
    // The OPTIONS pings go unanswered, the STUN keep-alives arrive: still bound.
    for _ in 0..6 {
        e.advance(2);
        assert!(e.core.flow_stun(flow(nat), e.now));
    }
    assert_eq!(
        e.core.store.lock().lookup("bob@example.com", e.now).len(),
        1
    );
    assert_eq!(e.count("removed_unanswered"), 0);
}

/// With `keepalive = "off"` nothing is pinged, but a UDP contact that asked for its flow
/// (`;ob`) keeps it alive itself with STUN (RFC 5626 4.4.2), which is answered (5.4); its
/// flow is let go with its binding. A contact without `;ob` gets no answer. A reload to
/// `"off"` keeps such a flow held.
#[test]
fn stun_is_answered_to_an_outbound_contact_with_keepalives_off() {
    let flow = |a: &str| Destination {
        addr: a.parse().expect("literal address"),
        transport: Transport::Datagram,
    };
    let off = format!("{CONF}keepalive = \"off\"\n");
    let mut e = Edge::new();
    e.core
        .reconfigure(&Config::from_toml(&off, std::path::Path::new("t.toml")).expect("config"));
    e.core.local.set_addrs(vec![EDGE.parse().expect("ip")]);
    let (ob, plain) = ("10.0.0.21:40000", "10.0.0.22:40000");
    e.register("sip:bob@192.168.1.5:5060;ob", ob, Transport::Datagram);
    e.register("sip:bob@192.168.1.6:5060", plain, Transport::Datagram);
    assert!(e.core.flow_stun(flow(ob), e.now));
    assert!(!e.core.flow_stun(flow(plain), e.now));
    let sent = e.advance(10);
    assert!(
        !sent.iter().any(|(_, m)| m.starts_with("OPTIONS ")),
        "{sent:?}"
    );
    assert_eq!(e.count("ping_options"), 0);
    assert_eq!(
        e.core.store.lock().lookup("bob@example.com", e.now).len(),
        2
    );

    // The binding goes (unregistered): so does its flow, at its next check.
    e.core
        .store
        .lock()
        .remove("bob@example.com", "sip:bob@192.168.1.5:5060;ob");
    e.advance(3);
    assert!(!e.core.flow_stun(flow(ob), e.now));

    // Pinged under "nat", then a reload to "off": still answered, no longer pinged.
    let mut e = Edge::new();
    e.register("sip:bob@192.168.1.5:5060;ob", ob, Transport::Datagram);
    e.core
        .reconfigure(&Config::from_toml(&off, std::path::Path::new("t.toml")).expect("config"));
    e.core.local.set_addrs(vec![EDGE.parse().expect("ip")]);
    let sent = e.advance(10);
    assert!(!sent.iter().any(|(_, m)| m.starts_with("OPTIONS ")));
    assert!(e.core.flow_stun(flow(ob), e.now));
}
