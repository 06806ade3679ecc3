//! The daemon's metrics: one Prometheus registry, the SIP message layer's counters, and the
//! `GET /metrics` endpoint ([`http`]). Other units register their own metrics through
//! [`Metrics::registry`]; it names no unit (the fast path's figures come through
//! [`xdp::FastPathSource`]).
//!
//! **Decides**: nothing. **Config**: `[metrics]` (`http::MetricsConfig`: the listen address).
//! **Metrics**: `sipfw_sip_*` (requests, responses, accepted, rejections, dropped, keep-alives,
//! TCP connections and closes, TLS handshakes, WebSocket upgrades), `sipfw_limits_refused_total{what}`,
//! `sipfw_internal_errors_total{kind}`; in [`xdp`]: `sipfw_xdp_packets_total`, `sipfw_xdp_bytes_total`,
//! `sipfw_bans_total`, `sipfw_bans_active`, `sipfw_xdp_attached`, `sipfw_enforcement_place`,
//! `sipfw_map_entries`, `sipfw_map_capacity`.

pub mod http;
mod registrar;
pub mod resolved;
pub mod xdp;

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, core::Collector};
pub use registrar::Registrar;
use resolved::Resolved;
use sip_firewall_sip::{Method, Reason};

/// Drop reason for a well-formed response that matches no transaction.
pub const DROP_STRAY_RESPONSE: &str = "stray_response";

/// The samples of a text exposition (what [`Metrics::render`] writes): each
/// `name{labels} value` line as its series and value; comments and lines that are not a
/// sample are skipped.
pub fn samples(text: &str) -> impl Iterator<Item = (String, f64)> + '_ {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_string(), value.parse().ok()?))
        })
}

/// A counter family of a static definition (the statics below, and other units'):
/// `name`, `help`, by `labels`.
pub fn counter_family(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition is valid")
}

/// `sipfw_internal_errors_total{kind}`: panics caught at the message boundary (`message`),
/// in the proxy's timer tick (`timer`), locks found poisoned (`lock_poisoned`). Process-wide,
/// so that every part (server, proxy) counts without plumbing; every [`Metrics`] registers it.
static INTERNAL_ERRORS: std::sync::LazyLock<IntCounterVec> = std::sync::LazyLock::new(|| {
    counter_family(
        "sipfw_internal_errors_total",
        "Internal errors survived: panics caught while handling one message (message) or a \
         timer tick (timer), locks found poisoned by a panic (lock_poisoned), ban-learning \
         events lost on a full queue (learner_queue_full)",
        &["kind"],
    )
});

/// The kinds of `sipfw_internal_errors_total`, each shown from the start.
const INTERNAL_KINDS: [&str; 4] = ["message", "timer", "lock_poisoned", "learner_queue_full"];

/// `sipfw_limits_refused_total{what}`: what was refused at a resource bound (TCP connections
/// in total or per source, accepted or opened; transactions in total or per source) and nonce
/// counts evicted from a full table. Process-wide like [`internal_error`].
static LIMITS: std::sync::LazyLock<IntCounterVec> = std::sync::LazyLock::new(|| {
    counter_family(
        "sipfw_limits_refused_total",
        "Refused at a resource bound, by what: tcp_total, tcp_per_source, \
         tcp_outbound_total, tcp_outbound_per_source, transactions_total, \
         transactions_per_source; nonce_counts_evicted when the nonce-count table was full; \
         route_cache when the cache of route lookups (which listen address a message leaves \
         from) started again",
        &["what"],
    )
});

/// `sipfw_sip_tls_handshakes_total{result}`: TLS handshakes on connections we accepted
/// (`ok`, `failed`: refused certificate or protocol error, `timeout`) and opened
/// (`outbound_ok`, `outbound_failed`). Process-wide like [`internal_error`].
static TLS_HANDSHAKES: std::sync::LazyLock<IntCounterVec> = std::sync::LazyLock::new(|| {
    counter_family(
        "sipfw_sip_tls_handshakes_total",
        "SIP TLS handshakes by result: ok, failed, timeout (accepted; trusted_peer also \
         when the client certificate names a [tls] trusted_peers host); outbound_ok, \
         outbound_failed (opened by the proxy)",
        &["result"],
    )
});

/// The results of `sipfw_sip_tls_handshakes_total`, each shown from the start.
const HANDSHAKE_RESULTS: [&str; 6] = [
    "ok",
    "failed",
    "timeout",
    "outbound_ok",
    "outbound_failed",
    "trusted_peer",
];

/// `sipfw_sip_ws_upgrades_total{result}`: WebSocket upgrades: ok, no_sip_subprotocol,
/// origin_refused, failed (not a valid upgrade, or refused above), timeout.
static WS_UPGRADES: std::sync::LazyLock<IntCounterVec> = std::sync::LazyLock::new(|| {
    counter_family(
        "sipfw_sip_ws_upgrades_total",
        "SIP WebSocket upgrades by result: ok, no_sip_subprotocol, origin_refused, \
         failed, timeout",
        &["result"],
    )
});

/// The results of `sipfw_sip_ws_upgrades_total`, each shown from the start.
const UPGRADE_RESULTS: [&str; 5] = [
    "ok",
    "no_sip_subprotocol",
    "origin_refused",
    "failed",
    "timeout",
];

/// `sipfw_dns_lookups_total{result}`: RFC 3263 resolutions of a name: `cached` (answered
/// from the cache within the TTL), `resolved`, `not_found`, `failed`.
static DNS_LOOKUPS: std::sync::LazyLock<IntCounterVec> = std::sync::LazyLock::new(|| {
    counter_family(
        "sipfw_dns_lookups_total",
        "RFC 3263 name resolutions by result: cached (within the TTL), resolved, \
         not_found, failed",
        &["result"],
    )
});

/// The results of `sipfw_dns_lookups_total`, each shown from the start.
const LOOKUP_RESULTS: [&str; 4] = ["cached", "resolved", "not_found", "failed"];

/// Count one name resolution.
pub fn dns_lookup(result: &'static str) {
    DNS_LOOKUPS.with_label_values(&[result]).inc();
}

/// Name resolutions counted with `result` so far (this process).
pub fn dns_lookups(result: &str) -> u64 {
    DNS_LOOKUPS.with_label_values(&[result]).get()
}

/// Count one WebSocket upgrade.
pub fn ws_upgrade(result: &'static str) {
    WS_UPGRADES.with_label_values(&[result]).inc();
}

/// WebSocket upgrades counted with `result` so far.
pub fn ws_upgrades(result: &str) -> u64 {
    WS_UPGRADES.with_label_values(&[result]).get()
}

/// `sipfw_sip_connections_total{transport,result}`: connections on the stream listeners by
/// transport (tcp, tls, ws, wss) and what became of them at accept: `accepted` (a slot
/// taken; the handshake follows), `refused_gate` (a banned or denied source),
/// `refused_slots` (over `max_tcp_connections` or `max_tcp_per_source`).
static CONNECTIONS: std::sync::LazyLock<IntCounterVec> = std::sync::LazyLock::new(|| {
    counter_family(
        "sipfw_sip_connections_total",
        "SIP stream connections at accept by transport (tcp, tls, ws, wss) and result: \
         accepted, refused_gate (banned or denied source), refused_slots",
        &["transport", "result"],
    )
});

/// `sipfw_sip_connections_open{transport}`: connections being served, by transport (tcp
/// and tls include those the proxy opened).
static CONNECTIONS_OPEN: std::sync::LazyLock<IntGaugeVec> = std::sync::LazyLock::new(|| {
    IntGaugeVec::new(
        Opts::new(
            "sipfw_sip_connections_open",
            "SIP stream connections being served, by transport (tcp, tls, ws, wss)",
        ),
        &["transport"],
    )
    .expect("static metric definition is valid")
});

/// The transports of the connection metrics.
pub const CONNECTION_TRANSPORTS: [&str; 4] = ["tcp", "tls", "ws", "wss"];

/// Count one connection at accept.
pub fn connection(transport: &'static str, result: &'static str) {
    CONNECTIONS.with_label_values(&[transport, result]).inc();
}

/// Connections counted so far with `transport` and `result`.
pub fn connections(transport: &str, result: &str) -> u64 {
    CONNECTIONS.with_label_values(&[transport, result]).get()
}

/// A connection of `transport` starts (+1) or ends (-1) being served.
pub fn connection_open(transport: &'static str, delta: i64) {
    CONNECTIONS_OPEN.with_label_values(&[transport]).add(delta);
}

/// Connections being served, by transport.
pub fn connections_open() -> Vec<(&'static str, i64)> {
    CONNECTION_TRANSPORTS
        .iter()
        .map(|t| (*t, CONNECTIONS_OPEN.with_label_values(&[t]).get()))
        .collect()
}

/// Count one TLS handshake.
pub fn tls_handshake(result: &'static str) {
    TLS_HANDSHAKES.with_label_values(&[result]).inc();
}

/// TLS handshakes counted with `result` so far.
pub fn tls_handshakes(result: &str) -> u64 {
    TLS_HANDSHAKES.with_label_values(&[result]).get()
}

/// Every bound hit, named as in `sipfw_limits_refused_total`.
pub const LIMITS_WHAT: [&str; 9] = [
    "tcp_total",
    "tcp_per_source",
    "tcp_outbound_total",
    "tcp_outbound_per_source",
    "transactions_total",
    "transactions_per_source",
    "nonce_counts_evicted",
    "scan_sources",
    "route_cache",
];

/// A bound was hit by `source` (counted; logged at most once a minute per bound).
pub fn limit_hit(what: &'static str, source: Option<std::net::IpAddr>) {
    LIMITS.with_label_values(&[what]).inc();
    // Per bound; the bounds are a fixed set of names (`LIMITS_WHAT`): the cap is never reached.
    static LOG: std::sync::Mutex<crate::logging::RateLimit<&'static str>> = std::sync::Mutex::new(
        crate::logging::RateLimit::new(std::time::Duration::from_secs(60), 64),
    );
    let verdict = crate::logging::decide_shared(&LOG, what, std::time::Instant::now());
    if let crate::logging::Verdict::Log { .. } = verdict {
        tracing::warn!(
            bound = what,
            source = ?source,
            "resource bound reached: refused (counted in sipfw_limits_refused_total; logged once a minute)"
        );
    }
}

/// Refusals at bound `what` so far (tests).
pub fn limits_refused(what: &str) -> u64 {
    LIMITS.with_label_values(&[what]).get()
}

/// Count an internal error of `kind`.
pub fn internal_error(kind: &str) {
    INTERNAL_ERRORS.with_label_values(&[kind]).inc();
}

/// Internal errors of `kind` so far (tests).
pub fn internal_errors(kind: &str) -> u64 {
    INTERNAL_ERRORS.with_label_values(&[kind]).get()
}

/// The registry and the SIP counters.
pub struct Metrics {
    registry: Registry,
    /// By [`Method`] (its discriminant: 15 of them, `Other` last).
    requests: Resolved<15>,
    /// By class: 1xx..6xx, then invalid.
    responses: Resolved<7>,
    rejections: IntCounterVec,
    dropped: IntCounterVec,
    /// Requests, responses.
    accepted: Resolved<2>,
    keepalives: IntCounterVec,
    tcp_closed: IntCounterVec,
    tcp_connections: IntGauge,
    /// Run before every scrape: they copy state kept elsewhere (the XDP maps) into metrics.
    refreshers: std::sync::Mutex<Vec<Box<dyn Fn() + Send + Sync>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every SIP counter registered.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels)
                .expect("static metric definition is valid");
            registry
                .register(Box::new(c.clone()))
                .expect("metric names are unique");
            c
        };
        let m = Metrics {
            requests: Resolved::new(counter(
                "sipfw_sip_requests_total",
                "SIP requests received, by method (unknown methods as other)",
                &["method"],
            )),
            responses: Resolved::new(counter(
                "sipfw_sip_responses_total",
                "SIP responses received, by status class (1xx..6xx, or invalid)",
                &["class"],
            )),
            rejections: counter(
                "sipfw_sip_rejections_total",
                "SIP requests refused by the message layer and answered, by reason and status code",
                &["reason", "code"],
            ),
            dropped: counter(
                "sipfw_sip_dropped_total",
                "SIP messages dropped without an answer, by reason",
                &["reason"],
            ),
            accepted: Resolved::new(counter(
                "sipfw_sip_accepted_total",
                "SIP messages that passed parsing and sanity checks, by kind (request, response)",
                &["kind"],
            )),
            keepalives: counter(
                "sipfw_sip_keepalives_total",
                "CRLF keep-alives received, by transport",
                &["transport"],
            ),
            tcp_closed: counter(
                "sipfw_sip_tcp_closed_total",
                "SIP TCP connections closed, by reason (peer, idle_timeout, framing, error, shutdown)",
                &["reason"],
            ),
            tcp_connections: {
                let g = IntGauge::new("sipfw_sip_tcp_connections", "SIP TCP connections open")
                    .expect("static metric definition is valid");
                registry
                    .register(Box::new(g.clone()))
                    .expect("metric names are unique");
                g
            },
            registry,
            refreshers: std::sync::Mutex::new(Vec::new()),
        };
        // Pre-create the common series so dashboards see zeros rather than gaps.
        for kind in ["request", "response"] {
            m.accepted.vec().with_label_values(&[kind]);
        }
        m.register_globals();
        m
    }

    /// The process-wide counters other units bump without a handle (internal errors, limits,
    /// TLS handshakes, DNS lookups, WebSocket upgrades), in this registry, their usual series at zero.
    fn register_globals(&self) {
        self.register_counts(&INTERNAL_ERRORS, &INTERNAL_KINDS);
        self.register_counts(&LIMITS, &LIMITS_WHAT);
        self.register_counts(&TLS_HANDSHAKES, &HANDSHAKE_RESULTS);
        self.register_counts(&DNS_LOOKUPS, &LOOKUP_RESULTS);
        self.register_counts(&WS_UPGRADES, &UPGRADE_RESULTS);
        self.register_global(&*CONNECTIONS);
        self.register_global(&*CONNECTIONS_OPEN);
        for t in CONNECTION_TRANSPORTS {
            for r in ["accepted", "refused_gate", "refused_slots"] {
                CONNECTIONS.with_label_values(&[t, r]);
            }
            CONNECTIONS_OPEN.with_label_values(&[t]);
        }
    }

    /// Register a process-wide collector in this registry (a refusal is logged, with the
    /// collector's name: the daemon runs on without it).
    fn register_global<C: Collector + Clone + 'static>(&self, c: &C) {
        if let Err(e) = self.registry.register(Box::new(c.clone())) {
            let name = c
                .desc()
                .first()
                .map_or("", |d| d.fq_name.as_str())
                .to_string();
            tracing::error!("registering {name}: {e}");
        }
    }

    /// [`Metrics::register_global`] of a counter family with one label, each of `values`
    /// shown at zero from the start.
    fn register_counts(&self, c: &IntCounterVec, values: &[&str]) {
        self.register_global(c);
        for v in values {
            c.with_label_values(&[v]);
        }
    }

    /// Run `f` before every scrape (to copy state kept elsewhere into metrics).
    pub fn on_scrape(&self, f: impl Fn() + Send + Sync + 'static) {
        if let Ok(mut r) = self.refreshers.lock() {
            r.push(Box::new(f));
        }
    }

    /// The registry, for other parts of the daemon to add their metrics to.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// A request arrived (whatever its fate).
    pub fn request(&self, method: &str) {
        self.request_of(Method::of(method.as_bytes()));
    }

    /// A request arrived, its method as the message layer labelled it (known ones by name,
    /// every other `other`: a bounded label set).
    pub fn request_of(&self, method: Method) {
        self.requests.inc(method as usize, method.as_str());
    }

    /// A response arrived; `code` is None when the status line is unreadable.
    pub fn response(&self, code: Option<u16>) {
        const CLASSES: [&str; 7] = ["1xx", "2xx", "3xx", "4xx", "5xx", "6xx", "invalid"];
        let i = match code {
            Some(c @ 100..=699) => usize::from(c / 100 - 1),
            _ => 6,
        };
        self.responses.inc(i, CLASSES[i]);
    }

    /// A request was refused and answered with `reason.status()`.
    pub fn rejected(&self, reason: Reason) {
        self.rejections
            .with_label_values(&[reason.as_str(), &reason.status().to_string()])
            .inc();
    }

    /// A message was dropped without an answer.
    pub fn dropped(&self, reason: &str) {
        self.dropped.with_label_values(&[reason]).inc();
    }

    /// A message passed the message layer.
    pub fn accepted(&self, request: bool) {
        let (i, kind) = if request {
            (0, "request")
        } else {
            (1, "response")
        };
        self.accepted.inc(i, kind);
    }

    /// A keep-alive arrived.
    pub fn keepalive(&self, transport: &str) {
        self.keepalives.with_label_values(&[transport]).inc();
    }

    /// A TCP connection opened.
    pub fn tcp_opened(&self) {
        self.tcp_connections.inc();
    }

    /// A TCP connection closed, and why.
    pub fn tcp_closed(&self, reason: &str) {
        self.tcp_connections.dec();
        self.tcp_closed.with_label_values(&[reason]).inc();
    }

    /// The Prometheus text exposition of every registered metric.
    pub fn render(&self) -> String {
        use prometheus::Encoder as _;
        if let Ok(refreshers) = self.refreshers.lock() {
            for refresh in refreshers.iter() {
                refresh();
            }
        }
        let mut out = Vec::new();
        // Encoding into a Vec fails only for invalid metric families, which we never build.
        if let Err(e) = prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!("encoding metrics: {e}");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_render() {
        let m = Metrics::new();
        m.request("INVITE");
        m.request("!interesting-Method");
        m.response(Some(404));
        m.response(None);
        m.rejected(Reason::TooManyHops);
        m.dropped(DROP_STRAY_RESPONSE);
        m.accepted(true);
        let text = m.render();
        for line in [
            "sipfw_sip_requests_total{method=\"INVITE\"} 1",
            "sipfw_sip_requests_total{method=\"other\"} 1",
            "sipfw_sip_responses_total{class=\"4xx\"} 1",
            "sipfw_sip_responses_total{class=\"invalid\"} 1",
            "sipfw_sip_rejections_total{code=\"483\",reason=\"too_many_hops\"} 1",
            "sipfw_sip_dropped_total{reason=\"stray_response\"} 1",
            "sipfw_sip_accepted_total{kind=\"request\"} 1",
            "sipfw_sip_accepted_total{kind=\"response\"} 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }
}
