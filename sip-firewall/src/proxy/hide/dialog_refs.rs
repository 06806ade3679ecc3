//! Call-IDs that name *another* dialog, across the hiding boundary: `Replaces` (RFC 3891
//! 6.1), `Join` (RFC 3911 7.1), `Target-Dialog` (RFC 4538 7), and the `Replaces` header a
//! `Refer-To` URI carries for an attended transfer (RFC 3515 2.1, RFC 3891 7.1). Each names
//! a dialog by the Call-ID its recipient knows: a dialog made inside is known outside by
//! its sealed Call-ID (`super::call_id`), one made outside by its own.
//!
//! - Toward a destination we do not hide from, a sealed Call-ID in these headers is opened
//!   (stateless, like the message's own Call-ID).
//! - Toward one we hide from, a Call-ID is sealed when it is one we sealed for a dialog
//!   made inside ([`SealedDialogs`]); any other is left as it is: a dialog made outside
//!   keeps the text its maker gave it. Whether a dialog was made inside cannot be read
//!   from the Call-ID alone, so the edge remembers the Call-IDs it sealed, bounded (a
//!   dialog forgotten at a bound, or sealed on another node, is referred to by its inner
//!   Call-ID: the transfer fails with 481 at the recipient, RFC 3891 3).
//!
//! # Example
//!
//! ```
//! use sip_firewall::proxy::hide::dialog_refs::map_value;
//!
//! let up = |c: &str| Some(c.to_uppercase());
//! assert_eq!(
//!     map_value("Replaces", "a@b;to-tag=1;from-tag=2", up).as_deref(),
//!     Some("A@B;to-tag=1;from-tag=2")
//! );
//! assert_eq!(map_value("Contact", "<sip:a@b>", up), None);
//! ```

use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    time::{Duration, Instant},
};

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use super::call_id::CallIdSeal;
use crate::proxy::msg::SipMsg;

/// Headers whose value is `callid *( SEMI param )`.
const DIALOG_ID_HEADERS: [&str; 3] = ["Replaces", "Join", "Target-Dialog"];

/// What an `hvalue` of a SIP URI may hold unescaped (RFC 3261 25.1: `unreserved` and
/// `hnv-unreserved`); everything else is escaped.
const HVALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'[')
    .remove(b']')
    .remove(b'/')
    .remove(b'?')
    .remove(b':')
    .remove(b'+')
    .remove(b'$');

/// The value of header `name` with the Call-ID it names mapped by `f`; None when `name`
/// names no dialog, the value has no Call-ID of the form, or `f` leaves it as it is.
pub fn map_value(name: &str, value: &str, f: impl Fn(&str) -> Option<String>) -> Option<String> {
    if DIALOG_ID_HEADERS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
    {
        return map_dialog_id(value, &f);
    }
    if name.eq_ignore_ascii_case("Refer-To") || name.eq_ignore_ascii_case("r") {
        return map_refer_to(value, &f);
    }
    None
}

/// The dialogs `msg` (a request going out) names in other headers than its Call-ID, as its
/// destination must see them (see the module doc): sealed when it is `hidden` from and
/// `sealed` remembers them, opened when it is not.
pub fn map_refs(msg: &mut SipMsg, hidden: bool, seal: &CallIdSeal, sealed: &SealedDialogs) {
    let f = |c: &str| {
        if hidden {
            seal.seal(c, sealed.secret_of(c)?)
        } else {
            seal.open(c)
        }
    };
    for h in &mut msg.headers {
        if let Some(v) = map_value(&h.name, &h.value, f) {
            h.value = v;
        }
    }
}

/// `callid *( SEMI param )` with its Call-ID mapped.
fn map_dialog_id(value: &str, f: &impl Fn(&str) -> Option<String>) -> Option<String> {
    let (call_id, params) = value.split_at(value.find(';').unwrap_or(value.len()));
    let mapped = f(call_id.trim())?;
    Some(format!("{mapped}{params}"))
}

/// A Refer-To value whose URI's `Replaces` header (`?Replaces=…` or `&Replaces=…`,
/// escaped) names a dialog: that Call-ID mapped.
fn map_refer_to(value: &str, f: &impl Fn(&str) -> Option<String>) -> Option<String> {
    let q = value.find('?')?;
    let (head, rest) = value.split_at(q + 1);
    // The headers end where the URI does: at `>` in a name-addr (the only form that may
    // carry `?`, RFC 3261 20.10), else at the header's own parameters.
    let end = rest.find(['>', ';']).unwrap_or(rest.len());
    let (headers, tail) = rest.split_at(end);
    let mut changed = false;
    let mapped: Vec<String> = headers
        .split('&')
        .map(|h| {
            let Some((n, v)) = h.split_once('=') else {
                return h.to_string();
            };
            if !n.eq_ignore_ascii_case("Replaces") {
                return h.to_string();
            }
            let Ok(decoded) = percent_decode_str(v).decode_utf8() else {
                return h.to_string();
            };
            match map_dialog_id(&decoded, f) {
                Some(m) => {
                    changed = true;
                    format!("{n}={}", utf8_percent_encode(&m, HVALUE))
                }
                None => h.to_string(),
            }
        })
        .collect();
    changed.then(|| format!("{head}{}{tail}", mapped.join("&")))
}

/// How long a dialog's sealed Call-ID is remembered after it last went out: longer than a
/// call lasts between two requests (session refreshes come every 30 minutes, RFC 4028).
pub const REMEMBERED_FOR: Duration = Duration::from_secs(4 * 3600);
/// Most Call-IDs remembered; beyond, the one unused longest is forgotten (counted).
pub const MAX_REMEMBERED: usize = 65_536;
/// Most remembered for one source: one source cannot push every other out.
pub const MAX_PER_SOURCE: usize = 16_384;

/// What [`SealedDialogs::remember`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Remembered {
    /// New or refreshed.
    Kept,
    /// New, and the Call-ID unused longest was forgotten for it (the total bound).
    Evicted,
    /// Not remembered: its source holds [`MAX_PER_SOURCE`].
    SourceFull,
}

impl Remembered {
    /// The label of `sipfw_proxy_hidden_dialogs_total`.
    pub fn label(self) -> &'static str {
        match self {
            Remembered::Kept => "remembered",
            Remembered::Evicted => "evicted",
            Remembered::SourceFull => "source_full",
        }
    }
}

struct Entry {
    /// The ring secret it was sealed under.
    secret: usize,
    source: IpAddr,
    last: Instant,
}

/// The inner Call-IDs of dialogs made inside that went out sealed, so that a Replaces,
/// Join, Target-Dialog or Refer-To naming one goes out sealed too (see the module doc).
#[derive(Default)]
pub struct SealedDialogs {
    by_call_id: HashMap<String, Entry>,
    /// (last use, Call-ID): the order of eviction and expiry.
    by_age: BTreeSet<(Instant, String)>,
    per_source: HashMap<IpAddr, usize>,
}

impl SealedDialogs {
    /// `call_id` went out sealed under `secret` at `now`, in a request from `source`.
    pub fn remember(
        &mut self,
        call_id: &str,
        secret: usize,
        source: IpAddr,
        now: Instant,
    ) -> Remembered {
        self.expire(now);
        if let Some(e) = self.by_call_id.get_mut(call_id) {
            self.by_age.remove(&(e.last, call_id.to_string()));
            e.last = now;
            e.secret = secret;
            self.by_age.insert((now, call_id.to_string()));
            return Remembered::Kept;
        }
        if self.per_source.get(&source).copied().unwrap_or(0) >= MAX_PER_SOURCE {
            return Remembered::SourceFull;
        }
        let mut outcome = Remembered::Kept;
        if self.by_call_id.len() >= MAX_REMEMBERED {
            if let Some((_, oldest)) = self.by_age.pop_first() {
                self.forget(&oldest);
            }
            outcome = Remembered::Evicted;
        }
        self.by_call_id.insert(
            call_id.to_string(),
            Entry {
                secret,
                source,
                last: now,
            },
        );
        self.by_age.insert((now, call_id.to_string()));
        *self.per_source.entry(source).or_default() += 1;
        outcome
    }

    /// The secret `call_id` went out sealed under, if it did and is remembered.
    pub fn secret_of(&self, call_id: &str) -> Option<usize> {
        self.by_call_id.get(call_id).map(|e| e.secret)
    }

    /// How many Call-IDs are remembered.
    pub fn len(&self) -> usize {
        self.by_call_id.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.by_call_id.is_empty()
    }

    /// Forget those unused for [`REMEMBERED_FOR`].
    fn expire(&mut self, now: Instant) {
        while let Some((at, _)) = self.by_age.first() {
            if now.saturating_duration_since(*at) < REMEMBERED_FOR {
                break;
            }
            if let Some((_, id)) = self.by_age.pop_first() {
                self.forget(&id);
            }
        }
    }

    fn forget(&mut self, call_id: &str) {
        let Some(e) = self.by_call_id.remove(call_id) else {
            return;
        };
        if let Some(n) = self.per_source.get_mut(&e.source) {
            *n -= 1;
            if *n == 0 {
                self.per_source.remove(&e.source);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mark(c: &str) -> Option<String> {
        Some(format!("sfwth-{}", c.len()))
    }

    /// Each header form gets its Call-ID mapped, its parameters kept; others are left.
    #[test]
    fn every_form_that_names_a_dialog_is_mapped() {
        assert_eq!(
            map_value("replaces", " 98asjd8@10.1.0.9;to-tag=a;from-tag=b", mark).as_deref(),
            Some("sfwth-16;to-tag=a;from-tag=b")
        );
        assert_eq!(
            map_value("Join", "x@10.1.0.9;to-tag=a;from-tag=b", mark).as_deref(),
            Some("sfwth-10;to-tag=a;from-tag=b")
        );
        assert_eq!(
            map_value("Target-Dialog", "x@h", mark).as_deref(),
            Some("sfwth-3")
        );
        let refer = "<sip:bob@192.0.2.9?Replaces=12345%4010.1.0.9%3Bto-tag%3Dab%3Bfrom-tag%3Dcd&Require=replaces>;x=1";
        assert_eq!(
            map_value("Refer-To", refer, mark).as_deref(),
            Some(
                "<sip:bob@192.0.2.9?Replaces=sfwth-14%3Bto-tag%3Dab%3Bfrom-tag%3Dcd&Require=replaces>;x=1"
            )
        );
        assert_eq!(map_value("Refer-To", "<sip:bob@192.0.2.9>", mark), None);
        assert_eq!(map_value("Call-ID", "x@h", mark), None);
        assert_eq!(map_value("Replaces", "x@h", |_| None), None);
    }

    /// An inner Call-ID opened into a Refer-To is escaped as an hvalue: its `@`, `;` and
    /// `=` do not end the URI's header.
    #[test]
    fn an_opened_call_id_is_escaped_in_refer_to() {
        let open = |c: &str| (c == "sfwth-1").then(|| "in@10.1.0.9".to_string());
        assert_eq!(
            map_value("r", "<sip:a@h?replaces=sfwth-1%3Bto-tag%3Dx>", open).as_deref(),
            Some("<sip:a@h?replaces=in%4010.1.0.9%3Bto-tag%3Dx>")
        );
    }

    /// Remembered until unused for [`REMEMBERED_FOR`]; at the total bound the one unused
    /// longest goes; one source holds at most [`MAX_PER_SOURCE`].
    #[test]
    fn bounded_per_source_and_in_total() {
        let t0 = Instant::now();
        let a: IpAddr = "10.1.0.9".parse().unwrap();
        let mut s = SealedDialogs::default();
        assert_eq!(s.remember("c@a", 0, a, t0), Remembered::Kept);
        assert_eq!(s.secret_of("c@a"), Some(0));
        let later = t0 + REMEMBERED_FOR - Duration::from_secs(1);
        assert_eq!(s.remember("c@a", 1, a, later), Remembered::Kept);
        assert_eq!(s.secret_of("c@a"), Some(1));
        s.expire(later + REMEMBERED_FOR);
        assert!(s.is_empty() && s.per_source.is_empty());

        for i in 0..MAX_PER_SOURCE {
            assert_eq!(s.remember(&format!("{i}"), 0, a, t0), Remembered::Kept);
        }
        assert_eq!(s.remember("one more", 0, a, t0), Remembered::SourceFull);
        let mut n = 0;
        let mut evicted = 0;
        'fill: for b in 1..=u8::MAX {
            let src = IpAddr::from([10, 2, 0, b]);
            for i in 0..MAX_PER_SOURCE {
                n += 1;
                let at = t0 + Duration::from_millis(n);
                if s.remember(&format!("{b}-{i}"), 0, src, at) == Remembered::Evicted {
                    evicted += 1;
                    break 'fill;
                }
            }
        }
        assert_eq!(evicted, 1);
        assert_eq!(s.len(), MAX_REMEMBERED);
        assert_eq!(s.secret_of("0"), None, "the one unused longest went");
        assert_eq!(s.per_source.get(&a).copied(), Some(MAX_PER_SOURCE - 1));
    }
}
