//! Every verdict of the XDP program, on crafted frames run through `BPF_PROG_TEST_RUN`:
//! the program's return code and the counter it moves.

use std::{net::IpAddr, time::Duration};

use aya::programs::{TestRun, TestRunOptions};
use sip_firewall::{
    clock,
    xdp::{FastPath, events},
};
use sip_firewall_common::{
    BanReason, BanScope, Reason, XdpConfig,
    payload::{PayloadClass, classify},
};
use sip_firewall_tests::{
    frames::{self, Shape},
    require_root,
};

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const SRC4: &str = "192.0.2.10";
const DST4: &str = "198.51.100.1";
const SRC6: &str = "2001:db8:1::10";
const DST6: &str = "2001:db8:2::1";

/// A plain UDP datagram from `src` to the SIP port (5060) of `dst`.
fn to_sip(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
    frames::udp(ip(src), ip(dst), 5060, payload, &Shape::default())
}

/// A loaded program with the daemon's default settings and port 5060.
fn program(cfg: XdpConfig) -> FastPath {
    let mut fp = FastPath::load().expect("load the XDP program");
    fp.maps.set_config(&cfg).unwrap();
    fp.maps.set_sip_ports(&[5060]).unwrap();
    fp
}

fn default_cfg() -> XdpConfig {
    XdpConfig {
        max_payload: 16384,
        ban_scope: BanScope::All as u32,
        ..Default::default()
    }
}

/// Run one frame; return the action and the one reason whose counter moved.
fn run(fp: &FastPath, frame: &[u8]) -> (u32, Reason) {
    let before = fp.maps.counters().unwrap();
    let res = fp
        .program()
        .test_run(TestRunOptions {
            data_in: Some(frame),
            ..Default::default()
        })
        .expect("BPF_PROG_TEST_RUN");
    let after = fp.maps.counters().unwrap();
    let moved: Vec<Reason> = Reason::ALL
        .iter()
        .copied()
        .filter(|r| after[*r as usize].packets != before[*r as usize].packets)
        .collect();
    assert_eq!(
        moved.len(),
        1,
        "exactly one counter moves per packet, got {moved:?}"
    );
    let r = moved[0];
    assert_eq!(after[r as usize].packets - before[r as usize].packets, 1);
    assert_eq!(
        after[r as usize].bytes - before[r as usize].bytes,
        frame.len() as u64,
        "byte counter counts the whole frame"
    );
    (res.return_value, r)
}

fn assert_verdict(fp: &FastPath, frame: &[u8], want: Reason, what: &str) {
    let (action, reason) = run(fp, frame);
    assert_eq!(reason, want, "{what}: reason");
    let want_action = if want.is_drop() { XDP_DROP } else { XDP_PASS };
    assert_eq!(action, want_action, "{what}: action");
}

macro_rules! root_only {
    ($name:expr) => {
        if !require_root($name) {
            return;
        }
    };
}

#[test]
fn valid_sip_passes_in_every_encapsulation() {
    root_only!("valid_sip_passes_in_every_encapsulation");
    let fp = program(default_cfg());
    let req = frames::sip_request("INVITE", 1);
    let resp = frames::sip_response(180, "z9hG4bK-abc");
    for (src, dst) in [(SRC4, DST4), (SRC6, DST6)] {
        for shape in [
            Shape::default(),
            Shape {
                vlan_tpid: Some(0x8100),
                ..Default::default()
            },
            Shape {
                vlan_tpid: Some(0x88A8),
                ..Default::default()
            },
        ] {
            for payload in [&req, &resp] {
                let frame = frames::udp(ip(src), ip(dst), 5060, payload, &shape);
                assert_verdict(&fp, &frame, Reason::Passed, &format!("{src} {shape:?}"));
            }
        }
    }
    // IPv4 with options (IHL 6..15).
    for opts in [4, 20, 40] {
        let shape = Shape {
            ipv4_options: opts,
            ..Default::default()
        };
        assert_verdict(
            &fp,
            &frames::udp(ip(SRC4), ip(DST4), 5060, &req, &shape),
            Reason::Passed,
            "ipv4 options",
        );
        let junk = frames::udp(ip(SRC4), ip(DST4), 5060, b"hello junk\r\n", &shape);
        assert_verdict(&fp, &junk, Reason::Malformed, "junk behind ipv4 options");
    }
}

#[test]
fn keepalive_and_stun_binding_pass_junk_is_malformed() {
    root_only!("keepalive_and_stun_binding_pass_junk_is_malformed");
    let fp = program(default_cfg());
    // A FINGERPRINT-sized attribute; STUN-looking junk: a length past the payload, one
    // short of it, a success response, more attributes than a keep-alive carries.
    let with_fingerprint = frames::stun_with(&[0x80, 0x28, 0, 4, 1, 2, 3, 4]);
    let mut long = frames::stun_binding();
    long[3] = 8;
    let mut short = frames::stun_with(&[0; 8]);
    short[3] = 4;
    let mut response = frames::stun_binding();
    response[0] = 1;
    let too_large = frames::stun_with(&[0; 68]);
    let cases: [(&[u8], Reason, &str); 13] = [
        (b"\r\n", Reason::Passed, "crlf"),
        (b"\r\n\r\n", Reason::Passed, "double crlf"),
        (&frames::stun_binding(), Reason::Passed, "stun"),
        (&with_fingerprint, Reason::Passed, "stun with fingerprint"),
        (&long, Reason::Malformed, "stun length past the payload"),
        (
            &short,
            Reason::Malformed,
            "stun length short of the payload",
        ),
        (&response, Reason::Malformed, "stun success response"),
        (&too_large, Reason::Malformed, "stun too large"),
        (b"", Reason::Malformed, "empty"),
        (b"\x00\x00\x00\x00", Reason::Malformed, "zeros"),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
            Reason::Malformed,
            "http",
        ),
        (
            b"SIP/2.0 20 OK\r\n\r\n",
            Reason::Malformed,
            "2-digit status",
        ),
        (
            b"INVITE sip:x SIP/3.0\r\n\r\n",
            Reason::Malformed,
            "wrong version",
        ),
    ];
    for (src, dst) in [(SRC4, DST4), (SRC6, DST6)] {
        for (payload, want, what) in cases {
            let frame = to_sip(src, dst, payload);
            assert_verdict(&fp, &frame, want, &format!("{src}: {what}"));
        }
    }
}

#[test]
fn oversize_by_udp_length() {
    root_only!("oversize_by_udp_length");
    let fp = program(XdpConfig {
        max_payload: 1000,
        ..default_cfg()
    });
    let mut big = frames::sip_request("MESSAGE", 1);
    big.resize(1000, b'x');
    let ok = to_sip(SRC4, DST4, &big);
    assert_verdict(&fp, &ok, Reason::Passed, "exactly max");
    big.push(b'x');
    let over = to_sip(SRC4, DST4, &big);
    assert_verdict(&fp, &over, Reason::Oversize, "max + 1");

    // A first fragment claims the whole datagram's length in its UDP header.
    let fp = program(default_cfg());
    let req = frames::sip_request("INVITE", 2);
    let shape = Shape {
        more_fragments: true,
        udp_len_override: Some(20000),
        ..Default::default()
    };
    let shape6 = Shape {
        ipv6_frag_header: true,
        ..shape.clone()
    };
    for (src, dst, shape) in [(SRC4, DST4, &shape), (SRC6, DST6, &shape6)] {
        let first = frames::udp(ip(src), ip(dst), 5060, &req, shape);
        let what = format!("{src}: first fragment of a 20000-byte datagram");
        assert_verdict(&fp, &first, Reason::Oversize, &what);
    }
}

#[test]
fn fragments_truncation_and_other_traffic_pass() {
    root_only!("fragments_truncation_and_other_traffic_pass");
    let fp = program(default_cfg());
    let v4 = |payload: &[u8], shape: &Shape| frames::udp(ip(SRC4), ip(DST4), 5060, payload, shape);
    let v6 = |payload: &[u8], shape: &Shape| frames::udp(ip(SRC6), ip(DST6), 5060, payload, shape);
    let later = Shape {
        frag_offset: 185,
        ..Default::default()
    };
    let later6 = Shape {
        ipv6_frag_header: true,
        ..later.clone()
    };
    let first = Shape {
        more_fragments: true,
        ..Default::default()
    };
    let junk = b"junk junk junk";
    let mut cases: Vec<(Vec<u8>, Reason, String)> = vec![
        // Non-first fragments carry no ports: they pass (even if their bytes look like junk).
        (v4(junk, &later), Reason::Passed, "v4 later fragment".into()),
        (
            v6(junk, &later6),
            Reason::Passed,
            "v6 later fragment".into(),
        ),
        // First fragments are judged like any packet.
        (
            v4(junk, &first),
            Reason::Malformed,
            "junk first fragment".into(),
        ),
        (
            v4(&frames::sip_request("BYE", 3), &first),
            Reason::Passed,
            "sip first fragment".into(),
        ),
        // Not ours: ARP, ICMP, other UDP ports, TCP (even to 5060: user space frames streams).
        (frames::arp(), Reason::Passed, "arp".into()),
        (
            frames::icmp_echo(ip(SRC4), ip(DST4)),
            Reason::Passed,
            "icmp".into(),
        ),
        (
            frames::icmp_echo(ip(SRC6), ip(DST6)),
            Reason::Passed,
            "icmpv6".into(),
        ),
        (
            frames::udp(ip(SRC4), ip(DST4), 53, b"junk", &Shape::default()),
            Reason::Passed,
            "dns port".into(),
        ),
        (
            frames::tcp_syn(ip(SRC4), ip(DST4), 5060, &Shape::default()),
            Reason::Connection,
            "tcp syn to a SIP port: a new connection, counted".into(),
        ),
    ];
    // Truncated headers pass untouched: the kernel drops them anyway.
    let full = v4(b"junk", &Shape::default());
    for cut in [14, 20, 33, 34, 36, 40] {
        cases.push((
            full[..cut].to_vec(),
            Reason::Passed,
            format!("truncated to {cut}"),
        ));
    }
    let full6 = v6(b"junk", &Shape::default());
    for cut in [14, 30, 53, 54, 58] {
        cases.push((
            full6[..cut].to_vec(),
            Reason::Passed,
            format!("v6 truncated to {cut}"),
        ));
    }
    for (frame, want, what) in &cases {
        assert_verdict(&fp, frame, *want, what);
    }
}

#[test]
fn allow_deny_and_ban_in_order() {
    root_only!("allow_deny_and_ban_in_order");
    let mut fp = program(default_cfg());
    let req = frames::sip_request("OPTIONS", 4);
    for (src, dst, net) in [
        (SRC4, DST4, "192.0.2.0/24"),
        (SRC6, DST6, "2001:db8:1::/48"),
    ] {
        let f = to_sip(src, dst, &req);
        let junk = to_sip(src, dst, b"junk");
        let net = net.parse().unwrap();

        fp.maps.deny_add(&net).unwrap();
        assert_verdict(&fp, &f, Reason::Denied, "denied prefix");
        assert_verdict(
            &fp,
            &frames::icmp_echo(ip(src), ip(dst)),
            Reason::Denied,
            "deny covers all traffic by default",
        );

        fp.maps.allow_add(&net).unwrap();
        assert_verdict(&fp, &f, Reason::Allowed, "allow wins over deny");
        assert_verdict(&fp, &junk, Reason::Allowed, "allow skips every later check");
        assert!(fp.maps.allow_remove(&net).unwrap());
        assert!(!fp.maps.allow_remove(&net).unwrap());
        assert!(fp.maps.deny_remove(&net).unwrap());

        fp.maps
            .ban(
                ip(src),
                clock::expiry_after(Some(Duration::from_secs(60))),
                BanReason::Manual as u32,
            )
            .unwrap();
        assert_verdict(&fp, &f, Reason::Banned, "live ban");
        assert_verdict(
            &fp,
            &frames::tcp_syn(ip(src), ip(dst), 22, &Shape::default()),
            Reason::Banned,
            "ban covers all traffic by default",
        );
        fp.maps
            .ban(
                ip(src),
                clock::monotonic_ns() - 1_000_000_000,
                BanReason::Manual as u32,
            )
            .unwrap();
        assert_verdict(&fp, &f, Reason::Passed, "expired ban is ignored");
        assert!(fp.maps.bans().is_empty(), "expired ban is deleted on sight");
    }
    // Another host of the denied prefix's neighbourhood is untouched.
    fp.maps.deny_add(&"192.0.2.0/25".parse().unwrap()).unwrap();
    let other = to_sip("192.0.2.200", DST4, &req);
    assert_verdict(&fp, &other, Reason::Passed, "outside the denied /25");
}

#[test]
fn ban_scope_sip_ports_only() {
    root_only!("ban_scope_sip_ports_only");
    let mut fp = program(XdpConfig {
        ban_scope: BanScope::SipPorts as u32,
        ..default_cfg()
    });
    fp.maps
        .ban(ip(SRC4), u64::MAX, BanReason::Manual as u32)
        .unwrap();
    fp.maps
        .deny_add(&"2001:db8:1::/48".parse().unwrap())
        .unwrap();
    let req = frames::sip_request("OPTIONS", 5);
    assert_verdict(&fp, &to_sip(SRC4, DST4, &req), Reason::Banned, "sip port");
    assert_verdict(
        &fp,
        &frames::tcp_syn(ip(SRC4), ip(DST4), 5060, &Shape::default()),
        Reason::Banned,
        "tcp sip port",
    );
    assert_verdict(
        &fp,
        &frames::tcp_syn(ip(SRC4), ip(DST4), 22, &Shape::default()),
        Reason::Passed,
        "ssh",
    );
    assert_verdict(
        &fp,
        &frames::icmp_echo(ip(SRC4), ip(DST4)),
        Reason::Passed,
        "icmp",
    );
    assert_verdict(
        &fp,
        &to_sip(SRC6, DST6, &req),
        Reason::Denied,
        "v6 sip port",
    );
    assert_verdict(
        &fp,
        &frames::udp(ip(SRC6), ip(DST6), 53, &req, &Shape::default()),
        Reason::Passed,
        "v6 dns",
    );
}

#[test]
fn flood_bans_and_reports() {
    root_only!("flood_bans_and_reports");
    // 1 packet/s sustained, bursts of 5, bans of 1 hour: the 6th packet in a row is a flood.
    let mut fp = program(default_cfg().with_flood(1, 5, 3_600_000_000_000));
    let mut ring = fp.take_ban_events().expect("ban event ring");
    let req = frames::sip_request("REGISTER", 6);
    let f = to_sip(SRC4, DST4, &req);
    for i in 0..5 {
        assert_verdict(&fp, &f, Reason::Passed, &format!("burst packet {i}"));
    }
    assert_verdict(&fp, &f, Reason::Flood, "over the burst");
    assert_verdict(&fp, &f, Reason::Banned, "banned after the flood");
    let bans = fp.maps.bans();
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0].0, ip(SRC4));
    assert_eq!(bans[0].1.reason, BanReason::Flood as u32);
    let left = clock::remaining(bans[0].1.expires_ns).unwrap();
    assert!(
        left > Duration::from_secs(3500) && left <= Duration::from_secs(3600),
        "{left:?}"
    );
    let item = ring.next().expect("a ban event");
    let ev = events::decode(&item).unwrap();
    assert_eq!(ev.ip, ip(SRC4));
    assert_eq!(ev.reason, Some(BanReason::Flood));
    assert_eq!(ev.expires_ns, bans[0].1.expires_ns);
    drop(item);
    assert!(ring.next().is_none(), "one event per ban");

    // IPv6 sources share a bucket per /64: rotating addresses does not reset the limit.
    for i in 0..5u8 {
        let src = format!("2001:db8:1::{}", i + 1);
        let f = to_sip(&src, DST6, &req);
        assert_verdict(&fp, &f, Reason::Passed, "v6 burst");
    }
    let f = to_sip("2001:db8:1::99", DST6, &req);
    assert_verdict(&fp, &f, Reason::Flood, "same /64 over the burst");
    let f = to_sip("2001:db8:1:1::1", DST6, &req);
    assert_verdict(&fp, &f, Reason::Passed, "another /64 has its own bucket");
    // Flood limits only count traffic to the SIP ports.
    let other = to_sip(SRC4, DST4, &req);
    fp.maps.unban(ip(SRC4)).unwrap();
    assert_verdict(
        &fp,
        &other,
        Reason::Flood,
        "still over the limit after an unban",
    );
}

/// The kernel's payload check and the reference `classify` agree on every torture message
/// and on crafted edge cases, including the scan bounds.
#[test]
fn payload_check_matches_reference() {
    root_only!("payload_check_matches_reference");
    let fp = program(XdpConfig {
        max_payload: 0,
        ..default_cfg()
    });
    let mut payloads: Vec<(String, Vec<u8>)> = Vec::new();
    for dir in ["rfc4475", "rfc5118"] {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/").to_string() + dir;
        for e in std::fs::read_dir(&path).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "dat") {
                payloads.push((p.display().to_string(), std::fs::read(&p).unwrap()));
            }
        }
    }
    assert!(payloads.len() >= 61, "fixtures present");
    let edge: Vec<&[u8]> = vec![
        b"\r\n",
        b"\r\n\r\n",
        b"\r\n\r\n\r\n",
        b"\r",
        b"x",
        b"INVITE",
        b"INVITE ",
        b"INVITE sip:x SIP/2.0",
        b"INVITE sip:x SIP/2.0\r\n",
        b"INVITE sip:x sip/2.0\r\n",
        b"INVITE  SIP/2.0\r\n",
        b"INVITE SIP/2.0\r\n",
        b"I sip:x SIP/2.0\r\n",
        b"INVITE sip:\x7f SIP/2.0\r\n",
        b"INVITE sip:\tx SIP/2.0\r\n",
        b"SIP/2.0 200 OK\r\n",
        b"SIP/2.0 200 ",
        b"SIP/2.0 200",
        b"sip/2.0 999 \r\n",
        b"SIP/2.0 2x0 OK\r\n",
        b"SIP/2.0  200 OK\r\n",
        b"\x00\x01\x00\x00\x21\x12\xA4\x42xxxxxxxxxxxx",
        b"\x00\x01\x00\x00\x21\x12\xA4\x42xxxxxxxxxxx",
        b"\x00\x01\x00\x04\x21\x12\xA4\x42xxxxxxxxxxxxyyyy",
        b"\x00\x01\x00\x04\x21\x12\xA4\x42xxxxxxxxxxxxyyy",
        b"\x00\x01\x00\x03\x21\x12\xA4\x42xxxxxxxxxxxxyyy",
        b"\x01\x01\x00\x00\x21\x12\xA4\x42xxxxxxxxxxxx",
        b"\x40\x01\x00\x00\x21\x12\xA4\x42xxxxxxxxxxxx",
        // Methods around the word boundaries of the upper-case fast path, and what it
        // leaves to the byte scan.
        b"OPTIONS sip:x SIP/2.0\r\n",
        b"REGISTER sip:x SIP/2.0\r\n",
        b"SUBSCRIBE sip:x SIP/2.0\r\n",
        b"ABCDEFGHIJKLMNO sip:x SIP/2.0\r\n",
        b"ABCDEFGHIJKLMNOP sip:x SIP/2.0\r\n",
        b"InVITE sip:x SIP/2.0\r\n",
        b"REGISTEr sip:x SIP/2.0\r\n",
        b"REGISTER2 sip:x SIP/2.0\r\n",
        b"REG@STER sip:x SIP/2.0\r\n",
        b"REGISTER@ sip:x SIP/2.0\r\n",
        b" INVITE sip:x SIP/2.0\r\n",
        b"ACK",
        b"ACK ",
        b"ABCDEFGH",
        b"ABCDEFGH ",
        b"INVITE sip:x SIP/2.1\r\n",
        b"INVITE sip:x SIP-2.0\r\n",
        b"INVITE sip:x SIQ/2.0\r\n",
        b"INVITE sip:xSIP/2.0\r\n",
        b"SIP/2.0 200 OK\r\n",
        b"SIP/2.1 200 OK\r\n",
        b"SIP/2.0\t200 OK\r\n",
        b"sIp/2.0 200 OK\r\n",
    ];
    for e in edge {
        payloads.push((format!("{:?}", String::from_utf8_lossy(e)), e.to_vec()));
    }
    use sip_firewall_common::payload::{MAX_FIRST_LINE, MAX_METHOD_LEN};
    for method_len in [1, MAX_METHOD_LEN - 1, MAX_METHOD_LEN, MAX_METHOD_LEN + 1] {
        let mut p = vec![b'M'; method_len];
        p.extend_from_slice(b" sip:x SIP/2.0\r\n\r\n");
        payloads.push((format!("method of {method_len}"), p));
    }
    for attributes in [60usize, 64, 68] {
        let p = frames::stun_with(&vec![0; attributes]);
        payloads.push((format!("stun with {attributes} bytes of attributes"), p));
    }
    for line_len in [
        MAX_FIRST_LINE - 2,
        MAX_FIRST_LINE - 1,
        MAX_FIRST_LINE,
        MAX_FIRST_LINE + 1,
    ] {
        // `line_len` bytes before the CR.
        let mut p = b"MESSAGE sip:".to_vec();
        p.resize(line_len - 8, b'a');
        p.extend_from_slice(b" SIP/2.0\r\n\r\n");
        payloads.push((format!("first line of {line_len}"), p));
    }
    let mut agreed = 0;
    for (name, p) in &payloads {
        if p.len() > 3000 {
            continue; // BPF_PROG_TEST_RUN takes one page of linear data.
        }
        let want = classify(p);
        let f = to_sip(SRC4, DST4, p);
        let (_, reason) = run(&fp, &f);
        let got_pass = reason == Reason::Passed;
        assert_eq!(
            got_pass,
            want.passes(),
            "{name}: reference says {want:?}, XDP says {reason:?}"
        );
        if want == PayloadClass::Malformed {
            assert_eq!(reason, Reason::Malformed, "{name}");
        }
        agreed += 1;
    }
    eprintln!("payload check: XDP and reference agree on {agreed} payloads");
    assert!(agreed >= 80);
}

/// Loading and attaching errors are clear, and a bad interface is named.
#[test]
fn attach_to_missing_interface_is_a_clear_error() {
    root_only!("attach_to_missing_interface_is_a_clear_error");
    let mut fp = program(default_cfg());
    let err = fp
        .attach("nosuchif0", sip_firewall::xdp::config::XdpMode::Auto)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("nosuchif0") && err.contains("does not exist"),
        "{err}"
    );
}

/// A response to the SIP port with these header lines after the status line.
fn response_frame(headers: &str) -> (Vec<u8>, Vec<u8>) {
    let payload = format!("SIP/2.0 200 OK\r\n{headers}Content-Length: 0\r\n\r\n").into_bytes();
    let frame = to_sip(SRC4, DST4, &payload);
    (payload, frame)
}

/// The stray-reply check: the XDP program and `branch::top_branch` find the same topmost
/// branch and compute the same key, in every spelling, with several Vias, and at the bound.
#[test]
fn stray_replies_match_the_reference_key() {
    root_only!("stray_replies_match_the_reference_key");
    use sip_firewall_common::branch::{TopBranch, top_branch};
    const BOUND: usize = 1500;
    let mut fp = program(XdpConfig {
        flags: XdpConfig::STRAY_CHECK,
        via_scan: BOUND as u32,
        ..default_cfg()
    });
    let ours = "z9hG4bK-7d2f1a9c0b3e4d5f";
    // The responses come from where the requests went: SRC4, port 5062.
    let peer = Some(std::net::SocketAddr::new(ip(SRC4), 5062));
    let far = clock::expiry_after(Some(Duration::from_secs(60)));
    // A header line that pushes the Via so that its branch ends `at` bytes into the payload.
    let pad_to = |at: usize, via: &str| -> String {
        let head = "SIP/2.0 200 OK\r\n".len() + "X-Pad: \r\n".len();
        let fill = at - head - via.len();
        format!("X-Pad: {}\r\n{via}", "p".repeat(fill))
    };
    let via_tail = format!("Via: SIP/2.0/UDP 198.51.100.1:5060;branch={ours}");
    let cases: Vec<(String, String)> = vec![
        ("plain".into(), format!("{via_tail}\r\n")),
        (
            "compact, odd spaces".into(),
            format!("v :SIP/2.0/UDP 198.51.100.1 ; BRANCH = {ours} ;rport\r\n"),
        ),
        (
            "upper case, tab".into(),
            format!("VIA\t: SIP/2.0/UDP h;received=192.0.2.1;branch={ours}\r\n"),
        ),
        (
            "two Via headers, ours on top".into(),
            format!("{via_tail}\r\nVia: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKtheirs\r\n"),
        ),
        (
            "two Via headers, ours second".into(),
            format!("Via: SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKtheirs\r\n{via_tail}\r\n"),
        ),
        (
            "two values in one Via, ours first".into(),
            format!("{via_tail}, SIP/2.0/UDP 192.0.2.9;branch=z9hG4bKtheirs\r\n"),
        ),
        (
            "two values in one Via, ours second".into(),
            format!("Via: SIP/2.0/UDP 192.0.2.9, {via_tail}\r\n"),
        ),
        (
            "after other headers".into(),
            format!("From: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\n{via_tail}\r\n"),
        ),
        (
            "no branch".into(),
            "Via: SIP/2.0/UDP 198.51.100.1;rport\r\n".into(),
        ),
        (
            "no Via".into(),
            "From: <sip:a@example.com>;tag=1\r\n".into(),
        ),
        (
            "branch delimiter at the bound".into(),
            pad_to(BOUND - 1, &via_tail) + "\r\n",
        ),
        (
            "branch delimiter past the bound".into(),
            pad_to(BOUND, &via_tail) + "\r\n",
        ),
    ];
    // The kernel scans in strides: the line feed, the `;` and the branch's end at every
    // offset within one, and a line feed that ends a stride.
    let mut cases = cases;
    for n in 0..17 {
        cases.push((
            format!("Via after {n} bytes of padding"),
            format!(
                "X-P: {}\r\n\r\nVia: SIP/2.0/UDP h{};branch={}\r\n",
                "p".repeat(n),
                "x".repeat(n % 9),
                &ours[..ours.len() - n % 8]
            ),
        ));
    }
    let mut decided = 0;
    for (name, headers) in &cases {
        let (payload, frame) = response_frame(headers);
        let want = top_branch(&payload, BOUND);
        match want {
            TopBranch::Key(k) => {
                decided += 1;
                let is_ours = k == sip_firewall_common::branch::branch_key(ours.as_bytes());
                fp.maps.transaction_open(ours, peer, far).unwrap();
                let open_verdict = if is_ours {
                    Reason::Passed
                } else {
                    Reason::StrayReply
                };
                assert_verdict(
                    &fp,
                    &frame,
                    open_verdict,
                    &format!("{name}: transaction open"),
                );
                assert!(fp.maps.transaction_close(ours, peer).unwrap());
                assert_verdict(
                    &fp,
                    &frame,
                    Reason::StrayReply,
                    &format!("{name}: transaction closed"),
                );
                // An expired key is as good as none.
                fp.maps
                    .transaction_open(ours, peer, clock::monotonic_ns() - 1_000_000_000)
                    .unwrap();
                assert_verdict(
                    &fp,
                    &frame,
                    Reason::StrayReply,
                    &format!("{name}: transaction expired"),
                );
                assert_eq!(
                    fp.maps.transactions_expire(clock::monotonic_ns()).unwrap(),
                    1
                );
            }
            TopBranch::Missing => assert_verdict(&fp, &frame, Reason::StrayReply, name),
            TopBranch::Beyond => assert_verdict(&fp, &frame, Reason::Passed, name),
        }
        eprintln!("{name}: reference {want:?}, XDP agrees");
    }
    assert_eq!(
        decided,
        8 + 17,
        "cases with a key (the second value's branch is not the topmost)"
    );
    // The bound cases really straddle it.
    let (at, _) = response_frame(&cases[10].1);
    let (past, _) = response_frame(&cases[11].1);
    assert!(matches!(top_branch(&at, BOUND), TopBranch::Key(_)));
    assert_eq!(top_branch(&past, BOUND), TopBranch::Beyond);
    // Requests are not responses: untouched by the check.
    let req = frames::udp(
        ip(SRC4),
        ip(DST4),
        5060,
        &frames::sip_request("INVITE", 9),
        &Shape::default(),
    );
    assert_verdict(&fp, &req, Reason::Passed, "a request");
    // Without the flag (no proxy recording transactions), responses pass.
    let mut off = program(default_cfg());
    let (_, frame) = response_frame(&cases[0].1);
    assert_verdict(&off, &frame, Reason::Passed, "stray check off");
    off.maps.transaction_open(ours, peer, far).unwrap();
}

/// The stray key binds the peer the request went to. A forged reply for an open
/// branch from another address or port is dropped in XDP; a peer allowed to answer from
/// anywhere (`[proxy] reply_from_any`) gets a key of the branch alone.
#[test]
fn stray_replies_must_come_from_the_peer() {
    root_only!("stray_replies_must_come_from_the_peer");
    use std::net::SocketAddr;
    let mut fp = program(XdpConfig {
        flags: XdpConfig::STRAY_CHECK,
        via_scan: 1500,
        ..default_cfg()
    });
    let far = clock::expiry_after(Some(Duration::from_secs(60)));
    let branch = "z9hG4bK-peer-bound-1";
    let resp = frames::sip_response(603, branch);
    let from = |src: &str, port: u16| {
        let dst = if src.contains(':') { DST6 } else { DST4 };
        frames::udp(
            ip(src),
            ip(dst),
            5060,
            &resp,
            &Shape {
                src_port: Some(port),
                ..Default::default()
            },
        )
    };
    for src in [SRC4, SRC6] {
        let peer = SocketAddr::new(ip(src), 5070);
        fp.maps.transaction_open(branch, Some(peer), far).unwrap();
        assert_verdict(&fp, &from(src, 5070), Reason::Passed, "from the peer");
        assert_verdict(
            &fp,
            &from(src, 5071),
            Reason::StrayReply,
            "same address, another port",
        );
        let other = if src == SRC4 {
            "192.0.2.66"
        } else {
            "2001:db8:9::66"
        };
        assert_verdict(
            &fp,
            &from(other, 5070),
            Reason::StrayReply,
            "another address, same port",
        );
        assert!(fp.maps.transaction_close(branch, Some(peer)).unwrap());
        assert_verdict(&fp, &from(src, 5070), Reason::StrayReply, "closed");
    }
    // A peer that answers from anywhere: a key of the branch alone, looked up only when the
    // daemon says such keys exist.
    let any = "z9hG4bK-any-peer-1";
    let resp_any = frames::sip_response(200, any);
    let f = to_sip("192.0.2.77", DST4, &resp_any);
    fp.maps.transaction_open(any, None, far).unwrap();
    assert_verdict(&fp, &f, Reason::StrayReply, "branch-only key, flag off");
    fp.maps.set_any_peer_keys(true).unwrap();
    assert_verdict(&fp, &f, Reason::Passed, "branch-only key, flag on");
    // Bound keys still bind with the flag on.
    let peer = SocketAddr::new(ip(SRC4), 5070);
    fp.maps.transaction_open(branch, Some(peer), far).unwrap();
    assert_verdict(
        &fp,
        &from(SRC4, 5070),
        Reason::Passed,
        "bound, from the peer",
    );
    assert_verdict(
        &fp,
        &from("192.0.2.66", 5070),
        Reason::StrayReply,
        "bound, from elsewhere, flag on",
    );
}

/// Under pressure: requests from unknown sources together pass up to the budget, the rest
/// are dropped as `pressure`; known sources always pass; responses and keep-alives are not
/// requests; below the budget nothing changes.
#[test]
fn pressure_admits_known_sources_first() {
    root_only!("pressure_admits_known_sources_first");
    // A budget of 5 requests per second (bursts of one second's worth).
    let mut fp = program(default_cfg().with_pressure_budget(5));
    let req = frames::sip_request("INVITE", 11);
    let unknown = |i: u8| {
        frames::udp(
            ip(&format!("203.0.113.{i}")),
            ip(DST4),
            5060,
            &req,
            &Shape::default(),
        )
    };
    for i in 1..=5 {
        assert_verdict(
            &fp,
            &unknown(i),
            Reason::Passed,
            &format!("unknown source {i} within the budget"),
        );
    }
    for i in 6..=20 {
        assert_verdict(
            &fp,
            &unknown(i),
            Reason::Pressure,
            &format!("unknown source {i} over the budget"),
        );
    }
    // A registered client keeps getting through, over IPv4 and IPv6.
    fp.maps
        .known_add(ip(SRC4), clock::expiry_after(Some(Duration::from_secs(60))))
        .unwrap();
    fp.maps
        .known_add(ip(SRC6), clock::expiry_after(Some(Duration::from_secs(60))))
        .unwrap();
    for _ in 0..10 {
        assert_verdict(&fp, &to_sip(SRC4, DST4, &req), Reason::Passed, "known v4");
        assert_verdict(&fp, &to_sip(SRC6, DST6, &req), Reason::Passed, "known v6");
    }
    // Knowledge expires.
    fp.maps
        .known_add(ip(SRC4), clock::monotonic_ns() - 1_000_000_000)
        .unwrap();
    assert_verdict(
        &fp,
        &to_sip(SRC4, DST4, &req),
        Reason::Pressure,
        "expired knowledge",
    );
    // Not requests: untouched.
    let resp = frames::udp(
        ip("203.0.113.99"),
        ip(DST4),
        5060,
        &frames::sip_response(200, "z9hG4bKx"),
        &Shape::default(),
    );
    assert_verdict(&fp, &resp, Reason::Passed, "a response");
    let ka = to_sip("203.0.113.99", DST4, b"\r\n\r\n");
    assert_verdict(&fp, &ka, Reason::Passed, "a keep-alive");
    // The budget refills: after a second, unknown sources get their share again.
    std::thread::sleep(Duration::from_millis(1100));
    assert_verdict(&fp, &unknown(30), Reason::Passed, "budget refilled");
    // Without a budget, nothing changes.
    let off = program(default_cfg());
    for i in 1..=20 {
        assert_verdict(&off, &unknown(i), Reason::Passed, "no budget");
    }
}

/// Junk behind IPv6 extension headers is not let through for want of ports: the program
/// walks Hop-by-Hop, Routing, Fragment and Destination Options up to
/// `MAX_IPV6_EXT_HEADERS`; a longer chain, or a header it does not walk (AH, Mobility, HIP,
/// Shim6, experimental), is dropped as malformed since its ports cannot be judged.
#[test]
fn ipv6_extension_headers_are_walked() {
    root_only!("ipv6_extension_headers_are_walked");
    use sip_firewall_common::maps::MAX_IPV6_EXT_HEADERS;
    let fp = program(default_cfg());
    let junk = b"junk junk junk junk";
    let req = frames::sip_request("OPTIONS", 9);
    let with = |ext: Vec<(u8, usize)>| Shape {
        ipv6_ext: ext,
        ..Default::default()
    };
    let walked: [(&str, Vec<(u8, usize)>); 6] = [
        ("hop-by-hop", vec![(0, 8)]),
        ("destination options", vec![(60, 8)]),
        ("routing", vec![(43, 24)]),
        ("fragment", vec![(44, 8)]),
        ("long destination options", vec![(60, 256)]),
        (
            "full chain",
            vec![(0, 8), (60, 16), (43, 24), (44, 8), (60, 8)],
        ),
    ];
    let mut passed = 0;
    for (what, ext) in walked {
        let shape = with(ext);
        let (_, r) = run(&fp, &frames::udp(ip(SRC6), ip(DST6), 5060, junk, &shape));
        if r == Reason::Passed {
            passed += 1;
        }
        assert_verdict(
            &fp,
            &frames::udp(ip(SRC6), ip(DST6), 5060, junk, &shape),
            Reason::Malformed,
            &format!("junk behind {what}"),
        );
        assert_verdict(
            &fp,
            &frames::udp(ip(SRC6), ip(DST6), 5060, &req, &shape),
            Reason::Passed,
            &format!("SIP behind {what}"),
        );
        // Other ports are still not ours.
        assert_verdict(
            &fp,
            &frames::udp(ip(SRC6), ip(DST6), 53, junk, &shape),
            Reason::Passed,
            &format!("DNS port behind {what}"),
        );
    }
    eprintln!("junk behind walked extension headers passed: {passed} of 6 (want 0)");
    // At the bound: walked. One more: malformed whatever follows.
    let at_bound = with(vec![(60, 8); MAX_IPV6_EXT_HEADERS]);
    assert_verdict(
        &fp,
        &frames::udp(ip(SRC6), ip(DST6), 5060, &req, &at_bound),
        Reason::Passed,
        "chain at the bound",
    );
    let too_long = with(vec![(60, 8); MAX_IPV6_EXT_HEADERS + 1]);
    for (what, payload) in [("SIP", &req[..]), ("junk", &junk[..])] {
        assert_verdict(
            &fp,
            &frames::udp(ip(SRC6), ip(DST6), 5060, payload, &too_long),
            Reason::Malformed,
            &format!("{what} behind a chain over the bound"),
        );
    }
    // Headers we do not walk: their ports cannot be judged.
    for kind in [51u8, 135, 139, 140, 253, 254] {
        assert_verdict(
            &fp,
            &frames::udp(ip(SRC6), ip(DST6), 5060, junk, &with(vec![(kind, 16)])),
            Reason::Malformed,
            &format!("extension header {kind}"),
        );
    }
    // Upper layers other than UDP/TCP pass, behind extension headers as without them; a later
    // fragment behind a Hop-by-Hop header carries no ports.
    assert_verdict(
        &fp,
        &frames::icmp_echo(ip(SRC6), ip(DST6)),
        Reason::Passed,
        "icmpv6",
    );
    let later = Shape {
        ipv6_ext: vec![(0, 8)],
        ipv6_frag_header: true,
        frag_offset: 185,
        ..Default::default()
    };
    assert_verdict(
        &fp,
        &frames::udp(ip(SRC6), ip(DST6), 5060, junk, &later),
        Reason::Passed,
        "later fragment behind hop-by-hop",
    );
    // A chain cut short by the end of the frame: the kernel drops it; not ours.
    let cut = frames::udp(ip(SRC6), ip(DST6), 5060, junk, &with(vec![(60, 64)]));
    assert_verdict(&fp, &cut[..14 + 40 + 30], Reason::Passed, "truncated chain");
    // TCP behind a Hop-by-Hop header passes, as TCP does (user space frames streams).
    assert_verdict(
        &fp,
        &frames::tcp_syn(ip(SRC6), ip(DST6), 5060, &with(vec![(0, 8)])),
        Reason::Connection,
        "tcp behind hop-by-hop",
    );
}

/// Each ban entry carries its own scope. With `ban_scope = "all"` (manual bans), a
/// learned ban (`[bans] learned_scope = "sip-ports"`) still blocks only the SIP ports, and
/// the program's own flood bans take the learned scope from the config flag.
#[test]
fn ban_scope_per_entry() {
    root_only!("ban_scope_per_entry");
    let mut fp = program(default_cfg());
    let learned = "192.0.2.20";
    fp.maps
        .ban_scoped(
            ip(learned),
            u64::MAX,
            BanReason::Scanner as u32,
            BanScope::SipPorts,
        )
        .unwrap();
    fp.maps
        .ban(ip(SRC4), u64::MAX, BanReason::Manual as u32)
        .unwrap();
    let req = frames::sip_request("OPTIONS", 21);
    for (src, ssh) in [(learned, Reason::Passed), (SRC4, Reason::Banned)] {
        assert_verdict(
            &fp,
            &to_sip(src, DST4, &req),
            Reason::Banned,
            &format!("{src} sip port"),
        );
        assert_verdict(
            &fp,
            &frames::tcp_syn(ip(src), ip(DST4), 5060, &Shape::default()),
            Reason::Banned,
            &format!("{src} tcp sip port"),
        );
        assert_verdict(
            &fp,
            &frames::tcp_syn(ip(src), ip(DST4), 22, &Shape::default()),
            ssh,
            &format!("{src} ssh"),
        );
    }

    // Flood bans: scoped to the SIP ports with the flag.
    let mut fp = program(XdpConfig {
        flags: XdpConfig::LEARNED_SIP_PORTS,
        ..default_cfg().with_flood(1, 2, 3_600_000_000_000)
    });
    let _ring = fp.take_ban_events();
    let f = to_sip(SRC4, DST4, &req);
    assert_verdict(&fp, &f, Reason::Passed, "1");
    assert_verdict(&fp, &f, Reason::Passed, "2");
    assert_verdict(&fp, &f, Reason::Flood, "over the burst");
    let bans = fp.maps.bans();
    assert_eq!(bans.len(), 1);
    assert_eq!(bans[0].1.scope, BanScope::SipPorts as u32);
    assert_verdict(&fp, &f, Reason::Banned, "banned on the SIP port");
    assert_verdict(
        &fp,
        &frames::tcp_syn(ip(SRC4), ip(DST4), 22, &Shape::default()),
        Reason::Passed,
        "ssh of a flood-banned source",
    );
}

/// New connections to the SIP stream ports (TCP `sip_ports`, the TLS and WebSocket
/// listeners) are counted, and their SYNs spend the source's flood budget: a SYN flood from
/// one source is banned in XDP; a known source is throttled; segments of open connections,
/// other ports and UDP to a stream-only port are not judged.
#[test]
fn syns_to_stream_ports_are_counted_and_flood_limited() {
    root_only!("syns_to_stream_ports_are_counted_and_flood_limited");
    // 1 packet/s sustained, bursts of 3: the 4th SYN in a row is a flood.
    let mut fp = {
        let mut fp = FastPath::load().expect("load the XDP program");
        fp.maps
            .set_config(
                &default_cfg()
                    .with_flood(1, 3, 3_600_000_000_000)
                    .with_known_flood(1, 3),
            )
            .unwrap();
        // 5060 is SIP over UDP and TCP; 5061 (TLS) and 8443 (WebSocket) are stream ports.
        fp.maps.set_ports(&[5060], &[5061, 8443]).unwrap();
        fp
    };
    let syn = |src: &str, port| frames::tcp_syn(ip(src), ip(DST4), port, &Shape::default());
    let mut ack = syn(SRC4, 5061);
    // The flags byte (13 of the TCP header, after 14 + 20 bytes): ACK, no SYN.
    ack[14 + 20 + 13] = 0x10;
    for (i, port) in [5061, 8443, 5060].into_iter().enumerate() {
        assert_verdict(
            &fp,
            &syn(SRC4, port),
            Reason::Connection,
            &format!("syn {i} to {port}"),
        );
    }
    assert_verdict(
        &fp,
        &ack,
        Reason::Passed,
        "a segment of an open connection costs nothing",
    );
    assert_verdict(&fp, &syn(SRC4, 5061), Reason::Flood, "the 4th SYN in a row");
    assert_verdict(
        &fp,
        &syn(SRC4, 5061),
        Reason::Banned,
        "banned after the SYN flood",
    );
    let bans = fp.maps.bans();
    assert_eq!(bans.len(), 1, "{bans:?}");
    assert_eq!(bans[0].1.reason, BanReason::Flood as u32);
    // Not stream ports: not judged.
    let other = "192.0.2.20";
    for _ in 0..6 {
        assert_verdict(&fp, &syn(other, 22), Reason::Passed, "ssh");
    }
    let req = frames::sip_request("OPTIONS", 1);
    assert_verdict(
        &fp,
        &frames::udp(ip(other), ip(DST4), 5061, b"junk", &Shape::default()),
        Reason::Passed,
        "UDP to a stream-only port is not SIP",
    );
    assert_verdict(
        &fp,
        &to_sip(other, DST4, &req),
        Reason::Passed,
        "UDP SIP still judged on 5060",
    );
    // A known source is throttled over its budget, never banned.
    let known = "192.0.2.30";
    fp.maps
        .known_add(ip(known), clock::monotonic_ns() + 3_600_000_000_000)
        .unwrap();
    for i in 0..3 {
        assert_verdict(
            &fp,
            &syn(known, 5061),
            Reason::Connection,
            &format!("known syn {i}"),
        );
    }
    assert_verdict(
        &fp,
        &syn(known, 5061),
        Reason::Throttled,
        "known over its budget",
    );
    assert_eq!(fp.maps.bans().len(), 1, "the known source is not banned");
}

/// Trust tiers: a known source (per IPv4 address, per IPv6 /64) has its own flood
/// budget and is throttled over it, never banned; an unknown one keeps the flood limit and
/// its ban.
#[test]
fn known_sources_are_throttled_not_banned() {
    root_only!("known_sources_are_throttled_not_banned");
    // Unknown: 1/s, bursts of 3. Known: 1/s, bursts of 6.
    let mut fp = program(
        default_cfg()
            .with_flood(1, 3, 3_600_000_000_000)
            .with_known_flood(1, 6),
    );
    let _ring = fp.take_ban_events();
    let later = clock::expiry_after(Some(Duration::from_secs(60)));
    fp.maps.known_add(ip(SRC4), later).unwrap();
    // Known by its /64: a privacy address of the same subscriber.
    fp.maps.known_add(ip("2001:db8:1::1"), later).unwrap();
    let req = frames::sip_request("REGISTER", 31);
    for (src, dst) in [(SRC4, DST4), ("2001:db8:1::abcd", DST6)] {
        let f = to_sip(src, dst, &req);
        for i in 0..6 {
            assert_verdict(&fp, &f, Reason::Passed, &format!("{src} known burst {i}"));
        }
        for _ in 0..5 {
            assert_verdict(
                &fp,
                &f,
                Reason::Throttled,
                &format!("{src} over its budget"),
            );
        }
    }
    assert!(fp.maps.bans().is_empty(), "known sources are never banned");
    // An unknown source: the flood limit and a ban, as before.
    let f = to_sip("192.0.2.99", DST4, &req);
    for i in 0..3 {
        assert_verdict(&fp, &f, Reason::Passed, &format!("unknown burst {i}"));
    }
    assert_verdict(&fp, &f, Reason::Flood, "unknown over the limit");
    assert_verdict(&fp, &f, Reason::Banned, "unknown banned");
    // Demoted (its knowledge removed): the ordinary limit again.
    fp.maps.known_remove(ip(SRC4)).unwrap();
    let f = to_sip(SRC4, DST4, &req);
    assert_verdict(
        &fp,
        &f,
        Reason::Flood,
        "demoted source over the flood limit",
    );
}

#[test]
fn maps_swept_empty_are_looked_up_again_once_filled() {
    root_only!("maps_swept_empty_are_looked_up_again_once_filled");
    // Unknown: 1/s, bursts of 3. Known: 1/s, bursts of 6.
    let mut fp = program(
        default_cfg()
            .with_flood(1, 3, 3_600_000_000_000)
            .with_known_flood(1, 6),
    );
    let _ring = fp.take_ban_events();
    let mut janitor = fp.maps.janitor().unwrap();
    let sweep = |j: &mut sip_firewall::xdp::maps::MapJanitor| j.sweep(clock::monotonic_ns());
    let later = clock::expiry_after(Some(Duration::from_secs(60)));
    let req = frames::sip_request("OPTIONS", 41);
    let f4 = to_sip(SRC4, DST4, &req);
    let f6 = to_sip(SRC6, DST6, &req);

    // Every map swept empty: the program skips them, and sees each one filled again.
    sweep(&mut janitor);
    fp.maps
        .ban(ip(SRC4), later, BanReason::Manual as u32)
        .unwrap();
    assert_verdict(&fp, &f4, Reason::Banned, "manual ban after an empty sweep");
    assert!(fp.maps.unban(ip(SRC4)).unwrap());
    sweep(&mut janitor);
    assert_verdict(&fp, &f4, Reason::Passed, "unbanned, maps swept empty");
    fp.maps
        .ban_learned(ip(SRC6), later, BanReason::Scanner as u32, BanScope::All)
        .unwrap();
    assert_verdict(&fp, &f6, Reason::Banned, "learned ban after an empty sweep");
    assert!(fp.maps.unban(ip(SRC6)).unwrap());
    // An expired ban swept away: nothing left to look up.
    fp.maps
        .ban(ip(SRC6), clock::monotonic_ns(), BanReason::Manual as u32)
        .unwrap();
    let fills = sweep(&mut janitor);
    assert!(
        fills
            .iter()
            .all(|f| f.map == "SIPFW_FLOOD" || f.entries == 0),
        "{fills:?}"
    );
    assert_verdict(&fp, &f6, Reason::Passed, "expired ban swept");

    // The program's own flood ban, with the learned bans swept empty.
    let flooder = to_sip("192.0.2.99", DST4, &req);
    for i in 0..3 {
        assert_verdict(&fp, &flooder, Reason::Passed, &format!("burst {i}"));
    }
    assert_verdict(&fp, &flooder, Reason::Flood, "over the limit");
    assert_verdict(
        &fp,
        &flooder,
        Reason::Banned,
        "the program's ban is looked up",
    );
    // Swept while it lasts: still looked up.
    sweep(&mut janitor);
    assert_verdict(&fp, &flooder, Reason::Banned, "its ban survives a sweep");

    // Known sources after an empty sweep: their own budget, throttled, not flood-banned.
    let src = "192.0.2.77";
    fp.maps.known_add(ip(src), later).unwrap();
    let known = to_sip(src, DST4, &req);
    for i in 0..6 {
        assert_verdict(&fp, &known, Reason::Passed, &format!("known burst {i}"));
    }
    assert_verdict(&fp, &known, Reason::Throttled, "known over its budget");
    assert!(fp.maps.known_remove(ip(src)).unwrap());
    sweep(&mut janitor);
    assert_verdict(
        &fp,
        &known,
        Reason::Flood,
        "no longer known, maps swept empty",
    );
}

#[test]
fn cached_manual_bans_follow_the_map() {
    root_only!("cached_manual_bans_follow_the_map");
    let mut fp = program(default_cfg());
    let later = clock::expiry_after(Some(Duration::from_secs(60)));
    let sip = to_sip(SRC4, DST4, &frames::sip_request("OPTIONS", 51));
    let dns = frames::udp(ip(SRC4), ip(DST4), 53, b"x", &Shape::default());
    // Looked up, then from this CPU's copy: the same verdict each time.
    fp.maps
        .ban(ip(SRC4), later, BanReason::Manual as u32)
        .unwrap();
    for i in 0..3 {
        assert_verdict(
            &fp,
            &dns,
            Reason::Banned,
            &format!("ban on all traffic {i}"),
        );
    }
    // Replaced by a ban of the SIP ports only: the copy is not trusted any more.
    fp.maps
        .ban_scoped(
            ip(SRC4),
            later,
            BanReason::Manual as u32,
            BanScope::SipPorts,
        )
        .unwrap();
    assert_verdict(&fp, &dns, Reason::Passed, "ban narrowed to the SIP ports");
    assert_verdict(&fp, &sip, Reason::Banned, "SIP still banned");
    assert_verdict(&fp, &sip, Reason::Banned, "SIP still banned, from the copy");
    // Lifted: passes at once, without a sweep.
    assert!(fp.maps.unban(ip(SRC4)).unwrap());
    assert_verdict(&fp, &sip, Reason::Passed, "unbanned");
    // Another source sharing nothing: its own entry; expiry ends the copy's ban too.
    let soon = clock::expiry_after(Some(Duration::from_millis(300)));
    fp.maps
        .ban(ip(SRC6), soon, BanReason::Manual as u32)
        .unwrap();
    let sip6 = to_sip(SRC6, DST6, &frames::sip_request("OPTIONS", 52));
    assert_verdict(&fp, &sip6, Reason::Banned, "short ban");
    assert_verdict(&fp, &sip6, Reason::Banned, "short ban, from the copy");
    std::thread::sleep(Duration::from_millis(400));
    assert_verdict(&fp, &sip6, Reason::Passed, "short ban expired");
}

/// Branches of every length up to past the longest hashed (the kernel folds them in words,
/// several calls of its scan for the long ones): open, the response passes; closed, it is a
/// stray, unless the branch is too long to be decided here (user space checks it).
#[test]
fn branches_of_every_length_get_the_reference_key() {
    root_only!("branches_of_every_length_get_the_reference_key");
    use sip_firewall_common::branch::{MAX_BRANCH_LEN, TopBranch, top_branch};
    let mut fp = program(XdpConfig {
        flags: XdpConfig::STRAY_CHECK,
        via_scan: 1500,
        ..default_cfg()
    });
    let peer = Some(std::net::SocketAddr::new(ip(SRC4), 5062));
    let far = clock::expiry_after(Some(Duration::from_secs(60)));
    let chars = b"z9hG4bK0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    for len in 1..=MAX_BRANCH_LEN + 2 {
        let branch: String = (0..len)
            .map(|i| chars[(i * 7) % chars.len()] as char)
            .collect();
        let (payload, frame) = response_frame(&format!(
            "Via: SIP/2.0/UDP 198.51.100.1:5060;branch={branch};rport\r\n"
        ));
        let decided = matches!(top_branch(&payload, 1500), TopBranch::Key(_));
        assert_eq!(decided, len < MAX_BRANCH_LEN, "length {len}");
        fp.maps.transaction_open(&branch, peer, far).unwrap();
        assert_verdict(&fp, &frame, Reason::Passed, &format!("length {len}, open"));
        assert!(fp.maps.transaction_close(&branch, peer).unwrap());
        let closed = if decided {
            Reason::StrayReply
        } else {
            Reason::Passed
        };
        assert_verdict(&fp, &frame, closed, &format!("length {len}, closed"));
    }
}

/// With no transaction open a found branch is a stray without a lookup; the proxy's own
/// handle on the map sets the flag again after the janitor cleared it.
#[test]
fn transactions_swept_empty_are_looked_up_again_once_opened() {
    root_only!("transactions_swept_empty_are_looked_up_again_once_opened");
    let mut fp = program(XdpConfig {
        flags: XdpConfig::STRAY_CHECK,
        via_scan: 1500,
        ..default_cfg()
    });
    let mut keys = fp.maps.transaction_keys().unwrap();
    let mut janitor = fp.maps.janitor().unwrap();
    let peer = Some(std::net::SocketAddr::new(ip(SRC4), 5062));
    let far = clock::expiry_after(Some(Duration::from_secs(60)));
    let ours = "z9hG4bK-swept-1";
    let (_, frame) = response_frame(&format!(
        "Via: SIP/2.0/UDP 198.51.100.1:5060;branch={ours}\r\n"
    ));
    assert_verdict(&fp, &frame, Reason::StrayReply, "nothing open");
    for round in 0..3 {
        keys.open(ours, peer, far).unwrap();
        assert_verdict(&fp, &frame, Reason::Passed, &format!("open, round {round}"));
        // Opened again through the same handle before any sweep: still looked up.
        keys.open(ours, peer, far).unwrap();
        assert_verdict(
            &fp,
            &frame,
            Reason::Passed,
            &format!("reopened, round {round}"),
        );
        // Swept while open: the flag stays.
        janitor.sweep(clock::monotonic_ns());
        assert_verdict(
            &fp,
            &frame,
            Reason::Passed,
            &format!("swept open, round {round}"),
        );
        // Closed and swept empty: the flag is cleared, the next open sets it again.
        assert!(fp.maps.transaction_close(ours, peer).unwrap());
        janitor.sweep(clock::monotonic_ns());
        assert_verdict(
            &fp,
            &frame,
            Reason::StrayReply,
            &format!("closed, round {round}"),
        );
    }
}
