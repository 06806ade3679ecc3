//! Concurrent calls of an account: rule `00` with concurrent critical 2. Two calls connect,
//! the third gets 403 and suspends the account (a national call then gets 403 too); the
//! suspension survives a restart; `sip-firewall fraud unblock` lifts it.

use std::time::Duration;

use sip_firewall_tests::{edge::xdp_args, metrics::Metrics, said};

use crate::client::start;

#[test]
fn concurrent_calls_suspend_until_unblocked() {
    let test = "concurrent_calls_suspend_until_unblocked";
    let rules = "[[fraud.rules]]\nprefix = \"00\"\nconcurrent = { warn = 1, critical = 2 }\n";
    let Some((mut e, trunk, mut phone)) = start(test, "fs", rules, 200) else {
        return;
    };
    let first = phone.call("004930111");
    let second = phone.call("+4930222");
    let third = phone.call("01144207333");
    let national = phone.call("0301234567");
    let m = Metrics::scrape(&e.pair);
    let daemon_status = said(&e.cli(&["status"]));
    let status = e.cli(&["fraud", "status"]);
    let events = e.cli(&["fraud", "events"]);
    let status_json = e.cli(&["fraud", "status", "alice", "--json"]);
    eprintln!("{test}: {first:?} {second:?} {third:?} {national:?}");
    eprintln!("{test}: fraud status:\n{}", said(&status));
    eprintln!("{test}: fraud events:\n{}", said(&events));
    assert_eq!(first, "SIP/2.0 200 OK");
    assert_eq!(second, "SIP/2.0 200 OK");
    assert_eq!(third, "SIP/2.0 403 Fraud Limit Exceeded");
    assert_eq!(national, "SIP/2.0 403 Account Suspended");
    assert_eq!(m.get("sipfw_fraud_suspended_accounts"), 1.0);
    assert_eq!(m.get("sipfw_fraud_refused_total{reason=\"critical\"}"), 1.0);
    assert_eq!(m.get("sipfw_calls_active"), 2.0);
    assert_eq!(
        m.get("sipfw_fraud_warnings_total{measure=\"concurrent\"}"),
        1.0
    );
    eprintln!("{test}: status:\n{daemon_status}");
    // The two connected calls, in total, per account and per trunk peer.
    for row in ["calls active", "alice@example.com", "peer 198.51.100.1"] {
        assert!(
            daemon_status
                .lines()
                .any(|l| l.starts_with(row) && l.trim_end().ends_with(" 2")),
            "{row}: {daemon_status}"
        );
    }
    let st = said(&status);
    assert!(status.status.success(), "{st}");
    assert!(
        st.lines()
            .any(|l| l.contains("alice@example.com") && l.contains("SUSPENDED")),
        "{st}"
    );
    let j: serde_json::Value =
        serde_json::from_slice(&status_json.stdout).expect("fraud status --json");
    assert_eq!(j["suspended"][0]["account"], "alice@example.com", "{j}");
    assert!(said(&events).contains("critical"));

    // A restart keeps the suspension (state database).
    e.stop_clean();
    e.run(xdp_args(false));
    let after_restart = phone.call("0301234568");
    let unblock = e.cli(&["fraud", "unblock", "alice"]);
    let unblocked = phone.call("0301234569");
    let again = e.cli(&["fraud", "unblock", "alice"]);
    let reached = trunk.wait("INVITE", 3, Duration::from_secs(3));
    let invites = trunk.count("INVITE");
    let screen = e.cli(&["fraud", "status"]);
    eprintln!(
        "{test}: after restart {after_restart:?}, unblock: {}, then {unblocked:?}",
        said(&unblock)
    );
    eprintln!("{test}: fraud status after the test:\n{}", said(&screen));
    drop(trunk);
    let (code, log) = e.stop();
    assert_eq!(after_restart, "SIP/2.0 403 Account Suspended");
    assert!(unblock.status.success(), "{}", said(&unblock));
    assert_eq!(unblocked, "SIP/2.0 200 OK");
    assert_eq!(again.status.code(), Some(1), "nothing left to unblock");
    assert!(reached);
    assert_eq!(
        invites, 3,
        "two calls before the suspension, one after unblock"
    );
    assert_eq!(code, 0, "{log}");
}
