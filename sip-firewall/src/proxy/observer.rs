//! Hooks for what other parts of the daemon want to know about (issue 5: the XDP fast path
//! learns our UDP client transactions so it can let their responses through, and bans
//! sources that fail authentication or scan). Every method has an empty default; the
//! proxy calls them under its lock, so implementations must be quick and never block
//! (queue into a channel).

use std::net::SocketAddr;

use crate::server::core::Destination;

/// Receives proxy events.
pub trait Observer: Send + Sync + 'static {
    /// A client transaction was created: a request with our Via `branch` went to `dest`.
    fn client_transaction_created(&self, _branch: &str, _dest: Destination) {}
    /// That client transaction ended and was freed.
    fn client_transaction_terminated(&self, _branch: &str, _dest: Destination) {}
    /// `source` proved to be our subscriber `user` (it is known good for a while).
    fn authenticated(&self, _source: SocketAddr, _user: &str) {}
    /// Credentials from `source` were refused (`reason`: wrong_password, replay, ...).
    fn auth_failure(&self, _source: SocketAddr, _user: Option<&str>, _reason: &str) {}
    /// A request from a scanner (User-Agent on the list) was dropped.
    fn scanner(&self, _source: SocketAddr, _user_agent: &str) {}
}

/// The observer that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {}
