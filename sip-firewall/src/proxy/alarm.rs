//! When the timer task wakes: at the core's next deadline, or at once when a message gives
//! the core an earlier one than the task sleeps toward. The core's housekeeping is due once
//! a second, so an idle edge wakes about once a second instead of every few milliseconds,
//! and a busy one wakes when a timer is due, not on a fixed tick.
//!
//! Deadlines are served in [`GRAIN`]s: a busy edge holds thousands of transactions whose
//! deadlines are all different, and waking once per distinct deadline (each wake takes every
//! shard's lock twice) cost more CPU than the messages themselves at a few hundred calls a
//! second.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use tokio::sync::Notify;

/// How late a timer may run: the task sleeps at least this long, and a deadline set while it
/// sleeps wakes it only when it falls more than this before the wake-up. RFC 3261's timers
/// count in steps of T1 = 500 ms (17.1.1.1), and its timers that are 0 on reliable transports
/// (D, J, K, 17.1.1.2, 17.2.2) only free memory: 10 ms late is invisible to a peer, and a
/// busy edge wakes at most 100 times a second.
pub(super) const GRAIN: Duration = Duration::from_millis(10);

/// The timer task's wake-up, shared with the message paths.
pub(super) struct Alarm {
    epoch: Instant,
    /// Nanoseconds from `epoch` the task sleeps toward; `u64::MAX` while it reads the
    /// core's next deadline (a deadline set meanwhile wakes it at once).
    until: AtomicU64,
    wake: Notify,
}

impl Alarm {
    pub(super) fn new() -> Alarm {
        Alarm {
            epoch: Instant::now(),
            until: AtomicU64::new(u64::MAX),
            wake: Notify::new(),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// The core's earliest deadline is now `due`: wake the task if it sleeps past it by more
    /// than a [`GRAIN`].
    pub(super) fn due(&self, due: Instant) {
        let grain = GRAIN.as_nanos() as u64;
        if self.nanos(due).saturating_add(grain) < self.until.load(Ordering::Acquire) {
            // A permit is kept when the task is not waiting yet: its next sleep ends at once.
            self.wake.notify_one();
        }
    }

    /// The task is about to read the core's next deadline.
    pub(super) fn reading(&self) {
        self.until.store(u64::MAX, Ordering::Release);
    }

    /// Sleep until `due` (read after [`Alarm::reading`]) or an earlier deadline is set.
    pub(super) async fn sleep(&self, due: Instant) {
        let at = due.max(Instant::now() + GRAIN);
        self.until.store(self.nanos(at), Ordering::Release);
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => {}
            _ = self.wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The timer task asleep toward `until`; then `later` must leave it asleep and `earlier`
    /// must wake it.
    async fn wakes_for(until: Instant, later: Instant, earlier: Instant) {
        let alarm = Arc::new(Alarm::new());
        alarm.reading();
        let a = alarm.clone();
        let sleeper = tokio::spawn(async move { a.sleep(until).await });
        tokio::task::yield_now().await;
        alarm.due(later);
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "{later:?} left it asleep");
        alarm.due(earlier);
        tokio::time::timeout(Duration::from_secs(1), sleeper)
            .await
            .expect("the earlier deadline woke it")
            .expect("joined");
    }

    #[tokio::test]
    async fn an_earlier_deadline_wakes_the_sleep_and_a_later_one_does_not() {
        let far = Instant::now() + Duration::from_secs(3600);
        wakes_for(
            far,
            far + Duration::from_secs(1),
            Instant::now() + Duration::from_millis(5),
        )
        .await;
    }

    #[tokio::test]
    async fn a_deadline_within_a_grain_of_the_wake_up_waits_for_it() {
        let soon = Instant::now() + Duration::from_secs(60);
        wakes_for(soon, soon - GRAIN / 2, soon - GRAIN * 2).await;
    }

    #[tokio::test]
    async fn a_deadline_set_while_the_task_reads_ends_its_next_sleep() {
        let alarm = Alarm::new();
        alarm.reading();
        alarm.due(Instant::now() + Duration::from_secs(10));
        let far = Instant::now() + Duration::from_secs(3600);
        tokio::time::timeout(Duration::from_secs(1), alarm.sleep(far))
            .await
            .expect("the permit ended the sleep");
    }
}
