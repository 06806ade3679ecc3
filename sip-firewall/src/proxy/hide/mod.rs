//! Topology hiding (`[proxy] topology_hiding = "outside"`): toward a destination that is not
//! allow-listed (`[policy] allow`), no Via, Record-Route or Path entry, Contact or Call-ID
//! names a host inside.
//!
//! - A request leaves with our Via only, and of the Record-Route entries with ours on the
//!   destination's side only (when we record-route; none else). The client transaction
//!   keeps the request as it was, so its answers are given back, before they are relayed
//!   inward, the Vias below ours (RFC 3261 16.7 step 3 removes only ours: what is below must
//!   be the request's) and the Record-Route entries below ours (a proxy may rewrite its own
//!   Record-Route in a response, 16.7 step 4; the entries of the inner side are the ones the
//!   caller needs to route back, RFC 5658).
//! - An answer relayed outward (its request came from outside) loses the Record-Route
//!   entries above our first one (proxies inside) and our entries that name another side
//!   than the destination's: the outside keeps a route set of our outside entry and its own.
//! - The answer to a REGISTER from outside lists the registrant's own bindings only, not
//!   the other devices of its address of record (RFC 3261 10.3 step 8 lists them all).
//! - A Contact going outward (in a request other than REGISTER, or in an answer) is
//!   replaced by `<sip:sfwth-<seal>@<our side>>`: the inner Contact sealed with AES-SIV
//!   (RFC 5297; deterministic, so a dialog's target stays one text) under a key derived
//!   from `[auth] secret` ([`Purpose::HiddenContact`]). An in-dialog request from outside
//!   whose Request-URI is such a URI of ours gets the inner Contact's URI back (RFC 3261
//!   12.2.1.1: the remote target), stateless, on any node sharing the secret (sealed
//!   under the current secret, opened under the previous ones too).
//! - A 3xx relayed outward has its Contacts sealed the same way but as redirect targets
//!   (bound to their use, to the time they were sealed and to the 3xx's recipient: its
//!   address, an IPv6 one by its /64): an initial request from that recipient whose
//!   Request-URI is such a URI of ours goes to the inner target
//!   ([`ContactSeal::reveal_redirect`]) for [`REDIRECT_LIFETIME`]; from anyone else it is
//!   refused, so a target that leaks on (a log, a third party) reaches nobody inside. A dialog's sealed
//!   Contact is no redirect target: it reaches the inner party in-dialog only, where the
//!   stamp vouches for the dialog.
//! - A REGISTER going to a registrar we hide from (relay mode's `relay_to` outside the
//!   allow-list, or one a trusted peer preloads a route to) leaves with our Path entry
//!   only, the inner entries below it sealed in it ([`path`]); a request the registrar
//!   routes back through our entry (RFC 3327 5) gets them back as its Route set. The
//!   answer's Path, going inward, is the one we sent.
//! - Its Contacts that name a host inside (an allow-listed address, or a name) leave as
//!   URIs of ours on our side toward the registrar, sealed as bindings ([`binding`]): with
//!   the day they were sealed (the registrar matches a refresh to its binding by the URI,
//!   RFC 3261 10.3 step 7: a day of refreshes shows one) and a lifetime of the larger of
//!   what the REGISTER asked and an hour (10.2.1: the registrar never grants longer than
//!   asked), taking requests for the day and that lifetime; their header parameters (expires, q, `+sip.instance`, reg-id)
//!   stay outside the URI as they were, `*` as it is. The registrar's answers get them
//!   back as the inner contacts before anything reads them (the registrant checks its own,
//!   10.2.4; relay mode compares them with those it sent), and an initial request to one
//!   (the registrar reaching the phone, 16.5) goes to the inner contact: routed as to any
//!   inner target, or, through our Path entry in relay mode, down the flow its token
//!   names. A URI of ours whose seal does not open (forged, tampered, expired) is refused.
//!
//! In-dialog requests are routed by the dialog's stamp (both parties sealed in our entry),
//! so a route set reduced to our outside entry still reaches the inner party.
//!
//! The Call-ID (RFC 3261 8.1.1.4) often names the host that made it (`xyz@10.1.0.9`). The
//! party that made it must see it unchanged in every message of its dialog (12: it is part
//! of the dialog's identity), so what the outside sees depends on where the dialog was
//! made, decided statelessly ([`call_id`] seals it as `sfwth-<hex>`):
//! - A message whose Call-ID is one of our seals gets the inner Call-ID back as it
//!   arrives, before anything reads it (transactions, stamps, the fraud guard); the server
//!   transaction keeps the text as it came, and every answer to it carries that text
//!   (8.2.6.2: an answer's Call-ID is its request's). A seal that does not open is a
//!   Call-ID like any other.
//! - A request toward a destination we hide from leaves with its Call-ID sealed when the
//!   dialog was made inside: an initial request from an allow-listed source, or an
//!   in-dialog request to the stamp's callee whose caller is allow-listed (the caller made
//!   the Call-ID, 12.1.2). Also when it arrived sealed: an outsider replaying a seal
//!   learns nothing by sending it to another outsider. An in-dialog request to the caller
//!   of a dialog made outside carries the caller's own Call-ID. The client transaction
//!   keeps the request as sent, so its CANCEL and the ACK of a non-2xx carry the same
//!   text (9.1, 17.1.1.3); it is matched by its branch, not by Call-ID.
//!
//! A seal opens under the previous secrets too (`[auth] previous_secrets`), and a dialog's
//! Call-ID is sealed under the secret its stamp was sealed under (the current one for a
//! new dialog): across a roll, a dialog keeps one text both ways.
//!
//! `call_id.rs` is the Call-ID seal, `path.rs` the Path seal, `binding.rs` the seal of a
//! REGISTER's Contacts, `siv.rs` the keys every seal here is made with; the core decides which message carries which (`super::core`).

use std::net::IpAddr;

use sip_firewall_sip::{
    headers::{HeaderName, name_addr},
    uri::{self, Uri},
};

use crate::auth::{
    digest::{hex, unhex},
    keys::{KeyRing, Purpose},
};

pub mod binding;
pub mod call_id;
pub mod dialog_refs;
pub mod path;
mod siv;

use siv::SivKeys;

use super::{
    msg::SipMsg,
    route::{Local, entry_uri, record_routes},
};

/// The prefix that marks a Contact user part or a Call-ID of ours standing for a sealed
/// inner one.
const HIDDEN_PREFIX: &str = "sfwth-";

/// Longest sealed Contact opened (hex digits): a bound on the work one Request-URI costs.
const MAX_SEALED_HEX: usize = 2048;

/// How long a redirect target of a 3xx we relayed outward takes new requests: a redirect
/// is followed at once, or from a cache of the 3xx's own lifetime (RFC 3261 8.1.3.4).
pub const REDIRECT_LIFETIME: u64 = 3600;

/// What a seal binds besides the Contact (one S2V component): a dialog's Contact, or a
/// redirect target.
const DIALOG: &[u8] = b"contact";
const REDIRECT: &str = "redirect";

/// What a redirect target's seal binds: its use and the 3xx's recipient (an IPv6 address
/// by its /64, where a host's privacy addresses rotate).
fn redirect_bound(recipient: IpAddr) -> Vec<u8> {
    let who = match recipient.to_canonical() {
        IpAddr::V4(a) => a.to_string(),
        IpAddr::V6(a) => {
            let [a, b, c, d, ..] = a.segments();
            format!("{a:x}:{b:x}:{c:x}:{d:x}::/64")
        }
    };
    format!("{REDIRECT} {who}").into_bytes()
}

/// The seal of inner Contacts shown outside (see the module doc).
pub struct ContactSeal {
    keys: SivKeys,
}

impl ContactSeal {
    /// The seal under the ring's keys: the current secret's seals, all open.
    pub fn new(ring: &KeyRing) -> ContactSeal {
        ContactSeal {
            keys: SivKeys::new(ring, Purpose::HiddenContact),
        }
    }

    /// `<sip:sfwth-<seal>@side>` standing for `value`, sealed for its use `bound`.
    fn hide(&self, bound: &[u8], value: &str, side: &str) -> Option<String> {
        let sealed = self.keys.seal(bound, value.as_bytes(), 0)?;
        Some(format!("<sip:{HIDDEN_PREFIX}{}@{side}>", hex(&sealed)))
    }

    /// What a Request-URI of ours (`local`) sealed for `bound` stands for; None for any
    /// other URI, or one whose seal does not open.
    fn open(&self, bound: &[u8], request_uri: &str, local: &Local) -> Option<String> {
        let Ok(Uri::Sip(u)) = uri::parse(request_uri) else {
            return None;
        };
        let sealed = u.user?.strip_prefix(HIDDEN_PREFIX)?;
        if sealed.len() > MAX_SEALED_HEX || !local.is_us(&u) {
            return None;
        }
        self.keys.open(bound, &unhex(sealed)?)
    }

    /// The URI of the inner Contact a Request-URI of ours (`local`) stands for; None for
    /// any other URI, or one whose seal does not open.
    pub fn reveal(&self, request_uri: &str, local: &Local) -> Option<String> {
        first_uri(&self.open(DIALOG, request_uri, local)?)
    }

    /// What a Request-URI of ours sealed for `bound` with the time it was sealed stands
    /// for (the text after that time), and how far that time is from `unix` (seconds).
    fn open_dated(
        &self,
        bound: &[u8],
        request_uri: &str,
        local: &Local,
        unix: u64,
    ) -> Option<(u64, String)> {
        let opened = self.open(bound, request_uri, local)?;
        let (issued, value) = opened.split_once(' ')?;
        let issued: u64 = issued.parse().ok()?;
        Some((issued.abs_diff(unix), value.to_string()))
    }

    /// The URI of the inner redirect target a Request-URI of ours stands for, when it was
    /// sealed no longer than [`REDIRECT_LIFETIME`] before `unix` (seconds) for the 3xx's
    /// recipient `source` (the request's source).
    pub fn reveal_redirect(
        &self,
        request_uri: &str,
        local: &Local,
        unix: u64,
        source: IpAddr,
    ) -> Option<String> {
        let bound = redirect_bound(source);
        let (age, value) = self.open_dated(&bound, request_uri, local, unix)?;
        if age > REDIRECT_LIFETIME {
            return None;
        }
        first_uri(&value)
    }

    /// Whether `request_uri` looks like a seal of ours (our prefix, at our address),
    /// whether it opens or not.
    pub fn names_seal(&self, request_uri: &str, local: &Local) -> bool {
        matches!(uri::parse(request_uri), Ok(Uri::Sip(u))
            if u.user.is_some_and(|n| n.starts_with(HIDDEN_PREFIX)) && local.is_us(&u))
    }
}

/// The URI of the first Contact in a Contact value.
fn first_uri(value: &str) -> Option<String> {
    let mut first = None;
    let _ = name_addr::parse_contact(value, |a| {
        first.get_or_insert_with(|| a.uri_text.to_string());
    });
    first
}

/// Every Contact of `msg` replaced by ours on `side` standing for it (see the module doc).
/// One that cannot be sealed is removed rather than shown.
pub fn hide_contacts(msg: &mut SipMsg, seal: &ContactSeal, side: &str) {
    hide_each(msg, side, |v, side| seal.hide(DIALOG, v, side));
}

/// The Contacts of a 3xx (redirect targets) replaced by ours on `side`, sealed at `unix`
/// (seconds) as redirect targets for `recipient` (see the module doc); one that cannot be
/// sealed is removed.
pub fn hide_redirects(
    msg: &mut SipMsg,
    seal: &ContactSeal,
    (side, recipient): (&str, IpAddr),
    unix: u64,
) {
    let bound = redirect_bound(recipient);
    hide_each(msg, side, |v, side| {
        let mut hidden = Vec::new();
        // One target per seal: a Contact value may list several (RFC 3261 20.10).
        let _ = name_addr::parse_contact(v, |a| {
            let target = format!("<{}>", a.uri_text);
            hidden.extend(seal.hide(&bound, &format!("{unix} {target}"), side));
        });
        (!hidden.is_empty()).then(|| hidden.join(", "))
    });
}

/// Every Contact value of `msg` replaced by what `hide` makes of it on `side`.
fn hide_each(msg: &mut SipMsg, side: &str, hide: impl Fn(&str, &str) -> Option<String>) {
    if msg.get(HeaderName::Contact).is_none() {
        return;
    }
    let hidden: Vec<String> = msg
        .all(HeaderName::Contact)
        .filter_map(|v| hide(v, side))
        .collect();
    msg.replace_all(HeaderName::Contact, hidden);
}

/// The header lines of our answer to a REGISTER (`extra`) as a registrant outside sees
/// them: of the Contact lines (every binding of the address of record, RFC 3261 10.3 step
/// 8), those of the contacts the REGISTER carried (`own`, its own bindings, which it
/// checks: 10.2.4); the others are other devices of the address of record, maybe inside.
pub fn register_answer_outward(extra: &mut Vec<String>, own: &[&str]) {
    extra.retain(|line| {
        let Some(value) = line.strip_prefix("Contact:") else {
            return true;
        };
        let mut ours = false;
        let _ = name_addr::parse_contact(value.trim(), |a| {
            ours |= own.iter().any(|o| o.eq_ignore_ascii_case(a.uri_text));
        });
        ours
    });
}

/// The request `msg` (our Via on top) as the outside sees it: our Via only; of its
/// Record-Route entries the top one when it is ours (`record_routed`), else none.
pub fn request_outward(msg: &SipMsg, record_routed: bool) -> SipMsg {
    let mut out = msg.clone();
    let ours = msg.top_via().map(str::to_string);
    out.remove(HeaderName::Via);
    if let Some(v) = ours {
        out.push_front(HeaderName::Via, v);
    }
    let keep = if record_routed {
        record_routes(msg).into_iter().take(1).collect()
    } else {
        Vec::new()
    };
    out.replace_all(HeaderName::RecordRoute, keep);
    out
}

/// A response to a request that left hidden, our Via already popped, given back what
/// hiding took from it: `sent` is the request as it was (our Via and, when
/// `record_routed`, our Record-Route entry on top).
pub fn response_inward(resp: &mut SipMsg, sent: &SipMsg, record_routed: bool) {
    // RFC 3327 5: the registrar's 2xx echoes the Path it stored, ours with the inner
    // entries sealed; the registrant inside may check it against what was sent.
    let path = HeaderName::Other("Path");
    if sent.start.starts_with("REGISTER ") && resp.get(path).is_some() {
        resp.replace_all(path, sent.all(path).map(str::to_string).collect());
    }
    if resp.get(HeaderName::Via).is_none() {
        let mut below = sent.clone();
        below.pop_via();
        for v in below
            .all(HeaderName::Via)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
        {
            resp.push_front(HeaderName::Via, v.to_string());
        }
    }
    if !record_routed {
        return;
    }
    let theirs = record_routes(resp);
    if theirs.is_empty() {
        // Not an answer that sets up a dialog (or the UAS dropped the set): nothing to mend.
        return;
    }
    let restored: Vec<String> = theirs
        .into_iter()
        .chain(record_routes(sent).into_iter().skip(1))
        .collect();
    resp.replace_all(HeaderName::RecordRoute, restored);
}

/// A response relayed to the outside, where our side is `side` (`host:port` as our entry
/// names it): its Record-Route entries from our first one down, without ours of other
/// sides. A set without any entry of ours is left alone (we did not record-route).
pub fn response_outward(resp: &mut SipMsg, local: &Local, side: &str) {
    let rr = record_routes(resp);
    let ours = |e: &str| {
        entry_uri(e)
            .and_then(|u| sip_firewall_sip::uri::parse(u).ok())
            .is_some_and(|u| matches!(u, sip_firewall_sip::uri::Uri::Sip(s) if local.is_us(&s)))
    };
    let Some(first) = rr.iter().position(|e| ours(e)) else {
        return;
    };
    let named = format!("sip:{side};");
    let keep: Vec<String> = rr
        .into_iter()
        .skip(first)
        .filter(|e| !ours(e) || entry_uri(e).is_some_and(|u| u.starts_with(&named)))
        .collect();
    resp.replace_all(HeaderName::RecordRoute, keep);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local() -> Local {
        Local::new(
            vec![],
            vec![
                "10.1.0.1:5060".parse().unwrap(),
                "192.0.2.1:5060".parse().unwrap(),
            ],
            "10.1.0.1".into(),
            Some(5060),
        )
    }

    /// An inner Contact goes out sealed under our outside address and comes back as the
    /// inner URI, after a roll of the secret too; a seal under another secret, a tampered
    /// one or one naming another host opens nothing.
    #[test]
    fn contacts_go_out_sealed_and_come_back() {
        let ring = |hex: &str| KeyRing::from_config(Some(hex), &[]).unwrap();
        let seal = ContactSeal::new(&ring(&"5a".repeat(32)));
        let mut m = SipMsg::request("INVITE", "sip:bob@192.0.2.9");
        m.push(
            HeaderName::Contact,
            "\"A\" <sip:alice@10.1.0.9:5070;ob>;expires=60".into(),
        );
        hide_contacts(&mut m, &seal, "192.0.2.1:5060");
        let shown = m.get(HeaderName::Contact).unwrap().to_string();
        assert!(
            shown.starts_with("<sip:sfwth-") && !shown.contains("10.1.0."),
            "{shown}"
        );
        let uri = shown.trim_start_matches('<').trim_end_matches('>');
        let back = seal.reveal(uri, &local());
        assert_eq!(back.as_deref(), Some("sip:alice@10.1.0.9:5070;ob"));
        let other = ContactSeal::new(&ring(&"6b".repeat(32)));
        assert_eq!(other.reveal(uri, &local()), None);
        let rolled = KeyRing::from_config(Some(&"6b".repeat(32)), &["5a".repeat(32)]).unwrap();
        let rolled = ContactSeal::new(&rolled);
        assert_eq!(rolled.reveal(uri, &local()), back);
        assert_eq!(
            seal.reveal(&uri.replace("@192.0.2.1", "@192.0.2.99"), &local()),
            None
        );
        let i = uri.find(HIDDEN_PREFIX).unwrap() + HIDDEN_PREFIX.len();
        let flipped = if &uri[i..=i] == "0" { "1" } else { "0" };
        let tampered = format!("{}{flipped}{}", &uri[..i], &uri[i + 1..]);
        assert_eq!(seal.reveal(&tampered, &local()), None);
        assert_eq!(seal.reveal("sip:bob@192.0.2.1:5060", &local()), None);
    }

    /// A request from inside (10.1.0.9, through an inner proxy 10.1.0.5) leaves with our
    /// Via and our outside entry only; the answer gets the rest back, in place.
    #[test]
    fn a_request_leaves_bare_and_its_answer_is_mended() {
        let mut sent = SipMsg::request("INVITE", "sip:bob@192.0.2.9");
        sent.push(
            HeaderName::Via,
            "SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKus".into(),
        );
        sent.push(
            HeaderName::Via,
            "SIP/2.0/UDP 10.1.0.5;branch=z9hG4bKp, SIP/2.0/UDP 10.1.0.9;branch=z9hG4bKa".into(),
        );
        for rr in [
            "<sip:192.0.2.1:5060;lr;sfw=s>",
            "<sip:10.1.0.1:5060;lr;sfw=s>",
            "<sip:10.1.0.5;lr>",
        ] {
            sent.push(HeaderName::RecordRoute, rr.into());
        }
        let out = request_outward(&sent, true);
        let text = String::from_utf8(out.to_bytes()).unwrap();
        assert!(!text.contains("10.1.0."), "{text}");
        assert!(
            text.contains("Record-Route: <sip:192.0.2.1:5060;lr;sfw=s>"),
            "{text}"
        );

        // bob's 200 copies the set he got; our Via is popped before it is mended.
        let mut resp = SipMsg::request("INVITE", "sip:x");
        resp.push(
            HeaderName::RecordRoute,
            "<sip:192.0.2.1:5060;lr;sfw=s>".into(),
        );
        response_inward(&mut resp, &sent, true);
        assert_eq!(
            resp.all(HeaderName::Via).collect::<Vec<_>>(),
            vec!["SIP/2.0/UDP 10.1.0.5;branch=z9hG4bKp, SIP/2.0/UDP 10.1.0.9;branch=z9hG4bKa"]
        );
        assert_eq!(record_routes(&resp), record_routes(&sent));

        // Toward the outside, an answer keeps our outside entry and what is below it.
        let mut answer = SipMsg::request("INVITE", "sip:x");
        for rr in [
            "<sip:10.1.0.5;lr>",
            "<sip:10.1.0.1:5060;lr;sfw=s>",
            "<sip:192.0.2.1:5060;lr;sfw=s>",
            "<sip:192.0.2.77;lr>",
        ] {
            answer.push(HeaderName::RecordRoute, rr.into());
        }
        response_outward(&mut answer, &local(), "192.0.2.1:5060");
        assert_eq!(
            record_routes(&answer),
            vec!["<sip:192.0.2.1:5060;lr;sfw=s>", "<sip:192.0.2.77;lr>"]
        );
    }
}
