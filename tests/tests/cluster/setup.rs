//! What the cluster tests share: the nodes' configs, the backbone network between the
//! edges, and bob's binding as Redis holds it.

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use sip_firewall_tests::{
    cluster::{Node, Redis},
    domain,
    netns::{End, Namespace, ip_in, veth},
    ua::{
        Account, status,
        udp::{Phone, socket_in},
    },
};

/// A node named `node` of the cluster in `redis`, its `[auth] secret` named `secret`.
pub fn node_config(redis: &Redis, node: &str, secret: &str) -> String {
    format!(
        r#"{}[auth]
secret = "{}"
[cluster]
redis = "{}"
node = "{node}"
"#,
        domain::EDGE_AT_B,
        sip_firewall_tests::secret(secret),
        redis.url()
    )
}

/// A node of the registration tests: the SIPp test subscribers, short timers, advertised
/// (Via, Record-Route, Path) at its backbone address 192.0.2.`host`.
pub fn sip_node_config(redis: &Redis, node: &str, host: u8) -> String {
    domain::config(&format!(
        "secret = \"{}\"\n[cluster]\nredis = \"{}\"\nnode = \"{node}\"\n",
        sip_firewall_tests::secret("shared-secret-path"),
        redis.url()
    ))
    .replace(
        "advertise = \"198.51.100.2:5060\"",
        &format!("advertise = \"192.0.2.{host}:5060\""),
    )
}

/// Poll `what` until it holds, at most `limit`; panics with `msg()`.
pub fn wait_for(limit: Duration, mut what: impl FnMut() -> bool, msg: impl Fn() -> String) {
    let t0 = Instant::now();
    while !what() {
        assert!(t0.elapsed() < limit, "{}", msg());
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The network between the edges: a bridge in a namespace of its own, each node's daemon
/// namespace joined to it by a veth (`cl0`, 192.0.2.1X/24). Removed on drop.
pub struct Backbone {
    pub ns: Namespace,
}

impl Backbone {
    pub fn new(tag: &str) -> Backbone {
        let ns = Namespace::new(format!("sfw-{}-{tag}-bb", std::process::id()))
            .expect("backbone namespace");
        ip_in(&ns, &["link", "add", "br0", "type", "bridge"]).expect("backbone");
        ip_in(&ns, &["link", "set", "br0", "up"]).expect("backbone");
        Backbone { ns }
    }

    /// Join `node`'s daemon namespace as 192.0.2.`host`; its clients (namespace a) reach
    /// the backbone through the daemon's namespace (the edges' Record-Route names these
    /// addresses).
    pub fn join(&self, node: &Node, host: u8) {
        let peer = format!("bb{host}");
        let (a, b) = (&node.pair.ns_a, &node.pair.ns_b);
        let end = |ns, name| End {
            ns,
            name,
            mac: None,
        };
        veth(end(b, "cl0"), end(&self.ns, &peer)).expect("backbone veth");
        let setup = |ns: &str, args: &[&str]| {
            ip_in(ns, args).expect("backbone setup");
        };
        setup(&self.ns, &["link", "set", &peer, "master", "br0"]);
        setup(
            b,
            &["addr", "add", &format!("192.0.2.{host}/24"), "dev", "cl0"],
        );
        let via = node.pair.b4.to_string();
        setup(a, &["route", "add", "192.0.2.0/24", "via", &via]);
    }
}

/// bob's binding in Redis names `node` (written through by the node he registered on).
pub fn wait_binding_on(redis: &Redis, node: &str) {
    wait_for(
        Duration::from_secs(5),
        || {
            redis
                .cli(&["HGETALL", "sipfw:loc:bob@example.com"])
                .contains(&format!("\"node\":\"{node}\""))
        },
        || {
            let stored = redis.cli(&["HGETALL", "sipfw:loc:bob@example.com"]);
            format!("bob's binding never named {node}: {stored}")
        },
    );
}

/// bob's binding in Redis: its contact (the Request-URI a cluster hop to him carries). The
/// value is sealed (`sfw1.<MAC>.<JSON>`, `cluster::trust`): the JSON is read after the MAC.
pub fn bob_contact(redis: &Redis) -> String {
    let stored = redis.cli(&["HGETALL", "sipfw:loc:bob@example.com"]);
    stored
        .lines()
        .filter_map(|l| l.splitn(3, '.').nth(2))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v["contact"].as_str().map(str::to_string))
        .unwrap_or_else(|| panic!("no binding of bob in Redis: {stored}"))
}

/// bob sends one REGISTER through `node` from its client namespace (port 5090), `contact`
/// being a URI or `*`, with `Expires: expires`, answering the digest challenge (MD5),
/// retransmitted on silence (10 s at most); the final status code.
pub fn bob_registers(node: &Node, call_id: &str, contact: &str, expires: u32) -> u16 {
    let sock = socket_in(&node.pair, "0.0.0.0:5090", Duration::from_millis(300));
    let account = Account::new("bob", "example.com", domain::BOB_PASSWORD);
    let mut bob = Phone::new(sock, node.sip(), account);
    bob.ua.sent_by = SocketAddr::new(node.pair.a(false), 5090).to_string();
    bob.wait = Duration::from_secs(10);
    bob.resend = true;
    let (_, last) = bob.register(call_id, Some(contact), expires);
    let last = last.unwrap_or_else(|| panic!("{call_id}: no answer"));
    status(&last)
}
