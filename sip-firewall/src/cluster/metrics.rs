//! `sipfw_cluster_*`: whether this node reaches Redis, what it sends and receives, how late,
//! and what it refused (`sipfw_cluster_rejected_total{reason}`, the reasons of
//! `super::trust::Reject`).

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use tracing::warn;

use crate::logging::{RateLimit, Verdict};

/// The cluster's metrics (cheap to clone: handles on the registered series).
#[derive(Clone)]
pub struct ClusterMetrics {
    /// 1 while connected to Redis with the full set loaded.
    pub connected: prometheus::IntGauge,
    /// Events by kind (ban, unban, list_add, ...) and direction (out: written to Redis, in:
    /// received from another node, failed: could not be applied here (a full table),
    /// dropped: the outbox was full).
    pub events: prometheus::IntCounterVec,
    /// Age of the last event received from another node when it was applied.
    pub lag: prometheus::Gauge,
    /// Events and records from Redis refused, by reason.
    pub rejected: prometheus::IntCounterVec,
}

impl ClusterMetrics {
    pub fn register(registry: &prometheus::Registry) -> ClusterMetrics {
        let r = crate::metrics::Registrar::new(registry, "a cluster metric");
        ClusterMetrics {
            connected: r.int_gauge(
                "sipfw_cluster_connected",
                "1 while this node is connected to the cluster's Redis and has its full set loaded",
            ),
            events: r.counter_family(
                "sipfw_cluster_events_total",
                "Cluster events by kind and direction (out: written to Redis; in: applied \
                 from another node; failed: not applied here; dropped: the outbox was full while Redis \
                 was away)",
                &["kind", "dir"],
            ),
            lag: r.gauge(
                "sipfw_cluster_lag_seconds",
                "Age of the last event from another node when it was applied here",
            ),
            rejected: r.counter_family(
                "sipfw_cluster_rejected_total",
                "Events and records from Redis refused, by reason (mac: no valid MAC under \
                 this node's secrets; replay: an event too old or seen already; prefix: an \
                 allow or deny prefix too wide; user: a subscriber the config would refuse; \
                 binding: a next hop the proxy refuses; malformed)",
                &["reason"],
            ),
        }
    }

    pub fn event(&self, kind: &str, dir: &str) {
        self.events.with_label_values(&[kind, dir]).inc();
    }
}

/// How often the cluster warns at most, whatever the warning.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// A warning at most once per [`WARN_EVERY`], one limit for all the cluster's warnings (the
/// rest are counted by the metrics).
pub fn warn_limited(msg: &str) {
    static LIMIT: Mutex<RateLimit<()>> = Mutex::new(RateLimit::new(WARN_EVERY, 1));
    if let Verdict::Log { .. } = crate::logging::decide_shared(&LIMIT, (), Instant::now()) {
        warn!("{msg}");
    }
}
