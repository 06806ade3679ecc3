//! RFC 3263 resolution against a real DNS server: dnsmasq (Debian's dnsmasq-base, installed
//! by `cargo xtask setup`) on a loopback port, serving NAPTR, SRV and A records made here.

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use sip_firewall::{
    proxy::dns::{Dns, DnsConfig, DnsError},
    seams::Destination,
};
use sip_firewall_sip::Transport;
use sip_firewall_tests::ua::{msg::peer_invite, response_to};

mod common;

use common::dnsmasq;

/// The resolver of the daemon asking the dnsmasq on 127.0.0.1:`port`.
fn resolver(port: u16) -> Dns {
    Dns::new(&DnsConfig {
        nameservers: vec![SocketAddr::from(([127, 0, 0, 1], port))],
        ..DnsConfig::default()
    })
    .expect("resolver")
}

/// The daemon asking the dnsmasq on 127.0.0.1:`port`, its callers trusted peers (they may
/// relay to foreign domains), next hops on loopback allowed; `extra` appended.
fn resolving_edge(tag: &str, port: u16, extra: &str) -> common::Daemon {
    let config = format!(
        "[policy]\nallow = [\"127.0.0.0/8\"]\n[proxy]\ninternal_next_hops = [\"127.0.0.0/8\"]\n\
         [dns]\nnameservers = [\"127.0.0.1:{port}\"]\n{extra}"
    );
    common::start(tag, &config, None)
}

fn udp(a: &str) -> Destination {
    Destination {
        addr: a.parse().unwrap(),
        transport: Transport::Datagram,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naptr_srv_and_a_records_give_the_ordered_targets() {
    let port = common::free_port();
    let Some(_dns) = dnsmasq(
        "naptr_srv_and_a_records_give_the_ordered_targets",
        port,
        &[
            "--naptr-record=example.test,10,10,S,SIP+D2U,,_sip._udp.example.test",
            "--naptr-record=example.test,20,10,S,SIP+D2T,,_sip._tcp.example.test",
            // The first target (priority 10) and the failover (priority 20).
            "--srv-host=_sip._udp.example.test,sip2.example.test,5080,20,0",
            "--srv-host=_sip._udp.example.test,sip1.example.test,5070,10,0",
            "--srv-host=_sip._tcp.example.test,sip1.example.test,5070,10,0",
            "--host-record=sip1.example.test,127.0.0.11",
            "--host-record=sip2.example.test,127.0.0.12",
            "--host-record=plain.test,127.0.0.13",
            "--srv-host=_sips._tcp.secure.test,sip1.example.test,5061,10,0",
        ],
    ) else {
        return;
    };
    let dns = resolver(port);
    // NAPTR (UDP first by order) -> SRV by priority -> A.
    assert_eq!(
        dns.targets("sip:bob@example.test").await,
        Ok(vec![udp("127.0.0.11:5070"), udp("127.0.0.12:5080")])
    );
    // A transport named: its SRV records only.
    assert_eq!(
        dns.targets("sip:bob@example.test;transport=tcp").await,
        Ok(vec![Destination {
            addr: "127.0.0.11:5070".parse().unwrap(),
            transport: Transport::Stream
        }])
    );
    // sips: the _sips._tcp records, over TLS.
    assert_eq!(
        dns.targets("sips:bob@secure.test").await,
        Ok(vec![Destination {
            addr: "127.0.0.11:5061".parse().unwrap(),
            transport: Transport::Tls
        }])
    );
    // No NAPTR, no SRV: the A record on the default port (4.2).
    assert_eq!(
        dns.targets("sip:bob@plain.test").await,
        Ok(vec![udp("127.0.0.13:5060")])
    );
    // A port named: A/AAAA only.
    assert_eq!(
        dns.targets("sip:bob@sip2.example.test:5099").await,
        Ok(vec![udp("127.0.0.12:5099")])
    );
    // Nothing there: an answer, not a hang.
    assert_eq!(
        dns.targets("sip:bob@nothing.test").await,
        Err(DnsError::NotFound)
    );
    // An IP host is not DNS's business.
    assert_eq!(
        dns.targets("sip:bob@127.0.0.1").await,
        Err(DnsError::NotADomain)
    );
}

/// Name servers that do not answer: the resolution ends within `[dns] timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_name_server_costs_at_most_the_timeout() {
    // A bound UDP socket that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let dns = Dns::new(&DnsConfig {
        nameservers: vec![silent.local_addr().expect("addr")],
        timeout: Duration::from_secs(1),
        ..DnsConfig::default()
    })
    .expect("resolver");
    // A generous deadline: the resolver's own timeout must end it long before.
    let r = tokio::time::timeout(Duration::from_secs(30), dns.targets("sip:bob@example.test"))
        .await
        .expect("the resolution ends (no hang)");
    assert!(
        matches!(r, Err(DnsError::Failed(_) | DnsError::NotFound)),
        "{r:?}"
    );
}

/// A trunk's answer `code` to `req`.
fn trunk_answer(req: &str, code: &str) -> String {
    response_to(req, code, "trunk", "Contact: <sip:bob@127.0.0.1>\r\n")
}

/// The next request on `sock` (within its read timeout): text and source.
fn next_request(sock: &UdpSocket, what: &str) -> (String, SocketAddr) {
    let mut buf = [0u8; 8192];
    loop {
        let (n, from) = sock
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("{what}: nothing came ({e})"));
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if !text.starts_with("SIP/2.0") {
            return (text, from);
        }
    }
}

/// The first final response on `sock`.
fn final_response(sock: &UdpSocket) -> String {
    let mut buf = [0u8; 8192];
    loop {
        let (n, _) = sock.recv_from(&mut buf).expect("a final answer");
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        if text.starts_with("SIP/2.0 ") && !text.starts_with("SIP/2.0 1") {
            return text;
        }
    }
}

/// RFC 3263 end to end: the edge routes a call to a domain by NAPTR and SRV from
/// a real DNS server; the first SRV target answering 503, and then not answering at all
/// (nothing listens: Timer B), the call reaches the second target; the second call is routed
/// from the cache, without asking DNS again within the TTL (dnsmasq's query log and
/// `sipfw_dns_lookups_total{result="cached"}`).
#[test]
fn calls_to_a_domain_fail_over_to_the_next_srv_target_and_reuse_the_cached_answer() {
    let trunk1 = UdpSocket::bind("127.0.0.1:0").expect("trunk 1");
    let trunk2 = UdpSocket::bind("127.0.0.1:0").expect("trunk 2");
    for t in [&trunk1, &trunk2] {
        t.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
    }
    let (p1, p2) = (
        trunk1.local_addr().expect("addr").port(),
        trunk2.local_addr().expect("addr").port(),
    );
    let port = common::free_port();
    let dir = sip_firewall_tests::daemon::TempDir::new("dns");
    let log = dir.path.join("dnsmasq.log");
    let Some(_dns) = dnsmasq(
        "calls_to_a_domain_fail_over_to_the_next_srv_target_and_reuse_the_cached_answer",
        port,
        &[
            "--log-queries",
            &format!("--log-facility={}", log.display()),
            "--naptr-record=carrier.test,10,10,S,SIP+D2U,,_sip._udp.carrier.test",
            &format!("--srv-host=_sip._udp.carrier.test,trunk1.carrier.test,{p1},10,0"),
            &format!("--srv-host=_sip._udp.carrier.test,trunk2.carrier.test,{p2},20,0"),
            "--host-record=trunk1.carrier.test,127.0.0.1",
            "--host-record=trunk2.carrier.test,127.0.0.1",
        ],
    ) else {
        return;
    };
    // The caller is a trusted peer (it may relay to foreign domains); the trunks are on
    // loopback, which a next hop may be only when listed. T1 = 100ms: Timer B is 6.4 s.
    let edge = resolving_edge("dns", port, "[timers]\nt1 = \"100ms\"\n");
    let caller = UdpSocket::bind("127.0.0.1:0").expect("caller");
    caller
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let me = caller.local_addr().expect("addr");
    let invite = |n: u32| peer_invite("sip:bob@carrier.test", me, &format!("dns-call-{n}"));

    // Call 1: the first target (priority 10) answers 503; the second gets the INVITE.
    caller
        .send_to(invite(1).as_bytes(), edge.sip)
        .expect("send");
    let (req, from) = next_request(&trunk1, "the first SRV target");
    assert!(req.starts_with("INVITE sip:bob@carrier.test"), "{req}");
    trunk1
        .send_to(
            trunk_answer(&req, "503 Service Unavailable").as_bytes(),
            from,
        )
        .expect("503");
    let (req, from) = next_request(&trunk2, "the second SRV target after a 503");
    assert!(req.starts_with("INVITE sip:bob@carrier.test"), "{req}");
    assert!(req.contains("Call-ID: dns-call-1"), "{req}");
    trunk2
        .send_to(trunk_answer(&req, "200 OK").as_bytes(), from)
        .expect("200");
    let answer = final_response(&caller);
    assert!(answer.starts_with("SIP/2.0 200"), "{answer}");

    // Call 2: nothing listens on the first target any more; at Timer B the second gets it.
    drop(trunk1);
    caller
        .send_to(invite(2).as_bytes(), edge.sip)
        .expect("send");
    let (req, from) = next_request(&trunk2, "the second SRV target after a timeout");
    assert!(req.contains("Call-ID: dns-call-2"), "{req}");
    trunk2
        .send_to(trunk_answer(&req, "486 Busy Here").as_bytes(), from)
        .expect("486");
    let answer = final_response(&caller);
    assert!(answer.starts_with("SIP/2.0 486"), "{answer}");

    // Within the TTL (dnsmasq gives 30 s) the name was resolved once: one NAPTR and one SRV
    // query reached the server, and the second call was routed from the cache.
    let text = std::fs::read_to_string(&log).expect("dnsmasq log");
    let queries = |q: &str| text.lines().filter(|l| l.contains(q)).count();
    assert_eq!(queries("query[NAPTR] carrier.test"), 1, "{text}");
    assert_eq!(queries("query[SRV] _sip._udp.carrier.test"), 1, "{text}");
    let m = common::scrape_opt(edge.metrics).expect("metrics");
    let v = |k: &str| m.get(k).copied().unwrap_or(0.0);
    assert_eq!(v("sipfw_dns_lookups_total{result=\"resolved\"}"), 1.0);
    assert_eq!(v("sipfw_dns_lookups_total{result=\"cached\"}"), 1.0);
    assert_eq!(
        v("sipfw_proxy_dns_routing_total{event=\"failover_503\"}"),
        1.0
    );
    assert_eq!(
        v("sipfw_proxy_dns_routing_total{event=\"failover_timeout\"}"),
        1.0
    );
}

/// TTLs honoured by the cache: within the TTL a name is answered from the cache
/// (`sipfw_dns_lookups_total{result="cached"}`), after it the servers are asked again
/// (polled, no timing asserted beyond dnsmasq's 5 s TTL covering two calls in a row).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_answers_expire_with_their_ttl() {
    let port = common::free_port();
    let Some(_dns) = dnsmasq(
        "cached_answers_expire_with_their_ttl",
        port,
        &[
            "--local-ttl=5",
            "--srv-host=_sip._udp.ttl.test,sip1.ttl.test,5070,10,0",
            "--host-record=sip1.ttl.test,127.0.0.11",
        ],
    ) else {
        return;
    };
    let dns = resolver(port);
    let uri = "sip:bob@ttl.test;transport=udp";
    let resolved = || sip_firewall::metrics::dns_lookups("resolved");
    let cached = || sip_firewall::metrics::dns_lookups("cached");
    let (r0, c0) = (resolved(), cached());
    assert_eq!(dns.targets(uri).await, Ok(vec![udp("127.0.0.11:5070")]));
    assert_eq!(resolved(), r0 + 1);
    // At once again: from the cache.
    assert_eq!(dns.targets(uri).await, Ok(vec![udp("127.0.0.11:5070")]));
    assert_eq!((resolved(), cached()), (r0 + 1, c0 + 1));
    // Past the TTL the servers are asked again.
    let t0 = std::time::Instant::now();
    while resolved() == r0 + 1 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the cached answer outlived its TTL"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(dns.targets(uri).await, Ok(vec![udp("127.0.0.11:5070")]));
    }
    assert_eq!(resolved(), r0 + 2);
}

/// RFC 3263 4.3 on a transport error: the first SRV target of a TCP name refuses the
/// connection, and the INVITE goes to the second at once (no Timer B wait: T1 is the
/// default 500 ms, Timer B 32 s), counted as `failover_transport_error`.
#[test]
fn a_refused_connection_fails_over_to_the_next_srv_target() {
    // A port nobody listens on (bound, then closed) and a listening trunk.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let p1 = dead.local_addr().expect("addr").port();
    drop(dead);
    let trunk2 = std::net::TcpListener::bind("127.0.0.1:0").expect("trunk 2");
    let p2 = trunk2.local_addr().expect("addr").port();
    let port = common::free_port();
    let Some(_dns) = dnsmasq(
        "a_refused_connection_fails_over_to_the_next_srv_target",
        port,
        &[
            &format!("--srv-host=_sip._tcp.tcp.test,trunk1.tcp.test,{p1},10,0"),
            &format!("--srv-host=_sip._tcp.tcp.test,trunk2.tcp.test,{p2},20,0"),
            "--host-record=trunk1.tcp.test,127.0.0.1",
            "--host-record=trunk2.tcp.test,127.0.0.1",
        ],
    ) else {
        return;
    };
    let edge = resolving_edge("dns-tcp", port, "");
    let caller = UdpSocket::bind("127.0.0.1:0").expect("caller");
    let me = caller.local_addr().expect("addr");
    let invite = peer_invite("sip:bob@tcp.test;transport=tcp", me, "dns-tcp-1");
    caller.send_to(invite.as_bytes(), edge.sip).expect("send");
    // Well within Timer B (32 s): only the transport error can have moved it on.
    trunk2.set_nonblocking(true).expect("nonblocking");
    let t0 = std::time::Instant::now();
    let mut conn = loop {
        match trunk2.accept() {
            Ok((c, _)) => break c,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    t0.elapsed() < Duration::from_secs(15),
                    "the second target got no connection before Timer B"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    conn.set_nonblocking(false).expect("blocking");
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    let n = std::io::Read::read(&mut conn, &mut buf).expect("the INVITE");
    let req = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        req.starts_with("INVITE sip:bob@tcp.test;transport=tcp"),
        "{req}"
    );
    let m = common::scrape_opt(edge.metrics).expect("metrics");
    assert_eq!(
        m.get("sipfw_proxy_dns_routing_total{event=\"failover_transport_error\"}")
            .copied(),
        Some(1.0)
    );
}
