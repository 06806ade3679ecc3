//! Registrations across the cluster: a binding made on one edge reaches bob's calls through
//! any other (a cluster hop over the flow he registered on), only for the cluster's own
//! hops, and is refreshed and removed through any edge.

use std::{
    net::UdpSocket,
    time::{Duration, Instant},
};

use sip_firewall_tests::{
    cluster::{Cluster, Node, start_all},
    netns::in_ns,
    sipp::{self, Host, register_bob},
};

use crate::setup::{
    Backbone, bob_contact, bob_registers, sip_node_config, wait_binding_on, wait_for,
};

/// bob registers through A (the binding goes to Redis with A's Path); alice calls bob
/// through B, and the call completes via A, which reaches bob over the flow he registered
/// on (A relays it as a cluster hop, B forwarded it). bob re-registers through C: the next
/// call goes via C, and A sees nothing of it.
#[test]
fn a_call_through_b_reaches_bob_registered_through_a() {
    let test = "a_call_through_b_reaches_bob_registered_through_a";
    let Some(cl) = Cluster::with_sipp(test, "cluster-path") else {
        return;
    };
    let (redis, dir) = (&cl.redis, &cl.tmp.path);
    let mut nodes = cl.nodes(["cpa", "cpb", "cpc"], |node| {
        sip_node_config(redis, node, backbone_host(node))
    });
    let bb = Backbone::new("cp");
    for (n, host) in nodes.iter().zip([11, 12, 13]) {
        bb.join(n, host);
    }
    start_all(&mut nodes);
    let [a, b, c] = nodes;

    let bob_port = 5070;
    register_bob(&a.pair, dir, bob_port).assert_ok("bob registers through A");
    wait_binding_on(redis, "edge-a");
    let stored = redis.cli(&["HGETALL", "sipfw:loc:bob@example.com"]);
    assert!(
        stored.contains("sip:192.0.2.11:5060;lr"),
        "A's Path URI: {stored}"
    );

    // One call alice -> bob through B while bob's UAS answers behind A.
    let call = |holder: &Node, n: usize| {
        let uas = Host::in_ns(&holder.pair, dir).uas("uas.xml", bob_port, &["-m", "1"]);
        let uac = sipp::alice_calls_bob(&b.pair, dir, 5080 + n as u16, 1);
        let (uas, _) = uas.wait();
        uac.assert_ok(&format!("alice's call {n}"));
        uas.assert_ok(&format!("bob answers call {n}"));
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
    register_bob(&c.pair, dir, bob_port).assert_ok("bob registers through C");
    wait_binding_on(redis, "edge-c");
    let a_before = a.metric(requests);
    call(&c, 2);
    assert_eq!(c.metric(hop), 1.0, "C relayed the INVITE to bob's flow");
    assert_eq!(a.metric(hop), 1.0, "A saw nothing of the second call");
    assert_eq!(a.metric(requests), a_before, "A forwarded nothing");
}

/// The backbone address of node `edge-x`: 192.0.2.11 for edge-a, .12 for edge-b...
fn backbone_host(node: &str) -> u8 {
    11 + node.bytes().last().map_or(0, |c| c - b'a')
}

/// No open relay through the cluster hop: an outsider who writes edge A's Path Route with a
/// cluster-hop seal of its own (a well-formed seal with a made-up tag, one sealed under
/// another key, and none at all) for bob, registered through A, gets 403; A relays nothing
/// to bob's flow (his port receives nothing, `cluster_hop` forwards stay 0) and counts the
/// refusals. The unit test
/// `proxy::core::tests::cluster::an_outsider_forging_the_path_route_is_refused` covers the
/// same at the core, and the real hop from B `a_call_through_b_reaches_bob...`.
#[test]
fn an_outsider_forging_the_cluster_hop_route_is_refused_by_the_daemon() {
    let test = "an_outsider_forging_the_cluster_hop_route_is_refused_by_the_daemon";
    let Some(cl) = Cluster::with_sipp(test, "cluster-forge") else {
        return;
    };
    let redis = &cl.redis;
    let [a] = cl.started(["cfa"], |node| sip_node_config(redis, node, 11));
    let bob_port = 5070;
    register_bob(&a.pair, &cl.tmp.path, bob_port).assert_ok("bob registers through A");
    wait_binding_on(redis, "edge-a");
    let contact = bob_contact(redis);

    // bob's flow: his port, now a plain socket that sees whatever A relays to him.
    let ns = a.pair.ns_a.clone();
    let bob = in_ns(&ns, move || Ok(UdpSocket::bind(("0.0.0.0", bob_port))?)).expect("bob");
    bob.set_nonblocking(true).expect("nonblocking");
    let outsider = in_ns(&ns, || Ok(UdpSocket::bind("0.0.0.0:5099")?)).expect("outsider");
    outsider
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
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
        outsider.send_to(invite.as_bytes(), a.sip()).expect("send");
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
}

/// A binding is refreshed, removed with `expires=0`, and all removed with `Contact: *`
/// (RFC 3261 10.3) through any node, and every node's cache follows
/// (`sipfw_registrar_bindings`, Redis). Also while the nodes are cut off from Redis (their
/// Redis users disabled, Redis keeps its data): B takes the removal of bindings A holds,
/// B comes back first and writes it out, then A comes back and its full load drops the
/// bindings removed meanwhile (A missed the event).
#[test]
fn bindings_are_refreshed_and_removed_through_any_node() {
    let test = "bindings_are_refreshed_and_removed_through_any_node";
    let Some(cl) = Cluster::new(test, "cluster-unregister") else {
        return;
    };
    let redis = &cl.redis;
    let [a, b] = cl.started(["cua", "cub"], |node| {
        redis.own_user(node, &sip_node_config(redis, node, backbone_host(node)))
    });
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
    wait_binding_on(redis, "edge-b");
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
    assert_eq!(bob_registers(&a, "r7", x, 600), 200);
    assert_eq!(bob_registers(&a, "r8", y, 600), 200);
    wait_bindings(&b, "B", 2.0);
    for (removal, (call_id, contact, left)) in
        [("r9", x, 1.0), ("r10", "*", 0.0)].into_iter().enumerate()
    {
        redis.cut("edge-a", false);
        redis.cut("edge-b", false);
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
        redis.cut("edge-b", true);
        b.wait_connected(true);
        wait_for(
            Duration::from_secs(10),
            || in_redis().lines().filter(|l| !l.trim().is_empty()).count() == left as usize,
            || format!("B did not write {call_id} out: {}", in_redis()),
        );
        redis.cut("edge-a", true);
        a.wait_connected(true);
        wait_bindings(&a, "A", left);
    }
}
