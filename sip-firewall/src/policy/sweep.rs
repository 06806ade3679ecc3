//! Scanners caught by what they do, whatever their User-Agent says: from one source (an IPv4
//! address, an IPv6 /64), many distinct target users refused within a window. An extension
//! scanner (svwar) or an OPTIONS/INVITE sweep walks through user names, and the edge answers
//! each unknown or unregistered one 404 or 480 (`[proxy] unavailable`) or 403; a password
//! cracker over a list of user names fails digest once per name. A trunk that places many
//! calls to numbers that exist is not counted at all: only refused targets are.
//!
//! `[policy] scan_targets` distinct users within `scan_window` make the source a scanner;
//! the learner (`enforce::learn`) bans it like a scanner User-Agent, unless the source is
//! known good (allow-listed, registered, recently authenticated: `enforce::known`), which the
//! learner refuses and counts. Only a keyed hash of each user name is kept (never the
//! attacker's text), at most `scan_targets` per source, and at most [`MAX_SOURCES`] sources;
//! a source beyond that bound is not tracked, counted in
//! `sipfw_limits_refused_total{what="scan_sources"}` and logged once a minute.

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasher, RandomState},
    net::IpAddr,
    time::{Duration, Instant},
};

use crate::{policy::config::PolicyConfig, seams::source_key};

/// The most sources tracked at once.
pub const MAX_SOURCES: usize = 65_536;
/// The `what` of `sipfw_limits_refused_total` when [`MAX_SOURCES`] is reached.
pub const SOURCES_BOUND: &str = "scan_sources";

/// `scan_targets` and `scan_window` as in force.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SweepLimits {
    /// 0: off.
    pub targets: u32,
    pub window: Duration,
}

impl SweepLimits {
    pub fn of(policy: &PolicyConfig) -> SweepLimits {
        SweepLimits {
            targets: policy.scan_targets,
            window: policy.scan_window,
        }
    }
}

/// What one refused target means for its source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hit {
    /// Detection is off.
    Off,
    /// Counted: this many distinct users within the window so far.
    Counted(usize),
    /// The source reached the threshold with this many distinct users (and is forgotten).
    Scanner(usize),
    /// A new source while [`MAX_SOURCES`] are tracked: not counted.
    Full,
}

/// Refused targets per source: (keyed hash of the user, when last refused), oldest first.
pub struct Sweeps {
    sources: HashMap<IpAddr, VecDeque<(u64, Instant)>>,
    hasher: RandomState,
    max_sources: usize,
}

impl Default for Sweeps {
    fn default() -> Self {
        Sweeps::with_capacity(MAX_SOURCES)
    }
}

impl Sweeps {
    /// At most `max_sources` sources tracked.
    pub fn with_capacity(max_sources: usize) -> Sweeps {
        Sweeps {
            sources: HashMap::new(),
            hasher: RandomState::new(),
            max_sources,
        }
    }

    /// `user` was refused to `ip` at `now`.
    pub fn hit(&mut self, ip: IpAddr, user: &str, now: Instant, limits: SweepLimits) -> Hit {
        if limits.targets == 0 {
            return Hit::Off;
        }
        let key = source_key(ip);
        if !self.sources.contains_key(&key) && self.sources.len() >= self.max_sources {
            self.prune(now, limits.window);
            if self.sources.len() >= self.max_sources {
                return Hit::Full;
            }
        }
        let hash = self.hasher.hash_one(user.as_bytes());
        let seen = self.sources.entry(key).or_default();
        while seen
            .front()
            .is_some_and(|(_, t)| now.saturating_duration_since(*t) > limits.window)
        {
            seen.pop_front();
        }
        // The same user again (a retransmission, a retry) is one target: it moves to the back.
        seen.retain(|(h, _)| *h != hash);
        seen.push_back((hash, now));
        let n = seen.len();
        if n >= limits.targets as usize {
            self.sources.remove(&key);
            Hit::Scanner(n)
        } else {
            Hit::Counted(n)
        }
    }

    /// Drop sources with nothing within `window` (bounded memory under a spoofed sweep).
    pub fn prune(&mut self, now: Instant, window: Duration) {
        self.sources.retain(|_, q| {
            q.back()
                .is_some_and(|(_, t)| now.saturating_duration_since(*t) <= window)
        });
    }

    /// Sources tracked.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: SweepLimits = SweepLimits {
        targets: 10,
        window: Duration::from_secs(60),
    };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Ten distinct users make a scanner; the same user over and over is one target.
    #[test]
    fn distinct_users_within_the_window_make_a_scanner() {
        let mut s = Sweeps::default();
        let t0 = Instant::now();
        let src = ip("203.0.113.7");
        for _ in 0..50 {
            assert_eq!(s.hit(src, "100", t0, LIMITS), Hit::Counted(1));
        }
        for i in 101..109 {
            assert!(matches!(
                s.hit(src, &i.to_string(), t0, LIMITS),
                Hit::Counted(_)
            ));
        }
        assert_eq!(s.hit(src, "109", t0, LIMITS), Hit::Scanner(10));
        assert!(s.is_empty(), "a scanner found is forgotten");
    }

    /// Targets older than the window do not count: a few misdials an hour never add up.
    #[test]
    fn old_targets_fall_out_of_the_window() {
        let mut s = Sweeps::default();
        let t0 = Instant::now();
        let src = ip("203.0.113.7");
        for i in 0..30u64 {
            let now = t0 + Duration::from_secs(i * 10);
            let hit = s.hit(src, &format!("u{i}"), now, LIMITS);
            assert!(matches!(hit, Hit::Counted(n) if n <= 7), "{i}: {hit:?}");
        }
        s.prune(t0 + Duration::from_secs(3600), LIMITS.window);
        assert!(s.is_empty());
    }

    /// The addresses of one IPv6 /64 are one source; another /64 is another.
    #[test]
    fn an_ipv6_slash_64_is_one_source() {
        let mut s = Sweeps::default();
        let t0 = Instant::now();
        for i in 0..9 {
            let src = ip(&format!("2001:db8:1:2::{:x}", i + 1));
            assert!(matches!(
                s.hit(src, &format!("u{i}"), t0, LIMITS),
                Hit::Counted(_)
            ));
        }
        assert_eq!(
            s.hit(ip("2001:db8:1:3::1"), "u9", t0, LIMITS),
            Hit::Counted(1)
        );
        assert_eq!(
            s.hit(ip("2001:db8:1:2::ffff"), "u9", t0, LIMITS),
            Hit::Scanner(10)
        );
    }

    /// Sources beyond the bound are refused (not tracked) until old ones expire; 0 is off.
    #[test]
    fn bounded_in_sources_and_off_at_zero() {
        let mut s = Sweeps::with_capacity(2);
        let t0 = Instant::now();
        assert_eq!(s.hit(ip("192.0.2.1"), "a", t0, LIMITS), Hit::Counted(1));
        assert_eq!(s.hit(ip("192.0.2.2"), "a", t0, LIMITS), Hit::Counted(1));
        assert_eq!(s.hit(ip("192.0.2.3"), "a", t0, LIMITS), Hit::Full);
        assert_eq!(s.hit(ip("192.0.2.1"), "b", t0, LIMITS), Hit::Counted(2));
        let later = t0 + Duration::from_secs(61);
        assert_eq!(s.hit(ip("192.0.2.3"), "a", later, LIMITS), Hit::Counted(1));
        let off = SweepLimits {
            targets: 0,
            ..LIMITS
        };
        assert_eq!(s.hit(ip("192.0.2.9"), "a", t0, off), Hit::Off);
    }
}
