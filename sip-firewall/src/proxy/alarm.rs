//! When the timer task wakes: at the core's next deadline, or at once when a message gives
//! the core an earlier one than the task sleeps toward. The core's housekeeping is due once
//! a second, so an idle edge wakes about once a second instead of every few milliseconds,
//! and a busy one wakes when a timer is due, not on a fixed tick.

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::{Duration, Instant},
};

use tokio::sync::Notify;

/// The shortest sleep: a deadline already past runs at once, but never in a tight loop.
const MIN_SLEEP: Duration = Duration::from_millis(1);

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

    /// The core's earliest deadline is now `due`: wake the task if it sleeps past it.
    pub(super) fn due(&self, due: Instant) {
        if self.nanos(due) < self.until.load(Ordering::Acquire) {
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
        let at = due.max(Instant::now() + MIN_SLEEP);
        self.until.store(self.nanos(at), Ordering::Release);
        tokio::select! {
            _ = tokio::time::sleep_until(at.into()) => {}
            _ = self.wake.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_earlier_deadline_wakes_the_sleep_and_a_later_one_does_not() {
        let alarm = std::sync::Arc::new(Alarm::new());
        let far = Instant::now() + Duration::from_secs(3600);
        alarm.reading();
        let a = alarm.clone();
        let sleeper = tokio::spawn(async move { a.sleep(far).await });
        tokio::task::yield_now().await;
        alarm.due(far + Duration::from_secs(1));
        tokio::task::yield_now().await;
        assert!(!sleeper.is_finished(), "a later deadline left it asleep");
        alarm.due(Instant::now() + Duration::from_millis(5));
        tokio::time::timeout(Duration::from_secs(1), sleeper)
            .await
            .expect("an earlier deadline woke it")
            .expect("joined");
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
