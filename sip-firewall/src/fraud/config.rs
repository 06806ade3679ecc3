//! `[fraud]`: destination policy, fraud rules and call limits.

use std::time::Duration;

use serde::Deserialize;

use super::number;
use crate::section::{Invalid, duration, opt_duration};

/// What a critical threshold does to the account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnCritical {
    /// Suspend: further calls get 403 at once; calls in progress go on.
    #[default]
    Block,
    /// Suspend and end the account's calls in progress (BYE both ways).
    BlockAndHangup,
    /// Only warn (log, metric, admin event); nothing is refused for the threshold.
    Alert,
}

/// A warning and a critical value of one measure: going past `warn` is a warning, going
/// past `critical` suspends (a threshold is the most allowed).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Threshold {
    pub warn: Option<u64>,
    pub critical: Option<u64>,
}

/// The same for a call's duration: `{ warn = "30m", critical = "2h" }`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DurationThreshold {
    #[serde(default, deserialize_with = "opt_duration")]
    pub warn: Option<Duration>,
    #[serde(default, deserialize_with = "opt_duration")]
    pub critical: Option<Duration>,
}

/// `[[fraud.rules]]`: thresholds for calls of each account to numbers under `prefix`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Called-number prefix (`00`, `+` and `011` forms are the same once normalised).
    pub prefix: String,
    /// Hours of the day (UTC) the rule applies: `"8-18"` (8:00 to 17:59), `"22-6"` wraps.
    pub hours: Option<String>,
    /// Days (UTC) the rule applies: `["mon", "tue", ...]`.
    pub days: Option<Vec<String>>,
    /// Calls started in the last 60 seconds.
    pub calls_per_minute: Option<Threshold>,
    /// Calls in progress (ringing or answered).
    pub concurrent: Option<Threshold>,
    /// Consecutive calls under this prefix (a call elsewhere starts the count again).
    pub sequential: Option<Threshold>,
    /// Calls since midnight UTC.
    pub total: Option<Threshold>,
    /// Length of one call.
    pub duration: Option<DurationThreshold>,
}

/// `[[fraud.groups]]`: users limited to the destinations under `allow_prefixes`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
    /// `user` or `user@domain`.
    pub users: Vec<String>,
    pub allow_prefixes: Vec<String>,
}

/// `[fraud]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FraudConfig {
    /// Called numbers refused for everyone (normalised: `+`, `00`, `011`).
    pub deny_prefixes: Vec<String>,
    /// International dialling prefixes, written as `+` once normalised.
    pub international_prefixes: Vec<String>,
    pub on_critical: OnCritical,
    /// Longest call; the edge then sends BYE to both parties. "0s": no limit.
    #[serde(deserialize_with = "duration")]
    pub max_call_duration: Duration,
    /// Most calls tracked at once (beyond: new calls refused with 503, counted).
    pub max_calls: usize,
    /// Most calls in progress of one subscriber (trusted peers: only `max_calls`), so that
    /// one account cannot fill the table for everyone. 0: no limit of its own.
    pub max_calls_per_user: usize,
    pub groups: Vec<Group>,
    pub rules: Vec<Rule>,
}

/// Premium-rate and high-fraud ranges refused by default: NANP premium (+1 900, +1 976),
/// Inmarsat (+870), global satellite and international networks (+881, +882, +883),
/// International Premium Rate Service (+979), UK premium (+44 90), German premium (+49 900).
pub const DEFAULT_DENY: [&str; 9] = [
    "+1900", "+1976", "+870", "+881", "+882", "+883", "+979", "+4490", "+49900",
];

impl Default for FraudConfig {
    fn default() -> Self {
        FraudConfig {
            deny_prefixes: DEFAULT_DENY.map(String::from).to_vec(),
            international_prefixes: vec!["00".into(), "011".into()],
            on_critical: OnCritical::Block,
            max_call_duration: Duration::from_secs(4 * 3600),
            max_calls: 10_000,
            max_calls_per_user: 100,
            groups: Vec::new(),
            rules: Vec::new(),
        }
    }
}

impl FraudConfig {
    pub fn validate(&self) -> Result<(), Invalid> {
        let bad = |key, message: String| Err(Invalid { key, message });
        let is_prefix = |p: &str| number::prefix(p, &self.international_prefixes).is_some();
        for p in &self.international_prefixes {
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return bad(
                    "fraud.international_prefixes",
                    format!("{p:?} is not digits"),
                );
            }
        }
        if let Some(p) = self.deny_prefixes.iter().find(|p| !is_prefix(p)) {
            return bad(
                "fraud.deny_prefixes",
                format!("{p:?} is not a number prefix"),
            );
        }
        for g in &self.groups {
            if let Some(p) = g.allow_prefixes.iter().find(|p| !is_prefix(p)) {
                return bad(
                    "fraud.groups",
                    format!("group {}: {p:?} is not a number prefix", g.name),
                );
            }
        }
        if self.max_calls == 0 {
            return bad("fraud.max_calls", "must be at least 1".into());
        }
        for r in &self.rules {
            if !is_prefix(&r.prefix) {
                return bad(
                    "fraud.rules",
                    format!("{:?} is not a number prefix", r.prefix),
                );
            }
            if let Some(h) = &r.hours
                && parse_hours(h).is_none()
            {
                return bad(
                    "fraud.rules",
                    format!("hours {h:?}: write \"8-18\" (UTC, end excluded)"),
                );
            }
            if let Some(d) = r.days.iter().flatten().find(|d| day_index(d).is_none()) {
                return bad(
                    "fraud.rules",
                    format!("day {d:?}: write mon, tue, wed, thu, fri, sat, sun"),
                );
            }
        }
        Ok(())
    }
}

/// `"8-18"`: (8, 18); hours 0 to 24.
pub fn parse_hours(s: &str) -> Option<(u8, u8)> {
    let (a, b) = s.split_once('-')?;
    let a: u8 = a.trim().parse().ok()?;
    let b: u8 = b.trim().parse().ok()?;
    (a <= 24 && b <= 24 && a != b).then_some((a, b))
}

/// 0 = Sunday.
pub fn day_index(d: &str) -> Option<u8> {
    let d = d.to_ascii_lowercase();
    ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
        .iter()
        .position(|x| d.starts_with(x))
        .and_then(|i| u8::try_from(i).ok())
}
