//! The STUN keep-alive recognition on arbitrary bytes (every UDP datagram reaches it before
//! SIP parsing): the Binding request parser, the success response built for a v4 and a v6
//! source, and the response reader. Nothing may panic; an accepted request is a bounded
//! keep-alive, and its answer maps back to the source it was built for.
#![no_main]

use std::net::SocketAddr;

use libfuzzer_sys::fuzz_target;
use sip_firewall_sip::stun;

fuzz_target!(|data: &[u8]| {
    let _ = stun::mapped_address(data);
    let Ok(req) = stun::parse(data) else {
        return;
    };
    assert!(data.len() <= stun::HEADER_LEN + stun::MAX_ATTRIBUTES_LEN);
    for source in ["192.0.2.1:5060", "[2001:db8::1]:40000"] {
        let source: SocketAddr = source.parse().expect("literal address");
        let answer = req.success(source);
        assert!(answer.len() <= stun::HEADER_LEN + 24 + 8);
        assert_eq!(stun::mapped_address(&answer), Some(source));
        assert_eq!(&answer[8..20], &data[8..20]);
    }
});
