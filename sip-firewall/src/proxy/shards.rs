//! The proxy's shards: which core a message goes to, and the calls that concern every
//! shard. A message goes to the shard of its Call-ID (`sip_firewall_common::shard`, the
//! hash the kernel steers UDP datagrams by), the inner one when it is one of our seals
//! (topology hiding), so that every message of a call meets its transactions. The message
//! layer refuses a message without exactly one well-formed Call-ID, so every message
//! reaching here has one; shard 0 otherwise. The kernel, which cannot open a seal, steers
//! a datagram carrying one by its sealed text: it then reaches its shard from another
//! worker's socket, as any message may.
//!
//! What concerns no call (the admin calls, the flow events, the subscribers) goes to shard
//! 0, whose core reaches what the shards share; a reload and a transport error reach every
//! shard; the timer task runs every shard's timers and sleeps until the earliest deadline.

use std::time::Instant;

use sip_firewall_sip::{Message, headers::HeaderName};

use super::{Proxy, core::Core};

impl Proxy {
    /// How many shards.
    pub fn shards(&self) -> usize {
        self.shards.len()
    }

    /// The shard of message `m`: by its Call-ID (see the module doc).
    pub(super) fn shard_of(&self, m: &Message<'_>) -> usize {
        m.get(HeaderName::CallId)
            .map_or(0, |v| self.shared.shard_of(v))
            .min(self.shards.len().saturating_sub(1))
    }

    /// When the timer task has work next: the earliest deadline of the shards.
    pub(super) fn next_due(&self) -> Instant {
        self.shards
            .iter()
            // Not through `with_shard`: that would ring the alarm being set.
            .map(|s| crate::guard::lock(s, "proxy core").next_due())
            .min()
            .unwrap_or_else(Instant::now)
    }

    /// [`Proxy::with_shard`] on shard 0: what concerns no call in particular.
    pub(super) fn with_core<R>(&self, f: impl FnOnce(&mut Core) -> R) -> R {
        self.with_shard(0, f)
    }
}

#[cfg(test)]
impl Proxy {
    /// Transactions alive (server, client) in each shard.
    pub(super) fn active_per_shard(&self) -> Vec<(usize, usize)> {
        self.shards
            .iter()
            .map(|s| crate::guard::lock(s, "proxy core").active())
            .collect()
    }

    /// What the transactions gauges say (server, client).
    pub(super) fn transactions_gauges(&self) -> (i64, i64) {
        let [s, c] = &self.shared.metrics().transactions_by_side;
        (s.get(), c.get())
    }
}
