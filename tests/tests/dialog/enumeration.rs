//! User enumeration. An outsider INVITEs a user who does not exist and a subscriber who is
//! not registered: different answers (404 against 480) would tell who exists, which is what
//! svwar looks for; both get the same one (`[proxy] unavailable`, 480 by default).

use std::time::Duration;

use sip_firewall_tests::{domain::config, edge::edge, ua::msg::peer_invite};

use crate::call::{receive, socket};

#[test]
fn unknown_and_unregistered_users_look_the_same() {
    let test = "unknown_and_unregistered_users_look_the_same";
    let Some(mut e) = edge(test, "en", &config(""), false) else {
        return;
    };
    let proxy = e.sip();
    let probe = socket(&e.pair, "198.51.100.1:5091".to_string());
    let me = probe.local_addr().expect("address");
    let mut finals = Vec::new();
    // bob exists (not registered here); nobody does not.
    for (n, user) in ["bob", "nobody"].iter().enumerate() {
        probe
            .send_to(
                peer_invite(&format!("sip:{user}@example.com"), me, &format!("enum{n}")).as_bytes(),
                proxy,
            )
            .expect("send INVITE");
        let got = receive(&probe, Duration::from_secs(2), |m| {
            m.starts_with("SIP/2.0") && !m.starts_with("SIP/2.0 1")
        });
        finals.push(
            got.iter()
                .filter_map(|m| m.lines().next())
                .find(|l| !l.starts_with("SIP/2.0 1"))
                .unwrap_or("nothing")
                .to_string(),
        );
    }
    let (code, log) = e.stop();
    eprintln!(
        "{test}: bob (unregistered) {:?}, nobody (unknown) {:?}",
        finals[0], finals[1]
    );
    assert_eq!(finals[0], finals[1], "the same answer for both");
    assert_eq!(finals[0], "SIP/2.0 480 Temporarily Unavailable");
    assert_eq!(code, 0, "{log}");
}
