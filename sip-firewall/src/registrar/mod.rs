//! The registrar (RFC 3261 10.3): add, refresh and remove bindings, `Contact: *` with
//! `Expires: 0`, expiry clamped to the configured range (423 below it), a cap on contacts
//! per address of record, and the list of current bindings for the 200 answer. Which
//! bindings are kept alive by pings, and when one is dead, is `keepalive`'s.

pub mod config;
pub mod keepalive;
pub mod relay;
pub mod request;
pub mod shared;
pub mod store;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use sip_firewall_sip::Transport;
pub use store::{Binding, LocationStore, MemoryStore};

pub use config::RegistrarConfig;

/// One contact of a REGISTER.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactParam {
    /// The URI text.
    pub uri: String,
    /// Its `expires` parameter.
    pub expires: Option<u32>,
}

/// What the registrar needs from a REGISTER.
#[derive(Clone, Debug)]
pub struct Register {
    /// `user@domain`, domain lower case.
    pub aor: String,
    pub contacts: Vec<ContactParam>,
    /// `Contact: *`.
    pub star: bool,
    /// The Expires header.
    pub expires: Option<u32>,
    pub call_id: String,
    pub cseq: u32,
    pub source: SocketAddr,
    pub transport: Transport,
    /// Who authenticated it (None: an allow-listed peer, without credentials).
    pub authenticated: Option<String>,
}

/// A REGISTER the registrar refuses, with the answer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// 423 Interval Too Brief, with Min-Expires.
    #[error("interval too brief (minimum {min}s)")]
    TooBrief { min: u32 },
    /// 400: `*` with other contacts or a non-zero Expires.
    #[error("bad request: {0}")]
    Bad(&'static str),
    /// 403: more contacts than the cap allows.
    #[error("too many contacts (at most {max})")]
    TooMany { max: usize },
    /// 500: an older REGISTER of the same Call-ID arrived after a newer one (10.3 step 7).
    #[error("out of order request")]
    OutOfOrder,
}

impl RegisterError {
    /// The status code, phrase and extra header lines of the answer.
    pub fn answer(&self) -> (u16, &'static str, Vec<String>) {
        match self {
            RegisterError::TooBrief { min } => (
                423,
                "Interval Too Brief",
                vec![format!("Min-Expires: {min}")],
            ),
            RegisterError::Bad(_) => (400, "Bad Request", Vec::new()),
            RegisterError::TooMany { .. } => (403, "Too Many Contacts", Vec::new()),
            RegisterError::OutOfOrder => (500, "Out Of Order", Vec::new()),
        }
    }
}

/// Apply a REGISTER to the store; returns the bindings of the AOR afterwards.
/// Everything is checked before anything changes: a refused request changes nothing.
pub fn register(
    cfg: &RegistrarConfig,
    store: &mut dyn LocationStore,
    req: &Register,
    now: Instant,
) -> Result<Vec<Binding>, RegisterError> {
    if req.star {
        if !req.contacts.is_empty() || req.expires != Some(0) {
            return Err(RegisterError::Bad(
                "Contact * needs Expires: 0 and no other contact",
            ));
        }
        store.clear(&req.aor);
        return Ok(Vec::new());
    }
    let current = store.lookup(&req.aor, now);
    // The expiry of each contact, clamped; 0 removes.
    let mut changes = Vec::with_capacity(req.contacts.len());
    for c in &req.contacts {
        let asked = c.expires.or(req.expires).unwrap_or(cfg.default_expires);
        if asked != 0 && asked < cfg.min_expires {
            return Err(RegisterError::TooBrief {
                min: cfg.min_expires,
            });
        }
        if let Some(b) = current
            .iter()
            .find(|b| b.contact.eq_ignore_ascii_case(&c.uri))
            && b.call_id == req.call_id
            && b.cseq >= req.cseq
        {
            return Err(RegisterError::OutOfOrder);
        }
        changes.push((c, asked.min(cfg.max_expires)));
    }
    let mut after: usize = current.len();
    for (c, secs) in &changes {
        let known = current
            .iter()
            .any(|b| b.contact.eq_ignore_ascii_case(&c.uri));
        match (known, *secs) {
            (true, 0) => after -= 1,
            (false, s) if s > 0 => after += 1,
            _ => {}
        }
    }
    if after > cfg.max_contacts {
        return Err(RegisterError::TooMany {
            max: cfg.max_contacts,
        });
    }
    for (c, secs) in changes {
        if secs == 0 {
            store.remove(&req.aor, &c.uri);
        } else {
            store.put(
                &req.aor,
                Binding {
                    contact: c.uri.clone(),
                    expires_at: now + Duration::from_secs(u64::from(secs)),
                    call_id: req.call_id.clone(),
                    cseq: req.cseq,
                    source: req.source,
                    transport: req.transport,
                    authenticated: req.authenticated.clone(),
                    path: None,
                },
            );
        }
    }
    Ok(store.lookup(&req.aor, now))
}

/// The Contact lines of a 200 answer: every binding with the seconds it has left.
pub fn contact_lines(bindings: &[Binding], now: Instant) -> Vec<String> {
    bindings
        .iter()
        .map(|b| {
            let left = b.expires_at.saturating_duration_since(now).as_secs();
            format!("Contact: <{}>;expires={left}", b.contact)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> RegistrarConfig {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 1800,
            max_contacts: 2,
            ..RegistrarConfig::default()
        }
    }

    fn req(contacts: &[(&str, Option<u32>)], expires: Option<u32>, cseq: u32) -> Register {
        Register {
            aor: "alice@example.com".into(),
            contacts: contacts
                .iter()
                .map(|(u, e)| ContactParam {
                    uri: u.to_string(),
                    expires: *e,
                })
                .collect(),
            star: false,
            expires,
            call_id: "c1".into(),
            cseq,
            source: "192.0.2.1:5060".parse().unwrap(),
            transport: Transport::Datagram,
            authenticated: Some("alice".into()),
        }
    }

    #[test]
    fn add_refresh_remove_expire() {
        let mut s = MemoryStore::default();
        let t0 = Instant::now();
        let b = register(
            &cfg(),
            &mut s,
            &req(&[("sip:a@192.0.2.1", None)], None, 1),
            t0,
        )
        .unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].expires_at, t0 + Duration::from_secs(1800));
        assert_eq!(
            contact_lines(&b, t0),
            vec!["Contact: <sip:a@192.0.2.1>;expires=1800"]
        );
        // Refresh with a param above max: clamped.
        let b = register(
            &cfg(),
            &mut s,
            &req(&[("sip:a@192.0.2.1", Some(99999))], None, 2),
            t0,
        )
        .unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].expires_at, t0 + Duration::from_secs(3600));
        // Query (no contact) lists the bindings.
        assert_eq!(
            register(&cfg(), &mut s, &req(&[], None, 3), t0)
                .unwrap()
                .len(),
            1
        );
        // Expiry on time.
        assert_eq!(
            s.lookup("alice@example.com", t0 + Duration::from_secs(3601))
                .len(),
            0
        );
        assert_eq!(s.expire(t0 + Duration::from_secs(3601)), 1);
        assert_eq!(s.len(), 0);
        // Remove with expires=0.
        register(
            &cfg(),
            &mut s,
            &req(&[("sip:b@192.0.2.2", None)], None, 4),
            t0,
        )
        .unwrap();
        let b = register(
            &cfg(),
            &mut s,
            &req(&[("sip:b@192.0.2.2", None)], Some(0), 5),
            t0,
        )
        .unwrap();
        assert!(b.is_empty());
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn too_brief_and_cap_change_nothing() {
        let mut s = MemoryStore::default();
        let t0 = Instant::now();
        let e = register(&cfg(), &mut s, &req(&[("sip:a@h", Some(59))], None, 1), t0);
        assert_eq!(e, Err(RegisterError::TooBrief { min: 60 }));
        assert_eq!(
            e.unwrap_err().answer().2,
            vec!["Min-Expires: 60".to_string()]
        );
        register(
            &cfg(),
            &mut s,
            &req(&[("sip:a@h", None), ("sip:b@h", None)], None, 2),
            t0,
        )
        .unwrap();
        let e = register(&cfg(), &mut s, &req(&[("sip:c@h", None)], None, 3), t0);
        assert_eq!(e, Err(RegisterError::TooMany { max: 2 }));
        assert_eq!(s.len(), 2);
        // Replacing one at the cap is fine: remove b, add c in one request.
        let b = register(
            &cfg(),
            &mut s,
            &req(&[("sip:b@h", Some(0)), ("sip:c@h", None)], None, 4),
            t0,
        )
        .unwrap();
        assert_eq!(b.len(), 2);
        // An older CSeq of the same Call-ID is out of order.
        let e = register(&cfg(), &mut s, &req(&[("sip:c@h", None)], None, 3), t0);
        assert_eq!(e, Err(RegisterError::OutOfOrder));
    }

    #[test]
    fn star() {
        let mut s = MemoryStore::default();
        let t0 = Instant::now();
        register(&cfg(), &mut s, &req(&[("sip:a@h", None)], None, 1), t0).unwrap();
        let mut r = req(&[], Some(3600), 2);
        r.star = true;
        assert!(matches!(
            register(&cfg(), &mut s, &r, t0),
            Err(RegisterError::Bad(_))
        ));
        r.expires = Some(0);
        assert!(register(&cfg(), &mut s, &r, t0).unwrap().is_empty());
        assert_eq!(s.len(), 0);
    }
}
