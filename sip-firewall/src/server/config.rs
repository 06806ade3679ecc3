//! `[sip]`: the SIP listeners and the message layer's limits, with their defaults and checks;
//! `[tls]` and `[ws]`: the TLS and WebSocket listeners.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

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

/// `[ws]`: SIP over WebSocket (RFC 7118) for browsers. Connections share the TCP bounds
/// (`[sip] max_tcp_connections`, `max_tcp_per_source`) and `tcp_idle_timeout`; a message
/// is at most `[sip] max_message_bytes`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WsConfig {
    /// Addresses to accept WebSocket upgrades on; empty: no WebSocket listener.
    pub listen: Vec<SocketAddr>,
    /// Origins allowed to connect (as browsers send them, e.g. "https://phone.example.com");
    /// empty: any origin. An upgrade from another origin is refused with 403.
    pub origins: Vec<String>,
    /// Largest WebSocket frame accepted (bytes); a larger one closes the connection.
    pub max_frame_bytes: usize,
    /// A ping is sent after this long without traffic; the pong (or any message) keeps the
    /// connection within `tcp_idle_timeout`.
    #[serde(deserialize_with = "duration")]
    pub ping_interval: Duration,
    /// An upgrade not finished within this is abandoned.
    #[serde(deserialize_with = "duration")]
    pub handshake_timeout: Duration,
}

impl Default for WsConfig {
    fn default() -> Self {
        WsConfig {
            listen: Vec::new(),
            origins: Vec::new(),
            max_frame_bytes: 16384,
            ping_interval: Duration::from_secs(20),
            handshake_timeout: Duration::from_secs(5),
        }
    }
}

/// `[tls]`: SIP over TLS (RFC 3261 26.2, RFC 5630). Connections share the TCP bounds
/// (`[sip] max_tcp_connections`, `max_tcp_per_source`) and `tcp_idle_timeout`.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Addresses to accept TLS on (usually port 5061); empty: no TLS listener.
    pub listen: Vec<SocketAddr>,
    /// PEM certificate chain we present (as a server, and as a client to TLS next hops).
    pub certificate: Option<PathBuf>,
    /// PEM private key of `certificate`.
    pub private_key: Option<PathBuf>,
    /// PEM CA certificates: client certificates must chain to them (a client presenting an
    /// untrusted certificate is refused), and TLS next hops are verified against them
    /// instead of the built-in web roots.
    pub ca: Option<PathBuf>,
    /// Refuse clients that present no certificate (needs `ca`).
    pub require_client_certificate: bool,
    /// Host names (e.g. "trunk.example.com"): a client whose certificate chains to `ca` and
    /// is valid for one of them is a trusted peer on that connection, as an allow-listed
    /// address is (it may relay, its Route is honoured, it registers without digest).
    pub trusted_peers: Vec<String>,
    /// A TLS handshake not finished within this is abandoned (a handshake flood holds no
    /// slot for long).
    #[serde(deserialize_with = "duration")]
    pub handshake_timeout: Duration,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            listen: Vec::new(),
            certificate: None,
            private_key: None,
            ca: None,
            require_client_certificate: false,
            trusted_peers: Vec::new(),
            handshake_timeout: Duration::from_secs(5),
        }
    }
}
