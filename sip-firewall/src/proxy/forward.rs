//! Request and response rewriting for forwarding (RFC 3261 16.6, 16.7), and the requests a
//! proxy builds itself: ACK for a non-2xx final (17.1.1.3) and CANCEL (9.1).

use std::net::{IpAddr, SocketAddr};

use sip_firewall_sip::{
    Transport,
    headers::{HeaderName, scalar, via},
};

use super::{
    msg::{SipMsg, split_first_param},
    route::Local,
};
use crate::seams::Destination;

/// Max-Forwards of requests that carry none (RFC 3261 16.6 step 3) and of our own.
pub const MAX_FORWARDS: u8 = 70;

/// Add `received` and fill `rport` in the top Via of a request from `source` (RFC 3261
/// 18.2.1, RFC 3581 4), so that responses find their way back through NAT. With
/// `force_rport` the port is added even when the client did not ask.
pub fn stamp_top_via(msg: &mut SipMsg, source: SocketAddr, force_rport: bool) {
    let Some(h) = msg
        .headers
        .iter_mut()
        .find(|h| HeaderName::parse(&h.name) == HeaderName::Via)
    else {
        return;
    };
    let (first, rest) = split_first_param(&h.value);
    let Some(Ok(v)) = via::parse_list(first).next() else {
        return;
    };
    let mut out = String::with_capacity(first.len() + 40);
    let mut has_rport = false;
    let mut params = first.split(';');
    out.push_str(params.next().unwrap_or("").trim_end());
    for p in params {
        out.push(';');
        let name = p.split('=').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("rport") {
            has_rport = true;
            out.push_str(&format!("rport={}", source.port()));
        } else if name.eq_ignore_ascii_case("received") {
            // Replaced below with what we saw.
            out.pop();
        } else {
            out.push_str(p.trim());
        }
    }
    if force_rport && !has_rport {
        out.push_str(&format!(";rport={}", source.port()));
    }
    if v.host.ip() != Some(source.ip()) || v.received.is_some() {
        match source.ip() {
            IpAddr::V4(a) => out.push_str(&format!(";received={a}")),
            IpAddr::V6(a) => out.push_str(&format!(";received=[{a}]")),
        }
    }
    h.value = match rest {
        Some(r) => format!("{out}, {r}"),
        None => out,
    };
}

/// A request that may not be forwarded any more (answer 483).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("Max-Forwards exhausted or unreadable")]
pub struct TooManyHops;

/// Decrement Max-Forwards (adding it when absent). Err when it is already 0: answer 483.
pub fn decrement_max_forwards(msg: &mut SipMsg) -> Result<(), TooManyHops> {
    let n = match msg.get(HeaderName::MaxForwards) {
        Some(v) => scalar::max_forwards(v).ok_or(TooManyHops)?,
        None => MAX_FORWARDS + 1,
    };
    if n == 0 {
        return Err(TooManyHops);
    }
    msg.set(HeaderName::MaxForwards, (n - 1).to_string());
    Ok(())
}

/// The transport token of a Via for `t`.
pub fn via_transport(t: Transport) -> &'static str {
    match t {
        Transport::Datagram => "UDP",
        Transport::Stream => "TCP",
        Transport::Tls => "TLS",
        Transport::Ws => "WS",
        // RFC 7118 5.3: a message over secure WebSocket carries the Via transport WSS.
        Transport::Wss => "WSS",
    }
}

/// Our Via on top (RFC 3261 16.6 step 8), asking for rport.
pub fn add_via(msg: &mut SipMsg, t: Transport, hostport: &str, branch: &str) {
    msg.push_front(
        HeaderName::Via,
        format!(
            "SIP/2.0/{} {hostport};branch={branch};rport",
            via_transport(t)
        ),
    );
}

/// Our Via on top of a request to `dest`: naming the listen address it leaves from
/// (RFC 3261 18.1.1: the sent-by is where the answers are to come back; on an edge with an
/// inside and an outside address only the one routing to `dest` is reachable from there).
pub fn add_via_toward(msg: &mut SipMsg, local: &Local, dest: Destination, branch: &str) {
    let hostport = local.hostport_toward(dest.transport, dest.addr.ip());
    add_via(msg, dest.transport, &hostport, branch);
}

/// Record-Route ourselves (RFC 3261 16.6 step 4) with `lr`: in-dialog requests come back
/// through us. `inbound` and `outbound` are the transport and `host:port` of our side
/// toward the caller and toward the callee. When the request changes transport or
/// interface here, two entries (RFC 5658 4: double record-routing): the top one for the
/// callee's side, the other for the caller's, so each side reaches us the way it can (an
/// inside phone cannot route to our outside address, nor an outside one to our inside
/// address). `stamp` binds the entries to the dialog (see
/// [`super::route::StampKeys::seal`]).
pub fn record_route(
    msg: &mut SipMsg,
    inbound: (Transport, &str),
    outbound: (Transport, &str),
    stamp: &str,
) {
    let p = super::route::STAMP_PARAM;
    // TLS: `transport=tls` on a sip URI rather than sips (RFC 5630 3.1.3 deprecates
    // transport=tls only for sips URIs; a sips Record-Route would oblige every later hop of
    // the dialog to TLS, which the UDP side cannot do).
    let entry = |(t, hostport): (Transport, &str)| {
        match t {
            Transport::Datagram => format!("<sip:{hostport};lr;{p}={stamp}>"),
            Transport::Stream => format!("<sip:{hostport};transport=tcp;lr;{p}={stamp}>"),
            Transport::Tls => format!("<sip:{hostport};transport=tls;lr;{p}={stamp}>"),
            // RFC 7118 5.2 defines only `ws` as the URI transport, for WSS too (its 8.2
            // example: `<sip:...:443;transport=ws;lr>`); the port names the wss listener.
            Transport::Ws | Transport::Wss => {
                format!("<sip:{hostport};transport=ws;lr;{p}={stamp}>")
            }
        }
    };
    if inbound != outbound {
        msg.push_front(HeaderName::RecordRoute, entry(inbound));
    }
    msg.push_front(HeaderName::RecordRoute, entry(outbound));
}

/// Whether a method creates a dialog (and so is record-routed).
pub fn creates_dialog(method: &str) -> bool {
    matches!(method, "INVITE" | "SUBSCRIBE" | "REFER")
}

/// Remove credentials for our realms: they were for us and must not leak to the next hop
/// (RFC 3261 22.3 allows a proxy to keep others').
pub fn strip_credentials(msg: &mut SipMsg, is_ours: impl Fn(&str) -> bool) {
    let ours = |v: &str| {
        super::super::auth::digest::Credentials::parse(v)
            .map(|c| is_ours(&c.realm))
            // Unreadable credentials are nobody's: drop them too.
            .unwrap_or(true)
    };
    msg.remove_where(HeaderName::Other("Proxy-Authorization"), ours);
    msg.remove_where(HeaderName::Other("Authorization"), ours);
}

/// The ACK of a non-2xx final response to the INVITE `req` (as we sent it): same
/// Request-URI, Call-ID, From, CSeq number, Route; To from the response; only our Via.
pub fn ack_for(req: &SipMsg, response_to: Option<&str>) -> SipMsg {
    hop_request(req, "ACK", response_to)
}

/// The CANCEL of the request `req` (as we sent it), RFC 3261 9.1.
pub fn cancel_for(req: &SipMsg) -> SipMsg {
    hop_request(req, "CANCEL", None)
}

fn hop_request(req: &SipMsg, method: &str, to: Option<&str>) -> SipMsg {
    let mut m = SipMsg::request(method, req.request_uri().unwrap_or("sip:invalid"));
    if let Some(v) = req.top_via() {
        m.push(HeaderName::Via, v.to_string());
    }
    m.push(HeaderName::MaxForwards, MAX_FORWARDS.to_string());
    for name in [HeaderName::From, HeaderName::CallId] {
        if let Some(v) = req.get(name) {
            m.push(name, v.to_string());
        }
    }
    if let Some(v) = to.or_else(|| req.get(HeaderName::To)) {
        m.push(HeaderName::To, v.to_string());
    }
    let num = req
        .get(HeaderName::CSeq)
        .and_then(scalar::cseq)
        .map_or(1, |(n, _)| n);
    m.push(HeaderName::CSeq, format!("{num} {method}"));
    for r in req.all(HeaderName::Route) {
        m.push(HeaderName::Route, r.to_string());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The top Via `via` of a request from `source`, once stamped.
    fn stamped(via: &str, source: &str, force_rport: bool) -> Option<String> {
        let mut m = SipMsg::request("INVITE", "sip:b@h");
        m.push(HeaderName::Via, via.into());
        stamp_top_via(&mut m, source.parse().unwrap(), force_rport);
        m.get(HeaderName::Via).map(String::from)
    }

    /// The Record-Route of a request that had `prior` entries, once we record-route it
    /// between `inbound` and `outbound` (stamp `s1`).
    fn record_routed(
        prior: &[&str],
        inbound: (Transport, &str),
        outbound: (Transport, &str),
    ) -> Vec<String> {
        let mut m = SipMsg::request("INVITE", "sip:b@h");
        for r in prior {
            m.push(HeaderName::RecordRoute, r.to_string());
        }
        record_route(&mut m, inbound, outbound, "s1");
        m.all(HeaderName::RecordRoute).map(String::from).collect()
    }

    #[test]
    fn via_stamping() {
        assert_eq!(
            stamped(
                "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa;rport, SIP/2.0/UDP x",
                "192.0.2.7:40000",
                false
            )
            .as_deref(),
            Some(
                "SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKa;rport=40000;received=192.0.2.7, SIP/2.0/UDP x"
            )
        );
        assert_eq!(
            stamped(
                "SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKa",
                "192.0.2.7:5060",
                true
            )
            .as_deref(),
            Some("SIP/2.0/UDP 192.0.2.7:5060;branch=z9hG4bKa;rport=5060")
        );
    }

    #[test]
    fn double_record_route_on_transport_change() {
        let p = "p:5060";
        let udp = (Transport::Datagram, p);
        assert_eq!(
            record_routed(&["<sip:upstream;lr>"], udp, udp),
            ["<sip:p:5060;lr;sfw=s1>", "<sip:upstream;lr>"]
        );
        assert_eq!(
            record_routed(&[], udp, (Transport::Stream, p)),
            [
                "<sip:p:5060;transport=tcp;lr;sfw=s1>",
                "<sip:p:5060;lr;sfw=s1>"
            ]
        );
        // TLS on one side: its entry names our TLS port and transport (RFC 5658, 5630).
        assert_eq!(
            record_routed(&[], (Transport::Tls, "p:5061"), udp),
            [
                "<sip:p:5060;lr;sfw=s1>",
                "<sip:p:5061;transport=tls;lr;sfw=s1>"
            ]
        );
        // WSS on one side (RFC 7118): Via WSS, the URI transport `ws` (5.2) on our wss port.
        assert_eq!(via_transport(Transport::Wss), "WSS");
        assert_eq!(
            record_routed(&[], udp, (Transport::Wss, "p:8443")),
            [
                "<sip:p:8443;transport=ws;lr;sfw=s1>",
                "<sip:p:5060;lr;sfw=s1>"
            ]
        );
    }

    /// A request that crosses from one interface to another on the same transport gets an
    /// entry per side (RFC 5658 4), each naming the address its side reaches us at.
    #[test]
    fn double_record_route_on_interface_change() {
        let inside = (Transport::Datagram, "10.77.1.1:5060");
        let outside = (Transport::Datagram, "10.77.2.1:5060");
        assert_eq!(
            record_routed(&[], inside, outside),
            [
                "<sip:10.77.2.1:5060;lr;sfw=s1>",
                "<sip:10.77.1.1:5060;lr;sfw=s1>"
            ]
        );
    }

    #[test]
    fn max_forwards() {
        let mut m = SipMsg::request("INVITE", "sip:b@h");
        decrement_max_forwards(&mut m).unwrap();
        assert_eq!(m.get(HeaderName::MaxForwards), Some("70"));
        m.set(HeaderName::MaxForwards, "1".into());
        decrement_max_forwards(&mut m).unwrap();
        assert_eq!(m.get(HeaderName::MaxForwards), Some("0"));
        assert!(decrement_max_forwards(&mut m).is_err());
    }

    #[test]
    fn ack_and_cancel() {
        let mut m = SipMsg::request("INVITE", "sip:b@192.0.2.1");
        m.push(
            HeaderName::Via,
            "SIP/2.0/UDP me;branch=z9hG4bKsfw1;rport".into(),
        );
        m.push(HeaderName::Via, "SIP/2.0/UDP them;branch=z9hG4bKt".into());
        m.push(HeaderName::From, "<sip:a@h>;tag=1".into());
        m.push(HeaderName::To, "<sip:b@h>".into());
        m.push(HeaderName::CallId, "c".into());
        m.push(HeaderName::CSeq, "7 INVITE".into());
        m.push(
            HeaderName::Other("Proxy-Authorization"),
            "Digest username=\"a\", realm=\"example.com\", nonce=\"n\", uri=\"u\", response=\"r\""
                .into(),
        );
        m.push(
            HeaderName::Other("Proxy-Authorization"),
            "Digest username=\"a\", realm=\"other\", nonce=\"n\", uri=\"u\", response=\"r\"".into(),
        );
        let ack = ack_for(&m, Some("<sip:b@h>;tag=9"));
        let text = String::from_utf8(ack.to_bytes()).unwrap();
        assert_eq!(
            text,
            "ACK sip:b@192.0.2.1 SIP/2.0\r\nVia: SIP/2.0/UDP me;branch=z9hG4bKsfw1;rport\r\nMax-Forwards: 70\r\nFrom: <sip:a@h>;tag=1\r\nCall-ID: c\r\nTo: <sip:b@h>;tag=9\r\nCSeq: 7 ACK\r\nContent-Length: 0\r\n\r\n"
        );
        let c = cancel_for(&m);
        assert_eq!(c.get(HeaderName::CSeq), Some("7 CANCEL"));
        assert_eq!(c.get(HeaderName::To), Some("<sip:b@h>"));
        strip_credentials(&mut m, |r| r.eq_ignore_ascii_case("example.com"));
        let left: Vec<_> = m.all(HeaderName::Other("proxy-authorization")).collect();
        assert_eq!(left.len(), 1);
        assert!(left[0].contains("other"));
    }
}
