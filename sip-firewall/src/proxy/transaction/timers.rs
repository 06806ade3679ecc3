//! RFC 3261 Table 4 timers, resolved from `[timers]`.

use std::time::Duration;

use crate::proxy::config::TimersConfig;

/// Every timer value the transactions use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
    pub a: Duration,
    pub b: Duration,
    pub c: Duration,
    pub d: Duration,
    pub e: Duration,
    pub f: Duration,
    pub g: Duration,
    pub h: Duration,
    pub i: Duration,
    pub j: Duration,
    pub k: Duration,
}

impl Timers {
    /// The values of the config, each lettered timer defaulting to RFC 3261 Table 4.
    pub fn from_config(c: &TimersConfig) -> Timers {
        let t64 = c.t1 * 64;
        Timers {
            t1: c.t1,
            t2: c.t2,
            t4: c.t4,
            a: c.a.unwrap_or(c.t1),
            b: c.b.unwrap_or(t64),
            c: c.c,
            d: c.d,
            e: c.e.unwrap_or(c.t1),
            f: c.f.unwrap_or(t64),
            g: c.g.unwrap_or(c.t1),
            h: c.h.unwrap_or(t64),
            i: c.i.unwrap_or(c.t4),
            j: c.j.unwrap_or(t64),
            k: c.k.unwrap_or(c.t4),
        }
    }

    /// Timers L and M of RFC 6026 (64*T1): how long the Accepted states last.
    pub fn accepted(&self) -> Duration {
        self.t1 * 64
    }
}

impl Default for Timers {
    fn default() -> Self {
        Timers::from_config(&TimersConfig::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table4() {
        let t = Timers::default();
        assert_eq!(t.b, Duration::from_secs(32));
        assert_eq!(t.i, Duration::from_secs(5));
        let c = TimersConfig {
            t1: Duration::from_millis(100),
            j: Some(Duration::from_secs(1)),
            ..TimersConfig::default()
        };
        let t = Timers::from_config(&c);
        assert_eq!(t.f, Duration::from_millis(6400));
        assert_eq!(t.j, Duration::from_secs(1));
        assert_eq!(t.accepted(), Duration::from_millis(6400));
    }
}
