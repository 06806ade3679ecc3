//! Sanity checks on a parsed message (Kamailio's sanity module, and then some). Each failure
//! names a [`Reason`], which also gives the status code a request is answered with.

use std::net::IpAddr;

use crate::headers::{HeaderName, name_addr, scalar, via};
use crate::parse::{Message, StartLine};
use crate::reason::Reason;
use crate::uri::{self, Host, Uri};

/// A failed check: the reason, and for 420 the option tags to list in `Unsupported`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Failure {
    pub reason: Reason,
    /// Unsupported option tags (420 only), comma-separated.
    pub unsupported: Option<String>,
}

impl From<Reason> for Failure {
    fn from(reason: Reason) -> Self {
        Failure {
            reason,
            unsupported: None,
        }
    }
}

/// Check a parsed message. `extensions` are the option tags this proxy supports, for
/// Proxy-Require (RFC 3261 16.3 step 5).
pub fn check(msg: &Message<'_>, extensions: &[&str]) -> Result<(), Failure> {
    if let StartLine::Request { uri, .. } = msg.start {
        check_request_uri(uri)?;
    }
    check_headers(msg)?;
    match msg.start {
        StartLine::Request { method, .. } => check_request(msg, method, extensions),
        StartLine::Response { .. } => check_response(msg),
    }
}

/// 416 for a well-formed URI of another scheme, 400 for a malformed one or one with headers.
fn check_request_uri(text: &str) -> Result<(), Reason> {
    let (scheme, _) = uri::split_scheme(text).ok_or(Reason::BadRequestUri)?;
    let known = ["sip", "sips", "tel"]
        .iter()
        .any(|s| s.eq_ignore_ascii_case(scheme));
    match uri::parse(text) {
        Ok(_) if !known => Err(Reason::UnsupportedUriScheme),
        // Headers are not allowed in a Request-URI (RFC 3261 19.1.1, RFC 4475 3.1.2.11).
        Ok(Uri::Sip(u)) if u.headers.is_some() => Err(Reason::BadRequestUri),
        Ok(_) => Ok(()),
        Err(_) => Err(Reason::BadRequestUri),
    }
}

/// Syntax of every header the firewall understands, and single-valued headers not repeated.
fn check_headers(msg: &Message<'_>) -> Result<(), Reason> {
    use HeaderName::*;
    let mut seen: u16 = 0;
    for h in &msg.headers {
        let v = h.value.as_ref();
        let bit = match h.name {
            From => 1,
            To => 2,
            CallId => 4,
            CSeq => 8,
            ContentLength => 16,
            ContentType => 32,
            MaxForwards => 64,
            Expires => 128,
            _ => 0,
        };
        if bit != 0 {
            if seen & bit != 0 {
                return Err(Reason::DuplicateHeader);
            }
            seen |= bit;
        }
        let ok = match h.name {
            Via => via::parse_list(v).all(|r| r.is_ok()),
            From => name_addr::parse_single(v).is_ok(),
            To => name_addr::parse_single(v).is_ok(),
            Contact => name_addr::parse_contact(v, |_| {}).is_ok(),
            Route | RecordRoute => name_addr::parse_list(v, true, |_| {}).is_ok(),
            CallId => scalar::call_id(v),
            CSeq => scalar::cseq(v).is_some(),
            ContentLength => scalar::content_length(v).is_some(),
            MaxForwards => scalar::max_forwards(v).is_some(),
            Expires => scalar::expires(v).is_some(),
            ContentType => scalar::content_type(v),
            ProxyRequire | Require => scalar::option_tags(v, false, |_| {}),
            Supported => scalar::option_tags(v, true, |_| {}),
            _ => true,
        };
        if !ok {
            return Err(match h.name {
                Via => Reason::BadVia,
                From => Reason::BadFrom,
                To => Reason::BadTo,
                Contact => Reason::BadContact,
                Route | RecordRoute => Reason::BadRoute,
                CallId => Reason::BadCallId,
                CSeq => Reason::BadCSeq,
                ContentLength => Reason::BadContentLength,
                MaxForwards => Reason::BadMaxForwards,
                Expires => Reason::BadExpires,
                ContentType => Reason::BadContentType,
                _ => Reason::BadOptionTags,
            });
        }
    }
    // Required in every message (RFC 3261 8.1.1). Max-Forwards is not: a proxy adds it when
    // absent (RFC 3261 16.6 step 3), and RFC 2543 requests lack it (RFC 4475 3.4.1).
    let required = 1 | 2 | 4 | 8;
    if seen & required != required || msg.get(Via).is_none() {
        return Err(Reason::MissingHeader);
    }
    Ok(())
}

fn check_request(msg: &Message<'_>, method: &str, extensions: &[&str]) -> Result<(), Failure> {
    let cseq = msg.get(HeaderName::CSeq).and_then(scalar::cseq);
    if cseq.is_none_or(|(_, m)| m != method) {
        return Err(Reason::CSeqMethodMismatch.into());
    }
    let mut unsupported: Vec<&str> = Vec::new();
    for v in msg.all(HeaderName::ProxyRequire) {
        scalar::option_tags(v, false, |t| {
            if !extensions.iter().any(|e| e.eq_ignore_ascii_case(t)) && !unsupported.contains(&t) {
                unsupported.push(t);
            }
        });
    }
    if !unsupported.is_empty() {
        return Err(Failure {
            reason: Reason::UnsupportedExtension,
            unsupported: Some(unsupported.join(", ")),
        });
    }
    if msg
        .get(HeaderName::MaxForwards)
        .and_then(scalar::max_forwards)
        == Some(0)
    {
        return Err(Reason::TooManyHops.into());
    }
    Ok(())
}

fn check_response(msg: &Message<'_>) -> Result<(), Failure> {
    // A response travels back along its Vias: none of them may point at a broadcast,
    // multicast or unspecified address (RFC 4475 3.3.10), or we would become a reflector.
    for value in msg.all(HeaderName::Via) {
        for v in via::parse_list(value).flatten() {
            let hosts = [Some(v.host), v.maddr];
            let bad_host = hosts.iter().flatten().any(|h| match h {
                Host::Domain(_) => false,
                h => h.ip().is_some_and(bad_target),
            });
            if bad_host || v.received.is_some_and(bad_target) {
                return Err(Reason::ViaBadAddress.into());
            }
        }
    }
    Ok(())
}

fn bad_target(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_broadcast() || a.is_multicast() || a.is_unspecified(),
        IpAddr::V6(a) => a.is_multicast() || a.is_unspecified(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::{Limits, Transport, parse};

    fn judge(s: &str) -> Result<(), Reason> {
        let m =
            parse(s.as_bytes(), &Limits::default(), Transport::Datagram).map_err(|e| e.reason)?;
        check(&m, &[]).map_err(|f| f.reason)
    }

    const HEAD: &str = "Via: SIP/2.0/UDP h.example.com;branch=z9hG4bK1\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: abc@h\r\n";

    #[test]
    fn good_request() {
        assert_eq!(
            judge(&format!(
                "OPTIONS sip:b@example.com SIP/2.0\r\n{HEAD}CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nl: 0\r\n\r\n"
            )),
            Ok(())
        );
    }

    #[test]
    fn codes() {
        let req = |ruri: &str, extra: &str| {
            judge(&format!(
                "OPTIONS {ruri} SIP/2.0\r\n{HEAD}CSeq: 1 OPTIONS\r\n{extra}l: 0\r\n\r\n"
            ))
        };
        assert_eq!(req("foo:bar", ""), Err(Reason::UnsupportedUriScheme));
        assert_eq!(req("sip:b@x.com?a=b", ""), Err(Reason::BadRequestUri));
        assert_eq!(req("<sip:b@x.com>", ""), Err(Reason::BadRequestUri));
        assert_eq!(
            req("sip:b@x.com", "Max-Forwards: 0\r\n"),
            Err(Reason::TooManyHops)
        );
        assert_eq!(
            req("sip:b@x.com", "Max-Forwards: 256\r\n"),
            Err(Reason::BadMaxForwards)
        );
        assert_eq!(
            req("sip:b@x.com", "Expires: 4294967296\r\n"),
            Err(Reason::BadExpires)
        );
        assert_eq!(
            req("sip:b@x.com", "CSeq: 2 OPTIONS\r\n"),
            Err(Reason::DuplicateHeader)
        );
        assert_eq!(
            req("sip:b@x.com", "Proxy-Require: foo\r\n"),
            Err(Reason::UnsupportedExtension)
        );
        assert_eq!(
            req("sip:b@x.com", "Route: sip:x.com\r\n"),
            Err(Reason::BadRoute)
        );
        assert_eq!(req("tel:+15551234", ""), Ok(()));
        let m = format!("INVITE sip:b@x.com SIP/2.0\r\n{HEAD}CSeq: 1 OPTIONS\r\nl: 0\r\n\r\n");
        assert_eq!(judge(&m), Err(Reason::CSeqMethodMismatch));
        let m = "OPTIONS sip:b@x.com SIP/2.0\r\nCSeq: 1 OPTIONS\r\nl: 0\r\n\r\n";
        assert_eq!(judge(m), Err(Reason::MissingHeader));
    }

    #[test]
    fn unsupported_list() {
        let m = format!(
            "OPTIONS sip:b@x.com SIP/2.0\r\n{HEAD}CSeq: 1 OPTIONS\r\nProxy-Require: a, b\r\nProxy-Require: a, known\r\nl: 0\r\n\r\n"
        );
        let m = parse(m.as_bytes(), &Limits::default(), Transport::Datagram).unwrap();
        let f = check(&m, &["known"]).unwrap_err();
        assert_eq!(f.unsupported.as_deref(), Some("a, b"));
    }

    #[test]
    fn responses() {
        let r = |via2: &str| {
            judge(&format!(
                "SIP/2.0 200 OK\r\n{HEAD}Via: SIP/2.0/UDP {via2};branch=z9hG4bK2\r\nCSeq: 1 INVITE\r\nl: 0\r\n\r\n"
            ))
        };
        assert_eq!(r("192.0.2.1"), Ok(()));
        assert_eq!(r("255.255.255.255"), Err(Reason::ViaBadAddress));
        assert_eq!(r("224.0.0.1"), Err(Reason::ViaBadAddress));
        assert_eq!(r("[::]"), Err(Reason::ViaBadAddress));
    }
}
