//! Server transactions (RFC 3261 17.2, RFC 6026 7.1): absorb request retransmissions by
//! resending the last response, retransmit INVITE final responses until the ACK (Timer G),
//! and end on Timers H, I, J and L.

use std::time::{Duration, Instant};

use super::{Kind, State, timers::Timers};

/// A server transaction.
#[derive(Debug)]
pub struct ServerTxn {
    pub kind: Kind,
    state: State,
    /// Reliable transport (TCP): no retransmissions, no waiting for them.
    reliable: bool,
    /// The most recent response sent, resent on request retransmissions.
    last: Option<Vec<u8>>,
    /// Timer G: next retransmission of a final response, and the current interval.
    retransmit: Option<(Instant, Duration)>,
    /// Timer H, I, J or L: when the transaction ends (H: also reported as no ACK).
    end: Option<Instant>,
    /// Whether Timer G retransmits final responses (see [`ServerTxn::local`]).
    timer_g: bool,
    /// The source proved it receives what we send it (see [`ServerTxn::verified`]).
    verified: bool,
}

/// What a timer firing asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimerOut {
    Nothing,
    /// Resend these bytes (Timer G).
    Resend(Vec<u8>),
}

impl ServerTxn {
    /// A transaction for a request just received.
    pub fn new(kind: Kind, reliable: bool) -> ServerTxn {
        ServerTxn {
            kind,
            state: match kind {
                Kind::Invite => State::Proceeding,
                Kind::NonInvite => State::Trying,
            },
            reliable,
            last: None,
            retransmit: None,
            end: None,
            timer_g: true,
            verified: false,
        }
    }

    /// Mark a transaction whose final response the proxy generates itself (401, 404, ...):
    /// no Timer G, as Kamailio's sl replies. The UAC's own INVITE retransmissions (Timer A)
    /// still get the stored response, so a lost answer is recovered; what is saved is a
    /// stream of retransmissions toward sources that never ACK (scanners, spoofed senders).
    pub fn local(&mut self) {
        self.timer_g = false;
    }

    /// The request's source proved it can receive at the address it claims: allow-listed,
    /// or authenticated by digest within this transaction (the nonce it answered went to that
    /// address). Only then does Timer G resend a final response over UDP: toward any other
    /// source a spoofed request would turn each resend into reflected traffic. A
    /// lost final toward an unverified source is recovered by the UAC's own retransmissions
    /// (Timer A/E) while it still sends them.
    pub fn verified(&mut self) {
        self.verified = true;
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Whether a final response was sent.
    pub fn is_final(&self) -> bool {
        !matches!(self.state, State::Trying | State::Proceeding)
    }

    /// A retransmission of the request arrived: the bytes to answer it with, if any.
    pub fn on_retransmission(&self) -> Option<Vec<u8>> {
        match self.state {
            // RFC 6026 7.1: in Accepted, retransmitted INVITEs are absorbed (the 2xx is the
            // UAS's to retransmit, through us).
            State::Accepted | State::Terminated | State::Confirmed => None,
            _ => self.last.clone(),
        }
    }

    /// An ACK matched this (INVITE) transaction: true when it is absorbed here (it
    /// acknowledges our non-2xx final response).
    pub fn on_ack(&mut self, now: Instant, t: &Timers) -> bool {
        match self.state {
            State::Completed => {
                self.state = State::Confirmed;
                self.retransmit = None;
                self.end = Some(now + if self.reliable { Duration::ZERO } else { t.i });
                true
            }
            State::Confirmed => true,
            _ => false,
        }
    }

    /// Send a response with status `code`: returns the bytes to send now, or None when the
    /// state forbids it (e.g. a second final response).
    pub fn respond(
        &mut self,
        code: u16,
        bytes: Vec<u8>,
        now: Instant,
        t: &Timers,
    ) -> Option<Vec<u8>> {
        match (self.kind, self.state, code) {
            (_, State::Trying | State::Proceeding, 100..=199) => {
                self.state = State::Proceeding;
            }
            (Kind::Invite, State::Proceeding, 200..=299) => {
                self.state = State::Accepted;
                self.end = Some(now + t.accepted());
            }
            // RFC 6026 7.1: 2xx retransmissions from the TU go out in Accepted.
            (Kind::Invite, State::Accepted, 200..=299) => {}
            (Kind::Invite, State::Proceeding, _) => {
                self.state = State::Completed;
                if !self.reliable && self.timer_g && self.verified {
                    self.retransmit = Some((now + t.g, t.g));
                }
                self.end = Some(now + t.h);
            }
            (Kind::NonInvite, State::Trying | State::Proceeding, _) => {
                self.state = State::Completed;
                self.end = Some(now + if self.reliable { Duration::ZERO } else { t.j });
            }
            _ => return None,
        }
        self.last = Some(bytes.clone());
        Some(bytes)
    }

    /// The next instant a timer fires.
    pub fn deadline(&self) -> Option<Instant> {
        match (self.retransmit, self.end) {
            (Some((r, _)), Some(e)) => Some(r.min(e)),
            (Some((r, _)), None) => Some(r),
            (None, e) => e,
        }
    }

    /// Run the timers due at `now`.
    pub fn on_timer(&mut self, now: Instant, t: &Timers) -> TimerOut {
        if self.end.is_some_and(|e| e <= now) {
            self.state = State::Terminated;
            self.retransmit = None;
            self.end = None;
            return TimerOut::Nothing;
        }
        if let Some((at, interval)) = self.retransmit
            && at <= now
        {
            // Timer G doubles up to T2 (RFC 3261 17.2.1).
            let next = (interval * 2).min(t.t2);
            self.retransmit = Some((now + next, next));
            if let Some(b) = &self.last {
                return TimerOut::Resend(b.clone());
            }
        }
        TimerOut::Nothing
    }

    /// Whether the transaction ended and can be freed.
    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }

    /// Timer H fired without an ACK (reported by the caller before freeing).
    pub fn ack_missing(&self) -> bool {
        self.kind == Kind::Invite && self.state == State::Completed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A transaction over UDP started now with default timers: it, the timers, the start.
    fn start(kind: Kind) -> (ServerTxn, Timers, Instant) {
        (
            ServerTxn::new(kind, false),
            Timers::default(),
            Instant::now(),
        )
    }

    /// Answer `code` at `at`, the code itself as the bytes.
    fn answer(s: &mut ServerTxn, code: u16, at: Instant, t: &Timers) -> Option<Vec<u8>> {
        s.respond(code, code.to_string().into_bytes(), at, t)
    }

    #[test]
    fn invite_non_2xx_retransmits_until_ack() {
        let (mut s, t, t0) = start(Kind::Invite);
        s.verified();
        assert_eq!(s.on_retransmission(), None);
        assert!(answer(&mut s, 100, t0, &t).is_some());
        assert_eq!(s.on_retransmission(), Some(b"100".to_vec()));
        assert!(answer(&mut s, 486, t0, &t).is_some());
        assert_eq!(s.state(), State::Completed);
        assert_eq!(answer(&mut s, 200, t0, &t), None, "one final only");
        // Timer G: 500ms, 1s, 2s, 4s, 4s...
        let mut at = t0;
        let mut gaps = Vec::new();
        for _ in 0..5 {
            let d = s.deadline().unwrap();
            gaps.push(d - at);
            at = d;
            assert_eq!(s.on_timer(d, &t), TimerOut::Resend(b"486".to_vec()));
        }
        assert_eq!(gaps, vec![ms(500), ms(1000), ms(2000), ms(4000), ms(4000)]);
        assert!(s.on_ack(at, &t));
        assert_eq!(s.state(), State::Confirmed);
        assert_eq!(s.deadline(), Some(at + t.i));
        assert_eq!(s.on_timer(at + t.i, &t), TimerOut::Nothing);
        assert!(s.is_terminated());
    }

    #[test]
    fn invite_timer_h_without_ack() {
        let (mut s, t, t0) = start(Kind::Invite);
        answer(&mut s, 404, t0, &t);
        let mut now = t0;
        while !s.is_terminated() {
            now = s.deadline().unwrap();
            assert!(s.ack_missing() || s.is_terminated());
            s.on_timer(now, &t);
        }
        assert_eq!(now, t0 + t.h);
    }

    #[test]
    fn invite_2xx_accepted_then_l() {
        let (mut s, t, t0) = start(Kind::Invite);
        answer(&mut s, 180, t0, &t);
        assert!(answer(&mut s, 200, t0, &t).is_some());
        assert_eq!(s.state(), State::Accepted);
        assert_eq!(s.on_retransmission(), None);
        assert!(answer(&mut s, 200, t0 + ms(500), &t).is_some());
        assert!(!s.on_ack(t0, &t), "ACK for 2xx is not ours to absorb");
        assert_eq!(s.deadline(), Some(t0 + t.accepted()));
        s.on_timer(t0 + t.accepted(), &t);
        assert!(s.is_terminated());
    }

    #[test]
    fn non_invite_j_and_reliable() {
        let (mut s, t, t0) = start(Kind::NonInvite);
        assert_eq!(s.state(), State::Trying);
        answer(&mut s, 200, t0, &t);
        assert_eq!(s.on_retransmission(), Some(b"200".to_vec()));
        assert_eq!(s.deadline(), Some(t0 + t.j));
        let mut r = ServerTxn::new(Kind::NonInvite, true);
        answer(&mut r, 200, t0, &t);
        assert_eq!(r.deadline(), Some(t0));
        r.on_timer(t0, &t);
        assert!(r.is_terminated());
        let mut ri = ServerTxn::new(Kind::Invite, true);
        answer(&mut ri, 500, t0, &t);
        assert_eq!(ri.deadline(), Some(t0 + t.h), "no Timer G over TCP");
        let mut u = ServerTxn::new(Kind::Invite, false);
        answer(&mut u, 100, t0, &t);
        answer(&mut u, 486, t0, &t);
        assert_eq!(
            u.deadline(),
            Some(t0 + t.h),
            "no Timer G toward an unverified source"
        );
        assert_eq!(u.on_retransmission(), Some(b"486".to_vec()));
        let mut l = ServerTxn::new(Kind::Invite, false);
        l.verified();
        l.local();
        answer(&mut l, 404, t0, &t);
        assert_eq!(l.deadline(), Some(t0 + t.h), "no Timer G for local answers");
        assert_eq!(l.on_retransmission(), Some(b"404".to_vec()));
    }
}
