//! Live reload (`sip-firewall reload`, SIGHUP): with a ban in force, a reload that adds an
//! allow entry and turns the flood limit on takes effect at once; the ban holds; an invalid
//! file is refused with the key and the line, and nothing changes; settings that need a
//! restart are named. A reload also changes the scanner list, every `[bans]` setting and the
//! metrics address while running; an address it cannot bind refuses the whole reload.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use sip_firewall_tests::{
    daemon::{DaemonDirs, daemon_bin},
    domain::config,
    edge::{Edge, edge, xdp_args},
    metrics::{Metrics, scrape},
    netns::{Pair, in_ns},
    one_at_a_time, require_root, said,
    sipp::{self, Host, alice_calls_bob, codes, register_bob},
};

/// `n` SIP OPTIONS from `from` (an address of namespace a) to the daemon.
fn options(pair: &Pair, from: Ipv4Addr, n: usize) {
    options_as(pair, from, n, "reload-test");
}

/// The same with this User-Agent.
fn options_as(pair: &Pair, from: Ipv4Addr, n: usize, agent: &'static str) {
    let to = SocketAddr::new(pair.b4.into(), 5060);
    in_ns(&pair.ns_a, move || {
        let s = UdpSocket::bind((from, 0))?;
        for i in 0..n {
            let msg = format!(
                "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-r{i}\r\nFrom: <sip:t@{from}>;tag=1\r\nTo: <sip:{to}>\r\nCall-ID: r{i}@{from}\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nUser-Agent: {agent}\r\nContent-Length: 0\r\n\r\n"
            );
            s.send_to(msg.as_bytes(), to)?;
        }
        Ok(())
    })
    .unwrap();
}

/// The entry of `ip` in `ban list --json`, if it is banned.
fn ban_entry(d: &DaemonDirs, ip: Ipv4Addr) -> Option<serde_json::Value> {
    let o = d.cli(&["ban", "list", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v.as_array()?
        .iter()
        .find(|b| b["ip"] == ip.to_string())
        .cloned()
}

/// The reason of `ip`'s ban, if it is banned.
fn banned(d: &DaemonDirs, ip: Ipv4Addr) -> Option<String> {
    ban_entry(d, ip).map(|b| b["reason"].as_str().unwrap_or("").to_string())
}

#[test]
fn reload_applies_lists_and_limits_keeps_bans_and_refuses_bad_files() {
    let test = "reload_applies_lists_and_limits_keeps_bans_and_refuses_bad_files";
    let Some(mut e) = edge(test, "reload", "[xdp]\nflood_rate = 0\n", true) else {
        return;
    };
    let (pair, d) = (&e.pair, &e.dirs);
    let second = pair.add_a4(20).unwrap();
    let config = d.dir.path.join("sip-firewall.toml");
    // A ban in force.
    let a4 = pair.a4.to_string();
    assert!(d.cli(&["ban", "add", &a4, "--for", "1h"]).status.success());

    // No flood limit: a burst from the second address is not banned.
    options(pair, second, 40);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(banned(d, second), None, "flood limit off before the reload");

    // Reload: an allow entry, the flood limit on.
    let r = reload(
        &e,
        "[xdp]\nflood_rate = 5\nflood_burst = 5\n[policy]\nallow = [\"203.0.113.0/24\"]\n",
    );
    assert!(r.status.success(), "{}", said(&r));
    let reply = said(&r);
    assert!(reply.contains("policy.allow: +203.0.113.0/24"), "{reply}");
    assert!(reply.contains("xdp.flood_rate"), "{reply}");
    let allow = said(&d.cli(&["allow", "list"]));
    assert!(allow.contains("203.0.113.0/24"), "{allow}");
    // The flood limit bites at once: the same burst now bans the source in XDP.
    options(pair, second, 40);
    let reason = wait_ban(d, second, "the new flood limit did not ban");
    assert!(reason.contains("flood"), "{reason}");
    // The ban made before the reload holds.
    assert!(banned(d, pair.a4).is_some(), "the earlier ban holds");

    // An invalid file is refused with the key and the line; nothing changes.
    let r = reload(
        &e,
        "[xdp]\nflood_rate = 5\nflood_rat = 3\n[policy]\nallow = []\n",
    );
    assert_eq!(r.status.code(), Some(1), "{}", said(&r));
    let reply = said(&r);
    assert!(
        reply.contains("flood_rat") && reply.contains("line 3"),
        "{reply}"
    );
    let check = said(
        &std::process::Command::new(daemon_bin())
            .args(["config", "check"])
            .arg(&config)
            .output()
            .unwrap(),
    );
    let key_line = |s: &str| s.contains("unknown field `flood_rat`") && s.contains("line 3");
    assert!(
        key_line(&reply) && key_line(&check),
        "same error as config check:\n{reply}\n{check}"
    );
    let allow = said(&d.cli(&["allow", "list"]));
    assert!(allow.contains("203.0.113.0/24"), "kept: {allow}");

    // A restart-only setting is named, not applied; SIGHUP reloads too.
    let r = reload(
        &e,
        "[xdp]\nflood_rate = 5\nflood_burst = 5\n[sip]\nmax_tcp_connections = 77\n[policy]\nallow = [\"203.0.113.0/24\"]\n",
    );
    assert!(r.status.success(), "{}", said(&r));
    assert!(
        said(&r).contains("needs a restart") && said(&r).contains("  sip"),
        "{}",
        said(&r)
    );
    e.write_config("[xdp]\nflood_rate = 5\nflood_burst = 5\n");
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(e.pid() as i32, libc::SIGHUP) };
    let t0 = Instant::now();
    while said(&d.cli(&["allow", "list"])).contains("203.0.113.0/24") {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "SIGHUP did not reload"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        banned(&e.dirs, e.pair.a4).is_some(),
        "the ban holds after SIGHUP"
    );
    let err = e.stop_clean();
    assert!(err.contains("SIGHUP: config reloaded"), "{err}");
}

#[test]
fn reload_during_a_call_keeps_the_call_and_the_registration() {
    let test = "reload_during_a_call_keeps_the_call_and_the_registration";
    if !sipp::require(test) {
        return;
    }
    const UAS_PORT: u16 = 5070;
    const UAC_PORT: u16 = 5080;
    let base = "[xdp]\nflood_rate = 10000\nflood_burst = 10000\n";
    let Some(mut e) = edge(test, "rcall", &config(base), true) else {
        return;
    };
    let (pair, dir) = (&e.pair, e.dir());
    register_bob(pair, dir, UAS_PORT).assert_ok("bob registers");
    let uas = Host::in_ns(pair, dir).uas("uas.xml", UAS_PORT, &["-m", "1"]);
    let (call, reload) = std::thread::scope(|s| {
        let call = s.spawn(|| alice_calls_bob(pair, dir, UAC_PORT, 1));
        // Once the call's transactions are open, reload: an allow entry, another flood rate.
        let t0 = Instant::now();
        while Metrics::scrape(pair).sum("sipfw_proxy_transactions_active") < 1.0 {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "the call never started"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let reload = reload(
            &e,
            &config(&format!(
                "{}[policy]\nallow = [\"203.0.113.0/24\"]\n",
                base.replace("10000\nflood_burst", "9000\nflood_burst")
            )),
        );
        (call.join().expect("call"), reload)
    });
    let (s, killed) = uas.wait();
    assert!(reload.status.success(), "{}", said(&reload));
    let reply = said(&reload);
    assert!(
        reply.contains("policy.allow: +203.0.113.0/24") && reply.contains("xdp.flood_rate"),
        "{reply}"
    );
    call.assert_ok("the call completes");
    assert!(!killed && s.ok, "UAS: {}\n{}", s.output, s.trace);
    assert!(codes(&call.trace).contains(&200), "{}", call.trace);
    // bob's registration is still there.
    let m = Metrics::scrape(&e.pair);
    assert_eq!(
        m.sum("sipfw_registrar_bindings"),
        1.0,
        "the registration holds"
    );
    e.stop_clean();
}

/// Poll until `ip` is banned (10 s at most, else fail saying `what`): the ban's reason.
fn wait_ban(d: &DaemonDirs, ip: Ipv4Addr, what: &str) -> String {
    let t0 = Instant::now();
    loop {
        if let Some(r) = banned(d, ip) {
            return r;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{what}: {ip}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Write `text` as the daemon's config and run `reload`.
fn reload(e: &Edge, text: &str) -> std::process::Output {
    e.write_config(text);
    e.cli(&["reload"])
}

/// Seconds left of `ip`'s ban.
fn ban_left(d: &DaemonDirs, ip: Ipv4Addr) -> Option<u64> {
    ban_entry(d, ip)?["remaining_secs"].as_u64()
}

/// Whether something answers HTTP on `addr` inside namespace `ns`.
fn serves(ns: &str, addr: &str) -> bool {
    let addr: SocketAddr = addr.parse().unwrap();
    in_ns(ns, move || {
        Ok(std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok())
    })
    .unwrap()
}

#[test]
fn reload_applies_scanners_ban_times_and_the_metrics_address() {
    if !require_root("reload_applies_scanners_ban_times_and_the_metrics_address") {
        return;
    }
    let _turn = one_at_a_time();
    let before = "[metrics]\nlisten = \"127.0.0.1:9464\"\n";
    let mut e = Edge::new("rlscan", before);
    // The metrics address is the config file's, so that a reload can move it.
    e.dirs.metrics_listen = None;
    e.run(xdp_args(true));
    let (pair, d) = (&e.pair, &e.dirs);
    let (probe1, probe2) = (pair.add_a4(21).unwrap(), pair.add_a4(22).unwrap());
    let answered = |m: &str| {
        sip_firewall_tests::metrics::sample(m, "sipfw_sip_requests_total{method=\"OPTIONS\"}")
            .unwrap_or(0.0)
    };
    // Not on the scanner list yet: answered, not banned.
    options_as(pair, probe1, 1, "evil-probe/1.0");
    let t0 = Instant::now();
    while answered(&scrape(&pair.ns_b, "127.0.0.1:9464".parse().unwrap())) < 1.0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the probe never arrived"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(banned(d, probe1), None, "not a scanner before the reload");

    // Reload: the probe's User-Agent is a scanner now, banned for 7 minutes; metrics move.
    let r = reload(
        &e,
        "[metrics]\nlisten = \"127.0.0.1:9465\"\n[policy]\nscanners = [\"evil-probe\"]\n\
         [bans]\nscanner_ban_time = \"7m\"\n",
    );
    let reply = said(&r);
    assert!(r.status.success(), "{reply}");
    for key in ["policy.scanners", "bans.scanner_ban_time", "metrics.listen"] {
        assert!(reply.contains(key), "{key} applied: {reply}");
    }
    assert!(!reply.contains("needs a restart"), "{reply}");
    assert!(
        serves(&pair.ns_b, "127.0.0.1:9465"),
        "the new metrics address serves"
    );
    assert!(
        !serves(&pair.ns_b, "127.0.0.1:9464"),
        "the old metrics address is closed"
    );

    // The new list and ban time apply to the next request.
    options_as(pair, probe2, 1, "evil-probe/1.0");
    let reason = wait_ban(d, probe2, "the new scanner list did not ban");
    assert!(reason.contains("scanner: evil-probe"), "{reason}");
    let left = ban_left(d, probe2).expect("ban time");
    assert!(
        (400..=420).contains(&left),
        "7 minutes, not the default hour: {left} s"
    );

    // An address that cannot be bound refuses the whole reload: nothing changes.
    let r = reload(
        &e,
        "[metrics]\nlisten = \"192.0.2.1:9466\"\n[policy]\nscanners = []\n",
    );
    assert_eq!(r.status.code(), Some(1), "{}", said(&r));
    assert!(said(&r).contains("metrics.listen"), "{}", said(&r));
    assert!(
        serves(&pair.ns_b, "127.0.0.1:9465"),
        "still served where it was"
    );
    let probe3 = pair.add_a4(23).unwrap();
    options_as(pair, probe3, 1, "evil-probe/1.0");
    wait_ban(d, probe3, "the scanner list changed after a refused reload");
    e.stop_clean();
}
