//! Destination policy: the default deny list (premium-rate and high-fraud ranges).

use std::time::Duration;

use crate::client::start;
use sip_firewall_tests::metrics::Metrics;

#[test]
fn denied_prefix_never_reaches_the_trunk() {
    let test = "denied_prefix_never_reaches_the_trunk";
    // No [fraud] keys: the documented default deny list.
    let Some((mut e, trunk, mut phone)) = start(test, "fd", "", 486) else {
        return;
    };
    let denied: Vec<String> = [
        "0019005550100",
        "+19005550101",
        "01119005550102",
        "0088112345",
    ]
    .iter()
    .map(|n| phone.call(n))
    .collect();
    // Control: an ordinary international call reaches the trunk (and its 486 comes back):
    // the listener works, and what came before it would have arrived first.
    let control = phone.call("00493012345");
    let reached = trunk.wait("INVITE", 1, Duration::from_secs(3));
    let m = Metrics::scrape(&e.pair);
    let refused = m.get("sipfw_fraud_refused_total{reason=\"denied_prefix\"}");
    let invites = trunk.count("INVITE");
    drop(trunk);
    let (code, log) = e.stop();
    eprintln!("{test}: denied calls {denied:?}, control {control:?}, trunk INVITEs {invites}");
    for a in &denied {
        assert_eq!(a, "SIP/2.0 403 Destination Denied");
    }
    assert!(reached, "the control call reached the trunk");
    assert_eq!(control, "SIP/2.0 486 Busy Here");
    assert_eq!(invites, 1, "only the control call reached the trunk");
    assert_eq!(refused, 4.0);
    assert_eq!(code, 0, "{log}");
}
