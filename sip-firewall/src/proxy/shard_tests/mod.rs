//! The proxy with `[proxy] shards = 4`, through its [`Handler`] on a fake clock: calls whose
//! messages meet on the shard of their Call-ID (`calls.rs`: with the binding registered on
//! another shard, CANCEL, sealed Call-IDs, DNS), and what the shards share (`shared.rs`:
//! the fraud guard's books, the counts the admin API and the gauges show) seen alike from
//! each. The fixture is here.

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
    proxy: Arc<Proxy>,
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
        H {
            proxy: Arc::new(proxy),
            clock,
            sent,
        }
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

mod calls;
mod shared;
