//! The response context of a forwarded request (RFC 3261 16.7): its branches, the best
//! final response so far, and whether the request was cancelled.

use std::time::Instant;

use super::msg::SipMsg;
use crate::seams::Destination;

/// Where a branch stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BranchState {
    /// Sent, no response yet.
    Pending,
    /// A provisional response came (a CANCEL may be sent now).
    Provisional,
    /// A final response came, or the branch timed out.
    Done,
}

/// One branch of a forwarded request.
#[derive(Clone, Debug)]
pub struct Branch {
    /// Our Via branch (the client transaction's key with the method).
    pub branch: String,
    pub state: BranchState,
    /// Timer C (INVITE, RFC 3261 16.6 step 11); after a CANCEL, how long we wait for the
    /// final response before giving up on the branch.
    pub timer_c: Option<Instant>,
    /// The CANCEL for this branch and where it goes (INVITE only).
    pub cancel: Option<(Vec<u8>, Destination)>,
    /// Cancel as soon as a provisional response arrives (RFC 3261 9.1: not before).
    pub cancel_pending: bool,
    /// A CANCEL was sent.
    pub cancelled: bool,
    /// The next targets of this branch's name (RFC 3263 4.3), tried in order on a
    /// transport error, a timeout or a 503; None for a target that was not resolved by DNS.
    pub failover: Option<Box<Failover>>,
}

/// What a branch needs to be sent again to the next target of its name (RFC 3263 4.3).
#[derive(Clone, Debug)]
pub struct Failover {
    /// The request as it was before this branch's Via and Record-Route were added.
    pub msg: SipMsg,
    /// The transport the request came on, when the branch is record-routed.
    pub record_route_from: Option<sip_firewall_sip::Transport>,
    /// The targets not tried yet, in order.
    pub alternates: Vec<Destination>,
}

/// The response context.
#[derive(Debug, Default)]
pub struct Fork {
    pub branches: Vec<Branch>,
    /// The best final response so far: its code and the response (our Via removed), or
    /// None for one we generate (408 of a branch that timed out).
    best: Option<(u16, Option<SipMsg>)>,
    /// A final response went upstream.
    pub final_sent: bool,
    /// The UAC cancelled the request.
    pub cancelled: bool,
}

/// Rank of a final response in RFC 3261 16.7 step 6: 6xx first, then the lowest class.
fn rank(code: u16) -> u16 {
    if code >= 600 { 0 } else { code / 100 }
}

impl Fork {
    /// A final non-2xx response on a branch: keep it if it is the best so far.
    pub fn offer(&mut self, code: u16, resp: Option<SipMsg>) {
        let better = match &self.best {
            None => true,
            Some((c, _)) => rank(code) < rank(*c),
        };
        if better {
            self.best = Some((code, resp));
        }
    }

    /// Whether every branch is done.
    pub fn all_done(&self) -> bool {
        self.branches.iter().all(|b| b.state == BranchState::Done)
    }

    /// The best response, taken.
    pub fn take_best(&mut self) -> Option<(u16, Option<SipMsg>)> {
        self.best.take()
    }

    /// The next Timer C instant.
    pub fn next_timer(&self) -> Option<Instant> {
        self.branches
            .iter()
            .filter(|b| b.state != BranchState::Done)
            .filter_map(|b| b.timer_c)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn best_response() {
        let mut f = Fork::default();
        let m = |c: u16| Some(SipMsg::request("X", &format!("sip:{c}@h")));
        f.offer(486, m(486));
        f.offer(503, m(503));
        assert_eq!(f.best.as_ref().map(|b| b.0), Some(486));
        f.offer(302, m(302));
        assert_eq!(f.best.as_ref().map(|b| b.0), Some(302));
        f.offer(603, m(603));
        f.offer(404, m(404));
        assert_eq!(f.take_best().map(|b| b.0), Some(603));
        assert!(f.take_best().is_none());
        assert!(f.all_done(), "no branch: nothing pending");
    }
}
