//! The kernel's monotonic clock, the one `bpf_ktime_get_ns` reads: ban expiries written by
//! user space and by the XDP program are on the same time line; and the conversion of ban
//! expiries between the wall clock (what is stored, and survives a reboot) and that
//! monotonic clock.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

/// Now, in `CLOCK_MONOTONIC` nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // CLOCK_MONOTONIC cannot fail with a valid pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The monotonic time `d` from now; `None` (never) saturates to `u64::MAX`.
pub fn expiry_after(d: Option<Duration>) -> u64 {
    match d {
        Some(d) => monotonic_ns().saturating_add(d.as_nanos().min(u64::MAX as u128) as u64),
        None => u64::MAX,
    }
}

/// Time left until `expires_ns`, `None` for a permanent entry.
pub fn remaining(expires_ns: u64) -> Option<Duration> {
    if expires_ns == u64::MAX {
        return None;
    }
    Some(Duration::from_nanos(
        expires_ns.saturating_sub(monotonic_ns()),
    ))
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What to add to a monotonic time (ns, a capture's `ktime_ns`) to get Unix-epoch ns.
pub fn mono_to_wall_offset_ns() -> u64 {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    u64::try_from(wall)
        .unwrap_or(u64::MAX)
        .saturating_sub(monotonic_ns())
}

/// The monotonic ns at which the wall clock reads `unix` seconds.
pub fn unix_to_mono(unix: u64) -> u64 {
    let now = unix_now();
    let mono = monotonic_ns();
    if unix >= now {
        mono.saturating_add((unix - now).saturating_mul(1_000_000_000))
    } else {
        mono.saturating_sub((now - unix).saturating_mul(1_000_000_000))
    }
}

/// The unix seconds at which the monotonic clock reads `mono` ns (rounded up).
pub fn mono_to_unix(mono: u64) -> u64 {
    let now_mono = monotonic_ns();
    let now = unix_now();
    if mono >= now_mono {
        now + (mono - now_mono).div_ceil(1_000_000_000)
    } else {
        now.saturating_sub((now_mono - mono) / 1_000_000_000)
    }
}

/// A clock moved by hand, shared with a proxy made by
/// [`Proxy::with_fake_clock`](crate::proxy::Proxy::with_fake_clock).
#[doc(hidden)]
#[derive(Clone)]
pub struct FakeClock(Arc<Mutex<Instant>>);

impl FakeClock {
    /// A clock standing at `start`.
    pub fn starting(start: Instant) -> FakeClock {
        FakeClock(Arc::new(Mutex::new(start)))
    }

    // An `Instant` cannot be left half-written by a panic, so a poisoned lock is taken as it
    // is (and the clock needs nothing of the daemon's lock guard, which reports through the
    // metrics).
    pub fn now(&self) -> Instant {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn advance(&self, d: Duration) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) += d;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_within_a_second() {
        let later = unix_now() + 3600;
        let back = mono_to_unix(unix_to_mono(later));
        assert!(back.abs_diff(later) <= 1, "{back} vs {later}");
        let past = unix_now() - 10;
        assert!(unix_to_mono(past) < monotonic_ns());
    }
}
