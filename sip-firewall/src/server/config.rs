//! `[sip]`: the SIP listeners and the message layer's limits, with their defaults and checks;
//! `[tls]` and `[ws]`: the TLS and WebSocket listeners.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use serde::{Deserialize, Deserializer, de};

use crate::section::{Invalid, duration, invalid, is_hostport_text};

/// One `[sip] listen` entry: an address (`"10.0.0.1:5060"`), or a table with the host
/// this listener's side knows us by (`{ addr = "10.0.2.1:5060", advertise =
/// "198.51.100.7" }`, e.g. the public address a NAT maps to it), written into the Via and
/// Record-Route of what leaves from it instead of its own address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listener {
    pub addr: SocketAddr,
    /// `host[:port]`; None: `[proxy] advertise`, else the listener's own address.
    pub advertise: Option<String>,
}

impl From<SocketAddr> for Listener {
    fn from(addr: SocketAddr) -> Listener {
        Listener {
            addr,
            advertise: None,
        }
    }
}

impl<'de> Deserialize<'de> for Listener {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Listener, D::Error> {
        /// The two spellings of an entry.
        struct Entry;
        impl<'de> de::Visitor<'de> for Entry {
            type Value = Listener;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(
                    "an address \"ip:port\" or a table { addr = \"ip:port\", advertise = \"host[:port]\" }",
                )
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Listener, E> {
                v.parse::<SocketAddr>().map(Listener::from).map_err(|e| {
                    E::custom(format!(
                        "{e}: {v:?} (write \"ip:port\", e.g. \"10.0.0.1:5060\")"
                    ))
                })
            }
            fn visit_map<A: de::MapAccess<'de>>(self, m: A) -> Result<Listener, A::Error> {
                /// The table spelling.
                #[derive(Deserialize)]
                #[serde(deny_unknown_fields)]
                struct Table {
                    addr: SocketAddr,
                    advertise: Option<String>,
                }
                let t = Table::deserialize(de::value::MapAccessDeserializer::new(m))?;
                Ok(Listener {
                    addr: t.addr,
                    advertise: t.advertise,
                })
            }
        }
        d.deserialize_any(Entry)
    }
}

/// `[sip]`: the SIP listeners and the message layer's limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipConfig {
    /// Addresses the daemon listens on, each on UDP and TCP, each with the host it is
    /// advertised as when it has one of its own. With more than one, a message leaves
    /// from the one that routes to its destination (`server::sides`).
    pub listen: Vec<Listener>,
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
    /// (SO_REUSEPORT, datagrams spread as `udp_steering` says) and its own task, so
    /// that receiving, parsing and the gate run on every core. 0: one per CPU. Transaction
    /// state is one table shared by all workers, so a response or retransmission arriving on
    /// another worker's socket finds its transaction. Needs a restart.
    pub workers: usize,
    /// How a datagram picks its worker socket when there are several: `call_id` (an eBPF
    /// `SO_REUSEPORT` program, by the hash of its Call-ID: every message of a call reaches
    /// one worker; the kernel's hash when it cannot be loaded) or `kernel` (the hash of its
    /// addresses). Needs a restart.
    pub udp_steering: super::steer::UdpSteering,
    /// Serve each UDP worker socket on an OS thread of its own (receive, judge and answer
    /// without a wake-up of another thread) instead of a task on the shared runtime. Off by
    /// default: on a 2-core host under `cargo xtask bench proxy` the threads cost more CPU
    /// per call (the timer task and TLS flows stay on the shared runtime, woken from the
    /// worker threads). Needs a restart.
    pub udp_threads: bool,
}

impl Default for SipConfig {
    fn default() -> Self {
        SipConfig {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 5060)).into()],
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
            udp_steering: super::steer::UdpSteering::CallId,
            udp_threads: false,
        }
    }
}

impl SipConfig {
    /// Check `[sip]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self
            .listen
            .iter()
            .filter_map(|l| l.advertise.as_deref())
            .any(|a| !is_hostport_text(a))
        {
            return Err(invalid(
                "sip.listen",
                "an entry's advertise must be host or host:port (e.g. \"198.51.100.7\")",
            ));
        }
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

    /// The listen addresses.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.listen.iter().map(|l| l.addr).collect()
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
