//! Transactions (RFC 3261 17 with RFC 6026): pure state machines driven by messages and by
//! a clock the caller passes in, so tests run them on a fake clock. They decide what to
//! (re)send and when they end; the proxy does the sending.

pub mod client;
pub mod server;
pub mod timers;

pub use timers::Timers;

/// Whether a transaction is INVITE or non-INVITE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Invite,
    NonInvite,
}

/// The transaction states of RFC 3261 17 and RFC 6026.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Client INVITE before any response.
    Calling,
    /// Non-INVITE before any response.
    Trying,
    Proceeding,
    Completed,
    /// Server INVITE: ACK received.
    Confirmed,
    /// RFC 6026: a 2xx to INVITE was sent / received; 2xx retransmissions still match.
    Accepted,
    Terminated,
}
