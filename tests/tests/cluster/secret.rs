//! The cluster's shared `[auth] secret`: a node that does not share it stays out.

use std::time::{Duration, Instant};

use sip_firewall_tests::{
    cluster::{Cluster, Node},
    daemon::stop,
    edge::xdp_args,
};

use crate::setup::node_config;

/// Run the daemon of `node` until it exits on its own (at most 20 s): its exit code and
/// stderr.
fn run_until_exit(node: &Node) -> (Option<i32>, String) {
    let mut child = node
        .dirs
        .command(&node.pair, xdp_args(true))
        .spawn()
        .expect("spawn the daemon");
    let t0 = Instant::now();
    let status = loop {
        if let Ok(Some(s)) = child.try_wait() {
            break Some(s);
        }
        if t0.elapsed() > Duration::from_secs(20) {
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    if status.is_none() {
        let (_, e) = stop(child);
        return (None, e);
    }
    let mut e = String::new();
    if let Some(mut s) = child.stderr.take() {
        use std::io::Read as _;
        let _ = s.read_to_string(&mut e);
    }
    (status.and_then(|s| s.code()), e)
}

/// A node whose `[auth] secret` differs from the cluster's refuses to join (its
/// Record-Route stamps and records would not verify on the others), with a clear error, and
/// takes nothing from Redis; Redis holds a keyed fingerprint, never the secret. A
/// `[cluster]` without a secret does not start.
#[test]
fn a_node_with_another_secret_refuses_to_join() {
    let test = "a_node_with_another_secret_refuses_to_join";
    let Some(cl) = Cluster::new(test, "cluster-redis-secret") else {
        return;
    };
    let redis = &cl.redis;
    let [a] = cl.started(["csa"], |node| node_config(redis, node, "the-right-secret"));
    assert!(
        a.cli(&["ban", "add", "192.0.2.55", "--for", "1h"])
            .status
            .success()
    );
    let fp = redis.cli(&["GET", "sipfw:secret-fingerprint"]);
    assert_eq!(fp.trim().len(), 64, "{fp}");
    assert!(!fp.contains("the-right-secret"));

    let b = Node::new("csb", &node_config(redis, "edge-b", "another-secret"));
    let (code, stderr) = run_until_exit(&b);
    assert_eq!(
        code,
        Some(1),
        "the node with another secret stops: {stderr}"
    );
    assert!(
        stderr.contains("[auth] secret differs from the cluster's"),
        "a clear error: {stderr}"
    );
    assert!(
        !stderr.contains("cluster: bans loaded"),
        "took nothing: {stderr}"
    );
    assert!(redis.cli(&["EXISTS", "sipfw:node:edge-b"]).trim() == "0");

    // A node joining later enforces the cluster's bans before it answers at all: loaded
    // before XDP is attached and the admin socket opens.
    let mut d = Node::new("csd", &node_config(redis, "edge-d", "the-right-secret"));
    d.start();
    assert!(
        d.banned("192.0.2.55"),
        "the first answer already lists A's ban"
    );
    d.stop();

    let config = node_config(redis, "edge-c", "x").replace(
        &format!("secret = \"{}\"\n", sip_firewall_tests::secret("x")),
        "",
    );
    let c = Node::new("csc", &config);
    let (code, stderr) = run_until_exit(&c);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("[cluster] needs [auth] secret"), "{stderr}");
}
