//! A BYE ends a call in the guard's books only when the party it goes to answers 2xx
//! (RFC 3261 15.1.2). Rule `00` with concurrent critical 2, two international calls up: a
//! BYE for the first with a made-up To-tag, which the trunk answers 481, leaves it counted
//! (a third international call gets 403); the real hang-up, answered 200, frees the slot
//! at once.

use crate::client::start;
use sip_firewall_tests::metrics::Metrics;

#[test]
fn only_an_answered_bye_frees_the_call() {
    let test = "only_an_answered_bye_frees_the_call";
    let Some((mut e, trunk, mut phone)) = start(
        test,
        "fb",
        "[[fraud.rules]]\nprefix = \"00\"\nconcurrent = { critical = 2 }\n",
        200,
    ) else {
        return;
    };
    let first = phone.place("004930111").unwrap_or_default();
    let second = phone.call("+4930222");
    let forged = phone.bye(&first, "forged");
    let after_forged = Metrics::scrape(&e.pair);
    let third = phone.call("01144207333");
    // The third call suspended alice: the operator lifts it (the calls still count).
    let unblock = e.cli(&["fraud", "unblock", "alice"]);
    let real = phone.bye(&first, "trunk");
    let after_real = Metrics::scrape(&e.pair);
    let fourth = phone.call("004930444");
    let byes = trunk.count("BYE");
    drop(trunk);
    let (code, log) = e.stop();
    eprintln!(
        "{test}: first {:?}, second {second:?}, forged BYE {forged:?}, third {third:?}, \
         real BYE {real:?}, fourth {fourth:?}",
        first.lines().next()
    );
    assert!(first.starts_with("SIP/2.0 200 OK"), "{first}");
    assert_eq!(second, "SIP/2.0 200 OK");
    assert_eq!(forged, "SIP/2.0 481 Call/Transaction Does Not Exist");
    assert_eq!(
        third, "SIP/2.0 403 Fraud Limit Exceeded",
        "the call the trunk kept up still counts"
    );
    assert_eq!(after_forged.get("sipfw_calls_active"), 2.0);
    assert!(unblock.status.success(), "{unblock:?}");
    assert_eq!(real, "SIP/2.0 200 OK");
    assert_eq!(after_real.get("sipfw_calls_active"), 1.0);
    assert_eq!(
        after_real.get("sipfw_calls_ended_total{reason=\"bye\"}"),
        1.0
    );
    assert_eq!(fourth, "SIP/2.0 200 OK", "the hung-up call's slot is free");
    assert_eq!(byes, 2, "both BYEs reached the trunk");
    assert_eq!(code, 0, "{log}");
}
