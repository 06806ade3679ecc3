//! The XDP program's own cost per kind of packet, from `BPF_PROG_TEST_RUN` (kernel timing of
//! a million runs, harness included): `cargo run --release -p sip-firewall-tests --example
//! xdp_costs` (as root). An argument keeps only the cases whose name contains it (to profile
//! one path with `perf record`).

use aya::programs::{TestRun, TestRunOptions};
use sip_firewall::xdp::FastPath;
use sip_firewall_common::{BanReason, BanScope, XdpConfig};
use sip_firewall_tests::frames::{self, Shape};

fn main() -> anyhow::Result<()> {
    let mut fp = FastPath::load()?;
    let cfg = XdpConfig {
        max_payload: 16384,
        ban_scope: BanScope::All as u32,
        flags: XdpConfig::STRAY_CHECK,
        via_scan: 1500,
        ..Default::default()
    }
    // Limits so generous that a million runs stay under them.
    .with_flood(1_000_000_000, 1_000_000_000, 1)
    .with_pressure_budget(0);
    fp.maps.set_config(&cfg)?;
    fp.maps.set_sip_ports(&[5060])?;
    let src = "192.0.2.1".parse()?;
    let dst = "198.51.100.1".parse()?;
    let udp = |p: &[u8]| frames::udp(src, dst, 5060, p, &Shape::default());
    let mut invite_sdp = frames::sip_request("INVITE", 1);
    invite_sdp.truncate(invite_sdp.len() - 4);
    invite_sdp.extend_from_slice(b"\r\nContent-Type: application/sdp\r\n\r\n");
    invite_sdp.extend_from_slice(&[b'v'; 600]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("ARP (parse only)", frames::arp()),
        (
            "UDP to another port",
            frames::udp(src, dst, 53, b"x", &Shape::default()),
        ),
        ("CRLF keep-alive", udp(b"\r\n\r\n")),
        ("STUN Binding request", udp(&frames::stun_binding())),
        ("junk (malformed)", udp(b"GET / HTTP/1.1\r\n\r\n")),
        ("OPTIONS request", udp(&frames::sip_request("OPTIONS", 1))),
        ("INVITE with 600-byte body", udp(&invite_sdp)),
        (
            "200 OK, stray",
            udp(&frames::sip_response(200, "z9hG4bKnotours")),
        ),
    ];
    let run = |fp: &FastPath, f: &[u8]| -> anyhow::Result<u128> {
        let mut best = u128::MAX;
        for _ in 0..3 {
            let r = fp.program().test_run(TestRunOptions {
                data_in: Some(f),
                repeat: 1_000_000,
                ..Default::default()
            })?;
            best = best.min(r.duration.as_nanos());
        }
        Ok(best)
    };
    let only = std::env::args().nth(1);
    let wanted = |name: &str| only.as_deref().is_none_or(|o| name.contains(o));
    for (name, f) in &cases {
        if !wanted(name) {
            continue;
        }
        println!("{name:<28} {:>6} ns/pkt", run(&fp, f)?);
    }
    if !wanted("banned source") {
        return Ok(());
    }
    fp.maps.ban(src, u64::MAX, BanReason::Manual as u32)?;
    println!(
        "{:<28} {:>6} ns/pkt",
        "banned source",
        run(&fp, &cases[4].1)?
    );
    Ok(())
}
