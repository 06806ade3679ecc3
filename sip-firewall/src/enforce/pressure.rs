//! The unknown-source budget that adapts to what the daemon can spare (`[pressure]`).
//!
//! `[xdp] pressure_budget` caps the SIP requests per second admitted from unknown sources
//! together (not registered, not recently authenticated, not a peer): a spoofed-source flood
//! can never cost more than that. A fixed cap is still too much when the daemon is already
//! busy, and too little when it is idle, so the [`Governor`] moves the budget in force between
//! `[pressure] min_budget` and that ceiling, every `[pressure] tick`, from three samples:
//!
//! - the **event loop's lag**: how late a timer of the daemon's runtime fires;
//! - the **daemon's CPU** (all threads, `getrusage`), in cores;
//! - whether the budget is **saturated**: the XDP program or the user-space gate dropped
//!   requests for it since the last tick.
//!
//! The rule is TCP's (additive increase, multiplicative decrease): while the budget is
//! saturated, it halves when the loop lags more than `max_lag` or the CPU is above
//! `cpu_rise` × the quiet baseline (an average of the CPU over the ticks without saturation:
//! what the known traffic costs; not the first tick, which spans the daemon's start), never
//! counting less than `idle_cpu` as a rise; otherwise it grows by a sixteenth of the ceiling
//! a tick. Unsaturated, lag and CPU are not the unknown
//! sources' doing as far as the budget can tell (it drops nothing), and shrinking it would
//! only make the next honest newcomer wait. Known sources never count against the budget, so legit
//! calls keep their full rate whatever it shrinks to. The daemon's task
//! (`daemon::tasks::spawn_pressure`) samples, asks the [`Governor`], and writes each change
//! to the XDP config map and to the gate, shown as `sipfw_pressure_budget` and logged (at
//! most one line a minute).
//!
//! The governor samples every `tick` only while the budget has work: requests from unknown
//! sources arrived, some were dropped for it, or it is below its ceiling. Otherwise its
//! sleep doubles, up to [`IDLE_TICK_MAX`], so an idle daemon does not wake four times a
//! second to find nothing. It does not miss a flood for that: every request XDP admits
//! from an unknown source reaches the gate, which wakes a dozing governor at once
//! (`EnforceSettings::count_unknown_request`), and the next sample is `tick` later. While
//! it slept, the budget was at its ceiling, the fixed cap `adaptive = false` keeps anyway.
//!
//! ```
//! use std::time::Duration;
//! use sip_firewall::enforce::pressure::{Governor, PressureConfig, Sample};
//!
//! let cfg = PressureConfig::default();
//! let mut g = Governor::new(2000);
//! let quiet = Sample { cpu: 0.05, lag: Duration::ZERO, saturated: false, unknown: false, span: cfg.tick };
//! assert_eq!(g.next(2000, &cfg, quiet), 2000);
//! // Nothing for the budget to do: the next sample comes later.
//! assert_eq!(g.tick(&cfg), cfg.tick * 2);
//! // A flood: the budget is hit and the CPU is four times the quiet baseline.
//! let flood = Sample { cpu: 0.20, lag: Duration::ZERO, saturated: true, unknown: true, span: cfg.tick };
//! assert_eq!(g.next(2000, &cfg, flood), 1000);
//! assert_eq!(g.tick(&cfg), cfg.tick);
//! assert_eq!(g.next(2000, &cfg, flood), 500);
//! // Quiet again: it grows back by 1/16 of the ceiling a tick.
//! assert_eq!(g.next(2000, &cfg, quiet), 625);
//! ```

use std::time::Duration;

use prometheus::{Gauge, IntGauge};
use serde::Deserialize;

use crate::{
    metrics::Metrics,
    section::{Invalid, duration, invalid},
};

/// `[pressure]`: how the unknown-source budget (`[xdp] pressure_budget`, its ceiling) adapts.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PressureConfig {
    /// Adapt the budget; `false`: `[xdp] pressure_budget` always.
    pub adaptive: bool,
    /// The budget never shrinks below this many requests a second (new phones must still be
    /// able to register during a flood; SIP retransmits what is dropped).
    pub min_budget: u32,
    /// Saturated and the CPU above this many times the quiet baseline: the budget halves.
    pub cpu_rise: f64,
    /// CPU (in cores) below which the daemon counts as idle: no rise under it.
    pub idle_cpu: f64,
    /// The event loop later than this while the budget is hit: the budget halves.
    #[serde(deserialize_with = "duration")]
    pub max_lag: Duration,
    /// How often the governor samples and decides.
    #[serde(deserialize_with = "duration")]
    pub tick: Duration,
}

impl Default for PressureConfig {
    fn default() -> Self {
        PressureConfig {
            adaptive: true,
            min_budget: 50,
            // A spoofed flood may cost at most 1.5x the CPU of the known traffic alone.
            cpu_rise: 1.5,
            idle_cpu: 0.02,
            max_lag: Duration::from_millis(20),
            tick: Duration::from_millis(250),
        }
    }
}

impl PressureConfig {
    /// Check `[pressure]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.min_budget == 0 {
            return Err(invalid(
                "pressure.min_budget",
                "must be at least 1 (0 would starve every new source)",
            ));
        }
        if !(self.cpu_rise >= 1.0 && self.cpu_rise.is_finite()) {
            return Err(invalid("pressure.cpu_rise", "must be a number >= 1.0"));
        }
        if !(self.idle_cpu >= 0.0 && self.idle_cpu.is_finite()) {
            return Err(invalid(
                "pressure.idle_cpu",
                "must be a number >= 0.0 (cores)",
            ));
        }
        if self.max_lag.is_zero() {
            return Err(invalid("pressure.max_lag", "must be more than 0"));
        }
        if self.tick < Duration::from_millis(10) || self.tick > Duration::from_secs(10) {
            return Err(invalid("pressure.tick", "must be between 10ms and 10s"));
        }
        Ok(())
    }
}

/// The longest the governor sleeps while the budget has nothing to do (see the module doc).
pub const IDLE_TICK_MAX: Duration = Duration::from_secs(4);

/// What the governor saw over one tick.
#[derive(Clone, Copy, Debug)]
pub struct Sample {
    /// CPU the daemon used, in cores (1.0: one core all the time).
    pub cpu: f64,
    /// How late the tick's timer fired.
    pub lag: Duration,
    /// Requests were dropped for the budget since the last tick.
    pub saturated: bool,
    /// Requests from unknown sources (the budget's traffic) arrived since the last tick.
    pub unknown: bool,
    /// How long the sample covers.
    pub span: Duration,
}

/// The budget in force, the quiet baseline and how long to sleep before the next sample;
/// pure, so its rule is tested without a clock.
#[derive(Debug)]
pub struct Governor {
    budget: u32,
    baseline: Option<f64>,
    /// A sample was taken: the first one spans the daemon's start-up (the listeners, the
    /// proxy and the feeds start after the governor), whose CPU is no cost of known traffic.
    started: bool,
    /// Samples in a row that found nothing for the budget to do.
    idle: u32,
}

impl Governor {
    /// Start at the ceiling.
    pub fn new(ceiling: u32) -> Governor {
        Governor {
            budget: ceiling,
            baseline: None,
            started: false,
            idle: 0,
        }
    }

    /// How long to sleep before the next sample: `cfg.tick` at the start and while the
    /// budget has work, doubling with each sample that found none, up to [`IDLE_TICK_MAX`]
    /// (or `cfg.tick` when that is longer).
    pub fn tick(&self, cfg: &PressureConfig) -> Duration {
        let max = IDLE_TICK_MAX.max(cfg.tick);
        cfg.tick
            .checked_mul(1 << self.idle.min(16))
            .map_or(max, |t| t.min(max))
    }

    /// After a sample: the next sleep is `cfg.tick` at once when it found work, else twice
    /// the last.
    fn count_idle(&mut self, busy: bool) {
        self.idle = if busy { 0 } else { self.idle.saturating_add(1) };
    }

    /// The budget in force.
    pub fn budget(&self) -> u32 {
        self.budget
    }

    /// The CPU the known traffic costs, as far as seen (cores).
    pub fn baseline(&self) -> Option<f64> {
        self.baseline
    }

    /// Take one tick's sample; the budget to put in force (`ceiling` 0: no budget at all).
    /// The sample also sets the next sleep ([`Governor::tick`]).
    pub fn next(&mut self, ceiling: u32, cfg: &PressureConfig, s: Sample) -> u32 {
        let first = !std::mem::replace(&mut self.started, true);
        if ceiling == 0 || !cfg.adaptive {
            // A fixed budget has nothing to adapt (a reload that turns it on wakes the task).
            self.budget = ceiling;
            self.count_idle(false);
            return self.budget;
        }
        if !s.saturated && !first {
            // Exponential average over ~10 quiet ticks' worth of time: a longer sample weighs
            // as the ticks it stands for.
            let ticks = s.span.as_secs_f64() / cfg.tick.as_secs_f64();
            let w = 1.0 - 0.9f64.powf(ticks);
            self.baseline = Some(self.baseline.map_or(s.cpu, |b| b + w * (s.cpu - b)));
        }
        let base = self.baseline.unwrap_or(0.0);
        let limit = (base * cfg.cpu_rise).max(cfg.idle_cpu);
        let floor = cfg.min_budget.min(ceiling);
        let budget = self.budget.clamp(floor, ceiling);
        self.budget = if s.saturated && (s.lag > cfg.max_lag || s.cpu > limit) {
            (budget / 2).max(floor)
        } else {
            budget.saturating_add((ceiling / 16).max(1)).min(ceiling)
        };
        // Growing back is work too: a tick at a time.
        self.count_idle(s.saturated || s.unknown || self.budget < ceiling);
        self.budget
    }
}

/// The daemon's CPU time so far (user + system, all threads).
pub fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the zeroed struct we own.
    let mut r: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut r) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(r.ru_utime) + tv(r.ru_stime)
}

/// The gauges of the governor: the budget in force, the last lag.
pub struct PressureGauges {
    pub budget: IntGauge,
    pub lag: Gauge,
}

impl PressureGauges {
    /// Define and register `sipfw_pressure_budget` and `sipfw_event_loop_lag_seconds`.
    pub fn register(metrics: &Metrics) -> PressureGauges {
        let r = crate::metrics::Registrar::new(metrics.registry(), "the pressure gauges");
        let budget = r.int_gauge(
            "sipfw_pressure_budget",
            "SIP requests per second admitted from unknown sources together, in force now \
             ([xdp] pressure_budget is the ceiling; [pressure] adapts it)",
        );
        let lag = r.gauge(
            "sipfw_event_loop_lag_seconds",
            "How late the pressure governor's last timer fired (the daemon's event loop lag)",
        );
        PressureGauges { budget, lag }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sample over one default tick; a saturated budget had unknown traffic.
    fn s(cpu: f64, lag_ms: u64, saturated: bool) -> Sample {
        Sample {
            cpu,
            lag: Duration::from_millis(lag_ms),
            saturated,
            unknown: saturated,
            span: PressureConfig::default().tick,
        }
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn an_idle_budget_backs_off_its_tick_and_snaps_back_on_unknown_traffic() {
        let cfg = PressureConfig::default();
        let mut g = Governor::new(2000);
        assert_eq!(
            g.tick(&cfg),
            cfg.tick,
            "the first sample comes a tick after the start"
        );
        let mut ticks = Vec::new();
        for _ in 0..6 {
            assert_eq!(g.next(2000, &cfg, s(0.001, 0, false)), 2000);
            ticks.push(g.tick(&cfg));
        }
        assert_eq!(
            ticks,
            [ms(500), ms(1000), ms(2000), ms(4000), ms(4000), ms(4000)],
            "doubling while nothing reaches the budget, up to IDLE_TICK_MAX"
        );
        // One unknown request in a long sample: the next sample is a tick away, the budget
        // untouched.
        let newcomer = Sample {
            unknown: true,
            span: IDLE_TICK_MAX,
            ..s(0.001, 0, false)
        };
        assert_eq!(g.next(2000, &cfg, newcomer), 2000);
        assert_eq!(g.tick(&cfg), cfg.tick);
        assert_eq!(g.next(2000, &cfg, s(0.001, 0, false)), 2000);
        assert_eq!(g.tick(&cfg), ms(500), "and backs off again when it stops");
    }

    #[test]
    fn a_flood_after_a_long_sleep_is_met_at_the_full_pace() {
        let cfg = PressureConfig::default();
        let mut g = Governor::new(2000);
        for _ in 0..10 {
            g.next(2000, &cfg, s(0.02, 0, false));
        }
        assert_eq!(g.tick(&cfg), IDLE_TICK_MAX);
        // The flood's first sample spans the long sleep (the gate woke the task early).
        let first = Sample {
            span: ms(600),
            ..s(0.30, 0, true)
        };
        assert_eq!(g.next(2000, &cfg, first), 1000);
        assert_eq!(g.tick(&cfg), cfg.tick);
        let mut b = 1000;
        let mut n = 1;
        while b > cfg.min_budget {
            b = g.next(2000, &cfg, s(0.30, 0, true));
            assert_eq!(g.tick(&cfg), cfg.tick, "a tick at a time under the flood");
            n += 1;
        }
        assert_eq!(n, 6, "2000 halves to the floor of 50 in six samples");
        // Growing back is work: a tick at a time until the ceiling, then the back-off.
        while g.next(2000, &cfg, s(0.02, 0, false)) < 2000 {
            assert_eq!(g.tick(&cfg), cfg.tick);
        }
        assert_eq!(
            g.tick(&cfg),
            ms(500),
            "back at the ceiling: nothing left to do"
        );
        g.next(2000, &cfg, s(0.02, 0, false));
        assert_eq!(g.tick(&cfg), ms(1000));
    }

    #[test]
    fn a_fixed_budget_dozes_and_a_long_tick_is_kept() {
        let fixed = PressureConfig {
            adaptive: false,
            ..Default::default()
        };
        let mut g = Governor::new(1000);
        for _ in 0..8 {
            assert_eq!(g.next(1000, &fixed, s(0.5, 100, true)), 1000);
        }
        assert_eq!(g.tick(&fixed), IDLE_TICK_MAX);
        // A tick longer than IDLE_TICK_MAX is never shortened.
        let slow = PressureConfig {
            tick: Duration::from_secs(10),
            ..Default::default()
        };
        let mut g = Governor::new(1000);
        assert_eq!(g.tick(&slow), slow.tick);
        g.next(1000, &slow, s(0.01, 0, false));
        assert_eq!(g.tick(&slow), slow.tick);
    }

    #[test]
    fn a_long_quiet_sample_weighs_as_the_ticks_it_spans() {
        let cfg = PressureConfig::default();
        let mut g = Governor::new(2000);
        g.next(2000, &cfg, s(0.5, 0, false));
        g.next(2000, &cfg, s(0.0, 0, false));
        // 16 ticks at once: as 16 samples of 0.1 would have moved it.
        let long = Sample {
            span: cfg.tick * 16,
            ..s(0.1, 0, false)
        };
        g.next(2000, &cfg, long);
        let expected = 0.1 * (1.0 - 0.9f64.powi(16));
        assert!((g.baseline().unwrap() - expected).abs() < 1e-9);
    }

    #[test]
    fn shrinks_under_a_costly_flood_and_grows_back_when_it_ends() {
        let cfg = PressureConfig::default();
        let mut g = Governor::new(2000);
        for _ in 0..20 {
            assert_eq!(g.next(2000, &cfg, s(0.04, 0, false)), 2000);
        }
        let mut b = 2000;
        for _ in 0..10 {
            b = g.next(2000, &cfg, s(0.30, 0, true));
        }
        assert_eq!(b, cfg.min_budget, "down to the floor, never below");
        // The baseline stayed that of the quiet ticks.
        assert!((g.baseline().unwrap() - 0.04).abs() < 1e-9);
        let mut ticks = 0;
        while g.next(2000, &cfg, s(0.04, 0, false)) < 2000 {
            ticks += 1;
        }
        assert_eq!(ticks, 15, "back to the ceiling in 16 ticks");
    }

    /// The test's daemon: its start costs half a core over the first tick, then it backs off
    /// to idle (250 ms, 500 ms, 1 s, 2 s) before a flood that costs 0.15 cores, eight times
    /// the quiet ticks' cost.
    #[test]
    fn the_start_up_is_no_part_of_the_baseline() {
        let cfg = PressureConfig::default();
        let mut g = Governor::new(2000);
        g.next(2000, &cfg, s(0.5, 0, false));
        for (cpu, span) in [(0.05, 500), (0.001, 1000), (0.001, 2000)] {
            let quiet = Sample {
                span: ms(span),
                ..s(cpu, 0, false)
            };
            g.next(2000, &cfg, quiet);
        }
        assert!(g.baseline().is_some_and(|b| b < 0.05));
        assert_eq!(g.next(2000, &cfg, s(0.15, 0, true)), 1000);
    }

    #[test]
    fn a_saturated_budget_that_costs_little_is_kept() {
        let cfg = PressureConfig::default();
        let mut g = Governor::new(1000);
        g.next(1000, &cfg, s(0.5, 0, false));
        g.next(1000, &cfg, s(0.10, 0, false));
        // Hit, but within 1.5x the baseline: no reason to shrink.
        assert_eq!(g.next(1000, &cfg, s(0.14, 0, true)), 1000);
        // Idle machine: below idle_cpu is never a rise, however many times the baseline.
        let mut idle = Governor::new(1000);
        idle.next(1000, &cfg, s(0.001, 0, false));
        assert_eq!(idle.next(1000, &cfg, s(0.015, 0, true)), 1000);
    }

    #[test]
    fn lag_shrinks_it_when_saturated_and_reload_moves_the_ceiling() {
        let cfg = PressureConfig::default();
        let mut g = Governor::new(1000);
        // Lag with nothing dropped for the budget: not the unknown sources' doing.
        assert_eq!(g.next(1000, &cfg, s(0.01, 100, false)), 1000);
        assert_eq!(g.next(1000, &cfg, s(0.01, 100, true)), 500);
        // A reload to a lower ceiling takes effect at once.
        assert_eq!(g.next(300, &cfg, s(0.01, 0, false)), 300);
        // Ceiling 0 turns the budget off; not adaptive: the ceiling always.
        assert_eq!(g.next(0, &cfg, s(0.5, 100, true)), 0);
        let fixed = PressureConfig {
            adaptive: false,
            ..cfg.clone()
        };
        assert_eq!(g.next(800, &fixed, s(0.9, 500, true)), 800);
        // The floor is never above the ceiling.
        assert_eq!(g.next(20, &cfg, s(0.9, 500, true)), 20);
    }

    #[test]
    fn bad_settings_are_named() {
        for (cfg, key) in [
            (
                PressureConfig {
                    min_budget: 0,
                    ..Default::default()
                },
                "pressure.min_budget",
            ),
            (
                PressureConfig {
                    cpu_rise: 0.5,
                    ..Default::default()
                },
                "pressure.cpu_rise",
            ),
            (
                PressureConfig {
                    tick: Duration::from_millis(1),
                    ..Default::default()
                },
                "pressure.tick",
            ),
        ] {
            assert_eq!(cfg.validate().unwrap_err().key, key);
        }
        assert!(PressureConfig::default().validate().is_ok());
    }
}
