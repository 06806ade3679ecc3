//! The generic cell rate algorithm: a token bucket kept as one timestamp, the theoretical
//! arrival time (TAT) of the next event. The flood limit per source and the pressure budget
//! use it, in the XDP program and in user space alike.

/// One event at `now` against the stored `tat`: the new TAT when the event is admitted,
/// `None` when it is over the limit (the TAT may run at most `tolerance` ahead of now, and
/// each admitted event moves it `interval` on).
///
/// ```
/// use sip_firewall_common::gcra::admit;
/// // 1 event per 10 ns, bursts of 3 (tolerance 2 intervals).
/// let mut tat = 0;
/// for _ in 0..3 {
///     tat = admit(tat, 100, 10, 20).unwrap();
/// }
/// assert_eq!(admit(tat, 100, 10, 20), None);
/// assert!(admit(tat, 110, 10, 20).is_some());
/// ```
#[inline(always)]
pub const fn admit(tat: u64, now: u64, interval: u64, tolerance: u64) -> Option<u64> {
    let t = if tat > now { tat } else { now };
    if t - now > tolerance {
        None
    } else {
        Some(t + interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_the_sustained_rate() {
        // 5 per second, bursts of 5.
        let (interval, tolerance) = (200, 800);
        let mut tat = 0;
        for i in 0..5 {
            tat = admit(tat, 1_000, interval, tolerance).unwrap_or_else(|| panic!("burst {i}"));
        }
        assert_eq!(admit(tat, 1_000, interval, tolerance), None);
        // One interval later, one more.
        tat = admit(tat, 1_200, interval, tolerance).unwrap();
        assert_eq!(admit(tat, 1_200, interval, tolerance), None);
        // Idle long enough: the whole burst again, no credit beyond it.
        for _ in 0..5 {
            tat = admit(tat, 100_000, interval, tolerance).unwrap();
        }
        assert_eq!(admit(tat, 100_000, interval, tolerance), None);
    }
}
