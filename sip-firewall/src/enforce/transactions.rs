//! The XDP transaction keys: the proxy's open UDP client transactions (branch and peer),
//! written into the map so that their responses pass the stray-reply check.

use std::time::Duration;

use super::{EnforceError, Enforcer};

impl Enforcer {
    /// Let responses to the UDP client transaction of `branch` through XDP for `ttl` (or
    /// until closed).
    pub fn transaction_open(
        &mut self,
        branch: &str,
        peer: Option<std::net::SocketAddr>,
        ttl: Duration,
    ) -> Result<(), EnforceError> {
        if let Some(x) = self.xdp.as_mut() {
            x.maps
                .transaction_open(branch, peer, crate::clock::expiry_after(Some(ttl)))?;
        }
        Ok(())
    }

    /// A handle on the transaction map for the proxy's synchronous writes, when XDP is
    /// attached (see [`crate::xdp::maps::XdpMaps::transaction_keys`]).
    pub fn transaction_keys(
        &self,
    ) -> Result<Option<crate::xdp::maps::TransactionKeys>, EnforceError> {
        match self.xdp.as_ref() {
            Some(x) => Ok(Some(x.maps.transaction_keys()?)),
            None => Ok(None),
        }
    }

    /// The transaction of `branch` is over.
    pub fn transaction_close(
        &mut self,
        branch: &str,
        peer: Option<std::net::SocketAddr>,
    ) -> Result<(), EnforceError> {
        if let Some(x) = self.xdp.as_mut() {
            x.maps.transaction_close(branch, peer)?;
        }
        Ok(())
    }

    /// Tell XDP that some transaction keys are of the branch alone (`[proxy]
    /// reply_from_any` is not empty).
    pub fn set_any_peer_keys(&mut self, on: bool) -> Result<(), EnforceError> {
        if let Some(x) = self.xdp.as_mut() {
            x.maps.set_any_peer_keys(on)?;
        }
        Ok(())
    }

    /// Turn the XDP stray-reply check on (when the proxy reports its transactions).
    pub fn set_stray_check(&mut self, on: bool) -> Result<(), EnforceError> {
        if let Some(x) = self.xdp.as_mut() {
            x.maps.set_stray_check(on)?;
        }
        Ok(())
    }
}
