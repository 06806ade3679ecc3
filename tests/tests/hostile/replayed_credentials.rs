//! Captured digest credentials used again where they were not made: a REGISTER's
//! Authorization replayed after a restart of the daemon (same `[auth] secret`) and to a
//! second daemon sharing the secret; an INVITE whose digest `uri` names the edge itself,
//! so that its credentials do not cover the Request-URI (a trunk number). Daemons on
//! loopback (`--xdp-mode off`, no root needed), each on its own ports.

use std::{
    net::{SocketAddr, UdpSocket},
    time::Duration,
};

use sip_firewall_tests::{
    daemon::{Loopback, daemon_bin},
    domain::SHORT_TIMERS,
    metrics::scrape_opt,
    ports::free_port,
    ua::{
        Account, header,
        udp::{Phone, Trunk},
    },
};

/// 256 bits, the same on every daemon of these tests.
const SECRET: &str = "3c9f0a6d21b47e58c0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7";
const PASSWORD: &str = "alice-secret";

fn config(extra: &str) -> String {
    format!(
        r#"
[sip]
domains = ["example.com"]
{SHORT_TIMERS}[auth]
secret = "{SECRET}"
algorithms = ["MD5", "SHA-256"]
users = [{{ user = "alice", domain = "example.com", password = "{PASSWORD}" }}]
{extra}
"#
    )
}

fn start(tag: &str, config: &str) -> Loopback {
    Loopback::start(daemon_bin(), tag, config, Some("warn"), &[])
}

/// alice's phone on 127.0.0.1, waiting for the final response of each request; the daemon
/// it talks to is set per request.
struct Client(Phone);

impl Client {
    fn new() -> Client {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let account = Account::new("alice", "example.com", PASSWORD);
        Client(Phone::new(s, "127.0.0.1:9".parse().expect("addr"), account))
    }

    /// A REGISTER of alice at `to` with `auth` (an Authorization line), a new transaction
    /// each time: its final response, or "nothing" after 3 s.
    fn register(&mut self, to: SocketAddr, auth: Option<&str>) -> String {
        self.0.proxy = to;
        let call_id = format!(
            "replay-{}-{}",
            std::process::id(),
            self.0.sock.local_addr().expect("addr").port()
        );
        self.0
            .register_once(&call_id, None, 600, auth.unwrap_or_default())
            .unwrap_or_else(|| "nothing".into())
    }

    /// alice registers at `to`: the Authorization line that got 200.
    fn register_ok(&mut self, to: SocketAddr) -> String {
        let chal = self.register(to, None);
        assert!(chal.starts_with("SIP/2.0 401"), "challenge: {chal}");
        let auth = self.0.ua.authorize(&chal, "REGISTER", "sip:example.com");
        let ok = self.register(to, Some(&auth));
        assert!(ok.starts_with("SIP/2.0 200"), "registered: {ok}");
        auth
    }

    /// An INVITE from alice to `ruri` at the edge `to`: the 407's challenge answered with
    /// digest `uri`; the final response to the INVITE with credentials.
    fn call(&mut self, to: SocketAddr, ruri: &str, digest_uri: &str) -> String {
        self.0.proxy = to;
        let n = self.0.next_number();
        let port = self.0.sock.local_addr().expect("addr").port();
        let call_id = format!("call-{}-{port}-{n}", std::process::id());
        self.0
            .invite(ruri, digest_uri, &call_id, &format!("ci{n}"))
            .unwrap_or_else(|| "nothing".into())
    }
}

fn metric(d: &Loopback, series: &str) -> f64 {
    scrape_opt(d.metrics)
        .expect("metrics")
        .get(series)
        .copied()
        .unwrap_or(0.0)
}

fn bans_made(d: &Loopback) -> f64 {
    scrape_opt(d.metrics)
        .expect("metrics")
        .iter()
        .filter(|(k, _)| k.starts_with("sipfw_bans_total"))
        .map(|(_, v)| v)
        .sum()
}

/// alice's phone registers at a daemon started as `tag` with `config`: the phone, the
/// daemon, and the captured Authorization, refused there a second time.
fn captured_at(tag: &str, config: &str) -> (Client, Loopback, String) {
    let mut phone = Client::new();
    let d = start(tag, config);
    let captured = phone.register_ok(d.sip);
    let again = phone.register(d.sip, Some(&captured));
    assert!(
        again.starts_with("SIP/2.0 401"),
        "replay on the same daemon: {again}"
    );
    (phone, d, captured)
}

/// Whether `r` is a fresh challenge with stale=true.
fn stale_challenge(r: &str) -> bool {
    r.starts_with("SIP/2.0 401")
        && header(r, "WWW-Authenticate").is_some_and(|w| w.contains("stale=true"))
}

#[test]
fn a_captured_register_is_refused_after_a_restart() {
    let config = config("");
    let (mut phone, first, captured) = captured_at("replay-a", &config);
    drop(first);
    let restarted = start("replay-a2", &config);
    let r = phone.register(restarted.sip, Some(&captured));
    assert!(stale_challenge(&r), "replayed after a restart: {r}");
    assert_eq!(
        metric(&restarted, "sipfw_auth_total{result=\"other_boot\"}"),
        1.0
    );
}

#[test]
fn a_captured_register_is_refused_on_another_node() {
    let config = config("");
    let (mut phone, _first, captured) = captured_at("replay-b1", &config);
    // A second daemon with the same secret, while the first runs: a fresh challenge
    // (stale=true) every time, never 200, and never a failure toward a ban (the learner
    // bans at 5).
    let second = start("replay-b2", &config);
    for _ in 0..6 {
        let r = phone.register(second.sip, Some(&captured));
        assert!(stale_challenge(&r), "replayed to another node: {r}");
    }
    assert_eq!(
        metric(&second, "sipfw_auth_total{result=\"other_boot\"}"),
        6.0
    );
    assert_eq!(bans_made(&second), 0.0, "no ban for a foreign nonce");
    // The client whose nonce went stale logs in there at once.
    phone.register_ok(second.sip);
}

/// The trunk: answers INVITEs 200, records what it receives.
fn trunk() -> Trunk {
    let s = UdpSocket::bind(("127.0.0.1", free_port())).expect("bind the trunk");
    s.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    Trunk::start(s, 200)
}

#[test]
fn invite_credentials_over_the_edges_own_uri_do_not_reach_the_trunk() {
    let trunk = trunk();
    let edge = start(
        "uri-bound",
        &config(&format!("[proxy]\noutbound = \"{}\"\n", trunk.addr)),
    );
    let mut phone = Client::new();
    let number = "sip:+4930123456@trunk.example";

    // The digest covers the edge's own URI, not the number called: refused, nothing sent.
    let own = format!("sip:{}", edge.sip);
    let r = phone.call(edge.sip, number, &own);
    assert!(
        r.starts_with("SIP/2.0 400"),
        "INVITE with digest uri {own}: {r}"
    );
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(trunk.count("INVITE"), 0, "nothing reaches the trunk");
    assert_eq!(
        metric(&edge, "sipfw_auth_total{result=\"uri_mismatch\"}"),
        1.0
    );

    // The same call with the digest over its Request-URI goes out.
    let r = phone.call(edge.sip, number, number);
    assert!(
        r.starts_with("SIP/2.0 200"),
        "INVITE with digest uri = Request-URI: {r}"
    );
    assert_eq!(trunk.count("INVITE"), 1);
}
