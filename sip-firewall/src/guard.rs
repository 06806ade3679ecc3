//! The message boundary: a panic while handling one message (or one timer tick) is caught
//! here, counted in `sipfw_internal_errors_total{kind}`, logged at most once per source per
//! [`LOG_INTERVAL`], and the daemon goes on with the next message. A bug reachable from one
//! packet must cost that packet, not the listener (one datagram must never stop the daemon).
//!
//! The default panic hook prints every panic to stderr: a packet that panics the parser, sent
//! in a loop, would fill the log. Inside [`catch`] the hook keeps the message for the catch
//! site instead, which logs it with the source, rate-limited.

use std::{
    cell::{Cell, RefCell},
    net::{IpAddr, SocketAddr},
    panic::AssertUnwindSafe,
    sync::{Mutex, Once},
    time::{Duration, Instant},
};

use crate::logging::{RateLimit, Verdict};

/// One log line per source (and one for "no source") per interval.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Sources remembered for the rate limit: a bound whatever the attacker varies.
const MAX_LOG_SOURCES: usize = 1024;

thread_local! {
    /// Set while a guarded call runs on this thread.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
    /// The last panic's message and location, kept by the hook for the catch site.
    static LAST: RefCell<Option<String>> = const { RefCell::new(None) };
}

static HOOK: Once = Once::new();

/// The description of the last panic caught (for the fuzz target's failure message).
static LAST_CAUGHT: Mutex<Option<String>> = Mutex::new(None);

/// What the last caught panic said, and where.
pub fn last_caught() -> Option<String> {
    lock(&LAST_CAUGHT, "last caught").clone()
}

/// Install (once) the hook that keeps quiet inside guarded calls and defers to the previous
/// hook everywhere else.
fn install_hook() {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.with(Cell::get) {
                let what = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "panic".into());
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                LAST.with(|l| *l.borrow_mut() = Some(format!("{what}{at}")));
            } else {
                previous(info);
            }
        }));
    });
}

/// The rate limit of the panic log.
static LOGGED: Mutex<RateLimit<Option<IpAddr>>> =
    Mutex::new(RateLimit::new(LOG_INTERVAL, MAX_LOG_SOURCES));

/// Whether a panic from `source` may be logged now. With every slot recent (a flood of
/// distinct panicking sources) a new source is not logged: the counter still says how many.
fn may_log(source: Option<IpAddr>, now: Instant) -> bool {
    matches!(
        crate::logging::decide_shared(&LOGGED, source, now),
        Verdict::Log { .. }
    )
}

/// Run `f`; a panic inside it is caught, counted under `kind`, logged (rate-limited) with
/// `source`, and turned into `None`.
pub fn catch<R>(
    kind: &'static str,
    source: Option<SocketAddr>,
    f: impl FnOnce() -> R,
) -> Option<R> {
    install_hook();
    let was = GUARDED.with(|g| g.replace(true));
    let r = std::panic::catch_unwind(AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(was));
    match r {
        Ok(r) => Some(r),
        Err(_) => {
            crate::metrics::internal_error(kind);
            let what = LAST
                .with(|l| l.borrow_mut().take())
                .unwrap_or_else(|| "panic".into());
            *lock(&LAST_CAUGHT, "last caught") = Some(what.clone());
            if may_log(source.map(|s| s.ip()), Instant::now()) {
                match source {
                    Some(s) => tracing::error!(
                        source = %s,
                        kind,
                        "internal error while handling a message (dropped, daemon continues): {what}"
                    ),
                    None => tracing::error!(kind, "internal error (daemon continues): {what}"),
                }
            }
            None
        }
    }
}

/// Lock `m`; a lock poisoned by a panic is recovered (the state is what the panicking code
/// left, which every caller tolerates: tables of independent entries), counted and logged,
/// and its poison cleared so that one panic is counted once.
pub fn lock<'a, T>(m: &'a Mutex<T>, what: &'static str) -> std::sync::MutexGuard<'a, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => {
            crate::metrics::internal_error("lock_poisoned");
            tracing::error!(
                lock = what,
                "lock poisoned by a panic: recovered, serving on"
            );
            m.clear_poison();
            p.into_inner()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caught_counted_and_rate_limited() {
        let src: SocketAddr = "192.0.2.77:5060".parse().unwrap();
        let before = crate::metrics::internal_errors("test_guard");
        assert_eq!(catch("test_guard", Some(src), || 7), Some(7));
        let r: Option<()> = catch("test_guard", Some(src), || panic!("boom"));
        assert_eq!(r, None);
        assert_eq!(crate::metrics::internal_errors("test_guard"), before + 1);
        let t0 = Instant::now();
        let other = Some("192.0.2.78".parse().unwrap());
        assert!(may_log(other, t0));
        assert!(!may_log(other, t0 + Duration::from_secs(1)));
        assert!(may_log(other, t0 + LOG_INTERVAL));
    }

    #[test]
    fn poisoned_lock_is_counted_once() {
        let m = std::sync::Arc::new(Mutex::new(1));
        let m2 = m.clone();
        let _ = std::thread::spawn(move || {
            let _g = m2.lock().unwrap();
            panic!("poison it");
        })
        .join();
        let before = crate::metrics::internal_errors("lock_poisoned");
        assert_eq!(*lock(&m, "test"), 1);
        assert_eq!(*lock(&m, "test"), 1);
        assert_eq!(crate::metrics::internal_errors("lock_poisoned"), before + 1);
    }
}
