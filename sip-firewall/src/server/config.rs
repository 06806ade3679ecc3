//! `[sip]`: the SIP listeners and the message layer's limits, with their defaults and checks.

use std::{net::SocketAddr, time::Duration};

use serde::Deserialize;

use crate::section::{Invalid, duration, invalid};

/// `[sip]`: the SIP listeners and the message layer's limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// Addresses the daemon listens on, each on UDP and TCP.
    pub listen: Vec<SocketAddr>,
    /// Domains this proxy is responsible for (registrar and authentication realm).
    pub domains: Vec<String>,
    /// Largest whole message accepted (bytes).
    pub max_message_bytes: usize,
    /// Largest single header line accepted, folded lines included (bytes).
    pub max_header_bytes: usize,
    /// Largest Request-URI accepted (bytes).
    pub max_request_uri_bytes: usize,
    /// A TCP connection that sends no complete message for this long is closed.
    #[serde(deserialize_with = "duration")]
    pub tcp_idle_timeout: Duration,
    /// Answer UDP requests at their source port even without `rport` in the top Via (as
    /// NAT'd clients need); false follows RFC 3261 18.2.2 strictly (the sent-by port).
    pub force_rport: bool,
    /// Most TCP connections at once, accepted and opened by the proxy together; more are
    /// refused (closed at once) and counted.
    pub max_tcp_connections: usize,
    /// Most TCP connections at once with one source address (IPv6: one /64), both directions.
    pub max_tcp_per_source: usize,
    /// Most server transactions at once; a new request beyond gets 503 with Retry-After.
    pub max_transactions: usize,
    /// Most server transactions at once from one source address (IPv6: one /64); allow-listed
    /// sources are bound by `max_transactions` only.
    pub max_transactions_per_source: usize,
    /// UDP receive workers per listen address: each has its own socket on the address
    /// (SO_REUSEPORT, the kernel spreading flows by their address hash) and its own task, so
    /// that receiving, parsing and the gate run on every core. 0: one per CPU. Transaction
    /// state is one table shared by all workers, so a response or retransmission arriving on
    /// another worker's socket finds its transaction. Needs a restart.
    pub workers: usize,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 5060))],
            domains: Vec::new(),
            max_message_bytes: 16384,
            max_header_bytes: 2048,
            max_request_uri_bytes: 512,
            tcp_idle_timeout: Duration::from_secs(30),
            force_rport: true,
            max_tcp_connections: 1024,
            max_tcp_per_source: 32,
            max_transactions: 100_000,
            max_transactions_per_source: 1_000,
            workers: 0,
        }
    }
}

impl SipConfig {
    /// Check `[sip]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.max_message_bytes < 256 {
            return Err(invalid("sip.max_message_bytes", "must be at least 256"));
        }
        if self.max_header_bytes < 64 || self.max_header_bytes > self.max_message_bytes {
            return Err(invalid(
                "sip.max_header_bytes",
                "must be at least 64 and at most sip.max_message_bytes",
            ));
        }
        if self.max_request_uri_bytes < 16 || self.max_request_uri_bytes > self.max_header_bytes {
            return Err(invalid(
                "sip.max_request_uri_bytes",
                "must be at least 16 and at most sip.max_header_bytes",
            ));
        }
        if self.tcp_idle_timeout.is_zero() {
            return Err(invalid("sip.tcp_idle_timeout", "must be longer than 0s"));
        }
        if self.max_tcp_connections == 0 {
            return Err(invalid("sip.max_tcp_connections", "must be at least 1"));
        }
        if self.workers > MAX_WORKERS {
            return Err(invalid(
                "sip.workers",
                "must be at most 256 (0: one per CPU)",
            ));
        }
        Ok(())
    }

    /// The number of UDP workers per listen address: `workers`, or one per CPU when 0.
    pub fn udp_workers(&self) -> usize {
        match self.workers {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_WORKERS)),
            n => n,
        }
    }
}

/// Most UDP workers per address: more sockets than this only add memory.
const MAX_WORKERS: usize = 256;
