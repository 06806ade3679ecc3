//! `sip-firewall capture` against a daemon in a namespace: what the XDP program dropped,
//! by verdict, in a pcapng file that tshark reads as it is; the filter (verdicts, source,
//! port) applied in the kernel, and two captures at once. At the gate layer (`--layer
//! gate`, a daemon without XDP): what the user-space gate refused and what the message
//! layer answered itself, with the reason in the comment, and the bound on gate captures.

use std::{
    net::{IpAddr, SocketAddr, UdpSocket},
    time::Duration,
};

use sip_firewall_tests::{
    capture::{Capture, require_tshark, tshark_fields},
    daemon::daemon_bin,
    edge::{Edge, err, xdp_args},
    frames,
    netns::in_ns,
};

/// Flood limits far above what the test sends: a junk burst stays `malformed`, not `flood`.
const CONFIG: &str = "[xdp]\nflood_rate = 100000\nflood_burst = 100000\n";

fn socket(edge: &Edge, addr: IpAddr) -> UdpSocket {
    in_ns(&edge.pair.ns_a, move || {
        Ok(UdpSocket::bind(SocketAddr::new(addr, 0))?)
    })
    .expect("a socket in namespace a")
}

/// `ban add` of `ip` at the edge; it must succeed.
fn ban(edge: &Edge, ip: IpAddr) {
    let o = edge.cli(&["ban", "add", &ip.to_string()]);
    assert!(o.status.success(), "{}", err(&o));
}

/// A daemon with XDP in namespaces of its own, when root and tshark are there.
fn edge(test: &str, tag: &str) -> Option<Edge> {
    if !require_tshark(test) {
        return None;
    }
    Edge::root(test, tag, CONFIG, xdp_args(true))
}

#[test]
fn banned_registers_and_junk_are_captured_by_verdict() {
    let Some(edge) = edge("banned_registers_and_junk_are_captured_by_verdict", "cap") else {
        return;
    };
    let banned = IpAddr::V4(edge.pair.a4);
    let junk_source = IpAddr::V6(edge.pair.a6);
    let other = IpAddr::V4(edge.pair.add_a4(7).expect("a second address in a"));
    ban(&edge, banned);

    // Everything banned or malformed; the banned source alone, and on the SIP port only.
    let all = Capture::start(
        &edge,
        "all.pcapng",
        &["--verdict", "banned,malformed", "--count", "15"],
    );
    let one = Capture::start(
        &edge,
        "one.pcapng",
        &[
            "--verdict",
            "banned",
            "--source",
            &format!("{banned}/32"),
            "--port",
            "5060",
            "--count",
            "5",
        ],
    );

    let (tx_banned, tx_junk, tx_other) = (
        socket(&edge, banned),
        socket(&edge, junk_source),
        socket(&edge, other),
    );
    let sip4 = edge.sip();
    let sip6 = SocketAddr::new(edge.pair.b(true), 5060);
    for i in 0..5 {
        // The unbanned source's requests pass: in neither file.
        tx_other
            .send_to(&frames::sip_request("OPTIONS", 100 + i), sip4)
            .expect("send");
        tx_other
            .send_to(&frames::sip_request("REGISTER", 200 + i), sip4)
            .expect("send");
        // Dropped as banned, but not to the SIP port: in the first file, not the second.
        tx_banned
            .send_to(b"ping", SocketAddr::new(edge.pair.b(false), 7000))
            .expect("send");
    }
    for i in 0..5 {
        tx_banned
            .send_to(&frames::sip_request("REGISTER", i), sip4)
            .expect("send");
        tx_junk
            .send_to(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", sip6)
            .expect("send");
    }

    let (status, said) = all.wait(Duration::from_secs(20));
    assert!(status.success(), "{said}");
    assert!(said.contains("15 packets captured"), "{said}");
    let rows = tshark_fields(
        &edge.dir().join("all.pcapng"),
        None,
        &[
            "frame.comment",
            "ip.src",
            "ipv6.src",
            "sip.Method",
            "udp.dstport",
        ],
    );
    assert_eq!(rows.len(), 15, "{rows:?}");
    let registers: Vec<_> = rows.iter().filter(|r| r[3] == "REGISTER").collect();
    assert_eq!(registers.len(), 5, "{rows:?}");
    for r in &registers {
        assert_eq!(r[1], banned.to_string(), "{r:?}");
        assert!(r[0].contains("verdict: banned (dropped"), "{r:?}");
    }
    let pings = rows.iter().filter(|r| r[4] == "7000").collect::<Vec<_>>();
    assert_eq!(pings.len(), 5, "{rows:?}");
    for r in &pings {
        assert_eq!(r[1], banned.to_string(), "{r:?}");
        assert!(r[0].contains("verdict: banned (dropped"), "{r:?}");
    }
    let junk: Vec<_> = rows.iter().filter(|r| r[0].contains("malformed")).collect();
    assert_eq!(junk.len(), 5, "{rows:?}");
    for r in &junk {
        assert_eq!(r[2], junk_source.to_string(), "{r:?}");
        assert_eq!(r[4], "5060", "{r:?}");
    }
    assert!(
        !rows.iter().any(|r| r[1] == other.to_string()),
        "nothing of the unbanned source: {rows:?}"
    );
    // tshark's SIP dissector reads the file as it is.
    let sip = tshark_fields(&edge.dir().join("all.pcapng"), Some("sip"), &["sip.Method"]);
    assert_eq!(sip.len(), 5, "{sip:?}");

    let (status, said) = one.wait(Duration::from_secs(20));
    assert!(status.success(), "{said}");
    let rows = tshark_fields(
        &edge.dir().join("one.pcapng"),
        None,
        &[
            "frame.comment",
            "ip.src",
            "udp.dstport",
            "sip.Method",
            "frame.interface_name",
            "frame.time_epoch",
        ],
    );
    assert_eq!(rows.len(), 5, "{rows:?}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    for r in &rows {
        assert_eq!(r[1], banned.to_string(), "{r:?}");
        assert_eq!(r[2], "5060", "{r:?}");
        assert_eq!(r[3], "REGISTER", "{r:?}");
        // The interface as the daemon's namespace names it, and the wall-clock time (not
        // the program's monotonic clock, not microseconds read as nanoseconds).
        assert_eq!(r[4], edge.pair.if_b, "{r:?}");
        let at: f64 = r[5].parse().expect("a time");
        assert!(
            (now - 3600.0..=now).contains(&at),
            "{at} is not today: {r:?}"
        );
    }
}

/// The number before `what` in a capture's summary (`15 packets captured`).
fn summary(said: &str, what: &str) -> u64 {
    said.lines()
        .find_map(|l| l.strip_suffix(what))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {what:?} in: {said}"))
}

#[test]
fn sampled_streamed_and_slow_captures_run_at_once() {
    let Some(edge) = edge("sampled_streamed_and_slow_captures_run_at_once", "cas") else {
        return;
    };
    // One junk packet in ten, as a stream on stdout; every one, into one page a CPU of a
    // reader that reads nothing while the junk comes.
    let sampled = Capture::start_to_stdout(
        &edge,
        "sampled.pcapng",
        &["--verdict", "malformed", "--sample", "1/10"],
    );
    let slow = Capture::start(
        &edge,
        "slow.pcapng",
        &["--verdict", "malformed", "--buffer-pages", "1"],
    );
    slow.signal(libc::SIGSTOP);
    let tx = socket(&edge, IpAddr::V6(edge.pair.a6));
    let sip6 = SocketAddr::new(edge.pair.b(true), 5060);
    const SENT: u64 = 200;
    let junk = [b'x'; 400];
    for _ in 0..SENT {
        tx.send_to(&junk, sip6).expect("send");
    }
    slow.signal(libc::SIGCONT);

    let (status, said) = sampled.wait(Duration::ZERO);
    assert!(status.success(), "{said}");
    let captured = summary(&said, "packets captured");
    // 1 in 10 of 200 at random: 20 expected; none or half would be odds below 1e-9.
    assert!((1..100).contains(&captured), "{said}");
    let rows = tshark_fields(
        &edge.dir().join("sampled.pcapng"),
        None,
        &["frame.comment", "ipv6.src"],
    );
    assert_eq!(rows.len() as u64, captured, "{rows:?}");
    assert!(
        rows.iter().all(|r| r[0].contains("verdict: malformed")),
        "{rows:?}"
    );

    let (status, said) = slow.wait(Duration::ZERO);
    assert!(status.success(), "{said}");
    let (captured, dropped) = (
        summary(&said, "packets captured"),
        summary(&said, "packets dropped by capture"),
    );
    // One page a CPU holds a few copies of 460 bytes: the rest are lost, and counted.
    eprintln!("a reader stopped during {SENT} packets: {captured} captured, {dropped} dropped");
    assert_eq!(captured + dropped, SENT, "{said}");
    assert!(dropped > 0, "{said}");
    let rows = tshark_fields(&edge.dir().join("slow.pcapng"), None, &["frame.comment"]);
    assert_eq!(rows.len() as u64, captured, "{rows:?}");
}

/// Four captures with `args` running (`0.pcapng`...), the most the daemon allows: a fifth
/// is refused, saying `full`.
fn fill(edge: &Edge, args: &[&str], full: &str) -> Vec<Capture> {
    let running = (0..4)
        .map(|i| Capture::start(edge, &format!("{i}.pcapng"), args))
        .collect();
    let refused = Capture::try_start(edge, "5.pcapng", args)
        .err()
        .expect("a fifth capture is refused");
    assert!(refused.contains(full), "{refused}");
    running
}

#[test]
fn capture_slots_are_bounded_and_a_dead_holder_frees_its_slot() {
    let Some(edge) = edge(
        "capture_slots_are_bounded_and_a_dead_holder_frees_its_slot",
        "csl",
    ) else {
        return;
    };
    let mut running = fill(
        &edge,
        &["--verdict", "banned"],
        "all 4 capture slots are in use",
    );
    // Killed with -9: nothing frees its slot but its death, which the next capture sees.
    drop(running.pop());
    running.push(Capture::start(&edge, "6.pcapng", &["--verdict", "banned"]));
    // Stopped cleanly: its slot is free at once.
    let (status, said) = running.remove(0).wait(Duration::ZERO);
    assert!(status.success(), "{said}");
    running.push(Capture::start(&edge, "7.pcapng", &["--verdict", "banned"]));
}

#[test]
fn a_capture_goes_on_across_a_daemon_restart() {
    let Some(mut edge) = edge("a_capture_goes_on_across_a_daemon_restart", "crs") else {
        return;
    };
    let banned = IpAddr::V4(edge.pair.a4);
    ban(&edge, banned);
    let cap = Capture::start(
        &edge,
        "restart.pcapng",
        &["--verdict", "banned", "--count", "10"],
    );
    assert_eq!(edge.send(5), 0, "banned before the restart");
    // Killed with -9, then started again: the new daemon takes over the pinned maps, the
    // link and the capture's slot, and its program's tap hands on the same verdicts.
    edge.kill();
    edge.run(xdp_args(true));
    assert_eq!(edge.send(5), 0, "banned after the restart");
    let (status, said) = cap.wait(Duration::from_secs(20));
    assert!(status.success(), "{said}");
    assert!(said.contains("10 packets captured"), "{said}");
    let rows = tshark_fields(
        &edge.dir().join("restart.pcapng"),
        None,
        &["frame.comment", "ip.src"],
    );
    assert_eq!(rows.len(), 10, "{rows:?}");
    for r in &rows {
        assert!(r[0].contains("verdict: banned (dropped"), "{r:?}");
        assert_eq!(r[1], banned.to_string(), "{r:?}");
    }
}

/// A tight request rate: the fourth request in a minute is refused at the gate.
const GATE_CONFIG: &str = "[bans]\nrequest_limit = 3\nrequest_window = \"60s\"\n";

/// A request whose CSeq names another method: the message layer answers it 400 itself.
const MALFORMED: &[u8] = b"OPTIONS sip:alice@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bK-bad\r\nMax-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\nCall-ID: bad@test\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n";

/// The answer `tx` gets within two seconds (its status line), or "" when none comes.
fn answer_to(tx: &UdpSocket) -> String {
    tx.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut buf = [0u8; 4096];
    tx.recv(&mut buf)
        .map(|n| {
            String::from_utf8_lossy(&buf[..n])
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}

#[test]
fn gate_refusals_and_local_answers_are_captured() {
    let test = "gate_refusals_and_local_answers_are_captured";
    if !require_tshark(test) {
        return;
    }
    // No XDP: the gate layer needs no pinned map.
    let Some(edge) = Edge::root(test, "cgt", GATE_CONFIG, xdp_args(false)) else {
        return;
    };
    let noisy = IpAddr::V4(edge.pair.a4);
    let clean = IpAddr::V4(edge.pair.add_a4(7).expect("a second address in a"));
    let cap = Capture::start(
        &edge,
        "gate.pcapng",
        &["--layer", "gate", "--duration", "60s"],
    );
    let (tx_noisy, tx_clean) = (socket(&edge, noisy), socket(&edge, clean));
    let sip = edge.sip();
    tx_noisy.send_to(MALFORMED, sip).expect("send");
    let said = answer_to(&tx_noisy);
    assert!(said.starts_with("SIP/2.0 400"), "{said:?}");
    for i in 0..6 {
        tx_noisy
            .send_to(&frames::sip_request("OPTIONS", i), sip)
            .expect("send");
        std::thread::sleep(Duration::from_millis(20));
    }
    // A keep-alive OPTIONS to the edge itself, answered 200: nothing the gate refused.
    let ping = format!(
        "OPTIONS sip:{sip} SIP/2.0\r\nVia: SIP/2.0/UDP {clean}:5062;branch=z9hG4bK-clean\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@example.net>;tag=1\r\nTo: <sip:{sip}>\r\n\
         Call-ID: clean@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
    );
    tx_clean.send_to(ping.as_bytes(), sip).expect("send");
    let said = answer_to(&tx_clean);
    assert!(said.starts_with("SIP/2.0 200"), "{said:?}");
    std::thread::sleep(Duration::from_millis(500));

    let (status, said) = cap.wait(Duration::ZERO);
    assert!(status.success(), "{said}");
    let rows = tshark_fields(
        &edge.dir().join("gate.pcapng"),
        None,
        &[
            "frame.comment",
            "ip.src",
            "ip.dst",
            "sip.Method",
            "sip.Status-Code",
            "frame.interface_name",
        ],
    );
    let refused: Vec<_> = rows
        .iter()
        .filter(|r| r[0].starts_with("gate: request_rate"))
        .collect();
    assert!(!refused.is_empty(), "{rows:?}");
    let edge_ip = sip.ip().to_string();
    for r in &refused {
        assert_eq!(r[1], noisy.to_string(), "{r:?}");
        // The listener is bound to the wildcard: the edge's side is the routed source.
        assert_eq!(r[2], edge_ip, "{r:?}");
        assert_eq!(r[3], "OPTIONS", "tshark decodes SIP in it: {r:?}");
        assert_eq!(r[5], "gate", "{r:?}");
    }
    // Over the rate, then banned for it: every OPTIONS after the third is refused.
    let gate_rows = rows.iter().filter(|r| r[0].starts_with("gate: ")).count();
    assert!(gate_rows >= 3, "{rows:?}");
    let request = rows
        .iter()
        .find(|r| r[0].starts_with("answered: 400") && r[0].contains("(the request)"))
        .unwrap_or_else(|| panic!("the malformed request: {rows:?}"));
    assert_eq!(
        (request[1].as_str(), request[3].as_str()),
        (noisy.to_string().as_str(), "OPTIONS")
    );
    let answer = rows
        .iter()
        .find(|r| r[0].starts_with("answered: 400") && r[0].contains("(our answer)"))
        .unwrap_or_else(|| panic!("the 400: {rows:?}"));
    assert_eq!(answer[1], edge_ip, "{answer:?}");
    assert_eq!(
        (answer[2].as_str(), answer[4].as_str()),
        (noisy.to_string().as_str(), "400")
    );
    assert!(
        !rows
            .iter()
            .any(|r| r[1] == clean.to_string() || r[2] == clean.to_string()),
        "nothing of the clean source: {rows:?}"
    );
    assert!(said.contains("packets dropped by capture"), "{said}");
}

#[test]
fn gate_captures_are_bounded_and_a_dead_client_frees_its_place() {
    let test = "gate_captures_are_bounded_and_a_dead_client_frees_its_place";
    let Some(edge) = Edge::root(test, "cgb", GATE_CONFIG, xdp_args(false)) else {
        return;
    };
    let gate = ["--layer", "gate"];
    let mut running = fill(&edge, &gate, "all 4 gate captures are running");
    // Killed with -9: the daemon sees its connection end and frees its place.
    drop(running.pop());
    let t0 = std::time::Instant::now();
    loop {
        match Capture::try_start(&edge, "6.pcapng", &gate) {
            Ok(c) => {
                running.push(c);
                break;
            }
            Err(e) if t0.elapsed() > Duration::from_secs(5) => panic!("never freed: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let (status, said) = running.remove(0).wait(Duration::ZERO);
    assert!(status.success(), "{said}");
}

/// With no daemon, the gate layer says so, with the socket it tried.
#[test]
fn a_gate_capture_without_a_daemon_names_the_socket() {
    let dir = std::env::temp_dir().join(format!("sfw-cap-nodaemon-{}", std::process::id()));
    let socket = dir.join("admin.sock");
    let out = std::process::Command::new(daemon_bin())
        .args(["capture", "--layer", "gate", "-w"])
        .arg(dir.join("x.pcapng"))
        .arg("--admin-socket")
        .arg(&socket)
        .output()
        .expect("run the capture");
    assert!(!out.status.success());
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("not running"), "{said}");
    assert!(said.contains(&socket.display().to_string()), "{said}");
}

/// `--layer all`: one source's whole story in one file, in the order it happened: its
/// requests over the rate refused at the gate, then (banned for it) dropped by XDP.
#[test]
fn one_file_shows_the_gate_then_xdp() {
    let test = "one_file_shows_the_gate_then_xdp";
    if !require_tshark(test) {
        return;
    }
    let config = format!("{CONFIG}{GATE_CONFIG}");
    let Some(edge) = Edge::root(test, "cal", &config, xdp_args(true)) else {
        return;
    };
    let noisy = IpAddr::V4(edge.pair.a4);
    let other = IpAddr::V4(edge.pair.add_a4(7).expect("a second address in a"));
    let cap = Capture::start(
        &edge,
        "all.pcapng",
        &[
            "--layer",
            "all",
            "--verdict",
            "banned",
            "--source",
            &format!("{noisy}/32"),
        ],
    );
    let (tx, tx_other) = (socket(&edge, noisy), socket(&edge, other));
    for i in 0..5 {
        tx_other
            .send_to(&frames::sip_request("OPTIONS", 100 + i), edge.sip())
            .expect("send");
    }
    let t0 = std::time::Instant::now();
    let mut i = 0;
    // Until the ban reaches the program, and a few more after.
    while !edge.banned(&noisy.to_string()) && t0.elapsed() < Duration::from_secs(10) {
        tx.send_to(&frames::sip_request("OPTIONS", i), edge.sip())
            .expect("send");
        i += 1;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(edge.banned(&noisy.to_string()), "banned for its rate");
    for j in 0..5 {
        tx.send_to(&frames::sip_request("OPTIONS", 1000 + j), edge.sip())
            .expect("send");
    }
    std::thread::sleep(Duration::from_millis(500));
    let (status, said) = cap.wait(Duration::ZERO);
    assert!(status.success(), "{said}");
    let rows = tshark_fields(
        &edge.dir().join("all.pcapng"),
        None,
        &["frame.comment", "ip.src", "ip.dst", "frame.interface_name"],
    );
    let gate = rows
        .iter()
        .position(|r| r[0].starts_with("gate: request_rate"))
        .unwrap_or_else(|| panic!("no gate refusal: {rows:?}"));
    assert_eq!(rows[gate][3], "gate", "{rows:?}");
    let xdp = rows
        .iter()
        .position(|r| r[0].contains("verdict: banned (dropped by XDP)"))
        .unwrap_or_else(|| panic!("no XDP drop: {rows:?}"));
    assert_eq!(rows[xdp][3], edge.pair.if_b, "{rows:?}");
    assert!(
        gate < xdp,
        "the refusal before the drops it led to: {rows:?}"
    );
    assert!(
        rows.iter()
            .all(|r| r[1] == noisy.to_string() || r[2] == noisy.to_string()),
        "only the source asked for: {rows:?}"
    );
}
