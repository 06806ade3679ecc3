//! The toll-fraud guard: who may call where, how much and how often (issue 12). Its own
//! unit, like Kamailio's modules: it owns `[fraud]` ([`config`]), its state (calls in
//! progress, counters per account and rule, suspensions, events) and its metrics. The proxy
//! core calls it at three points, under its own lock:
//!
//! - [`Fraud::check`] when an authenticated subscriber's (or trusted peer's) initial INVITE
//!   is about to be forwarded: allow, or refuse with a code and reason phrase (nothing is
//!   forwarded then). Order: suspended account (403 for every call), denied prefix, the
//!   user's group of allowed prefixes, then the rules' critical thresholds.
//! - [`Fraud::answered`] on the first 2xx of that INVITE (the dialog, with what is needed
//!   to end it), [`Fraud::failed`] on a final non-2xx.
//! - [`Fraud::ended`] on BYE; [`Fraud::tick`] returns the calls to end (past
//!   `max_call_duration`, a critical call duration, or an account suspended with
//!   `on_critical = "block-and-hangup"`): the core sends BYE both ways.
//!
//! Numbers are compared in one form ([`number`]): `+`, `00` and `011` are the same. A
//! threshold is the most allowed: a call that would go past a critical value is refused
//! (403) and suspends the account, until `sip-firewall fraud unblock USER`; suspensions
//! reach the state database through [`Fraud::take_store_ops`], written by the daemon outside
//! the proxy's lock, and come back at start ([`Fraud::restore`]).

pub mod cli;
pub mod config;
pub mod metrics;
pub mod number;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::IpAddr,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::seams::Destination;
pub use config::{FraudConfig, OnCritical};
pub use metrics::FraudMetrics;

/// Events kept for `sip-firewall fraud events`.
const MAX_EVENTS: usize = 256;
/// Accounts with counters (subscribers and trusted peers; beyond: calls refused, counted).
const MAX_ACCOUNTS: usize = 65_536;
/// Networks remembered per account for the unusual-source check.
const MAX_NETWORKS: usize = 16;
/// A network unused this long is new again.
const NETWORK_MEMORY: u64 = 30 * 86_400;
/// A call never answered nor failed after this is forgotten (Timer C is 3 minutes; this
/// only catches a transaction that ended without a final response through us).
const PENDING_LIMIT: Duration = Duration::from_secs(30 * 60);
/// Calls remembered per minute window of one account and rule.
const MAX_RECENT: usize = 10_000;
/// Log lines of warnings and refusals at a bound per second (beyond: counted only, in the
/// metrics and the event list; a pumping account must not flood the log).
const LOGS_PER_SECOND: u32 = 20;

/// A call's identity: Call-ID and the caller's From-tag.
pub type CallKey = (String, String);

/// Why a call is refused: the status code and reason phrase of the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub code: u16,
    pub phrase: &'static str,
}

/// A new call as the core sees it.
pub struct Attempt<'a> {
    /// `user@domain`, or `peer:IP` for a trusted peer.
    pub account: &'a str,
    /// The trunk peer the call comes from or goes to.
    pub peer: Option<IpAddr>,
    pub ruri: &'a str,
    /// Toward a foreign domain (the trunk): the destination policy and rules apply.
    pub foreign: bool,
    pub source: IpAddr,
    pub key: CallKey,
    /// The server transaction deciding it: only its own final response ends the attempt
    /// (a second INVITE with the same Call-ID and tag, refused, must not untrack the first).
    pub txn: String,
    /// The caller's side of the dialog, to end it later.
    pub from: String,
    pub contact: Option<String>,
    pub cseq: u32,
}

/// Both sides of an answered call: what the core needs to send BYE to each.
#[derive(Clone, Debug)]
pub struct DialogInfo {
    pub caller: Destination,
    pub callee: Destination,
    pub call_id: String,
    /// The caller's From (with its tag) and the callee's To (with its tag).
    pub from: String,
    pub to: String,
    pub caller_contact: String,
    pub callee_contact: String,
    /// Route entries beyond us toward each side (from the 2xx's Record-Route).
    pub routes_to_caller: Vec<String>,
    pub routes_to_callee: Vec<String>,
    /// Highest CSeq seen from each side.
    pub caller_cseq: u32,
    pub callee_cseq: Option<u32>,
    /// The session interval of the 2xx (RFC 4028 Session-Expires): without a refresh
    /// (re-INVITE or UPDATE) within it, the session is over.
    pub session_expires: Option<Duration>,
}

struct Call {
    account: String,
    txn: String,
    peer: Option<IpAddr>,
    rules: Vec<usize>,
    net: IpNet,
    authorised: Instant,
    from: String,
    contact: Option<String>,
    cseq: u32,
    answered: Option<Instant>,
    /// The last session refresh (the 2xx, then re-INVITE or UPDATE).
    refreshed: Option<Instant>,
    dialog: Option<DialogInfo>,
    warned_duration: bool,
    hangup: Option<&'static str>,
}

#[derive(Default)]
struct Counters {
    recent: VecDeque<Instant>,
    sequential: u64,
    day: u64,
    total: u64,
    active: u64,
}

#[derive(Default)]
struct Account {
    rules: Vec<Counters>,
    active: u64,
    networks: Vec<(IpNet, u64)>,
}

/// A suspended account, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    pub account: String,
    pub reason: String,
    pub since_unix: u64,
}

/// A change the state database must see.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreOp {
    Suspend(Suspension),
    Unsuspend(String),
}

/// A warning, critical threshold or unusual source (`fraud events`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub unix: u64,
    pub account: String,
    /// warning, critical, unusual_source, unblocked.
    pub kind: String,
    pub measure: String,
    pub rule: Option<String>,
    pub value: u64,
    pub threshold: u64,
}

/// `fraud status`: counters per account and rule.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Status {
    pub calls_active: u64,
    pub calls_by_peer: Vec<(String, u64)>,
    pub accounts: Vec<AccountStatus>,
    pub suspended: Vec<Suspension>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AccountStatus {
    pub account: String,
    pub calls_active: u64,
    pub suspended: bool,
    pub rules: Vec<RuleStatus>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RuleStatus {
    pub prefix: String,
    pub calls_last_minute: u64,
    pub concurrent: u64,
    pub sequential: u64,
    pub total_today: u64,
}

struct Rule {
    prefix: String,
    shown: String,
    hours: Option<(u8, u8)>,
    days: Option<u8>,
    measures: [(Measure, config::Threshold); 4],
    duration: config::DurationThreshold,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Measure {
    CallsPerMinute,
    Concurrent,
    Sequential,
    Total,
}

impl Measure {
    fn name(self) -> &'static str {
        match self {
            Measure::CallsPerMinute => "calls_per_minute",
            Measure::Concurrent => "concurrent",
            Measure::Sequential => "sequential",
            Measure::Total => "total",
        }
    }
}

impl Rule {
    fn applies(&self, unix: u64) -> bool {
        let hour = u8::try_from((unix % 86_400) / 3600).unwrap_or(0);
        // 1970-01-01 was a Thursday (4; 0 = Sunday).
        let day = u8::try_from((unix / 86_400 + 4) % 7).unwrap_or(0);
        let in_hours = self.hours.is_none_or(|(a, b)| {
            if a < b {
                (a..b).contains(&hour)
            } else {
                hour >= a || hour < b
            }
        });
        in_hours && self.days.is_none_or(|mask| mask & (1 << day) != 0)
    }
}

/// The guard.
pub struct Fraud {
    intl: Vec<String>,
    deny: Vec<String>,
    /// `user` or `user@domain` to (group name, allowed prefixes).
    groups: HashMap<String, (String, Vec<String>)>,
    rules: Vec<Rule>,
    on_critical: OnCritical,
    max_call_duration: Option<Duration>,
    max_calls: usize,
    max_calls_per_user: usize,
    accounts: HashMap<String, Account>,
    calls: HashMap<CallKey, Call>,
    suspended: BTreeMap<String, Suspension>,
    events: VecDeque<Event>,
    store_ops: Vec<StoreOp>,
    peers: HashMap<IpAddr, u64>,
    metrics: FraudMetrics,
    /// The second of the last log line, and how many lines in it.
    log_budget: (u64, u32),
}

fn network(ip: IpAddr) -> IpNet {
    let ip = ip.to_canonical();
    let len = if ip.is_ipv4() { 16 } else { 48 };
    IpNet::new(ip, len).map_or_else(|_| IpNet::from(ip), |n| n.trunc())
}

impl Fraud {
    /// From a validated `[fraud]` section.
    pub fn new(cfg: &FraudConfig, metrics: FraudMetrics) -> Fraud {
        let intl = cfg.international_prefixes.clone();
        let norm = |p: &str| number::prefix(p, &intl).unwrap_or_else(|| p.to_string());
        let mut groups = HashMap::new();
        for g in &cfg.groups {
            let allowed: Vec<String> = g.allow_prefixes.iter().map(|p| norm(p)).collect();
            for u in &g.users {
                groups.insert(u.to_ascii_lowercase(), (g.name.clone(), allowed.clone()));
            }
        }
        let rules = cfg
            .rules
            .iter()
            .map(|r| Rule {
                prefix: norm(&r.prefix),
                shown: r.prefix.clone(),
                hours: r.hours.as_deref().and_then(config::parse_hours),
                days: r.days.as_ref().map(|d| {
                    d.iter()
                        .filter_map(|d| config::day_index(d))
                        .fold(0u8, |m, i| m | (1 << i))
                }),
                measures: [
                    (
                        Measure::CallsPerMinute,
                        r.calls_per_minute.unwrap_or_default(),
                    ),
                    (Measure::Concurrent, r.concurrent.unwrap_or_default()),
                    (Measure::Sequential, r.sequential.unwrap_or_default()),
                    (Measure::Total, r.total.unwrap_or_default()),
                ],
                duration: r.duration.unwrap_or_default(),
            })
            .collect();
        Fraud {
            deny: cfg.deny_prefixes.iter().map(|p| norm(p)).collect(),
            intl,
            groups,
            rules,
            on_critical: cfg.on_critical,
            max_call_duration: (!cfg.max_call_duration.is_zero()).then_some(cfg.max_call_duration),
            max_calls: cfg.max_calls,
            max_calls_per_user: cfg.max_calls_per_user,
            accounts: HashMap::new(),
            calls: HashMap::new(),
            suspended: BTreeMap::new(),
            events: VecDeque::new(),
            store_ops: Vec::new(),
            peers: HashMap::new(),
            metrics,
            log_budget: (0, 0),
        }
    }

    fn refuse(&self, reason: &str, code: u16, phrase: &'static str) -> Refusal {
        self.metrics.refused.with_label_values(&[reason]).inc();
        Refusal { code, phrase }
    }

    /// Whether one more log line fits in this second's budget.
    fn may_log(&mut self, unix: u64) -> bool {
        if self.log_budget.0 != unix {
            self.log_budget = (unix, 0);
        }
        self.log_budget.1 += 1;
        self.log_budget.1 <= LOGS_PER_SECOND
    }

    fn event(&mut self, e: Event) {
        // Over the budget: counted in the metrics by the caller, kept in the event list.
        if self.may_log(e.unix) {
            self.log_event(&e);
        }
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    fn log_event(&self, e: &Event) {
        match e.kind.as_str() {
            "warning" => warn!(
                account = e.account,
                measure = e.measure,
                rule = ?e.rule,
                value = e.value,
                threshold = e.threshold,
                "fraud warning"
            ),
            _ => warn!(
                account = e.account,
                kind = e.kind,
                measure = e.measure,
                rule = ?e.rule,
                value = e.value,
                threshold = e.threshold,
                "fraud event"
            ),
        }
    }

    /// The groups entry of an account (`user@domain` or `user`).
    fn group_of(&self, account: &str) -> Option<&(String, Vec<String>)> {
        let a = account.to_ascii_lowercase();
        self.groups
            .get(&a)
            .or_else(|| a.split_once('@').and_then(|(u, _)| self.groups.get(u)))
    }

    /// Whether a call may be forwarded; when it may, it is tracked from now on.
    pub fn check(&mut self, a: &Attempt<'_>, now: Instant, unix: u64) -> Result<(), Refusal> {
        if self.suspended.contains_key(a.account) {
            return Err(self.refuse("suspended", 403, "Account Suspended"));
        }
        let called = if a.foreign {
            number::called(a.ruri, &self.intl)
        } else {
            None
        };
        if a.foreign {
            if let Some(n) = &called
                && self.deny.iter().any(|p| n.starts_with(p.as_str()))
            {
                return Err(self.refuse("denied_prefix", 403, "Destination Denied"));
            }
            if let Some((_, allowed)) = self.group_of(a.account)
                && !called
                    .as_ref()
                    .is_some_and(|n| allowed.iter().any(|p| n.starts_with(p.as_str())))
            {
                return Err(self.refuse("not_allowed", 403, "Destination Not Allowed"));
            }
        }
        if self.calls.contains_key(&a.key) {
            return Err(self.refuse("duplicate", 403, "Call Already In Progress"));
        }
        if self.calls.len() >= self.max_calls {
            if self.may_log(unix) {
                warn!(
                    max_calls = self.max_calls,
                    account = a.account,
                    "fraud guard: call table full, call refused (503)"
                );
            }
            return Err(self.refuse("table_full", 503, "Too Many Calls"));
        }
        if self.max_calls_per_user > 0
            && !a.account.starts_with("peer:")
            && self
                .accounts
                .get(a.account)
                .is_some_and(|x| x.active >= self.max_calls_per_user as u64)
        {
            if self.may_log(unix) {
                warn!(
                    account = a.account,
                    max = self.max_calls_per_user,
                    "fraud guard: the account's call limit is reached, call refused (503)"
                );
            }
            return Err(self.refuse("user_limit", 503, "Too Many Calls"));
        }
        if !self.accounts.contains_key(a.account) && self.accounts.len() >= MAX_ACCOUNTS {
            self.expire_idle_accounts();
            if self.accounts.len() >= MAX_ACCOUNTS {
                if self.may_log(unix) {
                    warn!(
                        account = a.account,
                        "fraud guard: account table full, call refused (503)"
                    );
                }
                return Err(self.refuse("table_full", 503, "Too Many Calls"));
            }
        }
        // The rules this call falls under, and the values it would bring them to.
        let matching: Vec<usize> = match &called {
            Some(n) => self
                .rules
                .iter()
                .enumerate()
                .filter(|(_, r)| n.starts_with(r.prefix.as_str()) && r.applies(unix))
                .map(|(i, _)| i)
                .collect(),
            None => Vec::new(),
        };
        let today = unix / 86_400;
        let nrules = self.rules.len();
        let acct = self.accounts.entry(a.account.to_string()).or_default();
        acct.rules.resize_with(nrules, Counters::default);
        let mut warnings = Vec::new();
        let mut critical = None;
        for &i in &matching {
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
        for (i, m, value, threshold) in warnings {
            self.metrics.warnings.with_label_values(&[m.name()]).inc();
            let rule = self.rules.get(i).map(|r| r.shown.clone());
            self.event(Event {
                unix,
                account: a.account.to_string(),
                kind: "warning".into(),
                measure: m.name().into(),
                rule,
                value,
                threshold,
            });
        }
        if let Some((i, m, value, threshold)) = critical {
            self.metrics.critical.with_label_values(&[m.name()]).inc();
            let rule = self.rules.get(i).map(|r| r.shown.clone());
            self.event(Event {
                unix,
                account: a.account.to_string(),
                kind: "critical".into(),
                measure: m.name().into(),
                rule: rule.clone(),
                value,
                threshold,
            });
            if self.on_critical != OnCritical::Alert {
                self.suspend(
                    a.account,
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
        // Allowed: count it.
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
            } else if called.is_some() {
                // A numbered call elsewhere ends a sequence under this prefix.
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
        self.gauges(Some(a.account), a.peer);
        Ok(())
    }

    fn expire_idle_accounts(&mut self) {
        let suspended = &self.suspended;
        self.accounts
            .retain(|k, a| a.active > 0 || suspended.contains_key(k) || !a.networks.is_empty());
    }

    fn suspend(&mut self, account: &str, reason: String, unix: u64) {
        let s = Suspension {
            account: account.to_string(),
            reason,
            since_unix: unix,
        };
        warn!(
            account,
            reason = s.reason,
            "account suspended by the fraud guard"
        );
        self.store_ops.push(StoreOp::Suspend(s.clone()));
        self.suspended.insert(account.to_string(), s);
        self.metrics.suspended.set(self.suspended.len() as i64);
        if self.on_critical == OnCritical::BlockAndHangup {
            for c in self.calls.values_mut() {
                if c.account == account && c.dialog.is_some() {
                    c.hangup = Some("fraud_hangup");
                }
            }
        }
    }

    fn gauges(&self, account: Option<&str>, peer: Option<IpAddr>) {
        self.metrics.calls_active.set(self.calls.len() as i64);
        if let Some(a) = account {
            let n = self.accounts.get(a).map_or(0, |x| x.active);
            if n == 0 {
                let _ = self.metrics.calls_by_user.remove_label_values(&[a]);
            } else {
                self.metrics
                    .calls_by_user
                    .with_label_values(&[a])
                    .set(n as i64);
            }
        }
        if let Some(p) = peer {
            let label = p.to_string();
            match self.peers.get(&p) {
                Some(&n) if n > 0 => self
                    .metrics
                    .calls_by_peer
                    .with_label_values(&[&label])
                    .set(n as i64),
                _ => {
                    let _ = self.metrics.calls_by_peer.remove_label_values(&[&label]);
                }
            }
        }
    }

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

    fn remove(&mut self, key: &CallKey, ended: Option<(&str, Instant)>) -> Option<DialogInfo> {
        let c = self.calls.remove(key)?;
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

    /// An in-dialog request of a tracked call went through: its CSeq is remembered (our BYE
    /// must be higher); a re-INVITE or UPDATE refreshes the session (RFC 4028); a BYE ends
    /// the call.
    pub fn in_dialog(
        &mut self,
        call_id: &str,
        tags: (&str, &str),
        cseq: u32,
        method: &str,
        now: Instant,
    ) {
        let bye = method == "BYE";
        // From the caller: its From-tag is the key; from the callee: its To-tag is.
        let (key, from_caller) = {
            let k1 = (call_id.to_string(), tags.0.to_string());
            if self.calls.contains_key(&k1) {
                (k1, true)
            } else {
                ((call_id.to_string(), tags.1.to_string()), false)
            }
        };
        let Some(c) = self.calls.get_mut(&key) else {
            return;
        };
        if matches!(method, "INVITE" | "UPDATE") && c.answered.is_some() {
            c.refreshed = Some(now);
        }
        if let Some(d) = c.dialog.as_mut() {
            if from_caller {
                d.caller_cseq = d.caller_cseq.max(cseq);
            } else {
                d.callee_cseq = Some(d.callee_cseq.unwrap_or(0).max(cseq));
            }
        }
        if bye {
            let answered = c.answered.is_some();
            self.remove(&key, answered.then_some(("bye", now)));
        }
    }

    /// Calls to end now (the core sends BYE both ways), and the housekeeping of forgotten
    /// attempts.
    pub fn tick(&mut self, now: Instant, unix: u64) -> Vec<(DialogInfo, &'static str)> {
        let mut due: Vec<(CallKey, &'static str)> = Vec::new();
        let mut warns = Vec::new();
        let mut crits = Vec::new();
        for (k, c) in &mut self.calls {
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

    /// A successful digest login of `account` from `ip`: a network (/16, /48) not seen in
    /// the last 30 days while the account has calls from another is a warning.
    pub fn login(&mut self, account: &str, ip: IpAddr, unix: u64) {
        let net = network(ip);
        if !self.accounts.contains_key(account) && self.accounts.len() >= MAX_ACCOUNTS {
            self.expire_idle_accounts();
            if self.accounts.len() >= MAX_ACCOUNTS {
                return;
            }
        }
        let acct = self.accounts.entry(account.to_string()).or_default();
        acct.networks
            .retain(|(_, seen)| unix.saturating_sub(*seen) < NETWORK_MEMORY);
        let known = acct.networks.iter().any(|(n, _)| *n == net);
        if known {
            for (n, seen) in &mut acct.networks {
                if *n == net {
                    *seen = unix;
                }
            }
            return;
        }
        if acct.networks.len() >= MAX_NETWORKS {
            acct.networks
                .sort_by_key(|(_, seen)| std::cmp::Reverse(*seen));
            acct.networks.truncate(MAX_NETWORKS - 1);
        }
        acct.networks.push((net, unix));
        let elsewhere = self
            .calls
            .values()
            .any(|c| c.account == account && c.net != net);
        if elsewhere {
            self.metrics
                .warnings
                .with_label_values(&["unusual_source"])
                .inc();
            self.event(Event {
                unix,
                account: account.to_string(),
                kind: "unusual_source".into(),
                measure: net.to_string(),
                rule: None,
                value: 0,
                threshold: 0,
            });
        }
    }

    /// Suspensions read from the state database at start.
    pub fn restore(&mut self, list: Vec<Suspension>) {
        for s in list {
            self.suspended.insert(s.account.clone(), s);
        }
        self.metrics.suspended.set(self.suspended.len() as i64);
    }

    /// Lift a suspension; whether there was one. `user` is `user@domain` or `user` (every
    /// domain).
    pub fn unblock(&mut self, user: &str, unix: u64) -> Vec<String> {
        let lifted: Vec<String> = self
            .suspended
            .keys()
            .filter(|k| k.as_str() == user || k.split_once('@').is_some_and(|(u, _)| u == user))
            .cloned()
            .collect();
        for k in &lifted {
            // The admin command removes it from the state database itself (stored first:
            // it holds the database while asking the proxy).
            self.suspended.remove(k);
            // The counters start again: the operator judged the account.
            if let Some(a) = self.accounts.get_mut(k) {
                for c in &mut a.rules {
                    c.recent.clear();
                    c.sequential = 0;
                    c.total = 0;
                }
            }
            info!(account = k, "account unblocked by the operator");
            self.event(Event {
                unix,
                account: k.clone(),
                kind: "unblocked".into(),
                measure: String::new(),
                rule: None,
                value: 0,
                threshold: 0,
            });
        }
        self.metrics.suspended.set(self.suspended.len() as i64);
        lifted
    }

    /// What the state database must record since the last call.
    pub fn take_store_ops(&mut self) -> Vec<StoreOp> {
        std::mem::take(&mut self.store_ops)
    }

    /// The last events, oldest first.
    pub fn events(&self) -> Vec<Event> {
        self.events.iter().cloned().collect()
    }

    /// Calls in progress (ringing or answered).
    pub fn calls_active(&self) -> usize {
        self.calls.len()
    }

    /// Counters per account and rule (one account when `user` is given).
    pub fn status(&self, user: Option<&str>, now: Instant) -> Status {
        let wanted =
            |k: &str| user.is_none_or(|u| k == u || k.split_once('@').is_some_and(|(x, _)| x == u));
        let mut accounts: Vec<AccountStatus> = self
            .accounts
            .iter()
            .filter(|(k, _)| wanted(k))
            .map(|(k, a)| AccountStatus {
                account: k.clone(),
                calls_active: a.active,
                suspended: self.suspended.contains_key(k),
                rules: self
                    .rules
                    .iter()
                    .zip(&a.rules)
                    .map(|(r, c)| RuleStatus {
                        prefix: r.shown.clone(),
                        calls_last_minute: c
                            .recent
                            .iter()
                            .filter(|t| {
                                now.saturating_duration_since(**t) < Duration::from_secs(60)
                            })
                            .count() as u64,
                        concurrent: c.active,
                        sequential: c.sequential,
                        total_today: c.total,
                    })
                    .collect(),
            })
            .collect();
        for (k, _) in self.suspended.iter().filter(|(k, _)| wanted(k)) {
            if !accounts.iter().any(|a| &a.account == k) {
                accounts.push(AccountStatus {
                    account: k.clone(),
                    calls_active: 0,
                    suspended: true,
                    rules: Vec::new(),
                });
            }
        }
        accounts.sort_by(|a, b| a.account.cmp(&b.account));
        let mut peers: Vec<(String, u64)> = self
            .peers
            .iter()
            .map(|(p, n)| (p.to_string(), *n))
            .collect();
        peers.sort();
        Status {
            calls_active: self.calls.len() as u64,
            calls_by_peer: peers,
            accounts,
            suspended: self
                .suspended
                .values()
                .filter(|s| wanted(&s.account))
                .cloned()
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
