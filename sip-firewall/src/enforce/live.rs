//! The enforcement settings a reload changes while running (`sip-firewall reload`, SIGHUP):
//! the `[bans]` thresholds and ban times, read by the learner on every event and by the
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

use std::sync::Arc;

use arc_swap::ArcSwap;
use sip_firewall_common::XdpConfig;

use super::Sections;
use super::learn::BansConfig;

/// See the module doc.
pub struct EnforceSettings {
    bans: ArcSwap<BansConfig>,
    gate: ArcSwap<XdpConfig>,
}

impl EnforceSettings {
    /// The settings of `config`, shared by the gate, the learner and the reloader.
    pub fn new<'a>(config: impl Into<Sections<'a>>) -> Arc<EnforceSettings> {
        let config = &config.into();
        Arc::new(EnforceSettings {
            bans: ArcSwap::from_pointee(config.bans.clone()),
            gate: ArcSwap::from_pointee(gate_limits(config)),
        })
    }

    /// `[bans]` as in force now.
    pub fn bans(&self) -> Arc<BansConfig> {
        self.bans.load_full()
    }

    /// The `[xdp]` limits the user-space gate applies, as in force now.
    pub fn gate_limits(&self) -> Arc<XdpConfig> {
        self.gate.load_full()
    }

    /// Take `config`'s values: the next event and the next message see them.
    pub fn set<'a>(&self, config: impl Into<Sections<'a>>) {
        let config = &config.into();
        self.bans.store(Arc::new(config.bans.clone()));
        self.gate.store(Arc::new(gate_limits(config)));
    }
}

/// The XDP program's limits, in the form the user-space gate runs them (the same GCRA).
fn gate_limits(config: &Sections<'_>) -> XdpConfig {
    config.xdp.kernel_config(config.bans.learned_scope)
}
