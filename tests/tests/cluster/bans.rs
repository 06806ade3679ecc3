//! Bans made on one edge, by hand or learned from a scanner or a password cracker, are
//! enforced by every edge's XDP within a second; deleted on any edge, lifted on all.

use std::{
    net::{SocketAddr, UdpSocket},
    process::Stdio,
    time::{Duration, Instant},
};

use sip_firewall_tests::{
    cluster::{Cluster, Node},
    domain::{self, BOB_PASSWORD},
    edge::{err, json, out},
    metrics::Metrics,
    netns::in_ns,
    sipp::{in_netns, wait_bounded},
    sipvicious,
};

use crate::setup::node_config;

/// Three edges: `ban add` on A, and B and C drop the source in XDP (counter moves, nothing
/// arrives) within a second; `ban del` on C lifts it on A and B. Nodes list each other
/// (heartbeats).
#[test]
fn bans_propagate_between_nodes() {
    let Some(cl) = Cluster::new("bans_propagate_between_nodes", "cluster-redis") else {
        return;
    };
    let redis = &cl.redis;
    let [a, b, c] = cl.started(["cla", "clb", "clc"], |node| {
        node_config(redis, node, "shared-secret-1")
    });
    // Same addresses in every pair: the scanner is 198.51.100.1 at each edge.
    let ip = a.pair.a4.to_string();
    assert_eq!(b.send(5), 5, "not banned yet");
    assert_eq!(c.send(5), 5, "not banned yet");
    let before_c = c.xdp_banned();

    let before = b.xdp_banned();
    let add = a.cli(&[
        "ban",
        "add",
        &ip,
        "--for",
        "1h",
        "--reason",
        "scanner seen on a",
    ]);
    assert!(add.status.success(), "{}", err(&add));
    let took = b.wait_banned(&ip, true, Duration::from_secs(1));
    assert!(took.is_some(), "B did not get A's ban within a second");
    eprintln!("ban add on A -> listed on B after {took:?}");
    assert_eq!(b.send(20), 0, "B drops the source A banned");
    assert!(b.xdp_banned() >= before + 20.0, "B's XDP counter moved");
    assert!(
        c.wait_banned(&ip, true, Duration::from_secs(1)).is_some(),
        "C did not get A's ban within a second"
    );
    assert_eq!(c.send(20), 0, "C drops it too");
    assert!(c.xdp_banned() >= before_c + 20.0, "C's XDP counter moved");
    let ban = json(&b.cli(&["ban", "list", "--json"]));
    assert_eq!(ban[0]["reason"], "manual: scanner seen on a", "{ban}");
    // In Redis: reason, origin node, TTL.
    let stored = redis.cli(&["GET", &format!("sipfw:ban:{ip}")]);
    assert!(
        stored.contains("edge-a") && stored.contains("scanner seen on a"),
        "{stored}"
    );
    let ttl: i64 = redis
        .cli(&["TTL", &format!("sipfw:ban:{ip}")])
        .trim()
        .parse()
        .unwrap_or(-9);
    assert!(ttl > 3500 && ttl <= 3600, "TTL {ttl}");
    assert!(b.metric("sipfw_cluster_events_total{dir=\"in\",kind=\"ban\"}") >= 1.0);
    assert_eq!(a.metric("sipfw_cluster_connected"), 1.0);

    // ban del on C: lifted on A and B as well, and in Redis.
    let del = c.cli(&["ban", "del", &ip]);
    assert!(del.status.success(), "{}", err(&del));
    for (name, n) in [("A", &a), ("B", &b)] {
        assert!(
            n.wait_banned(&ip, false, Duration::from_secs(1)).is_some(),
            "{name} still bans after ban del on C"
        );
        assert_eq!(n.send(5), 5, "{name} lets the source through again");
    }
    assert_eq!(
        redis.cli(&["EXISTS", &format!("sipfw:ban:{ip}")]).trim(),
        "0"
    );

    // status lists both nodes.
    let t0 = Instant::now();
    loop {
        let s = a.status();
        let nodes = s["cluster"]["nodes"].clone();
        if nodes == serde_json::json!(["edge-a", "edge-b", "edge-c"]) {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(15), "{s}");
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = out(&a.cli(&["status"]));
    assert!(text.contains("edge-a, edge-b, edge-c"), "{text}");
}

/// `svmap` from A's client namespace against edge A: A learns a scanner
/// ban; B gets it from Redis and drops the same source's scan in XDP (its counter moves, its
/// message layer sees nothing), without ever having seen the scanner itself.
#[test]
fn a_scanner_banned_on_one_edge_is_dropped_by_xdp_on_another() {
    let test = "a_scanner_banned_on_one_edge_is_dropped_by_xdp_on_another";
    let Some(cl) = Cluster::new(test, "cluster-redis-scan") else {
        return;
    };
    let Some(svmap) = sipvicious::command(test, "sipvicious_svmap") else {
        return;
    };
    let redis = &cl.redis;
    let [a, b] = cl.started(["cva", "cvb"], |node| {
        node_config(redis, node, "shared-secret-4")
    });
    let scan = |n: &Node| {
        sipvicious::svmap(&n.pair, &svmap, &[n.pair.b4.to_string()]);
    };
    let ip = a.pair.a4.to_string();
    scan(&a);
    assert!(
        a.wait_banned(&ip, true, Duration::from_secs(5)).is_some(),
        "A did not ban svmap's source"
    );
    let took = b.wait_banned(&ip, true, Duration::from_secs(1));
    assert!(
        took.is_some(),
        "B did not get A's learned ban within a second"
    );
    eprintln!("learned ban on A -> listed on B {took:?} after A listed it");
    let ban = json(&b.cli(&["ban", "list", "--json"]));
    assert!(
        ban[0]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("scanner")),
        "{ban}"
    );
    let m0 = Metrics::scrape(&b.pair);
    scan(&b);
    let m1 = Metrics::scrape(&b.pair);
    assert!(
        m1.xdp("banned") > m0.xdp("banned"),
        "B's XDP dropped the scan as banned"
    );
    assert_eq!(
        m1.messages_seen(),
        m0.messages_seen(),
        "B's message layer saw nothing of the scanner"
    );
}

/// Three edges; `svcrack` from A's client namespace against bob on edge A is banned on A
/// (its wrong passwords); B and C list the same source within a second of A (polled, 1 s
/// deadline) and drop it in XDP (counter moves, their message layer sees nothing) without
/// ever having seen svcrack; `ban del` on C lifts it on A and B.
#[test]
fn svcrack_banned_on_a_is_dropped_by_xdp_on_b_and_c() {
    let test = "svcrack_banned_on_a_is_dropped_by_xdp_on_b_and_c";
    let Some(cl) = Cluster::new(test, "cluster-svcrack") else {
        return;
    };
    let Some(svcrack) = sipvicious::command(test, "sipvicious_svcrack") else {
        return;
    };
    let _turn = sip_firewall_tests::one_at_a_time();
    // As in sipvicious.rs: svcrack's User-Agent is on the scanner list; with the list
    // empty and the flood limit high, its failed authentications are what bans it.
    let [a, b, c] = cl.started(["cka", "ckb", "ckc"], |node| {
        domain::config(&format!(
            "secret = \"{}\"\n[policy]\nscanners = []\n[bans]\n\
             auth_failures = 5\n[xdp]\nflood_rate = 10000\nflood_burst = 10000\n\
             [cluster]\nredis = \"{}\"\nnode = \"{node}\"\n",
            sip_firewall_tests::secret("shared-secret-crack"),
            cl.redis.url()
        ))
    });
    let ip = a.pair.a4.to_string();
    let mut words: Vec<String> = (0..10).map(|i| format!("guess-{i}")).collect();
    words.push(BOB_PASSWORD.to_string());
    let list = cl.tmp.path.join("words.txt");
    std::fs::write(&list, words.join("\n") + "\n").expect("word list");
    let child = in_netns(&a.pair.ns_a, &svcrack)
        .args(["-u", "bob", "--domain", "example.com", "-d"])
        .arg(&list)
        .args(["-x", &ip, "-p", "5060", "--maximumtime", "3"])
        .arg(a.pair.b4.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn svcrack");
    assert!(
        a.wait_banned(&ip, true, Duration::from_secs(20)).is_some(),
        "A did not ban svcrack"
    );
    for (name, n) in [("B", &b), ("C", &c)] {
        assert!(
            n.wait_banned(&ip, true, Duration::from_secs(1)).is_some(),
            "{name} did not list A's ban of svcrack within a second"
        );
    }
    let (_, killed) = wait_bounded(child, Duration::from_secs(40));
    assert!(!killed, "svcrack did not end within 40 s");
    // A learned ban covers the SIP ports (`[bans] learned_scope`): SIP from the same source
    // to B's and C's port 5060.
    for (name, n) in [("B", &b), ("C", &c)] {
        let m0 = Metrics::scrape(&n.pair);
        let tx = in_ns(&n.pair.ns_a, || Ok(UdpSocket::bind("0.0.0.0:0")?)).expect("tx");
        for i in 0..10 {
            let options = format!(
                "OPTIONS sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {ip}:5062;branch=z9hG4bKo{i}\r\n\
                 From: <sip:x@example.com>;tag=o\r\nTo: <sip:bob@example.com>\r\nCall-ID: o{i}\r\n\
                 CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
            );
            tx.send_to(options.as_bytes(), SocketAddr::new(n.pair.b(false), 5060))
                .expect("send");
        }
        let m1 = Metrics::poll(&n.pair, Duration::from_secs(5), |m| {
            m.xdp("banned") >= m0.xdp("banned") + 10.0
        });
        assert!(
            m1.xdp("banned") >= m0.xdp("banned") + 10.0,
            "{name}'s XDP dropped svcrack's source"
        );
        assert_eq!(
            m1.messages_seen(),
            m0.messages_seen(),
            "{name}'s message layer saw nothing"
        );
    }
    assert!(c.cli(&["ban", "del", &ip]).status.success());
    for (name, n) in [("A", &a), ("B", &b)] {
        assert!(
            n.wait_banned(&ip, false, Duration::from_secs(5)).is_some(),
            "{name} still bans after ban del on C"
        );
    }
}
