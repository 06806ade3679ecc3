//! NAT keep-alives on the daemon (loopback, `keepalive_interval = "1s"`, two misses): a
//! phone registered over UDP with a Contact its source does not match (behind NAT) is
//! pinged with OPTIONS, and one over TCP and one over WebSocket with double-CRLF pings on
//! their connection. Calls to the live stream ones ride their registering connection (their
//! Contact names an address nobody listens on). Each one that goes silent, or whose
//! connection closes, loses its binding within the tolerance, and a call to it gets 480 at
//! once. A phone registered over UDP with `;ob` gets its STUN keep-alives answered with its
//! own address (RFC 5626 4.4.2); an unregistered socket's get nothing.

use std::{
    net::{SocketAddr, TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use sip_firewall_sip::stun;
use sip_firewall_tests::ua::{
    Account,
    calls::{self, Client, DOMAIN, Phone as Caller, USER},
    msg::{response_to, status},
    udp::Phone,
    wire::{Stream, Wire},
    ws::ws,
};

mod common;

const ORIGIN: &str = "https://phone.example.com";

/// The daemon with alice's account, pings every second, two misses, and a ws listener.
fn start(tag: &str) -> (common::Daemon, SocketAddr) {
    let ws: SocketAddr = ([127, 0, 0, 1], common::free_port()).into();
    let config = format!(
        "{}[registrar]\nkeepalive_interval = \"1s\"\nkeepalive_failures = 2\n\
         [ws]\nlisten = [\"{ws}\"]\norigins = [\"{ORIGIN}\"]\n",
        calls::alice_config(),
    );
    let daemon = common::start(tag, &config, Some("warn"));
    let t0 = Instant::now();
    while TcpStream::connect(ws).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(20), "ws listener down");
        std::thread::sleep(Duration::from_millis(50));
    }
    (daemon, ws)
}

/// A metric of the daemon (0 when absent).
fn metric(d: &common::Daemon, name: &str) -> f64 {
    common::scrape_opt(d.metrics)
        .and_then(|m| m.get(name).copied())
        .unwrap_or(0.0)
}

/// Wait (bounded) until the daemon holds `n` bindings.
fn wait_bindings(d: &common::Daemon, n: f64, what: &str) {
    let t0 = Instant::now();
    while metric(d, "sipfw_registrar_bindings") != n {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{what}: bindings never {n}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A call to alice, who is not bound any more: 480 at once (no Timer B).
async fn unavailable_at_once(d: &common::Daemon, call_id: &str) {
    let caller = Caller::new(d.sip).await;
    caller.send(&caller.invite(call_id)).await;
    let last = caller
        .expect("the final answer", |m| status(m) >= 200)
        .await;
    assert_eq!(status(&last), 480, "{last}");
}

/// alice's phone on a loopback UDP socket, registered with `contact` (`call_id` its
/// REGISTER's).
fn registered_phone(d: &common::Daemon, contact: &str, call_id: &str) -> Phone {
    let sock = UdpSocket::bind("127.0.0.1:0").expect("phone");
    sock.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let mut phone = Phone::new(sock, d.sip, Account::new(USER, DOMAIN, "s3cret"));
    phone.ua.contact = contact.into();
    let (_, ok) = phone.register(call_id, None, 300);
    assert_eq!(ok.as_deref().map(status), Some(200), "{ok:?}");
    phone
}

/// Over UDP: the OPTIONS pings reach the NAT's address; answered, the binding stays;
/// unanswered, it goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_contact_behind_nat_is_pinged_and_dropped_when_silent() {
    let (d, _) = start("keepalive-udp");
    // Its Contact names a private address: the phone is behind NAT.
    let mut phone = registered_phone(&d, "sip:alice@192.168.77.5:5060", "ka-udp");
    let pinged = |r: &[String]| {
        r.iter()
            .filter(|m| m.starts_with("OPTIONS sip:alice@192.168.77.5:5060 SIP/2.0"))
            .count()
    };
    phone.listen(Duration::from_secs(15), |r| pinged(r) >= 4);
    assert!(pinged(&phone.requests) >= 4, "{:?}", phone.requests);
    let d2 = &d;
    tokio::task::block_in_place(|| wait_bindings(d2, 1.0, "answered"));
    // Silent from now on.
    phone.answer_options = false;
    let t0 = Instant::now();
    while metric(&d, "sipfw_registrar_bindings") != 0.0 {
        assert!(t0.elapsed() < Duration::from_secs(20), "never dropped");
        phone.receive();
    }
    assert_eq!(
        metric(
            &d,
            "sipfw_registrar_keepalive_total{event=\"removed_unanswered\"}"
        ),
        1.0
    );
    unavailable_at_once(&d, "ka-udp-480").await;
}

/// Over TCP and WebSocket: pinged on the connection and kept by the pong, called on it;
/// closed, the binding goes at once; silent, within the tolerance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_contacts_ride_their_connection_and_go_with_it() {
    let (d, ws_addr) = start("keepalive-streams");
    for round in 0..2 {
        let tcp = tokio::net::TcpStream::connect(d.sip).await.expect("tcp");
        let me = tcp.local_addr().expect("addr").to_string();
        // A Contact on an address nobody listens on: only the connection reaches alice.
        let contact = "sip:alice@192.0.2.57:5060;transport=tcp".to_string();
        let c = Client::new(Stream(tcp), "TCP", me, contact);
        live_then_gone(&d, c, &format!("tcp{round}"), round == 0).await;
        let conn = ws(ws_addr, Some("sip"), ORIGIN).await.expect("upgrade");
        let c = Client::new(
            conn,
            "WS",
            "h7.invalid".into(),
            "sip:alice@h7.invalid;transport=ws".into(),
        );
        live_then_gone(&d, c, &format!("ws{round}"), round == 0).await;
    }
    let closed = metric(
        &d,
        "sipfw_registrar_keepalive_total{event=\"removed_closed\"}",
    );
    let silent = metric(
        &d,
        "sipfw_registrar_keepalive_total{event=\"removed_unanswered\"}",
    );
    assert_eq!((closed, silent), (2.0, 2.0));
}

/// alice registers on `c`, answers pings and takes a call on her connection; then closes it
/// (`close`) or goes silent: her binding goes, and a call gets 480 at once.
async fn live_then_gone<W: Wire>(d: &common::Daemon, mut c: Client<W>, tag: &str, close: bool) {
    c.register(&format!("ka-{tag}")).await;
    for _ in 0..3 {
        assert!(c.wire.pong().await, "{tag}: no ping");
    }
    let caller = Caller::new(d.sip).await;
    caller.send(&caller.invite(&format!("ka-{tag}-call"))).await;
    let req = c.next("the call").await;
    assert!(req.starts_with("INVITE "), "{tag}: {req}");
    c.wire
        .send(&response_to(&req, "486 Busy Here", "a1", ""))
        .await;
    let busy = caller.expect("486", |m| status(m) >= 200).await;
    assert_eq!(status(&busy), 486, "{busy}");
    if close {
        drop(c);
        tokio::task::block_in_place(|| wait_bindings(d, 0.0, tag));
    } else {
        // Pings unanswered: `recv` lets them pass.
        let t0 = Instant::now();
        while metric(d, "sipfw_registrar_bindings") != 0.0 {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "{tag}: never dropped"
            );
            let _ = tokio::time::timeout(Duration::from_millis(200), c.wire.recv()).await;
        }
    }
    unavailable_at_once(d, &format!("ka-{tag}-480")).await;
}

/// The STUN Binding success response for `tid` arriving on `sock` within `within` (the
/// OPTIONS pings that also arrive are skipped): the address it maps, if one came.
fn stun_answer(sock: &UdpSocket, tid: [u8; 12], within: Duration) -> Option<SocketAddr> {
    let mut buf = [0u8; 2048];
    let t0 = Instant::now();
    while t0.elapsed() < within {
        let Ok((n, _)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let got = &buf[..n];
        if got.get(8..20) == Some(&tid[..]) {
            return stun::mapped_address(got);
        }
    }
    None
}

/// STUN over UDP (RFC 5626 4.4.2, 5.4): the registered flow's Binding requests (with and
/// without FINGERPRINT) are answered with its own address; a socket that registered
/// nothing gets no answer (the answer is larger than the request). Both counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stun_keepalives_are_answered_to_registered_flows_only() {
    let (d, _) = start("keepalive-stun");
    let phone = registered_phone(&d, "sip:alice@192.168.77.5:5060;ob", "ka-stun");
    let me = phone.sock.local_addr().expect("addr");
    for (i, fingerprint) in [false, true].into_iter().enumerate() {
        let tid = [0x5a, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, i as u8];
        let req = stun::binding_request(tid, fingerprint);
        phone.sock.send_to(&req, d.sip).expect("send");
        let mapped = stun_answer(&phone.sock, tid, Duration::from_secs(5));
        assert_eq!(mapped, Some(me), "fingerprint {fingerprint}");
    }
    let stranger = UdpSocket::bind("127.0.0.1:0").expect("stranger");
    stranger
        .set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let tid = [0xa5; 12];
    stranger
        .send_to(&stun::binding_request(tid, true), d.sip)
        .expect("send");
    let got = stun_answer(&stranger, tid, Duration::from_millis(700));
    assert_eq!(got, None, "an unregistered source is not answered");
    let count = |e: &str| {
        metric(
            &d,
            &format!("sipfw_registrar_keepalive_total{{event=\"{e}\"}}"),
        )
    };
    assert_eq!((count("stun_answered"), count("stun_refused")), (2.0, 1.0));
}
