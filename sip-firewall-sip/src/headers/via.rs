//! Via (RFC 3261 20.42, RFC 3581 rport, RFC 5118 IPv6 `received`).

use std::net::IpAddr;

use crate::lex::{Cursor, is_token_str};
use crate::uri::{Host, parse_host, parse_port, parse_v6};

/// A malformed Via value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed Via")]
pub struct ViaError;

/// One via-parm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Via<'a> {
    /// Protocol version as written (always "2.0" once parsed: other versions are refused).
    pub version: &'a str,
    /// Transport token (UDP, TCP, TLS, SCTP, WS, ... or an unknown token).
    pub transport: &'a str,
    pub host: Host<'a>,
    pub port: Option<u16>,
    /// The branch parameter, when present (never empty).
    pub branch: Option<&'a str>,
    /// The `received` parameter.
    pub received: Option<IpAddr>,
    /// `rport`: `Some(None)` when present without a value.
    pub rport: Option<Option<u16>>,
    /// The `maddr` parameter.
    pub maddr: Option<Host<'a>>,
}

/// Iterator over the via-parms of one Via header value.
pub struct ViaIter<'a> {
    cur: Cursor<'a>,
    done: bool,
}

/// Parse the comma-separated via-parms of a Via header value.
pub fn parse_list(value: &str) -> ViaIter<'_> {
    ViaIter {
        cur: Cursor::new(value),
        done: false,
    }
}

impl<'a> Iterator for ViaIter<'a> {
    type Item = Result<Via<'a>, ViaError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = parse_one(&mut self.cur);
        match r {
            Ok(v) => {
                self.cur.skip_ws();
                if self.cur.at_end() {
                    self.done = true;
                } else if !self.cur.eat(b',') {
                    self.done = true;
                    return Some(Err(ViaError));
                }
                Some(Ok(v))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

fn parse_one<'a>(c: &mut Cursor<'a>) -> Result<Via<'a>, ViaError> {
    c.skip_ws();
    let proto = c.token().ok_or(ViaError)?;
    if !proto.eq_ignore_ascii_case("SIP") || !c.eat_sep(b'/') {
        return Err(ViaError);
    }
    let version = c.token().ok_or(ViaError)?;
    if version != "2.0" || !c.eat_sep(b'/') {
        return Err(ViaError);
    }
    let transport = c.token().ok_or(ViaError)?;
    if !c.skip_ws() {
        return Err(ViaError);
    }
    let (host, port) = sent_by(c)?;
    let mut via = Via {
        version,
        transport,
        host,
        port,
        branch: None,
        received: None,
        rport: None,
        maddr: None,
    };
    while c.eat_sep(b';') {
        let (name, value) = c.generic_param(|v| !v.is_empty()).ok_or(ViaError)?;
        apply_param(&mut via, name, value)?;
    }
    Ok(via)
}

/// sent-by: host (an IPv6 reference in brackets) and optional port.
fn sent_by<'a>(c: &mut Cursor<'a>) -> Result<(Host<'a>, Option<u16>), ViaError> {
    let host = if c.peek() == Some(b'[') {
        let h = c.take_while(|b| b != b']');
        if !c.eat(b']') {
            return Err(ViaError);
        }
        parse_v6(h.get(1..).unwrap_or("")).ok_or(ViaError)?
    } else {
        parse_host(c.take_while(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-'))
            .ok_or(ViaError)?
    };
    let port = if c.eat_sep(b':') {
        Some(parse_port(c.take_while(|b| b.is_ascii_digit())).ok_or(ViaError)?)
    } else {
        None
    };
    Ok((host, port))
}

/// One via-param: the known ones (RFC 3261 20.42, RFC 3581 rport) checked and kept, any
/// other a token, host or quoted string.
fn apply_param<'a>(
    via: &mut Via<'a>,
    name: &'a str,
    value: Option<&'a str>,
) -> Result<(), ViaError> {
    if name.eq_ignore_ascii_case("branch") {
        // A present branch must be a token; RFC 2543 peers may omit it altogether.
        let v = value.filter(|v| is_token_str(v)).ok_or(ViaError)?;
        if via.branch.replace(v).is_some() {
            return Err(ViaError);
        }
    } else if name.eq_ignore_ascii_case("received") {
        // RFC 5118 4.4: IPv6 with or without brackets.
        let v = value.ok_or(ViaError)?;
        let v = v
            .strip_prefix('[')
            .and_then(|x| x.strip_suffix(']'))
            .unwrap_or(v);
        via.received = Some(v.parse::<IpAddr>().map_err(|_| ViaError)?);
    } else if name.eq_ignore_ascii_case("rport") {
        via.rport = Some(match value {
            None => None,
            Some(p) => Some(parse_port(p).ok_or(ViaError)?),
        });
    } else if name.eq_ignore_ascii_case("maddr") {
        let v = value.ok_or(ViaError)?;
        via.maddr = Some(
            match v.strip_prefix('[').and_then(|x| x.strip_suffix(']')) {
                Some(v6) => parse_v6(v6).ok_or(ViaError)?,
                None => parse_host(v).ok_or(ViaError)?,
            },
        );
    } else if name.eq_ignore_ascii_case("ttl") {
        let v = value.and_then(crate::lex::parse_u32).ok_or(ViaError)?;
        if v > 255 {
            return Err(ViaError);
        }
    } else if let Some(v) = value {
        // gen-value = token / host / quoted-string
        if !v.starts_with('"') && !is_token_str(v) && crate::uri::parse_hostport(v).is_err() {
            return Err(ViaError);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(v: &str) -> Result<Vec<Via<'_>>, ViaError> {
        parse_list(v).collect()
    }

    #[test]
    fn torture_forms() {
        let v = all("SIP  /   2.0 /UDP    192.0.2.2;branch=390skdjuw").unwrap();
        assert_eq!(v[0].branch, Some("390skdjuw"));
        let v = all("SIP  / 2.0  / TCP     spindle.example.com   ;  branch  =   z9hG4bK9ikj8  , SIP  /    2.0   / UDP  192.168.255.111   ; branch= z9hG4bK30239").unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!(v[1].transport, "UDP");
        assert_eq!(v[1].branch, Some("z9hG4bK30239"));
        let v =
            all("SIP/2.0/UDP [2001:db8::9:1];received=2001:db8::9:255;branch=z9hG4bKas3").unwrap();
        assert_eq!(v[0].received, Some("2001:db8::9:255".parse().unwrap()));
        let v = all("SIP/2.0/UDP [2001:db8::9:1]:6050;received=[2001:db8::9:255];rport").unwrap();
        assert_eq!(v[0].port, Some(6050));
        assert_eq!(v[0].rport, Some(None));
        assert_eq!(
            all("SIP/2.0/UDP iftgw.example.com").unwrap()[0].branch,
            None
        );
    }

    #[test]
    fn refused() {
        for refused in [
            "SIP/2.0/UDP 192.0.2.15;;,;,,",
            "SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw",
            "SIP/2.0/UDP host;branch=",
            "SIP/2.0/UDP host;branch",
            "SIP/2.0/UDP host;received=nothost",
            "SIP/2.0/UDP host,",
            "SIP/2.0/UDP",
            "SIP/2.0/UDP [::1",
            "SIP/2.0/UDP host x",
        ] {
            assert!(all(refused).is_err(), "{refused}");
        }
    }
}
