//! Learned bans refused: unauthenticated evidence (a scanner User-Agent, a sweep over user
//! names, an unproven failed login, a request rate, the user-space flood limit) never bans a
//! source known to be good (allow-listed, registered, recently authenticated, a peer of
//! ours); each refusal is counted in `sipfw_ban_refused_total{reason}` and logged at most
//! once per [`REFUSAL_LOG_EVERY`] with the count.

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use tracing::warn;

use crate::logging::{RateLimit, Verdict};

/// Learned bans refused because the source is known and the evidence unauthenticated:
/// counted by reason, logged at most once per [`REFUSAL_LOG_EVERY`] with the count.
pub struct Refusals {
    pub(super) counter: prometheus::IntCounterVec,
    log: RateLimit<()>,
}

/// How often a refused ban is logged at most.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

impl Refusals {
    /// The counter `sipfw_ban_refused_total{reason}`, registered in `metrics`.
    pub fn new(metrics: &crate::metrics::Metrics) -> Refusals {
        let counter = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "sipfw_ban_refused_total",
                "Learned bans refused because the source is known (allow-listed, registered, \
                 recently authenticated, a peer of ours) and the evidence unauthenticated, by \
                 kind (scanner, scan_targets, auth_unproven, request_rate, flood)",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        if let Err(e) = metrics.registry().register(Box::new(counter.clone())) {
            warn!("registering sipfw_ban_refused_total: {e}");
        }
        Refusals {
            counter,
            log: RateLimit::new(REFUSAL_LOG_EVERY, 1),
        }
    }

    pub(super) fn refuse(&mut self, ip: IpAddr, kind: &str) {
        self.counter.with_label_values(&[kind]).inc();
        if let Verdict::Log { suppressed } = self.log.decide((), Instant::now()) {
            warn!(
                %ip,
                kind,
                // This refusal and those folded into it.
                refused = suppressed + 1,
                "not banning a known source on unauthenticated evidence (refusals since the \
                 last line)"
            );
        }
    }
}
