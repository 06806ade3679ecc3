//! The proxy's Prometheus metrics, registered into the daemon's registry.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Counters and gauges of transactions, registrations, authentication and scanners.
#[derive(Clone)]
pub struct ProxyMetrics {
    pub transactions: IntGaugeVec,
    pub bindings: IntGauge,
    pub auth: IntCounterVec,
    /// Verifications that needed a previous secret (`[auth] previous_secrets`), by what was
    /// verified (nonce, stamp).
    pub auth_previous_key: IntCounterVec,
    pub scanners: IntCounter,
    pub forwarded: IntCounterVec,
    pub retransmissions: IntCounterVec,
    pub stray: IntCounter,
    pub local_replies: IntCounterVec,
    /// Requests refused for the integrity of dialogs and routing, by reason.
    pub dialog_refused: IntCounterVec,
    /// Responses dropped because they came from elsewhere than their request went.
    pub wrong_source: IntCounter,
    /// Contacts that answered nothing: marked, sent to without retransmissions, or not
    /// remembered because the table was full.
    pub silent_contacts: IntCounterVec,
    /// RFC 3263 routing: requests sent to DNS (resolving), the outcome of their resolution
    /// (resolved, not_found, failed, expired), and failovers to the next target by cause
    /// (failover_transport_error, failover_timeout, failover_503).
    pub dns_routing: IntCounterVec,
    /// The toll-fraud guard's metrics (its own unit, `crate::fraud`).
    pub fraud: crate::fraud::metrics::FraudMetrics,
}

/// Every label of `sipfw_proxy_dns_routing_total`.
pub const DNS_ROUTING_EVENTS: [&str; 8] = [
    "resolving",
    "resolved",
    "not_found",
    "failed",
    "expired",
    "failover_transport_error",
    "failover_timeout",
    "failover_503",
];

impl ProxyMetrics {
    /// Create and register every metric (unregistered when `registry` is None: tests).
    pub fn new(registry: Option<&Registry>) -> ProxyMetrics {
        let reg = |c: Box<dyn prometheus::core::Collector>| {
            if let Some(r) = registry
                && let Err(e) = r.register(c)
            {
                tracing::error!("registering a proxy metric: {e}");
            }
        };
        let gv = |n: &str, h: &str, l: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(n, h), l).expect("static metric definition");
            reg(Box::new(g.clone()));
            g
        };
        let cv = |n: &str, h: &str, l: &[&str]| {
            let c = IntCounterVec::new(Opts::new(n, h), l).expect("static metric definition");
            reg(Box::new(c.clone()));
            c
        };
        let g = IntGauge::new(
            "sipfw_registrar_bindings",
            "Contacts currently bound in the location store",
        )
        .expect("static metric definition");
        reg(Box::new(g.clone()));
        let s = IntCounter::new(
            "sipfw_scanner_drops_total",
            "Requests dropped silently because their User-Agent is on the scanner list",
        )
        .expect("static metric definition");
        reg(Box::new(s.clone()));
        let stray = IntCounter::new(
            "sipfw_proxy_stray_responses_total",
            "Responses that matched no client transaction (dropped, RFC 3261 18.1.2)",
        )
        .expect("static metric definition");
        reg(Box::new(stray.clone()));
        let wrong_source = IntCounter::new(
            "sipfw_proxy_reply_wrong_source_total",
            "Responses naming an open client transaction that came from another address or \
             transport than the request went to (dropped as strays)",
        )
        .expect("static metric definition");
        reg(Box::new(wrong_source.clone()));
        let m = ProxyMetrics {
            transactions: gv(
                "sipfw_proxy_transactions_active",
                "Transactions alive, by side (server, client)",
                &["side"],
            ),
            bindings: g,
            auth: cv(
                "sipfw_auth_total",
                "Digest authentication outcomes (success, challenge, stale, other_boot and \
                 other_node: a nonce of another start or node, answered with stale=true; or the \
                 failure reason)",
                &["result"],
            ),
            auth_previous_key: cv(
                "sipfw_auth_previous_key_total",
                "Verifications under a previous secret ([auth] previous_secrets), by what was \
                 verified (nonce, stamp): while it rises, the previous secret is still in use",
                &["what"],
            ),
            scanners: s,
            forwarded: cv(
                "sipfw_proxy_forwarded_total",
                "Messages the proxy forwarded, by kind (request, response, ack, cluster_hop: a request from another cluster node relayed to a flow we hold)",
                &["kind"],
            ),
            retransmissions: cv(
                "sipfw_proxy_retransmissions_total",
                "Retransmissions: received and absorbed, or sent by our timers",
                &["direction"],
            ),
            stray,
            local_replies: cv(
                "sipfw_proxy_replies_total",
                "Responses the proxy generated itself, by status code",
                &["code"],
            ),
            dialog_refused: cv(
                "sipfw_dialog_refused_total",
                "Requests the proxy refused to relay, by reason (loop, own_address, \
                 internal_hop, bad_stamp, stamp_expired, too_many_routes, not_a_party, \
                 ambiguous)",
                &["reason"],
            ),
            wrong_source,
            silent_contacts: cv(
                "sipfw_proxy_silent_contacts_total",
                "Contacts that left our request unanswered (marked), requests sent to them \
                 once without retransmissions (no_retransmit), marks lost to a full table \
                 (table_full)",
                &["event"],
            ),
            dns_routing: cv(
                "sipfw_proxy_dns_routing_total",
                "RFC 3263 routing of requests to domains: resolving, resolved, not_found, \
                 failed, expired (no answer in time), and failovers to the next target \
                 (failover_transport_error, failover_timeout, failover_503)",
                &["event"],
            ),
            fraud: crate::fraud::metrics::FraudMetrics::new(registry),
        };
        for e in DNS_ROUTING_EVENTS {
            m.dns_routing.with_label_values(&[e]);
        }
        for what in ["nonce", "stamp"] {
            m.auth_previous_key.with_label_values(&[what]);
        }
        for side in ["server", "client"] {
            m.transactions.with_label_values(&[side]);
        }
        m
    }
}
