//! Threat feeds in a cluster: one node fetches, the others receive. The feed is a CIDR list
//! served over HTTPS (a CA made by the test) in the backbone namespace, which both nodes
//! reach; the feed server's count of GETs tells who fetches. A feed's load forged in Redis
//! is refused; one sealed by a node gone wrong is checked item by item.

use std::{
    net::SocketAddr,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use sip_firewall::{
    auth::keys::KeyRing,
    cluster::{
        feeds::shared_id,
        trust::{Place, Trust},
    },
    feeds::config::FeedFormat,
};
use sip_firewall_tests::{
    cluster::{Cluster, Node},
    edge::out,
    feed::FeedServer,
    netns::ip_in,
};

use crate::setup::{Backbone, node_config, wait_for};

fn loads(n: &Node, result: &str) -> f64 {
    n.metric(&format!(
        "sipfw_feed_loads_total{{feed=\"threats\",result=\"{result}\"}}"
    ))
}

fn applied(n: &Node) -> f64 {
    n.metric("sipfw_feed_entries{feed=\"threats\",state=\"applied\"}")
}

/// Two nodes, one feed: exactly one node fetches it, both drop the attackers it names (each
/// vetting them itself); the fetcher killed, the other takes the fetching over within the
/// lease and a refresh; a node stopping gives its lease up; Redis gone, the entries stay and
/// the node fetches for itself.
#[test]
fn one_node_fetches_a_feed_and_the_others_receive_it() {
    let test = "one_node_fetches_a_feed_and_the_others_receive_it";
    let Some(mut cl) = Cluster::new(test, "cluster-redis-feeds") else {
        return;
    };
    let bb = Backbone::new("cfd");
    ip_in(&bb.ns, &["addr", "add", "192.0.2.1/24", "dev", "br0"]).expect("feed address");
    let at: SocketAddr = "192.0.2.1:8443".parse().unwrap();
    let server = FeedServer::start(bb.ns.name(), at, "# nothing yet\n");
    let ca_path = cl.tmp.path.join("feed-ca.pem");
    std::fs::write(&ca_path, &server.ca_pem).unwrap();
    let redis = &cl.redis;
    let [mut a, mut b] = cl.nodes(["cfa", "cfb"], |node| {
        format!(
            "{}[[feeds]]\nname = \"threats\"\nurl = \"https://{at}/threats.txt\"\n\
             format = \"cidr\"\nrefresh = \"2s\"\nexpire_after = \"1h\"\nca = \"{}\"\n",
            node_config(redis, node, "shared-secret-feeds"),
            ca_path.display()
        )
    });
    bb.join(&a, 11);
    bb.join(&b, 12);
    let mut attackers = vec![a.pair.a4.to_string(), b.pair.a4.to_string()];
    attackers.dedup();
    server.set(Some(&format!("# threats\n{}\n", attackers.join("\n"))));
    a.start();
    b.start();
    a.wait_connected(true);
    b.wait_connected(true);

    let want = attackers.len() as f64;
    wait_for(
        Duration::from_secs(40),
        || applied(&a) == want && applied(&b) == want,
        || format!("applied: A {} B {}", applied(&a), applied(&b)),
    );
    assert_eq!(a.send(5), 0, "A drops its attacker");
    assert_eq!(b.send(5), 0, "B drops its attacker");

    // Steady state: one node fetches, the other only receives.
    std::thread::sleep(Duration::from_secs(25));
    let (oa, ob) = (loads(&a, "ok"), loads(&b, "ok"));
    let shown = |n: &Node| out(&n.cli(&["feeds"]));
    assert!(
        (oa > 0.0) != (ob > 0.0),
        "exactly one fetcher: A ok {oa}, B ok {ob}\nA: {}\nB: {}",
        shown(&a),
        shown(&b)
    );
    let (mut fetcher, mut receiver) = if oa > 0.0 { (a, b) } else { (b, a) };
    assert_eq!(
        loads(&receiver, "ok") + loads(&receiver, "error"),
        0.0,
        "the receiver never fetched"
    );
    // A GET may be answered while its load is not counted yet.
    let (served, fetched) = (server.served() as f64, loads(&fetcher, "ok"));
    assert!(
        served >= fetched && served <= fetched + 1.0,
        "every GET came from the fetcher: {served} served, {fetched} loads"
    );
    assert!(loads(&receiver, "received") >= 1.0);
    let r = shown(&receiver);
    assert!(r.contains("from the cluster (fetched by edge-"), "{r}");
    assert!(shown(&fetcher).contains("fetched here"));

    // The fetcher lost: the other takes over within the lease (15 s), a heartbeat and a
    // feeds tick (10 s), and keeps the entries meanwhile.
    fetcher.kill();
    let before = server.served();
    wait_for(
        Duration::from_secs(45),
        || loads(&receiver, "ok") >= 1.0,
        || format!("no takeover: {}", shown(&receiver)),
    );
    assert!(server.served() > before, "the survivor fetches");
    assert_eq!(applied(&receiver), want, "the entries stayed throughout");
    let r = shown(&receiver);
    assert!(r.contains("fetched here"), "{r}");

    // The first node back receives; the survivor stopped gives its lease up at once, and the
    // first fetches again.
    fetcher.start();
    fetcher.wait_connected(true);
    wait_for(
        Duration::from_secs(20),
        || loads(&fetcher, "received") >= 1.0,
        || format!("the node back received nothing: {}", shown(&fetcher)),
    );
    let id = shared_id(
        "threats",
        &format!("https://{at}/threats.txt"),
        FeedFormat::Cidr,
    );
    let lease = || redis.cli(&["GET", &format!("sipfw:feed-lease:{id}")]);
    let holder = lease();
    assert!(holder.starts_with("edge-"), "{holder}");
    let _ = receiver.stop();
    assert_ne!(lease(), holder, "a node stopping gives its lease up");
    wait_for(
        Duration::from_secs(30),
        || loads(&fetcher, "ok") >= 1.0,
        || format!("the node back never fetched: {}", shown(&fetcher)),
    );

    // Redis gone: the node keeps the entries it has (its lease lapses, nothing is flushed),
    // and once no lease of its own can be live, it fetches for itself.
    cl.redis.stop();
    fetcher.wait_connected(false);
    std::thread::sleep(Duration::from_secs(12));
    assert_eq!(applied(&fetcher), want, "the entries stay while cut off");
    assert_eq!(fetcher.send(5), 0, "its attacker still dropped");
    let before = server.served();
    wait_for(
        Duration::from_secs(40),
        || shown(&fetcher).contains("fetched here alone (cut off"),
        || format!("never fetched alone: {}", shown(&fetcher)),
    );
    assert!(server.served() > before, "fetched while cut off");
    assert_eq!(applied(&fetcher), want);
    let _ = fetcher.stop();
    drop(server);
}

/// A feed's load written into Redis by an attacker (no MAC), as a record and as an event:
/// refused and counted, nothing of it applied, the outsider it names still answered. Sealed
/// by a node with the secret (one of ours gone wrong), its items are still checked here: a
/// junk item counted as invalid, `0.0.0.0/0` refused for its width, the rest applied.
#[test]
fn a_feed_load_forged_in_redis_is_refused_and_a_sealed_one_is_vetted() {
    let test = "a_feed_load_forged_in_redis_is_refused_and_a_sealed_one_is_vetted";
    let Some(cl) = Cluster::new(test, "cluster-redis-feeds-forged") else {
        return;
    };
    let redis = &cl.redis;
    let secret = sip_firewall_tests::secret("shared-secret-feeds-forged");
    let [mut b] = cl.nodes(["cfx"], |node| {
        format!(
            "{}[[feeds]]\nname = \"threats\"\nurl = \"file:///nonexistent/threats.txt\"\n\
             format = \"cidr\"\nrefresh = \"1h\"\nexpire_after = \"1h\"\n",
            node_config(redis, node, "shared-secret-feeds-forged")
        )
    });
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let far = now + 10 * 365 * 86_400;
    let outsider = b.pair.a4.to_string();
    let load = |entries: serde_json::Value| {
        serde_json::json!({"node": "edge-x", "fetched_unix": now, "last_ok_unix": now,
            "last_error": null, "invalid": 0, "entries": entries})
        .to_string()
    };
    let forged = load(serde_json::json!([[format!("{outsider}/32"), far]]));
    let id = shared_id(
        "threats",
        "file:///nonexistent/threats.txt",
        FeedFormat::Cidr,
    );
    let key = format!("sipfw:feed:{id}");
    redis.cli(&["SET", &key, &forged]);
    b.start();
    b.wait_connected(true);
    let mac = "sipfw_cluster_rejected_total{reason=\"mac\"}";
    let at_load = b.wait_metric(mac, 1.0, Duration::from_secs(5));
    assert!(at_load >= 1.0, "the record counted: {at_load}");
    let event = serde_json::json!({"node": "edge-x", "sent_ms": now * 1000,
        "op": {"op": "feed_load", "feed": id}});
    redis.cli(&["PUBLISH", "sipfw:events", &event.to_string()]);
    let live = b.wait_metric(mac, at_load + 1.0, Duration::from_secs(5));
    assert!(live >= at_load + 1.0, "the event counted: {live}");
    assert_eq!(applied(&b), 0.0, "nothing of the forged load applied");
    assert!(b.answers_options(), "the outsider it names is answered");

    // Sealed with the secret: checked item by item, vetted here.
    let ring = KeyRing::from_config(Some(&secret), &[]).expect("secret");
    let insider = Trust::new(&ring, &["example.com".to_string()]);
    let body = load(serde_json::json!([
        ["203.0.113.7/32", far],
        "junk",
        ["0.0.0.0/0", far]
    ]));
    let sealed = insider.seal(&Place::feed(&id), &body);
    let _ = b.stop();
    redis.cli(&["SET", &key, &sealed]);
    b.start();
    b.wait_connected(true);
    let entries = |state: &str| {
        b.metric(&format!(
            "sipfw_feed_entries{{feed=\"threats\",state=\"{state}\"}}"
        ))
    };
    wait_for(
        Duration::from_secs(20),
        || entries("applied") == 1.0,
        || format!("the sealed load: {}", out(&b.cli(&["feeds"]))),
    );
    assert_eq!(entries("invalid"), 1.0, "the junk item");
    assert_eq!(entries("too_wide"), 1.0, "0.0.0.0/0");
    assert!(b.answers_options(), "the outsider is still answered");
    let _ = b.stop();
}
