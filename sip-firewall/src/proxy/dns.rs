//! RFC 3263 server location: a SIP URI whose host is a domain is resolved to an ordered list
//! of targets (address, port, transport) through NAPTR, SRV and A/AAAA, asynchronously
//! (hickory-resolver on tokio: the proxy core never waits on DNS). Results are cached until
//! the smallest TTL of the records behind them expires, in a table bounded in size (at the
//! bound nothing more is cached, counted in `sipfw_limits_refused_total{what="dns_cache"}`).
//! The caller walks the list in order: the next target after a transport error, a timeout
//! or a 503 (RFC 3263 4.3); the proxy core does so (`proxy/core/resolve.rs`). Resolutions
//! are counted in `sipfw_dns_lookups_total{result}` (`cached` within the TTL).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

use hickory_resolver::{
    TokioResolver,
    config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts},
    net::runtime::TokioRuntimeProvider,
    proto::rr::{RData, RecordType},
};
use serde::Deserialize;
use sip_firewall_sip::{
    Transport,
    uri::{self, Uri},
};

use crate::seams::Destination;

/// `[dns]`: how domains in Request-URIs and Routes are resolved (RFC 3263).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DnsConfig {
    /// Name servers to ask (address and port); empty: the system's (/etc/resolv.conf).
    pub nameservers: Vec<SocketAddr>,
    /// One resolution (all its queries) is abandoned after this: the request gets 503.
    #[serde(deserialize_with = "crate::section::duration")]
    pub timeout: Duration,
    /// Most names kept in the cache.
    pub max_cached: usize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            nameservers: Vec::new(),
            timeout: Duration::from_secs(5),
            max_cached: 10_000,
        }
    }
}

/// Why a name gave no target.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DnsError {
    /// Not a SIP URI with a domain host.
    #[error("not a SIP URI with a domain")]
    NotADomain,
    /// The name resolves to nothing (RFC 3263 4.1: 404 to the caller... or 503 when the
    /// name servers could not be asked).
    #[error("the name resolves to no target")]
    NotFound,
    /// The resolution did not finish in time or the servers failed.
    #[error("DNS failed: {0}")]
    Failed(String),
}

/// The domain of a SIP URI (lower case, no trailing dot), when its host is a name.
pub fn domain_of(uri_text: &str) -> Option<String> {
    match uri::parse(uri_text) {
        Ok(Uri::Sip(u)) => match u.host {
            uri::Host::Domain(d) => Some(d.trim_end_matches('.').to_ascii_lowercase()),
            _ => None,
        },
        _ => None,
    }
}

/// The most targets one name yields (a bound on what one answer may make us try).
const MAX_TARGETS: usize = 16;

/// What one location gathers besides its targets: how long the answers are good for, and
/// whether a server failed (not "no such record"): with no target at all, the resolution
/// failed (503) rather than found nothing (404).
struct Run {
    until: Instant,
    failure: Option<String>,
}

impl Run {
    fn note(&mut self, e: &hickory_resolver::net::NetError) {
        if !e.is_no_records_found() {
            self.failure = Some(e.to_string());
        }
    }
}

/// Services of NAPTR records we can use, and their transports (RFC 3263 4.1).
fn naptr_transport(service: &[u8]) -> Option<Transport> {
    match service.to_ascii_uppercase().as_slice() {
        b"SIP+D2U" => Some(Transport::Datagram),
        b"SIP+D2T" => Some(Transport::Stream),
        b"SIPS+D2T" => Some(Transport::Tls),
        _ => None,
    }
}

/// The SRV prefix of a transport (RFC 3263 4.1, RFC 3261 26.2).
fn srv_prefix(t: Transport) -> &'static str {
    match t {
        Transport::Datagram => "_sip._udp",
        Transport::Stream => "_sip._tcp",
        Transport::Tls => "_sips._tcp",
        Transport::Ws => "_sip._ws",
        // Never asked (WebSocket clients are not dialled); named for completeness.
        Transport::Wss => "_sips._ws",
    }
}

/// The resolver with its cache.
pub struct Dns {
    resolver: TokioResolver,
    timeout: Duration,
    max_cached: usize,
    cache: Mutex<HashMap<String, (Instant, Vec<Destination>)>>,
}

impl Dns {
    /// A resolver asking `cfg.nameservers`, or the system's when none is set.
    pub fn new(cfg: &DnsConfig) -> Result<Dns, DnsError> {
        let builder = if cfg.nameservers.is_empty() {
            TokioResolver::builder_tokio().map_err(|e| DnsError::Failed(e.to_string()))?
        } else {
            let servers = cfg
                .nameservers
                .iter()
                .map(|s| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = s.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = s.port();
                    let mut n = NameServerConfig::udp(s.ip());
                    n.connections = vec![udp, tcp];
                    n
                })
                .collect();
            TokioResolver::builder_with_config(
                ResolverConfig::from_name_servers(servers),
                TokioRuntimeProvider::default(),
            )
        };
        let mut opts = ResolverOpts::default();
        opts.timeout = cfg.timeout.min(Duration::from_secs(2));
        opts.attempts = 2;
        let resolver = builder
            .with_options(opts)
            .build()
            .map_err(|e| DnsError::Failed(e.to_string()))?;
        Ok(Dns {
            resolver,
            timeout: cfg.timeout,
            max_cached: cfg.max_cached,
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The targets of `uri_text` in the order to try them (RFC 3263 4). An IP host needs no
    /// DNS and is not handled here ([`super::route::resolve`]).
    pub async fn targets(&self, uri_text: &str) -> Result<Vec<Destination>, DnsError> {
        let Ok(Uri::Sip(u)) = uri::parse(uri_text) else {
            return Err(DnsError::NotADomain);
        };
        let uri::Host::Domain(host) = u.host else {
            return Err(DnsError::NotADomain);
        };
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let transport = match u.param("transport") {
            _ if u.secure => Some(Transport::Tls),
            Some(t) if t.eq_ignore_ascii_case("udp") => Some(Transport::Datagram),
            Some(t) if t.eq_ignore_ascii_case("tcp") => Some(Transport::Stream),
            Some(t) if t.eq_ignore_ascii_case("tls") => Some(Transport::Tls),
            _ => None,
        };
        let key = format!("{host}|{:?}|{:?}|{}", u.port, transport, u.secure);
        if let Some(hit) = self.cached(&key) {
            crate::metrics::dns_lookup("cached");
            return Ok(hit);
        }
        let work = self.locate(&host, u.port, transport, u.secure);
        let (targets, until) = match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                crate::metrics::dns_lookup(match e {
                    DnsError::Failed(_) => "failed",
                    _ => "not_found",
                });
                return Err(e);
            }
            Err(_) => {
                crate::metrics::dns_lookup("failed");
                return Err(DnsError::Failed("timed out".into()));
            }
        };
        if targets.is_empty() {
            crate::metrics::dns_lookup("not_found");
            return Err(DnsError::NotFound);
        }
        crate::metrics::dns_lookup("resolved");
        self.store(key, until, &targets);
        Ok(targets)
    }

    fn cached(&self, key: &str) -> Option<Vec<Destination>> {
        let g = crate::guard::lock(&self.cache, "dns cache");
        g.get(key)
            .filter(|(until, _)| *until > Instant::now())
            .map(|(_, t)| t.clone())
    }

    fn store(&self, key: String, until: Instant, targets: &[Destination]) {
        let mut g = crate::guard::lock(&self.cache, "dns cache");
        if g.len() >= self.max_cached {
            let now = Instant::now();
            g.retain(|_, (u, _)| *u > now);
        }
        if g.len() >= self.max_cached {
            crate::metrics::limit_hit("dns_cache", None);
            return;
        }
        g.insert(key, (until, targets.to_vec()));
    }

    /// RFC 3263 4.1 and 4.2: with a port, A/AAAA only; with a transport, its SRV records;
    /// else NAPTR, then the SRV records of each transport, then A/AAAA on the default port.
    async fn locate(
        &self,
        host: &str,
        port: Option<u16>,
        transport: Option<Transport>,
        secure: bool,
    ) -> Result<(Vec<Destination>, Instant), DnsError> {
        let mut run = Run {
            until: Instant::now() + Duration::from_secs(3600),
            failure: None,
        };
        let default_t = if secure {
            Transport::Tls
        } else {
            Transport::Datagram
        };
        if let Some(port) = port {
            let t = transport.unwrap_or(default_t);
            let out = self.addresses(host, port, t, &mut run.until).await?;
            return Ok((out, run.until));
        }
        let srv_names = match transport {
            Some(t) => vec![(format!("{}.{host}.", srv_prefix(t)), t)],
            None => self.naptr(host, secure, &mut run).await,
        };
        let mut out = Vec::new();
        for (name, t) in &srv_names {
            if self.srv(name, *t, &mut run, &mut out).await {
                out.truncate(MAX_TARGETS);
                return Ok((out, run.until));
            }
            if !out.is_empty() && transport.is_none() && srv_names.len() > 1 {
                // The first transport that has targets is the one to use (4.1).
                break;
            }
        }
        if out.is_empty() {
            // No SRV record: the host's addresses on the default port (4.2).
            let t = transport.unwrap_or(default_t);
            let port = if t == Transport::Tls { 5061 } else { 5060 };
            match self.addresses(host, port, t, &mut run.until).await {
                Ok(a) => out = a,
                Err(DnsError::Failed(e)) => run.failure = Some(e),
                Err(_) => {}
            }
        }
        if out.is_empty()
            && let Some(e) = run.failure
        {
            return Err(DnsError::Failed(e));
        }
        out.truncate(MAX_TARGETS);
        Ok((out, run.until))
    }

    /// The SRV names to ask for `host`, in order (RFC 3263 4.1): from its NAPTR records
    /// (flag "s", a transport we speak; TLS only when `secure`), else every transport's.
    async fn naptr(&self, host: &str, secure: bool, run: &mut Run) -> Vec<(String, Transport)> {
        let mut naptrs = Vec::new();
        match self
            .resolver
            .lookup(format!("{host}."), RecordType::NAPTR)
            .await
        {
            Err(e) => run.note(&e),
            Ok(l) => {
                run.until = run.until.min(l.valid_until());
                for r in l.answers() {
                    if let RData::NAPTR(n) = &r.data
                        && n.flags.eq_ignore_ascii_case(b"s")
                        && let Some(t) = naptr_transport(&n.services)
                        && (!secure || t == Transport::Tls)
                    {
                        naptrs.push((n.order, n.preference, n.replacement.to_ascii(), t));
                    }
                }
            }
        }
        naptrs.sort_by_key(|(o, p, _, _)| (*o, *p));
        let mut names: Vec<(String, Transport)> = naptrs
            .into_iter()
            .map(|(_, _, name, t)| (name, t))
            .collect();
        if names.is_empty() {
            // No usable NAPTR: the SRV records of every transport we speak (4.1).
            let ts: &[Transport] = if secure {
                &[Transport::Tls]
            } else {
                &[Transport::Datagram, Transport::Stream, Transport::Tls]
            };
            for t in ts {
                names.push((format!("{}.{host}.", srv_prefix(*t)), *t));
            }
        }
        names
    }

    /// The targets of SRV `name` (transport `t`) added to `out`, in RFC 2782 order. True:
    /// `out` holds [`MAX_TARGETS`], ask no more.
    async fn srv(
        &self,
        name: &str,
        t: Transport,
        run: &mut Run,
        out: &mut Vec<Destination>,
    ) -> bool {
        let l = match self.resolver.srv_lookup(name).await {
            Ok(l) => l,
            Err(e) => {
                run.note(&e);
                return false;
            }
        };
        run.until = run.until.min(l.valid_until());
        let mut srvs: Vec<_> = l
            .answers()
            .iter()
            .filter_map(|r| match &r.data {
                RData::SRV(s) => Some((s.priority, s.weight, s.port, s.target.to_ascii())),
                _ => None,
            })
            .collect();
        // RFC 2782: lowest priority first; within one, heavier weights first (a
        // deterministic stand-in for the weighted random order).
        srvs.sort_by_key(|(p, w, _, _)| (*p, std::cmp::Reverse(*w)));
        for (_, _, port, target) in srvs {
            if target == "." {
                continue;
            }
            match self.addresses(&target, port, t, &mut run.until).await {
                Ok(mut a) => out.append(&mut a),
                Err(DnsError::Failed(e)) => run.failure = Some(e),
                Err(_) => {}
            }
            if out.len() >= MAX_TARGETS {
                return true;
            }
        }
        false
    }

    /// The A and AAAA addresses of `name` at `port`.
    async fn addresses(
        &self,
        name: &str,
        port: u16,
        transport: Transport,
        until: &mut Instant,
    ) -> Result<Vec<Destination>, DnsError> {
        let fqdn = if name.ends_with('.') {
            name.to_string()
        } else {
            format!("{name}.")
        };
        let ips = self.resolver.lookup_ip(fqdn.as_str()).await.map_err(|e| {
            if e.is_no_records_found() {
                DnsError::NotFound
            } else {
                DnsError::Failed(e.to_string())
            }
        })?;
        *until = (*until).min(ips.valid_until());
        Ok(ips
            .iter()
            .map(|ip: IpAddr| Destination {
                addr: SocketAddr::new(ip, port),
                transport,
            })
            .take(MAX_TARGETS)
            .collect())
    }
}
