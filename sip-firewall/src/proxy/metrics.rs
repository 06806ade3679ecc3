//! The proxy's Prometheus metrics, registered into the daemon's registry.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

use crate::metrics::resolved::Resolved;

/// The status codes of our own answers whose series of `sipfw_proxy_replies_total` are
/// resolved once (any other is counted too, through the vector).
const LOCAL_CODES: [(u16, &str); 20] = [
    (100, "100"),
    (200, "200"),
    (400, "400"),
    (401, "401"),
    (403, "403"),
    (404, "404"),
    (405, "405"),
    (407, "407"),
    (408, "408"),
    (420, "420"),
    (423, "423"),
    (430, "430"),
    (480, "480"),
    (481, "481"),
    (482, "482"),
    (483, "483"),
    (487, "487"),
    (500, "500"),
    (503, "503"),
    (504, "504"),
];

/// Every label of `sipfw_proxy_forwarded_total`, in the order of its resolved series.
pub const FORWARDED_KINDS: [&str; 5] = ["request", "response", "ack", "cluster_hop", "flow"];

/// Counters and gauges of transactions, registrations, authentication and scanners.
#[derive(Clone)]
pub struct ProxyMetrics {
    pub transactions: IntGaugeVec,
    /// Its series: server, client (resolved once, set after every message).
    pub transactions_by_side: [IntGauge; 2],
    pub bindings: IntGauge,
    /// NAT keep-alives (`proxy::core::keepalive`).
    pub keepalive: KeepaliveMetrics,
    pub auth: IntCounterVec,
    /// Verifications that needed a previous secret (`[auth] previous_secrets`), by what was
    /// verified (nonce, stamp).
    pub auth_previous_key: IntCounterVec,
    pub scanners: IntCounter,
    /// By [`FORWARDED_KINDS`] ([`ProxyMetrics::forward`]).
    pub forwarded: Resolved<5>,
    pub retransmissions: IntCounterVec,
    pub stray: IntCounter,
    /// By status code ([`ProxyMetrics::local_reply`]).
    pub local_replies: Resolved<20>,
    /// Requests refused for the integrity of dialogs and routing, by reason.
    pub dialog_refused: IntCounterVec,
    /// Responses dropped because they came from elsewhere than their request went.
    pub wrong_source: IntCounter,
    /// Contacts that answered nothing: marked, sent to without retransmissions, or not
    /// remembered because the table was full.
    pub silent_contacts: IntCounterVec,
    /// Sealed Call-IDs of dialogs made inside not remembered for their references
    /// (`hide::dialog_refs`): the one unused longest forgotten (evicted), or one refused at
    /// its source's bound (source_full).
    pub hidden_dialogs: IntCounterVec,
    /// RFC 3263 routing: requests sent to DNS (resolving), the outcome of their resolution
    /// (resolved, not_found, failed, expired), and failovers to the next target by cause
    /// (failover_transport_error, failover_timeout, failover_503).
    pub dns_routing: IntCounterVec,
    /// Relay mode: registered flows, and those refused at a bound.
    pub relayed: RelayedMetrics,
    /// The toll-fraud guard's metrics (its own unit, `crate::fraud`).
    pub fraud: crate::fraud::metrics::FraudMetrics,
}

/// Relay mode's metrics (`[registrar] mode = "relay"`).
#[derive(Clone)]
pub struct RelayedMetrics {
    /// The flows of registrations the operator's registrar accepted.
    pub flows: IntGauge,
    /// Flows not remembered because their table was at a bound (per_source, total).
    pub full: IntCounterVec,
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

/// The NAT keep-alives' metrics.
#[derive(Clone)]
pub struct KeepaliveMetrics {
    /// `sipfw_registrar_keepalive_total{event}` ([`KEEPALIVE_EVENTS`]).
    pub events: IntCounterVec,
    /// `sipfw_registrar_keepalive_flows`: flows kept alive.
    pub flows: IntGauge,
}

/// The events of `sipfw_registrar_keepalive_total`.
pub const KEEPALIVE_EVENTS: [&str; 13] = [
    "ping_options",
    "ping_crlf",
    "answered",
    "pong",
    "wrong_source",
    "removed_unanswered",
    "removed_closed",
    "deferred_rate",
    "deferred_in_flight",
    "table_full",
    "flow_full",
    "stun_answered",
    "stun_refused",
];

impl ProxyMetrics {
    /// A message forwarded, of `kind` (one of [`FORWARDED_KINDS`]).
    pub fn forward(&self, kind: &str) {
        let i = FORWARDED_KINDS.iter().position(|k| *k == kind);
        self.forwarded.inc(i.unwrap_or(usize::MAX), kind);
    }

    /// An answer of our own, `code`, sent.
    pub fn local_reply(&self, code: u16) {
        match LOCAL_CODES.iter().position(|(c, _)| *c == code) {
            Some(i) => self.local_replies.inc(i, LOCAL_CODES[i].1),
            None => self
                .local_replies
                .vec()
                .with_label_values(&[&code.to_string()])
                .inc(),
        }
    }

    /// Create and register every metric (unregistered when `registry` is None: tests).
    pub fn new(registry: Option<&Registry>) -> ProxyMetrics {
        let r = Maker(registry);
        let transactions = r.gauges(
            "sipfw_proxy_transactions_active",
            "Transactions alive, by side (server, client)",
            &["side"],
        );
        let m = ProxyMetrics {
            transactions_by_side: ["server", "client"].map(|s| transactions.with_label_values(&[s])),
            transactions,
            bindings: r.gauge(
                "sipfw_registrar_bindings",
                "Contacts currently bound in the location store",
            ),
            keepalive: r.keepalive(),
            auth: r.counters(
                "sipfw_auth_total",
                "Digest authentication outcomes (success, challenge, stale, other_boot and \
                 other_node: a nonce of another start or node, answered with stale=true; or the \
                 failure reason)",
                &["result"],
            ),
            auth_previous_key: r.counters(
                "sipfw_auth_previous_key_total",
                "Verifications under a previous secret ([auth] previous_secrets), by what was \
                 verified (nonce, stamp): while it rises, the previous secret is still in use",
                &["what"],
            ),
            scanners: r.counter(
                "sipfw_scanner_drops_total",
                "Requests dropped silently because their User-Agent is on the scanner list",
            ),
            forwarded: Resolved::new(r.counters(
                "sipfw_proxy_forwarded_total",
                "Messages the proxy forwarded, by kind (request, response, ack, cluster_hop: a request from another cluster node relayed to a flow we hold, flow: one from the registrar of relay mode down the flow its token names)",
                &["kind"],
            )),
            retransmissions: r.counters(
                "sipfw_proxy_retransmissions_total",
                "Retransmissions: received and absorbed, or sent by our timers",
                &["direction"],
            ),
            stray: r.counter(
                "sipfw_proxy_stray_responses_total",
                "Responses that matched no client transaction (dropped, RFC 3261 18.1.2)",
            ),
            local_replies: Resolved::new(r.counters(
                "sipfw_proxy_replies_total",
                "Responses the proxy generated itself, by status code",
                &["code"],
            )),
            dialog_refused: r.counters(
                "sipfw_dialog_refused_total",
                "Requests the proxy refused to relay, by reason (loop, own_address, \
                 internal_hop, bad_stamp, stamp_expired, too_many_routes, not_a_party, \
                 ambiguous; relay mode: flow_outsider, bad_flow_token, bad_hidden_path, flow_failed)",
                &["reason"],
            ),
            wrong_source: r.counter(
                "sipfw_proxy_reply_wrong_source_total",
                "Responses naming an open client transaction that came from another address or \
                 transport than the request went to (dropped as strays)",
            ),
            silent_contacts: r.silent_contacts(),
            hidden_dialogs: r.hidden_dialogs(),
            dns_routing: r.counters(
                "sipfw_proxy_dns_routing_total",
                "RFC 3263 routing of requests to domains: resolving, resolved, not_found, \
                 failed, expired (no answer in time), and failovers to the next target \
                 (failover_transport_error, failover_timeout, failover_503)",
                &["event"],
            ),
            relayed: r.relayed(),
            fraud: crate::fraud::metrics::FraudMetrics::new(registry),
        };
        m.show_every_label();
        m
    }

    /// Every label known in advance exists from the start (at 0), so that dashboards and
    /// alerts see the series before the first event.
    fn show_every_label(&self) {
        for e in KEEPALIVE_EVENTS {
            self.keepalive.events.with_label_values(&[e]);
        }
        for e in DNS_ROUTING_EVENTS {
            self.dns_routing.with_label_values(&[e]);
        }
        for what in ["nonce", "stamp"] {
            self.auth_previous_key.with_label_values(&[what]);
        }
        for kind in FORWARDED_KINDS {
            self.forwarded.vec().with_label_values(&[kind]);
        }
        for bound in ["per_source", "total"] {
            self.relayed.full.with_label_values(&[bound]);
        }
        for event in ["evicted", "source_full"] {
            self.hidden_dialogs.with_label_values(&[event]);
        }
    }
}

/// Makes the proxy's metrics and registers each into the daemon's registry (none in tests).
/// The definitions are static: one that fails is a bug of this file, caught by every test
/// that builds a proxy.
struct Maker<'r>(Option<&'r Registry>);

impl Maker<'_> {
    /// The metrics of relay mode (`sipfw_registrar_relayed_*`).
    fn silent_contacts(&self) -> IntCounterVec {
        self.counters(
            "sipfw_proxy_silent_contacts_total",
            "Contacts that left our request unanswered (marked), requests sent to them once \
             without retransmissions (no_retransmit), marks lost to a full table (table_full)",
            &["event"],
        )
    }

    fn hidden_dialogs(&self) -> IntCounterVec {
        self.counters(
            "sipfw_proxy_hidden_dialogs_total",
            "Topology hiding: sealed Call-IDs of dialogs made inside forgotten at the table's \
             bound (evicted) or not remembered at their source's (source_full); a transfer \
             naming such a dialog toward the outside names its inner Call-ID",
            &["event"],
        )
    }

    fn relayed(&self) -> RelayedMetrics {
        RelayedMetrics {
            flows: self.gauge(
                "sipfw_registrar_relayed_flows",
                "Relay mode: flows of registrations the operator's registrar accepted (200) \
                 that requests from it may be sent down",
            ),
            full: self.counters(
                "sipfw_registrar_relayed_full_total",
                "Relay mode: registered flows not remembered because the table was at its \
                 bound (per_source: [registrar] max_relayed_per_source, total: max_relayed); \
                 requests from the registrar to them get 430",
                &["bound"],
            ),
        }
    }

    fn register<C: prometheus::core::Collector + Clone + 'static>(&self, c: C) -> C {
        if let Some(r) = self.0
            && let Err(e) = r.register(Box::new(c.clone()))
        {
            tracing::error!("registering a proxy metric: {e}");
        }
        c
    }

    fn keepalive(&self) -> KeepaliveMetrics {
        let events = self.counters(
            "sipfw_registrar_keepalive_total",
            "NAT keep-alives: pings sent (ping_options on UDP, ping_crlf on TCP, TLS and \
             WebSocket), answers and pongs, answers from elsewhere (wrong_source, ignored), \
             bindings removed (removed_unanswered, removed_closed), rounds of pings held back \
             by a bound (deferred_rate, deferred_in_flight), bindings not kept alive at a \
             bound (table_full, flow_full)",
            &["event"],
        );
        let flows = self.gauge(
            "sipfw_registrar_keepalive_flows",
            "Flows of registered contacts kept alive by pings",
        );
        KeepaliveMetrics { events, flows }
    }

    fn counter(&self, name: &str, help: &str) -> IntCounter {
        self.register(IntCounter::new(name, help).expect("static metric definition"))
    }

    fn gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("static metric definition"))
    }

    fn counters(&self, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
        let c = IntCounterVec::new(Opts::new(name, help), labels);
        self.register(c.expect("static metric definition"))
    }

    fn gauges(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        let g = IntGaugeVec::new(Opts::new(name, help), labels);
        self.register(g.expect("static metric definition"))
    }
}
