//! Forged final responses for open branches. Eve (an outsider) calls bob, a registered
//! subscriber whose phone is a raw socket here. While it rings, a forger on another address
//! sprays `603 Decline` at the edge for the very branch the edge sent bob's phone (as
//! someone who saw it would), and for the branches a counter would give next
//! (`z9hG4bKsfw{salt}.{n}`). Then bob answers 200. A forged 603 taken for the open branch
//! would fail the call before bob's 200; responses are taken only from where the request
//! went: Eve gets bob's 200, and the forgeries are counted as strays from the wrong source.

use std::time::Duration;

use crate::call::{answer, bob_and_eve, eve_invite, receive, socket};
use sip_firewall_tests::{domain::config, edge::sipp_edge, metrics::Metrics};

/// Eve (198.51.100.5) and the forger (.6).
const EVE: &str = "198.51.100.5";
const FORGER: &str = "198.51.100.6";
const BOB_PORT: u16 = 5072;

#[test]
fn forged_603_for_an_open_branch_fails_no_call() {
    let test = "forged_603_for_an_open_branch_fails_no_call";
    let Some(mut e) = sipp_edge(test, "fr", &config(""), false) else {
        return;
    };
    let (r, bob, eve) = bob_and_eve(&e, BOB_PORT, EVE);
    let (pair, proxy) = (&e.pair, e.sip());
    pair.add_a4(6).unwrap();
    let forger = socket(pair, format!("{FORGER}:5060"));

    let invite = eve_invite(EVE, "fr-call-1", "fr1", "");
    eve.send_to(invite.as_bytes(), proxy).expect("send INVITE");
    let at_bob = receive(&bob, Duration::from_secs(3), |m| m.starts_with("INVITE"));
    let forwarded = at_bob.iter().find(|m| m.starts_with("INVITE")).cloned();
    let before = Metrics::scrape(pair);
    let mut forged = 0;
    let mut at_eve = Vec::new();
    if let Some(inv) = &forwarded {
        bob.send_to(answer(inv, "180 Ringing", BOB_PORT).as_bytes(), proxy)
            .expect("send 180");
        let ours = inv
            .split("branch=")
            .nth(1)
            .and_then(|b| b.split([';', '\r']).next())
            .unwrap_or("")
            .to_string();
        // The open branch, then what a counter would give next.
        let mut branches = vec![ours.clone()];
        if let Some((salt, n)) = ours.rsplit_once('.')
            && let Ok(n) = u64::from_str_radix(n, 16)
        {
            branches.extend((1..=10).map(|i| format!("{salt}.{:x}", n + i)));
        }
        for b in &branches {
            let fake = answer(inv, "603 Decline", BOB_PORT).replace(&ours, b);
            forger.send_to(fake.as_bytes(), proxy).expect("send 603");
            forged += 1;
        }
        std::thread::sleep(Duration::from_millis(300));
        bob.send_to(answer(inv, "200 OK", BOB_PORT).as_bytes(), proxy)
            .expect("send 200");
        at_eve = receive(&eve, Duration::from_secs(2), |m| {
            m.starts_with("SIP/2.0 200") || m.starts_with("SIP/2.0 603")
        });
    }
    let after = Metrics::scrape(pair);
    let (code, log) = e.stop();

    r.assert_ok("bob registers");
    assert!(forwarded.is_some(), "the INVITE reached bob: {at_bob:?}");
    let finals: Vec<&str> = at_eve
        .iter()
        .filter_map(|m| m.lines().next())
        .filter(|l| !l.starts_with("SIP/2.0 1"))
        .collect();
    let wrong = "sipfw_proxy_reply_wrong_source_total";
    eprintln!(
        "{test}: forged {forged}; Eve's finals {finals:?}; wrong source +{}, strays +{}",
        after.get(wrong) - before.get(wrong),
        after.get("sipfw_proxy_stray_responses_total")
            - before.get("sipfw_proxy_stray_responses_total")
    );
    assert_eq!(
        finals,
        vec!["SIP/2.0 200 OK"],
        "the call is answered, not declined"
    );
    assert_eq!(
        after.get(wrong) - before.get(wrong),
        1.0,
        "the open branch's forgery"
    );
    assert_eq!(
        after.get("sipfw_proxy_stray_responses_total")
            - before.get("sipfw_proxy_stray_responses_total"),
        forged as f64,
        "every forgery dropped as a stray"
    );
    assert_eq!(code, 0, "{log}");
}
