//! What one request's handling carries: the message, where it came from, its server
//! transaction, and what it proved on the way ([`Req`]); and what a forward of it carries
//! down to its branches ([`Onward`]), also when DNS or a failover forwards it later.

use super::*;

/// A request being handled, built once by [`Core::request`] and passed down.
pub(super) struct Req<'a> {
    pub(super) m: &'a Message<'a>,
    /// Who is asking (`ctx.source`) and how the transport vouches for them.
    pub(super) ctx: &'a Context,
    /// Its server transaction.
    pub(super) key: ServerKey,
    pub(super) method: &'a str,
    pub(super) now: Instant,
    /// A digest success within this request: the source receives at its address (the
    /// nonce was sent there).
    pub(super) proved: bool,
    /// Its Call-ID came as one of our seals (`crate::proxy::hide`): toward a hidden
    /// destination it leaves sealed again.
    pub(super) arrived_sealed: bool,
}

impl Req<'_> {
    /// Who is asking.
    pub(super) fn source(&self) -> SocketAddr {
        self.ctx.source
    }

    /// The frame of a forward of this request; `record_route_from`: the transport it came
    /// on when its branches are record-routed.
    pub(super) fn onward(&self, record_route_from: Option<Transport>) -> Onward<'_> {
        Onward {
            key: &self.key,
            method: self.method,
            record_route_from,
            requester: Some(self.ctx.source),
            now: self.now,
        }
    }
}

/// What every branch of a forward shares.
pub(super) struct Onward<'a> {
    /// The server transaction whose answers the branches' responses become.
    pub(super) key: &'a ServerKey,
    pub(super) method: &'a str,
    /// The transport the request came on, when each branch is record-routed.
    pub(super) record_route_from: Option<Transport>,
    /// Whom a refusal names in the security log (None: forwarded after the request's own
    /// handling, by DNS or a failover).
    pub(super) requester: Option<SocketAddr>,
    pub(super) now: Instant,
}
