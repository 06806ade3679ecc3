//! REGISTER as it comes off the wire (RFC 3261 10.3): the address of record its To names,
//! its contacts (or `*`), its expiry, applied to the location store, and the answer with the
//! current bindings and our Path (RFC 3327). The proxy core only authenticates the request
//! between [`AddressOfRecord::of`] and [`Register::from_message`], and sends the answer.

use std::{net::SocketAddr, time::Instant};

use sip_firewall_sip::{
    Message, Transport,
    headers::{HeaderName, name_addr, scalar},
    uri::{Host, SipUri, Uri},
};

use super::{ContactParam, LocationStore, Register, RegistrarConfig, contact_lines, register};

/// An answer to a REGISTER: status code, reason phrase, extra header lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    pub code: u16,
    pub phrase: &'static str,
    pub extra: Vec<String>,
}

impl Answer {
    fn refuse(code: u16, phrase: &'static str) -> Answer {
        Answer {
            code,
            phrase,
            extra: Vec::new(),
        }
    }
}

/// The address of record a REGISTER is for (its To), and the user its From names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AddressOfRecord {
    /// The To user.
    pub user: String,
    /// Our domain the To names (lower case, as `domain_of` returns it).
    pub domain: String,
    /// The From user (empty when From names none): may authenticate the request too.
    pub from_user: String,
}

impl AddressOfRecord {
    /// The To of `m`, when it names a SIP user at one of our domains (`domain_of`: the
    /// domain of ours a URI names). Err: the answer (403).
    pub fn of(
        m: &Message<'_>,
        domain_of: impl Fn(&SipUri<'_>) -> Option<String>,
    ) -> Result<AddressOfRecord, Answer> {
        // A To that names no SIP user is not an address of record of ours.
        let (user, host) = user_of(m, HeaderName::To).ok_or(Answer::refuse(403, "Not Our User"))?;
        let to_uri = SipUri {
            secure: false,
            user: Some(&user),
            password: None,
            host,
            port: None,
            params: "",
            headers: None,
        };
        let domain = domain_of(&to_uri).ok_or(Answer::refuse(403, "Not Our Domain"))?;
        let from_user = user_of(m, HeaderName::From)
            .map(|u| u.0)
            .unwrap_or_default();
        Ok(AddressOfRecord {
            user,
            domain,
            from_user,
        })
    }

    /// `user@domain`.
    pub fn aor(&self) -> String {
        format!("{}@{}", self.user, self.domain)
    }
}

/// The SIP user and host a name-addr header names.
fn user_of<'m>(m: &'m Message<'_>, h: HeaderName<'static>) -> Option<(String, Host<'m>)> {
    m.get(h)
        .and_then(|v| name_addr::parse_single(v).ok())
        .and_then(|a| match a.uri {
            Uri::Sip(u) => Some((u.user?.to_string(), u.host)),
            _ => None,
        })
}

/// The value of `;name=value` in a header parameter string.
pub(crate) fn param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

impl Register {
    /// What the registrar needs from REGISTER `m` for `aor`, from `source` over
    /// `transport`, authenticated as `authenticated` (None: a trusted peer). Err: 400 for a
    /// Contact that does not parse.
    pub fn from_message(
        m: &Message<'_>,
        aor: &AddressOfRecord,
        source: SocketAddr,
        transport: Transport,
        authenticated: Option<String>,
    ) -> Result<Register, Answer> {
        let mut contacts = Vec::new();
        let mut star = false;
        for v in m.all(HeaderName::Contact) {
            let r = name_addr::parse_contact(v, |a| {
                contacts.push(ContactParam {
                    uri: a.uri_text.to_string(),
                    expires: param(a.params, "expires").and_then(scalar::expires),
                })
            });
            match r {
                Ok(true) => star = true,
                Ok(false) => {}
                Err(_) => return Err(Answer::refuse(400, "Bad Contact")),
            }
        }
        Ok(Register {
            aor: aor.aor(),
            contacts,
            star,
            expires: m.get(HeaderName::Expires).and_then(scalar::expires),
            call_id: m.get(HeaderName::CallId).unwrap_or("").to_string(),
            cseq: m
                .get(HeaderName::CSeq)
                .and_then(scalar::cseq)
                .map_or(0, |c| c.0),
            source,
            transport,
            authenticated,
        })
    }
}

/// Whether the UA of `m` says it supports Path (RFC 3327 5.3: `Supported: path`).
pub fn supports_path(m: &Message<'_>) -> bool {
    m.all(HeaderName::Supported)
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("path"))
}

/// Apply `req` to `store` and answer it: 200 with the current bindings (and `path`, our
/// Path URI in a cluster, when the UA supports Path), or the refusal.
pub fn apply(
    cfg: &RegistrarConfig,
    store: &mut dyn LocationStore,
    req: &Register,
    path: Option<&str>,
    ua_supports_path: bool,
    now: Instant,
) -> Answer {
    match register(cfg, store, req, now) {
        Ok(bindings) => {
            let mut extra = contact_lines(&bindings, now);
            // RFC 3327 5.3: the registrar returns the Path it stored only to a UA that
            // said it supports it. Ours is the edge's own Path URI (we are edge and
            // registrar in one: nothing between the phone and us adds one), stored
            // with the binding in the cluster whether or not the UA supports Path: it
            // steers the other nodes, never the UA.
            if let Some(p) = path
                && !bindings.is_empty()
                && ua_supports_path
            {
                extra.push(format!("Path: <{p}>"));
            }
            Answer {
                code: 200,
                phrase: "OK",
                extra,
            }
        }
        Err(e) => {
            let (code, phrase, extra) = e.answer();
            Answer {
                code,
                phrase,
                extra,
            }
        }
    }
}
