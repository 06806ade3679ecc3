//! Client transactions (RFC 3261 17.1, RFC 6026 7.2): retransmit the request (Timers A, E),
//! time out (B, F), acknowledge non-2xx finals to INVITE hop by hop and absorb their
//! retransmissions (D), keep matching 2xx retransmissions in Accepted (M), absorb
//! non-INVITE final retransmissions (K).

use std::time::{Duration, Instant};

use super::{Kind, State, timers::Timers};

/// A client transaction.
#[derive(Debug)]
pub struct ClientTxn {
    pub kind: Kind,
    state: State,
    reliable: bool,
    /// The request as sent, for retransmissions.
    request: Vec<u8>,
    /// Timer A or E: next retransmission and current interval.
    retransmit: Option<(Instant, Duration)>,
    /// Timer B or F.
    timeout: Option<Instant>,
    /// Timer D, K or M.
    end: Option<Instant>,
    /// The ACK sent for a non-2xx final, resent on its retransmissions.
    ack: Option<Vec<u8>>,
}

/// What a response does to the transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseOut {
    /// Pass the response to the proxy core (false: a retransmission absorbed here).
    pub pass_up: bool,
    /// Send this (the ACK of a non-2xx final).
    pub send: Option<Vec<u8>>,
}

/// What a timer firing asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimerOut {
    Nothing,
    /// Retransmit the request.
    Resend(Vec<u8>),
    /// Timer B or F: no final response; the core acts as if a 408 came.
    Timeout,
}

impl ClientTxn {
    /// A transaction for a request sent at `now`.
    pub fn new(
        kind: Kind,
        reliable: bool,
        request: Vec<u8>,
        now: Instant,
        t: &Timers,
    ) -> ClientTxn {
        let (state, first, timeout) = match kind {
            Kind::Invite => (State::Calling, t.a, t.b),
            Kind::NonInvite => (State::Trying, t.e, t.f),
        };
        ClientTxn {
            kind,
            state,
            reliable,
            request,
            retransmit: (!reliable).then_some((now + first, first)),
            timeout: Some(now + timeout),
            end: None,
            ack: None,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// A response with status `code` arrived. `make_ack` builds the ACK for a non-2xx
    /// final response to INVITE (it needs the response's To tag).
    pub fn on_response(
        &mut self,
        code: u16,
        now: Instant,
        t: &Timers,
        make_ack: impl FnOnce() -> Vec<u8>,
    ) -> ResponseOut {
        let pass = ResponseOut {
            pass_up: true,
            send: None,
        };
        let absorb = ResponseOut {
            pass_up: false,
            send: None,
        };
        match (self.kind, self.state) {
            (_, State::Terminated) => absorb,
            (Kind::Invite, State::Calling | State::Proceeding) => match code {
                100..=199 => {
                    self.state = State::Proceeding;
                    // Timer A stops on any provisional; Timer B too (the proxy's Timer C
                    // takes over, RFC 3261 16.6 step 11).
                    self.retransmit = None;
                    self.timeout = None;
                    pass
                }
                200..=299 => {
                    self.enter(State::Accepted, now, t.accepted());
                    pass
                }
                _ => {
                    let ack = make_ack();
                    self.ack = Some(ack.clone());
                    let d = if self.reliable { Duration::ZERO } else { t.d };
                    self.enter(State::Completed, now, d);
                    ResponseOut {
                        pass_up: true,
                        send: Some(ack),
                    }
                }
            },
            // RFC 6026 7.2: 2xx retransmissions (and 2xx from other forks) go up.
            (Kind::Invite, State::Accepted) => {
                if (200..=299).contains(&code) {
                    pass
                } else {
                    absorb
                }
            }
            (Kind::Invite, _) => match code {
                300..=699 => ResponseOut {
                    pass_up: false,
                    send: self.ack.clone(),
                },
                _ => absorb,
            },
            (Kind::NonInvite, State::Trying | State::Proceeding) => {
                if code < 200 {
                    self.state = State::Proceeding;
                    // Timer E keeps going, at T2 (RFC 3261 17.1.2.2).
                    if let Some((at, _)) = self.retransmit {
                        self.retransmit = Some((at, t.t2));
                    }
                } else {
                    let k = if self.reliable { Duration::ZERO } else { t.k };
                    self.enter(State::Completed, now, k);
                }
                pass
            }
            (Kind::NonInvite, _) => absorb,
        }
    }

    fn enter(&mut self, state: State, now: Instant, wait: Duration) {
        self.state = state;
        self.retransmit = None;
        self.timeout = None;
        self.end = Some(now + wait);
    }

    /// The next instant a timer fires.
    pub fn deadline(&self) -> Option<Instant> {
        [self.retransmit.map(|r| r.0), self.timeout, self.end]
            .into_iter()
            .flatten()
            .min()
    }

    /// Run the timers due at `now`.
    pub fn on_timer(&mut self, now: Instant, t: &Timers) -> TimerOut {
        if self.end.is_some_and(|e| e <= now) {
            self.terminate();
            return TimerOut::Nothing;
        }
        if self.timeout.is_some_and(|e| e <= now) {
            self.terminate();
            return TimerOut::Timeout;
        }
        if let Some((at, interval)) = self.retransmit
            && at <= now
        {
            // Timer A doubles without bound (B ends it); Timer E doubles up to T2.
            let next = match self.kind {
                Kind::Invite => interval * 2,
                Kind::NonInvite if self.state == State::Proceeding => t.t2,
                Kind::NonInvite => (interval * 2).min(t.t2),
            };
            self.retransmit = Some((now + next, next));
            return TimerOut::Resend(self.request.clone());
        }
        TimerOut::Nothing
    }

    /// Stop retransmitting and end now (a branch given up, e.g. cancelled before any
    /// response, RFC 3261 9.1 once Timer C or the proxy decides so).
    pub fn terminate(&mut self) {
        self.state = State::Terminated;
        self.retransmit = None;
        self.timeout = None;
        self.end = None;
    }

    pub fn is_terminated(&self) -> bool {
        self.state == State::Terminated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A transaction over UDP started now with default timers: it, the timers, the start.
    fn start(kind: Kind) -> (ClientTxn, Timers, Instant) {
        let t = Timers::default();
        let t0 = Instant::now();
        let req = if kind == Kind::Invite {
            "INVITE"
        } else {
            "BYE"
        };
        let c = ClientTxn::new(kind, false, req.as_bytes().to_vec(), t0, &t);
        (c, t, t0)
    }

    /// `code` at `t0`, for a transaction that must build no ACK for it.
    fn respond(c: &mut ClientTxn, code: u16, t0: Instant, t: &Timers) -> ResponseOut {
        c.on_response(code, t0, t, || unreachable!())
    }

    fn drive(c: &mut ClientTxn, t: &Timers, t0: Instant) -> (Vec<Duration>, Instant) {
        let mut resends = Vec::new();
        loop {
            let d = c.deadline().unwrap();
            match c.on_timer(d, t) {
                TimerOut::Resend(_) => resends.push(d - t0),
                TimerOut::Timeout => return (resends, d),
                TimerOut::Nothing => {}
            }
        }
    }

    #[test]
    fn invite_a_doubles_b_times_out() {
        let (mut c, t, t0) = start(Kind::Invite);
        let (resends, end) = drive(&mut c, &t, t0);
        // 0.5, 1.5, 3.5, 7.5, 15.5, 31.5 seconds after the first send.
        assert_eq!(
            resends,
            vec![ms(500), ms(1500), ms(3500), ms(7500), ms(15500), ms(31500)]
        );
        assert_eq!(end, t0 + t.b);
        assert!(c.is_terminated());
    }

    #[test]
    fn non_invite_e_capped_f_times_out() {
        let (mut c, t, t0) = start(Kind::NonInvite);
        let (resends, end) = drive(&mut c, &t, t0);
        assert_eq!(
            &resends[..5],
            &[ms(500), ms(1500), ms(3500), ms(7500), ms(11500)]
        );
        assert_eq!(end, t0 + t.f);
    }

    #[test]
    fn invite_non_2xx_acked_and_absorbed() {
        let (mut c, t, t0) = start(Kind::Invite);
        let r = respond(&mut c, 180, t0, &t);
        assert!(r.pass_up && r.send.is_none());
        assert_eq!(c.deadline(), None, "no retransmission after a provisional");
        let r = c.on_response(486, t0, &t, || b"ACK".to_vec());
        assert_eq!(
            r,
            ResponseOut {
                pass_up: true,
                send: Some(b"ACK".to_vec())
            }
        );
        assert_eq!(c.state(), State::Completed);
        let r = respond(&mut c, 486, t0, &t);
        assert_eq!(
            r,
            ResponseOut {
                pass_up: false,
                send: Some(b"ACK".to_vec())
            }
        );
        assert_eq!(c.deadline(), Some(t0 + t.d));
        c.on_timer(t0 + t.d, &t);
        assert!(c.is_terminated());
    }

    #[test]
    fn invite_2xx_accepted_passes_retransmissions() {
        let (mut c, t, t0) = start(Kind::Invite);
        assert!(respond(&mut c, 200, t0, &t).pass_up);
        assert_eq!(c.state(), State::Accepted);
        assert!(respond(&mut c, 200, t0, &t).pass_up);
        assert!(!respond(&mut c, 486, t0, &t).pass_up);
        assert_eq!(c.deadline(), Some(t0 + t.accepted()));
        assert_eq!(c.on_timer(t0 + t.accepted(), &t), TimerOut::Nothing);
        assert!(c.is_terminated());
    }

    #[test]
    fn non_invite_final_then_k() {
        let (mut c, t, t0) = start(Kind::NonInvite);
        assert!(respond(&mut c, 200, t0, &t).pass_up);
        assert!(!respond(&mut c, 200, t0, &t).pass_up);
        assert_eq!(c.deadline(), Some(t0 + t.k));
        let mut r = ClientTxn::new(Kind::NonInvite, true, b"BYE".to_vec(), t0, &t);
        assert_eq!(r.deadline(), Some(t0 + t.f), "no Timer E over TCP");
        respond(&mut r, 200, t0, &t);
        assert_eq!(r.deadline(), Some(t0));
    }
}
