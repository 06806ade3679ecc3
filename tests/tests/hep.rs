//! HEPv3 export (`[hep]`): a call through the edge (SIPp UAC alice -> proxy -> registered
//! SIPp UAS bob, UDP across veth-b, XDP attached) reaches a HEPv3 collector in namespace a,
//! both legs, INVITE to BYE, with the real addresses (the daemon listens on 0.0.0.0: its
//! side is `[proxy] advertise`); sngrep as the collector (`sngrep -N -L udp:...`) takes the
//! next call as a dialog; a reload moves the export to a collector that is not there,
//! and the next call goes through unaffected while the export's losses are counted. With
//! `capture = ["sip", "drops"]`, what XDP dropped of a banned source reaches the collector
//! with the source's real address and the verdict, next to a clean call's messages; sngrep
//! takes those drops as dialogs (it skips the verdict chunk); a reload without `drops` frees
//! the capture slot.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Duration,
};

use sip_firewall_tests::{
    domain::config,
    edge::{Turn, err, sipp_edge},
    frames,
    hep::{Captured, Sngrep, receive},
    metrics::Metrics,
    netns::in_ns,
    sipp::{Host, alice_calls_bob, codes, register_bob},
    skip,
};

const UAS_PORT: u16 = 5070;
const UAC_PORT: u16 = 5080;
const COLLECTOR_PORT: u16 = 9060;
/// Where the reload moves the export: nobody listens there.
const GONE_PORT: u16 = 9061;
/// Where sngrep listens.
const SNGREP_PORT: u16 = 9062;

fn hep_config(port: u16) -> String {
    config(&format!(
        "[hep]\ncollector = \"udp://198.51.100.1:{port}\"\nnode_id = 42\npassword = \"homer-pw\"\n"
    ))
}

/// `[hep]` exporting the proxy's messages and every packet XDP dropped.
fn drops_config(port: u16) -> String {
    config(&format!(
        "[hep]\ncollector = \"udp://198.51.100.1:{port}\"\nnode_id = 42\n\
         capture = [\"sip\", \"drops\"]\ndrops_sample = 1\n"
    ))
}

/// What `collector` received (every datagram must decode).
fn collected(collector: &UdpSocket) -> Vec<Captured> {
    let got = receive(collector, Duration::from_secs(2), Duration::from_secs(20));
    let bad: Vec<usize> = got.iter().filter_map(|r| r.clone().err()).collect();
    assert!(bad.is_empty(), "undecodable HEP datagrams of {bad:?} bytes");
    got.into_iter().filter_map(Result::ok).collect()
}

/// sngrep as the collector of drops (moved there by a reload: the slot is kept): the banned
/// source's REGISTERs, with the verdict chunk it skips, are SIP dialogs to it.
fn sngrep_takes_drops(e: &Turn, banned: &UdpSocket, test: &str) {
    let at = SocketAddr::new(e.pair.a4.into(), SNGREP_PORT);
    let Some(sngrep) = Sngrep::start(&e.pair.ns_a, at) else {
        skip(
            test,
            "sngrep is not installed (cargo xtask setup): its part skipped",
        );
        return;
    };
    e.write_config(&drops_config(SNGREP_PORT));
    let o = e.cli(&["reload"]);
    assert!(o.status.success(), "{}", err(&o));
    for i in 100..103 {
        banned
            .send_to(&frames::sip_request("REGISTER", i), e.sip())
            .expect("send");
    }
    std::thread::sleep(Duration::from_secs(1));
    let (dialogs, said) = sngrep.finish();
    eprintln!("{test}: sngrep -L counted {dialogs} dialog(s) of drops");
    assert!(dialogs >= 3, "sngrep took the dropped REGISTERs: {said}");
}

/// Bob registers, alice calls him: both must succeed (`what`: the call, in the message).
fn register_and_call(e: &Turn, what: &str) {
    register_bob(&e.pair, e.dir(), UAS_PORT).assert_ok("bob registers");
    let (ok, said) = call(e);
    assert!(ok, "{what}: {said}");
}

/// One line per packet, for the assertions' messages.
fn describe(got: &[Captured]) -> Vec<String> {
    got.iter()
        .map(|c| {
            let verdict = c.verdict.as_deref().unwrap_or("sip");
            format!("{:?} -> {:?} [{verdict}]: {}", c.src, c.dst, c.first_line())
        })
        .collect()
}

/// `collector` receives nothing (for two seconds at most).
fn assert_quiet(collector: &UdpSocket, what: &str) {
    let got = receive(
        collector,
        Duration::from_millis(500),
        Duration::from_secs(2),
    );
    assert!(got.is_empty(), "{what}: {got:?}");
}

/// Whether `got` holds a message whose first line starts with `start`, from `src` to `dst`.
fn has(got: &[Captured], start: &str, src: SocketAddr, dst: SocketAddr) -> bool {
    got.iter()
        .any(|c| c.first_line().starts_with(start) && c.src == Some(src) && c.dst == Some(dst))
}

/// Point the export at `port` of namespace a, by a reload.
fn reload_to(e: &Turn, port: u16) {
    e.write_config(&hep_config(port));
    let r = e.cli(&["reload"]);
    let said = String::from_utf8_lossy(&r.stdout).into_owned();
    assert!(
        r.status.success() && said.contains("hep.collector"),
        "{said}"
    );
}

fn call(e: &Turn) -> (bool, String) {
    let (pair, dir) = (&e.pair, e.dir());
    let uas = Host::in_ns(pair, dir).uas("uas.xml", UAS_PORT, &["-m", "1"]);
    let c = alice_calls_bob(pair, dir, UAC_PORT, 1);
    let (s, killed) = uas.wait();
    let ok = c.ok && s.ok && !killed && codes(&c.trace).contains(&200);
    (
        ok,
        format!(
            "UAC: {}\n{}\nUAS: {}\n{}",
            c.output, c.trace, s.output, s.trace
        ),
    )
}

#[test]
fn a_call_through_the_edge_reaches_the_hep_collector_and_a_gone_collector_costs_no_call() {
    let test =
        "a_call_through_the_edge_reaches_the_hep_collector_and_a_gone_collector_costs_no_call";
    let Some(mut e) = sipp_edge(test, "hep", &hep_config(COLLECTOR_PORT), true) else {
        return;
    };
    let pair = &e.pair;
    let (a4, b4) = (pair.a4, pair.b4);
    let collector = in_ns(&pair.ns_a, move || {
        Ok(UdpSocket::bind(SocketAddr::new(a4.into(), COLLECTOR_PORT))?)
    })
    .expect("collector socket in namespace a");

    register_and_call(&e, "the call");
    let got = collected(&collector);
    let lines = describe(&got);
    let edge = SocketAddr::new(b4.into(), 5060);
    let (alice, bob) = (
        SocketAddr::new(a4.into(), UAC_PORT),
        SocketAddr::new(a4.into(), UAS_PORT),
    );
    for (what, start, src, dst) in [
        ("REGISTER in", "REGISTER ", bob, edge),
        ("INVITE in", "INVITE ", alice, edge),
        ("INVITE out", "INVITE ", edge, bob),
        ("200 in", "SIP/2.0 200", bob, edge),
        ("200 out", "SIP/2.0 200", edge, alice),
        ("ACK in", "ACK ", alice, edge),
        ("ACK out", "ACK ", edge, bob),
        ("BYE in", "BYE ", alice, edge),
        ("BYE out", "BYE ", edge, bob),
    ] {
        assert!(has(&got, start, src, dst), "{what}: {lines:#?}");
    }
    assert!(
        got.iter().all(|c| c.node_id == Some(42)
            && c.password.as_deref() == Some("homer-pw")
            && c.proto == 17
            && c.proto_type == Some(1)),
        "capture id, password, UDP, SIP on every packet: {got:?}"
    );
    let m = Metrics::scrape(pair);
    assert_eq!(m.sum("sipfw_hep_dropped_total"), 0.0, "nothing lost");
    assert_eq!(m.get("sipfw_hep_sent_total"), got.len() as f64);

    // sngrep as the collector (`sngrep -N -L udp:...`): it takes the call as a SIP dialog.
    let at = SocketAddr::new(a4.into(), SNGREP_PORT);
    match Sngrep::start(&e.pair.ns_a, at) {
        Some(sngrep) => {
            reload_to(&e, SNGREP_PORT);
            let (ok, said) = call(&e);
            assert!(ok, "the call with sngrep collecting: {said}");
            let (dialogs, said) = sngrep.finish();
            eprintln!("{test}: sngrep -L counted {dialogs} dialog(s)");
            assert!(dialogs >= 1, "sngrep saw the call's dialog: {said}");
        }
        None => skip(
            test,
            "sngrep is not installed (cargo xtask setup): its part skipped",
        ),
    }

    // Live on reload: to a collector that is not there. Calls go on; losses are counted.
    reload_to(&e, GONE_PORT);
    let (ok, said) = call(&e);
    assert!(ok, "the call with the collector gone: {said}");
    let m = Metrics::poll(&e.pair, Duration::from_secs(5), |m| {
        m.sum("sipfw_hep_dropped_total") > 0.0
    });
    let lost = m.sum("sipfw_hep_dropped_total");
    eprintln!(
        "{test}: {} exported in the first call; {lost} lost with the collector gone",
        got.len()
    );
    assert!(
        lost > 0.0,
        "what the gone collector did not take is counted"
    );
    assert_quiet(
        &collector,
        "the old collector gets nothing after the reload",
    );
    e.stop_clean();
}

#[test]
fn packets_xdp_dropped_reach_the_collector_with_their_verdict_next_to_a_clean_call() {
    let test = "packets_xdp_dropped_reach_the_collector_with_their_verdict_next_to_a_clean_call";
    let Some(mut e) = sipp_edge(test, "hepd", &drops_config(COLLECTOR_PORT), true) else {
        return;
    };
    let pair = &e.pair;
    let a4 = pair.a4;
    let collector = in_ns(&pair.ns_a, move || {
        Ok(UdpSocket::bind(SocketAddr::new(a4.into(), COLLECTOR_PORT))?)
    })
    .expect("collector socket in namespace a");
    let m = Metrics::poll(pair, Duration::from_secs(10), |m| {
        m.get("sipfw_hep_drops_slot") == 1.0
    });
    assert_eq!(
        m.get("sipfw_hep_drops_slot"),
        1.0,
        "the daemon holds a capture slot"
    );

    let banned = IpAddr::V4(pair.add_a4(7).expect("a second address in namespace a"));
    let o = e.cli(&["ban", "add", &banned.to_string()]);
    assert!(o.status.success(), "{}", err(&o));
    let tx = in_ns(&pair.ns_a, move || {
        Ok(UdpSocket::bind(SocketAddr::new(banned, 0))?)
    })
    .expect("the banned source's socket");
    let from = tx.local_addr().expect("its address");
    for i in 0..5 {
        tx.send_to(&frames::sip_request("REGISTER", i), e.sip())
            .expect("send");
    }
    register_and_call(&e, "the clean call");
    let got = collected(&collector);
    let lines = describe(&got);
    let edge = SocketAddr::new(pair.b4.into(), 5060);
    let dropped: Vec<&Captured> = got.iter().filter(|c| c.src == Some(from)).collect();
    assert_eq!(
        dropped.len(),
        5,
        "the banned source's REGISTERs: {lines:#?}"
    );
    for c in &dropped {
        assert!(
            c.first_line().starts_with("REGISTER ")
                && c.dst == Some(edge)
                && c.verdict.as_deref() == Some("banned")
                && c.proto == 17
                && c.proto_type == Some(1)
                && c.node_id == Some(42),
            "{c:?}"
        );
    }
    let alice = SocketAddr::new(a4.into(), UAC_PORT);
    assert!(
        got.iter().any(|c| c.first_line().starts_with("INVITE ")
            && c.src == Some(alice)
            && c.dst == Some(edge)
            && c.verdict.is_none()),
        "the clean call, as SIP without a verdict: {lines:#?}"
    );

    sngrep_takes_drops(&e, &tx, test);

    // Live on reload: without "drops", the slot is free and drops are no longer exported.
    e.write_config(&hep_config(COLLECTOR_PORT));
    let o = e.cli(&["reload"]);
    assert!(o.status.success(), "{}", err(&o));
    let m = Metrics::poll(&e.pair, Duration::from_secs(5), |m| {
        m.get("sipfw_hep_drops_slot") == 0.0
    });
    assert_eq!(m.get("sipfw_hep_drops_slot"), 0.0, "the slot is freed");
    tx.send_to(&frames::sip_request("REGISTER", 9), e.sip())
        .expect("send");
    let after = receive(&collector, Duration::from_secs(1), Duration::from_secs(3));
    assert!(
        !after
            .iter()
            .any(|c| c.as_ref().is_ok_and(|c| c.verdict.is_some())),
        "no drops exported after the reload: {after:?}"
    );
    e.stop_clean();
}
