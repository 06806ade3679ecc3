//! URIs: strict SIP/SIPS URIs (RFC 3261 19.1, IPv6 per RFC 5954), light `tel:` (RFC 3966) and
//! generic absolute URIs (RFC 2396) for every other scheme.

use std::net::{Ipv4Addr, Ipv6Addr};

use crate::lex::{check_escaped, is_reserved, is_unreserved};

/// Why a URI was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("missing or malformed scheme")]
    Scheme,
    #[error("malformed user part")]
    User,
    #[error("malformed host")]
    Host,
    #[error("malformed port")]
    Port,
    #[error("malformed URI parameter")]
    Param,
    #[error("malformed URI header")]
    Header,
    #[error("malformed tel number")]
    Tel,
    #[error("malformed absolute URI")]
    Opaque,
}

/// A host: a DNS name, an IPv4 address, or a bracketed IPv6 reference.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host<'a> {
    /// A hostname as written (case-insensitive in comparisons).
    Domain(&'a str),
    /// A dotted-quad IPv4 address.
    V4(Ipv4Addr),
    /// An IPv6 reference (written in brackets).
    V6(Ipv6Addr),
}

impl Host<'_> {
    /// The address, when the host is a literal IP.
    pub fn ip(&self) -> Option<std::net::IpAddr> {
        match *self {
            Host::Domain(_) => None,
            Host::V4(a) => Some(a.into()),
            Host::V6(a) => Some(a.into()),
        }
    }
}

/// A `sip:` or `sips:` URI.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SipUri<'a> {
    /// `sips:` rather than `sip:`.
    pub secure: bool,
    /// The user part, still escaped.
    pub user: Option<&'a str>,
    /// The password, still escaped.
    pub password: Option<&'a str>,
    pub host: Host<'a>,
    pub port: Option<u16>,
    /// The raw `;param...` part, without the leading `;` (empty when absent).
    pub params: &'a str,
    /// The raw `?headers` part, without the `?`.
    pub headers: Option<&'a str>,
}

impl<'a> SipUri<'a> {
    /// The value of URI parameter `name` (case-insensitive): `Some("")` for a flag parameter.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        if self.params.is_empty() {
            return None;
        }
        self.params.split(';').find_map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            k.eq_ignore_ascii_case(name).then_some(v)
        })
    }
}

/// Any URI the parser understands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uri<'a> {
    Sip(SipUri<'a>),
    /// `tel:` with the part after the colon.
    Tel(&'a str),
    /// Another scheme, validated only as an RFC 2396 absolute URI.
    Other {
        scheme: &'a str,
        rest: &'a str,
    },
}

/// The scheme of `s` (`ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )` before `:`), and the rest.
pub fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = s.split_once(':')?;
    let mut b = scheme.bytes();
    let first_ok = b.next().is_some_and(|c| c.is_ascii_alphabetic());
    if first_ok && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')) {
        Some((scheme, rest))
    } else {
        None
    }
}

/// Parse a URI strictly.
pub fn parse(s: &str) -> Result<Uri<'_>, UriError> {
    let (scheme, rest) = split_scheme(s).ok_or(UriError::Scheme)?;
    if scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips") {
        parse_sip(scheme.len() == 4, rest).map(Uri::Sip)
    } else if scheme.eq_ignore_ascii_case("tel") {
        parse_tel(rest).map(Uri::Tel)
    } else {
        // absoluteURI: hier-part or opaque-part; both are runs of uric characters.
        if check_escaped(rest, true, |b| is_reserved(b) || is_unreserved(b)) {
            Ok(Uri::Other { scheme, rest })
        } else {
            Err(UriError::Opaque)
        }
    }
}

/// user-unreserved = "&" / "=" / "+" / "$" / "," / ";" / "?" / "/"
fn is_user_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',' | b';' | b'?' | b'/')
}

fn is_password_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'&' | b'=' | b'+' | b'$' | b',')
}

/// paramchar = param-unreserved / unreserved / escaped; param-unreserved = [ ] / : & + $
fn is_param_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b':' | b'&' | b'+' | b'$')
}

/// hnv-unreserved = [ ] / ? : + $
fn is_hnv_char(b: u8) -> bool {
    is_unreserved(b) || matches!(b, b'[' | b']' | b'/' | b'?' | b':' | b'+' | b'$')
}

fn parse_sip(secure: bool, s: &str) -> Result<SipUri<'_>, UriError> {
    // No '@' may appear outside userinfo (neither paramchar nor hnv-unreserved allow it),
    // so the first '@' ends the userinfo even when the user part holds ';' or '?'.
    let (userinfo, rest) = match s.split_once('@') {
        Some((u, r)) => (Some(u), r),
        None => (None, s),
    };
    let (user, password) = match userinfo {
        None => (None, None),
        Some(u) => {
            let (user, pw) = split_opt(u, ':');
            if !check_escaped(user, true, is_user_char)
                || pw.is_some_and(|pw| !check_escaped(pw, false, is_password_char))
            {
                return Err(UriError::User);
            }
            (Some(user), pw)
        }
    };
    let (hostport_params, headers) = split_opt(rest, '?');
    let (hostport, params) = hostport_params
        .split_once(';')
        .unwrap_or((hostport_params, ""));
    let (host, port) = parse_hostport(hostport)?;
    if hostport_params.contains(';') {
        for p in params.split(';') {
            let (k, v) = split_opt(p, '=');
            if !check_escaped(k, true, is_param_char)
                || v.is_some_and(|v| !check_escaped(v, true, is_param_char))
            {
                return Err(UriError::Param);
            }
        }
    }
    if let Some(h) = headers {
        for kv in h.split('&') {
            let (k, v) = kv.split_once('=').ok_or(UriError::Header)?;
            if !check_escaped(k, true, is_hnv_char) || !check_escaped(v, false, is_hnv_char) {
                return Err(UriError::Header);
            }
        }
    }
    Ok(SipUri {
        secure,
        user,
        password,
        host,
        port,
        params,
        headers,
    })
}

/// `s` cut at its first `sep`: what stands before it, and what follows when `sep` is there.
fn split_opt(s: &str, sep: char) -> (&str, Option<&str>) {
    s.split_once(sep).map_or((s, None), |(a, b)| (a, Some(b)))
}

/// `host [":" port]` with a bracketed IPv6 reference allowed.
pub fn parse_hostport(s: &str) -> Result<(Host<'_>, Option<u16>), UriError> {
    let (host, port) = if let Some(inner) = s.strip_prefix('[') {
        let (v6, after) = inner.split_once(']').ok_or(UriError::Host)?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or(UriError::Port)?),
        };
        (parse_v6(v6).ok_or(UriError::Host)?, port)
    } else {
        let (h, port) = split_opt(s, ':');
        (parse_host(h).ok_or(UriError::Host)?, port)
    };
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p).ok_or(UriError::Port)?),
    };
    Ok((host, port))
}

/// `1*DIGIT` that fits a u16.
pub fn parse_port(p: &str) -> Option<u16> {
    if p.is_empty() || p.len() > 5 || !p.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    p.parse().ok()
}

/// An IPv6 address as inside brackets. The standard library follows RFC 4291 text form, so
/// the three-colon form that RFC 5954 removed from the ABNF is refused.
pub fn parse_v6(s: &str) -> Option<Host<'_>> {
    // Zone identifiers are not part of a SIP IPv6reference.
    if s.contains('%') {
        return None;
    }
    s.parse::<Ipv6Addr>().ok().map(Host::V6)
}

/// A hostname or IPv4 address (no brackets).
pub fn parse_host(h: &str) -> Option<Host<'_>> {
    if h.is_empty() || h.len() > 255 {
        return None;
    }
    if h.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return h.parse::<Ipv4Addr>().ok().map(Host::V4);
    }
    // hostname = *( domainlabel "." ) toplabel [ "." ]
    let name = h.strip_suffix('.').unwrap_or(h);
    let mut labels = name.split('.').peekable();
    while let Some(label) = labels.next() {
        let b = label.as_bytes();
        let ok = !b.is_empty()
            && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
            && b.first().is_some_and(|c| c.is_ascii_alphanumeric())
            && b.last().is_some_and(|c| c.is_ascii_alphanumeric());
        if !ok {
            return None;
        }
        if labels.peek().is_none() && !b[0].is_ascii_alphabetic() {
            return None; // toplabel starts with ALPHA
        }
    }
    Some(Host::Domain(h))
}

/// `tel:` telephone-subscriber, checked loosely: a number of dial characters, then parameters.
fn parse_tel(s: &str) -> Result<&str, UriError> {
    let (number, params) = s.split_once(';').unwrap_or((s, ""));
    let digits = number.strip_prefix('+').unwrap_or(number);
    let ok = digits
        .bytes()
        .any(|b| b.is_ascii_hexdigit() || b == b'*' || b == b'#')
        && digits
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || matches!(b, b'*' | b'#' | b'-' | b'.' | b'(' | b')'));
    if !ok {
        return Err(UriError::Tel);
    }
    if s.contains(';') {
        for p in params.split(';') {
            let (k, v) = p.split_once('=').unwrap_or((p, "x"));
            if !check_escaped(k, true, is_param_char) || !check_escaped(v, true, is_param_char) {
                return Err(UriError::Tel);
            }
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri<'_> {
        match parse(s) {
            Ok(Uri::Sip(u)) => u,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn unusual_user_parts() {
        let u = sip(
            "sip:1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*:&it+has=1,weird!*pas$wo~d_too.(doesn't-it)@example.com",
        );
        assert_eq!(
            u.user,
            Some("1_unusual.URI~(to-be!sure)&isn't+it$/crazy?,/;;*")
        );
        assert_eq!(u.host, Host::Domain("example.com"));
        let u = sip("sip:user;par=u%40example.net@example.com");
        assert_eq!(u.user, Some("user;par=u%40example.net"));
        let u = sip("sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31");
        assert_eq!(u.params, "%6C%72;n%61me=v%61lue%25%34%31");
        assert!(sip("sips:%00@h.example.com").secure);
    }

    #[test]
    fn ipv6() {
        assert_eq!(
            sip("sip:[2001:db8::10]").host,
            Host::V6("2001:db8::10".parse().unwrap())
        );
        let u = sip("sip:[2001:db8::10]:5070");
        assert_eq!(u.port, Some(5070));
        assert_eq!(sip("sip:[2001:db8::10:5070]").port, None);
        assert!(parse("sip:user@[2001:db8:::192.0.2.1]").is_err());
        assert!(parse("sip:user@[2001:db8::192.0.2.1]").is_ok());
        assert!(parse("sip:2001:db8::10").is_err());
        assert!(parse("sip:[::1").is_err());
        assert!(parse("sip:[::1]x").is_err());
    }

    #[test]
    fn strictness() {
        for refused in [
            "sip:user@example.com; lr",
            "sip:user@example.com;",
            "sip:user@example.com;;x",
            "sip:user@exa mple.com",
            "sip:@example.com",
            "sip:u@example.com:99999",
            "sip:u@-bad.com",
            "sip:u@192.0.2.999",
            "sip:u@x.com?Route",
            "sip:u%zz@x.com",
            "<sip:u@x.com>",
        ] {
            assert!(parse(refused).is_err(), "{refused}");
        }
        assert!(parse("sip:u@x.com?Route=%3Csip:x.com%3E").is_ok());
    }

    #[test]
    fn other_schemes() {
        assert!(matches!(parse("tel:+1-201-555-0123"), Ok(Uri::Tel(_))));
        assert!(parse("tel:").is_err());
        assert!(matches!(
            parse("soap.beep://192.0.2.103:3002"),
            Ok(Uri::Other {
                scheme: "soap.beep",
                ..
            })
        ));
        assert!(matches!(parse("isbn:2983792873"), Ok(Uri::Other { .. })));
        assert!(parse("name:John Smith").is_err());
        assert!(parse("1abc:x").is_err());
    }
}
