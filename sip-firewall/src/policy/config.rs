//! `[policy]`: who is trusted and who is refused outright.

use ipnet::IpNet;
use serde::Deserialize;

/// `[policy]`: who is trusted and who is refused outright.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Trusted prefixes (trunks, PBXs): every check is skipped for them.
    pub allow: Vec<IpNet>,
    /// Refused prefixes: dropped.
    pub deny: Vec<IpNet>,
    /// User-Agent substrings (case-insensitive) of scanners whose requests are dropped
    /// silently; absent: the default list (friendly-scanner, sipvicious, sipcli, ...).
    pub scanners: Option<Vec<String>>,
}
