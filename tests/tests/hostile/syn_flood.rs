//! The same firewall for every transport: a source opening connections to the
//! WebSocket (or TLS) listener as fast as it can. XDP counts each new connection (`connection`)
//! and spends the source's flood budget on its SYNs: past the burst the source is banned in
//! XDP, before the kernel builds connection state or the daemon starts a handshake for it.

use std::{
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use sip_firewall_tests::{domain::config, edge::edge, metrics::Metrics, netns::in_ns};

#[test]
fn a_connection_flood_to_the_websocket_port_is_banned_in_xdp() {
    let test = "a_connection_flood_to_the_websocket_port_is_banned_in_xdp";
    // A burst of 5 new connections, then 1 a second; the WebSocket listener on 5062.
    let config =
        config("[xdp]\nflood_rate = 1\nflood_burst = 5\n[ws]\nlisten = [\"0.0.0.0:5062\"]\n");
    let Some(e) = edge(test, "synflood", &config, true) else {
        return;
    };
    let (pair, d) = (&e.pair, &e.dirs);
    let before = Metrics::scrape(pair);
    let to = SocketAddr::new(pair.b4.into(), 5062);
    // 20 connection attempts in a row; the ones XDP drops time out quickly.
    let opened = in_ns(&pair.ns_a, move || {
        let mut held = Vec::new();
        for _ in 0..20 {
            if let Ok(s) = TcpStream::connect_timeout(&to, Duration::from_millis(300)) {
                held.push(s);
            }
        }
        Ok(held.len())
    })
    .unwrap();
    let a4 = pair.a4.to_string();
    let t0 = Instant::now();
    let reason = loop {
        let list = String::from_utf8_lossy(&d.cli(&["ban", "list"]).stdout).into_owned();
        if let Some(line) = list.lines().find(|l| l.contains(&a4)) {
            break line.to_string();
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "not banned: {list}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let after = Metrics::scrape(pair);
    let moved = |r: &str| after.xdp(r) - before.xdp(r);
    println!(
        "20 connection attempts: {opened} opened; XDP connection +{}, flood +{}, banned +{}",
        moved("connection"),
        moved("flood"),
        moved("banned")
    );
    assert!(reason.contains("flood"), "{reason}");
    assert_eq!(opened, 5, "the burst, then nothing");
    assert_eq!(moved("connection"), 5.0, "each new connection counted once");
    assert_eq!(moved("flood"), 1.0, "the SYN over the burst bans");
    assert!(moved("banned") >= 14.0, "the rest dropped as banned");
}
