//! Cores of two cluster nodes on a fake clock: registrations shared with Path
//! (RFC 3327), a call routed through the node holding the flow, that node relaying for
//! cluster nodes only, Record-Route stamps that verify on every node, and nonces that are
//! good on the node that issued them only.

use std::sync::Mutex;

use super::*;

const A: &str = "192.0.2.11";
const B: &str = "192.0.2.12";
/// bob's phone, allow-listed (registers without digest), behind NAT at this flow.
const BOB_FLOW: &str = "10.0.0.21:40000";
const BOB_CONTACT: &str = "sip:bob@10.0.0.21:5070";

struct Node {
    core: Core,
    now: Instant,
    addr: &'static str,
    written: Arc<Mutex<Vec<Change>>>,
}

/// A valid secret (64 hex digits) named by the label: nodes given one label share it.
fn secret_of(label: &str) -> String {
    label
        .bytes()
        .chain(std::iter::repeat(b'.'))
        .take(32)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `secret` is a label, or `"current,previous"` for a node in the middle of a roll.
fn config(addr: &str, secret: &str) -> String {
    let (current, previous) = match secret.split_once(',') {
        Some((c, p)) => (c, format!("previous_secrets = [\"{}\"]\n", secret_of(p))),
        None => (secret, String::new()),
    };
    let secret = secret_of(current);
    format!(
        "[sip]\nlisten = [\"0.0.0.0:5060\"]\ndomains = [\"example.com\"]\n[proxy]\nadvertise = \"{addr}:5060\"\n[policy]\nallow = [\"10.0.0.0/8\"]\n[auth]\nsecret = \"{secret}\"\n{previous}users = [{{ user = \"bob\", domain = \"example.com\", password = \"pw\" }}]\n"
    )
}

impl Node {
    fn new(name: &str, addr: &'static str, secret: &str, now: Instant) -> Node {
        let mut core = super::core(&config(addr, secret), now);
        core.local.set_addrs(vec![addr.parse().expect("ip")]);
        core.set_node(name);
        let written = Arc::new(Mutex::new(Vec::new()));
        let w = written.clone();
        core.share_locations(
            name.into(),
            None,
            Box::new(move |c| w.lock().expect("lock").push(c)),
        );
        Node {
            core,
            now,
            addr,
            written,
        }
    }

    fn feed(&mut self, text: &str, source: &str) -> Vec<(SocketAddr, String)> {
        let local = format!("{}:5060", self.addr);
        let ctx = super::ctx_on(source, &local, Transport::Datagram);
        super::feed(&mut self.core, self.now, text, &ctx).1
    }

    /// What `from` wrote through to the cluster since the last call, taken into this node's
    /// location cache.
    fn take_from(&mut self, from: &Node) {
        for c in from.written() {
            self.core.location_remote(&c, self.now);
        }
    }

    /// What this node wrote through to the cluster since the last call.
    fn written(&self) -> Vec<Change> {
        std::mem::take(&mut *self.written.lock().expect("lock"))
    }

    fn refused(&self, reason: &str) -> u64 {
        super::refused(&self.core, reason)
    }
}

/// Nodes A (on `secret_a`) and B (on `secret_b`), bob registered through A (200) and his
/// binding written through to B.
fn bob_on_a(secret_a: &str, secret_b: &str) -> (Node, Node) {
    let t0 = Instant::now();
    let mut a = Node::new("edge-a", A, secret_a, t0);
    let mut b = Node::new("edge-b", B, secret_b, t0);
    let ok = a.feed(&register(1, ""), BOB_FLOW);
    assert!(ok[0].1.starts_with("SIP/2.0 200"), "{ok:?}");
    b.take_from(&a);
    (a, b)
}

fn register(n: usize, supported: &str) -> String {
    format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {BOB_FLOW};branch=z9hG4bKreg{n}\r\nFrom: <sip:bob@example.com>;tag=r\r\nTo: <sip:bob@example.com>\r\nCall-ID: reg\r\nCSeq: {n} REGISTER\r\n{supported}Contact: <{BOB_CONTACT}>\r\nContent-Length: 0\r\n\r\n"
    )
}

/// An INVITE for bob from an allow-listed caller (no digest needed).
fn call(call_id: &str) -> String {
    format!(
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.50:5060;branch=z9hG4bK{call_id}\r\nMax-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@example.com>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@10.0.0.50>\r\nContent-Length: 0\r\n\r\n"
    )
}

fn invites(sent: &[(SocketAddr, String)]) -> Vec<(SocketAddr, String)> {
    sent.iter()
        .filter(|(_, m)| m.starts_with("INVITE"))
        .cloned()
        .collect()
}

/// bob registers through A: the binding goes to the cluster with A's Path and the node;
/// B, which learns it, routes alice's call to A (Route: A's Path URI, sealed), and A
/// relays it to bob over the flow his REGISTER came on, record-routed. A 200 carries
/// Path only to a UA that said `Supported: path` (RFC 3327 5.3).
#[test]
fn a_call_through_b_reaches_bob_through_a() {
    let t0 = Instant::now();
    let mut a = Node::new("edge-a", A, "cluster-secret", t0);
    let mut b = Node::new("edge-b", B, "cluster-secret", t0);

    let ok = a.feed(&register(1, ""), BOB_FLOW);
    assert!(ok[0].1.starts_with("SIP/2.0 200"), "{ok:?}");
    assert!(
        !ok[0].1.contains("Path:"),
        "no Supported: path: {}",
        ok[0].1
    );
    let ok = a.feed(&register(2, "Supported: path, gruu\r\n"), BOB_FLOW);
    assert!(
        ok[0].1.contains("Path: <sip:192.0.2.11:5060;lr>"),
        "{}",
        ok[0].1
    );
    let written = a.written();
    assert_eq!(written.len(), 2, "{written:?}");
    let Change::Put { aor, binding } = &written[1] else {
        panic!("{written:?}")
    };
    assert_eq!(aor, "bob@example.com");
    assert_eq!(binding.node, "edge-a");
    assert_eq!(binding.path, "sip:192.0.2.11:5060;lr");
    assert_eq!(binding.source, BOB_FLOW.parse().unwrap());

    // Without it B has nobody to call.
    let sent = b.feed(&call("c0"), "10.0.0.50:5060");
    assert!(invites(&sent).is_empty(), "{sent:?}");

    for c in &written {
        b.core.location_remote(c, b.now);
    }
    let sent = b.feed(&call("c1"), "10.0.0.50:5060");
    let inv = invites(&sent);
    assert_eq!(inv.len(), 1, "{sent:?}");
    let (to, text) = &inv[0];
    assert_eq!(*to, format!("{A}:5060").parse().unwrap(), "to A: {text}");
    assert!(
        text.starts_with(&format!("INVITE {BOB_CONTACT} SIP/2.0")),
        "{text}"
    );
    assert!(
        text.contains("Route: <sip:192.0.2.11:5060;lr;sfwc="),
        "{text}"
    );
    assert!(
        text.contains("Record-Route: <sip:192.0.2.12:5060;lr;sfw="),
        "{text}"
    );

    let sent = a.feed(text, &format!("{B}:5060"));
    let inv = invites(&sent);
    assert_eq!(inv.len(), 1, "A relays to bob's flow: {sent:?}");
    let (to, text) = &inv[0];
    assert_eq!(*to, BOB_FLOW.parse().unwrap());
    assert!(!text.lines().any(|l| l.starts_with("Route:")), "{text}");
    let rr: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("Record-Route:"))
        .collect();
    assert!(
        rr[0].contains("192.0.2.11"),
        "A stays in the dialog: {rr:?}"
    );
    assert!(rr[1].contains("192.0.2.12"), "{rr:?}");
    assert_eq!(
        a.core
            .metrics
            .forwarded
            .vec()
            .with_label_values(&["cluster_hop"])
            .get(),
        1
    );

    // `Contact: *` on B removes bob everywhere: B writes it through, A applies it.
    let star = "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.21:40000;branch=z9hG4bKstar\r\nFrom: <sip:bob@example.com>;tag=r\r\nTo: <sip:bob@example.com>\r\nCall-ID: reg2\r\nCSeq: 1 REGISTER\r\nContact: *\r\nExpires: 0\r\nContent-Length: 0\r\n\r\n";
    let ok = b.feed(star, BOB_FLOW);
    assert!(ok[0].1.starts_with("SIP/2.0 200"), "{ok:?}");
    a.take_from(&b);
    assert!(unbound(&a.core, "bob@example.com", a.now));
}

/// During a secret roll a node on the new secret (the old one as previous) still takes the
/// hop seals of a node not rolled yet: calls keep reaching phones registered on either.
#[test]
fn a_hop_sealed_under_the_previous_secret_is_taken_during_a_roll() {
    let (mut a, mut b) = bob_on_a("new-secret,old-secret", "old-secret");
    let sent = b.feed(&call("roll"), "10.0.0.50:5060");
    let inv = invites(&sent);
    assert_eq!(inv.len(), 1, "{sent:?}");
    let sent = a.feed(&inv[0].1, &format!("{B}:5060"));
    let inv = invites(&sent);
    assert_eq!(inv.len(), 1, "A relays B's old-secret hop to bob: {sent:?}");
    assert_eq!(inv[0].0, BOB_FLOW.parse().unwrap());
    assert_eq!(a.refused("cluster_hop"), 0);
}

/// Routing through A is no open relay: an outsider who writes A's Path into a Route (with
/// no seal, a forged one, a real one copied onto another call, or an old one) is refused,
/// and nothing reaches bob.
#[test]
fn an_outsider_forging_the_path_route_is_refused() {
    let (mut a, mut b) = bob_on_a("cluster-secret", "cluster-secret");
    let real = invites(&b.feed(&call("c1"), "10.0.0.50:5060"))
        .pop()
        .expect("B routes to A")
        .1;
    let seal = real
        .split("sfwc=")
        .nth(1)
        .and_then(|s| s.split('>').next())
        .expect("seal")
        .to_string();
    let forged = |call_id: &str, route: &str| {
        format!(
            "INVITE {BOB_CONTACT} SIP/2.0\r\nVia: SIP/2.0/UDP 203.0.113.9:5060;branch=z9hG4bK{call_id}\r\nMax-Forwards: 70\r\nRoute: {route}\r\nFrom: <sip:x@evil.example>;tag=x\r\nTo: <sip:bob@example.com>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let old = route::seal_cluster_hop(&[0u8; 32], 1, "bob@example.com", "f4", BOB_CONTACT);
    for (call_id, route) in [
        ("f1", "<sip:192.0.2.11:5060;lr>".to_string()),
        (
            "f2",
            format!(
                "<sip:192.0.2.11:5060;lr;sfwc={}.626f62406578616d706c652e636f6d.00112233445566778899aabbccddeeff>",
                a.core.unix_secs(a.now)
            ),
        ),
        ("f3", format!("<sip:192.0.2.11:5060;lr;sfwc={seal}>")),
        ("f4", format!("<sip:192.0.2.11:5060;lr;sfwc={old}>")),
    ] {
        let sent = a.feed(&forged(call_id, &route), "203.0.113.9:5060");
        assert!(invites(&sent).is_empty(), "{call_id}: relayed {sent:?}");
        assert!(
            sent.iter().any(|(_, m)| m.starts_with("SIP/2.0 403")),
            "{call_id}: {sent:?}"
        );
    }
    assert_eq!(a.refused("cluster_hop"), 3, "the sealed attempts counted");
    // The real one, from B, still goes through.
    let sent = a.feed(&real, &format!("{B}:5060"));
    assert_eq!(invites(&sent).len(), 1, "{sent:?}");
    // A node with another secret cannot make a seal A accepts.
    let mut c = Node::new("edge-c", B, "another-secret", a.now);
    c.take_from(&a);
    a.feed(&register(2, ""), BOB_FLOW);
    c.take_from(&a);
    let other = invites(&c.feed(&call("c9"), "10.0.0.50:5060"))
        .pop()
        .expect("C routes to A")
        .1;
    let sent = a.feed(&other, &format!("{B}:5060"));
    assert!(invites(&sent).is_empty(), "{sent:?}");
}

/// With the same `[auth] secret`, a Record-Route stamp one node sealed opens on another; a
/// nonce one node issued is answered on another with a fresh challenge, stale=true (its
/// nonce-counts are on the node that issued it: accepting it elsewhere would accept a
/// replay), which the client answers without asking its user; with another secret the
/// nonce is not ours at all and the stamp does not open.
#[test]
fn a_nonce_is_stale_on_another_node_and_stamps_verify_on_every_node() {
    let t0 = Instant::now();
    let mut a = Node::new("edge-a", A, "cluster-secret", t0);
    let mut b = Node::new("edge-b", B, "cluster-secret", t0);
    let mut c = Node::new("edge-c", B, "another-secret", t0);
    let source = "203.0.113.7:5060";
    let reg = |n: usize, auth: &str| {
        format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {source};branch=z9hG4bKn{n}\r\nFrom: <sip:bob@example.com>;tag=r\r\nTo: <sip:bob@example.com>\r\nCall-ID: nonce-reg\r\nCSeq: {n} REGISTER\r\n{auth}Contact: <sip:bob@203.0.113.7>\r\nContent-Length: 0\r\n\r\n"
        )
    };
    let sent = a.feed(&reg(1, ""), source);
    let chal = sent_starting(&sent, "SIP/2.0 401");
    let nonce = nonce_of(chal);
    let auth = |nc: &str| credentials("Authorization", &nonce, nc, "REGISTER", "sip:example.com");
    let sent = b.feed(&reg(2, &auth("00000001")), source);
    assert!(
        sent[0].1.starts_with("SIP/2.0 401") && sent[0].1.contains("stale=true"),
        "A's nonce on B: {sent:?}"
    );
    assert_eq!(
        b.core.metrics.auth.with_label_values(&["other_node"]).get(),
        1
    );
    let sent = c.feed(&reg(2, &auth("00000001")), source);
    assert!(
        sent[0].1.starts_with("SIP/2.0 401") && !sent[0].1.contains("stale=true"),
        "not on a node with another secret: {sent:?}"
    );
    let sent = a.feed(&reg(3, &auth("00000001")), source);
    assert!(sent[0].1.starts_with("SIP/2.0 200"), "on A: {sent:?}");

    // A Record-Route stamp of A opens on B.
    a.feed(&register(3, ""), BOB_FLOW);
    let inv = invites(&a.feed(&call("rr1"), "10.0.0.50:5060"))
        .pop()
        .expect("A forwards")
        .1;
    let rr = inv
        .lines()
        .find(|l| l.starts_with("Record-Route:"))
        .expect("record-routed");
    let entry = rr.trim_start_matches("Record-Route:").trim();
    let stamp = route::stamp_of(entry).expect("stamp");
    let opened = b.core.keys.stamp.open("rr1", &["a"], &stamp);
    let opened = opened.expect("B opens A's stamp");
    assert_eq!(opened.caller.addr, "10.0.0.50:5060".parse().unwrap());
    assert_eq!(opened.callee.addr, BOB_FLOW.parse().unwrap());
    assert!(c.core.keys.stamp.open("rr1", &["a"], &stamp).is_none());
}

/// A binding from the cluster passes the next-hop check of a request's text: its flow
/// (one of ours, node = this node) or the Path of the node holding it must not be
/// loopback, link-local, unspecified, multicast or one of our addresses unless `[proxy]
/// internal_next_hops` lists it; refused ones are not cached (and counted by the cluster).
#[test]
fn bindings_from_the_cluster_pass_the_next_hop_check() {
    let t0 = Instant::now();
    let mut b = Node::new("edge-b", B, "cluster-secret", t0);
    let put = |node: &str, source: &str, path: &str| Change::Put {
        aor: "bob@example.com".into(),
        binding: SharedBinding {
            contact: BOB_CONTACT.into(),
            expires_unix: b.core.unix_secs(t0) + 600,
            call_id: "c".into(),
            cseq: 1,
            source: source.parse().expect("addr"),
            transport: "udp".into(),
            authenticated: None,
            node: node.into(),
            path: path.into(),
        },
    };
    let honest = put("edge-a", BOB_FLOW, "sip:192.0.2.11:5060;lr");
    let refused = [
        put("edge-a", BOB_FLOW, "sip:127.0.0.1:22;lr"),
        put("edge-a", BOB_FLOW, "sip:169.254.0.1;lr"),
        put("edge-a", BOB_FLOW, "sip:224.0.0.1;lr"),
        put("edge-a", BOB_FLOW, "sip:[::1]:5060;lr"),
        put("edge-a", BOB_FLOW, "sip:192.0.2.12:5060;lr"),
        // "Ours" (this node's name): the flow itself is the next hop.
        put("edge-b", "127.0.0.1:22", "sip:192.0.2.12:5060;lr"),
        put("edge-b", "0.0.0.0:5060", "sip:192.0.2.12:5060;lr"),
    ];
    for c in &refused {
        assert!(!b.core.location_remote(c, b.now), "{c:?}");
    }
    assert!(unbound(&b.core, "bob@example.com", b.now));
    assert!(b.core.location_remote(&honest, b.now));
    assert_eq!(
        b.core.store.lock().lookup("bob@example.com", b.now).len(),
        1
    );
    // The full load drops the refused ones and counts them.
    let all: Vec<(String, SharedBinding)> = refused
        .iter()
        .chain([&honest])
        .filter_map(|c| match c {
            Change::Put { aor, binding } => Some((aor.clone(), binding.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(b.core.location_reload(&all, b.now), refused.len());
    assert_eq!(
        b.core.store.lock().lookup("bob@example.com", b.now).len(),
        1
    );
    // Listed in internal_next_hops: taken.
    b.core.settings.internal_next_hops = vec!["127.0.0.0/8".parse().expect("net")];
    assert!(b.core.location_remote(&refused[0], b.now));
}

/// Only the node holding bob's flow pings it (his binding behind NAT): A sends an OPTIONS
/// to his flow every interval, B, which reaches him through A's Path, sends nothing. bob
/// silent, A removes his binding and writes the removal through: B forgets him too.
#[test]
fn only_the_node_holding_a_flow_pings_it() {
    let (mut a, mut b) = bob_on_a("cluster-secret", "cluster-secret");
    assert_eq!(
        b.core.store.lock().lookup("bob@example.com", b.now).len(),
        1
    );
    // The defaults: every 30 s, gone after 3 unanswered.
    let (d, step) = (Duration::from_secs(121), Duration::from_millis(100));
    let from_b = super::advance(&mut b.core, &mut b.now, d, step);
    assert!(from_b.is_empty(), "B pings nobody: {from_b:?}");
    let from_a = super::advance(&mut a.core, &mut a.now, d, step);
    let pings: Vec<_> = from_a
        .iter()
        .filter(|(to, m)| *to == BOB_FLOW.parse().unwrap() && m.starts_with("OPTIONS"))
        .collect();
    assert_eq!(pings.len(), 3, "{from_a:?}");
    assert!(unbound(&a.core, "bob@example.com", a.now));
    let removed = a.written();
    assert!(
        matches!(&removed[..], [Change::Remove { aor, .. }] if aor == "bob@example.com"),
        "{removed:?}"
    );
    b.core.location_remote(&removed[0], b.now);
    assert!(unbound(&b.core, "bob@example.com", b.now));
}
