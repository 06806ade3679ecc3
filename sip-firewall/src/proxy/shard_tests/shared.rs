//! What the 4 shards share: the fraud guard's books, the admin counts, the gauges.

use super::*;

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
