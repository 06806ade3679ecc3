//! Digest credentials where they were not made: a nonce of another start of the edge, and
//! an INVITE's digest over the edge's own URI instead of its Request-URI. What the core
//! answers, and what the ban learner hears (through the observer).

use super::*;

const EDGE: &str = "127.0.0.1:5060";
const PHONE: &str = "192.0.2.1:5060";
const CONFIG: &str = r#"
[sip]
domains = ["example.com"]
listen = ["127.0.0.1:5060"]
[proxy]
outbound = "203.0.113.5:5070"
[auth]
secret = "5f2b8c0d9e7a6b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c"
users = [{ user = "bob", domain = "example.com", password = "pw" }]
"#;

/// The authentication failures the core reports (what feeds the ban learner).
#[derive(Default)]
struct Failures(std::sync::Mutex<Vec<String>>);

impl crate::seams::Observer for Failures {
    fn auth_failure(&self, _source: SocketAddr, _user: Option<&str>, reason: &str) {
        if let Ok(mut v) = self.0.lock() {
            v.push(reason.to_string());
        }
    }
}

impl Failures {
    fn all(&self) -> Vec<String> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// A core of `CONFIG` (a start of the edge: its own boot id) reporting to `failures`.
fn start(failures: &Arc<Failures>, now: Instant) -> Core {
    observed_core(CONFIG, now, failures.clone())
}

/// A first start of the edge at a fresh clock: the failures it reports, the clock's
/// start, and the core.
fn first_start() -> (Arc<Failures>, Instant, Core) {
    let failures = Arc::new(Failures::default());
    let now = Instant::now();
    let core = start(&failures, now);
    (failures, now, core)
}

fn feed(core: &mut Core, now: Instant, text: &str) -> Vec<(SocketAddr, String)> {
    let ctx = super::ctx_on(PHONE, EDGE, Transport::Datagram);
    super::feed(core, now, text, &ctx).1
}

/// `header` credentials of bob answering the challenge in `answer` (its nonce, nonce-count
/// 1) for `method` over `uri`.
fn answering(answer: &str, header: &str, method: &str, uri: &str) -> String {
    credentials(header, &nonce_of(answer), "00000001", method, uri)
}

/// bob registers at `core`: REGISTER `n` challenged, `n + 1` with credentials for that
/// challenge answered 200. Those credentials.
fn registers(core: &mut Core, now: Instant, n: u32) -> String {
    let sent = feed(core, now, &register(n, ""));
    let auth = answering(&sent[0].1, "Authorization", "REGISTER", "sip:example.com");
    let sent = feed(core, now, &register(n + 1, &auth));
    assert!(sent[0].1.starts_with("SIP/2.0 200"), "{}", sent[0].1);
    auth
}

fn register(n: u32, auth: &str) -> String {
    format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKrb{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=b\r\nTo: <sip:bob@example.com>\r\n\
         Call-ID: boot@x\r\nCSeq: {n} REGISTER\r\nContact: <sip:bob@{PHONE}>\r\n{auth}\
         Content-Length: 0\r\n\r\n"
    )
}

/// Credentials that registered bob at one start of the edge, replayed to its next start
/// (the same secret): a fresh challenge with stale=true, nothing bound, counted as
/// `other_boot`, and no authentication failure reported (no ban). The second start's own
/// challenge then works.
#[test]
fn credentials_of_another_boot_are_stale_and_never_a_failure() {
    let (failures, now, mut first) = first_start();
    let captured = registers(&mut first, now, 1);

    let mut restarted = start(&failures, now);
    for n in 3..9 {
        let sent = feed(&mut restarted, now, &register(n, &captured));
        assert_eq!(sent.len(), 1, "{sent:?}");
        assert!(
            sent[0].1.starts_with("SIP/2.0 401") && sent[0].1.contains("stale=true"),
            "replayed after a restart: {}",
            sent[0].1
        );
    }
    assert!(unbound(&restarted, "bob@example.com", now));
    assert_eq!(failures.all(), Vec::<String>::new(), "no failure reported");
    assert_eq!(
        restarted
            .metrics
            .auth
            .with_label_values(&["other_boot"])
            .get(),
        6
    );
    registers(&mut restarted, now, 9);
}

fn invite(n: u32, ruri: &str, auth: &str) -> String {
    format!(
        "INVITE {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKiv{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=b{n}\r\nTo: <{ruri}>\r\n\
         Call-ID: uri{n}@x\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@{PHONE}>\r\n{auth}\
         Content-Length: 0\r\n\r\n"
    )
}

/// An INVITE to a trunk number whose digest covers the edge's own URI (what SIPp sends
/// without `-auth_uri`, and what a captured credential for another call would carry):
/// 400, nothing forwarded, reported as `uri_mismatch`. Over its Request-URI it goes out.
#[test]
fn an_invite_whose_digest_covers_the_edge_not_its_request_uri_is_refused() {
    let (failures, now, mut core) = first_start();
    let number = "sip:+4930123456@carrier.example";
    let sent = feed(&mut core, now, &invite(1, number, ""));
    let nonce = nonce_of(&sent[0].1);
    let over_edge = answering(
        &sent[0].1,
        "Proxy-Authorization",
        "INVITE",
        &format!("sip:{EDGE}"),
    );
    let sent = feed(&mut core, now, &invite(2, number, &over_edge));
    assert!(
        !sent.iter().any(|(_, m)| m.starts_with("INVITE")),
        "forwarded: {sent:?}"
    );
    assert!(
        sent.iter().any(|(_, m)| m.starts_with("SIP/2.0 400")),
        "{sent:?}"
    );
    assert_eq!(failures.all(), vec!["uri_mismatch".to_string()]);
    let over_number = credentials("Proxy-Authorization", &nonce, "00000002", "INVITE", number);
    let sent = feed(&mut core, now, &invite(3, number, &over_number));
    assert!(
        sent.iter()
            .any(|(a, m)| a.to_string() == "203.0.113.5:5070" && m.starts_with("INVITE")),
        "{sent:?}"
    );
}
