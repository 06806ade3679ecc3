//! `sip-firewall run` with XDP: it attaches to the interface it is given, fills the maps from
//! its config, reports the bans the program makes, detaches on SIGTERM, and fails with one
//! clear line for a missing interface or missing privileges.

use std::{
    net::{SocketAddr, UdpSocket},
    process::Command,
    time::Duration,
};

use sip_firewall_tests::{
    daemon::{DaemonDirs, TempDir, daemon_bin, stop},
    frames,
    netns::{Pair, in_ns},
    require_root,
};

fn xdp_attached(ns: &str, ifc: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "ip", "-d", "link", "show", ifc])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.contains("prog/xdp").then_some(text)
}

#[test]
fn daemon_attaches_fills_maps_reports_bans_and_detaches() {
    if !require_root("daemon_attaches_fills_maps_reports_bans_and_detaches") {
        return;
    }
    let pair = Pair::new("dm").unwrap();
    // The IPv6 peer is denied by the config; IPv4 gets a tiny flood limit.
    let config = format!(
        "[xdp]\nflood_rate = 1\nflood_burst = 3\nban_time = \"1h\"\n[policy]\ndeny = [\"{}/128\"]\n",
        pair.a6
    );
    for mode in ["native", "generic"] {
        let d = DaemonDirs::new("dm", &config);
        let child = d.start(
            &pair,
            &["--iface", pair.if_b, "--xdp-mode", mode, "--detach"],
        );
        let shown = xdp_attached(&pair.ns_b, pair.if_b).expect("XDP on veth-b");
        // `ip link` says `xdp` for native mode and `xdpgeneric` for generic mode.
        let generic = shown.contains("xdpgeneric");
        assert_eq!(generic, mode == "generic", "{mode}: {shown}");
        assert!(shown.contains("name sip_firewall"), "{mode}: {shown}");

        // The daemon answers OPTIONS keep-alives; the deny list silences the IPv6 peer.
        let tx4 = in_ns(&pair.ns_a, || Ok(UdpSocket::bind("0.0.0.0:0")?)).unwrap();
        let tx6 = in_ns(&pair.ns_a, || Ok(UdpSocket::bind("[::]:0")?)).unwrap();
        for s in [&tx4, &tx6] {
            s.set_read_timeout(Some(Duration::from_millis(500)))
                .unwrap();
        }
        let options = "OPTIONS sip:198.51.100.2 SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.1:5062;branch=z9hG4bK-dm1\r\nMax-Forwards: 70\r\nFrom: <sip:probe@example.com>;tag=1\r\nTo: <sip:198.51.100.2>\r\nCall-ID: dm1@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n";
        let mut buf = [0u8; 4096];
        let to4 = SocketAddr::new(pair.b(false), 5060);
        let mut answered = false;
        for _ in 0..3 {
            tx4.send_to(options.as_bytes(), to4).unwrap();
            if let Ok(n) = tx4.recv(&mut buf) {
                answered = String::from_utf8_lossy(&buf[..n]).starts_with("SIP/2.0 ");
                break;
            }
        }
        assert!(
            answered,
            "{mode}: the daemon answers a well-formed OPTIONS over IPv4"
        );
        tx6.send_to(options.as_bytes(), SocketAddr::new(pair.b(true), 5060))
            .unwrap();
        assert!(
            tx6.recv(&mut buf).is_err(),
            "{mode}: the denied IPv6 peer gets nothing"
        );

        // A burst over the limit: the program bans the source and the daemon hears of it.
        for i in 0..10 {
            tx4.send_to(&frames::sip_request("OPTIONS", i), to4)
                .unwrap();
        }
        // Until the daemon has recorded the program's ban (it logs it in the same step).
        let a4 = pair.a4.to_string();
        let t0 = std::time::Instant::now();
        while !String::from_utf8_lossy(&d.cli(&["ban", "list"]).stdout).contains(&a4)
            && t0.elapsed() < Duration::from_secs(10)
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        let (code, err) = stop(child);
        assert_eq!(code, 0, "{mode}: clean exit on SIGTERM\n{err}");
        assert!(
            err.contains("XDP banned a source") && err.contains(&pair.a4.to_string()),
            "{mode}: ban event logged\n{err}"
        );
        assert!(
            xdp_attached(&pair.ns_b, pair.if_b).is_none(),
            "{mode}: detached on SIGTERM with --detach"
        );
    }
}

#[test]
fn daemon_errors_are_one_clear_line() {
    if !require_root("daemon_errors_are_one_clear_line") {
        return;
    }
    let pair = Pair::new("de").unwrap();
    let d = DaemonDirs::new("de", "");
    let out = d.command(&pair, &["--iface", "nosuch0"]).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    let last = err.lines().last().unwrap_or_default();
    assert!(
        last.contains("nosuch0") && last.contains("does not exist"),
        "{err}"
    );

    // Without privileges: the daemon says what to do instead of failing obscurely. (State and
    // socket in a directory nobody can write, so that the XDP step is the one that fails.)
    let scratch = TempDir::new("priv");
    std::fs::set_permissions(
        &scratch.path,
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let existed_before = std::path::Path::new("/sys/fs/bpf/sip-firewall").exists();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(daemon_bin())
        .args([
            "run",
            "--iface",
            "lo",
            "--sip-listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
        ])
        .arg("--state-dir")
        .arg(scratch.path.join("state"))
        .arg("--admin-socket")
        .arg(scratch.path.join("admin.sock"))
        // Never the default pin directory: an unprivileged daemon still creates it (bpffs
        // is world-writable), and a leftover would look like a real installation.
        .arg("--pin-dir")
        .arg(scratch.path.join("pins"))
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    assert!(
        !std::path::Path::new("/sys/fs/bpf/sip-firewall").exists() || existed_before,
        "the test created the default pin directory"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("needs root") && err.contains("--xdp-mode off"),
        "{err}"
    );
}
