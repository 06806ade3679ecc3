//! What every configuration section shares: the serde helpers of its fields and the error of
//! its validation. Each unit owns its section type (defaults and validation next to the code
//! that reads it: `server::config` `[sip]`, `xdp::config` `[xdp]`, `proxy::config` `[proxy]
//! [timers] [registrar]`, `auth::config` `[auth]`, `enforce::learn` `[bans]`, `fraud::config`
//! `[fraud]`, ...); `config.rs` only composes them into one file. A leaf: it names no unit.

use std::{net::IpAddr, time::Duration};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

/// A configuration value that cannot work: the key and why. `config.rs` adds the file.
#[derive(Debug)]
pub struct Invalid {
    pub key: &'static str,
    pub message: String,
}

/// An [`Invalid`] for `key`.
pub fn invalid(key: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        key,
        message: message.into(),
    }
}

/// Durations are written as humans write them: `500ms`, `30s`, `5m`, `1h 30m`.
pub fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "{e} (write durations like \"500ms\", \"30s\", \"5m\", \"1h\")"
        ))
    })
}

/// An optional duration (absent: `None`; the field needs `#[serde(default)]`).
pub fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// Whether `ip` lies in one of `nets` (the prefix lists of the sections).
pub fn in_any(nets: &[IpNet], ip: IpAddr) -> bool {
    nets.iter().any(|n| n.contains(&ip))
}

/// A configured next hop: an address, or a SIP URI whose host is a name (RFC 3263).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NextHop {
    Addr(std::net::SocketAddr),
    /// A `sip:`/`sips:` URI with a domain host.
    Name(String),
}

impl NextHop {
    /// The address, when it is one.
    pub fn addr(&self) -> Option<std::net::SocketAddr> {
        match self {
            NextHop::Addr(a) => Some(*a),
            NextHop::Name(_) => None,
        }
    }

    /// The URI to resolve, when it is a name.
    pub fn name(&self) -> Option<&str> {
        match self {
            NextHop::Addr(_) => None,
            NextHop::Name(n) => Some(n),
        }
    }
}

impl<'de> Deserialize<'de> for NextHop {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error as _;
        let text = String::deserialize(d)?;
        if let Ok(a) = text.parse() {
            return Ok(NextHop::Addr(a));
        }
        let lower = text.to_ascii_lowercase();
        let uri = if lower.starts_with("sip:") || lower.starts_with("sips:") {
            text.clone()
        } else {
            format!("sip:{text}")
        };
        match sip_firewall_sip::uri::parse(&uri) {
            Ok(sip_firewall_sip::uri::Uri::Sip(u)) if u.host.ip().is_none() => {
                Ok(NextHop::Name(uri))
            }
            // `sip:10.0.0.5:5060`: an address written as a URI (UDP, 5060 by default).
            Ok(sip_firewall_sip::uri::Uri::Sip(u)) if !u.secure && u.params.is_empty() => {
                match u.host.ip() {
                    Some(ip) => Ok(NextHop::Addr(std::net::SocketAddr::new(
                        ip,
                        u.port.unwrap_or(5060),
                    ))),
                    None => Err(D::Error::custom(format!("{text:?}: no host"))),
                }
            }
            _ => Err(D::Error::custom(format!(
                "{text:?}: expected ip:port, a host name or a sip: URI"
            ))),
        }
    }
}

/// Whether `a` can stand as the `host[:port]` of a Via or Record-Route we write (an
/// advertised name): not empty, and none of the characters that would end the header
/// field or the URI.
pub fn is_hostport_text(a: &str) -> bool {
    !a.is_empty() && !a.contains([' ', ';', ',', '<', '>'])
}
