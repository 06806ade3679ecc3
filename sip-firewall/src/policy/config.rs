//! `[policy]`: who is trusted and who is refused outright, and when a source's behaviour
//! makes it a scanner (`scan_targets`, `scan_window`: see `policy::sweep`).

use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use crate::section::{Invalid, invalid};

/// The most `scan_targets` may be (the per-source memory of `policy::sweep` is this many
/// hashes).
pub const MAX_SCAN_TARGETS: usize = 1000;

/// `[policy]`: who is trusted and who is refused outright.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Trusted prefixes (trunks, PBXs): every check is skipped for them.
    pub allow: Vec<IpNet>,
    /// Refused prefixes: dropped.
    pub deny: Vec<IpNet>,
    /// User-Agent substrings (case-insensitive) of scanners whose requests are dropped
    /// silently; absent: the default list (friendly-scanner, sipvicious, sipcli, ...).
    pub scanners: Option<Vec<String>>,
    /// Distinct target users of one source (IPv4 address, IPv6 /64) answered 403, 404 or 480,
    /// or named in failing digest credentials, within `scan_window`, that make it a scanner
    /// (banned like a scanner User-Agent, `[bans] scanner_ban_time`); 0 disables.
    pub scan_targets: u32,
    #[serde(deserialize_with = "crate::section::duration")]
    pub scan_window: Duration,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        // A caller who misdials a few numbers a minute is a person; ten distinct refused users
        // in a minute from one address is an enumeration (svwar tries hundreds a second).
        PolicyConfig {
            allow: Vec::new(),
            deny: Vec::new(),
            scanners: None,
            scan_targets: 10,
            scan_window: Duration::from_secs(60),
        }
    }
}

impl PolicyConfig {
    /// The checks of `[policy]` that the types do not make.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.scan_targets > 0 && self.scan_window.is_zero() {
            return Err(invalid(
                "policy.scan_window",
                "must be more than 0 (e.g. \"60s\"); set policy.scan_targets = 0 to turn \
                 behavioural scanner detection off",
            ));
        }
        if self.scan_targets as usize > MAX_SCAN_TARGETS {
            return Err(invalid(
                "policy.scan_targets",
                format!("must be at most {MAX_SCAN_TARGETS} (0 turns it off)"),
            ));
        }
        Ok(())
    }
}
