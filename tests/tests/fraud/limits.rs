//! Rates and lengths: a loop of short calls trips calls_per_minute and sequential at the
//! configured count, not before; a call left up past max_call_duration gets BYE both ways.

use std::time::Duration;

use crate::client::{Phone, start};
use sip_firewall_tests::{domain::BOB_PASSWORD, metrics::Metrics};

#[test]
fn call_rate_and_sequence_trip_at_the_count() {
    let test = "call_rate_and_sequence_trip_at_the_count";
    // Short calls: the trunk refuses each at once.
    let Some((mut e, trunk, mut alice)) = start(
        test,
        "fr",
        "[[fraud.rules]]\nprefix = \"0049\"\ncalls_per_minute = { warn = 2, critical = 4 }\n\
             [[fraud.rules]]\nprefix = \"+33\"\nsequential = { critical = 3 }\n",
        486,
    ) else {
        return;
    };
    let rate: Vec<String> = (0..5).map(|i| alice.call(&format!("004930{i}"))).collect();
    drop(alice);
    let mut bob = Phone::new(&e.pair, "bob", BOB_PASSWORD);
    let seq: Vec<String> = ["00331", "+332", "0301", "00333", "011334", "00335", "00336"]
        .iter()
        .map(|n| bob.call(n))
        .collect();
    let reached = trunk.wait("INVITE", 10, Duration::from_secs(3));
    let invites = trunk.count("INVITE");
    let m = Metrics::scrape(&e.pair);
    drop(trunk);
    let (code, log) = e.stop();
    eprintln!("{test}: alice {rate:?}\nbob {seq:?}\ntrunk INVITEs {invites}");
    let busy = "SIP/2.0 486 Busy Here";
    let tripped = "SIP/2.0 403 Fraud Limit Exceeded";
    assert_eq!(rate, [busy, busy, busy, busy, tripped]);
    // The national call (0301) starts the sequence again.
    assert_eq!(seq, [busy, busy, busy, busy, busy, busy, tripped]);
    assert!(reached);
    assert_eq!(invites, 10);
    assert_eq!(
        m.get("sipfw_fraud_critical_total{measure=\"calls_per_minute\"}"),
        1.0
    );
    assert_eq!(
        m.get("sipfw_fraud_critical_total{measure=\"sequential\"}"),
        1.0
    );
    assert_eq!(
        m.get("sipfw_fraud_warnings_total{measure=\"calls_per_minute\"}"),
        2.0
    );
    assert_eq!(code, 0, "{log}");
}

#[test]
fn max_call_duration_ends_the_call_both_ways() {
    let test = "max_call_duration_ends_the_call_both_ways";
    let Some((mut e, trunk, mut phone)) = start(test, "fm", "max_call_duration = \"2s\"\n", 200)
    else {
        return;
    };
    let answered = phone.call("0301234567");
    let up = Metrics::scrape(&e.pair).get("sipfw_calls_active");
    phone.listen(Duration::from_secs(8), |r| {
        r.iter().any(|m| m.starts_with("BYE "))
    });
    let trunk_bye = trunk.wait("BYE", 1, Duration::from_secs(3));
    let m = Metrics::scrape(&e.pair);
    drop(trunk);
    let (code, log) = e.stop();
    let phone_bye = phone.requests().iter().find(|r| r.starts_with("BYE "));
    eprintln!("{test}: {answered:?}, BYE to the phone: {phone_bye:?}");
    assert_eq!(answered, "SIP/2.0 200 OK");
    assert_eq!(up, 1.0, "the call was tracked");
    let phone_bye = phone_bye.expect("the phone got BYE");
    assert!(phone_bye.contains("tag=ft1"), "{phone_bye}");
    assert!(trunk_bye, "the trunk got BYE");
    assert_eq!(m.get("sipfw_calls_active"), 0.0);
    assert_eq!(
        m.get("sipfw_calls_ended_total{reason=\"max_duration\"}"),
        1.0
    );
    assert_eq!(code, 0, "{log}");
}
