//! The series of a labelled counter resolved once: a message's counters are bumped without
//! hashing their labels and taking the vector's lock each time (`with_label_values`).
//!
//! # Example
//!
//! ```
//! use prometheus::{IntCounterVec, Opts};
//! use sip_firewall::metrics::resolved::Resolved;
//!
//! let vec = IntCounterVec::new(Opts::new("kinds_total", "kinds"), &["kind"]).unwrap();
//! let kinds: Resolved<2> = Resolved::new(vec.clone());
//! kinds.inc(1, "response");
//! assert_eq!(vec.with_label_values(&["response"]).get(), 1);
//! ```

use std::sync::OnceLock;

use prometheus::{IntCounter, IntCounterVec};

/// The series of a one-label counter vector by index, each resolved on first use. The
/// caller keeps index and label in step (one enum gives both); an index past `N` still
/// counts, through the vector.
#[derive(Clone)]
pub struct Resolved<const N: usize> {
    vec: IntCounterVec,
    series: [OnceLock<IntCounter>; N],
}

impl<const N: usize> Resolved<N> {
    /// The series of `vec`, none resolved yet.
    pub fn new(vec: IntCounterVec) -> Resolved<N> {
        Resolved {
            vec,
            series: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Count one on the series `label`, the `index`th.
    pub fn inc(&self, index: usize, label: &str) {
        match self.series.get(index) {
            Some(s) => s.get_or_init(|| self.vec.with_label_values(&[label])).inc(),
            None => self.vec.with_label_values(&[label]).inc(),
        }
    }

    /// The vector, for reading.
    pub fn vec(&self) -> &IntCounterVec {
        &self.vec
    }
}
