//! What the dialog tests share: Eve (an outsider on an address of her own in namespace a)
//! calls bob, whose phone is a raw socket at 198.51.100.1; their requests and answers, and
//! what a socket receives.

use std::{
    net::UdpSocket,
    time::{Duration, Instant},
};

use sip_firewall_tests::{
    netns::Pair,
    ua::{Request, response_to, udp::socket_in},
};

/// The Call-ID, From and To of Eve's call to bob.
const FROM_EVE: &str = "<sip:eve@evil.example>;tag=eve";
const TO_BOB: &str = "<sip:bob@example.com>";

/// A socket on `addr` in namespace a (reads time out after 100 ms).
pub fn socket(pair: &Pair, addr: String) -> UdpSocket {
    socket_in(pair, &addr, Duration::from_millis(100))
}

/// Every datagram `s` receives within `within` (until `until` says stop).
pub fn receive(s: &UdpSocket, within: Duration, until: impl Fn(&str) -> bool) -> Vec<String> {
    let mut out = Vec::new();
    let t0 = Instant::now();
    let mut buf = [0u8; 8192];
    while t0.elapsed() < within {
        if let Ok((n, _)) = s.recv_from(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            let stop = until(&text);
            out.push(text);
            if stop {
                break;
            }
        }
    }
    out
}

/// bob's phone's answer `code` to `req` (RFC 3261 8.2.6.2, 12.1.1): its To-tag `bobtag`, its
/// Contact at 198.51.100.1:`port`.
pub fn answer(req: &str, code: &str, port: u16) -> String {
    let contact = format!("Contact: <sip:bob@198.51.100.1:{port}>\r\n");
    response_to(req, code, "bobtag", &contact)
}

/// Eve's INVITE to bob from `eve`:5090 (Call-ID `call_id`, branch `z9hG4bK<branch>`), with
/// `extra` header lines.
pub fn eve_invite(eve: &str, call_id: &str, branch: &str, extra: &str) -> String {
    Request {
        method: "INVITE",
        uri: "sip:bob@example.com",
        via: &format!("SIP/2.0/UDP {eve}:5090;branch=z9hG4bK{branch};rport"),
        from: FROM_EVE,
        to: TO_BOB,
        call_id,
        cseq: 1,
        extra: &format!("Contact: <sip:eve@{eve}:5090>\r\n{extra}"),
    }
    .text()
}

/// One request of Eve's in her call to bob: the dialog (`call_id`, To-tag `bobtag`), where
/// it goes (`uri` along `route`) and where she sends it from (`from`:5090).
pub struct InDialog<'a> {
    pub call_id: &'a str,
    pub uri: &'a str,
    pub route: &'a str,
    pub from: &'a str,
}

impl InDialog<'_> {
    /// Request `method` with CSeq `cseq` (its branch made of both), with a text body when
    /// given.
    pub fn text(&self, method: &str, cseq: u32, body: Option<&str>) -> String {
        let via = format!(
            "SIP/2.0/UDP {}:5090;branch=z9hG4bK{method}{cseq};rport",
            self.from
        );
        let request = Request {
            method,
            uri: self.uri,
            via: &via,
            from: FROM_EVE,
            to: &format!("{TO_BOB};tag=bobtag"),
            call_id: self.call_id,
            cseq,
            extra: &format!("Route: {}\r\n", self.route),
        };
        match body {
            Some(b) => request.with_body("text/plain", b),
            None => request.text(),
        }
    }
}

/// The first Record-Route of `msg`.
pub fn record_route(msg: &str) -> Option<String> {
    msg.split("\r\n")
        .find_map(|l| l.strip_prefix("Record-Route: ").map(str::to_string))
}
