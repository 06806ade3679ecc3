//! Parse throughput of this crate against rsip 0.4 on the same inputs, in the same run
//! (`cargo xtask bench parse`, or `cargo bench -p sip-firewall-sip --bench parse`).
//!
//! Four measurements per input, each the median of several timed rounds:
//! - `ours parse`: start line, every header line (folds, compact names), Content-Length body.
//! - `ours inspect`: the above plus every sanity check, which parses Via, From, To, Contact,
//!   CSeq, Call-ID, Content-Type... into typed values: what the daemon runs per message.
//! - `rsip parse`: `rsip::SipMessage::try_from`, headers left untyped (its lazy design).
//! - `rsip typed`: the above plus `.typed()` on Via, From, To, CSeq, Contact, Call-ID.

use std::hint::black_box;
use std::time::{Duration, Instant};

use rsip::prelude::*;
use sip_firewall_sip::{Limits, Transport, inspect, parse::parse};

const INVITE: &str = "INVITE sip:bob@biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.atlanta.example.com:5060;branch=z9hG4bK776asdhds;rport\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Alice <sip:alice@atlanta.example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.atlanta.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.atlanta.example.com:5060;transport=udp>\r\n\
Allow: INVITE, ACK, CANCEL, OPTIONS, BYE, REFER, NOTIFY, MESSAGE, SUBSCRIBE, INFO\r\n\
Supported: replaces, timer\r\n\
User-Agent: ExamplePhone/1.2.3\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 229\r\n\
\r\n\
v=0\r\n\
o=alice 2890844526 2890844526 IN IP4 pc33.atlanta.example.com\r\n\
s=Session SDP\r\n\
c=IN IP4 192.0.2.101\r\n\
t=0 0\r\n\
m=audio 49172 RTP/AVP 0 8 101\r\n\
a=rtpmap:0 PCMU/8000\r\n\
a=rtpmap:8 PCMA/8000\r\n\
a=rtpmap:101 telephone-event/8000\r\n\
a=sendrecv\r\n";

const REGISTER: &str = "REGISTER sip:registrar.biloxi.example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP bobspc.biloxi.example.com:5060;branch=z9hG4bKnashds7;rport\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@biloxi.example.com>\r\n\
From: Bob <sip:bob@biloxi.example.com>;tag=456248\r\n\
Call-ID: 843817637684230@998sdasdh09\r\n\
CSeq: 1826 REGISTER\r\n\
Contact: <sip:bob@192.0.2.4:5060;transport=udp>;expires=7200\r\n\
Expires: 7200\r\n\
User-Agent: ExamplePhone/1.2.3\r\n\
Content-Length: 0\r\n\
\r\n";

/// Iterations of `f` that take about `round`.
fn calibrate(round: Duration, f: &mut dyn FnMut() -> bool) -> u64 {
    let mut n: u64 = 64;
    loop {
        let t = Instant::now();
        for _ in 0..n {
            assert!(black_box(f()));
        }
        let took = t.elapsed();
        if took >= round / 4 {
            return (n as f64 * round.as_secs_f64() / took.as_secs_f64()) as u64 + 1;
        }
        n *= 2;
    }
}

/// Messages per second of each function: the median over `rounds` rounds, the functions
/// taking turns within each round so that a change of machine load hits all of them alike.
fn measure(rounds: usize, round: Duration, fs: &mut [&mut dyn FnMut() -> bool]) -> Vec<f64> {
    let ns: Vec<u64> = fs.iter_mut().map(|f| calibrate(round, *f)).collect();
    let mut rates = vec![Vec::with_capacity(rounds); fs.len()];
    for _ in 0..rounds {
        for (i, f) in fs.iter_mut().enumerate() {
            let t = Instant::now();
            for _ in 0..ns[i] {
                assert!(black_box(f()));
            }
            rates[i].push(ns[i] as f64 / t.elapsed().as_secs_f64());
        }
    }
    rates
        .into_iter()
        .map(|mut r| {
            r.sort_by(f64::total_cmp);
            r[r.len() / 2]
        })
        .collect()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, round) = if quick {
        (3, Duration::from_millis(50))
    } else {
        (9, Duration::from_millis(200))
    };
    let limits = Limits::default();
    println!("parse benchmark: median of {rounds} rounds of ~{round:?} each, messages/s");
    println!(
        "{:<10} {:>16} {:>16} {:>16} {:>16} {:>12} {:>12}",
        "input",
        "ours parse",
        "ours inspect",
        "rsip parse",
        "rsip typed",
        "parse ratio",
        "typed ratio"
    );
    for (name, text) in [("INVITE+SDP", INVITE), ("REGISTER", REGISTER)] {
        let bytes = text.as_bytes();
        // Both parsers must accept the input, or the comparison means nothing.
        assert!(
            inspect(bytes, &limits, Transport::Datagram, &[]).is_ok(),
            "{name}: ours refuses"
        );
        assert!(
            rsip::SipMessage::try_from(bytes).is_ok(),
            "{name}: rsip refuses"
        );

        let mut ours = || parse(black_box(bytes), &limits, Transport::Datagram).is_ok();
        let mut ours_full = || inspect(black_box(bytes), &limits, Transport::Datagram, &[]).is_ok();
        let mut rsip_raw = || rsip::SipMessage::try_from(black_box(bytes)).is_ok();
        let mut rsip_typed = || {
            let Ok(m) = rsip::SipMessage::try_from(black_box(bytes)) else {
                return false;
            };
            m.via_header().ok().and_then(|h| h.typed().ok()).is_some()
                && m.from_header().ok().and_then(|h| h.typed().ok()).is_some()
                && m.to_header().ok().and_then(|h| h.typed().ok()).is_some()
                && m.cseq_header().ok().and_then(|h| h.typed().ok()).is_some()
                && m.contact_header()
                    .ok()
                    .and_then(|h| h.typed().ok())
                    .is_some()
                && m.call_id_header().is_ok()
        };
        let r = measure(
            rounds,
            round,
            &mut [&mut ours, &mut ours_full, &mut rsip_raw, &mut rsip_typed],
        );
        let (ours, ours_full, rsip_raw, rsip_typed) = (r[0], r[1], r[2], r[3]);
        println!(
            "{:<10} {:>16.0} {:>16.0} {:>16.0} {:>16.0} {:>11.1}x {:>11.1}x",
            name,
            ours,
            ours_full,
            rsip_raw,
            rsip_typed,
            ours / rsip_raw,
            ours_full / rsip_typed
        );
    }
    println!("parse ratio = ours parse / rsip parse; typed ratio = ours inspect / rsip typed");
}
