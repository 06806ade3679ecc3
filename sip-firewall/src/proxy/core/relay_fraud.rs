//! Relay mode's side of the toll-fraud guard (`crate::fraud`). The operator's registrar,
//! not the edge, checks a phone's credentials, so who calls is proven only by the
//! registrar's 2xx to an INVITE that carried them. At the INVITE the edge refuses only what
//! counts nothing ([`crate::fraud::Fraud::precheck`]: a suspended account, a destination its
//! rules do not allow); the 2xx books the call under the credentials' account
//! ([`crate::fraud::Fraud::book`]) in the same books as local mode, and a call that passes
//! a critical threshold or a bound then is ended by the edge, BYE both ways. A 401, 407 or
//! any other non-2xx leaves the books as they were: made-up credentials never bring anyone's
//! account nearer a threshold, let alone a suspension.

use super::*;
use crate::auth::digest::Credentials;
use crate::fraud::{Attempt, CallKey};

/// How the first 2xx to an INVITE stands with the guard's books.
pub(super) enum Booking {
    /// Not a relayed call of one of our accounts, or booked: the books say the rest.
    Books,
    /// Proven but refused by a bound of the books (not tracked): the edge ends it, with
    /// the caller's side of the dialog (From, Contact, CSeq) taken from the INVITE.
    Refused(String, Option<String>, u32),
}

impl Core {
    /// The account (`user@domain`, as local mode books it) of the Digest credentials `msg`
    /// carries for one of our domains: Proxy-Authorization answers a proxy's challenge
    /// (407), Authorization a UAS's (401) (RFC 3261 22.3); the registrar may send either.
    fn credentials_account(&self, msg: &SipMsg) -> Option<String> {
        ["Proxy-Authorization", "Authorization"]
            .into_iter()
            .flat_map(|h| msg.all(HeaderName::Other(h)))
            .filter_map(|v| Credentials::parse(v).ok())
            .find(|c| self.local.is_our_domain(&c.realm))
            .map(|c| {
                let realm = c.realm.trim_end_matches('.').to_ascii_lowercase();
                format!("{}@{realm}", c.username)
            })
    }

    /// Whether `msg` is addressed out of our domains (toward a trunk: the destination rules
    /// apply), as local mode's routing tells it.
    fn foreign_target(&self, msg: &SipMsg) -> bool {
        let ruri = msg.request_uri().unwrap_or("");
        !matches!(uri::parse(ruri), Ok(Uri::Sip(u))
            if self.local.domain_of(&u).is_some() || self.local.is_us(&u))
    }

    /// A phone's INVITE about to go to the registrar: refused at once (the answers and
    /// metrics of local mode) when its credentials name a suspended account or its
    /// destination is not allowed for that account; nothing is counted.
    pub(super) fn relay_fraud_precheck(&self, msg: &SipMsg) -> Result<(), LocalReply> {
        let Some(account) = self.credentials_account(msg) else {
            return Ok(());
        };
        let ruri = msg.request_uri().unwrap_or("");
        let foreign = self.foreign_target(msg);
        self.fraud
            .lock()
            .precheck(&account, ruri, foreign)
            .map_err(|r| answer(r.code, r.phrase))
    }

    /// The first 2xx to INVITE `skey` on branch `idx` (call `key`): in relay mode, the
    /// registrar accepted the credentials the INVITE carried, and the call is booked on
    /// their account. A critical threshold marks it for the edge to end (and suspends the
    /// account, as in local mode); a bound leaves it untracked ([`Booking::Refused`]).
    pub(super) fn relay_fraud_book(
        &mut self,
        skey: &ServerKey,
        idx: usize,
        key: &CallKey,
        now: Instant,
    ) -> Booking {
        if !self.relay_mode() || skey.method != "INVITE" {
            return Booking::Books;
        }
        let (Some(req), Some(source)) = (
            self.branch_client(skey, idx).map(|c| c.req.clone()),
            self.servers.get(skey).map(|s| s.source),
        ) else {
            return Booking::Books;
        };
        // A re-INVITE (its To has the dialog's tag) is of a call booked already.
        if !fraud::tag_of(req.get(HeaderName::To)).is_empty() {
            return Booking::Books;
        }
        let Some(account) = self.credentials_account(&req) else {
            return Booking::Books;
        };
        let ruri = req.request_uri().unwrap_or("").to_string();
        let attempt = Attempt {
            account: &account,
            // The registrar, not the edge, chooses the trunk.
            peer: None,
            ruri: &ruri,
            foreign: self.foreign_target(&req),
            source: source.ip(),
            key: key.clone(),
            txn: fraud::txn_id(skey),
            from: req.get(HeaderName::From).unwrap_or("").to_string(),
            contact: fraud::contact_uri(req.all(HeaderName::Contact)),
            cseq: req
                .get(HeaderName::CSeq)
                .and_then(scalar::cseq)
                .map_or(0, |c| c.0),
        };
        let unix = self.unix_secs(now);
        let booked = self.fraud.lock().book(&attempt, now, unix);
        if booked.is_err() && self.fraud.lock().pending(key, &attempt.txn).is_none() {
            return Booking::Refused(attempt.from, attempt.contact, attempt.cseq);
        }
        Booking::Books
    }
}
