//! The keep-alive schedule on a clock moved by hand.

use super::*;

fn cfg(mode: KeepaliveMode) -> RegistrarConfig {
    RegistrarConfig {
        keepalive: mode,
        keepalive_interval: Duration::from_secs(30),
        keepalive_failures: 3,
        ..RegistrarConfig::default()
    }
}

fn binding(contact: &str, source: &str, transport: Transport) -> Binding {
    Binding {
        contact: contact.into(),
        expires_at: Instant::now() + Duration::from_secs(3600),
        call_id: "c".into(),
        cseq: 1,
        source: source.parse().unwrap(),
        transport,
        authenticated: Some("bob".into()),
        path: None,
    }
}

fn flow(addr: &str, transport: Transport) -> Flow {
    Flow {
        addr: addr.parse().unwrap(),
        transport,
    }
}

/// Pings due over `secs` seconds from `now`, a tick every 100 ms.
fn run(k: &mut Keepalive, now: &mut Instant, secs: u64) -> (Vec<Flow>, Vec<Flow>) {
    let (mut pings, mut dead) = (Vec::new(), Vec::new());
    for _ in 0..secs * 10 {
        *now += Duration::from_millis(100);
        let t = k.due(*now);
        pings.extend(t.pings);
        dead.extend(t.dead.into_iter().map(|d| d.0));
    }
    (pings, dead)
}

/// "nat": a Contact naming another address or port than the source, a name, or `;ob`;
/// "all": everything of ours; "off": nothing; a binding held by another node never.
#[test]
fn which_bindings_are_kept() {
    let nat = Keepalive::new(&cfg(KeepaliveMode::Nat));
    let u = Transport::Datagram;
    assert!(!nat.keeps(&binding("sip:a@192.0.2.1:5060", "192.0.2.1:5060", u)));
    assert!(!nat.keeps(&binding("sip:a@192.0.2.1", "192.0.2.1:5060", u)));
    assert!(nat.keeps(&binding("sip:a@10.0.0.5:5060", "192.0.2.1:5060", u)));
    assert!(nat.keeps(&binding("sip:a@192.0.2.1:5060", "192.0.2.1:40000", u)));
    assert!(nat.keeps(&binding(
        "sip:a@h.invalid;transport=ws",
        "192.0.2.1:4000",
        Transport::Ws
    )));
    assert!(nat.keeps(&binding("sip:a@192.0.2.1:5060;ob", "192.0.2.1:5060", u)));
    let mut remote = binding("sip:a@10.0.0.5", "192.0.2.1:5060", u);
    remote.path = Some("sip:node2;lr".into());
    assert!(!nat.keeps(&remote));
    let all = Keepalive::new(&cfg(KeepaliveMode::All));
    assert!(all.keeps(&binding("sip:a@192.0.2.1:5060", "192.0.2.1:5060", u)));
    assert!(!all.keeps(&remote));
    let off = Keepalive::new(&cfg(KeepaliveMode::Off));
    assert!(!off.keeps(&binding("sip:a@10.0.0.5", "192.0.2.1:5060", u)));
}

/// Each flow is pinged once per interval; unanswered `failures` times in a row it is dead
/// when the next ping is due; an answer (or a pong) starts the count again.
#[test]
fn pings_each_interval_and_declares_the_silent_dead() {
    let mut k = Keepalive::new(&cfg(KeepaliveMode::Nat));
    let mut now = Instant::now();
    let b = binding("sip:a@10.0.0.5", "192.0.2.1:5060", Transport::Datagram);
    assert_eq!(k.track("a@x", &b, now), Track::Tracked);
    let f = flow("192.0.2.1:5060", Transport::Datagram);
    let (pings, dead) = run(&mut k, &mut now, 30);
    assert_eq!(
        (pings, dead.len()),
        (vec![f], 0),
        "one ping within the interval"
    );
    k.sent(&f, "z9hG4bKsfwk1".into());
    // A forged answer from elsewhere keeps nothing alive.
    let other = "203.0.113.9:5060".parse().unwrap();
    assert_eq!(
        k.answered("z9hG4bKsfwk1", other, Transport::Datagram),
        Answer::WrongSource
    );
    assert_eq!(
        k.answered("z9hG4bKsfwk1", f.addr, Transport::Stream),
        Answer::WrongSource
    );
    assert_eq!(
        k.answered("z9hG4bKsfwk1", f.addr, f.transport),
        Answer::Alive(f)
    );
    assert_eq!(k.in_flight(), 0);
    assert_eq!(
        k.answered("z9hG4bKsfwk1", f.addr, f.transport),
        Answer::Unknown
    );
    // Now silent: three more pings, then dead at the fourth due time.
    let (pings, dead) = run(&mut k, &mut now, 30 * 3);
    assert_eq!(pings.len(), 3);
    assert!(dead.is_empty());
    let (pings, dead) = run(&mut k, &mut now, 30);
    assert_eq!((pings.len(), dead), (0, vec![f]));
    assert!(!k.holds(&f));
    assert!(run(&mut k, &mut now, 60).0.is_empty(), "forgotten");
}

/// A closed connection gives its bindings back at once; a pong keeps a stream flow alive.
#[test]
fn closed_connections_and_pongs() {
    let mut k = Keepalive::new(&cfg(KeepaliveMode::Nat));
    let mut now = Instant::now();
    let t = Transport::Stream;
    let b1 = binding("sip:a@10.0.0.5:5060;transport=tcp", "192.0.2.1:40000", t);
    let b2 = binding("sip:b@10.0.0.5:5060;transport=tcp", "192.0.2.1:40000", t);
    k.track("a@x", &b1, now);
    k.track("b@x", &b2, now);
    let f = flow("192.0.2.1:40000", t);
    assert_eq!(k.members(&f).len(), 2);
    for _ in 0..6 {
        let (pings, dead) = run(&mut k, &mut now, 30);
        assert_eq!((pings, dead), (vec![f], vec![]));
        assert!(k.pong(&f));
    }
    let (members, branch) = k.closed(&f).expect("kept alive");
    assert_eq!(members.len(), 2);
    assert_eq!(branch, None);
    assert!(k.closed(&f).is_none());
    assert!(!k.pong(&f));
}

/// A crowd registering at once is pinged spread over the interval, never more than the
/// second's budget; what waits is said.
#[test]
fn pings_are_spread_and_bounded() {
    let mut k = Keepalive::new(&cfg(KeepaliveMode::All));
    let mut now = Instant::now();
    let n = 2 * MAX_PINGS_PER_SECOND as usize;
    for i in 0..n {
        let addr = SocketAddr::new([10, (i >> 16) as u8, (i >> 8) as u8, i as u8].into(), 5060);
        let b = binding("sip:a@h", &addr.to_string(), Transport::Stream);
        assert_eq!(k.track(&format!("u{i}@x"), &b, now), Track::Tracked);
    }
    let mut busiest = 0;
    let mut total = 0;
    for _ in 0..30 {
        now += Duration::from_secs(1);
        let t = k.due(now);
        busiest = busiest.max(t.pings.len());
        total += t.pings.len();
    }
    assert_eq!(total, n, "everyone once in the interval");
    assert!(busiest < n / 4, "spread: {busiest} in one second");
    assert!(busiest <= MAX_PINGS_PER_SECOND as usize);
    // All due in the same second: the budget holds the rest back.
    let mut k = Keepalive::new(&cfg(KeepaliveMode::All));
    for i in 0..n {
        let addr = SocketAddr::new([10, (i >> 16) as u8, (i >> 8) as u8, i as u8].into(), 5060);
        k.track(
            "a@x",
            &binding("sip:a@h", &addr.to_string(), Transport::Stream),
            now,
        );
    }
    let t = k.due(now + Duration::from_secs(31));
    assert_eq!(t.pings.len(), MAX_PINGS_PER_SECOND as usize);
    assert_eq!(t.deferred, Some("rate"));
    let t = k.due(now + Duration::from_secs(32));
    assert_eq!(t.pings.len(), MAX_PINGS_PER_SECOND as usize);
}
