//! Verdict and reason counters of the XDP program.
//!
//! Every packet the program sees moves exactly one counter: the reason of its verdict.
//! The counters live in a per-CPU array indexed by [`Reason`]; user space sums the CPUs.

/// Why the XDP program passed or dropped a packet. The discriminant is the index in the
/// counters map.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// Passed to the stack after every check (or not ours to judge: ARP, other ports...).
    Passed = 0,
    /// Source on the allow list: passed at once, no later check.
    Allowed = 1,
    /// Source on the deny list: dropped.
    Denied = 2,
    /// Source has a live ban: dropped.
    Banned = 3,
    /// Source over its flood limit: dropped and banned.
    Flood = 4,
    /// UDP payload larger than the configured maximum: dropped.
    Oversize = 5,
    /// Payload on a SIP port that is neither SIP, a CRLF keep-alive nor STUN: dropped.
    Malformed = 6,
    /// A SIP response that matches none of the proxy's transactions: dropped.
    StrayReply = 7,
    /// An unknown source while the global request budget is spent: dropped.
    Pressure = 8,
    /// A known source over its own (larger) per-source budget: dropped, never banned.
    Throttled = 9,
    /// A new TCP connection (a SYN) to a SIP stream port (TCP, TLS, WebSocket) within its
    /// source's flood budget: passed, and counted, so new connections per second are seen.
    /// Over the budget a SYN is a `Flood` (banned) or, from a known source, `Throttled`.
    Connection = 10,
}

impl Reason {
    /// Number of reasons, the length of the counters map.
    pub const COUNT: u32 = 11;

    /// All reasons, in index order.
    pub const ALL: [Reason; Self::COUNT as usize] = [
        Reason::Passed,
        Reason::Allowed,
        Reason::Denied,
        Reason::Banned,
        Reason::Flood,
        Reason::Oversize,
        Reason::Malformed,
        Reason::StrayReply,
        Reason::Pressure,
        Reason::Throttled,
        Reason::Connection,
    ];

    /// Stable lower-case name, used in metrics labels and the CLI.
    pub const fn name(self) -> &'static str {
        match self {
            Reason::Passed => "passed",
            Reason::Allowed => "allowed",
            Reason::Denied => "denied",
            Reason::Banned => "banned",
            Reason::Flood => "flood",
            Reason::Oversize => "oversize",
            Reason::Malformed => "malformed",
            Reason::StrayReply => "stray_reply",
            Reason::Pressure => "pressure",
            Reason::Throttled => "throttled",
            Reason::Connection => "connection",
        }
    }

    /// Whether a packet with this reason was dropped (`XDP_DROP`).
    pub const fn is_drop(self) -> bool {
        !matches!(self, Reason::Passed | Reason::Allowed | Reason::Connection)
    }

    /// The reason of a counters-map index.
    pub const fn from_index(i: u32) -> Option<Reason> {
        if i < Self::COUNT {
            Some(Self::ALL[i as usize])
        } else {
            None
        }
    }
}

/// One per-CPU counter: packets and bytes (whole frames, as the NIC delivered them).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

#[cfg(feature = "user")]
unsafe impl aya::Pod for Counter {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_round_trip() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as u32, i as u32);
            assert_eq!(Reason::from_index(i as u32), Some(*r));
        }
        assert_eq!(Reason::from_index(Reason::COUNT), None);
        assert!(!Reason::Allowed.is_drop());
        assert!(Reason::Flood.is_drop());
    }

    #[test]
    fn counter_layout() {
        assert_eq!(core::mem::size_of::<Counter>(), 16);
    }
}
