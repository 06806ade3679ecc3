//! `[cluster]`: Redis is an input, checked like the config file. Each test writes what an
//! attacker with write access to Redis would (`redis-cli` against the test's own
//! `redis-server` on a Unix socket): records and events that look valid but carry no MAC, or
//! a valid record moved to another key. The nodes refuse them and count them in
//! `sipfw_cluster_rejected_total{reason}`; honest changes still propagate. Records sealed
//! with the cluster's secret but with content the config would refuse (a node of ours gone
//! wrong) are refused too, by their content (`prefix`, `user`, `binding`).
//!
//! | attack | verdict | test |
//! | --- | --- | --- |
//! | `HSET sipfw:list:deny 0.0.0.0/0 1` (and as an event) | refused (`mac`; sealed: `prefix`), outsiders still answered | `a_deny_of_everything_from_redis_is_refused` |
//! | `HSET sipfw:list:allow ::/0 1` (and as an event) | refused (`mac`), a banned source still dropped | `an_allow_of_everything_from_redis_is_refused` |
//! | a subscriber with a foreign identity | refused (`mac`; sealed: `user`) | `a_subscriber_with_a_foreign_identity_is_refused` |
//! | a binding to 127.0.0.1 | refused (`mac`; sealed: `binding`) | `a_binding_to_loopback_is_refused` |
//! | a valid binding or ban moved to another key | refused (`mac`) | `a_valid_record_moved_to_another_key_is_refused` |
//! | `deny add 0.0.0.0/0` on the CLI | refused without `--force`, not shared with it | `the_cli_refuses_a_prefix_of_everything_without_force` |
//! | (none: honest use) | bans, users, lists propagate; config allow entries stay | `honest_changes_still_propagate` |

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sip_firewall::{
    auth::keys::KeyRing,
    cluster::trust::{Place, Trust},
    state::List,
};
use sip_firewall_tests::{
    cluster::{Cluster, Node, Redis},
    edge::err,
};

/// The Redis user the README gives the edges (`redis.conf` syntax).
const ACL_USER: &str = "user sipfw on >redis-password ~sipfw:* &sipfw:events -@all +@read \
                        +@write +@keyspace +@pubsub +@connection +@transaction -@dangerous +role +eval";

/// The cluster's `[auth] secret` (256 bits).
const SECRET: &str = "3c1f6a9e0b7d4c2a8e5f1b9d7c3a6e0f2b4d8c1a9e7f5b3d0c6a2e8f4b1d7c9a";

/// A node advertised (Via, Record-Route, its Path URI) as 192.0.2.`host`: every node's
/// namespaces use the same addresses, and a Path naming one of our own addresses is refused.
fn config(redis: &Redis, node: &str, host: u8, extra: &str) -> String {
    format!(
        "[sip]\ndomains = [\"example.com\"]\n[proxy]\nadvertise = \"192.0.2.{host}:5060\"\n\
         [auth]\nsecret = \"{SECRET}\"\n[cluster]\nredis = \"{}\"\nnode = \"{node}\"\n{extra}",
        redis.url()
    )
}

/// The address a node is advertised at: 192.0.2.11 for edge-a, .12 for edge-b.
fn backbone_host(node: &str) -> u8 {
    11 + node.bytes().last().map_or(0, |c| c - b'a')
}

/// What a node with the cluster's secret seals (the tests' stand-in for a node of ours
/// gone wrong: an attacker has no such key).
fn insider() -> Trust {
    let ring = KeyRing::from_config(Some(SECRET), &[]).expect("secret");
    Trust::new(&ring, &["example.com".to_string()])
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn rejected(reason: &str) -> String {
    format!("sipfw_cluster_rejected_total{{reason=\"{reason}\"}}")
}

/// An event as the nodes publish it, without a MAC.
fn event(op: serde_json::Value) -> String {
    serde_json::json!({ "node": "edge-x", "sent_ms": now_ms(), "op": op }).to_string()
}

fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) -> bool {
    let t0 = std::time::Instant::now();
    while !done() {
        if t0.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

/// Deny `0.0.0.0/0` written into Redis (before the node loads, and as events while it
/// runs, unMACed and with a MAC of zeros): refused, so an outsider's OPTIONS is still
/// answered. Sealed by a node with the secret, the same prefix is refused for its width
/// (`prefix`) while a narrow sealed one is taken.
#[test]
fn a_deny_of_everything_from_redis_is_refused() {
    let test = "a_deny_of_everything_from_redis_is_refused";
    let Some(cl) = Cluster::new(test, "trust-deny") else {
        return;
    };
    let redis = &cl.redis;
    redis.cli(&["HSET", "sipfw:list:deny", "0.0.0.0/0", "1"]);
    // Connected: the full set is loaded.
    let [mut b] = cl.started(["ctd"], |_| config(redis, "edge-b", 12, ""));
    assert!(
        b.answers_options(),
        "B answers an outsider: deny 0.0.0.0/0 from Redis was refused"
    );
    assert!(b.list("deny").is_empty(), "deny: {:?}", b.list("deny"));
    let at_load = b.metric(&rejected("mac"));
    assert!(at_load >= 1.0, "the record counted: {at_load}");

    let deny_all = event(serde_json::json!({"op": "list_add", "list": "deny", "net": "0.0.0.0/0"}));
    let zeros = format!("sfw1.{}.{deny_all}", "0".repeat(64));
    for payload in [&deny_all, &zeros] {
        redis.cli(&["PUBLISH", "sipfw:events", payload]);
    }
    let live = b.wait_metric(&rejected("mac"), at_load + 2.0, Duration::from_secs(5));
    assert!(b.answers_options(), "B still answers the outsider");
    assert!(b.list("deny").is_empty(), "deny: {:?}", b.list("deny"));
    assert!(live >= at_load + 2.0, "both events counted: {live}");

    // Sealed with the secret: the width refuses the one, the other is taken.
    let t = insider();
    let by = r#"{"node":"edge-x"}"#;
    for net in ["0.0.0.0/0", "203.0.113.0/24"] {
        let n: ipnet::IpNet = net.parse().expect("net");
        let sealed = t.seal(&Place::list(List::Deny, &n), by);
        redis.cli(&["HSET", "sipfw:list:deny", net, &sealed]);
    }
    b.stop();
    b.start();
    b.wait_connected(true);
    assert!(b.answers_options(), "B still answers the outsider");
    assert_eq!(b.list("deny"), vec!["203.0.113.0/24".to_string()]);
    assert!(
        b.metric(&rejected("prefix")) >= 1.0,
        "the sealed 0.0.0.0/0 is refused for its width"
    );
}

/// Allow `::/0` written into Redis (the XDP program's allow list would pass every source,
/// IPv4 included: it shares one key space), as a record and as an event: refused, so a
/// banned source is still dropped by XDP.
#[test]
fn an_allow_of_everything_from_redis_is_refused() {
    let test = "an_allow_of_everything_from_redis_is_refused";
    let Some(cl) = Cluster::new(test, "trust-allow") else {
        return;
    };
    let redis = &cl.redis;
    redis.cli(&["HSET", "sipfw:list:allow", "::/0", "1"]);
    let [b] = cl.started(["cta"], |_| config(redis, "edge-b", 12, ""));
    let outsider = b.pair.a4.to_string();
    let ban = b.cli(&["ban", "add", &outsider, "--for", "1h"]);
    assert!(ban.status.success(), "{}", err(&ban));
    assert_eq!(
        b.send(5),
        0,
        "B's XDP drops a banned source: allow ::/0 from Redis was refused"
    );
    assert!(b.list("allow").is_empty(), "allow: {:?}", b.list("allow"));

    let before = b.metric(&rejected("mac"));
    let allow_all = event(serde_json::json!({"op": "list_add", "list": "allow", "net": "::/0"}));
    redis.cli(&["PUBLISH", "sipfw:events", &allow_all]);
    let after = b.wait_metric(&rejected("mac"), before + 1.0, Duration::from_secs(5));
    assert_eq!(b.send(5), 0, "still dropped after the event");
    assert!(b.list("allow").is_empty(), "allow: {:?}", b.list("allow"));
    assert!(
        before >= 1.0 && after >= before + 1.0,
        "counted: {before} {after}"
    );
}

/// A subscriber written into Redis with a foreign identity (they would assert any
/// P-Asserted-Identity): refused, unMACed as a record and as an event (`mac`), and sealed by
/// a node with the secret (`user`); a sealed subscriber within our domains is taken.
#[test]
fn a_subscriber_with_a_foreign_identity_is_refused() {
    let test = "a_subscriber_with_a_foreign_identity_is_refused";
    let Some(cl) = Cluster::new(test, "trust-users") else {
        return;
    };
    let redis = &cl.redis;
    let user = |name: &str, identity: &str| {
        serde_json::json!({
            "user": name,
            "domain": "example.com",
            "ha1": "0123456789abcdef0123456789abcdef",
            "identities": [identity],
        })
    };
    let mallory = user("mallory", "sip:ceo@bank.example");
    redis.cli(&[
        "HSET",
        "sipfw:users",
        "mallory@example.com",
        &mallory.to_string(),
    ]);
    let t = insider();
    let trudy = user("trudy", "sip:ceo@bank.example").to_string();
    let dave = user("dave", "tel:+15551234").to_string();
    let sealed_trudy = t.seal(&Place::user("trudy", "example.com"), &trudy);
    let sealed_dave = t.seal(&Place::user("dave", "example.com"), &dave);
    redis.cli(&["HSET", "sipfw:users", "trudy@example.com", &sealed_trudy]);
    redis.cli(&["HSET", "sipfw:users", "dave@example.com", &sealed_dave]);

    let [b] = cl.started(["ctu"], |_| config(redis, "edge-b", 12, ""));
    let users = |n: &Node| n.users();
    // Connected: the full set is loaded.
    let got = users(&b);
    assert!(
        !got.contains(&"mallory".to_string()),
        "mallory from Redis refused: {got:?}"
    );
    assert!(
        !got.contains(&"trudy".to_string()),
        "trudy refused: {got:?}"
    );
    assert!(
        got.contains(&"dave".to_string()),
        "the sealed subscriber within our domains is taken: {got:?}"
    );
    assert!(b.metric(&rejected("mac")) >= 1.0);
    assert!(b.metric(&rejected("user")) >= 1.0);

    // As an event while it runs.
    let before = b.metric(&rejected("mac"));
    let add =
        event(serde_json::json!({"op": "user_add", "user": user("eve", "sip:ceo@bank.example")}));
    redis.cli(&["PUBLISH", "sipfw:events", &add]);
    let after = b.wait_metric(&rejected("mac"), before + 1.0, Duration::from_secs(5));
    assert!(after >= before + 1.0, "the event counted: {after}");
    assert!(!users(&b).contains(&"eve".to_string()), "{:?}", users(&b));
}

/// A binding written into Redis that sends bob's calls to 127.0.0.1:22: refused unMACed
/// (`mac`) as a record and as an event, and sealed by a node with the secret for its next
/// hop (`binding`): the Path of another node, or a flow "of ours", on loopback.
#[test]
fn a_binding_to_loopback_is_refused() {
    let test = "a_binding_to_loopback_is_refused";
    let Some(cl) = Cluster::new(test, "trust-loc") else {
        return;
    };
    let redis = &cl.redis;
    let expires = now_ms() / 1000 + 3600;
    let binding = |contact: &str, node: &str| {
        serde_json::json!({
            "contact": contact,
            "expires_unix": expires,
            "call_id": "x",
            "cseq": 1,
            "source": "127.0.0.1:22",
            "transport": "udp",
            "authenticated": "bob",
            "node": node,
            "path": "sip:127.0.0.1:22;lr",
        })
        .to_string()
    };
    let c1 = "sip:bob@127.0.0.1:22";
    redis.cli(&[
        "HSET",
        "sipfw:loc:bob@example.com",
        c1,
        &binding(c1, "edge-x"),
    ]);
    let t = insider();
    let c2 = "sip:bob@127.0.0.2:22";
    let c3 = "sip:bob@127.0.0.3:22";
    let s2 = t.seal(
        &Place::binding("bob@example.com", c2),
        &binding(c2, "edge-x"),
    );
    let s3 = t.seal(
        &Place::binding("bob@example.com", c3),
        &binding(c3, "edge-b"),
    );
    redis.cli(&["HSET", "sipfw:loc:bob@example.com", c2, &s2]);
    redis.cli(&["HSET", "sipfw:loc:bob@example.com", c3, &s3]);

    // Connected: the full set is loaded.
    let [b] = cl.started(["ctb"], |_| config(redis, "edge-b", 12, ""));
    assert_eq!(
        b.metric("sipfw_registrar_bindings"),
        0.0,
        "B holds no binding of bob's toward loopback"
    );
    assert!(
        b.metric(&rejected("binding")) >= 2.0,
        "both sealed bindings refused for their next hop"
    );
    assert!(b.metric(&rejected("mac")) >= 1.0, "the unMACed one");

    let before = b.metric(&rejected("mac"));
    let put = event(serde_json::json!({
        "op": "location",
        "change": {
            "change": "put",
            "aor": "bob@example.com",
            "binding": serde_json::from_str::<serde_json::Value>(&binding(c1, "edge-x")).expect("json"),
        },
    }));
    redis.cli(&["PUBLISH", "sipfw:events", &put]);
    let after = b.wait_metric(&rejected("mac"), before + 1.0, Duration::from_secs(5));
    assert!(after >= before + 1.0, "the event counted: {after}");
    assert_eq!(b.metric("sipfw_registrar_bindings"), 0.0);
}

/// Records made by a node, copied by an attacker to another key: carol's binding under
/// alice's AOR (alice's calls would ring carol's phone) and a ban under another address.
/// The MAC names the key: refused (`mac`) when the node loads them.
#[test]
fn a_valid_record_moved_to_another_key_is_refused() {
    let test = "a_valid_record_moved_to_another_key_is_refused";
    let Some(cl) = Cluster::new(test, "trust-moved") else {
        return;
    };
    let redis = &cl.redis;
    let [a, mut b] = cl.started(["cma", "cmb"], |node| {
        config(redis, node, backbone_host(node), "")
    });

    a.add_user("carol", "pw-carol-7");
    let res = a.register_storm(
        vec![("carol".to_string(), "pw-carol-7".to_string())],
        10,
        Duration::from_secs(10),
    );
    assert_eq!(res.registered, 1, "carol registers through A: {res:?}");
    let ban = a.cli(&["ban", "add", "192.0.2.50", "--for", "1h"]);
    assert!(ban.status.success(), "{}", err(&ban));
    assert!(
        wait_until(Duration::from_secs(5), || {
            b.metric("sipfw_registrar_bindings") >= 1.0 && b.banned("192.0.2.50")
        }),
        "B got carol's binding and A's ban"
    );

    // The attacker copies both to other keys.
    let carol = redis.cli(&["HGETALL", "sipfw:loc:carol@example.com"]);
    let mut lines = carol.lines();
    let (field, value) = (lines.next().expect("field"), lines.next().expect("value"));
    redis.cli(&["HSET", "sipfw:loc:alice@example.com", field, value]);
    let ban_value = redis.cli(&["GET", "sipfw:ban:192.0.2.50"]);
    redis.cli(&["SET", "sipfw:ban:192.0.2.51", ban_value.trim_end()]);

    b.stop();
    b.start();
    // Connected: the full set is loaded.
    b.wait_connected(true);
    assert_eq!(
        b.metric("sipfw_registrar_bindings"),
        1.0,
        "carol's binding only; none under alice's AOR"
    );
    assert!(
        b.metric(&rejected("mac")) >= 2.0,
        "the moved binding and the moved ban refused"
    );
    assert!(b.banned("192.0.2.50"), "the ban at its own key holds");
    assert!(!b.banned("192.0.2.51"), "the copied ban is refused");
}

/// `deny add 0.0.0.0/0`: refused with an error naming the prefix, the bound and --force;
/// with --force taken on this node (XDP drops the outsider) and not shared with the others
/// (they would refuse it). `allow del` of a `[policy] allow` entry is refused, naming it.
#[test]
fn the_cli_refuses_a_prefix_of_everything_without_force() {
    let test = "the_cli_refuses_a_prefix_of_everything_without_force";
    let Some(cl) = Cluster::new(test, "trust-cli") else {
        return;
    };
    let redis = &cl.redis;
    let trunk = "[policy]\nallow = [\"192.0.2.0/24\"]\n";
    let [b] = cl.started(["ctc"], |_| config(redis, "edge-b", 12, trunk));
    let refused = b.cli(&["deny", "add", "0.0.0.0/0"]);
    let text = err(&refused);
    assert!(!refused.status.success(), "deny add 0.0.0.0/0 refused");
    assert!(
        text.contains("0.0.0.0/0") && text.contains("/8") && text.contains("--force"),
        "{text}"
    );
    assert!(b.answers_options(), "the outsider is still answered");
    for (list, net) in [("allow", "::/0"), ("allow", "::ffff:0.0.0.0/96")] {
        let o = b.cli(&[list, "add", net]);
        assert!(!o.status.success(), "{list} add {net} refused");
    }
    assert_eq!(b.list("allow"), vec!["192.0.2.0/24".to_string()]);
    assert!(b.list("deny").is_empty());
    // The config's entry is the config's: `del` names where to remove it.
    let del = b.cli(&["allow", "del", "192.0.2.0/24"]);
    assert!(!del.status.success(), "allow del of a config entry refused");
    assert!(err(&del).contains("[policy] allow"), "{}", err(&del));
    assert_eq!(b.list("allow"), vec!["192.0.2.0/24".to_string()]);

    let forced = b.cli(&["deny", "add", "0.0.0.0/0", "--force"]);
    assert!(forced.status.success(), "{}", err(&forced));
    assert_eq!(b.list("deny"), vec!["0.0.0.0/0".to_string()]);
    assert!(!b.answers_options(), "with --force: XDP drops everyone");
    let stored = redis.cli(&["HGETALL", "sipfw:list:deny"]);
    assert!(!stored.contains("0.0.0.0/0"), "not shared: {stored}");
}

/// Honest use, logged in as the README's ACL user: a ban, a subscriber and a deny entry made
/// on A reach B, one node fetches the feed both apply, and B refuses nothing; B's `[policy] allow` entry stays in force when A
/// removes that prefix.
#[test]
fn honest_changes_still_propagate() {
    let test = "honest_changes_still_propagate";
    let Some(cl) = Cluster::new(test, "trust-honest") else {
        return;
    };
    let redis = &cl.redis;
    // The nodes log in as the README's ACL user: what it allows is all they need.
    assert!(include_str!("../../README.md").contains(ACL_USER));
    let mut acl = vec!["ACL", "SETUSER"];
    acl.extend(ACL_USER.split(' ').skip(1));
    let set = redis.cli(&acl);
    assert!(set.contains("OK"), "{set}");
    let trunk = "[policy]\nallow = [\"192.0.2.0/24\"]\n";
    let list = cl.tmp.path.join("threats.txt");
    std::fs::write(&list, "203.0.113.9\n").expect("feed file");
    let feed = format!(
        "[[feeds]]\nname = \"threats\"\nurl = \"file://{}\"\nformat = \"cidr\"\nrefresh = \"1h\"\n",
        list.display()
    );
    let [a, b] = cl.started(["cha", "chb"], |node| {
        let extra = if node == "edge-b" { trunk } else { "" };
        config(redis, node, backbone_host(node), &format!("{extra}{feed}"))
            .replace(&redis.url(), &redis.url_as("sipfw", "redis-password"))
    });

    let ip = a.pair.a4.to_string();
    assert!(a.cli(&["ban", "add", &ip, "--for", "1h"]).status.success());
    assert!(
        b.wait_banned(&ip, true, Duration::from_secs(5)).is_some(),
        "A's ban reached B"
    );
    assert_eq!(b.send(5), 0, "B's XDP drops it");
    a.add_user("carol", "pw-carol-7");
    assert!(
        wait_until(Duration::from_secs(5), || {
            b.users().contains(&"carol".to_string())
        }),
        "A's subscriber reached B"
    );
    // A removes the prefix B's config allows (A had added it at run time), then denies one.
    assert!(a.cli(&["allow", "add", "192.0.2.0/24"]).status.success());
    assert!(a.cli(&["allow", "del", "192.0.2.0/24"]).status.success());
    assert!(a.cli(&["deny", "add", "198.51.100.77"]).status.success());
    assert!(
        wait_until(Duration::from_secs(5), || b
            .list("deny")
            .contains(&"198.51.100.77/32".to_string())),
        "A's deny reached B"
    );
    assert_eq!(
        b.list("allow"),
        vec!["192.0.2.0/24".to_string()],
        "B's config entry stays in force"
    );
    // A feed: one node fetches it (the lease is a script: `+eval`), both apply its entry.
    let applied = "sipfw_feed_entries{feed=\"threats\",state=\"applied\"}";
    assert!(
        wait_until(Duration::from_secs(30), || a.metric(applied) == 1.0
            && b.metric(applied) == 1.0),
        "the feed's entry on both nodes: {} {}",
        a.metric(applied),
        b.metric(applied)
    );
    let ok = "sipfw_feed_loads_total{feed=\"threats\",result=\"ok\"}";
    assert_eq!(a.metric(ok) + b.metric(ok), 1.0, "one fetch, on one node");
    for reason in ["mac", "replay", "prefix", "user", "binding", "malformed"] {
        assert_eq!(
            b.metric(&rejected(reason)),
            0.0,
            "B refused nothing ({reason})"
        );
    }
}
