//! Subscribers and the allow/deny lists changed on one edge apply on every edge.

use std::time::Duration;

use sip_firewall_tests::cluster::{Cluster, Node};

use crate::setup::{node_config, wait_for};

/// `user add` on A: the subscriber registers through B; `deny add` on B drops the source on
/// A; `deny del` and `user del` on the other node undo them everywhere. Only digest hashes
/// reach Redis.
#[test]
fn subscribers_and_lists_apply_on_every_node() {
    let test = "subscribers_and_lists_apply_on_every_node";
    let Some(cl) = Cluster::new(test, "cluster-redis-users") else {
        return;
    };
    let redis = &cl.redis;
    let [a, b] = cl.started(["cua", "cub"], |node| {
        node_config(redis, node, "shared-secret-3")
    });

    a.add_user("carol", "pw-carol-7");
    let has_carol = |n: &Node| n.users().contains(&"carol".to_string());
    wait_for(
        Duration::from_secs(5),
        || has_carol(&b),
        || "B never got carol".into(),
    );
    let res = b.register_storm(
        vec![("carol".to_string(), "pw-carol-7".to_string())],
        10,
        Duration::from_secs(10),
    );
    assert_eq!(
        res.registered, 1,
        "carol, added on A, registers through B: {res:?}"
    );
    let stored = redis.cli(&["HGETALL", "sipfw:users"]);
    assert!(
        stored.contains("carol@example.com") && stored.contains("ha1"),
        "{stored}"
    );
    assert!(
        !stored.contains("pw-carol-7"),
        "no password in Redis: {stored}"
    );

    // deny on B applies on A (in XDP); removed on A, lifted on B.
    let ip = a.pair.a4.to_string();
    assert_eq!(a.send(5), 5);
    assert!(b.cli(&["deny", "add", &ip]).status.success());
    let denied = |n: &Node| n.list("deny").contains(&format!("{ip}/32"));
    wait_for(
        Duration::from_secs(5),
        || denied(&a),
        || "A never got B's deny".into(),
    );
    assert_eq!(a.send(10), 0, "A drops what B denied");
    assert!(a.cli(&["deny", "del", &ip]).status.success());
    wait_for(
        Duration::from_secs(5),
        || !denied(&b),
        || "B kept the deny A removed".into(),
    );
    assert_eq!(b.send(5), 5);

    assert!(
        b.cli(&["user", "del", "carol", "--domain", "example.com"])
            .status
            .success()
    );
    wait_for(
        Duration::from_secs(5),
        || !has_carol(&a),
        || "A kept carol after user del on B".into(),
    );
}
