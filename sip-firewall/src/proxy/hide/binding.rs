//! A REGISTER's Contacts toward a registrar we hide from (see the parent doc): each one
//! naming a host inside goes as a URI of ours sealing it with the time it was sealed and
//! the lifetime of the binding, its header parameters (expires, q, +sip.instance, reg-id)
//! kept as they were; the registrar's answers get them back, and an initial request to
//! such a URI (the registrar reaching the phone, RFC 3261 16.5) goes to the inner contact.

use sip_firewall_sip::headers::{HeaderName, name_addr, scalar};

use super::{ContactSeal, first_uri};
use crate::{
    proxy::{msg::SipMsg, route::Local},
    registrar::request::param,
};

/// What a binding's seal binds besides the contact (one S2V component).
const BINDING: &[u8] = b"binding";

/// The shortest a binding's seal lasts: a registration's default lifetime (RFC 3261
/// 10.2.1.1). A longer one granted lasts as long as the REGISTER asked (10.2.1: the
/// registrar may shorten it, never lengthen it); every refresh seals anew.
pub const MIN_BINDING_LIFETIME: u64 = 3600;

/// The time a binding is sealed with is the start of its day: the registrar matches a
/// refresh to its binding by the Contact URI (RFC 3261 10.3 step 7), so the refreshes of
/// one day show it one URI. A seal lasts from then for the day and the binding's lifetime.
/// At the turn of a day the URI changes: while the previous day's may still be bound, a
/// REGISTER also carries it with `expires=0` (10.2.2: removing a binding), so the
/// registrar does not hold the phone twice and fork its calls to it twice.
const BINDING_EPOCH: u64 = 86_400;

impl ContactSeal {
    /// The URI of the inner contact a Request-URI of ours sealed as a binding stands for,
    /// while the binding's lifetime lasts at `unix` (seconds).
    pub fn reveal_binding(&self, request_uri: &str, local: &Local, unix: u64) -> Option<String> {
        let (age, value) = self.open_dated(BINDING, request_uri, local, unix)?;
        let (lifetime, contact) = value.split_once(' ')?;
        let lifetime: u64 = lifetime.parse().ok()?;
        if age > lifetime.saturating_add(BINDING_EPOCH) {
            return None;
        }
        first_uri(contact)
    }
}

/// Each Contact of the REGISTER `msg` whose URI names a host `inside` replaced by ours on
/// `side`, sealed on the day of `unix` (seconds) as a binding; `*` stays. A value that does not
/// parse, or a contact that cannot be sealed, is removed rather than shown.
pub fn hide_bindings(
    msg: &mut SipMsg,
    seal: &ContactSeal,
    side: &str,
    unix: u64,
    inside: impl Fn(&str) -> bool,
) {
    if msg.get(HeaderName::Contact).is_none() {
        return;
    }
    let default = msg
        .get(HeaderName::Expires)
        .and_then(scalar::expires)
        .map_or(0, u64::from);
    let day = unix - unix % BINDING_EPOCH;
    let mut hidden = Vec::new();
    for value in msg.all(HeaderName::Contact) {
        let mut each = Vec::new();
        let parsed = name_addr::parse_contact(value, |a| {
            if !inside(a.uri_text) {
                each.push(Some(rebuilt(a.display, a.uri_text, a.params)));
                return;
            }
            let expires = param(a.params, "expires")
                .and_then(scalar::expires)
                .map_or(default, u64::from);
            let lifetime = expires.max(MIN_BINDING_LIFETIME);
            let sealed = format!("{day} {lifetime} <{}>", a.uri_text);
            let ours = seal.hide(BINDING, &sealed, side);
            each.push(ours.map(|o| rebuilt(None, o.trim_matches(['<', '>']), a.params)));
            // Yesterday's URI lasts at most a lifetime into today (refreshed up to its end,
            // granted no longer than asked). Without `+sip.instance` and reg-id: those
            // would name today's binding (RFC 5626 6) and remove it.
            if day >= BINDING_EPOCH && unix - day < lifetime {
                let before = format!("{} {lifetime} <{}>", day - BINDING_EPOCH, a.uri_text);
                let old = seal.hide(BINDING, &before, side);
                each.push(old.map(|o| rebuilt(None, o.trim_matches(['<', '>']), "expires=0")));
            }
        });
        match parsed {
            Ok(true) => hidden.push(value.to_string()),
            Ok(false) => {
                let each: Vec<String> = each.into_iter().flatten().collect();
                if !each.is_empty() {
                    hidden.push(each.join(", "));
                }
            }
            Err(_) => {}
        }
    }
    msg.replace_all(HeaderName::Contact, hidden);
}

/// A Contact value of an answer to a REGISTER with the bindings of ours in it given back
/// as the inner contacts, their parameters kept; None when it names none of ours.
pub fn reveal_bindings(
    value: &str,
    seal: &ContactSeal,
    local: &Local,
    unix: u64,
) -> Option<String> {
    let mut each = Vec::new();
    let mut any = false;
    name_addr::parse_contact(value, |a| {
        let inner = seal.reveal_binding(a.uri_text, local, unix);
        any |= inner.is_some();
        let display = inner.is_none().then_some(a.display).flatten();
        each.push(rebuilt(
            display,
            inner.as_deref().unwrap_or(a.uri_text),
            a.params,
        ));
    })
    .ok()?;
    any.then(|| each.join(", "))
}

/// One Contact written out: its display name, URI and header parameters.
fn rebuilt(display: Option<&str>, uri: &str, params: &str) -> String {
    let display = display.map(|d| format!("{d} ")).unwrap_or_default();
    let params = if params.is_empty() {
        String::new()
    } else {
        format!(";{params}")
    };
    format!("{display}<{uri}>{params}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::KeyRing;

    /// A binding shows one URI through a day of refreshes and reaches the inner contact for
    /// the day and its lifetime, no longer; `*` and an outside contact go as they are.
    #[test]
    fn a_binding_keeps_its_uri_through_the_day() {
        let ring = KeyRing::from_config(Some(&"5a".repeat(32)), &[]).unwrap();
        let seal = ContactSeal::new(&ring);
        let local = Local::new(
            vec![],
            vec!["192.0.2.1:5060".parse().unwrap()],
            "192.0.2.1".into(),
            Some(5060),
        );
        let day = 20_000 * BINDING_EPOCH;
        let shown = |unix: u64, contact: &str| {
            let mut m = SipMsg::request("REGISTER", "sip:example.com");
            m.push(HeaderName::Contact, contact.into());
            hide_bindings(&mut m, &seal, "192.0.2.1:5060", unix, |u| {
                u.contains("10.1.")
            });
            m.all(HeaderName::Contact)
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        let inner = "<sip:a@10.1.0.9>;expires=7200";
        let first = shown(day + 7200, inner);
        assert_eq!(first, shown(day + 80_000, inner));
        assert_ne!(first, shown(day + BINDING_EPOCH, inner));
        let (uri, params) = first[0].split_once('>').unwrap();
        assert_eq!(params, ";expires=7200");
        let uri = uri.trim_start_matches('<');
        let at = |unix| seal.reveal_binding(uri, &local, unix);
        assert_eq!(
            at(day + BINDING_EPOCH + 7200).as_deref(),
            Some("sip:a@10.1.0.9")
        );
        assert_eq!(at(day + BINDING_EPOCH + 7201), None);
        // The next day: today's URI, and yesterday's removed while it may still be bound.
        let next = shown(day + BINDING_EPOCH + 10, inner);
        let next: Vec<&str> = next[0].split(", ").collect();
        assert_eq!(next.len(), 2, "{next:?}");
        assert_ne!(next[0], first[0]);
        assert_eq!(next[1], format!("<{uri}>;expires=0"));
        assert_eq!(shown(day + BINDING_EPOCH + 7200, inner).len(), 1);
        let outbound = "<sip:a@10.1.0.9;ob>;+sip.instance=\"<urn:uuid:1>\";reg-id=1";
        let next = shown(day + BINDING_EPOCH + 10, outbound);
        assert!(next[0].ends_with(";expires=0"), "{next:?}");
        assert_eq!(next[0].matches("reg-id").count(), 1, "{next:?}");
        let registrar = "203.0.113.9".parse().unwrap();
        assert_eq!(seal.reveal_redirect(uri, &local, day, registrar), None);
        assert_eq!(shown(day, "*"), vec!["*"]);
        let outside = "\"B\" <sip:b@203.0.113.5>;q=0.5";
        assert_eq!(shown(day, outside), vec![outside]);
    }
}
