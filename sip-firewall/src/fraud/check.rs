//! [`Fraud::check`]: whether a call may be forwarded, in order: a suspended account, the
//! destination (denied prefixes, the user's group), the tables' bounds, then the rules'
//! thresholds; an allowed call is counted and tracked from then on.

use std::time::{Duration, Instant};

use tracing::warn;

use super::{
    Attempt, Call, Counters, Event, Fraud, MAX_ACCOUNTS, MAX_RECENT, Measure, OnCritical, Refusal,
    network, number,
};

/// A threshold a call would pass: the rule's index, what is measured, the value the call
/// brings it to, and the threshold.
type Crossing = (usize, Measure, u64, u64);

impl Fraud {
    /// Whether a call may be forwarded; when it may, it is tracked from now on.
    pub fn check(&mut self, a: &Attempt<'_>, now: Instant, unix: u64) -> Result<(), Refusal> {
        self.precheck(a.account, a.ruri, a.foreign)?;
        self.check_bounds(a, unix)?;
        // The rules this call falls under, and the values it would bring them to.
        let called = self.called(a);
        let matching = self.matching(called.as_deref(), unix);
        let (warnings, critical) = self.crossings(a.account, &matching, now, unix);
        self.report(a.account, warnings, critical, unix)?;
        self.admit(a, matching, called.is_some(), now);
        Ok(())
    }

    /// The number a call toward a foreign domain calls (None toward our own).
    fn called(&self, a: &Attempt<'_>) -> Option<String> {
        if a.foreign {
            number::called(a.ruri, &self.intl)
        } else {
            None
        }
    }

    /// What may be refused of a call before its credentials are proven (the operator's
    /// registrar checks them, in relay mode): a suspended account, a destination its rules
    /// do not allow. Nothing is counted: an attempt with made-up credentials must not bring
    /// anyone's account nearer a threshold.
    pub fn precheck(&self, account: &str, ruri: &str, foreign: bool) -> Result<(), Refusal> {
        if self.suspended.contains_key(account) {
            return Err(self.refuse("suspended", 403, "Account Suspended"));
        }
        if foreign {
            let called = number::called(ruri, &self.intl);
            self.check_destination(account, called.as_deref())?;
        }
        Ok(())
    }

    /// A call whose credentials were proven by its answer (the registrar's 2xx, in relay
    /// mode) is booked as [`Fraud::check`] books an allowed one. It is up already, so a
    /// bound or critical threshold it passes cannot refuse it: Err says the call must be
    /// ended (the account suspended as for a refused call, unless `on_critical = "alert"`).
    /// Tracked (its key then names a call the next [`Fraud::tick`] ends once answered)
    /// unless a bound refused it.
    pub fn book(&mut self, a: &Attempt<'_>, now: Instant, unix: u64) -> Result<(), Refusal> {
        self.check_bounds(a, unix)?;
        let called = self.called(a);
        let matching = self.matching(called.as_deref(), unix);
        let (warnings, critical) = self.crossings(a.account, &matching, now, unix);
        let verdict = self.report(a.account, warnings, critical, unix);
        self.admit(a, matching, called.is_some(), now);
        if verdict.is_err()
            && let Some(c) = self.calls.get_mut(&a.key)
        {
            c.hangup = Some("fraud_hangup");
        }
        verdict
    }

    /// The rules a call to `called` falls under now.
    fn matching(&self, called: Option<&str>, unix: u64) -> Vec<usize> {
        match called {
            Some(n) => self
                .rules
                .iter()
                .enumerate()
                .filter(|(_, r)| n.starts_with(r.prefix.as_str()) && r.applies(unix))
                .map(|(i, _)| i)
                .collect(),
            None => Vec::new(),
        }
    }

    /// A foreign destination: denied prefixes for everyone, then the user's group.
    fn check_destination(&self, account: &str, called: Option<&str>) -> Result<(), Refusal> {
        if let Some(n) = called
            && self.deny.iter().any(|p| n.starts_with(p.as_str()))
        {
            return Err(self.refuse("denied_prefix", 403, "Destination Denied"));
        }
        if let Some((_, allowed)) = self.group_of(account)
            && !called.is_some_and(|n| allowed.iter().any(|p| n.starts_with(p.as_str())))
        {
            return Err(self.refuse("not_allowed", 403, "Destination Not Allowed"));
        }
        Ok(())
    }

    /// The bounds: one call per key, the call table, the account's calls, the account table
    /// (each over its bound is refused, counted and logged at a bounded rate).
    fn check_bounds(&mut self, a: &Attempt<'_>, unix: u64) -> Result<(), Refusal> {
        if self.calls.contains_key(&a.key) {
            return Err(self.refuse("duplicate", 403, "Call Already In Progress"));
        }
        if self.calls.len() >= self.max_calls {
            let max_calls = self.max_calls;
            return Err(self.too_many(unix, "table_full", || {
                warn!(
                    max_calls,
                    account = a.account,
                    "fraud guard: call table full, call refused (503)"
                );
            }));
        }
        if self.max_calls_per_user > 0
            && !a.account.starts_with("peer:")
            && self
                .accounts
                .get(a.account)
                .is_some_and(|x| x.active >= self.max_calls_per_user as u64)
        {
            let max = self.max_calls_per_user;
            return Err(self.too_many(unix, "user_limit", || {
                warn!(
                    account = a.account,
                    max, "fraud guard: the account's call limit is reached, call refused (503)"
                );
            }));
        }
        if !self.accounts.contains_key(a.account) && self.accounts.len() >= MAX_ACCOUNTS {
            self.expire_idle_accounts();
            if self.accounts.len() >= MAX_ACCOUNTS {
                return Err(self.too_many(unix, "table_full", || {
                    warn!(
                        account = a.account,
                        "fraud guard: account table full, call refused (503)"
                    );
                }));
            }
        }
        Ok(())
    }

    /// A call refused at a bound (503, counted as `what`), logged by `log` within the log
    /// budget.
    fn too_many(&mut self, unix: u64, what: &str, log: impl FnOnce()) -> Refusal {
        if self.may_log(unix) {
            log();
        }
        self.refuse(what, 503, "Too Many Calls")
    }

    /// The warning thresholds the call would pass, and the first critical one.
    fn crossings(
        &mut self,
        account: &str,
        matching: &[usize],
        now: Instant,
        unix: u64,
    ) -> (Vec<Crossing>, Option<Crossing>) {
        let today = unix / 86_400;
        let nrules = self.rules.len();
        let acct = self.accounts.entry(account.to_string()).or_default();
        acct.rules.resize_with(nrules, Counters::default);
        let mut warnings = Vec::new();
        let mut critical = None;
        for &i in matching {
            let (Some(rule), Some(c)) = (self.rules.get(i), acct.rules.get_mut(i)) else {
                continue;
            };
            while c
                .recent
                .front()
                .is_some_and(|t| now.saturating_duration_since(*t) >= Duration::from_secs(60))
            {
                c.recent.pop_front();
            }
            if c.day != today {
                c.day = today;
                c.total = 0;
            }
            for (m, th) in rule.measures {
                let value = 1 + match m {
                    Measure::CallsPerMinute => c.recent.len() as u64,
                    Measure::Concurrent => c.active,
                    Measure::Sequential => c.sequential,
                    Measure::Total => c.total,
                };
                if let Some(crit) = th.critical
                    && value > crit
                    && critical.is_none()
                {
                    critical = Some((i, m, value, crit));
                } else if let Some(w) = th.warn
                    && value > w
                {
                    warnings.push((i, m, value, w));
                }
            }
        }
        (warnings, critical)
    }

    /// Warnings and the critical threshold become events and metrics; a critical one
    /// suspends the account and refuses the call (unless `on_critical = "alert"`).
    fn report(
        &mut self,
        account: &str,
        warnings: Vec<Crossing>,
        critical: Option<Crossing>,
        unix: u64,
    ) -> Result<(), Refusal> {
        for crossing in warnings {
            self.metrics
                .warnings
                .with_label_values(&[crossing.1.name()])
                .inc();
            self.crossed(account, "warning", crossing, unix);
        }
        if let Some(crossing) = critical {
            let (_, m, value, threshold) = crossing;
            self.metrics.critical.with_label_values(&[m.name()]).inc();
            let rule = self.crossed(account, "critical", crossing, unix);
            if self.on_critical != OnCritical::Alert {
                self.suspend(
                    account,
                    format!(
                        "{} {value} > {threshold} (rule {})",
                        m.name(),
                        rule.unwrap_or_default()
                    ),
                    unix,
                );
                return Err(self.refuse("critical", 403, "Fraud Limit Exceeded"));
            }
        }
        Ok(())
    }

    /// Record that `account` crossed a threshold (`kind`: warning or critical): the rule's
    /// text as shown, for the caller.
    fn crossed(
        &mut self,
        account: &str,
        kind: &str,
        (i, m, value, threshold): Crossing,
        unix: u64,
    ) -> Option<String> {
        let rule = self.rules.get(i).map(|r| r.shown.clone());
        self.event(Event {
            unix,
            account: account.to_string(),
            kind: kind.into(),
            measure: m.name().into(),
            rule: rule.clone(),
            value,
            threshold,
        });
        rule
    }

    /// An allowed call: counted under its rules (a numbered call elsewhere ends a sequence
    /// under the others) and tracked.
    fn admit(&mut self, a: &Attempt<'_>, matching: Vec<usize>, numbered: bool, now: Instant) {
        let acct = self.accounts.entry(a.account.to_string()).or_default();
        for (i, c) in acct.rules.iter_mut().enumerate() {
            if matching.contains(&i) {
                c.recent.push_back(now);
                if c.recent.len() > MAX_RECENT {
                    c.recent.pop_front();
                }
                c.sequential += 1;
                c.total += 1;
                c.active += 1;
            } else if numbered {
                c.sequential = 0;
            }
        }
        acct.active += 1;
        if let Some(p) = a.peer {
            *self.peers.entry(p).or_insert(0) += 1;
        }
        self.calls.insert(
            a.key.clone(),
            Call {
                account: a.account.to_string(),
                txn: a.txn.clone(),
                peer: a.peer,
                rules: matching,
                net: network(a.source),
                authorised: now,
                from: a.from.clone(),
                contact: a.contact.clone(),
                cseq: a.cseq,
                answered: None,
                refreshed: None,
                dialog: None,
                warned_duration: false,
                hangup: None,
            },
        );
        self.presence.set_calls(self.calls.len());
        self.gauges(Some(a.account), a.peer);
    }

    /// The groups entry of an account (`user@domain` or `user`).
    fn group_of(&self, account: &str) -> Option<&(String, Vec<String>)> {
        let a = account.to_ascii_lowercase();
        self.groups
            .get(&a)
            .or_else(|| a.split_once('@').and_then(|(u, _)| self.groups.get(u)))
    }
}
