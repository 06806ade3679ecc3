//! What the maps hold about one source, read back for `sip-firewall why`: the entries the
//! program looks up for it (its manual ban, the learned ban and flood state of its prefix,
//! its known-good entry) and the shared pressure budget, exactly as the program reads them
//! (the same keys: [`XdpConfig::ban_key`], [`flood_group`]).

use std::net::IpAddr;

use aya::maps::MapError;
use sip_firewall_common::{BanValue, XdpConfig, addr::flood_group, maps as names};

use super::{MapsError, XdpMaps, ip_key, key_ip};

/// The entries of one source, expired or not (the program deletes expired bans only when
/// the source comes back, the janitor every sweep): the reader compares with
/// [`crate::clock::monotonic_ns`].
#[derive(Clone, Debug, Default)]
pub struct SourceEntries {
    /// The manual ban of the address (`SIPFW_BANS`).
    pub manual_ban: Option<BanValue>,
    /// The prefix learned bans and flood state are kept under.
    pub prefix: Option<IpAddr>,
    /// The learned ban of that prefix (`SIPFW_LBANS`).
    pub learned_ban: Option<BanValue>,
    /// The flood limit's theoretical arrival time of that prefix (`SIPFW_FLOOD`, monotonic ns).
    pub flood_tat: Option<u64>,
    /// Until when the source's group is known good (`SIPFW_KNOWN`, monotonic ns).
    pub known_until: Option<u64>,
    /// The theoretical arrival time of the budget unknown sources share (`SIPFW_PRESSURE`).
    pub pressure_tat: Option<u64>,
    /// The settings in force (as last written: the governor's budget included).
    pub settings: XdpConfig,
}

/// A lookup whose missing key is an answer, not an error.
pub(super) fn found<V>(r: Result<V, MapError>, name: &'static str) -> Result<Option<V>, MapsError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(None)
        }
        Err(source) => Err(MapsError::Map { name, source }),
    }
}

impl XdpMaps {
    /// What the maps hold about `ip` now.
    pub fn source(&self, ip: IpAddr) -> Result<SourceEntries, MapsError> {
        let key = ip_key(ip);
        let prefix = self.settings.ban_key(key);
        Ok(SourceEntries {
            manual_ban: found(self.filling.bans.get(&key, 0), names::BANS)?,
            prefix: Some(key_ip(&prefix)),
            learned_ban: found(
                self.filling.learned_bans.get(&prefix, 0),
                names::LEARNED_BANS,
            )?,
            flood_tat: found(self.filling.flood.get(&prefix, 0), names::FLOOD)?,
            known_until: found(self.filling.known.get(&flood_group(key), 0), names::KNOWN)?,
            pressure_tat: found(self.pressure.get(&0, 0), names::PRESSURE)?,
            settings: self.settings,
        })
    }
}
