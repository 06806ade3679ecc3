//! User enumeration. An outsider INVITEs a user who does not exist and a subscriber who is
//! not registered: on main the first got 404 and the second 480, which told who exists (what
//! svwar looks for). Now both get the same answer (`[proxy] unavailable`, 480 by default).

use std::{net::SocketAddr, time::Duration};

use sip_firewall_tests::{
    daemon::{DaemonDirs, stop},
    netns::Pair,
    require_root,
};

use crate::stamp_replay::{receive, socket};
use crate::support::{config, one_at_a_time};

fn invite(user: &str, n: usize) -> String {
    format!(
        "INVITE sip:{user}@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 198.51.100.1:5091;branch=z9hG4bKenum{n};rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:probe@evil.example>;tag=p{n}\r\nTo: <sip:{user}@example.com>\r\n\
         Call-ID: enum-{n}\r\nCSeq: 1 INVITE\r\nContact: <sip:probe@198.51.100.1:5091>\r\nContent-Length: 0\r\n\r\n"
    )
}

#[test]
fn unknown_and_unregistered_users_look_the_same() {
    let test = "unknown_and_unregistered_users_look_the_same";
    if !require_root(test) {
        return;
    }
    let _turn = one_at_a_time();
    let pair = Pair::new("en").unwrap();
    let d = DaemonDirs::new("en", &config(""));
    let daemon = d.start(&pair, &["--xdp-mode", "off"]);
    let proxy = SocketAddr::new(pair.b(false), 5060);
    let probe = socket(&pair, "198.51.100.1:5091".to_string());
    let mut finals = Vec::new();
    // bob exists (not registered here); nobody does not.
    for (n, user) in ["bob", "nobody"].iter().enumerate() {
        probe
            .send_to(invite(user, n).as_bytes(), proxy)
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
    let (code, log) = stop(daemon);
    eprintln!(
        "{test}: bob (unregistered) {:?}, nobody (unknown) {:?}",
        finals[0], finals[1]
    );
    assert_eq!(finals[0], finals[1], "the same answer for both");
    assert_eq!(finals[0], "SIP/2.0 480 Temporarily Unavailable");
    assert_eq!(code, 0, "{log}");
}
