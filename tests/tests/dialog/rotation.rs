//! Rolling `[auth] secret` keeps the calls under way. Eve calls bob (a registered
//! subscriber, his phone a raw socket here) on an edge whose secret is A; bob answers, and
//! Eve holds our Record-Route with its stamp. The edge restarts with `secret = B` and
//! `previous_secrets = [A]`: Eve's BYE still reaches bob, counted in
//! `sipfw_auth_previous_key_total{what="stamp"}`. It restarts again with B alone: an
//! in-dialog request of that call gets 404 (`sipfw_dialog_refused_total{reason="bad_stamp"}`).

use std::{net::SocketAddr, process::Child, time::Duration};

use sip_firewall_tests::{
    daemon::{DaemonDirs, stop},
    netns::Pair,
    require_root,
};

use crate::stamp_replay::{add_address, answer, receive, socket};
use crate::support::{Metrics, config, one_at_a_time, register_bob, sipp_installed};

const EVE: &str = "198.51.100.7";
const BOB_PORT: u16 = 5074;
const SECRET_A: &str = "a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1";
const SECRET_B: &str = "b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2b2";
const CALL_ID: &str = "rot-call-1";

/// The daemon's config with these `[auth]` secrets (`config` ends inside `[auth]`).
fn with_secrets(secret: &str, previous: &[&str]) -> String {
    let previous: Vec<String> = previous.iter().map(|p| format!("\"{p}\"")).collect();
    config(&format!(
        "secret = \"{secret}\"\nprevious_secrets = [{}]\n",
        previous.join(", ")
    ))
}

/// (Re)start the daemon of `d` on the config `text`.
fn restart(d: &DaemonDirs, pair: &Pair, running: Option<Child>, text: &str) -> (Child, String) {
    let log = running.map(|c| stop(c).1).unwrap_or_default();
    std::fs::write(d.dir.path.join("sip-firewall.toml"), text).expect("config");
    (d.start(pair, &["--xdp-mode", "off"]), log)
}

/// An in-dialog request of Eve's call along `route`.
fn in_dialog(method: &str, cseq: u32, route: &str) -> String {
    format!(
        "{method} sip:bob@198.51.100.1:{BOB_PORT} SIP/2.0\r\n\
         Via: SIP/2.0/UDP {EVE}:5090;branch=z9hG4bKrot{cseq};rport\r\nMax-Forwards: 70\r\n\
         Route: {route}\r\nFrom: <sip:eve@evil.example>;tag=eve\r\n\
         To: <sip:bob@example.com>;tag=bobtag\r\nCall-ID: {CALL_ID}\r\nCSeq: {cseq} {method}\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// The 200 of an in-dialog request (its To already carries the tag).
fn ok_for_in_dialog(req: &str) -> String {
    let mut out = "SIP/2.0 200 OK\r\n".to_string();
    for line in req.split("\r\n") {
        let l = line.to_ascii_lowercase();
        if ["via:", "from:", "to:", "call-id:", "cseq:"]
            .iter()
            .any(|p| l.starts_with(p))
        {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Content-Length: 0\r\n\r\n");
    out
}

#[test]
fn a_call_survives_a_secret_rollover_and_ends_with_the_old_secret() {
    let test = "a_call_survives_a_secret_rollover_and_ends_with_the_old_secret";
    if !require_root(test) || !sipp_installed(test) {
        return;
    }
    let _turn = one_at_a_time();
    let pair = Pair::new("rot").unwrap();
    add_address(&pair, EVE);
    let d = DaemonDirs::new("rot", &with_secrets(SECRET_A, &[]));
    let (daemon, _) = restart(&d, &pair, None, &with_secrets(SECRET_A, &[]));
    let dir = d.dir.path.clone();
    let proxy = SocketAddr::new(pair.b(false), 5060);

    // Under secret A: Eve calls bob, bob answers, Eve gets our Record-Route.
    let r = register_bob(&pair, &dir, BOB_PORT);
    let bob = socket(&pair, format!("198.51.100.1:{BOB_PORT}"));
    let eve = socket(&pair, format!("{EVE}:5090"));
    let invite = format!(
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {EVE}:5090;branch=z9hG4bKrot1;rport\r\n\
         Max-Forwards: 70\r\nFrom: <sip:eve@evil.example>;tag=eve\r\nTo: <sip:bob@example.com>\r\n\
         Call-ID: {CALL_ID}\r\nCSeq: 1 INVITE\r\nContact: <sip:eve@{EVE}:5090>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    eve.send_to(invite.as_bytes(), proxy).expect("send INVITE");
    let at_bob = receive(&bob, Duration::from_secs(3), |m| m.starts_with("INVITE"));
    if let Some(inv) = at_bob.iter().find(|m| m.starts_with("INVITE")) {
        bob.send_to(answer(inv, "200 OK").as_bytes(), proxy)
            .expect("send 200");
    }
    let at_eve = receive(&eve, Duration::from_secs(3), |m| {
        m.starts_with("SIP/2.0 200")
    });
    let route = at_eve
        .iter()
        .find(|m| m.starts_with("SIP/2.0 200"))
        .and_then(|m| {
            m.split("\r\n")
                .find_map(|l| l.strip_prefix("Record-Route: ").map(str::to_string))
        });

    // Restarted with B, A still accepted: Eve's BYE reaches bob.
    let (daemon, log_a) = restart(
        &d,
        &pair,
        Some(daemon),
        &with_secrets(SECRET_B, &[SECRET_A]),
    );
    let previous = "sipfw_auth_previous_key_total{what=\"stamp\"}";
    let bad = "sipfw_dialog_refused_total{reason=\"bad_stamp\"}";
    let rolled_before = Metrics::scrape(&pair);
    let mut bye_at_bob = None;
    let mut eve_got = Vec::new();
    if let Some(route) = &route {
        eve.send_to(in_dialog("BYE", 2, route).as_bytes(), proxy)
            .expect("send BYE");
        let got = receive(&bob, Duration::from_secs(3), |m| m.starts_with("BYE"));
        bye_at_bob = got.into_iter().find(|m| m.starts_with("BYE"));
        if let Some(bye) = &bye_at_bob {
            bob.send_to(ok_for_in_dialog(bye).as_bytes(), proxy)
                .expect("send 200 for the BYE");
            eve_got = receive(&eve, Duration::from_secs(3), |m| {
                m.starts_with("SIP/2.0 200")
            });
        }
    }
    let rolled_after = Metrics::scrape(&pair);

    // Restarted with B alone: the stamp of A opens no more.
    let (daemon, log_b) = restart(&d, &pair, Some(daemon), &with_secrets(SECRET_B, &[]));
    let dropped_before = Metrics::scrape(&pair);
    let mut refused = Vec::new();
    let mut at_bob_after = Vec::new();
    if let Some(route) = &route {
        eve.send_to(in_dialog("INFO", 3, route).as_bytes(), proxy)
            .expect("send INFO");
        refused = receive(&eve, Duration::from_secs(3), |m| m.starts_with("SIP/2.0 4"));
        at_bob_after = receive(&bob, Duration::from_millis(500), |_| false);
    }
    let dropped_after = Metrics::scrape(&pair);
    let (code, log_c) = stop(daemon);

    assert!(r.ok, "bob registers: {}\n{}", r.output, r.trace);
    let route =
        route.unwrap_or_else(|| panic!("Eve got bob's 200 with our Record-Route: {at_eve:?}"));
    eprintln!("{test}: Record-Route {route}");
    let bye = bye_at_bob
        .unwrap_or_else(|| panic!("the BYE under the previous secret reached bob\n{log_b}"));
    assert!(bye.contains(&format!("Call-ID: {CALL_ID}")), "{bye}");
    assert!(
        eve_got.iter().any(|m| m.starts_with("SIP/2.0 200")),
        "bob's 200 for the BYE reached Eve: {eve_got:?}"
    );
    assert_eq!(
        rolled_after.get(previous) - rolled_before.get(previous),
        1.0
    );
    assert_eq!(rolled_after.get(bad) - rolled_before.get(bad), 0.0);
    assert!(
        refused
            .iter()
            .any(|m| m.starts_with("SIP/2.0 404") && m.contains("CSeq: 3 INFO")),
        "with A dropped, the call's INFO gets 404: {refused:?}"
    );
    assert!(
        at_bob_after.is_empty(),
        "nothing reached bob: {at_bob_after:?}"
    );
    assert_eq!(dropped_after.get(bad) - dropped_before.get(bad), 1.0);
    assert_eq!(dropped_after.get(previous), 0.0);
    assert_eq!(code, 0, "{log_a}\n{log_b}\n{log_c}");
}
