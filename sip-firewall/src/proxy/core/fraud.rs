//! The proxy core's side of the toll-fraud guard (`crate::fraud`): the decision on an
//! initial INVITE, the dialog's start (first 2xx), failure (final non-2xx), in-dialog
//! requests and BYE, and the BYEs the edge sends itself when a call must end.

use super::*;
use crate::fraud::{Attempt, CallKey, DialogInfo};

/// The tag of a From or To header value.
pub(super) fn tag_of(v: Option<&str>) -> String {
    v.and_then(|v| name_addr::parse_single(v).ok())
        .and_then(|a| a.tag.map(str::to_string))
        .unwrap_or_default()
}

/// A server transaction's identity for the guard.
pub(super) fn txn_id(k: &ServerKey) -> String {
    format!("{}|{}", k.branch, k.sent_by)
}

/// The URI of the first Contact of a message.
pub(super) fn contact_uri(values: impl Iterator<Item = impl AsRef<str>>) -> Option<String> {
    for v in values {
        let mut first = None;
        let _ = name_addr::parse_contact(v.as_ref(), |a| {
            if first.is_none() {
                first = Some(a.uri_text.to_string());
            }
        });
        if first.is_some() {
            return first;
        }
    }
    None
}

/// The BYE the edge sends one party of dialog `d` (toward the callee, or the caller), as the
/// other party would send it (RFC 3261 15.1.1): its contact as Request-URI, the route beyond
/// us toward it, the other's tags, a CSeq above the other's highest. None without a contact.
fn own_bye(d: &DialogInfo, toward_callee: bool, reason: &str) -> Option<(SipMsg, Destination)> {
    let (contact, routes, from, to, cseq, dest) = if toward_callee {
        let cseq = d.caller_cseq.saturating_add(1);
        (
            &d.callee_contact,
            &d.routes_to_callee,
            &d.from,
            &d.to,
            cseq,
            d.callee,
        )
    } else {
        let cseq = d.callee_cseq.map_or(1, |c| c.saturating_add(1));
        (
            &d.caller_contact,
            &d.routes_to_caller,
            &d.to,
            &d.from,
            cseq,
            d.caller,
        )
    };
    if contact.is_empty() {
        return None;
    }
    let mut b = SipMsg::request("BYE", contact);
    b.push(HeaderName::MaxForwards, "70".into());
    for r in routes {
        b.push(HeaderName::Route, r.clone());
    }
    b.push(HeaderName::From, from.clone());
    b.push(HeaderName::To, to.clone());
    b.push(HeaderName::CallId, d.call_id.clone());
    b.push(HeaderName::CSeq, format!("{cseq} BYE"));
    b.push(HeaderName::Other("Reason"), reason.to_string());
    Some((b, dest))
}

impl Core {
    /// Whether the guard tracks any call: without one, what a message of a call would tell
    /// it (an answer, an in-dialog request, a BYE's outcome) concerns no call of its, and
    /// its lock, shared by every shard, is not taken.
    fn fraud_tracks_calls(&self) -> bool {
        self.shared.fraud_presence.tracks_calls()
    }

    /// The guard's writes for the state database queued since the last step (its lock
    /// taken only when there are some).
    pub(crate) fn fraud_store_ops(&self) -> Vec<crate::fraud::StoreOp> {
        if !self.shared.fraud_presence.ops_queued() {
            return Vec::new();
        }
        self.fraud.lock().take_store_ops()
    }

    /// The guard's decision on an initial INVITE of `account` about to be forwarded. Err:
    /// the answer (403 with the reason phrase, or 503 when its table is full).
    pub(super) fn fraud_check(
        &mut self,
        r: &Req<'_>,
        ruri: &str,
        account: &str,
        peer: Option<IpAddr>,
        foreign: bool,
    ) -> Result<(), LocalReply> {
        let m = r.m;
        let attempt = Attempt {
            account,
            peer,
            ruri,
            foreign,
            source: r.source().ip(),
            key: (
                m.get(HeaderName::CallId).unwrap_or("").to_string(),
                tag_of(m.get(HeaderName::From)),
            ),
            txn: txn_id(&r.key),
            from: m.get(HeaderName::From).unwrap_or("").to_string(),
            contact: contact_uri(m.all(HeaderName::Contact)),
            cseq: m
                .get(HeaderName::CSeq)
                .and_then(scalar::cseq)
                .map_or(0, |c| c.0),
        };
        let unix = self.unix_secs(r.now);
        self.fraud
            .lock()
            .check(&attempt, r.now, unix)
            .map_err(|r| answer(r.code, r.phrase))
    }

    /// The guard's key of the call of a server transaction.
    fn fraud_key(&self, skey: &ServerKey) -> Option<CallKey> {
        let e = self.servers.get(skey)?;
        Some((
            e.rctx.call_id.as_deref()?.to_string(),
            tag_of(e.rctx.from.as_deref()),
        ))
    }

    /// A final answer to an INVITE went up (`code`): a non-2xx ends the attempt.
    pub(super) fn fraud_final(&mut self, skey: &ServerKey, code: u16) {
        if skey.method == "INVITE"
            && code >= 300
            && self.fraud_tracks_calls()
            && let Some(k) = self.fraud_key(skey)
        {
            self.fraud.lock().failed(&k, &txn_id(skey));
        }
    }

    /// The first 2xx of branch `idx` of an INVITE: the dialog starts, with what is needed to
    /// end it from here (both parties, tags, contacts, the route beyond us on each side).
    /// In relay mode the 2xx first books the call ([`Core::relay_fraud_book`]); Some: the
    /// dialog of a call the books refused, for the edge to end once the 2xx is relayed.
    pub(super) fn fraud_answered(
        &mut self,
        skey: &ServerKey,
        idx: usize,
        resp: &SipMsg,
        now: Instant,
    ) -> Option<DialogInfo> {
        // Relay mode books the call here, at its 2xx.
        if !self.relay_mode() && !self.fraud_tracks_calls() {
            return None;
        }
        let key = self.fraud_key(skey)?;
        let refused = match self.relay_fraud_book(skey, idx, &key, now) {
            relay_fraud::Booking::Books => None,
            relay_fraud::Booking::Refused(from, contact, cseq) => Some((from, contact, cseq)),
        };
        let (from, contact, cseq) = match refused.clone() {
            Some(side) => side,
            None => self.fraud.lock().pending(&key, &txn_id(skey))?,
        };
        let caller = self.servers.get(skey)?.dest;
        let callee = self.branch_dest(skey, idx)?;
        let rr = route::record_routes(resp);
        let ours: Vec<usize> = rr
            .iter()
            .enumerate()
            .filter(|(_, e)| route::stamp_of(e).is_some())
            .map(|(i, _)| i)
            .collect();
        // Proxies record-route on top of the list: those above our entry are toward the
        // callee (the nearest last), those below toward the caller (the nearest first).
        let (to_callee, to_caller) = match (ours.first(), ours.last()) {
            (Some(&f), Some(&l)) => (
                rr.get(..f)
                    .unwrap_or_default()
                    .iter()
                    .rev()
                    .cloned()
                    .collect(),
                rr.get(l + 1..).unwrap_or_default().to_vec(),
            ),
            _ => (Vec::new(), Vec::new()),
        };
        let dialog = DialogInfo {
            caller,
            callee,
            call_id: key.0.clone(),
            from,
            to: resp.get(HeaderName::To).unwrap_or("").to_string(),
            to_tag: tag_of(resp.get(HeaderName::To)),
            caller_contact: contact.unwrap_or_default(),
            callee_contact: contact_uri(resp.all(HeaderName::Contact)).unwrap_or_default(),
            routes_to_caller: to_caller,
            routes_to_callee: to_callee,
            caller_cseq: cseq,
            callee_cseq: None,
            // RFC 4028 4: delta-seconds, then parameters (refresher=...).
            session_expires: resp
                .get(HeaderName::Other("Session-Expires"))
                .or_else(|| resp.get(HeaderName::Other("x")))
                .and_then(|v| v.split(';').next())
                .and_then(|v| v.trim().parse::<u32>().ok())
                .filter(|s| *s > 0)
                .map(|s| Duration::from_secs(u64::from(s))),
        };
        if refused.is_some() {
            return Some(dialog);
        }
        self.fraud.lock().answered(&key, dialog, now);
        None
    }

    /// An in-dialog request relayed: its CSeq is remembered, a re-INVITE or UPDATE refreshes
    /// the session. A BYE ends nothing yet: its answer decides ([`Core::fraud_bye_final`]).
    pub(super) fn fraud_in_dialog(&mut self, m: &Message<'_>, method: &str, now: Instant) {
        if !self.fraud_tracks_calls() {
            return;
        }
        let call_id = m.get(HeaderName::CallId).unwrap_or("");
        let from = tag_of(m.get(HeaderName::From));
        let to = tag_of(m.get(HeaderName::To));
        let cseq = m
            .get(HeaderName::CSeq)
            .and_then(scalar::cseq)
            .map_or(0, |c| c.0);
        self.fraud
            .lock()
            .in_dialog(call_id, (&from, &to), cseq, method, now);
    }

    /// The outcome of branch `idx` of a relayed BYE (server transaction `skey`): a 2xx
    /// (`answered`) ends its call in the guard's books; no answer at all (`!answered`, a
    /// timeout) has the edge end the call itself. Any other final changes nothing: the
    /// party refused the BYE (481: no such dialog, RFC 3261 15.1.2; 420, 5xx) and the call
    /// goes on.
    pub(super) fn fraud_bye_final(
        &mut self,
        skey: &ServerKey,
        idx: usize,
        answered: bool,
        now: Instant,
    ) {
        if skey.method != "BYE" || !self.fraud_tracks_calls() {
            return;
        }
        let Some(e) = self.servers.get(skey) else {
            return;
        };
        let call_id = e.rctx.call_id.as_deref().unwrap_or("").to_string();
        let tags = (tag_of(e.rctx.from.as_deref()), tag_of(e.rctx.to.as_deref()));
        // The party the BYE went to: only its answer counts.
        let Some(party) = self.branch_dest(skey, idx).map(|d| d.addr) else {
            return;
        };
        let tags = (tags.0.as_str(), tags.1.as_str());
        if answered {
            self.fraud.lock().bye_answered(&call_id, tags, party, now);
        } else {
            self.fraud.lock().bye_unanswered(&call_id, tags, party);
        }
    }

    /// End the calls the guard says must end: BYE to each party, as the other would send
    /// it (RFC 3261 15.1.1), each in a client transaction of ours (retransmitted over UDP).
    pub(super) fn fraud_tick(&mut self, now: Instant) {
        let unix = self.unix_secs(now);
        let shared = &self.shared;
        let due = self
            .fraud
            .lock()
            .tick_of(now, unix, &|call_id| shared.shard_of(call_id) == self.shard);
        for (d, how) in due {
            self.end_call(&d, how, now);
        }
    }

    /// End dialog `d` (`how`: why): BYE to each party, as the other would send it (RFC
    /// 3261 15.1.1).
    pub(super) fn end_call(&mut self, d: &DialogInfo, how: &str, now: Instant) {
        let text = match how {
            "max_duration" => "call duration limit",
            "session_expired" => "session expired",
            "fraud_hangup" => "fraud guard",
            _ => "ended by the edge",
        };
        let reason = format!("SIP;cause=200;text=\"{text}\"");
        for toward_callee in [true, false] {
            if let Some((mut bye, dest)) = own_bye(d, toward_callee, &reason) {
                // Toward the callee of a dialog made inside, as its other requests
                // (`super::hide`).
                let made_inside = toward_callee && self.made_inside(d.caller.addr.ip());
                let from = d.caller.addr.ip();
                self.hide_call_id(&mut bye, dest, made_inside.then_some(0), (from, now));
                self.send_own_request(bye, dest, now);
            }
        }
    }

    /// Where branch `idx` of server transaction `skey` went (its client transaction of the
    /// same method).
    fn branch_dest(&self, skey: &ServerKey, idx: usize) -> Option<Destination> {
        self.branch_client(skey, idx).map(|c| c.dest)
    }

    /// The client transaction of branch `idx` of server transaction `skey` (of the same
    /// method).
    pub(super) fn branch_client(&self, skey: &ServerKey, idx: usize) -> Option<&ClientEntry> {
        let branch = self
            .servers
            .get(skey)?
            .fork
            .as_ref()?
            .branches
            .get(idx)?
            .branch
            .clone();
        let key = ClientKey {
            branch,
            method: skey.method.clone(),
        };
        self.clients.get(&key)
    }

    /// A request the edge originates (a BYE): our Via, a client transaction without a
    /// server transaction, announced to the fast path so that its answer is not a stray.
    fn send_own_request(&mut self, mut b: SipMsg, dest: Destination, now: Instant) {
        let branch = self.new_branch("own");
        forward::add_via_toward(&mut b, &self.local, dest, &branch);
        let bytes = b.to_bytes();
        let method = b.start.split(' ').next().unwrap_or("BYE").to_string();
        self.observer.client_transaction_created(&branch, dest);
        let out = Outgoing {
            key: ClientKey { branch, method },
            kind: Kind::NonInvite,
            reliable: dest.transport.is_reliable(),
            req: b,
            dest,
            server: None,
        };
        self.start_client(out, bytes, now);
    }
}
