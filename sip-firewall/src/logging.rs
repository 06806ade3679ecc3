//! Log set-up and security events.
//!
//! Text logs are written for journald as much as for a terminal: no colour when stderr is not
//! a terminal, and no timestamp when running under systemd (`JOURNAL_STREAM` set: the journal
//! stamps every line itself). `json` writes one object a line for log shippers.
//!
//! [`security_event`] is the one way a ban, an authentication failure, a scanner or a refused
//! relay is logged: one structured line with kind, source, reason and count, rate-limited per
//! kind and source so an attacker who can trigger events cannot flood the log with them.
//!
//! [`RateLimit`] is the one rate limit of log lines: the security events, caught panics
//! (`guard`), the cluster's warnings, refused learned bans and every other line that whoever
//! can repeat its cause (a sender, Redis, a full queue) could otherwise repeat into the log.

use std::{
    collections::BTreeMap,
    io::IsTerminal as _,
    net::IpAddr,
    sync::{Mutex, OnceLock, PoisonError},
    time::{Duration, Instant},
};

use serde::Deserialize;

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (journald-friendly).
    #[default]
    Text,
    /// One JSON object a line.
    Json,
}

/// `[log]` of the config.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// `text` or `json`; `--log-format` overrides it.
    pub format: LogFormat,
}

/// Install the global subscriber: `RUST_LOG` filters (default `info`), lines go to stderr.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let result = match format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        LogFormat::Text => {
            let ansi = std::io::stderr().is_terminal();
            let builder = builder.with_ansi(ansi);
            if under_journal() {
                builder.without_time().try_init()
            } else {
                builder.try_init()
            }
        }
    };
    // A subscriber already installed (tests) is fine.
    drop(result);
}

/// Whether stderr goes to the systemd journal (which stamps lines itself).
fn under_journal() -> bool {
    std::env::var_os("JOURNAL_STREAM").is_some()
}

/// At most one log line per key per interval, for at most `max_keys` keys at once.
///
/// A key's first event in its interval is to be logged ([`Verdict::Log`], with how many events
/// of the same key were suppressed since its last line), the others are [`Verdict::Quiet`].
/// Memory is bounded: while `max_keys` keys are within their interval, an event of a new key
/// is [`Verdict::Full`] (nothing is remembered of it; the caller counts it, or logs one line
/// for all of them). Keys whose interval has passed are swept out when the table is full, at
/// most once a second, so a flood of new keys does not make every event walk the table.
/// `new` is `const`: a limiter can be a `static` behind a `Mutex`.
///
/// ```
/// use std::time::{Duration, Instant};
/// use sip_firewall::logging::{RateLimit, Verdict};
///
/// let mut limit = RateLimit::new(Duration::from_secs(10), 2);
/// let t0 = Instant::now();
/// assert_eq!(limit.decide("a", t0), Verdict::Log { suppressed: 0 });
/// assert_eq!(limit.decide("a", t0), Verdict::Quiet);
/// assert_eq!(limit.decide("b", t0), Verdict::Log { suppressed: 0 });
/// assert_eq!(limit.decide("c", t0), Verdict::Full, "two keys at most");
/// let later = t0 + Duration::from_secs(10);
/// assert_eq!(limit.decide("a", later), Verdict::Log { suppressed: 1 });
/// assert_eq!(limit.decide("c", later), Verdict::Log { suppressed: 0 }, "b swept out");
/// ```
pub struct RateLimit<K> {
    every: Duration,
    max_keys: usize,
    /// Key -> (start of its interval, events suppressed in it).
    seen: BTreeMap<K, (Instant, u64)>,
    /// Last sweep of keys whose interval has passed.
    swept: Option<Instant>,
}

/// What [`RateLimit::decide`] says of one event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Log it; `suppressed` events of the same key went unlogged since its last line.
    Log { suppressed: u64 },
    /// Its key was logged within the interval: count it only.
    Quiet,
    /// A new key, and the table is full of keys within their interval.
    Full,
}

/// How often a full table is swept at most.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl<K: Ord> RateLimit<K> {
    /// One line per key per `every`, `max_keys` keys at once.
    pub const fn new(every: Duration, max_keys: usize) -> RateLimit<K> {
        RateLimit {
            every,
            max_keys,
            seen: BTreeMap::new(),
            swept: None,
        }
    }

    /// An event of `key` at `now`: whether to log it.
    pub fn decide(&mut self, key: K, now: Instant) -> Verdict {
        if let Some((start, suppressed)) = self.seen.get_mut(&key) {
            if now.saturating_duration_since(*start) < self.every {
                *suppressed += 1;
                return Verdict::Quiet;
            }
            let folded = std::mem::take(suppressed);
            *start = now;
            return Verdict::Log { suppressed: folded };
        }
        if self.seen.len() >= self.max_keys
            && self
                .swept
                .is_none_or(|t| now.saturating_duration_since(t) >= SWEEP_EVERY)
        {
            self.swept = Some(now);
            let every = self.every;
            self.seen
                .retain(|_, (start, _)| now.saturating_duration_since(*start) < every);
        }
        if self.seen.len() >= self.max_keys {
            return Verdict::Full;
        }
        self.seen.insert(key, (now, 0));
        Verdict::Log { suppressed: 0 }
    }

    /// Keys remembered.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}

/// `decide` on a shared limiter (a poisoned lock is taken as it is: the table holds only
/// times and counts).
pub fn decide_shared<K: Ord>(limit: &Mutex<RateLimit<K>>, key: K, now: Instant) -> Verdict {
    limit
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .decide(key, now)
}

/// A source's events of one kind are logged at most once per this window; the next line says
/// how many were folded into it.
pub const WINDOW: Duration = Duration::from_secs(60);
/// Kinds and sources remembered at once; beyond it events are counted per kind only.
pub const MAX_SOURCES: usize = 4096;
/// Kinds of security events remembered for the line that says the sources' table is full
/// (the kinds are a fixed set of names: the bound is never reached).
const MAX_KINDS: usize = 64;

/// The rate limit of security events.
struct Limiter {
    /// Per kind and source.
    seen: RateLimit<(&'static str, IpAddr)>,
    /// Per kind, while `seen` is full.
    overflow: RateLimit<&'static str>,
}

impl Default for Limiter {
    fn default() -> Limiter {
        Limiter::new()
    }
}

/// What the limiter decided for one event.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Log it, saying how many of the same were suppressed before.
    Log { suppressed: u64 },
    /// Say that the table is full and how many events went unlogged.
    Overflow { suppressed: u64 },
    /// Count it only.
    Quiet,
}

impl Limiter {
    const fn new() -> Limiter {
        Limiter {
            seen: RateLimit::new(WINDOW, MAX_SOURCES),
            overflow: RateLimit::new(WINDOW, MAX_KINDS),
        }
    }

    fn decide(&mut self, kind: &'static str, source: IpAddr, now: Instant) -> Decision {
        match self.seen.decide((kind, source), now) {
            Verdict::Log { suppressed } => Decision::Log { suppressed },
            Verdict::Quiet => {
                suppressed_counter(kind);
                Decision::Quiet
            }
            Verdict::Full => {
                suppressed_counter(kind);
                match self.overflow.decide(kind, now) {
                    // This event is one of those the line says went unlogged.
                    Verdict::Log { suppressed } => Decision::Overflow {
                        suppressed: suppressed + 1,
                    },
                    Verdict::Quiet | Verdict::Full => Decision::Quiet,
                }
            }
        }
    }
}

static LIMITER: Mutex<Limiter> = Mutex::new(Limiter::new());

/// A counter family of security events by `kind`.
fn by_kind(name: &str, help: &str) -> prometheus::IntCounterVec {
    prometheus::IntCounterVec::new(prometheus::Opts::new(name, help), &["kind"])
        .expect("valid metric")
}

/// Security events not logged because of the rate limit, by kind.
pub fn suppressed_metric() -> &'static prometheus::IntCounterVec {
    static M: OnceLock<prometheus::IntCounterVec> = OnceLock::new();
    M.get_or_init(|| {
        by_kind(
            "sipfw_log_suppressed_total",
            "Security events not logged because the same kind and source was logged \
             within the last minute (or the rate limiter's table was full), by kind",
        )
    })
}

/// Security events by kind, logged or folded (`sipfw_security_events_total{kind}`): what an
/// alert watches, since the log lines are rate-limited.
pub fn events_metric() -> &'static prometheus::IntCounterVec {
    static M: OnceLock<prometheus::IntCounterVec> = OnceLock::new();
    M.get_or_init(|| {
        by_kind(
            "sipfw_security_events_total",
            "Security events (ban, auth_failure, scanner, relay_refused, stray_reply), \
             by kind, whether their log line was written or folded into a later one",
        )
    })
}

fn suppressed_counter(kind: &str) {
    suppressed_metric().with_label_values(&[kind]).inc();
}

/// Log a security event: `kind` (ban, auth_failure, scanner, stray_flood, relay_refused, ...),
/// the `source` address, why, and how many times it happened (e.g. failures before a ban).
/// Rate-limited per kind and source to one line a minute; the suppressed ones are counted in
/// `sipfw_log_suppressed_total{kind}` and reported on the next line.
pub fn security_event(kind: &'static str, source: IpAddr, reason: &str, count: u64) {
    events_metric().with_label_values(&[kind]).inc_by(count);
    let decision = match LIMITER.lock() {
        Ok(mut l) => l.decide(kind, source, Instant::now()),
        Err(_) => Decision::Log { suppressed: 0 },
    };
    match decision {
        Decision::Log { suppressed } => tracing::warn!(
            target: "security",
            kind,
            source = %source,
            reason,
            count,
            suppressed,
            "security event"
        ),
        Decision::Overflow { suppressed } => tracing::warn!(
            target: "security",
            kind,
            suppressed,
            "security events from too many sources at once: logging per kind only"
        ),
        Decision::Quiet => {}
    }
}

/// Counts of events whose sources user space never sees (replies XDP dropped as strays: the
/// kernel keeps a count, not who sent them), summed into one line per [`WINDOW`] at most:
/// `kind`, `source = "xdp"`, the count since the last line. Feed it the running total.
pub struct SummaryEvent {
    kind: &'static str,
    reason: &'static str,
    logged_total: Option<u64>,
    /// The total last added to `sipfw_security_events_total` (which counts at every reading,
    /// not once a window as the log does).
    counted_total: Option<u64>,
    last_line: Option<Instant>,
}

impl SummaryEvent {
    pub fn new(kind: &'static str, reason: &'static str) -> SummaryEvent {
        SummaryEvent {
            kind,
            reason,
            logged_total: None,
            counted_total: None,
            last_line: None,
        }
    }

    /// The counter is at `total` now: a line if it grew and the last line is a window old.
    /// The first reading (at start, or of counters kept in pinned maps across a restart)
    /// is the baseline, never logged.
    pub fn observe(&mut self, total: u64, now: Instant) -> Option<u64> {
        let Some(logged) = self.logged_total else {
            self.logged_total = Some(total);
            return None;
        };
        let grew = total.saturating_sub(logged);
        if grew > 0 {
            events_metric()
                .with_label_values(&[self.kind])
                .inc_by(total.saturating_sub(self.counted_total.unwrap_or(logged)));
            self.counted_total = Some(total);
        }
        if grew == 0
            || self
                .last_line
                .is_some_and(|t| now.duration_since(t) < WINDOW)
        {
            return None;
        }
        self.logged_total = Some(total);
        self.last_line = Some(now);
        tracing::warn!(
            target: "security",
            kind = self.kind,
            source = "xdp",
            reason = self.reason,
            count = grew,
            "security event"
        );
        Some(grew)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_kind_and_source_per_window() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(l.decide("ban", a, t0), Decision::Log { suppressed: 0 });
        for _ in 0..1000 {
            assert_eq!(l.decide("ban", a, t0), Decision::Quiet);
        }
        // Another source, another kind: their own lines.
        assert_eq!(l.decide("ban", b, t0), Decision::Log { suppressed: 0 });
        assert_eq!(l.decide("scanner", a, t0), Decision::Log { suppressed: 0 });
        // The next window says how many were folded.
        assert_eq!(
            l.decide("ban", a, t0 + WINDOW),
            Decision::Log { suppressed: 1000 }
        );
    }

    #[test]
    fn kernel_counts_are_summed_into_one_line_a_window() {
        let mut s = SummaryEvent::new("stray_reply", "no open transaction (XDP)");
        let t0 = Instant::now();
        assert_eq!(
            s.observe(500, t0),
            None,
            "the first reading is the baseline"
        );
        assert_eq!(s.observe(500, t0), None, "nothing new");
        assert_eq!(s.observe(800, t0), Some(300));
        assert_eq!(s.observe(5000, t0 + WINDOW / 2), None, "one line a window");
        assert_eq!(s.observe(5100, t0 + WINDOW), Some(4300));
    }

    #[test]
    fn a_full_table_logs_per_kind_only() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        for i in 0..MAX_SOURCES as u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            assert_eq!(
                l.decide("auth_failure", ip, t0),
                Decision::Log { suppressed: 0 }
            );
        }
        let mut lines = 0;
        for i in 0..10_000u32 {
            let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i));
            if l.decide("auth_failure", ip, t0) != Decision::Quiet {
                lines += 1;
            }
        }
        assert_eq!(lines, 1, "one overflow line, not one per source");
        assert_eq!(l.seen.len(), MAX_SOURCES);
        // Once the window has passed, old entries make room again.
        let late: IpAddr = "198.51.100.1".parse().unwrap();
        assert_eq!(
            l.decide("auth_failure", late, t0 + WINDOW),
            Decision::Log { suppressed: 0 }
        );
    }

    /// With the sources' table full, each kind says once a window how many of its events went
    /// unlogged, counting the one that brings the line.
    #[test]
    fn a_full_table_says_per_kind_how_many_went_unlogged() {
        let mut l = Limiter::default();
        let t0 = Instant::now();
        let ip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        for i in 0..MAX_SOURCES as u32 {
            l.decide("scanner", ip(i), t0);
        }
        let full = |i| ip(MAX_SOURCES as u32 + i);
        assert_eq!(
            l.decide("scanner", full(0), t0),
            Decision::Overflow { suppressed: 1 }
        );
        assert_eq!(
            l.decide("ban", full(1), t0),
            Decision::Overflow { suppressed: 1 },
            "a kind of its own"
        );
        for i in 2..12 {
            assert_eq!(l.decide("scanner", full(i), t0), Decision::Quiet);
        }
        // Still within the sweep's second: the table stays full.
        let soon = t0 + Duration::from_millis(500);
        assert_eq!(l.decide("scanner", full(12), soon), Decision::Quiet);
        // A window on, the table is swept: the source is logged, the overflow line is due.
        let late = t0 + WINDOW;
        assert_eq!(
            l.decide("scanner", full(13), late),
            Decision::Log { suppressed: 0 }
        );
        assert_eq!(
            l.overflow.decide("scanner", late),
            Verdict::Log { suppressed: 11 }
        );
    }
}
