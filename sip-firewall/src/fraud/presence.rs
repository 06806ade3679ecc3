//! What the guard holds, readable without its lock: whether it tracks any call, whether
//! writes for the state database wait. The proxy's shards share the guard behind one lock;
//! a message of a call the guard does not track (no call tracked at all), or a step that
//! queued nothing to write, need not take it.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicUsize, Ordering},
};

/// A handle on what the guard holds ([`super::Fraud::presence`]); the guard updates it
/// under its own lock, anyone reads it.
#[derive(Clone, Default)]
pub struct Presence(Arc<Inner>);

#[derive(Default)]
struct Inner {
    /// Calls tracked (ringing or answered).
    calls: AtomicUsize,
    /// Whether [`super::Fraud::take_store_ops`] has anything.
    ops: AtomicBool,
}

impl Presence {
    /// Whether the guard tracks any call: with none, no in-dialog request, answer or BYE
    /// concerns it.
    pub fn tracks_calls(&self) -> bool {
        self.0.calls.load(Ordering::Acquire) > 0
    }

    /// Whether writes for the state database wait.
    pub fn ops_queued(&self) -> bool {
        self.0.ops.load(Ordering::Acquire)
    }

    pub(super) fn set_calls(&self, n: usize) {
        self.0.calls.store(n, Ordering::Release);
    }

    pub(super) fn set_ops(&self, queued: bool) {
        self.0.ops.store(queued, Ordering::Release);
    }
}
