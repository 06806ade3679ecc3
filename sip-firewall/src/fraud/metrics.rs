//! The fraud guard's Prometheus metrics.

use prometheus::{Histogram, HistogramOpts, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

#[derive(Clone)]
pub struct FraudMetrics {
    /// Calls refused, by reason (denied_prefix, not_allowed, suspended, critical, duplicate,
    /// table_full, user_limit).
    pub refused: IntCounterVec,
    /// Warning thresholds passed, by measure (and unusual_source).
    pub warnings: IntCounterVec,
    /// Critical thresholds passed, by measure.
    pub critical: IntCounterVec,
    pub suspended: IntGauge,
    pub calls_active: IntGauge,
    pub calls_by_user: IntGaugeVec,
    pub calls_by_peer: IntGaugeVec,
    /// Answered calls ended, by how (bye, max_duration, session_expired, fraud_hangup,
    /// bye_timeout).
    pub calls_ended: IntCounterVec,
    pub call_duration: Histogram,
}

impl FraudMetrics {
    pub fn new(registry: Option<&Registry>) -> FraudMetrics {
        let reg = |c: Box<dyn prometheus::core::Collector>| {
            if let Some(r) = registry
                && let Err(e) = r.register(c)
            {
                tracing::error!("registering a fraud metric: {e}");
            }
        };
        let cv = |n: &str, h: &str, l: &[&str]| {
            let c = IntCounterVec::new(Opts::new(n, h), l).expect("static metric definition");
            reg(Box::new(c.clone()));
            c
        };
        let gv = |n: &str, h: &str, l: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(n, h), l).expect("static metric definition");
            reg(Box::new(g.clone()));
            g
        };
        let g = |n: &str, h: &str| {
            let g = IntGauge::new(n, h).expect("static metric definition");
            reg(Box::new(g.clone()));
            g
        };
        let hist = Histogram::with_opts(
            HistogramOpts::new(
                "sipfw_call_duration_seconds",
                "Length of answered calls through the edge",
            )
            .buckets(vec![
                10.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 14400.0,
            ]),
        )
        .expect("static metric definition");
        reg(Box::new(hist.clone()));
        FraudMetrics {
            refused: cv(
                "sipfw_fraud_refused_total",
                "Calls refused by the toll-fraud guard (403, or 503 when its table is full), by reason",
                &["reason"],
            ),
            warnings: cv(
                "sipfw_fraud_warnings_total",
                "Fraud warning thresholds passed, by measure",
                &["measure"],
            ),
            critical: cv(
                "sipfw_fraud_critical_total",
                "Fraud critical thresholds passed, by measure",
                &["measure"],
            ),
            suspended: g(
                "sipfw_fraud_suspended_accounts",
                "Accounts suspended by the toll-fraud guard",
            ),
            calls_active: g(
                "sipfw_calls_active",
                "Calls in progress through the edge (ringing or answered)",
            ),
            calls_by_user: gv(
                "sipfw_calls_active_by_user",
                "Calls in progress per account (only accounts with calls)",
                &["user"],
            ),
            calls_by_peer: gv(
                "sipfw_calls_active_by_peer",
                "Calls in progress per trunk peer (only peers with calls)",
                &["peer"],
            ),
            calls_ended: cv(
                "sipfw_calls_ended_total",
                "Answered calls ended, by how",
                &["reason"],
            ),
            call_duration: hist,
        }
    }
}
