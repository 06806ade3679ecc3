//! Captured digest credentials used again where they were not made: a REGISTER's
//! Authorization replayed after a restart of the daemon (same `[auth] secret`) and to a
//! second daemon sharing the secret; an INVITE whose digest `uri` names the edge itself,
//! so that its credentials do not cover the Request-URI (a trunk number). Daemons on
//! loopback (`--xdp-mode off`, no root needed), each on its own ports.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use sip_firewall::auth::digest::{Algorithm, response_auth};
use sip_firewall_tests::{
    daemon::{Loopback, daemon_bin},
    metrics::scrape_opt,
    ports::free_port,
};

/// 256 bits, the same on every daemon of these tests.
const SECRET: &str = "3c9f0a6d21b47e58c0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f7";
const PASSWORD: &str = "alice-secret";

fn config(extra: &str) -> String {
    format!(
        r#"
[sip]
domains = ["example.com"]
[timers]
t1 = "50ms"
t2 = "400ms"
t4 = "500ms"
d = "1s"
[auth]
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

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

fn param(value: &str, key: &str) -> String {
    value
        .split(&format!("{key}=\""))
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or("")
        .to_string()
}

/// Digest credentials (MD5, qop=auth, nc 1) answering `challenge` for `method` with digest
/// `uri`.
fn credentials(challenge: &str, method: &str, uri: &str) -> String {
    let (realm, nonce) = (param(challenge, "realm"), param(challenge, "nonce"));
    let ha1 = Algorithm::Md5.ha1("alice", &realm, PASSWORD);
    let r = response_auth(
        Algorithm::Md5,
        &ha1,
        &nonce,
        "00000001",
        "c0ffee",
        method,
        uri,
    );
    format!(
        "Digest username=\"alice\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{r}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"c0ffee\""
    )
}

/// A UDP client on 127.0.0.1 that waits for the final response of each request.
struct Client {
    s: UdpSocket,
    n: u32,
}

impl Client {
    fn new() -> Client {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        Client { s, n: 0 }
    }

    fn addr(&self) -> SocketAddr {
        self.s.local_addr().expect("local address")
    }

    /// Send `msg` to `to`; its final response (skipping 1xx, answering requests with
    /// nothing), or "nothing" after 3 s.
    fn final_response(&self, to: SocketAddr, msg: &str, call_id: &str) -> String {
        self.s.send_to(msg.as_bytes(), to).expect("send");
        let t0 = Instant::now();
        let mut buf = [0u8; 8192];
        while t0.elapsed() < Duration::from_secs(3) {
            let Ok((n, _)) = self.s.recv_from(&mut buf) else {
                continue;
            };
            let m = String::from_utf8_lossy(&buf[..n]).into_owned();
            if m.starts_with("SIP/2.0 ")
                && !m.starts_with("SIP/2.0 1")
                && header(&m, "Call-ID") == Some(call_id)
            {
                return m;
            }
        }
        "nothing".into()
    }

    /// A REGISTER of alice with `auth` (an Authorization value), a new transaction each time.
    fn register(&mut self, to: SocketAddr, auth: Option<&str>) -> String {
        self.n += 1;
        let (me, n) = (self.addr(), self.n);
        let call_id = format!("replay-{}-{}", std::process::id(), me.port());
        let auth = auth
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let msg = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-rc{n};rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=rc{n}\r\nTo: <sip:alice@example.com>\r\n\
             Call-ID: {call_id}\r\nCSeq: {n} REGISTER\r\nContact: <sip:alice@{me}>\r\nExpires: 600\r\n\
             {auth}Content-Length: 0\r\n\r\n"
        );
        self.final_response(to, &msg, &call_id)
    }

    /// alice registers at `to`: the Authorization value that got 200.
    fn register_ok(&mut self, to: SocketAddr) -> String {
        let chal = self.register(to, None);
        assert!(chal.starts_with("SIP/2.0 401"), "challenge: {chal}");
        let www = header(&chal, "WWW-Authenticate").expect("WWW-Authenticate");
        let auth = credentials(www, "REGISTER", "sip:example.com");
        let ok = self.register(to, Some(&auth));
        assert!(ok.starts_with("SIP/2.0 200"), "registered: {ok}");
        auth
    }

    /// An INVITE from alice to `ruri` at the edge `to`: the 407's challenge answered with
    /// digest `uri`; the final response to the INVITE with credentials.
    fn call(&mut self, to: SocketAddr, ruri: &str, digest_uri: &str) -> String {
        self.n += 1;
        let (me, n) = (self.addr(), self.n);
        let call_id = format!("call-{}-{}-{n}", std::process::id(), me.port());
        let invite = |cseq: u32, auth: &str| {
            format!(
                "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-ci{n}c{cseq};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=ci{n}\r\nTo: <{ruri}>\r\n\
                 Call-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:alice@{me}>\r\n\
                 {auth}Content-Length: 0\r\n\r\n"
            )
        };
        let chal = self.final_response(to, &invite(1, ""), &call_id);
        assert!(chal.starts_with("SIP/2.0 407"), "challenge: {chal}");
        let ack = format!(
            "ACK {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-ci{n}c1;rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=ci{n}\r\nTo: {}\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            header(&chal, "To").unwrap_or("")
        );
        self.s.send_to(ack.as_bytes(), to).expect("send ACK");
        let pa = header(&chal, "Proxy-Authenticate").expect("Proxy-Authenticate");
        let cred = format!(
            "Proxy-Authorization: {}\r\n",
            credentials(pa, "INVITE", digest_uri)
        );
        self.final_response(to, &invite(2, &cred), &call_id)
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

/// alice registers at a daemon: the captured Authorization, refused there a second time.
fn capture(phone: &mut Client, d: &Loopback) -> String {
    let captured = phone.register_ok(d.sip);
    let again = phone.register(d.sip, Some(&captured));
    assert!(
        again.starts_with("SIP/2.0 401"),
        "replay on the same daemon: {again}"
    );
    captured
}

/// Whether `r` is a fresh challenge with stale=true.
fn stale_challenge(r: &str) -> bool {
    r.starts_with("SIP/2.0 401")
        && header(r, "WWW-Authenticate").is_some_and(|w| w.contains("stale=true"))
}

#[test]
fn a_captured_register_is_refused_after_a_restart() {
    let config = config("");
    let mut phone = Client::new();
    let first = start("replay-a", &config);
    let captured = capture(&mut phone, &first);
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
    let mut phone = Client::new();
    let first = start("replay-b1", &config);
    let captured = capture(&mut phone, &first);
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

/// The trunk: answers INVITEs 200 and BYEs 200, counts the INVITEs it receives.
struct Trunk {
    addr: SocketAddr,
    invites: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Trunk {
    fn start() -> Trunk {
        let s = UdpSocket::bind(("127.0.0.1", free_port())).expect("bind the trunk");
        s.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeout");
        let addr = s.local_addr().expect("trunk address");
        let invites = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (got, st) = (invites.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut buf = [0u8; 8192];
            while !st.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(60) {
                let Ok((n, from)) = s.recv_from(&mut buf) else {
                    continue;
                };
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                if !(m.starts_with("INVITE ") || m.starts_with("BYE ")) {
                    continue;
                }
                let mut ok = String::from("SIP/2.0 200 OK\r\n");
                for line in m.split("\r\n").skip(1) {
                    let l = line.to_ascii_lowercase();
                    if ["via:", "from:", "call-id:", "cseq:", "record-route:"]
                        .iter()
                        .any(|p| l.starts_with(p))
                    {
                        ok.push_str(&format!("{line}\r\n"));
                    } else if l.starts_with("to:") {
                        ok.push_str(&format!("{line};tag=trunk\r\n"));
                    }
                }
                ok.push_str(&format!(
                    "Contact: <sip:gw@{addr}>\r\nContent-Length: 0\r\n\r\n"
                ));
                let _ = s.send_to(ok.as_bytes(), from);
                if m.starts_with("INVITE ")
                    && let Ok(mut v) = got.lock()
                {
                    v.push(m);
                }
            }
        });
        Trunk {
            addr,
            invites,
            stop,
            thread: Some(thread),
        }
    }

    fn invites(&self) -> usize {
        self.invites.lock().map(|v| v.len()).unwrap_or(0)
    }
}

impl Drop for Trunk {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn invite_credentials_over_the_edges_own_uri_do_not_reach_the_trunk() {
    let trunk = Trunk::start();
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
    assert_eq!(trunk.invites(), 0, "nothing reaches the trunk");
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
    assert_eq!(trunk.invites(), 1);
}
