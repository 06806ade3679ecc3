//! The ban map must not fill. Rotating IPv6 addresses of one /64 would make a ban per packet
//! if bans were kept per /128, until every later ban (the CLI, auth failures) failed with
//! "Argument list too long". Flood state and learned bans are kept per prefix, learned bans
//! live in an LRU map of their own, and manual bans in a map learned ones never evict.

use std::{
    net::{IpAddr, Ipv6Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use sip_firewall_tests::{
    domain::{config, forged_register},
    edge::edge,
    frames::{self, Shape},
    metrics::Metrics,
    netns::{in_ns, inject},
    said,
};

/// Frames from rotating addresses of one /64.
const FROM_ONE_64: u64 = 280_000;
/// Spoofed IPv4 sources, each well over the flood burst (100, at 50/s) so that each is
/// banned.
const SPOOFED_V4: u32 = 200;
const PER_V4: u32 = 130;

#[test]
fn ban_map_cannot_be_exhausted() {
    let Some(mut e) = edge("ban_map_cannot_be_exhausted", "exh", &config(""), true) else {
        return;
    };
    let (pair, d) = (&e.pair, &e.dirs);
    let b6 = IpAddr::V6(pair.b6);
    let b4 = IpAddr::V4(pair.b4);
    let req = frames::sip_request("OPTIONS", 7);

    let t0 = Instant::now();
    let req6 = req.clone();
    let v6 = (0..FROM_ONE_64).map(move |i| {
        // 2001:db8:66::/64, a different interface identifier per packet.
        let iid = i.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        let mut o = Ipv6Addr::new(0x2001, 0xdb8, 0x66, 0, 0, 0, 0, 0).octets();
        o[8..].copy_from_slice(&iid.to_be_bytes());
        let mut f = frames::udp(IpAddr::from(o), b6, 5060, &req6, &Shape::default());
        frames::set_pair_macs(&mut f);
        f
    });
    let v4 = (0..SPOOFED_V4 * PER_V4).map(move |i| {
        let n = i % SPOOFED_V4;
        let src = IpAddr::from([203, 0, 113 + (n / 250) as u8, (n % 250) as u8 + 1]);
        let mut f = frames::udp(src, b4, 5060, &req, &Shape::default());
        frames::set_pair_macs(&mut f);
        frames::set_ipv4_checksum(&mut f);
        f
    });
    let sent = inject(&pair.ns_a, pair.if_a, v6.chain(v4)).expect("inject from namespace a");
    let took = t0.elapsed();

    // An operator's ban still goes in.
    let o = d.cli(&[
        "ban",
        "add",
        "192.0.2.250",
        "--for",
        "1h",
        "--reason",
        "manual after the flood",
    ]);
    let cli = said(&o);
    assert!(o.status.success(), "ban add after the flood: {cli}");

    // A password guesser is still banned: five forged logins from a new address.
    let guesser = pair.add_a4(7).expect("another address in namespace a");
    let to = SocketAddr::new(b4, 5060);
    in_ns(&pair.ns_a, move || {
        let s = UdpSocket::bind(SocketAddr::new(IpAddr::V4(guesser), 5090))?;
        for n in 1..=6 {
            let m = forged_register(s.local_addr()?, n);
            s.send_to(m.as_bytes(), to)?;
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    })
    .expect("guesses from namespace a");
    let reason = d.wait_ban(&guesser.to_string(), Duration::from_secs(5));
    assert!(
        reason
            .as_deref()
            .is_some_and(|r| r.starts_with("auth_failure")),
        "the guesser is banned after the flood: {reason:?}"
    );

    // The map-fill metric tells the story (the janitor sweeps every 10 s).
    let t1 = Instant::now();
    let m = loop {
        let m = Metrics::scrape(pair);
        if m.get("sipfw_map_entries{map=\"SIPFW_LBANS\"}") >= f64::from(SPOOFED_V4) + 1.0
            || t1.elapsed() > Duration::from_secs(25)
        {
            break m;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let lbans = m.get("sipfw_map_entries{map=\"SIPFW_LBANS\"}");
    let bans = m.get("sipfw_map_entries{map=\"SIPFW_BANS\"}");
    let flood = m.get("sipfw_map_entries{map=\"SIPFW_FLOOD\"}");
    eprintln!(
        "sent {sent} frames in {took:?}; XDP: flood {}, banned {}, passed {}; map entries: \
         learned bans {lbans} of {}, manual bans {bans} of {}, flood {flood} of {}",
        m.xdp("flood"),
        m.xdp("banned"),
        m.xdp("passed"),
        m.get("sipfw_map_capacity{map=\"SIPFW_LBANS\"}"),
        m.get("sipfw_map_capacity{map=\"SIPFW_BANS\"}"),
        m.get("sipfw_map_capacity{map=\"SIPFW_FLOOD\"}"),
    );
    assert_eq!(sent, FROM_ONE_64 + u64::from(SPOOFED_V4 * PER_V4));
    // One ban for the /64, one per spoofed IPv4 source over its burst, the guesser's.
    assert_eq!(
        lbans,
        f64::from(SPOOFED_V4) + 2.0,
        "learned bans per prefix"
    );
    assert_eq!(bans, 1.0, "the manual ban, in its own map");
    assert!(m.get("sipfw_map_capacity{map=\"SIPFW_LBANS\"}") > 0.0);
    e.stop_clean();
}
