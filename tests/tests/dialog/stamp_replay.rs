//! The Record-Route stamp is not a relay pass. An outsider calls bob (a registered
//! subscriber, SIPp REGISTER with digest); bob's phone copies our Record-Route into its
//! 180 as phones do, so the outsider holds a stamp. With it the outsider sends in-dialog
//! MESSAGEs toward an arbitrary host (a "victim" socket in namespace a): from a third
//! address, and from its own. Relayed, the stamp would make the edge an open relay: the
//! first gets 403 and the second goes to bob's phone, the dialog's other party, and the
//! victim gets nothing. Eve's INVITE also carries P-Asserted-Identity and Remote-Party-ID
//! naming the CEO: they never reach bob's phone (RFC 3325: an outsider asserts nothing).

use std::time::Duration;

use crate::call::{Answered, InDialog, bob_and_eve, eve_calls_bob, eve_invite, receive, socket};
use sip_firewall_tests::{domain::config, edge::sipp_edge, metrics::Metrics};

/// The outsider (caller, 198.51.100.3), a third address it also controls (.4), and the
/// host it aims at.
const EVE: &str = "198.51.100.3";
const THIRD: &str = "198.51.100.4";
const BOB_PORT: u16 = 5070;
const VICTIM_PORT: u16 = 5099;
const CALL_ID: &str = "eve-call-1";

#[test]
fn replayed_stamp_relays_nothing() {
    let test = "replayed_stamp_relays_nothing";
    let Some(mut e) = sipp_edge(test, "rr", &config(""), false) else {
        return;
    };
    let (r, bob, eve) = bob_and_eve(&e, BOB_PORT, EVE);
    let (pair, proxy) = (&e.pair, e.sip());
    pair.add_a4(4).unwrap();
    let victim = socket(pair, format!("198.51.100.1:{VICTIM_PORT}"));
    let third = socket(pair, format!("{THIRD}:5090"));

    // Eve calls bob; bob's phone rings (its 180 carries our Record-Route back to Eve).
    let asserted = "P-Asserted-Identity: <sip:ceo@example.com>\r\n\
                    Remote-Party-ID: <sip:ceo@example.com>\r\n";
    let invite = eve_invite(EVE, CALL_ID, "eve1", asserted);
    let Answered {
        at_bob,
        forwarded,
        at_eve,
        route,
    } = eve_calls_bob(&eve, &bob, proxy, &invite, "180 Ringing", BOB_PORT);

    let before = Metrics::scrape(pair);
    let mut at_victim = Vec::new();
    let mut third_got = Vec::new();
    let mut bob_got = Vec::new();
    if let Some(route) = &route {
        let victim_uri = format!("sip:victim@198.51.100.1:{VICTIM_PORT}");
        let message = |from, cseq| {
            let call = InDialog {
                call_id: CALL_ID,
                uri: &victim_uri,
                route,
                from,
            };
            call.text("MESSAGE", cseq, Some("hello"))
        };
        // From a third address, toward an arbitrary host.
        third
            .send_to(message(THIRD, 2).as_bytes(), proxy)
            .expect("send");
        third_got = receive(&third, Duration::from_secs(1), |m| m.starts_with("SIP/2.0"));
        // From the caller itself, toward the same host.
        eve.send_to(message(EVE, 3).as_bytes(), proxy)
            .expect("send");
        bob_got = receive(&bob, Duration::from_secs(1), |m| m.starts_with("MESSAGE"));
        at_victim = receive(&victim, Duration::from_secs(1), |_| false);
    }
    let after = Metrics::scrape(pair);
    let (code, log) = e.stop();

    r.assert_ok("bob registers");
    let forwarded = forwarded.unwrap_or_else(|| panic!("the INVITE reached bob: {at_bob:?}"));
    // RFC 3325: an outsider's asserted identity never reaches the phone.
    assert!(
        !forwarded.contains("P-Asserted-Identity") && !forwarded.contains("Remote-Party-ID"),
        "{forwarded}"
    );
    let route = route.unwrap_or_else(|| panic!("Eve got our Record-Route: {at_eve:?}"));
    eprintln!("{test}: stamp {route}");
    eprintln!(
        "{test}: victim got {} message(s); third address got {:?}; bob got {} MESSAGE(s)",
        at_victim.len(),
        third_got
            .iter()
            .map(|m| m.lines().next().unwrap_or(""))
            .collect::<Vec<_>>(),
        bob_got.iter().filter(|m| m.starts_with("MESSAGE")).count()
    );
    assert!(
        at_victim.is_empty(),
        "{} message(s) relayed to the victim, the first: {:?}",
        at_victim.len(),
        at_victim.first()
    );
    assert!(
        third_got.iter().any(|m| m.starts_with("SIP/2.0 403")),
        "a replay from a third address is refused: {third_got:?}"
    );
    assert!(
        bob_got.iter().any(|m| m.starts_with("MESSAGE")),
        "the caller's in-dialog request reaches the callee: {bob_got:?}"
    );
    let refused = "sipfw_dialog_refused_total{reason=\"not_a_party\"}";
    assert_eq!(after.get(refused) - before.get(refused), 1.0);
    assert_eq!(code, 0, "{log}");
}
