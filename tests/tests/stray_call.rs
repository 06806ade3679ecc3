//! Forged replies during a call: a call through the proxy (SIPp UAC -> proxy -> registered SIPp UAS, all
//! UDP across veth-b) succeeds while another host forges `200 OK` and `180 Ringing` replies
//! with random branches at the proxy's SIP port. With XDP attached the forgeries die in the
//! program (the `stray_reply` counter rises by exactly what was forged, the daemon's message
//! layer sees none of them, and no genuine reply of the call is taken for a stray); with XDP
//! off the proxy drops them itself (RFC 3261 18.1.2) and forwards none.

use std::{
    hash::{BuildHasher as _, Hasher as _},
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use sip_firewall_tests::{
    domain::config,
    edge::edge,
    metrics::Metrics,
    netns::{Pair, in_ns},
    sipp::{self, Host, alice_calls_bob, codes, register_bob},
};

/// The forger: a third address on namespace a's side of the link.
const FORGER_HOST: u8 = 3;
const FORGER: &str = "198.51.100.3";
const UAS_PORT: u16 = 5070;
const UAC_PORT: u16 = 5080;
/// Forged replies sent during the call, and after it.
const DURING: usize = 100;
const AFTER: usize = 20;

/// A random branch (the std hasher's random keys; no other source needed).
fn random_u64() -> u64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64),
    );
    h.finish()
}

/// Forged reply number `i`: odd ones `180 Ringing`, even ones `200 OK`; every third one with
/// the compact `v:` form. The topmost Via names the proxy (as a reply to our own request
/// would), with a branch of our prefix and a random tail: none matches a transaction.
fn forged(i: usize) -> Vec<u8> {
    let status = if i % 2 == 1 { "180 Ringing" } else { "200 OK" };
    let via = if i.is_multiple_of(3) { "v" } else { "Via" };
    let branch = format!("z9hG4bK{:016x}", random_u64());
    format!(
        "SIP/2.0 {status}\r\n\
         {via}: SIP/2.0/UDP 198.51.100.2:5060;branch={branch}\r\n\
         Via: SIP/2.0/UDP 198.51.100.1:{UAC_PORT};branch=z9hG4bK-forged-{i};rport\r\n\
         From: <sip:alice@example.com>;tag=forged-from-{i}\r\n\
         To: <sip:bob@example.com>;tag=forged-to-{i}\r\n\
         Call-ID: forged-{i}@attacker\r\n\
         CSeq: 2 INVITE\r\n\
         Contact: <sip:bob@{FORGER}:5060>\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

/// Send forged replies `range` from the forger to the proxy's SIP port, `gap` apart.
fn forge(pair: &Pair, range: std::ops::Range<usize>, gap: Duration) -> usize {
    let to = SocketAddr::new(pair.b(false), 5060);
    let sock = in_ns(&pair.ns_a, || {
        Ok(UdpSocket::bind(format!("{FORGER}:5060").as_str())?)
    })
    .expect("forger socket");
    let mut sent = 0;
    for i in range {
        sock.send_to(&forged(i), to).expect("send a forged reply");
        sent += 1;
        std::thread::sleep(gap);
    }
    sent
}

/// Wait until the proxy holds no transaction (everything of the call ended).
fn transactions_freed(pair: &Pair) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(15) {
        let m = Metrics::scrape(pair);
        if m.get("sipfw_proxy_transactions_active{side=\"server\"}") == 0.0
            && m.get("sipfw_proxy_transactions_active{side=\"client\"}") == 0.0
        {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn call_with_forged_replies(test: &str, xdp: bool) {
    if !sipp::require(test) {
        return;
    }
    // The flood limit far above the forger's 100 packets a second: this test is about the
    // stray check, not about the per-source limit (tested elsewhere).
    let limits = config("[xdp]\nflood_rate = 10000\nflood_burst = 10000\n");
    let tag = if xdp { "sx" } else { "so" };
    let Some(mut e) = edge(test, tag, &limits, xdp) else {
        return;
    };
    let (pair, dir) = (&e.pair, e.dir());
    // The forger's address in namespace a, a static neighbour in namespace b (no ARP while
    // we count).
    pair.add_a4(FORGER_HOST).unwrap();

    // bob registers from where his UAS will answer.
    register_bob(pair, dir, UAS_PORT).assert_ok("bob registers");
    let uas = Host::in_ns(pair, dir).uas("uas.xml", UAS_PORT, &["-m", "1"]);

    // The call, with the forger at work for its first second.
    let before = Metrics::scrape(pair);
    let (c, sent) = std::thread::scope(|s| {
        let forger = s.spawn(|| forge(pair, 0..DURING, Duration::from_millis(10)));
        let c = alice_calls_bob(pair, dir, UAC_PORT, 1);
        (c, forger.join().expect("forger"))
    });
    let (s, killed) = uas.wait();
    c.assert_ok("UAC");
    assert!(!killed && s.ok, "UAS: {}\n{}", s.output, s.trace);
    assert!(
        codes(&c.trace).contains(&200),
        "the call was answered: {}",
        c.trace
    );
    for (who, trace) in [("UAC", &c.trace), ("UAS", &s.trace)] {
        assert!(
            !trace.contains("forged"),
            "a forged reply reached the {who}: {trace}"
        );
    }
    assert!(transactions_freed(pair), "transactions left behind");
    let during = Metrics::scrape(pair);
    let strays_xdp = during.xdp("stray_reply") - before.xdp("stray_reply");
    let strays_proxy = during.get("sipfw_proxy_stray_responses_total")
        - before.get("sipfw_proxy_stray_responses_total");
    eprintln!(
        "{test}: forged {sent} during the call: XDP stray_reply +{strays_xdp}, proxy strays \
         +{strays_proxy}, responses forwarded +{}",
        during.get("sipfw_proxy_forwarded_total{kind=\"response\"}")
            - before.get("sipfw_proxy_forwarded_total{kind=\"response\"}")
    );
    if xdp {
        // Exactly the forgeries: none of the call's genuine replies taken for a stray.
        assert_eq!(strays_xdp, sent as f64, "XDP stray_reply during the call");
        assert_eq!(strays_proxy, 0.0, "no forged reply reached the proxy");
    } else {
        assert_eq!(strays_xdp, 0.0);
        assert_eq!(strays_proxy, sent as f64, "the proxy dropped every forgery");
    }

    if xdp {
        // A reload that writes new XDP limits must keep the stray check on (it turned it off,
        // and every later forgery reached the proxy).
        e.write_config(&config("[xdp]\nflood_rate = 9000\nflood_burst = 10000\n"));
        let r = e.cli(&["reload"]);
        let said = String::from_utf8_lossy(&r.stdout).into_owned();
        assert!(
            r.status.success() && said.contains("xdp.flood_rate"),
            "{said}"
        );
    }

    // After the call, with nothing else on the wire: what the daemon's message layer sees.
    let quiet = Metrics::scrape(pair);
    let sent = forge(pair, DURING..DURING + AFTER, Duration::from_millis(5));
    // Until every forgery is counted where it dies (XDP, or the proxy without it).
    let after = Metrics::poll(pair, Duration::from_secs(10), |m| {
        if xdp {
            m.xdp("stray_reply") - quiet.xdp("stray_reply") >= sent as f64
        } else {
            m.get("sipfw_proxy_stray_responses_total")
                - quiet.get("sipfw_proxy_stray_responses_total")
                >= sent as f64
        }
    });
    let seen = after.sum("sipfw_sip_responses_total") - quiet.sum("sipfw_sip_responses_total");
    let forwarded = after.get("sipfw_proxy_forwarded_total{kind=\"response\"}")
        - quiet.get("sipfw_proxy_forwarded_total{kind=\"response\"}");
    assert_eq!(forwarded, 0.0, "no forged reply forwarded");
    if xdp {
        assert_eq!(
            after.xdp("stray_reply") - quiet.xdp("stray_reply"),
            sent as f64
        );
        assert_eq!(seen, 0.0, "the daemon saw none of the forged replies");
        assert_eq!(
            after.get("sipfw_proxy_stray_responses_total"),
            quiet.get("sipfw_proxy_stray_responses_total")
        );
    } else {
        assert_eq!(seen, sent as f64, "without XDP the daemon sees them all");
        assert_eq!(
            after.get("sipfw_proxy_stray_responses_total")
                - quiet.get("sipfw_proxy_stray_responses_total"),
            sent as f64,
            "and drops them all as strays"
        );
    }
    // A security event for the operator: counted at once in user space, and within a sweep
    // (10 s) of the XDP counter; one log line per source (or, from XDP, per minute).
    let t0 = Instant::now();
    let events = |m: &Metrics| m.get("sipfw_security_events_total{kind=\"stray_reply\"}");
    while events(&Metrics::scrape(pair)) < (DURING + AFTER) as f64 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{test}: stray replies not counted as security events"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = e.stop_clean();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("security event") && l.contains("kind=\"stray_reply\""))
        .collect();
    if xdp {
        assert!(
            lines.len() == 1 && lines[0].contains("source=\"xdp\""),
            "{test}: one summary line from XDP's count: {log}"
        );
    } else {
        assert_eq!(
            lines.len(),
            1,
            "{test}: one line for the one forging source: {log}"
        );
    }
}

#[test]
fn call_succeeds_and_forged_replies_die_in_xdp() {
    call_with_forged_replies("call_succeeds_and_forged_replies_die_in_xdp", true);
}

#[test]
fn call_succeeds_and_forged_replies_die_in_the_proxy_without_xdp() {
    call_with_forged_replies(
        "call_succeeds_and_forged_replies_die_in_the_proxy_without_xdp",
        false,
    );
}
