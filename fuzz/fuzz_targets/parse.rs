//! The message layer on arbitrary bytes: datagram parse + sanity, the stream framer fed in
//! chunks, and the stateless answer built from whatever could be salvaged. Nothing may
//! panic, and nothing may grow without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_firewall_sip::frame::{Event, StreamFramer};
use sip_firewall_sip::reply::{self, Reply, ReplyContext};
use sip_firewall_sip::{Kind, Limits, Transport, inspect};

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let src = "192.0.2.1:5060".parse().expect("literal address");
    let answer = |ctx: &ReplyContext<'_>| {
        let r = Reply { code: 400, phrase: "Bad Request", extra: &[], server: "fuzz" };
        let out = reply::build(ctx, &r, src);
        // An answer never carries more than a bounded copy of the request.
        assert!(out.len() <= data.len() * 2 + 1024);
        let _ = reply::udp_destination(ctx, src, false);
    };

    match inspect(data, &limits, Transport::Datagram, &["known"]) {
        Ok(m) => {
            assert!(m.body.len() <= data.len());
            answer(&ReplyContext::from_message(&m));
        }
        Err(r) => {
            let _ = r.reason.status();
            if matches!(r.kind, Kind::Request { .. }) {
                answer(&ReplyContext::salvage(data));
            }
        }
    }

    // The same bytes as a stream, cut into chunks whose size the first byte picks.
    let chunk = usize::from(data.first().copied().unwrap_or(1)).max(1);
    let mut f = StreamFramer::new(limits);
    for piece in data.chunks(chunk) {
        f.push(piece);
        loop {
            match f.next_event() {
                Ok(Some(Event::Message(m))) => {
                    assert!(m.len() <= limits.max_message_bytes);
                    let _ = inspect(&m, &limits, Transport::Stream, &[]);
                }
                Ok(Some(Event::Ping | Event::Pong)) => {}
                Ok(None) => break,
                Err(e) => {
                    assert!(e.head.len() <= limits.max_message_bytes);
                    return;
                }
            }
        }
        assert!(f.buffered() <= limits.max_message_bytes + chunk);
    }
    let _ = f.finish();
});
