//! Contacts that left a request of ours unanswered, and when: their next requests are sent
//! once, without Timer A/E retransmissions, until they answer something (so that a binding
//! aimed at someone else, or a phone gone away, does not turn each call into seven sends
//! toward it). Bounded: beyond [`MAX_SILENT`] a contact is not remembered.

use super::*;

/// How long a contact that answered nothing gets no retransmissions.
const SILENT_FOR: Duration = Duration::from_secs(600);
/// Most silent contacts remembered (beyond: not remembered, counted).
const MAX_SILENT: usize = 4096;

#[derive(Default)]
pub(super) struct Silent {
    since: HashMap<SocketAddr, Instant>,
}

impl Silent {
    /// `addr` left a request unanswered at `now`. False: the table is full (even after
    /// forgetting the expired), and `addr` is not remembered.
    pub(super) fn mark(&mut self, addr: SocketAddr, now: Instant) -> bool {
        if self.since.len() >= MAX_SILENT && !self.since.contains_key(&addr) {
            self.expire(now);
            if self.since.len() >= MAX_SILENT {
                return false;
            }
        }
        self.since.insert(addr, now);
        true
    }

    /// Whether requests to `addr` go without retransmissions.
    pub(super) fn is_silent(&self, addr: SocketAddr, now: Instant) -> bool {
        self.since
            .get(&addr)
            .is_some_and(|at| now.saturating_duration_since(*at) < SILENT_FOR)
    }

    /// `addr` answered: retransmissions toward it again.
    pub(super) fn answered(&mut self, addr: &SocketAddr) {
        if !self.since.is_empty() {
            self.since.remove(addr);
        }
    }

    /// Forget the contacts silent longer than [`SILENT_FOR`] ago.
    pub(super) fn expire(&mut self, now: Instant) {
        self.since
            .retain(|_, at| now.saturating_duration_since(*at) < SILENT_FOR);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silent_until_it_answers_or_the_time_is_up_and_bounded() {
        let now = Instant::now();
        let a: SocketAddr = "192.0.2.1:5060".parse().expect("addr");
        let mut s = Silent::default();
        assert!(s.mark(a, now));
        assert!(s.is_silent(a, now + Duration::from_secs(599)));
        assert!(!s.is_silent(a, now + SILENT_FOR));
        s.answered(&a);
        assert!(!s.is_silent(a, now));
        for i in 0..MAX_SILENT {
            let addr = SocketAddr::new("10.0.0.1".parse().expect("ip"), i as u16);
            assert!(s.mark(addr, now));
        }
        assert!(!s.mark(a, now), "full");
        assert!(s.mark(a, now + SILENT_FOR), "room once the others expired");
    }
}
