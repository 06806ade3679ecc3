//! Calls through 4 shards: each message on the shard of its (inner) Call-ID.

use super::*;

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

/// A request parked for DNS on its call's shard gets its answer there: the resolution (a
/// failure here: the name server is a closed port) comes back tagged with the shard that
/// parked it, which answers 503 at once (on the fake clock, the housekeeping that would
/// answer a request left parked never runs).
#[tokio::test]
async fn a_resolution_comes_back_to_the_shard_that_parked_the_request() {
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port();
    let h = H::new("[proxy]\nshards = 4\n");
    let dns = crate::proxy::dns::Dns::new(&crate::proxy::dns::DnsConfig {
        nameservers: vec![SocketAddr::from(([127, 0, 0, 1], port))],
        timeout: Duration::from_millis(500),
        ..Default::default()
    })
    .expect("resolver");
    h.proxy.set_dns(dns);
    // The timer task's part, played here: the resolutions as they come back.
    let mut rx = crate::guard::lock(&h.proxy.resolved_rx, "dns results")
        .take()
        .expect("the receiver");

    let call = call_id_on(3, "dns");
    let invite = format!(
        "INVITE sip:x@carrier.example SIP/2.0\r\nVia: SIP/2.0/UDP {BOB};branch=z9hG4bKdns\r\n\
         Max-Forwards: 70\r\nFrom: <sip:pbx@10.0.0.21>;tag=p\r\nTo: <sip:x@carrier.example>\r\n\
         Call-ID: {call}\r\nCSeq: 1 INVITE\r\nContact: <sip:pbx@{BOB}>\r\n\
         Content-Length: 0\r\n\r\n"
    );
    let sent = h.feed(&invite, BOB);
    must(&sent, BOB, "SIP/2.0 100");
    assert!(one(&sent, BOB, "SIP/2.0 503").is_none(), "{sent:?}");
    let done = tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("the resolver gave up in time")
        .expect("a resolution");
    assert_eq!(done.0, 3, "tagged with the shard that parked the request");
    h.proxy.apply_resolved(done);
    must(&h.take(), BOB, "SIP/2.0 503");
}
