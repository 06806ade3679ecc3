//! The calls the guard tracks, from the INVITE it allowed to the 2xx of a BYE: answered,
//! failed, refreshed in the dialog, and ended by [`Fraud::tick`] (past `max_call_duration`,
//! a critical duration, an expired session, a relayed BYE nobody answered, a suspended
//! account with `on_critical = "block-and-hangup"`).

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use tracing::info;

use super::{CallKey, DialogInfo, Event, Fraud, OnCritical, PENDING_LIMIT};

/// A call past a duration threshold: the account, the rule, how long, the threshold.
type Long = (String, String, Duration, Duration);

impl Fraud {
    /// The caller's side of a tracked call (from, contact, CSeq), when it waits for the 2xx
    /// of server transaction `txn`.
    pub fn pending(&self, key: &CallKey, txn: &str) -> Option<(String, Option<String>, u32)> {
        self.calls
            .get(key)
            .filter(|c| c.answered.is_none() && c.txn == txn)
            .map(|c| (c.from.clone(), c.contact.clone(), c.cseq))
    }

    /// The first 2xx of a tracked call: the dialog starts.
    pub fn answered(&mut self, key: &CallKey, dialog: DialogInfo, now: Instant) {
        if let Some(c) = self.calls.get_mut(key)
            && c.answered.is_none()
        {
            c.answered = Some(now);
            c.refreshed = Some(now);
            c.dialog = Some(dialog);
            if self.suspended.contains_key(&c.account)
                && self.on_critical == OnCritical::BlockAndHangup
            {
                c.hangup = Some("fraud_hangup");
            }
        }
    }

    /// The server transaction `txn` of a tracked call answered a final non-2xx: no dialog,
    /// forgotten.
    pub fn failed(&mut self, key: &CallKey, txn: &str) {
        if self
            .calls
            .get(key)
            .is_some_and(|c| c.answered.is_none() && c.txn == txn)
        {
            self.remove(key, None);
        }
    }

    pub(super) fn remove(
        &mut self,
        key: &CallKey,
        ended: Option<(&str, Instant)>,
    ) -> Option<DialogInfo> {
        let c = self.calls.remove(key)?;
        self.presence.set_calls(self.calls.len());
        if let Some(a) = self.accounts.get_mut(&c.account) {
            a.active = a.active.saturating_sub(1);
            for &i in &c.rules {
                if let Some(r) = a.rules.get_mut(i) {
                    r.active = r.active.saturating_sub(1);
                }
            }
        }
        if let Some(p) = c.peer
            && let Some(n) = self.peers.get_mut(&p)
        {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.peers.remove(&p);
            }
        }
        if let (Some((how, now)), Some(at)) = (ended, c.answered) {
            self.metrics.calls_ended.with_label_values(&[how]).inc();
            self.metrics
                .call_duration
                .observe(now.saturating_duration_since(at).as_secs_f64());
        }
        self.gauges(Some(&c.account), c.peer);
        c.dialog
    }

    /// The answered call whose dialog a request with these tags (From, To) belongs to, and
    /// whether it comes from the caller (From-tag the caller's, To-tag the callee's) or the
    /// callee (the other way round). A request with another remote tag (a made-up one, or
    /// another branch's dialog of a forked call) is not of this dialog (RFC 3261 12.2.2).
    fn dialog_call(&self, call_id: &str, tags: (&str, &str)) -> Option<(CallKey, bool)> {
        let of_dialog = |key: &CallKey, remote: &str| {
            self.calls
                .get(key)
                .and_then(|c| c.dialog.as_ref())
                .is_some_and(|d| d.to_tag == remote)
        };
        let caller = (call_id.to_string(), tags.0.to_string());
        if of_dialog(&caller, tags.1) {
            return Some((caller, true));
        }
        let callee = (call_id.to_string(), tags.1.to_string());
        of_dialog(&callee, tags.0).then_some((callee, false))
    }

    /// An in-dialog request of a tracked call went through: its CSeq is remembered (our BYE
    /// must be higher); a re-INVITE or UPDATE refreshes the session (RFC 4028). A BYE ends
    /// nothing here: only its 2xx does ([`Fraud::bye_answered`]).
    pub fn in_dialog(
        &mut self,
        call_id: &str,
        tags: (&str, &str),
        cseq: u32,
        method: &str,
        now: Instant,
    ) {
        let Some((key, from_caller)) = self.dialog_call(call_id, tags) else {
            return;
        };
        let Some(c) = self.calls.get_mut(&key) else {
            return;
        };
        if matches!(method, "INVITE" | "UPDATE") {
            c.refreshed = Some(now);
        }
        if let Some(d) = c.dialog.as_mut() {
            if from_caller {
                d.caller_cseq = d.caller_cseq.max(cseq);
            } else {
                d.callee_cseq = Some(d.callee_cseq.unwrap_or(0).max(cseq));
            }
        }
    }

    /// The call of a relayed BYE (its Call-ID and tags, From and To) answered by `party`:
    /// the party the BYE's tags say it is addressed to (the callee for the caller's BYE,
    /// the caller for the callee's), else none.
    fn bye_call(&self, call_id: &str, tags: (&str, &str), party: SocketAddr) -> Option<CallKey> {
        let (key, from_caller) = self.dialog_call(call_id, tags)?;
        let d = self.calls.get(&key)?.dialog.as_ref()?;
        let to = if from_caller { d.callee } else { d.caller };
        let same = to.addr.ip().to_canonical() == party.ip().to_canonical()
            && to.addr.port() == party.port();
        same.then_some(key)
    }

    /// A 2xx to a relayed BYE of a tracked call, from the party it went to: the dialog is
    /// over (RFC 3261 15.1.2: the UAS answers 2xx to a BYE of a dialog it has; 481 means it
    /// has none, and any other final leaves the call up).
    pub fn bye_answered(
        &mut self,
        call_id: &str,
        tags: (&str, &str),
        party: SocketAddr,
        now: Instant,
    ) {
        if let Some(key) = self.bye_call(call_id, tags, party) {
            self.remove(&key, Some(("bye", now)));
        }
    }

    /// A relayed BYE of a tracked call that `party` never answered (timeout): whether the
    /// call is still up there is unknown, so the edge ends it itself at the next tick, BYE
    /// both ways (a request the party ignored, however it was made, does not untrack a
    /// call the edge has not ended).
    pub fn bye_unanswered(&mut self, call_id: &str, tags: (&str, &str), party: SocketAddr) {
        if let Some(key) = self.bye_call(call_id, tags, party)
            && let Some(c) = self.calls.get_mut(&key)
        {
            c.hangup.get_or_insert("bye_timeout");
        }
    }

    /// Calls to end now (the core sends BYE both ways), and the housekeeping of forgotten
    /// attempts.
    pub fn tick(&mut self, now: Instant, unix: u64) -> Vec<(DialogInfo, &'static str)> {
        self.tick_of(now, unix, &|_| true)
    }

    /// [`Fraud::tick`] for the calls whose Call-ID is `mine` only (those of one shard of
    /// the proxy, which ends them from where their transactions are); the others wait for
    /// their own shard's tick.
    pub fn tick_of(
        &mut self,
        now: Instant,
        unix: u64,
        mine: &dyn Fn(&str) -> bool,
    ) -> Vec<(DialogInfo, &'static str)> {
        let (mut due, warns, crits) = self.due(now, mine);
        self.report_durations(warns, crits, unix);
        // With on_critical = alert a long call only warns; it is not ended.
        if self.on_critical == OnCritical::Alert {
            due.retain(|(_, how)| *how != "fraud_hangup");
        }
        let mut out = Vec::new();
        for (k, how) in due {
            if let Some(d) = self.remove(&k, Some((how, now))) {
                info!(call_id = d.call_id, how, "ending a call");
                out.push((d, how));
            }
        }
        out
    }

    /// The calls to end now and why; the duration thresholds calls passed (warnings once per
    /// call, criticals).
    fn due(
        &mut self,
        now: Instant,
        mine: &dyn Fn(&str) -> bool,
    ) -> (Vec<(CallKey, &'static str)>, Vec<Long>, Vec<Long>) {
        let mut due: Vec<(CallKey, &'static str)> = Vec::new();
        let mut warns = Vec::new();
        let mut crits = Vec::new();
        for (k, c) in self.calls.iter_mut().filter(|(k, _)| mine(&k.0)) {
            let Some(at) = c.answered else {
                if now.saturating_duration_since(c.authorised) >= PENDING_LIMIT {
                    due.push((k.clone(), "expired"));
                }
                continue;
            };
            let len = now.saturating_duration_since(at);
            if let Some(h) = c.hangup {
                due.push((k.clone(), h));
                continue;
            }
            if self.max_call_duration.is_some_and(|m| len >= m) {
                due.push((k.clone(), "max_duration"));
                continue;
            }
            // RFC 4028 10: the parties themselves end an unrefreshed session up to
            // min(32s, interval/3) around its expiry; the edge waits that long beyond it,
            // then ends what they left up (a pair that negotiates a short interval and never
            // refreshes must not keep an untracked call).
            if let (Some(se), Some(r)) = (
                c.dialog.as_ref().and_then(|d| d.session_expires),
                c.refreshed,
            ) && now.saturating_duration_since(r) >= se + (se / 3).min(Duration::from_secs(32))
            {
                due.push((k.clone(), "session_expired"));
                continue;
            }
            for &i in &c.rules {
                let Some(r) = self.rules.get(i) else { continue };
                if let Some(crit) = r.duration.critical
                    && len > crit
                {
                    crits.push((c.account.clone(), r.shown.clone(), len, crit));
                    due.push((k.clone(), "fraud_hangup"));
                    break;
                }
                if let Some(w) = r.duration.warn
                    && len > w
                    && !c.warned_duration
                {
                    c.warned_duration = true;
                    warns.push((c.account.clone(), r.shown.clone(), len, w));
                }
            }
        }
        (due, warns, crits)
    }

    /// Duration thresholds passed become events and metrics; a critical one suspends the
    /// account (unless `on_critical = "alert"`).
    fn report_durations(&mut self, warns: Vec<Long>, crits: Vec<Long>, unix: u64) {
        for (account, rule, len, w) in warns {
            self.metrics.warnings.with_label_values(&["duration"]).inc();
            self.event(Event {
                unix,
                account,
                kind: "warning".into(),
                measure: "duration".into(),
                rule: Some(rule),
                value: len.as_secs(),
                threshold: w.as_secs(),
            });
        }
        for (account, rule, len, crit) in crits {
            self.metrics.critical.with_label_values(&["duration"]).inc();
            self.event(Event {
                unix,
                account: account.clone(),
                kind: "critical".into(),
                measure: "duration".into(),
                rule: Some(rule.clone()),
                value: len.as_secs(),
                threshold: crit.as_secs(),
            });
            if self.on_critical != OnCritical::Alert && !self.suspended.contains_key(&account) {
                self.suspend(
                    &account,
                    format!(
                        "duration {}s > {}s (rule {rule})",
                        len.as_secs(),
                        crit.as_secs()
                    ),
                    unix,
                );
            }
        }
    }
}
