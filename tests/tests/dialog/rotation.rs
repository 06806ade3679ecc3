//! Rolling `[auth] secret` keeps the calls under way. Eve calls bob (a registered
//! subscriber, his phone a raw socket here) on an edge whose secret is A; bob answers, and
//! Eve holds our Record-Route with its stamp. The edge restarts with the same secret: Eve's
//! INFO reaches bob (a live dialog under the current secret survives a restart). It restarts
//! with `secret = B` and
//! `previous_secrets = [A]`: Eve's BYE still reaches bob, counted in
//! `sipfw_auth_previous_key_total{what="stamp"}`. It restarts again with B alone: an
//! in-dialog request of that call gets 404 (`sipfw_dialog_refused_total{reason="bad_stamp"}`).

use std::time::Duration;

use crate::call::{
    Answered, InDialog, bob_and_eve, eve_calls_bob, eve_invite, in_dialog_to_bob, receive,
};
use sip_firewall_tests::{
    domain::config,
    edge::{Turn, sipp_edge, xdp_args},
    metrics::Metrics,
};

/// Eve, at 198.51.100.7.
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

/// Restart the daemon on the config `text`: what it logged until it stopped.
fn restart(e: &mut Turn, text: &str) -> String {
    let (_, log) = e.stop();
    e.write_config(text);
    e.run(xdp_args(false));
    log
}

#[test]
fn a_call_survives_a_secret_rollover_and_ends_with_the_old_secret() {
    let test = "a_call_survives_a_secret_rollover_and_ends_with_the_old_secret";
    let Some(mut e) = sipp_edge(test, "rot", &with_secrets(SECRET_A, &[]), false) else {
        return;
    };
    // Under secret A: Eve calls bob, bob answers, Eve gets our Record-Route.
    let (r, bob, eve) = bob_and_eve(&e, BOB_PORT, EVE);
    let proxy = e.sip();
    let invite = eve_invite(EVE, CALL_ID, "rot1", "");
    let Answered { at_eve, route, .. } =
        eve_calls_bob(&eve, &bob, proxy, &invite, "200 OK", BOB_PORT);
    let bob_uri = format!("sip:bob@198.51.100.1:{BOB_PORT}");
    let in_dialog = |method, cseq, route| {
        let call = InDialog {
            call_id: CALL_ID,
            uri: &bob_uri,
            route,
            from: EVE,
        };
        call.text(method, cseq, None)
    };

    // Restarted with A: the call's INFO reaches bob under the current secret.
    let log_same = restart(&mut e, &with_secrets(SECRET_A, &[]));
    let mut info_at_bob = None;
    if let Some(route) = &route {
        let info = in_dialog("INFO", 2, route);
        info_at_bob = in_dialog_to_bob(&eve, &bob, proxy, &info, "INFO").0;
    }

    // Restarted with B, A still accepted: Eve's BYE reaches bob.
    let log_a = restart(&mut e, &with_secrets(SECRET_B, &[SECRET_A]));
    let previous = "sipfw_auth_previous_key_total{what=\"stamp\"}";
    let bad = "sipfw_dialog_refused_total{reason=\"bad_stamp\"}";
    let rolled_before = Metrics::scrape(&e.pair);
    let mut bye_at_bob = None;
    let mut eve_got = Vec::new();
    if let Some(route) = &route {
        let bye = in_dialog("BYE", 3, route);
        (bye_at_bob, eve_got) = in_dialog_to_bob(&eve, &bob, proxy, &bye, "BYE");
    }
    let rolled_after = Metrics::scrape(&e.pair);

    // Restarted with B alone: the stamp of A opens no more.
    let log_b = restart(&mut e, &with_secrets(SECRET_B, &[]));
    let dropped_before = Metrics::scrape(&e.pair);
    let mut refused = Vec::new();
    let mut at_bob_after = Vec::new();
    if let Some(route) = &route {
        eve.send_to(in_dialog("INFO", 4, route).as_bytes(), proxy)
            .expect("send INFO");
        refused = receive(&eve, Duration::from_secs(3), |m| m.starts_with("SIP/2.0 4"));
        at_bob_after = receive(&bob, Duration::from_millis(500), |_| false);
    }
    let dropped_after = Metrics::scrape(&e.pair);
    let (code, log_c) = e.stop();

    r.assert_ok("bob registers");
    let route =
        route.unwrap_or_else(|| panic!("Eve got bob's 200 with our Record-Route: {at_eve:?}"));
    eprintln!("{test}: Record-Route {route}");
    let info = info_at_bob.unwrap_or_else(|| {
        panic!("after a restart with the same secret the INFO reached bob\n{log_same}")
    });
    assert!(info.contains(&format!("Call-ID: {CALL_ID}")), "{info}");
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
            .any(|m| m.starts_with("SIP/2.0 404") && m.contains("CSeq: 4 INFO")),
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
