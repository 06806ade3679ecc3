//! Sliding windows of events per source: the learner counts failed
//! authentications in one, the user-space gate counts requests in another.

use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
    time::{Duration, Instant},
};

/// Timestamps of recent events per source, within a window.
#[derive(Default)]
pub struct Window {
    seen: HashMap<IpAddr, VecDeque<Instant>>,
}

impl Window {
    /// Record one event of `ip` at `now`; how many fall within `window`.
    pub fn hit(&mut self, ip: IpAddr, now: Instant, window: Duration) -> usize {
        let q = self.seen.entry(ip).or_default();
        q.push_back(now);
        while q.front().is_some_and(|t| now.duration_since(*t) > window) {
            q.pop_front();
        }
        q.len()
    }

    /// How many events of `ip` fall within `window` before `now` (nothing recorded).
    pub fn count(&self, ip: &IpAddr, now: Instant, window: Duration) -> usize {
        self.seen.get(ip).map_or(0, |q| {
            q.iter()
                .filter(|t| now.saturating_duration_since(**t) <= window)
                .count()
        })
    }

    /// Sources tracked.
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// Forget a source (it was banned).
    pub fn forget(&mut self, ip: &IpAddr) {
        self.seen.remove(ip);
    }

    /// Drop sources with nothing in the window (bounded memory under a spoofed flood).
    pub fn prune(&mut self, now: Instant, window: Duration) {
        self.seen
            .retain(|_, q| q.back().is_some_and(|t| now.duration_since(*t) <= window));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_count_and_forget() {
        let mut w = Window::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        let win = Duration::from_secs(10);
        assert_eq!(w.hit(ip, t0, win), 1);
        assert_eq!(w.hit(ip, t0 + Duration::from_secs(5), win), 2);
        assert_eq!(
            w.hit(ip, t0 + Duration::from_secs(12), win),
            2,
            "the first fell out"
        );
        w.prune(t0 + Duration::from_secs(30), win);
        assert_eq!(w.hit(ip, t0 + Duration::from_secs(31), win), 1);
        w.forget(&ip);
        assert_eq!(w.hit(ip, t0 + Duration::from_secs(31), win), 1);
    }
}
