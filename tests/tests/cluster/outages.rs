//! Redis gone, or one node cut off from it: every node enforces what it had, changes made
//! meanwhile are queued (in the state database, across a restart) and reach the others
//! afterwards, and what was deleted meanwhile is lifted when a node returns. The alert rule
//! for a node cut off.

use std::{path::Path, process::Command, time::Duration};

use sip_firewall_tests::{
    cluster::{Cluster, Node, Redis},
    daemon::TempDir,
    edge::{err, out},
    sipp::register_bob,
    skip::require_tool,
};

use crate::setup::{node_config, sip_node_config, wait_binding_on};

/// Redis started again: every node of `nodes` reconnects.
fn back(redis: &mut Redis, nodes: [&Node; 2]) {
    redis.spawn();
    for n in nodes {
        n.wait_connected(true);
    }
}

/// Redis stopped: both nodes keep enforcing what they had (a node restarted meanwhile comes
/// up with its local state), A keeps banning and queues; when Redis is back, A's bans of the
/// outage reach B.
#[test]
fn bans_made_during_a_redis_outage_reach_the_others_after_it() {
    let test = "bans_made_during_a_redis_outage_reach_the_others_after_it";
    let Some(mut cl) = Cluster::new(test, "cluster-redis-down") else {
        return;
    };
    let [mut a, mut b] = cl.started(["cda", "cdb"], |node| {
        node_config(&cl.redis, node, "shared-secret-2")
    });
    let ip = a.pair.a4.to_string();
    assert!(a.cli(&["ban", "add", &ip, "--for", "1h"]).status.success());
    if b.wait_banned(&ip, true, Duration::from_secs(5)).is_none() {
        panic!(
            "B did not get the ban before the outage\nA: {}\nB: {}\nredis: {}",
            a.stop(),
            b.stop(),
            cl.redis.cli(&["KEYS", "*"])
        );
    }

    cl.redis.stop();
    a.wait_connected(false);
    b.wait_connected(false);
    assert_eq!(a.metric("sipfw_cluster_connected"), 0.0);
    assert_eq!(b.send(10), 0, "B enforces what it had during the outage");
    // Made on A while Redis is away: enforced on A at once, queued for the others.
    let during = "192.0.2.77";
    assert!(
        a.cli(&["ban", "add", during, "--for", "1h"])
            .status
            .success()
    );
    assert!(a.banned(during));
    assert!(!b.banned(during), "B cannot know yet");
    // B restarted during the outage comes up with its local state.
    b.stop();
    b.start();
    assert!(b.banned(&ip), "B's state database kept the cluster's ban");
    assert_eq!(b.send(10), 0, "and XDP enforces it again");

    back(&mut cl.redis, [&a, &b]);
    assert!(
        b.wait_banned(during, true, Duration::from_secs(10))
            .is_some(),
        "A's ban of the outage reached B after Redis came back"
    );
    assert!(
        a.metric("sipfw_cluster_events_total{dir=\"out\",kind=\"ban\"}") >= 2.0,
        "A sent both bans"
    );
    assert!(
        b.banned(&ip),
        "the ban from before the outage still holds on B"
    );
}

/// A ban deleted on A while B alone was cut off from Redis (B's Redis user disabled and its
/// connections killed: A and Redis carry on) is lifted on B when B comes back: its full
/// load reconciles, lifting the cluster's bans Redis no longer has. A ban B made while cut
/// off (local, queued) stays and reaches A.
#[test]
fn a_ban_deleted_while_a_node_was_cut_off_is_lifted_when_it_returns() {
    let test = "a_ban_deleted_while_a_node_was_cut_off_is_lifted_when_it_returns";
    let Some(cl) = Cluster::new(test, "cluster-reconcile") else {
        return;
    };
    let redis = &cl.redis;
    let [a, b] = cl.started(["cra", "crb"], |node| {
        let config = node_config(redis, node, "shared-secret-5");
        if node == "edge-b" {
            redis.own_user(node, &config)
        } else {
            config
        }
    });
    let ip = a.pair.a4.to_string();
    assert!(a.cli(&["ban", "add", &ip, "--for", "1h"]).status.success());
    assert!(b.wait_banned(&ip, true, Duration::from_secs(5)).is_some());

    // B alone is cut off.
    redis.cut("edge-b", false);
    b.wait_connected(false);
    a.wait_connected(true);
    assert!(a.cli(&["ban", "del", &ip]).status.success());
    assert_eq!(
        redis.cli(&["EXISTS", &format!("sipfw:ban:{ip}")]).trim(),
        "0"
    );
    let local = "192.0.2.88";
    assert!(
        b.cli(&["ban", "add", local, "--for", "1h"])
            .status
            .success()
    );
    assert!(b.banned(&ip), "B cannot know yet");
    assert_eq!(b.send(5), 0, "and still drops the source");

    redis.cut("edge-b", true);
    b.wait_connected(true);
    assert!(
        b.wait_banned(&ip, false, Duration::from_secs(5)).is_some(),
        "B lifted the ban deleted while it was cut off"
    );
    assert_eq!(b.send(5), 5, "B lets the source through again");
    assert!(b.metric("sipfw_cluster_events_total{dir=\"reconciled\",kind=\"unban\"}") >= 1.0);
    assert!(b.banned(local), "B's own ban of the outage stays");
    assert!(
        a.wait_banned(local, true, Duration::from_secs(5)).is_some(),
        "and reaches A"
    );
}

/// The outbox survives a restart. Redis down; A bans and takes a registration, both
/// queued; A is restarted during the outage (its queue is in the state database); when
/// Redis is back B gets the ban and Redis the registration.
#[test]
fn changes_queued_during_an_outage_survive_a_restart() {
    let test = "changes_queued_during_an_outage_survive_a_restart";
    let Some(mut cl) = Cluster::with_sipp(test, "cluster-outbox") else {
        return;
    };
    let [mut a, b] = cl.started(["coa", "cob"], |node| {
        let host = if node == "edge-a" { 11 } else { 12 };
        sip_node_config(&cl.redis, node, host)
    });

    cl.redis.stop();
    a.wait_connected(false);
    b.wait_connected(false);
    let during = "192.0.2.99";
    assert!(
        a.cli(&["ban", "add", during, "--for", "1h"])
            .status
            .success()
    );
    register_bob(&a.pair, &cl.tmp.path, 5070)
        .assert_ok("bob registers through A during the outage");
    a.stop();
    a.start();
    assert!(a.banned(during), "A's state database kept its ban");

    back(&mut cl.redis, [&a, &b]);
    assert!(
        b.wait_banned(during, true, Duration::from_secs(10))
            .is_some(),
        "A's ban of the outage reached B although A restarted meanwhile"
    );
    wait_binding_on(&cl.redis, "edge-a");
}

/// The alert rule for a node cut off from Redis (`SipFirewallClusterCutOff` in
/// `deploy/prometheus/alerts.yml`), run by `promtool test rules`: edge-a loses Redis at 45 s
/// and the alert is pending at 1 m, firing for edge-a alone at 2 m; edge-b, connected
/// throughout, never alerts.
#[test]
fn the_cut_off_alert_fires_for_a_node_without_redis() {
    let test = "the_cut_off_alert_fires_for_a_node_without_redis";
    if !require_tool(
        test,
        "promtool",
        "apt-get install prometheus; cargo xtask setup does",
    ) {
        return;
    }
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus/alerts.yml");
    let tmp = TempDir::new("cluster-alert");
    let file = tmp.path.join("cluster_alert_test.yml");
    std::fs::write(
        &file,
        format!(
            r#"rule_files:
  - {}
evaluation_interval: 15s
tests:
  - interval: 15s
    input_series:
      - series: 'sipfw_cluster_connected{{instance="edge-a:9464",job="sip-firewall"}}'
        values: '1 1 1 0 0 0 0 0 0 0 0 0'
      - series: 'sipfw_cluster_connected{{instance="edge-b:9464",job="sip-firewall"}}'
        values: '1 1 1 1 1 1 1 1 1 1 1 1'
    alert_rule_test:
      - eval_time: 1m
        alertname: SipFirewallClusterCutOff
        exp_alerts: []
      - eval_time: 2m
        alertname: SipFirewallClusterCutOff
        exp_alerts:
          - exp_labels:
              severity: critical
              instance: edge-a:9464
              job: sip-firewall
            exp_annotations:
              summary: "edge-a:9464 is cut off from the cluster's Redis"
"#,
            rules.display()
        ),
    )
    .expect("rule test file");
    let run = Command::new("promtool")
        .args(["test", "rules"])
        .arg(&file)
        .output()
        .expect("promtool");
    let text = format!("{}{}", out(&run), err(&run));
    assert!(run.status.success(), "{text}");
    assert!(text.contains("SUCCESS"), "{text}");
}
