//! The whole receive path on arbitrary input: bytes -> user-space gate -> message layer ->
//! proxy core (transactions, registrar, digest, forking, timers) on a fake clock, over UDP
//! datagrams and TCP streams (through the framer), with subscribers and bindings configured.
//! Nothing may panic: the message boundary catches panics, and this target fails on any
//! caught one (`sipfw_internal_errors_total`), so a bug is a crash here.
//!
//! The input is a list of records; the first byte of each says what it is:
//! - `op % 4 == 0 | 1`: a message, UDP (0) or TCP (1), from source `(op >> 2) % 8`, then a
//!   two-byte little-endian length, then that many bytes (fewer at the end of the input);
//! - `op % 4 == 2`: the clock moves `next byte` x 50 ms (x 1 s when `op & 4`), timers run;
//! - `op % 4 == 3`: the TCP connection of source `(op >> 2) % 8` closes.
#![no_main]

use std::{
    net::SocketAddr,
    sync::{Arc, LazyLock, OnceLock},
    time::Duration,
};

use libfuzzer_sys::fuzz_target;
use sip_firewall::{
    config::Config,
    fuzzing::{Pipeline, user_gate},
    seams::Gate,
};

const CONFIG: &str = r#"
[sip]
domains = ["example.com"]
listen = ["127.0.0.1:5060"]
[policy]
allow = ["10.0.0.0/8"]
[xdp]
# Rates would make the run depend on wall-clock speed: off.
flood_rate = 0
pressure_budget = 0
[bans]
request_limit = 0
[auth]
secret = "66757a7a2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e2e"
users = [
  { user = "alice", domain = "example.com", password = "a" },
  { user = "bob", domain = "example.com", password = "b" },
]
"#;

/// Where records come from: two trusted phones, outsiders (one address on two ports),
/// IPv6, loopback.
const SOURCES: [&str; 8] = [
    "10.0.0.5:5062",
    "10.0.0.6:5060",
    "192.0.2.7:5060",
    "192.0.2.7:5070",
    "192.0.2.8:5060",
    "[2001:db8::1]:5060",
    "127.0.0.1:5060",
    "203.0.113.9:40000",
];

static CFG: LazyLock<Config> = LazyLock::new(|| {
    Config::from_toml(CONFIG, std::path::Path::new("fuzz.toml")).expect("fuzz config")
});

static GATE: OnceLock<Arc<dyn Gate>> = OnceLock::new();

fn gate() -> Arc<dyn Gate> {
    GATE.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sipfw-fuzz-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        user_gate(&CFG, &dir).expect("gate")
    })
    .clone()
}

fn register(user: &str, from: &str, n: u32) -> String {
    format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-setup{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:{user}@example.com>;tag=s{n}\r\nTo: <sip:{user}@example.com>\r\n\
         Call-ID: setup{n}@fuzz\r\nCSeq: 1 REGISTER\r\nContact: <sip:{user}@{from}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
}

fuzz_target!(|data: &[u8]| {
    let sources: Vec<SocketAddr> = SOURCES.iter().map(|s| s.parse().expect("source")).collect();
    let mut p = Pipeline::new(&CFG, Some(gate())).expect("pipeline");
    let before = sip_firewall::metrics::internal_errors("message")
        + sip_firewall::metrics::internal_errors("timer");
    // Bindings: bob on both trusted phones (a fork), alice on the first.
    p.datagram(sources[0], register("bob", SOURCES[0], 1).as_bytes());
    p.datagram(sources[1], register("bob", SOURCES[1], 2).as_bytes());
    p.datagram(sources[0], register("alice", SOURCES[0], 3).as_bytes());

    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let source = sources[usize::from(op >> 2) % sources.len()];
        match op % 4 {
            0 | 1 => {
                let len = match rest {
                    [a, b, ..] => usize::from(u16::from_le_bytes([*a, *b])),
                    _ => rest.len(),
                };
                rest = rest.get(2..).unwrap_or_default();
                let (msg, tail) = rest.split_at(len.min(rest.len()));
                rest = tail;
                let answered = if op % 4 == 0 {
                    p.datagram(source, msg)
                } else {
                    p.stream(source, msg)
                };
                // A direct answer is bounded by what came in (a copy of its headers, at most).
                assert!(
                    answered <= 2 * msg.len() + 2048,
                    "{answered} for {}",
                    msg.len()
                );
            }
            2 => {
                let step = u64::from(rest.first().copied().unwrap_or(1));
                rest = rest.get(1..).unwrap_or_default();
                let unit = if op & 4 != 0 { 1000 } else { 50 };
                p.advance(Duration::from_millis(step * unit));
            }
            _ => p.close(source),
        }
    }
    // Let every timer run out.
    for _ in 0..8 {
        p.advance(Duration::from_secs(10));
    }
    let after = sip_firewall::metrics::internal_errors("message")
        + sip_firewall::metrics::internal_errors("timer");
    assert_eq!(
        before,
        after,
        "a panic was caught at the message boundary: {:?}",
        sip_firewall::guard::last_caught()
    );
});
