//! Converting ban expiries between the wall clock (what is stored, and survives a reboot)
//! and the kernel's monotonic clock (what the XDP program compares against).

use std::time::{SystemTime, UNIX_EPOCH};

use crate::clock::monotonic_ns;

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
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
