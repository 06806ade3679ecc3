//! The Path (RFC 3327) of a REGISTER toward a registrar we hide from (relay mode's
//! `relay_to` outside the allow-list, or a registrar a trusted peer preloads a route to):
//! the entries of the proxies inside name inner hosts, and the registrar keeps them as the
//! route set of requests to the contact (RFC 3327 5). Our own entry (the top one, with its
//! flow token: `route::flow`) leaves carrying the entries below it sealed with AES-SIV
//! (RFC 5297) under a key of `[auth] secret` ([`Purpose::HiddenPath`]), bound to the flow
//! token, in a URI parameter of its own ([`PATH_PARAM`]); the registrar hands the entry
//! back untouched as the top Route of its requests, and [`PathSeal::reveal`] gives back the
//! inner entries as their Route set. Stateless and deterministic: a retransmitted REGISTER
//! carries the same Path, any node sharing the secret opens it, across a roll too. A Path
//! without an entry of ours on top leaves with none: nothing outside may name an inner host,
//! and a route from outside through inner hosts would not cross the edge anyway (a
//! preloaded route from outside is not honoured).

use sip_firewall_sip::{
    headers::HeaderName,
    uri::{self, Uri},
};
use tracing::debug;

use crate::auth::{
    digest::{hex, unhex},
    keys::{KeyRing, Purpose},
};

use super::{
    super::{
        msg::SipMsg,
        route::{entry_uri, flow, paths},
    },
    siv::SivKeys,
};

/// The URI parameter of our Path entry that carries the inner entries sealed.
pub const PATH_PARAM: &str = "sfwp";

/// Longest sealed Path opened (hex digits): a bound on the work one Route entry costs.
const MAX_SEALED_HEX: usize = 8192;

/// A sealed Path that does not open: made up, tampered with, moved to another flow token,
/// or sealed under a secret no longer kept.
#[derive(Debug, thiserror::Error)]
#[error("a sealed Path entry that does not open")]
pub struct ForgedPath;

/// The seal of inner Path entries shown to a registrar outside (see the module doc).
pub struct PathSeal {
    keys: SivKeys,
}

impl PathSeal {
    /// The seal under the ring's keys: the current secret's seals, all open.
    pub fn new(ring: &KeyRing) -> PathSeal {
        PathSeal {
            keys: SivKeys::new(ring, Purpose::HiddenPath),
        }
    }

    /// The inner entries our Route entry `entry` carries sealed, as one Route value: None
    /// when it carries none; an error when what it carries does not open under the flow
    /// token `token` the entry names.
    pub fn reveal(&self, entry: &str, token: &str) -> Result<Option<String>, ForgedPath> {
        let Some(sealed) = param_of(entry, PATH_PARAM) else {
            return Ok(None);
        };
        if sealed.len() > MAX_SEALED_HEX {
            return Err(ForgedPath);
        }
        let raw = unhex(&sealed).ok_or(ForgedPath)?;
        self.keys
            .open(token.as_bytes(), &raw)
            .map(Some)
            .ok_or(ForgedPath)
    }
}

/// The Path of the REGISTER `msg` as a registrar we hide from sees it (see the module
/// doc): our top entry with the entries below it sealed in it, or no entry at all.
pub fn hide_path(msg: &mut SipMsg, seal: &PathSeal) {
    let entries = paths(msg);
    let Some(first) = entries.first() else {
        return;
    };
    let keep = match flow::flow_token_of(first) {
        None => Vec::new(),
        Some(_) if entries.len() == 1 => entries,
        Some(token) => {
            let below = entries[1..].join(", ");
            let sealed = seal
                .keys
                .seal(token.as_bytes(), below.as_bytes(), 0)
                .map(|raw| hex(&raw))
                // One we would not open on the way back is not sent.
                .filter(|h| h.len() <= MAX_SEALED_HEX);
            match (entry_uri(first), sealed) {
                (Some(u), Some(sealed)) => vec![format!("<{u};{PATH_PARAM}={sealed}>")],
                // Rather no inner entry than one shown.
                _ => {
                    debug!("inner Path entries could not be sealed: dropped");
                    vec![first.clone()]
                }
            }
        }
    };
    msg.replace_all(HeaderName::Other("Path"), keep);
}

/// The value of URI parameter `name` of a `<uri>;params` entry.
fn param_of(entry: &str, name: &str) -> Option<String> {
    match uri::parse(entry_uri(entry)?) {
        Ok(Uri::Sip(u)) => u.param(name).map(str::to_string),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(hex: &str) -> KeyRing {
        KeyRing::from_config(Some(&hex.repeat(32)), &[]).expect("ring")
    }

    fn register(paths: &[&str]) -> SipMsg {
        let mut m = SipMsg::request("REGISTER", "sip:example.com");
        for p in paths {
            m.push(HeaderName::Other("Path"), (*p).into());
        }
        m
    }

    /// Our entry carries the inner ones sealed, bound to its token: they open under it
    /// only, and a changed digit opens nothing; inner entries too long to seal are dropped.
    /// A Path without our entry on top is dropped.
    #[test]
    fn inner_entries_ride_sealed_in_ours() {
        let seal = PathSeal::new(&ring("5a"));
        let ours = "<sip:192.0.2.1:5060;lr;ob;sfwf=00aa>";
        let mut m = register(&[ours, "<sip:10.1.0.5;lr>, <sip:10.1.0.6;lr;ob>"]);
        hide_path(&mut m, &seal);
        let shown: Vec<&str> = m.all(HeaderName::Other("Path")).collect();
        assert_eq!(shown.len(), 1, "{shown:?}");
        let entry = shown[0].to_string();
        assert!(
            entry.starts_with("<sip:192.0.2.1:5060;lr;ob;sfwf=00aa;sfwp="),
            "{entry}"
        );
        assert!(!entry.contains("10.1.0."), "{entry}");
        assert_eq!(
            seal.reveal(&entry, "00aa").ok().flatten().as_deref(),
            Some("<sip:10.1.0.5;lr>, <sip:10.1.0.6;lr;ob>")
        );
        assert!(seal.reveal(&entry, "00ab").is_err());
        assert!(PathSeal::new(&ring("6b")).reveal(&entry, "00aa").is_err());
        let i = entry.find("sfwp=").expect("param") + 9;
        let flipped = if &entry[i..=i] == "0" { "1" } else { "0" };
        let tampered = format!("{}{flipped}{}", &entry[..i], &entry[i + 1..]);
        assert!(seal.reveal(&tampered, "00aa").is_err());
        assert_eq!(seal.reveal(ours, "00aa").ok(), Some(None));

        // More than would be opened on the way back: our entry alone.
        let long = format!("<sip:10.1.0.5;lr;x={}>", "y".repeat(MAX_SEALED_HEX));
        let mut m = register(&[ours, &long]);
        hide_path(&mut m, &seal);
        assert_eq!(
            m.all(HeaderName::Other("Path")).collect::<Vec<_>>(),
            vec![ours]
        );

        let mut theirs = register(&["<sip:10.1.0.5;lr>"]);
        hide_path(&mut theirs, &seal);
        assert_eq!(theirs.get(HeaderName::Other("Path")), None);
    }
}
