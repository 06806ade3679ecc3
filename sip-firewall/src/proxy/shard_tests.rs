//! The proxy with `[proxy] shards = 4`, through its [`Handler`] on a fake clock: calls whose
//! messages meet on the shard of their Call-ID, and what the shards share (bindings, the
//! fraud guard's books, the counts the admin API and the gauges show) seen alike from each.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use sip_firewall_common::shard::shard_of;
use sip_firewall_sip::{Limits, Transport, parse::parse};

use super::Proxy;
use crate::{
    clock::FakeClock,
    config::Config,
    seams::{Context, Destination, Handler, NoObserver, Outbound},
};

const SHARDS: u32 = 4;
const CALLER: &str = "192.0.2.1:5060";
const BOB: &str = "10.0.0.21:21";
const TRUNK: &str = "203.0.113.5:5070";
const PHONE: &str = "192.0.2.7:5060";

/// What the proxy sent, in order.
#[derive(Default)]
struct Sent(Mutex<Vec<(SocketAddr, String)>>);

impl Outbound for Sent {
    fn send(&self, dest: Destination, bytes: &[u8]) -> bool {
        let text = String::from_utf8_lossy(bytes).into_owned();
        crate::guard::lock(&self.0, "sent").push((dest.addr, text));
        true
    }
}

struct H {
    proxy: Proxy,
    clock: FakeClock,
    sent: Arc<Sent>,
}

impl H {
    /// A proxy of 4 shards for example.com on 127.0.0.1:5060 (10.0.0.0/8 allow-listed,
    /// bob and alice subscribers), with `rest` of the configuration.
    fn new(rest: &str) -> H {
        let text = format!(
            "[sip]\ndomains = [\"example.com\"]\nlisten = [\"127.0.0.1:5060\"]\n\
             [policy]\nallow = [\"10.0.0.0/8\"]\n\
             [auth]\nusers = [{{ user = \"bob\", domain = \"example.com\", password = \"pw\" }}, \
             {{ user = \"alice\", domain = \"example.com\", password = \"pw\" }}]\n{rest}"
        );
        let config = Config::from_toml(&text, std::path::Path::new("t.toml")).expect("config");
        let (proxy, clock) = Proxy::with_fake_clock(&config, Arc::new(NoObserver)).expect("proxy");
        assert_eq!(proxy.shards(), SHARDS as usize);
        let sent = Arc::new(Sent::default());
        proxy.attach(sent.clone());
        H { proxy, clock, sent }
    }

    /// Feed `text` from `source`: what the proxy sent.
    fn feed(&self, text: &str, source: &str) -> Vec<(SocketAddr, String)> {
        let m = parse(text.as_bytes(), &Limits::default(), Transport::Datagram).expect("parse");
        let ctx = Context::new(
            source.parse().expect("addr"),
            "127.0.0.1:5060".parse().expect("addr"),
            Transport::Datagram,
        );
        if m.is_request() {
            self.proxy.on_request(&m, &ctx);
        } else {
            self.proxy.on_response(&m, &ctx);
        }
        self.take()
    }

    fn take(&self) -> Vec<(SocketAddr, String)> {
        std::mem::take(&mut *crate::guard::lock(&self.sent.0, "sent"))
    }

    /// Advance the clock by `d`, the timers run every 10 ms as the timer task runs them.
    fn advance(&self, d: Duration) -> Vec<(SocketAddr, String)> {
        let step = Duration::from_millis(10);
        let mut left = d;
        while !left.is_zero() {
            let s = step.min(left);
            self.clock.advance(s);
            self.proxy.tick();
            left -= s;
        }
        self.take()
    }

    /// bob registers his contact at [`BOB`] (allow-listed: no digest) with `call_id`.
    fn register_bob(&self, call_id: &str) {
        let msg = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {BOB};branch=z9hG4bKreg\r\n\
             From: <sip:bob@example.com>;tag=r\r\nTo: <sip:bob@example.com>\r\n\
             Call-ID: {call_id}\r\nCSeq: 1 REGISTER\r\nContact: <sip:bob@{BOB}>\r\n\
             Content-Length: 0\r\n\r\n"
        );
        let sent = self.feed(&msg, BOB);
        assert!(one(&sent, BOB, "SIP/2.0 200").is_some(), "{sent:?}");
    }

    /// The transactions alive in every shard (server, client), summed.
    fn active(&self) -> (usize, usize) {
        self.proxy
            .active_per_shard()
            .into_iter()
            .fold((0, 0), |(s, c), (a, b)| (s + a, c + b))
    }
}

/// A Call-ID `prefix-N` on shard `shard` of [`SHARDS`].
fn call_id_on(shard: u32, prefix: &str) -> String {
    (0..)
        .map(|i| format!("{prefix}-{i}@example.org"))
        .find(|c| shard_of(c.as_bytes(), SHARDS) == shard)
        .expect("some Call-ID lands there")
}

/// The one message of `sent` to `addr` that starts with `start`.
fn one(sent: &[(SocketAddr, String)], addr: &str, start: &str) -> Option<String> {
    let addr: SocketAddr = addr.parse().expect("addr");
    let found: Vec<&String> = sent
        .iter()
        .filter(|(a, m)| *a == addr && m.starts_with(start))
        .map(|(_, m)| m)
        .collect();
    assert!(found.len() <= 1, "{start} to {addr} twice: {sent:?}");
    found.first().map(|m| (*m).clone())
}

fn must(sent: &[(SocketAddr, String)], addr: &str, start: &str) -> String {
    one(sent, addr, start).unwrap_or_else(|| panic!("no {start} to {addr}: {sent:?}"))
}

/// carol's INVITE to bob, from [`CALLER`].
fn invite_to_bob(branch: &str, call_id: &str) -> String {
    format!(
        "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch={branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:carol@other.org>;tag=c\r\nTo: <sip:bob@example.com>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:carol@{CALLER}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

/// The answer `status` to the request `req` (as the proxy forwarded it), To-tag `tag`,
/// with a Contact at `contact`.
fn answer(req: &str, status: &str, tag: &str, contact: &str) -> String {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for line in req.split("\r\n").skip(1) {
        let lower = line.to_ascii_lowercase();
        if ["via:", "from:", "call-id:", "cseq:", "record-route:"]
            .iter()
            .any(|p| lower.starts_with(p))
        {
            out.push_str(&format!("{line}\r\n"));
        } else if lower.starts_with("to:") {
            out.push_str(&format!("{line};tag={tag}\r\n"));
        }
    }
    out.push_str(&format!(
        "Contact: <sip:x@{contact}>\r\nContent-Length: 0\r\n\r\n"
    ));
    out
}

/// The Route lines of an in-dialog request from the caller: the Record-Route of the 2xx
/// it got.
fn route_of(ok: &str) -> String {
    ok.split("\r\n")
        .filter_map(|l| l.strip_prefix("Record-Route: "))
        .map(|v| format!("Route: {v}\r\n"))
        .collect()
}

/// An in-dialog request of carol's to bob's contact (CSeq `n`).
fn in_dialog(method: &str, n: u32, branch: &str, call_id: &str, ok: &str) -> String {
    format!(
        "{method} sip:x@{BOB} SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch={branch}\r\n\
         Max-Forwards: 70\r\n{}From: <sip:carol@other.org>;tag=c\r\n\
         To: <sip:bob@example.com>;tag=b\r\nCall-ID: {call_id}\r\nCSeq: {n} {method}\r\n\
         Content-Length: 0\r\n\r\n",
        route_of(ok)
    )
}

/// A REGISTER on one shard, then a call to bob whose Call-ID is on another: the INVITE
/// finds the binding (the location store is shared), and the call runs to its end
/// (180, 200, ACK, BYE and its 200) on its own shard, every transaction freed after.
#[test]
fn a_call_reaches_a_binding_registered_on_another_shard() {
    let h = H::new("[proxy]\nshards = 4\n");
    let reg = call_id_on(0, "reg");
    h.register_bob(&reg);
    let call = call_id_on(3, "call");
    assert_ne!(
        shard_of(reg.as_bytes(), SHARDS),
        shard_of(call.as_bytes(), SHARDS)
    );
    assert_eq!(
        h.proxy
            .bindings_from(BOB.parse::<SocketAddr>().expect("addr").ip(), None)
            .len(),
        1
    );

    let sent = h.feed(&invite_to_bob("z9hG4bKinv1", &call), CALLER);
    must(&sent, CALLER, "SIP/2.0 100");
    let inv = must(&sent, BOB, "INVITE");
    assert_eq!(
        h.proxy.active_per_shard()[3].0,
        1,
        "the call's transaction on its shard"
    );

    let sent = h.feed(&answer(&inv, "180 Ringing", "b", BOB), BOB);
    must(&sent, CALLER, "SIP/2.0 180");
    let sent = h.feed(&answer(&inv, "200 OK", "b", BOB), BOB);
    let ok = must(&sent, CALLER, "SIP/2.0 200");

    let sent = h.feed(&in_dialog("ACK", 1, "z9hG4bKack1", &call, &ok), CALLER);
    must(&sent, BOB, "ACK");
    let sent = h.feed(&in_dialog("BYE", 2, "z9hG4bKbye1", &call, &ok), CALLER);
    let bye = must(&sent, BOB, "BYE");
    let sent = h.feed(&answer(&bye, "200 OK", "b", BOB), BOB);
    must(&sent, CALLER, "SIP/2.0 200");

    h.advance(Duration::from_secs(40));
    assert_eq!(h.active(), (0, 0));
    assert_eq!(h.proxy.transactions_gauges(), (0, 0));
}

/// CANCEL of a ringing call on a shard other than the REGISTER's: 200 to the CANCEL, a
/// CANCEL to bob, his 487 back to the caller, nothing left after.
#[test]
fn a_cancel_meets_its_invite_on_the_calls_shard() {
    let h = H::new("[proxy]\nshards = 4\n");
    h.register_bob(&call_id_on(1, "reg"));
    let call = call_id_on(2, "call");
    let inv = must(
        &h.feed(&invite_to_bob("z9hG4bKinv2", &call), CALLER),
        BOB,
        "INVITE",
    );
    h.feed(&answer(&inv, "180 Ringing", "b", BOB), BOB);

    let cancel = format!(
        "CANCEL sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/UDP {CALLER};branch=z9hG4bKinv2\r\n\
         Max-Forwards: 70\r\nFrom: <sip:carol@other.org>;tag=c\r\nTo: <sip:bob@example.com>\r\n\
         Call-ID: {call}\r\nCSeq: 1 CANCEL\r\nContent-Length: 0\r\n\r\n"
    );
    let sent = h.feed(&cancel, CALLER);
    must(&sent, CALLER, "SIP/2.0 200");
    let fwd = must(&sent, BOB, "CANCEL");
    h.feed(&answer(&fwd, "200 OK", "b", BOB), BOB);
    let sent = h.feed(&answer(&inv, "487 Request Terminated", "b", BOB), BOB);
    must(&sent, CALLER, "SIP/2.0 487");
    must(&sent, BOB, "ACK");

    h.advance(Duration::from_secs(40));
    assert_eq!(h.active(), (0, 0));
}

/// alice's calls to the trunk: `call_id`, digest with the nonce of her first challenge
/// (nonce-count `nc`): what the proxy sent.
fn alice_calls(h: &H, call_id: &str, nonce: &str, nc: u32) -> Vec<(SocketAddr, String)> {
    use crate::auth::digest::{Algorithm, response_auth};
    let uri = "sip:0301234567@carrier.example";
    let nc = format!("{nc:08x}");
    let branch: String = call_id
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let ha1 = Algorithm::Sha256.ha1("alice", "example.com", "pw");
    let r = response_auth(Algorithm::Sha256, &ha1, nonce, &nc, "cn", "INVITE", uri);
    let msg = format!(
        "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bK{nc}{branch}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a\r\nTo: <{uri}>\r\n\
         Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{PHONE}>\r\n\
         Proxy-Authorization: Digest username=\"alice\", realm=\"example.com\", \
         nonce=\"{nonce}\", uri=\"{uri}\", response=\"{r}\", algorithm=SHA-256, qop=auth, \
         nc={nc}, cnonce=\"cn\"\r\nContent-Length: 0\r\n\r\n"
    );
    h.feed(&msg, PHONE)
}

/// A nonce of the proxy's, from the challenge to an INVITE of alice's without credentials.
fn nonce(h: &H) -> String {
    let msg = format!(
        "INVITE sip:0301234567@carrier.example SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKn\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a\r\n\
         To: <sip:0301234567@carrier.example>\r\nCall-ID: challenge@x\r\nCSeq: 1 INVITE\r\n\
         Contact: <sip:alice@{PHONE}>\r\nContent-Length: 0\r\n\r\n"
    );
    let chal = must(&h.feed(&msg, PHONE), PHONE, "SIP/2.0 407");
    let i = chal.find("nonce=\"").expect("a nonce") + 7;
    chal[i..].split('"').next().expect("quoted").to_string()
}

const TO_TRUNK: &str = "[proxy]\nshards = 4\noutbound = \"203.0.113.5:5070\"\n";

/// `max_calls_per_user = 1` holds across shards: alice's answered call on one shard keeps
/// her second, on another, out (503): the fraud guard's books are one.
#[test]
fn the_per_account_call_limit_counts_calls_on_every_shard() {
    let h = H::new(&format!("{TO_TRUNK}[fraud]\nmax_calls_per_user = 1\n"));
    let nonce = nonce(&h);
    let first = call_id_on(0, "alice");
    let second = call_id_on(1, "alice");
    let sent = alice_calls(&h, &first, &nonce, 1);
    let inv = must(&sent, TRUNK, "INVITE");
    must(
        &h.feed(&answer(&inv, "200 OK", "t", TRUNK), TRUNK),
        PHONE,
        "SIP/2.0 200",
    );
    assert_eq!(h.proxy.calls_active(), 1);

    let sent = alice_calls(&h, &second, &nonce, 2);
    assert!(one(&sent, TRUNK, "INVITE").is_none(), "{sent:?}");
    let refusal = must(&sent, PHONE, "SIP/2.0 503");
    assert!(
        refusal.starts_with("SIP/2.0 503 Too Many Calls"),
        "{refusal}"
    );
}

/// The admin counts and the gauges are those of every shard: calls answered on two shards
/// are two calls, transactions open on four shards are summed in the gauges.
#[test]
fn admin_counts_and_gauges_sum_the_shards() {
    let h = H::new(TO_TRUNK);
    let nonce = nonce(&h);
    for (i, shard) in [0, 3].into_iter().enumerate() {
        let c = call_id_on(shard, "alice");
        let inv = must(&alice_calls(&h, &c, &nonce, i as u32 + 1), TRUNK, "INVITE");
        h.feed(&answer(&inv, "200 OK", "t", TRUNK), TRUNK);
    }
    assert_eq!(h.proxy.calls_active(), 2);

    h.register_bob(&call_id_on(2, "reg"));
    h.advance(Duration::from_secs(40));
    assert_eq!(h.active(), (0, 0));
    assert_eq!(h.proxy.calls_active(), 2, "answered calls stay up");
    for shard in 0..SHARDS {
        let c = call_id_on(shard, "ring");
        must(
            &h.feed(&invite_to_bob(&format!("z9hG4bKr{shard}"), &c), CALLER),
            BOB,
            "INVITE",
        );
    }
    let per_shard = h.proxy.active_per_shard();
    assert!(
        per_shard.iter().all(|&(s, c)| s == 1 && c == 1),
        "{per_shard:?}"
    );
    assert_eq!(h.proxy.transactions_gauges(), (4, 4));
}

/// A Call-ID we sealed for the outside (topology hiding) goes to the shard of the inner
/// one, not to that of its sealed text; a value that does not open goes as it is.
#[test]
fn a_sealed_call_id_goes_to_the_shard_of_the_inner_one() {
    let h = H::new("[proxy]\nshards = 4\n");
    let (inner, sealed) = (0..)
        .map(|i| {
            let inner = call_id_on(2, &format!("inner{i}"));
            let sealed = h.proxy.shared.seal_call_id(&inner).expect("sealed");
            (inner, sealed)
        })
        .find(|(_, sealed)| shard_of(sealed.as_bytes(), SHARDS) != 2)
        .expect("a seal hashing elsewhere");
    assert_ne!(inner, sealed);
    assert_eq!(h.proxy.shared.shard_of(&sealed), 2);
    let forged = "sfwth-00ff";
    assert_eq!(
        h.proxy.shared.shard_of(forged),
        shard_of(forged.as_bytes(), SHARDS) as usize
    );
}

/// Calls past `max_call_duration` on two shards are each ended by their own shard (BYE
/// both ways): the answers to those BYEs, which carry the call's Call-ID, meet their
/// client transactions there, and nothing is retransmitted after.
#[test]
fn calls_past_their_limit_are_ended_by_their_own_shard() {
    let h = H::new(&format!("{TO_TRUNK}[fraud]\nmax_call_duration = \"10s\"\n"));
    let nonce = nonce(&h);
    for (i, shard) in [1, 3].into_iter().enumerate() {
        let c = call_id_on(shard, "long");
        let inv = must(&alice_calls(&h, &c, &nonce, i as u32 + 1), TRUNK, "INVITE");
        h.feed(&answer(&inv, "200 OK", "t", TRUNK), TRUNK);
    }
    assert_eq!(h.proxy.calls_active(), 2);
    let sent = h.advance(Duration::from_secs(11));
    // Each BYE once (its retransmissions are the same text).
    let mut byes: Vec<&(SocketAddr, String)> =
        sent.iter().filter(|(_, m)| m.starts_with("BYE ")).collect();
    byes.sort();
    byes.dedup();
    assert_eq!(byes.len(), 4, "{sent:?}");
    for (to, bye) in byes {
        let sent = h.feed(
            &answer(bye, "200 OK", "x", &to.to_string()),
            &to.to_string(),
        );
        assert!(sent.is_empty(), "{sent:?}");
    }
    let later = h.advance(Duration::from_secs(3));
    assert!(
        !later.iter().any(|(_, m)| m.starts_with("BYE ")),
        "{later:?}"
    );
    assert_eq!(h.proxy.calls_active(), 0);
}

/// A call made inside toward the outside under topology hiding: its Call-ID leaves
/// sealed, and the outside's answers and requests, which carry the seal, meet the call on
/// the shard of the inner Call-ID (where its transactions are), not on that of the seal.
#[test]
fn answers_carrying_a_sealed_call_id_meet_the_call_on_its_shard() {
    const ALICE: &str = "10.1.0.9:5070";
    const OUTSIDE: &str = "203.0.113.5:5060";
    let h = H::new("[proxy]\nshards = 4\ntopology_hiding = \"outside\"\n");
    let (inner, sealed) = (0..)
        .map(|i| {
            let inner = format!("in-{i}@10.1.0.9");
            let sealed = h.proxy.shared.seal_call_id(&inner).expect("sealed");
            (inner, sealed)
        })
        .find(|(inner, sealed)| {
            shard_of(inner.as_bytes(), SHARDS) != shard_of(sealed.as_bytes(), SHARDS)
        })
        .expect("a seal hashing elsewhere");
    let invite = format!(
        "INVITE sip:bob@{OUTSIDE} SIP/2.0\r\nVia: SIP/2.0/UDP {ALICE};branch=z9hG4bKa1\r\n\
         Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=a\r\nTo: <sip:bob@{OUTSIDE}>\r\n\
         Call-ID: {inner}\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@{ALICE}>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let out = must(&h.feed(&invite, ALICE), OUTSIDE, "INVITE");
    assert!(out.contains(&format!("Call-ID: {sealed}\r\n")), "{out}");

    let sent = h.feed(&answer(&out, "180 Ringing", "b", OUTSIDE), OUTSIDE);
    let ringing = must(&sent, ALICE, "SIP/2.0 180");
    assert!(
        ringing.contains(&format!("Call-ID: {inner}\r\n")),
        "{ringing}"
    );
    let sent = h.feed(&answer(&out, "200 OK", "b", OUTSIDE), OUTSIDE);
    must(&sent, ALICE, "SIP/2.0 200");
}
