//! Threat feeds: a CIDR list served over HTTPS (a certificate of a CA made by the test, the
//! daemon told to trust it with `ca`) on the loopback of namespace b, where the daemon runs
//! with XDP attached.
//!
//! - The feed names the attacker (namespace a's first address), the allow-listed trunk
//!   (198.51.100.30) and half the Internet (128.0.0.0/1): the attacker is dropped in XDP
//!   (`denied`), the trunk passes, the wide entry is refused by the lists' bound; each is
//!   counted in `sipfw_feed_entries{feed,state}` and shown by `sip-firewall feeds`.
//! - The feed then fails (500): its last good entries stay, and it says so.
//! - A daemon killed with -9 leaves its pinned maps; the next one, without the feed, takes
//!   them over with nothing of the feed in force; with the feed again, it is applied again.
//! - A good load without the attacker removes the entry: the attacker passes again.
//!
//! Skips loudly when not root.

use std::{net::SocketAddr, time::Duration};

use sip_firewall_tests::{
    domain::config,
    edge::{Edge, xdp_args},
    feed::FeedServer,
    metrics::Metrics,
    one_at_a_time,
};

const TRUNK: &str = "198.51.100.30";

fn entries(m: &Metrics, state: &str) -> f64 {
    m.get(&format!(
        "sipfw_feed_entries{{feed=\"threats\",state=\"{state}\"}}"
    ))
}

#[test]
fn a_feed_drops_the_attacker_in_xdp_and_never_the_allow_listed_trunk() {
    let test = "a_feed_drops_the_attacker_in_xdp_and_never_the_allow_listed_trunk";
    if !sip_firewall_tests::require_root(test) {
        return;
    }
    let _turn = one_at_a_time();
    // Namespaces and directories first: the feed's server runs in namespace b, and its CA
    // goes into the daemon's directory before the daemon starts.
    let mut e = Edge::new("fdx", "");
    let at: SocketAddr = "127.0.0.1:8443".parse().unwrap();
    let attacker = e.pair.a4;
    let body = format!("# threats\n{attacker}\n{TRUNK}\n128.0.0.0/1\n");
    let server = FeedServer::start(&e.pair.ns_b, at, &body);
    let ca_path = e.dir().join("feed-ca.pem");
    std::fs::write(&ca_path, &server.ca_pem).unwrap();
    let with_feed = config(&format!(
        "[policy]\nallow = [\"{TRUNK}/32\"]\n\
         [[feeds]]\nname = \"threats\"\nurl = \"https://{at}/threats.txt\"\nformat = \"cidr\"\n\
         refresh = \"1s\"\nexpire_after = \"1h\"\nca = \"{}\"\n",
        ca_path.display()
    ));
    e.write_config(&with_feed);
    e.run(xdp_args(true));
    let trunk = e.pair.add_a4(30).unwrap();

    let m = Metrics::poll(&e.pair, Duration::from_secs(20), |m| {
        entries(m, "applied") == 1.0
    });
    assert_eq!(entries(&m, "applied"), 1.0, "the attacker's entry");
    assert_eq!(entries(&m, "allow_listed"), 1.0, "the trunk's entry");
    assert_eq!(entries(&m, "too_wide"), 1.0, "128.0.0.0/1");
    let denied0 = m.xdp("denied");
    assert_eq!(
        e.send_from(attacker.into(), 5),
        0,
        "the attacker is dropped"
    );
    assert_eq!(e.send_from(trunk.into(), 5), 5, "the trunk passes");
    let m = Metrics::settled(&e.pair, Duration::from_secs(5), |m| m.xdp("denied"));
    assert_eq!(m.xdp("denied") - denied0, 5.0, "dropped in XDP as denied");
    let shown = sip_firewall_tests::edge::out(&e.cli(&["feeds"]));
    assert!(
        shown.contains("128.0.0.0/1")
            && shown.contains("too_wide")
            && shown.contains("allow_listed"),
        "{shown}"
    );

    // The feed fails: what it said last stays in force, and the failure is reported.
    server.set(None);
    let m = Metrics::poll(&e.pair, Duration::from_secs(20), |m| {
        m.get("sipfw_feed_loads_total{feed=\"threats\",result=\"error\"}") >= 1.0
    });
    assert!(m.get("sipfw_feed_loads_total{feed=\"threats\",result=\"error\"}") >= 1.0);
    assert!(server.served() >= 2, "a good load, then a failed one");
    let shown = sip_firewall_tests::edge::out(&e.cli(&["feeds"]));
    assert!(shown.contains("FAILED"), "{shown}");
    assert_eq!(entries(&m, "applied"), 1.0);
    assert_eq!(e.send_from(attacker.into(), 5), 0, "still dropped");

    // A daemon killed leaves its pinned maps, which the next one takes over: without the
    // feed, nothing of it stays in force.
    e.kill();
    e.write_config(&config(""));
    e.run(xdp_args(true));
    assert_eq!(e.send_from(attacker.into(), 5), 5, "no feed, no entry");
    e.stop_clean();
    server.set(Some(&body));
    e.write_config(&with_feed);
    e.run(xdp_args(true));
    let m = Metrics::poll(&e.pair, Duration::from_secs(20), |m| {
        entries(m, "applied") == 1.0
    });
    assert_eq!(entries(&m, "applied"), 1.0, "the feed again");

    // A good load without the attacker: the whole list, so its entry goes.
    server.set(Some("# nothing\n"));
    let m = Metrics::poll(&e.pair, Duration::from_secs(20), |m| {
        entries(m, "applied") == 0.0
    });
    assert_eq!(entries(&m, "applied"), 0.0);
    assert_eq!(
        e.send_from(attacker.into(), 5),
        5,
        "the attacker passes again"
    );
    e.stop_clean();
    drop(server);
}
