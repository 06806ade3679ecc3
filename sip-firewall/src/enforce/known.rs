//! Known sources: registered contacts, authenticated subscribers and peers of our
//! transactions, remembered for a while (bounded) in user space and in the XDP `KNOWN` map,
//! where they get the known flood limit and pass the pressure budget.

use std::{net::IpAddr, time::Duration};

use super::{EnforceError, Enforcer};

/// Most known sources remembered in user space; past it the oldest knowledge is dropped.
const MAX_KNOWN: usize = 200_000;

/// What KNOWN holds of a source, as in XDP ([`sip_firewall_common::addr::flood_group`]):
/// the IPv4 address, the IPv6 /64 (a subscriber's privacy addresses rotate in it).
pub fn known_group(ip: IpAddr) -> IpAddr {
    crate::xdp::maps::key_ip(&sip_firewall_common::addr::flood_group(
        crate::xdp::maps::ip_key(ip),
    ))
}

impl Enforcer {
    /// `ip` is a good source (a registered contact, an authenticated subscriber, the peer of
    /// a live transaction) for `ttl`: under pressure it always passes.
    pub fn know(&mut self, ip: IpAddr, ttl: Duration) -> Result<(), EnforceError> {
        let now = std::time::Instant::now();
        if self.known.len() >= MAX_KNOWN {
            self.known.retain(|_, until| *until > now);
        }
        self.known.insert(known_group(ip), now + ttl);
        if let Some(x) = self.xdp.as_mut() {
            x.maps
                .known_add(ip, crate::clock::expiry_after(Some(ttl)))?;
        }
        Ok(())
    }

    /// `ip` is no longer known good (its own logins failed repeatedly): it loses the known
    /// tier in user space and in XDP.
    pub fn forget_known(&mut self, ip: IpAddr) -> Result<(), EnforceError> {
        self.known.remove(&known_group(ip));
        if let Some(x) = self.xdp.as_mut() {
            let _ = x.maps.known_remove(ip)?;
        }
        Ok(())
    }

    /// Whether `ip` is a known good source now.
    pub fn is_known(&self, ip: IpAddr) -> bool {
        self.known
            .get(&known_group(ip))
            .is_some_and(|until| *until > std::time::Instant::now())
    }
}
