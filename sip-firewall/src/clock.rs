//! The kernel's monotonic clock, the one `bpf_ktime_get_ns` reads: ban expiries written by
//! user space and by the XDP program are on the same time line.

use std::time::Duration;

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
