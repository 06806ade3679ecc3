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

/// Whether `a` can stand as the `host[:port]` of a Via or Record-Route we write (an
/// advertised name): not empty, and none of the characters that would end the header
/// field or the URI.
pub fn is_hostport_text(a: &str) -> bool {
    !a.is_empty() && !a.contains([' ', ';', ',', '<', '>'])
}
