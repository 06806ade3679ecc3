//! The test domain, example.com, as the daemon in namespace b serves it: its subscribers
//! alice and bob, short timers, the config that says so, and a forged login of bob.

use std::net::SocketAddr;

/// The password of bob, our subscriber under attack.
pub const BOB_PASSWORD: &str = "bob-secret-42";

/// Short timers (T1 50 ms): every transaction ends within seconds of its last message.
pub const SHORT_TIMERS: &str =
    "[timers]\nt1 = \"50ms\"\nt2 = \"400ms\"\nt4 = \"500ms\"\nd = \"1s\"\n";

/// The test domain and the daemon's address in namespace b: it listens on 0.0.0.0, so the
/// address that goes into our Via and Record-Route is said. Ends inside `[proxy]`.
pub const EDGE_AT_B: &str =
    "[sip]\ndomains = [\"example.com\"]\n[proxy]\nadvertise = \"198.51.100.2:5060\"\n";

/// The daemon's config in namespace b: the test domain and its two subscribers, short timers
/// (every transaction ends within seconds), `extra` appended (sections of its own).
pub fn config(extra: &str) -> String {
    format!(
        r#"{EDGE_AT_B}{SHORT_TIMERS}[auth]
# SIPp and SIPVicious answer only MD5 challenges, and only the first one offered.
algorithms = ["MD5", "SHA-256"]
users = [
  {{ user = "alice", domain = "example.com", password = "alice-secret" }},
  {{ user = "bob", domain = "example.com", password = "{BOB_PASSWORD}" }},
]
{extra}
"#
    )
}

/// REGISTER number `n` of bob from `from` with forged credentials (a nonce the edge never
/// issued, a response of zeros): a failed login, unauthenticated.
pub fn forged_register(from: SocketAddr, n: usize) -> String {
    format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-forged-{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=f{n}\r\nTo: <sip:bob@example.com>\r\n\
         Call-ID: forged-{n}@x\r\nCSeq: {n} REGISTER\r\nContact: <sip:bob@{from}>\r\n\
         Authorization: Digest username=\"bob\", realm=\"example.com\", nonce=\"forged{n}\", \
         uri=\"sip:example.com\", response=\"00000000000000000000000000000000\", algorithm=MD5, \
         qop=auth, nc=00000001, cnonce=\"c{n}\"\r\nContent-Length: 0\r\n\r\n"
    )
}
