//! An office behind one NAT must not ban itself. One phone registers from an address; then
//! 300 phones behind that same address re-register at 150/s (a router reboot). Under the
//! plain XDP flood limit (50/s, bursts of 100) the address would be banned for 5 minutes
//! with a fifth of the phones registered; known sources get their own, larger budget and
//! are throttled, never flood-banned.

use sip_firewall_tests::{
    domain::{BOB_PASSWORD, EDGE_AT_B},
    edge::sipp_edge,
    metrics::Metrics,
    sipp::register_bob,
};
use std::time::Duration;

const PHONES: usize = 300;

fn storm_config() -> String {
    let users: Vec<String> = (0..PHONES)
        .map(|i| {
            format!(r#"  {{ user = "phone{i}", domain = "example.com", password = "pw-{i}" }},"#)
        })
        .collect();
    format!(
        r#"{EDGE_AT_B}[auth]
algorithms = ["MD5", "SHA-256"]
users = [
  {{ user = "bob", domain = "example.com", password = "{BOB_PASSWORD}" }},
{}
]
"#,
        users.join("\n")
    )
}

#[test]
fn nat_storm_registers_every_phone() {
    let test = "nat_storm_registers_every_phone";
    let Some(mut e) = sipp_edge(test, "nat", &storm_config(), true) else {
        return;
    };
    let pair = &e.pair;

    // One phone registers: the office's address is known.
    let reg = register_bob(pair, e.dir(), 5070);
    assert!(reg.ok, "the first phone registers: {}", reg.output);

    // The router reboots: 300 phones behind the same address re-register at 150/s.
    let users: Vec<(String, String)> = (0..PHONES)
        .map(|i| (format!("phone{i}"), format!("pw-{i}")))
        .collect();
    let res = e.register_storm(users, 150, Duration::from_secs(30));
    let m = Metrics::scrape(pair);
    let bans_now = e.dirs.bans();
    eprintln!(
        "NAT storm: {} of {PHONES} registered, failed {:?}, unanswered {}, {} requests sent \
         ({} retransmissions); XDP flood {}, throttled {}, banned {}; bans {bans_now:?}",
        res.registered,
        res.failed,
        res.unanswered,
        res.sent,
        res.retransmissions,
        m.xdp("flood"),
        m.xdp("throttled"),
        m.xdp("banned"),
    );
    assert!(bans_now.is_empty(), "nothing banned: {bans_now:?}");
    assert_eq!(res.registered, PHONES, "every phone registers: {res:?}");
    e.stop_clean();
}
