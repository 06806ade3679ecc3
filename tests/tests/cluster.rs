//! `[cluster]`: edges in their own namespaces share bans, lists, subscribers and
//! registrations through a real `redis-server` the test starts on a Unix socket in its own
//! temp dir (no network at all; a Unix socket reaches every namespace), or, for Sentinel,
//! on TCP in a backbone namespace of the test's own (a primary, a replica and a Sentinel).
//! Installed by `cargo xtask setup` (Debian `redis-server`).

use std::{
    net::{SocketAddr, UdpSocket},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

mod support;

use sip_firewall_tests::{
    cluster::{Node, Redis, err, json, out, redis_installed},
    daemon::{TempDir, stop},
    netns::in_ns,
    require_root,
    sipclient::register_storm,
    skip,
};

fn node_config(redis: &Redis, node: &str, secret: &str) -> String {
    format!(
        r#"
[sip]
domains = ["example.com"]
[proxy]
advertise = "198.51.100.2:5060"
[auth]
secret = "{}"
[cluster]
redis = "{}"
node = "{node}"
"#,
        sip_firewall_tests::secret(secret),
        redis.url()
    )
}

/// Three edges: `ban add` on A, and B and C drop the source in XDP (counter moves, nothing
/// arrives) within a second; `ban del` on C lifts it on A and B. Nodes list each other
/// (heartbeats).
#[test]
fn bans_propagate_between_nodes() {
    if !require_root("bans_propagate_between_nodes")
        || !redis_installed("bans_propagate_between_nodes")
    {
        return;
    }
    let tmp = TempDir::new("cluster-redis");
    let redis = Redis::start(&tmp.path);
    let mut a = Node::new("cla", &node_config(&redis, "edge-a", "shared-secret-1"));
    let mut b = Node::new("clb", &node_config(&redis, "edge-b", "shared-secret-1"));
    let mut c = Node::new("clc", &node_config(&redis, "edge-c", "shared-secret-1"));
    a.start();
    b.start();
    c.start();
    a.wait_connected(true);
    b.wait_connected(true);
    c.wait_connected(true);
    // Same addresses in every pair: the scanner is 198.51.100.1 at each edge.
    let ip = a.pair.a4.to_string();
    assert_eq!(b.send(5), 5, "not banned yet");
    assert_eq!(c.send(5), 5, "not banned yet");
    let before_c = c.xdp_banned();

    let before = b.xdp_banned();
    let add = a.dirs.cli(&[
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
    let ban = json(&b.dirs.cli(&["ban", "list", "--json"]));
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
    let del = c.dirs.cli(&["ban", "del", &ip]);
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
    let text = out(&a.dirs.cli(&["status"]));
    assert!(text.contains("edge-a, edge-b, edge-c"), "{text}");
    a.stop();
    b.stop();
    c.stop();
}

/// Redis stopped: both nodes keep enforcing what they had (a node restarted meanwhile comes
/// up with its local state), A keeps banning and queues; when Redis is back, A's bans of the
/// outage reach B.
#[test]
fn bans_made_during_a_redis_outage_reach_the_others_after_it() {
    let test = "bans_made_during_a_redis_outage_reach_the_others_after_it";
    if !require_root(test) || !redis_installed(test) {
        return;
    }
    let tmp = TempDir::new("cluster-redis-down");
    let mut redis = Redis::start(&tmp.path);
    let mut a = Node::new("cda", &node_config(&redis, "edge-a", "shared-secret-2"));
    let mut b = Node::new("cdb", &node_config(&redis, "edge-b", "shared-secret-2"));
    a.start();
    b.start();
    a.wait_connected(true);
    b.wait_connected(true);
    let ip = a.pair.a4.to_string();
    assert!(
        a.dirs
            .cli(&["ban", "add", &ip, "--for", "1h"])
            .status
            .success()
    );
    if b.wait_banned(&ip, true, Duration::from_secs(5)).is_none() {
        panic!(
            "B did not get the ban before the outage\nA: {}\nB: {}\nredis: {}",
            a.stop(),
            b.stop(),
            redis.cli(&["KEYS", "*"])
        );
    }

    redis.stop();
    a.wait_connected(false);
    b.wait_connected(false);
    assert_eq!(a.metric("sipfw_cluster_connected"), 0.0);
    assert_eq!(b.send(10), 0, "B enforces what it had during the outage");
    // Made on A while Redis is away: enforced on A at once, queued for the others.
    let during = "192.0.2.77";
    assert!(
        a.dirs
            .cli(&["ban", "add", during, "--for", "1h"])
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

    redis.spawn();
    a.wait_connected(true);
    b.wait_connected(true);
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
    a.stop();
    b.stop();
}

/// `user add` on A: the subscriber registers through B; `deny add` on B drops the source on
/// A; `deny del` and `user del` on the other node undo them everywhere. Only digest hashes
/// reach Redis.
#[test]
fn subscribers_and_lists_apply_on_every_node() {
    let test = "subscribers_and_lists_apply_on_every_node";
    if !require_root(test) || !redis_installed(test) {
        return;
    }
    let tmp = TempDir::new("cluster-redis-users");
    let redis = Redis::start(&tmp.path);
    let mut a = Node::new("cua", &node_config(&redis, "edge-a", "shared-secret-3"));
    let mut b = Node::new("cub", &node_config(&redis, "edge-b", "shared-secret-3"));
    a.start();
    b.start();
    a.wait_connected(true);
    b.wait_connected(true);

    let add = a.dirs.cli(&[
        "user",
        "add",
        "carol",
        "--domain",
        "example.com",
        "--password",
        "pw-carol-7",
    ]);
    assert!(add.status.success(), "{}", err(&add));
    let has_carol = |n: &Node| {
        json(&n.dirs.cli(&["user", "list", "--json"]))
            .as_array()
            .is_some_and(|a| a.iter().any(|u| u["user"] == "carol"))
    };
    let t0 = Instant::now();
    while !has_carol(&b) {
        assert!(t0.elapsed() < Duration::from_secs(5), "B never got carol");
        std::thread::sleep(Duration::from_millis(20));
    }
    let a4 = b.pair.a4;
    let server = SocketAddr::new(std::net::IpAddr::V4(b.pair.b4), 5060);
    let res = in_ns(&b.pair.ns_a, move || {
        register_storm(
            std::net::IpAddr::V4(a4),
            server,
            "example.com",
            &[("carol".to_string(), "pw-carol-7".to_string())],
            10,
            Duration::from_secs(10),
        )
    })
    .expect("register from B's client namespace");
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
    assert!(b.dirs.cli(&["deny", "add", &ip]).status.success());
    let denied = |n: &Node| {
        json(&n.dirs.cli(&["deny", "list", "--json"]))
            .as_array()
            .is_some_and(|l| l.iter().any(|x| x == &format!("{ip}/32")))
    };
    let t0 = Instant::now();
    while !denied(&a) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "A never got B's deny"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(a.send(10), 0, "A drops what B denied");
    assert!(a.dirs.cli(&["deny", "del", &ip]).status.success());
    let t0 = Instant::now();
    while denied(&b) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "B kept the deny A removed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(b.send(5), 5);

    assert!(
        b.dirs
            .cli(&["user", "del", "carol", "--domain", "example.com"])
            .status
            .success()
    );
    let t0 = Instant::now();
    while has_carol(&a) {
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "A kept carol after user del on B"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    a.stop();
    b.stop();
}

/// Run the daemon of `node` until it exits on its own (at most 20 s): its exit code and
/// stderr.
fn run_until_exit(node: &Node) -> (Option<i32>, String) {
    let p = &node.pair;
    let mut child = node
        .dirs
        .command(p, &["--iface", p.if_b, "--xdp-mode", "generic", "--detach"])
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
/// Record-Route stamps and records would not verify on the others), with a clear error, and takes
/// nothing from Redis; Redis holds a keyed fingerprint, never the secret. A `[cluster]`
/// without a secret does not start.
#[test]
fn a_node_with_another_secret_refuses_to_join() {
    let test = "a_node_with_another_secret_refuses_to_join";
    if !require_root(test) || !redis_installed(test) {
        return;
    }
    let tmp = TempDir::new("cluster-redis-secret");
    let redis = Redis::start(&tmp.path);
    let mut a = Node::new("csa", &node_config(&redis, "edge-a", "the-right-secret"));
    a.start();
    a.wait_connected(true);
    assert!(
        a.dirs
            .cli(&["ban", "add", "192.0.2.55", "--for", "1h"])
            .status
            .success()
    );
    let fp = redis.cli(&["GET", "sipfw:secret-fingerprint"]);
    assert_eq!(fp.trim().len(), 64, "{fp}");
    assert!(!fp.contains("the-right-secret"));

    let b = Node::new("csb", &node_config(&redis, "edge-b", "another-secret"));
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
    let mut d = Node::new("csd", &node_config(&redis, "edge-d", "the-right-secret"));
    d.start();
    assert!(
        d.banned("192.0.2.55"),
        "the first answer already lists A's ban"
    );
    d.stop();

    let config = node_config(&redis, "edge-c", "x").replace(
        &format!("secret = \"{}\"\n", sip_firewall_tests::secret("x")),
        "",
    );
    let c = Node::new("csc", &config);
    let (code, stderr) = run_until_exit(&c);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("[cluster] needs [auth] secret"), "{stderr}");
    a.stop();
}

/// `svmap` from A's client namespace against edge A: A learns a scanner
/// ban; B gets it from Redis and drops the same source's scan in XDP (its counter moves, its
/// message layer sees nothing), without ever having seen the scanner itself.
#[test]
fn a_scanner_banned_on_one_edge_is_dropped_by_xdp_on_another() {
    let test = "a_scanner_banned_on_one_edge_is_dropped_by_xdp_on_another";
    if !require_root(test) || !redis_installed(test) {
        return;
    }
    let Some(svmap) = support::sipvicious(test, "sipvicious_svmap") else {
        return;
    };
    let tmp = TempDir::new("cluster-redis-scan");
    let redis = Redis::start(&tmp.path);
    let mut a = Node::new("cva", &node_config(&redis, "edge-a", "shared-secret-4"));
    let mut b = Node::new("cvb", &node_config(&redis, "edge-b", "shared-secret-4"));
    a.start();
    b.start();
    a.wait_connected(true);
    b.wait_connected(true);
    let scan = |n: &Node| {
        let child = support::in_netns(&n.pair.ns_a, &svmap)
            .args(["-p", "5060", "-x", &n.pair.a4.to_string(), "-t", "0.05"])
            .arg(n.pair.b4.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn svmap");
        let (_, killed) = support::wait_bounded(child, Duration::from_secs(30));
        assert!(!killed, "svmap did not end within 30 s");
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
    let ban = json(&b.dirs.cli(&["ban", "list", "--json"]));
    assert!(
        ban[0]["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("scanner")),
        "{ban}"
    );
    let m0 = support::Metrics::scrape(&b.pair);
    scan(&b);
    let m1 = support::Metrics::scrape(&b.pair);
    assert!(
        m1.xdp("banned") > m0.xdp("banned"),
        "B's XDP dropped the scan as banned"
    );
    assert_eq!(
        m1.messages_seen(),
        m0.messages_seen(),
        "B's message layer saw nothing of the scanner"
    );
    a.stop();
    b.stop();
}

/// The network between the edges: a bridge in a namespace of its own, each node's daemon
/// namespace joined to it by a veth (`cl0`, 192.0.2.1X/24). Removed on drop.
struct Backbone {
    ns: String,
}

impl Backbone {
    fn new(tag: &str) -> Backbone {
        let ns = format!("sfw-{}-{tag}-bb", std::process::id());
        sip_firewall_tests::netns::ip(&["netns", "add", &ns]).expect("backbone namespace");
        let bb = Backbone { ns };
        let x = |args: &[&str]| {
            let mut full = vec!["netns", "exec", bb.ns.as_str(), "ip"];
            full.extend_from_slice(args);
            sip_firewall_tests::netns::ip(&full).expect("backbone");
        };
        x(&["link", "add", "br0", "type", "bridge"]);
        x(&["link", "set", "br0", "up"]);
        bb
    }

    /// Join `node`'s daemon namespace as 192.0.2.`host`; its clients (namespace a) reach
    /// the backbone through the daemon's namespace (the edges' Record-Route names these
    /// addresses).
    fn join(&self, node: &Node, host: u8) {
        let peer = format!("bb{host}");
        sip_firewall_tests::netns::ip(&[
            "link",
            "add",
            "cl0",
            "netns",
            &node.pair.ns_b,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            &self.ns,
        ])
        .expect("backbone veth");
        let inns = |ns: &str, args: &[&str]| {
            let mut full = vec!["netns", "exec", ns, "ip"];
            full.extend_from_slice(args);
            sip_firewall_tests::netns::ip(&full).expect("backbone setup");
        };
        inns(&self.ns, &["link", "set", &peer, "master", "br0"]);
        inns(&self.ns, &["link", "set", &peer, "up"]);
        inns(
            &node.pair.ns_b,
            &["addr", "add", &format!("192.0.2.{host}/24"), "dev", "cl0"],
        );
        inns(&node.pair.ns_b, &["link", "set", "cl0", "up"]);
        inns(
            &node.pair.ns_a,
            &[
                "route",
                "add",
                "192.0.2.0/24",
                "via",
                &node.pair.b4.to_string(),
            ],
        );
    }
}

impl Drop for Backbone {
    fn drop(&mut self) {
        let _ = sip_firewall_tests::netns::ip(&["netns", "del", &self.ns]);
    }
}

/// A node of the registration tests: the SIPp test subscribers, short timers, advertised
/// (Via, Record-Route, Path) at its backbone address 192.0.2.`host`.
fn sip_node_config(redis: &Redis, node: &str, host: u8) -> String {
    support::config(&format!(
        "secret = \"{}\"\n[cluster]\nredis = \"{}\"\nnode = \"{node}\"\n",
        sip_firewall_tests::secret("shared-secret-path"),
        redis.url()
    ))
    .replace(
        "advertise = \"198.51.100.2:5060\"",
        &format!("advertise = \"192.0.2.{host}:5060\""),
    )
}

/// Poll until a UDP port is bound in namespace `ns` (a SIPp UAS ready for its call).
fn wait_udp_bound(ns: &str, port: u16) {
    let t0 = Instant::now();
    loop {
        let o = Command::new("ip")
            .args(["netns", "exec", ns, "ss", "-Hlun"])
            .output()
            .expect("ss");
        if out(&o).contains(&format!(":{port} ")) {
            return;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "UAS never bound");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// bob's binding in Redis names `node` (written through by the node he registered on).
fn wait_binding_on(redis: &Redis, node: &str) {
    let t0 = Instant::now();
    loop {
        let stored = redis.cli(&["HGETALL", "sipfw:loc:bob@example.com"]);
        if stored.contains(&format!("\"node\":\"{node}\"")) {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "bob's binding never named {node}: {stored}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Issue 13, registrations: bob registers through A (the binding goes to Redis with A's
/// Path); alice calls bob through B, and the call completes via A, which reaches bob over
/// the flow he registered on (A relays it as a cluster hop, B forwarded it). bob
/// re-registers through C: the next call goes via C, and A sees nothing of it.
#[test]
fn a_call_through_b_reaches_bob_registered_through_a() {
    let test = "a_call_through_b_reaches_bob_registered_through_a";
    if !require_root(test) || !redis_installed(test) || !support::sipp_installed(test) {
        return;
    }
    let _turn = support::one_at_a_time();
    let tmp = TempDir::new("cluster-path");
    let redis = Redis::start(&tmp.path);
    let mut a = Node::new("cpa", &sip_node_config(&redis, "edge-a", 11));
    let mut b = Node::new("cpb", &sip_node_config(&redis, "edge-b", 12));
    let mut c = Node::new("cpc", &sip_node_config(&redis, "edge-c", 13));
    let bb = Backbone::new("cp");
    bb.join(&a, 11);
    bb.join(&b, 12);
    bb.join(&c, 13);
    a.start();
    b.start();
    c.start();
    a.wait_connected(true);
    b.wait_connected(true);
    c.wait_connected(true);

    let bob_port = 5070;
    let reg = support::register_bob(&a.pair, &tmp.path, bob_port);
    assert!(
        reg.ok,
        "bob registers through A: {}\n{}",
        reg.output, reg.trace
    );
    wait_binding_on(&redis, "edge-a");
    let stored = redis.cli(&["HGETALL", "sipfw:loc:bob@example.com"]);
    assert!(
        stored.contains("sip:192.0.2.11:5060;lr"),
        "A's Path URI: {stored}"
    );

    // One call alice -> bob through B while bob's UAS answers behind A.
    let call = |holder: &Node, n: usize| {
        let uas = support::sipp_cmd(
            &holder.pair,
            &tmp.path,
            "uas.xml",
            bob_port,
            false,
            &["-m", "1"],
        )
        .spawn()
        .expect("spawn uas");
        wait_udp_bound(&holder.pair.ns_a, bob_port);
        let uac = support::alice_calls_bob(&b.pair, &tmp.path, 5080 + n as u16, 1);
        let (uas_out, _) = support::wait_bounded(uas, Duration::from_secs(40));
        let uas = support::finish(&tmp.path, "uas.xml", bob_port, uas_out);
        assert!(uac.ok, "alice's call {n}: {}\n{}", uac.output, uac.trace);
        assert!(
            uas.ok,
            "bob answers call {n}: {}\n{}",
            uas.output, uas.trace
        );
    };
    let hop = "sipfw_proxy_forwarded_total{kind=\"cluster_hop\"}";
    let requests = "sipfw_proxy_forwarded_total{kind=\"request\"}";
    let b0 = b.metric(requests);
    call(&a, 1);
    assert_eq!(a.metric(hop), 1.0, "A relayed the INVITE to bob's flow");
    assert!(
        a.metric(requests) >= 2.0,
        "A forwarded the INVITE and the BYE"
    );
    assert!(
        b.metric(requests) >= b0 + 2.0,
        "B forwarded the INVITE and the BYE to A"
    );

    // bob moves to C: the next call goes via C, not A.
    let reg = support::register_bob(&c.pair, &tmp.path, bob_port);
    assert!(
        reg.ok,
        "bob registers through C: {}\n{}",
        reg.output, reg.trace
    );
    wait_binding_on(&redis, "edge-c");
    let a_before = a.metric(requests);
    call(&c, 2);
    assert_eq!(c.metric(hop), 1.0, "C relayed the INVITE to bob's flow");
    assert_eq!(a.metric(hop), 1.0, "A saw nothing of the second call");
    assert_eq!(a.metric(requests), a_before, "A forwarded nothing");

    drop(bb);
    a.stop();
    b.stop();
    c.stop();
}

/// Issue 13: a ban deleted on A while B alone was cut off from Redis (B's Redis user
/// disabled and its connections killed: A and Redis carry on) is lifted on B when B comes
/// back: its full load reconciles, lifting the cluster's bans Redis no longer has. A ban B
/// made while cut off (local, queued) stays and reaches A.
#[test]
fn a_ban_deleted_while_a_node_was_cut_off_is_lifted_when_it_returns() {
    let test = "a_ban_deleted_while_a_node_was_cut_off_is_lifted_when_it_returns";
    if !require_root(test) || !redis_installed(test) {
        return;
    }
    let tmp = TempDir::new("cluster-reconcile");
    let redis = Redis::start(&tmp.path);
    assert!(
        redis
            .cli(&[
                "ACL", "SETUSER", "edge-b", "on", ">pw-b", "~*", "&*", "+@all"
            ])
            .contains("OK")
    );
    let mut a = Node::new("cra", &node_config(&redis, "edge-a", "shared-secret-5"));
    let b_config = node_config(&redis, "edge-b", "shared-secret-5").replace(
        &redis.url(),
        &format!("{}?user=edge-b&pass=pw-b", redis.url()),
    );
    let mut b = Node::new("crb", &b_config);
    a.start();
    b.start();
    a.wait_connected(true);
    b.wait_connected(true);
    let ip = a.pair.a4.to_string();
    assert!(
        a.dirs
            .cli(&["ban", "add", &ip, "--for", "1h"])
            .status
            .success()
    );
    assert!(b.wait_banned(&ip, true, Duration::from_secs(5)).is_some());

    // B alone is cut off.
    assert!(
        redis
            .cli(&["ACL", "SETUSER", "edge-b", "off"])
            .contains("OK")
    );
    redis.cli(&["CLIENT", "KILL", "USER", "edge-b"]);
    b.wait_connected(false);
    a.wait_connected(true);
    assert!(a.dirs.cli(&["ban", "del", &ip]).status.success());
    assert_eq!(
        redis.cli(&["EXISTS", &format!("sipfw:ban:{ip}")]).trim(),
        "0"
    );
    let local = "192.0.2.88";
    assert!(
        b.dirs
            .cli(&["ban", "add", local, "--for", "1h"])
            .status
            .success()
    );
    assert!(b.banned(&ip), "B cannot know yet");
    assert_eq!(b.send(5), 0, "and still drops the source");

    assert!(
        redis
            .cli(&["ACL", "SETUSER", "edge-b", "on"])
            .contains("OK")
    );
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
    a.stop();
    b.stop();
}

/// Issue 13: the outbox survives a restart. Redis down; A bans and takes a registration,
/// both queued; A is restarted during the outage (its queue is in the state database);
/// when Redis is back B gets the ban and Redis the registration.
#[test]
fn changes_queued_during_an_outage_survive_a_restart() {
    let test = "changes_queued_during_an_outage_survive_a_restart";
    if !require_root(test) || !redis_installed(test) || !support::sipp_installed(test) {
        return;
    }
    let _turn = support::one_at_a_time();
    let tmp = TempDir::new("cluster-outbox");
    let mut redis = Redis::start(&tmp.path);
    let mut a = Node::new("coa", &sip_node_config(&redis, "edge-a", 11));
    let mut b = Node::new("cob", &sip_node_config(&redis, "edge-b", 12));
    a.start();
    b.start();
    a.wait_connected(true);
    b.wait_connected(true);

    redis.stop();
    a.wait_connected(false);
    b.wait_connected(false);
    let during = "192.0.2.99";
    assert!(
        a.dirs
            .cli(&["ban", "add", during, "--for", "1h"])
            .status
            .success()
    );
    let reg = support::register_bob(&a.pair, &tmp.path, 5070);
    assert!(
        reg.ok,
        "bob registers through A during the outage: {}\n{}",
        reg.output, reg.trace
    );
    a.stop();
    a.start();
    assert!(a.banned(during), "A's state database kept its ban");

    redis.spawn();
    a.wait_connected(true);
    b.wait_connected(true);
    assert!(
        b.wait_banned(during, true, Duration::from_secs(10))
            .is_some(),
        "A's ban of the outage reached B although A restarted meanwhile"
    );
    wait_binding_on(&redis, "edge-a");
    a.stop();
    b.stop();
}

/// A Redis process (server or Sentinel) on TCP at 192.0.2.100 in the backbone namespace;
/// killed on drop.
struct TcpRedis {
    child: Child,
    ns: String,
    port: u16,
}

impl TcpRedis {
    const HOST: &'static str = "192.0.2.100";

    /// `redis-server` with `args` (a config file and `--sentinel`, or options).
    fn start(bb: &Backbone, port: u16, args: &[&str]) -> TcpRedis {
        let child = Command::new("ip")
            .args(["netns", "exec", &bb.ns, "redis-server"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let r = TcpRedis {
            child,
            ns: bb.ns.clone(),
            port,
        };
        let t0 = Instant::now();
        while !r.cli(&["PING"]).contains("PONG") {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "redis on port {port} did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    /// A data server; a replica of `primary` if given.
    fn server(bb: &Backbone, dir: &Path, port: u16, primary: Option<u16>) -> TcpRedis {
        let dir = dir.join(format!("r{port}"));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let (p, d) = (port.to_string(), dir.display().to_string());
        let mut args = vec![
            "--bind",
            Self::HOST,
            "--port",
            &p,
            "--save",
            "",
            "--appendonly",
            "no",
            // A namespace of the test's own: no one else can reach it.
            "--protected-mode",
            "no",
            "--dir",
            &d,
        ];
        let of = primary.map(|p| p.to_string());
        if let Some(of) = &of {
            args.extend_from_slice(&["--replicaof", Self::HOST, of]);
        }
        TcpRedis::start(bb, port, &args)
    }

    fn cli(&self, args: &[&str]) -> String {
        Command::new("ip")
            // Bounded: a server that does not answer must not hang the test.
            .args(["netns", "exec", &self.ns, "timeout", "5", "redis-cli"])
            .args(["-h", Self::HOST])
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for TcpRedis {
    fn drop(&mut self) {
        // SAFETY: kill(2) of our own child (`ip netns exec` execs redis-server).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Poll `what` until it holds, at most `limit`; panics with `msg()`.
fn wait_for(limit: Duration, mut what: impl FnMut() -> bool, msg: impl Fn() -> String) {
    let t0 = Instant::now();
    while !what() {
        assert!(t0.elapsed() < limit, "{}", msg());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Issue 13, Sentinel-managed primaries: a primary (6379), its replica (6380) and a Sentinel
/// (26379) on the backbone; the nodes are given only the Sentinel
/// (`redis+sentinel://192.0.2.100:26379/sipfw/0`). They find the primary through it and
/// share a ban; after `SENTINEL FAILOVER` they follow the Sentinel to the new primary (the
/// replica), keep the ban (the replica had it), and a new ban still propagates.
#[test]
fn nodes_find_the_primary_through_sentinel_and_follow_a_failover() {
    let test = "nodes_find_the_primary_through_sentinel_and_follow_a_failover";
    if !require_root(test) || !redis_installed(test) {
        return;
    }
    let tmp = TempDir::new("cluster-sentinel");
    let bb = Backbone::new("cs");
    sip_firewall_tests::netns::ip(&[
        "netns",
        "exec",
        &bb.ns,
        "ip",
        "addr",
        "add",
        "192.0.2.100/24",
        "dev",
        "br0",
    ])
    .expect("backbone address");
    sip_firewall_tests::netns::ip(&["netns", "exec", &bb.ns, "ip", "link", "set", "lo", "up"])
        .expect("backbone loopback");
    let primary = TcpRedis::server(&bb, &tmp.path, 6379, None);
    let replica = TcpRedis::server(&bb, &tmp.path, 6380, Some(6379));
    let conf = tmp.path.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port 26379\nbind {h}\nprotected-mode no\ndir {d}\n\
             sentinel monitor sipfw {h} 6379 1\n\
             sentinel down-after-milliseconds sipfw 2000\n\
             sentinel failover-timeout sipfw 10000\n",
            h = TcpRedis::HOST,
            d = tmp.path.display()
        ),
    )
    .expect("sentinel.conf");
    let sentinel = TcpRedis::start(&bb, 26379, &[&conf.display().to_string(), "--sentinel"]);
    let master_port = || {
        sentinel
            .cli(&["SENTINEL", "get-master-addr-by-name", "sipfw"])
            .lines()
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    wait_for(
        Duration::from_secs(20),
        || {
            replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")
                && sentinel
                    .cli(&["SENTINEL", "replicas", "sipfw"])
                    .contains("6380")
        },
        || {
            format!(
                "the Sentinel never saw the replica: {}",
                sentinel.cli(&["SENTINEL", "replicas", "sipfw"])
            )
        },
    );
    assert_eq!(master_port(), "6379");

    let config = |node: &str| {
        format!(
            "[sip]\ndomains = [\"example.com\"]\n[proxy]\nadvertise = \"198.51.100.2:5060\"\n\
             [auth]\nsecret = \"{}\"\n[cluster]\n\
             redis = \"redis+sentinel://{}:26379/sipfw/0\"\nnode = \"{node}\"\n",
            sip_firewall_tests::secret("shared-secret-sentinel"),
            TcpRedis::HOST
        )
    };
    let mut a = Node::new("csna", &config("edge-a"));
    let mut b = Node::new("csnb", &config("edge-b"));
    bb.join(&a, 11);
    bb.join(&b, 12);
    a.start();
    b.start();
    a.wait_connected(true);
    b.wait_connected(true);
    for n in [&a, &b] {
        let s = n.status();
        assert_eq!(
            s["cluster"]["redis"], "192.0.2.100:6379",
            "the primary: {s}"
        );
    }
    let ip = a.pair.a4.to_string();
    assert!(
        a.dirs
            .cli(&["ban", "add", &ip, "--for", "1h"])
            .status
            .success()
    );
    assert!(
        b.wait_banned(&ip, true, Duration::from_secs(5)).is_some(),
        "B got A's ban through the primary the Sentinel named"
    );
    assert!(
        primary
            .cli(&["EXISTS", &format!("sipfw:ban:{ip}")])
            .contains('1')
    );

    // Failover: the replica becomes the primary; the nodes follow.
    assert!(
        sentinel
            .cli(&["SENTINEL", "FAILOVER", "sipfw"])
            .contains("OK")
    );
    wait_for(
        Duration::from_secs(30),
        || master_port() == "6380",
        || {
            format!(
                "no failover: {}",
                sentinel.cli(&["SENTINEL", "master", "sipfw"])
            )
        },
    );
    for (name, n) in [("A", &a), ("B", &b)] {
        wait_for(
            Duration::from_secs(30),
            || {
                let s = n.status();
                s["cluster"]["redis"] == "192.0.2.100:6380" && s["cluster"]["connected"] == true
            },
            || format!("{name} did not follow the failover: {}", n.status()),
        );
    }
    assert!(
        b.banned(&ip),
        "the ban from before the failover still holds on B"
    );
    assert!(a.banned(&ip), "and on A");
    let after = "192.0.2.66";
    assert!(
        b.dirs
            .cli(&["ban", "add", after, "--for", "1h"])
            .status
            .success()
    );
    assert!(
        a.wait_banned(after, true, Duration::from_secs(5)).is_some(),
        "a ban made after the failover propagates through the new primary"
    );
    assert!(
        replica
            .cli(&["EXISTS", &format!("sipfw:ban:{after}")])
            .contains('1')
    );
    a.stop();
    b.stop();
    drop(sentinel);
    drop(primary);
    drop(replica);
    drop(bb);
}

/// bob's binding in Redis: its contact (the Request-URI a cluster hop to him carries). The
/// value is sealed (`sfw1.<MAC>.<JSON>`, `cluster::trust`): the JSON is read after the MAC.
fn bob_contact(redis: &Redis) -> String {
    let stored = redis.cli(&["HGETALL", "sipfw:loc:bob@example.com"]);
    stored
        .lines()
        .filter_map(|l| l.splitn(3, '.').nth(2))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v["contact"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no binding of bob in Redis: {stored}"))
}

/// Issue 13, no open relay: an outsider who writes edge A's Path Route with a cluster-hop
/// seal of its own (a well-formed seal with a made-up tag, one sealed under another key,
/// and none at all) for bob, registered through A, gets 403; A relays nothing to bob's
/// flow (his port receives nothing, `cluster_hop` forwards stay 0) and counts the refusals.
/// The unit test `proxy::core::tests::cluster::an_outsider_forging_the_path_route_is_refused`
/// covers the same at the core, and the real hop from B `a_call_through_b_reaches_bob...`.
#[test]
fn an_outsider_forging_the_cluster_hop_route_is_refused_by_the_daemon() {
    let test = "an_outsider_forging_the_cluster_hop_route_is_refused_by_the_daemon";
    if !require_root(test) || !redis_installed(test) || !support::sipp_installed(test) {
        return;
    }
    let _turn = support::one_at_a_time();
    let tmp = TempDir::new("cluster-forge");
    let redis = Redis::start(&tmp.path);
    let mut a = Node::new("cfa", &sip_node_config(&redis, "edge-a", 11));
    a.start();
    a.wait_connected(true);
    let bob_port = 5070;
    let reg = support::register_bob(&a.pair, &tmp.path, bob_port);
    assert!(
        reg.ok,
        "bob registers through A: {}\n{}",
        reg.output, reg.trace
    );
    wait_binding_on(&redis, "edge-a");
    let contact = bob_contact(&redis);

    // bob's flow: his port, now a plain socket that sees whatever A relays to him.
    let ns = a.pair.ns_a.clone();
    let bob = in_ns(&ns, move || Ok(UdpSocket::bind(("0.0.0.0", bob_port))?)).expect("bob");
    bob.set_nonblocking(true).expect("nonblocking");
    let outsider = in_ns(&ns, || Ok(UdpSocket::bind("0.0.0.0:5099")?)).expect("outsider");
    outsider
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let edge = SocketAddr::new(a.pair.b(false), 5060);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let aor = "bob@example.com";
    let aor_hex: String = aor.bytes().map(|b| format!("{b:02x}")).collect();
    let seals = [
        (
            "forge-1",
            format!("{now}.{aor_hex}.00112233445566778899aabbccddeeff"),
        ),
        (
            "forge-2",
            sip_firewall::proxy::route::seal_cluster_hop(
                b"not the cluster's key",
                now,
                aor,
                "forge-2",
                &contact,
            ),
        ),
        ("forge-3", String::new()),
    ];
    let hop0 = a.metric("sipfw_proxy_forwarded_total{kind=\"cluster_hop\"}");
    let refused0 = a.metric("sipfw_dialog_refused_total{reason=\"cluster_hop\"}");
    for (call_id, seal) in &seals {
        let route = if seal.is_empty() {
            "<sip:192.0.2.11:5060;lr>".to_string()
        } else {
            format!("<sip:192.0.2.11:5060;lr;sfwc={seal}>")
        };
        let invite = format!(
            "INVITE {contact} SIP/2.0\r\nVia: SIP/2.0/UDP {}:5099;branch=z9hG4bK{call_id}\r\n\
             Max-Forwards: 70\r\nRoute: {route}\r\nFrom: <sip:x@evil.example>;tag=x\r\n\
             To: <sip:{aor}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\n\
             Content-Length: 0\r\n\r\n",
            a.pair.a4
        );
        outsider.send_to(invite.as_bytes(), edge).expect("send");
        // A answers the outsider with a final response: its decision is made.
        let t0 = Instant::now();
        let mut buf = [0u8; 4096];
        let status = loop {
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "{call_id}: no final answer from A"
            );
            if let Ok(n) = outsider.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.contains(&format!("Call-ID: {call_id}")) && !text.starts_with("SIP/2.0 1") {
                    break text.lines().next().unwrap_or_default().to_string();
                }
            }
        };
        assert!(status.starts_with("SIP/2.0 403"), "{call_id}: {status}");
        let relayed = bob
            .recv(&mut buf)
            .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned());
        assert!(
            relayed.is_err(),
            "{call_id}: A relayed it to bob: {relayed:?}"
        );
    }
    assert_eq!(
        a.metric("sipfw_proxy_forwarded_total{kind=\"cluster_hop\"}"),
        hop0,
        "A relayed no cluster hop"
    );
    assert!(
        a.metric("sipfw_dialog_refused_total{reason=\"cluster_hop\"}") >= refused0 + 2.0,
        "the sealed attempts are counted"
    );
    a.stop();
}

/// bob sends one REGISTER through `node` from its client namespace (port 5090), `contact`
/// being a URI or `*`, with `Expires: expires`, answering the digest challenge (MD5); the
/// final status code.
fn bob_registers(node: &Node, call_id: &str, contact: &str, expires: u32) -> u16 {
    use sip_firewall::auth::digest::{Algorithm, response_auth};
    let sock = in_ns(&node.pair.ns_a, || Ok(UdpSocket::bind("0.0.0.0:5090")?)).expect("sock");
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let server = SocketAddr::new(node.pair.b(false), 5060);
    let local = SocketAddr::new(std::net::IpAddr::V4(node.pair.a4), 5090);
    let contact = if contact == "*" {
        "*".to_string()
    } else {
        format!("<{contact}>")
    };
    let request = |cseq: u32, auth: &str| {
        format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{call_id}{cseq};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=b{cseq}\r\nTo: <sip:bob@example.com>\r\n\
             Call-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: {contact}\r\nExpires: {expires}\r\n\
             {auth}Content-Length: 0\r\n\r\n"
        )
    };
    // A final answer to `req`, retransmitted on silence; at most 10 s.
    let exchange = |req: &str| -> String {
        let t0 = Instant::now();
        let mut buf = [0u8; 4096];
        loop {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "{call_id}: no answer"
            );
            sock.send_to(req.as_bytes(), server).expect("send");
            while let Ok(n) = sock.recv(&mut buf) {
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                if text.contains(call_id) && !text.starts_with("SIP/2.0 1") {
                    return text;
                }
            }
        }
    };
    let first = exchange(&request(1, ""));
    let challenge = first
        .lines()
        .find_map(|l| l.strip_prefix("WWW-Authenticate: "))
        .unwrap_or_else(|| panic!("{call_id}: no challenge: {first}"));
    let param = |k: &str| {
        challenge
            .split(&format!("{k}=\""))
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap_or_default()
            .to_string()
    };
    let (realm, nonce) = (param("realm"), param("nonce"));
    let ha1 = Algorithm::Md5.ha1("bob", &realm, support::BOB_PASSWORD);
    let uri = "sip:example.com";
    let response = response_auth(
        Algorithm::Md5,
        &ha1,
        &nonce,
        "00000001",
        "c0ffee",
        "REGISTER",
        uri,
    );
    let auth = format!(
        "Authorization: Digest username=\"bob\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"c0ffee\"\r\n"
    );
    let last = exchange(&request(2, &auth));
    last.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{call_id}: {last}"))
}

/// Issue 13: a binding is refreshed, removed with `expires=0`, and all removed with
/// `Contact: *` (RFC 3261 10.3) through any node, and every node's cache follows
/// (`sipfw_registrar_bindings`, Redis). Also while the nodes are cut off from Redis (their
/// Redis users disabled, Redis keeps its data): B takes the removal of bindings A holds,
/// B comes back first and writes it out, then A comes back and its full load drops the
/// bindings removed meanwhile (A missed the event).
#[test]
fn bindings_are_refreshed_and_removed_through_any_node() {
    let test = "bindings_are_refreshed_and_removed_through_any_node";
    if !require_root(test) || !redis_installed(test) {
        return;
    }
    let tmp = TempDir::new("cluster-unregister");
    let redis = Redis::start(&tmp.path);
    for (user, pw) in [("edge-a", "pw-a"), ("edge-b", "pw-b")] {
        let set = redis.cli(&[
            "ACL",
            "SETUSER",
            user,
            "on",
            &format!(">{pw}"),
            "~*",
            "&*",
            "+@all",
        ]);
        assert!(set.contains("OK"), "{set}");
    }
    let url = redis.url();
    let config = |node: &str, host: u8, pw: &str| {
        sip_node_config(&redis, node, host).replace(&url, &format!("{url}?user={node}&pass={pw}"))
    };
    let mut a = Node::new("cua", &config("edge-a", 11, "pw-a"));
    let mut b = Node::new("cub", &config("edge-b", 12, "pw-b"));
    a.start();
    b.start();
    a.wait_connected(true);
    b.wait_connected(true);
    let gauge = "sipfw_registrar_bindings";
    let wait_bindings = |n: &Node, name: &str, want: f64| {
        wait_for(
            Duration::from_secs(10),
            || n.metric(gauge) == want,
            || format!("{name} holds {} bindings, not {want}", n.metric(gauge)),
        );
    };
    let x = "sip:bob@198.51.100.1:5070";
    let y = "sip:bob@198.51.100.1:5071";
    let in_redis = || redis.cli(&["HKEYS", "sipfw:loc:bob@example.com"]);

    // Registered through A, refreshed through B: B holds the flow now.
    assert_eq!(bob_registers(&a, "r1", x, 600), 200);
    wait_bindings(&b, "B", 1.0);
    assert_eq!(bob_registers(&b, "r2", x, 1200), 200);
    wait_binding_on(&redis, "edge-b");
    wait_bindings(&a, "A", 1.0);
    // expires=0 through A of the binding B holds.
    assert_eq!(bob_registers(&a, "r3", x, 0), 200);
    wait_bindings(&b, "B", 0.0);
    wait_bindings(&a, "A", 0.0);
    assert_eq!(in_redis().trim(), "");
    // `*` through B of the two bindings A holds.
    assert_eq!(bob_registers(&a, "r4", x, 600), 200);
    assert_eq!(bob_registers(&a, "r5", y, 600), 200);
    wait_bindings(&b, "B", 2.0);
    assert_eq!(bob_registers(&b, "r6", "*", 0), 200);
    wait_bindings(&a, "A", 0.0);
    wait_bindings(&b, "B", 0.0);
    assert_eq!(in_redis().trim(), "");

    // Cut off: `expires=0` of x, then (second outage) `*`, through B, of what A holds.
    let cut = |on: bool, user: &str| {
        let state = if on { "on" } else { "off" };
        assert!(redis.cli(&["ACL", "SETUSER", user, state]).contains("OK"));
        if !on {
            redis.cli(&["CLIENT", "KILL", "USER", user]);
        }
    };
    assert_eq!(bob_registers(&a, "r7", x, 600), 200);
    assert_eq!(bob_registers(&a, "r8", y, 600), 200);
    wait_bindings(&b, "B", 2.0);
    for (removal, (call_id, contact, left)) in
        [("r9", x, 1.0), ("r10", "*", 0.0)].into_iter().enumerate()
    {
        cut(false, "edge-a");
        cut(false, "edge-b");
        a.wait_connected(false);
        b.wait_connected(false);
        assert_eq!(
            bob_registers(&b, call_id, contact, 0),
            200,
            "served locally"
        );
        wait_bindings(&b, "B", left);
        assert_eq!(
            a.metric(gauge),
            2.0 - removal as f64 * 1.0,
            "A cannot know yet"
        );
        cut(true, "edge-b");
        b.wait_connected(true);
        wait_for(
            Duration::from_secs(10),
            || in_redis().lines().filter(|l| !l.trim().is_empty()).count() == left as usize,
            || format!("B did not write {call_id} out: {}", in_redis()),
        );
        cut(true, "edge-a");
        a.wait_connected(true);
        wait_bindings(&a, "A", left);
    }
    a.stop();
    b.stop();
}

/// Issue 13: the alert rule for a node cut off from Redis (`SipFirewallClusterCutOff` in
/// `deploy/prometheus/alerts.yml`), run by `promtool test rules`: edge-a loses Redis at 45 s
/// and the alert is pending at 1 m, firing for edge-a alone at 2 m; edge-b, connected
/// throughout, never alerts.
#[test]
fn the_cut_off_alert_fires_for_a_node_without_redis() {
    let test = "the_cut_off_alert_fires_for_a_node_without_redis";
    if Command::new("promtool").arg("--version").output().is_err() {
        skip(
            test,
            "promtool is missing (apt-get install prometheus; cargo xtask setup does)",
        );
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

/// Issue 13, the first test of the issue: three edges; `svcrack` from A's client namespace
/// against bob on edge A is banned on A (its wrong passwords); B and C list the same source
/// within a second of A (polled, 1 s deadline) and drop it in XDP (counter moves, their
/// message layer sees nothing) without ever having seen svcrack; `ban del` on C lifts it
/// on A and B.
#[test]
fn svcrack_banned_on_a_is_dropped_by_xdp_on_b_and_c() {
    let test = "svcrack_banned_on_a_is_dropped_by_xdp_on_b_and_c";
    if !require_root(test) || !redis_installed(test) {
        return;
    }
    let Some(svcrack) = support::sipvicious(test, "sipvicious_svcrack") else {
        return;
    };
    let _turn = support::one_at_a_time();
    let tmp = TempDir::new("cluster-svcrack");
    let redis = Redis::start(&tmp.path);
    // As in sipvicious.rs: svcrack's User-Agent is on the scanner list; with the list
    // empty and the flood limit high, its failed authentications are what bans it.
    let config = |node: &str| {
        support::config(&format!(
            "secret = \"{}\"\n[policy]\nscanners = []\n[bans]\n\
             auth_failures = 5\n[xdp]\nflood_rate = 10000\nflood_burst = 10000\n\
             [cluster]\nredis = \"{}\"\nnode = \"{node}\"\n",
            sip_firewall_tests::secret("shared-secret-crack"),
            redis.url()
        ))
    };
    let mut a = Node::new("cka", &config("edge-a"));
    let mut b = Node::new("ckb", &config("edge-b"));
    let mut c = Node::new("ckc", &config("edge-c"));
    for n in [&mut a, &mut b, &mut c] {
        n.start();
    }
    for n in [&a, &b, &c] {
        n.wait_connected(true);
    }
    let ip = a.pair.a4.to_string();
    let mut words: Vec<String> = (0..10).map(|i| format!("guess-{i}")).collect();
    words.push(support::BOB_PASSWORD.to_string());
    let list = tmp.path.join("words.txt");
    std::fs::write(&list, words.join("\n") + "\n").expect("word list");
    let child = support::in_netns(&a.pair.ns_a, &svcrack)
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
    let (_, killed) = support::wait_bounded(child, Duration::from_secs(40));
    assert!(!killed, "svcrack did not end within 40 s");
    // A learned ban covers the SIP ports (`[bans] learned_scope`): SIP from the same source
    // to B's and C's port 5060.
    for (name, n) in [("B", &b), ("C", &c)] {
        let m0 = support::Metrics::scrape(&n.pair);
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
        let m1 = support::Metrics::poll(&n.pair, Duration::from_secs(5), |m| {
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
    assert!(c.dirs.cli(&["ban", "del", &ip]).status.success());
    for (name, n) in [("A", &a), ("B", &b)] {
        assert!(
            n.wait_banned(&ip, false, Duration::from_secs(5)).is_some(),
            "{name} still bans after ban del on C"
        );
    }
}
