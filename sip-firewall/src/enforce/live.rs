//! The enforcement settings a reload changes while running (`sip-firewall reload`, SIGHUP):
//! the `[bans]` thresholds and ban times and `[policy] scan_targets`/`scan_window`, read by
//! the learner on every event, the `[bans]` ones also by the
//! user-space gate on every message, and the user-space copy of the `[xdp]` limits (flood
//! limit, known sources' limit, pressure budget) that the gate applies when XDP did not see
//! a message. One shared value, swapped whole by the reloader and loaded without a lock, so
//! a reload never stops the gate and never mixes old and new values of one section.
//!
//! ```
//! use sip_firewall::{config::Config, enforce::live::EnforceSettings};
//!
//! let settings = EnforceSettings::new(&Config::default());
//! assert_eq!(settings.bans().auth_failures, 5);
//! let mut next = Config::default();
//! next.bans.auth_failures = 3;
//! settings.set(&next);
//! assert_eq!(settings.bans().auth_failures, 3);
//! ```

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
};

use arc_swap::ArcSwap;
use sip_firewall_common::XdpConfig;

use super::{Sections, learn::BansConfig, pressure::PressureConfig};
use crate::policy::sweep::SweepLimits;

/// See the module doc.
pub struct EnforceSettings {
    bans: ArcSwap<BansConfig>,
    sweep: ArcSwap<SweepLimits>,
    gate: ArcSwap<XdpConfig>,
    /// `[pressure]`, and `[xdp] pressure_budget`: the ceiling of the adaptive budget.
    pressure: ArcSwap<PressureConfig>,
    ceiling: AtomicU32,
    /// Bumped by every [`EnforceSettings::set`]: the governor then writes its budget again
    /// over the ceiling the reload wrote.
    generation: AtomicU64,
    /// Requests the gate dropped for the budget (the governor's saturation signal, with
    /// XDP's counter).
    pressure_drops: AtomicU64,
    /// Requests from unknown sources the gate saw (the budget's traffic: every one XDP
    /// admitted reaches the gate).
    unknown_requests: AtomicU64,
    /// The governor sleeps longer than its tick: the next unknown request or reload wakes it.
    dozing: AtomicBool,
    rouse: tokio::sync::Notify,
}

impl EnforceSettings {
    /// The settings of `config`, shared by the gate, the learner and the reloader.
    pub fn new<'a>(config: impl Into<Sections<'a>>) -> Arc<EnforceSettings> {
        let config = &config.into();
        Arc::new(EnforceSettings {
            bans: ArcSwap::from_pointee(config.bans.clone()),
            sweep: ArcSwap::from_pointee(SweepLimits::of(config.policy)),
            gate: ArcSwap::from_pointee(gate_limits(config)),
            pressure: ArcSwap::from_pointee(config.pressure.clone()),
            ceiling: AtomicU32::new(config.xdp.pressure_budget),
            generation: AtomicU64::new(0),
            pressure_drops: AtomicU64::new(0),
            unknown_requests: AtomicU64::new(0),
            dozing: AtomicBool::new(false),
            rouse: tokio::sync::Notify::new(),
        })
    }

    /// `[bans]` as in force now.
    pub fn bans(&self) -> Arc<BansConfig> {
        self.bans.load_full()
    }

    /// `[policy] scan_targets` and `scan_window` as in force now.
    pub fn sweep(&self) -> SweepLimits {
        **self.sweep.load()
    }

    /// The `[xdp]` limits the user-space gate applies, as in force now.
    pub fn gate_limits(&self) -> Arc<XdpConfig> {
        self.gate.load_full()
    }

    /// Take `config`'s values: the next event and the next message see them.
    pub fn set<'a>(&self, config: impl Into<Sections<'a>>) {
        let config = &config.into();
        self.bans.store(Arc::new(config.bans.clone()));
        self.sweep.store(Arc::new(SweepLimits::of(config.policy)));
        self.gate.store(Arc::new(gate_limits(config)));
        self.pressure.store(Arc::new(config.pressure.clone()));
        self.ceiling
            .store(config.xdp.pressure_budget, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
        // The governor writes its budget over the ceiling just written, and takes the new
        // `[pressure]`, at once rather than after its sleep.
        self.rouse_governor();
    }

    /// `[pressure]` as in force now.
    pub fn pressure(&self) -> Arc<PressureConfig> {
        self.pressure.load_full()
    }

    /// `[xdp] pressure_budget` as in force now: the most the governor may admit.
    pub fn pressure_ceiling(&self) -> u32 {
        self.ceiling.load(Ordering::Relaxed)
    }

    /// How many reloads so far.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Put `per_second` in force as the gate's unknown-source budget (the governor).
    pub fn set_pressure_budget(&self, per_second: u32) {
        let limits = (*self.gate.load_full()).with_pressure_budget(per_second);
        self.gate.store(Arc::new(limits));
    }

    /// The gate dropped a request for the budget.
    pub fn count_pressure_drop(&self) {
        self.pressure_drops.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests the gate dropped for the budget so far.
    pub fn pressure_drops(&self) -> u64 {
        self.pressure_drops.load(Ordering::Relaxed)
    }

    /// The gate saw a request from an unknown source: counted, and a dozing governor woken.
    pub fn count_unknown_request(&self) {
        self.unknown_requests.fetch_add(1, Ordering::Relaxed);
        self.rouse_governor();
    }

    /// Requests from unknown sources the gate saw so far.
    pub fn unknown_requests(&self) -> u64 {
        self.unknown_requests.load(Ordering::Relaxed)
    }

    /// Wake the governor if it sleeps past its tick (a load only, when it does not).
    fn rouse_governor(&self) {
        if self.dozing.load(Ordering::Relaxed) && self.dozing.swap(false, Ordering::AcqRel) {
            self.rouse.notify_one();
        }
    }

    /// The governor's sleep of `long` (past its tick when `dozing`): over when it is, or
    /// when an unknown request or a reload wakes a dozing governor. Whether it was woken.
    pub async fn governor_sleep(&self, long: std::time::Duration, dozing: bool) -> bool {
        if !dozing {
            tokio::time::sleep(long).await;
            return false;
        }
        self.dozing.store(true, Ordering::Release);
        // A wake between the store and the wait is kept by `notify_one` as a permit.
        let woken = tokio::select! {
            _ = tokio::time::sleep(long) => false,
            _ = self.rouse.notified() => true,
        };
        self.dozing.store(false, Ordering::Release);
        woken
    }
}

/// The XDP program's limits, in the form the user-space gate runs them (the same GCRA).
fn gate_limits(config: &Sections<'_>) -> XdpConfig {
    config.xdp.kernel_config(config.bans.learned_scope)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::config::Config;

    #[tokio::test]
    async fn an_unknown_request_or_a_reload_wakes_a_dozing_governor_at_once() {
        let settings = EnforceSettings::new(&Config::default());
        // Nobody dozing: the request is counted, and leaves nothing to cut the next sleep.
        settings.count_unknown_request();
        assert_eq!(settings.unknown_requests(), 1);
        assert!(
            !settings
                .governor_sleep(Duration::from_millis(20), true)
                .await
        );
        for wake in [
            (|s: &EnforceSettings| s.count_unknown_request()) as fn(&EnforceSettings),
            |s| s.set(&Config::default()),
        ] {
            let t0 = Instant::now();
            let (woken, ()) = tokio::join!(
                settings.governor_sleep(Duration::from_secs(30), true),
                async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    wake(&settings);
                }
            );
            assert!(woken && t0.elapsed() < Duration::from_secs(5));
        }
        // At the full pace the sleep is a plain timer: nothing cuts it short.
        let t0 = Instant::now();
        let (woken, ()) = tokio::join!(
            settings.governor_sleep(Duration::from_millis(100), false),
            async {
                settings.count_unknown_request();
            }
        );
        assert!(!woken && t0.elapsed() >= Duration::from_millis(100));
    }
}
