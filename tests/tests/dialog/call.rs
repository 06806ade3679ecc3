//! What the dialog tests share: Eve (an outsider on an address of her own in namespace a)
//! calls bob, whose phone is a raw socket at 198.51.100.1; their requests and answers, and
//! what a socket receives.

use std::{
    net::{Ipv4Addr, SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use sip_firewall_tests::{
    edge::Edge,
    netns::Pair,
    sipp::{Run, register_bob},
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

/// The parties of a dialog test at the edge `e`: bob registered through SIPp from
/// 198.51.100.1:`bob_port` (the run, for the test to check), his phone's socket on that
/// port, and Eve's socket on `eve`:5090, an address of her own added in namespace a.
pub fn bob_and_eve(e: &Edge, bob_port: u16, eve: &str) -> (Run, UdpSocket, UdpSocket) {
    let host = eve.parse::<Ipv4Addr>().expect("Eve's address").octets()[3];
    e.pair.add_a4(host).expect("Eve's address in namespace a");
    let r = register_bob(&e.pair, e.dir(), bob_port);
    let bob = socket(&e.pair, format!("198.51.100.1:{bob_port}"));
    let eve = socket(&e.pair, format!("{eve}:5090"));
    (r, bob, eve)
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

/// Eve's call to bob as far as his phone's answer: what the phone received, the INVITE
/// among it, what Eve received until the answer, and the Record-Route the answer carried.
pub struct Answered {
    pub at_bob: Vec<String>,
    pub forwarded: Option<String>,
    pub at_eve: Vec<String>,
    pub route: Option<String>,
}

/// Eve sends `invite` to the edge at `proxy`; bob's phone (on 198.51.100.1:`port`) answers
/// the INVITE it gets `code`; each side listens up to 3 s.
pub fn eve_calls_bob(
    eve: &UdpSocket,
    bob: &UdpSocket,
    proxy: SocketAddr,
    invite: &str,
    code: &str,
    port: u16,
) -> Answered {
    eve.send_to(invite.as_bytes(), proxy).expect("send INVITE");
    let at_bob = receive(bob, Duration::from_secs(3), |m| m.starts_with("INVITE"));
    let forwarded = at_bob.iter().find(|m| m.starts_with("INVITE")).cloned();
    if let Some(inv) = &forwarded {
        bob.send_to(answer(inv, code, port).as_bytes(), proxy)
            .expect("send the answer");
    }
    let status = format!("SIP/2.0 {}", code.split(' ').next().unwrap_or(code));
    let at_eve = receive(eve, Duration::from_secs(3), |m| m.starts_with(&status));
    let route = at_eve
        .iter()
        .find(|m| m.starts_with(&status))
        .and_then(|m| record_route(m));
    Answered {
        at_bob,
        forwarded,
        at_eve,
        route,
    }
}

/// Eve sends the in-dialog `request` (a `method`) to the edge at `proxy`; bob's phone
/// answers it 200 when it arrives (within 3 s): the request as bob got it, and what Eve
/// received until that 200 (within 3 s).
pub fn in_dialog_to_bob(
    eve: &UdpSocket,
    bob: &UdpSocket,
    proxy: SocketAddr,
    request: &str,
    method: &str,
) -> (Option<String>, Vec<String>) {
    eve.send_to(request.as_bytes(), proxy)
        .unwrap_or_else(|e| panic!("send {method}: {e}"));
    let got = receive(bob, Duration::from_secs(3), |m| m.starts_with(method));
    let at_bob = got.into_iter().find(|m| m.starts_with(method));
    let mut at_eve = Vec::new();
    if let Some(req) = &at_bob {
        bob.send_to(response_to(req, "200 OK", "", "").as_bytes(), proxy)
            .unwrap_or_else(|e| panic!("send 200 for the {method}: {e}"));
        at_eve = receive(eve, Duration::from_secs(3), |m| {
            m.starts_with("SIP/2.0 200")
        });
    }
    (at_bob, at_eve)
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
