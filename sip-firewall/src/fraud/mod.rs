//! The toll-fraud guard: who may call where, how much and how often. Its own
//! unit, like Kamailio's modules: it owns `[fraud]` ([`config`]), its state (calls in
//! progress, counters per account and rule, suspensions, events) and its metrics. The proxy
//! core calls it at three points, under its own lock:
//!
//! - [`Fraud::check`] when an authenticated subscriber's (or trusted peer's) initial INVITE
//!   is about to be forwarded: allow, or refuse with a code and reason phrase (nothing is
//!   forwarded then). Order: suspended account (403 for every call), denied prefix, the
//!   user's group of allowed prefixes, then the rules' critical thresholds.
//! - In relay mode the operator's registrar checks the credentials, so they are proven only
//!   by its 2xx: [`Fraud::precheck`] at the INVITE refuses what counts nothing (a suspended
//!   account, a destination not allowed), and [`Fraud::book`] at the 2xx books the call as
//!   `check` does, a critical threshold then ending it (the call is up) rather than
//!   refusing it. Non-2xx answers (a 407 to made-up credentials) leave the books alone.
//! - [`Fraud::answered`] on the first 2xx of that INVITE (the dialog, with what is needed
//!   to end it), [`Fraud::failed`] on a final non-2xx.
//! - [`Fraud::in_dialog`] on an in-dialog request of the dialog (CSeq, session refresh);
//!   [`Fraud::bye_answered`] on the 2xx of a relayed BYE of the dialog, which ends the call
//!   (the request alone never does: the other party may refuse it, 481 or 420, and the
//!   call goes on); [`Fraud::bye_unanswered`] when no answer came, which has the edge end
//!   the call itself. [`Fraud::tick`] returns the calls to end (past `max_call_duration`,
//!   a critical call duration, a relayed BYE nobody answered, or an account suspended with
//!   `on_critical = "block-and-hangup"`): the core sends BYE both ways, and the call is
//!   off the books whatever the answers to those.
//!
//! Numbers are compared in one form ([`number`]): `+`, `00` and `011` are the same. A
//! threshold is the most allowed: a call that would go past a critical value is refused
//! (403) and suspends the account, until `sip-firewall fraud unblock USER`; suspensions
//! reach the state database through [`Fraud::take_store_ops`], written by the daemon outside
//! the proxy's lock, and come back at start ([`Fraud::restore`]).
//!
//! Whether it tracks any call and whether writes wait are readable without its lock
//! ([`Fraud::presence`]): the proxy's shards, which share the guard, take that lock only when
//! a message can concern it.

mod accounts;
mod calls;
mod check;
pub mod config;
pub mod metrics;
pub mod number;
pub mod presence;

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    net::IpAddr,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tracing::warn;

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
    /// The tag of `to`: with the call's Call-ID and the caller's From-tag, the dialog's
    /// identity (RFC 3261 12); an in-dialog request with another is not of this dialog.
    pub to_tag: String,
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
    /// How many calls are tracked and whether `store_ops` has any, for readers without
    /// the lock.
    presence: presence::Presence,
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
            presence: presence::Presence::default(),
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
        // A warning leaves the account as it was; any other kind is a measure taken.
        let what = if e.kind == "warning" {
            "fraud warning"
        } else {
            "fraud event"
        };
        warn!(
            account = e.account,
            kind = e.kind,
            measure = e.measure,
            rule = ?e.rule,
            value = e.value,
            threshold = e.threshold,
            "{what}"
        );
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
