//! Destination policy: the default deny list (premium-rate and high-fraud ranges).

use std::time::Duration;

use sip_firewall_tests::{
    daemon::{DaemonDirs, stop},
    netns::Pair,
    require_root,
};

use crate::client::{Phone, fraud_config, trunk};
use crate::support::{Metrics, one_at_a_time};

#[test]
fn denied_prefix_never_reaches_the_trunk() {
    let test = "denied_prefix_never_reaches_the_trunk";
    if !require_root(test) {
        return;
    }
    let _turn = one_at_a_time();
    let pair = Pair::new("fd").unwrap();
    // No [fraud] keys: the documented default deny list.
    let d = DaemonDirs::new("fd", &fraud_config(""));
    let daemon = d.start(&pair, &["--xdp-mode", "off"]);
    let trunk = trunk(&pair, 486);
    let mut phone = Phone::new(&pair, "alice", "alice-secret");
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
    let m = Metrics::scrape(&pair);
    let refused = m.get("sipfw_fraud_refused_total{reason=\"denied_prefix\"}");
    let invites = trunk.count("INVITE");
    drop(trunk);
    let (code, log) = stop(daemon);
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
