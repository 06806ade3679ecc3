//! Pike's job for streams: XDP cannot see SIP messages inside TCP, so the daemon counts
//! requests per source itself and bans a source over the limit; the ban is then enforced in
//! XDP for every packet of that source.

use std::{
    io::Write as _,
    net::{TcpStream, UdpSocket},
    time::{Duration, Instant},
};

use sip_firewall_tests::{
    edge::{Edge, xdp_args},
    frames,
    metrics::{sample, scrape},
    netns::in_ns,
};

#[test]
fn requests_over_tcp_over_the_limit_ban_the_source_in_xdp() {
    let test = "requests_over_tcp_over_the_limit_ban_the_source_in_xdp";
    let config =
        "[bans]\nrequest_limit = 20\nrequest_window = \"30s\"\nrequest_ban_time = \"1h\"\n";
    let Some(mut daemon) = Edge::root(test, "rr", config, xdp_args(true)) else {
        return;
    };
    let (pair, d, to) = (&daemon.pair, &daemon.dirs, daemon.sip());

    // 30 OPTIONS on one TCP connection: the 21st is over the limit.
    let mut tcp = in_ns(&pair.ns_a, move || {
        Ok(TcpStream::connect_timeout(&to, Duration::from_secs(3))?)
    })
    .unwrap();
    for i in 0..30 {
        let _ = tcp.write_all(&frames::sip_request("OPTIONS", 1000 + i));
    }
    let t0 = Instant::now();
    let ban = loop {
        let out = d.cli(&["ban", "list", "--json"]);
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(b) = list
            .as_array()
            .and_then(|l| l.iter().find(|b| b["ip"] == pair.a4.to_string().as_str()))
        {
            break b.clone();
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no ban for {} after 30 requests",
            pair.a4
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        ban["reason"].as_str().unwrap().starts_with("request_rate"),
        "{ban}"
    );
    // `why` names the ban and the gate's window of the source, over the limit.
    let why: serde_json::Value =
        serde_json::from_slice(&d.cli(&["why", &pair.a4.to_string(), "--json"]).stdout)
            .expect("why JSON");
    let finding = |check: &str| {
        why["findings"]
            .as_array()
            .and_then(|f| f.iter().find(|f| f["check"] == check))
            .cloned()
            .unwrap_or_else(|| panic!("a {check} finding: {why:#}"))
    };
    assert_eq!(finding("ban")["effect"], "drop", "{why:#}");
    let rate = finding("request_rate");
    assert_eq!(rate["effect"], "drop", "{why:#}");
    assert!(
        rate["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("(the limit 20): over it now"),
        "{rate:#}"
    );
    let metrics = "127.0.0.1:9464".parse().unwrap();
    let text = scrape(&pair.ns_b, metrics);
    assert!(
        sample(
            &text,
            "sipfw_userspace_drops_total{reason=\"request_rate\"}"
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert_eq!(
        sample(&text, "sipfw_bans_total{reason=\"request_rate\"}"),
        Some(1.0)
    );

    // From now on XDP drops every packet of that source, UDP included.
    let before = sample(&text, "sipfw_xdp_packets_total{reason=\"banned\"}").unwrap_or(0.0);
    let udp = in_ns(&pair.ns_a, || Ok(UdpSocket::bind("0.0.0.0:0")?)).unwrap();
    for i in 0..10 {
        udp.send_to(&frames::sip_request("OPTIONS", 2000 + i), to)
            .unwrap();
    }
    // Until XDP has counted the ten (10 s at most).
    let t0 = std::time::Instant::now();
    let after = loop {
        let after = sample(
            &scrape(&pair.ns_b, metrics),
            "sipfw_xdp_packets_total{reason=\"banned\"}",
        )
        .unwrap_or(0.0);
        if after - before >= 10.0 || t0.elapsed() > Duration::from_secs(10) {
            break after;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(after - before >= 10.0, "banned in XDP: {before} -> {after}");

    daemon.stop_clean();
}
