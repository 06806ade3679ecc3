//! The proxy's state and decisions, free of I/O: messages and a clock in, queued sends and
//! an [`Action`] out. Unit tests drive it with a fake clock.

use std::{
    borrow::Cow,
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    hash::{Hash as _, Hasher as _},
    net::{IpAddr, SocketAddr},
    sync::Arc,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use sip_firewall_sip::{
    Message, StartLine, Transport,
    headers::{HeaderName, name_addr, scalar, via},
    reply::{self, Reply, ReplyContext},
    uri::{self, Host, SipUri, Uri},
};
use tracing::debug;

use super::{
    fork::{Branch, BranchState, Failover, Fork},
    forward,
    metrics::ProxyMetrics,
    msg::SipMsg,
    route::{self, Local},
    transaction::{
        Kind, Timers,
        client::{self, ClientTxn},
        server::{self, ServerTxn},
    },
};
use crate::{
    auth::{self, Authenticator, Outcome, digest::Algorithm, nonce::Nonces, users::Users},
    config::{Config, in_any},
    policy::{
        relay::{self, Sender, Target},
        scanner::Scanners,
    },
    proxy::config::RegistrarConfig,
    registrar::{
        self, ContactParam, LocationStore, MemoryStore, Register,
        shared::{Change, SharedBinding, Sink, WriteThrough},
    },
    seams::{Action, Context, Destination, Observer},
};

/// What every branch we create starts with: responses whose top Via lacks it are not ours.
const BRANCH_PREFIX: &str = "z9hG4bKsfw";
/// How long a contact that answered nothing gets no retransmissions.
const SILENT_FOR: Duration = Duration::from_secs(600);
/// Most silent contacts remembered (beyond: not remembered, counted).
const MAX_SILENT: usize = 4096;
/// Vias of a request checked for a loop through us (a longer list loops anyway: Max-Forwards).
const MAX_VIAS_CHECKED: usize = 70;
/// The Allow header of our answers to OPTIONS.
const ALLOW: &str = "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, PRACK, UPDATE, INFO, MESSAGE, SUBSCRIBE, NOTIFY, REFER";

/// A server transaction's identity (RFC 3261 17.2.3): branch, sent-by, method (ACK as
/// INVITE).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerKey {
    branch: String,
    sent_by: String,
    method: String,
}

/// A client transaction's identity (RFC 3261 17.1.3): our branch and the CSeq method.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientKey {
    branch: String,
    method: String,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Server(ServerKey),
    Client(ClientKey),
}

struct ServerEntry {
    txn: ServerTxn,
    /// Where responses go.
    dest: Destination,
    /// The request's headers our own answers copy, and its source (for `received`).
    rctx: ReplyContext<'static>,
    source: SocketAddr,
    fork: Option<Fork>,
}

struct ClientEntry {
    txn: ClientTxn,
    /// The request as sent (for the ACK of a non-2xx final).
    req: SipMsg,
    dest: Destination,
    /// The server transaction and branch index this belongs to (None: a CANCEL of ours).
    server: Option<(ServerKey, usize)>,
}

/// A final answer the proxy generates.
#[derive(Debug)]
struct LocalReply {
    code: u16,
    phrase: &'static str,
    extra: Vec<String>,
}

fn answer(code: u16, phrase: &'static str) -> LocalReply {
    LocalReply {
        code,
        phrase,
        extra: Vec::new(),
    }
}

/// Everything behind the proxy's lock.
pub struct Core {
    local: Local,
    outbound: Option<SocketAddr>,
    /// `[proxy] outbound` when it is a name: resolved by DNS like any domain (RFC 3263).
    outbound_name: Option<String>,
    allow: Vec<IpNet>,
    /// `[proxy] internal_next_hops`: internal addresses a request's text may name as next hop.
    internal_next_hops: Vec<IpNet>,
    /// `[proxy] reply_from_any`: peers whose responses may come from anywhere.
    reply_from_any: Vec<IpNet>,
    /// `[proxy] unavailable`: 480 or 404.
    unavailable: u16,
    /// `[proxy] identity_headers`.
    identity_headers: Vec<String>,
    /// Contacts that left a request of ours unanswered, and when: their next requests are
    /// sent once, without Timer A/E retransmissions, until they answer something (so that
    /// a binding aimed at someone else, or a phone gone away, does not turn each call into
    /// seven sends toward it).
    silent: HashMap<SocketAddr, Instant>,
    /// The identities each user (user, lower-case domain) may assert besides their own URI.
    identities: HashMap<(String, String), Vec<String>>,

    force_rport: bool,
    scanners: Scanners,
    registrar: RegistrarConfig,
    timers: Timers,
    servers: HashMap<ServerKey, ServerEntry>,
    clients: HashMap<ClientKey, ClientEntry>,
    heap: BinaryHeap<Reverse<(Instant, TimerKey)>>,
    store: Box<dyn LocationStore>,
    /// Our Path URI (RFC 3327) when registrations are shared with a cluster.
    cluster_path: Option<String>,
    auth: Authenticator,
    metrics: ProxyMetrics,
    observer: Arc<dyn Observer>,
    sends: Vec<(Destination, Vec<u8>)>,
    /// Makes our branches unique across restarts.
    salt: u64,
    /// Key of the dialog stamps in our Record-Route.
    rr_key: Vec<u8>,
    seq: u64,
    /// The clock origin: nonce timestamps are seconds since the Unix epoch, taken as
    /// `unix_at_start` plus monotonic time since `start`.
    start: Instant,
    unix_at_start: u64,
    last_housekeeping: Instant,
    /// Set by a digest success while a request is handled: that source proved it receives.
    authenticated_source: Option<SocketAddr>,
    /// The source of the request being handled (set around [`Core::request`]), named by the
    /// security log when the request is refused.
    pub(super) requester: Option<SocketAddr>,
    /// When our interface addresses were last taken from the host.
    last_addr_refresh: Instant,
    /// `[sip] max_transactions` and `max_transactions_per_source`.
    max_transactions: (usize, usize),
    /// Server transactions open per source key (see `server::slots::source_key`).
    transactions_per_source: HashMap<std::net::IpAddr, usize>,
    /// The toll-fraud guard (issue 12): its decisions on calls, its dialog tracking.
    pub(crate) fraud: crate::fraud::Fraud,
    /// Requests waiting for DNS (RFC 3263), and the names to resolve ([`resolve`]).
    resolving: HashMap<ServerKey, resolve::Pending>,
    resolve_queue: Vec<(ServerKey, String)>,
    /// How long a resolution may take before the request gets 503 (`[dns] timeout` and a
    /// margin: the resolver ends its own work within `[dns] timeout`).
    resolve_limit: Duration,
    /// Client transactions whose branch has further DNS targets (RFC 3263 4.3): the ones a
    /// transport error toward their destination moves on.
    with_failover: std::collections::HashSet<ClientKey>,
}

fn random_bytes(n: usize) -> anyhow::Result<Vec<u8>> {
    let mut b = vec![0u8; n];
    getrandom::getrandom(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(b)
}

impl Core {
    /// The subscribers, changed at run time by the admin API.
    pub fn users_mut(&mut self) -> &mut Users {
        self.auth.users_mut()
    }

    /// A core from the configuration, its clock starting at `now`.
    pub fn new(
        config: &Config,
        metrics: ProxyMetrics,
        observer: Arc<dyn Observer>,
        now: Instant,
    ) -> anyhow::Result<Core> {
        let domains: Vec<String> = config
            .sip
            .domains
            .iter()
            .map(|d| d.to_ascii_lowercase())
            .collect();
        let (adv_host, adv_port) = advertised(config);
        let Keys {
            secret,
            rr_key,
            salt,
        } = Keys::new(config.auth.secret.as_deref())?;
        let algorithms = config
            .auth
            .algorithms
            .iter()
            .filter_map(|a| Algorithm::parse(a))
            .collect();
        Ok(Core {
            local: Local::new(domains, config.sip.listen.clone(), adv_host, adv_port)
                .with_tls(config.tls.listen.clone())
                // wss listeners are ours too (never a next hop; named in our WS Via when
                // there is no plain ws listener).
                .with_ws(
                    config
                        .ws
                        .listen
                        .iter()
                        .chain(&config.wss.listen)
                        .copied()
                        .collect(),
                ),
            outbound: config.proxy.outbound.as_ref().and_then(|o| o.addr()),
            outbound_name: config
                .proxy
                .outbound
                .as_ref()
                .and_then(|o| o.name().map(str::to_string)),
            allow: config.policy.allow.clone(),
            internal_next_hops: config.proxy.internal_next_hops.clone(),
            reply_from_any: config.proxy.reply_from_any.clone(),
            unavailable: config.proxy.unavailable,
            identity_headers: config.proxy.identity_headers.clone(),
            silent: HashMap::new(),
            identities: identities(&config.auth.users),
            force_rport: config.sip.force_rport,
            scanners: Scanners::new(config.policy.scanners.as_deref()),
            registrar: config.registrar.clone(),
            timers: Timers::from_config(&config.timers),
            servers: HashMap::new(),
            clients: HashMap::new(),
            heap: BinaryHeap::new(),
            store: Box::new(MemoryStore::default()),
            cluster_path: None,
            auth: Authenticator::new(
                Users::from_config(&config.auth.users),
                algorithms,
                Nonces::new(secret, config.auth.nonce_lifetime),
            ),
            fraud: crate::fraud::Fraud::new(&config.fraud, metrics.fraud.clone()),
            metrics,
            observer,
            sends: Vec::new(),
            salt,
            rr_key,
            seq: 0,
            start: now,
            unix_at_start: crate::clock::unix_now(),
            last_housekeeping: now,
            authenticated_source: None,
            requester: None,
            last_addr_refresh: now,
            max_transactions: (
                config.sip.max_transactions,
                config.sip.max_transactions_per_source,
            ),
            transactions_per_source: HashMap::new(),
            resolving: HashMap::new(),
            resolve_queue: Vec::new(),
            resolve_limit: config.dns.timeout + Duration::from_secs(2),
            with_failover: std::collections::HashSet::new(),
        })
    }

    /// Take the settings a reload may change while running (`sip-firewall reload`): the
    /// allow list (trusted peers), `[proxy]` but `advertise` and `reply_from_any`, the
    /// scanner list, `[timers]`, `[registrar]`, the offered digest algorithms and the nonce
    /// lifetime, and the transaction caps of `[sip]`. What runs keeps going: an open
    /// transaction keeps the deadlines it has and takes the new timer values at its next
    /// step; a binding keeps its expiry until its next REGISTER. The rest of the config is
    /// read once at start (the reloader names it as needing a restart).
    pub fn reconfigure(&mut self, config: &Config) {
        self.allow = config.policy.allow.clone();
        self.outbound = config.proxy.outbound.as_ref().and_then(|o| o.addr());
        self.outbound_name = config
            .proxy
            .outbound
            .as_ref()
            .and_then(|o| o.name().map(str::to_string));
        self.internal_next_hops = config.proxy.internal_next_hops.clone();
        self.unavailable = config.proxy.unavailable;
        self.identity_headers = config.proxy.identity_headers.clone();
        self.force_rport = config.sip.force_rport;
        self.scanners = Scanners::new(config.policy.scanners.as_deref());
        self.registrar = config.registrar.clone();
        self.timers = Timers::from_config(&config.timers);
        self.auth.set_algorithms(
            config
                .auth
                .algorithms
                .iter()
                .filter_map(|a| Algorithm::parse(a))
                .collect(),
        );
        self.auth.set_nonce_lifetime(config.auth.nonce_lifetime);
        self.max_transactions = (
            config.sip.max_transactions,
            config.sip.max_transactions_per_source,
        );
    }

    /// Share registrations with a cluster (issue 13): the location store becomes a cache
    /// written through to `sink` (see `registrar::shared`). `path`: the URI the other nodes
    /// reach us at (default: our advertised host and port over UDP).
    pub fn share_locations(&mut self, node: String, path: Option<String>, sink: Sink) {
        let path = path
            .unwrap_or_else(|| format!("sip:{};lr", self.local.hostport_for(Transport::Datagram)));
        let mut inner = MemoryStore::default();
        for (aor, b) in self.store.all() {
            inner.put(&aor, b);
        }
        self.store = Box::new(WriteThrough::new(
            inner,
            node,
            path.clone(),
            (self.start, self.unix_at_start),
            sink,
        ));
        self.cluster_path = Some(path);
    }

    /// A registration change another node made.
    pub fn location_remote(&mut self, change: &Change, now: Instant) {
        self.store.apply_remote(change, now);
        self.metrics.bindings.set(self.store.len() as i64);
    }

    /// The bindings whose flow we hold, as shared (issue 13: for a Redis that lost them).
    pub fn location_own(&self, now: Instant) -> Vec<(String, SharedBinding)> {
        self.store.own_shared(now)
    }

    /// The cluster's full set of registrations, after a (re)connect.
    pub fn location_reload(&mut self, all: &[(String, SharedBinding)], now: Instant) {
        self.store.reload_remote(all, now);
        self.metrics.bindings.set(self.store.len() as i64);
    }

    /// The identities a user may assert, replaced (admin API).
    pub fn set_identities(&mut self, user: &str, domain: &str, ids: &[String]) {
        let k = (user.to_string(), domain.to_ascii_lowercase());
        if ids.is_empty() {
            self.identities.remove(&k);
        } else {
            self.identities.insert(k, ids.to_vec());
        }
    }

    /// The identities a user may assert besides their own URI.
    pub fn identities_of(&self, user: &str, domain: &str) -> Vec<String> {
        self.identities
            .get(&(user.to_string(), domain.to_ascii_lowercase()))
            .cloned()
            .unwrap_or_default()
    }

    /// Remove the identity headers (`[proxy] identity_headers`) of a request from outside
    /// the trust domain (RFC 3325 5: they are asserted only between trusted elements).
    pub(super) fn strip_identity(&self, msg: &mut SipMsg) {
        for h in &self.identity_headers {
            msg.remove(HeaderName::Other(h));
        }
    }

    /// The P-Asserted-Identity of an authenticated user (RFC 3325 9.1): the identity their
    /// P-Preferred-Identity names when they may assert it, else `sip:user@realm`.
    pub(super) fn asserted_identity(&self, m: &Message<'_>, user: &str, realm: &str) -> String {
        let own = format!("sip:{user}@{realm}");
        let allowed = self.identities_of(user, realm);
        let preferred = m
            .headers
            .iter()
            .filter(|h| {
                matches!(h.name, HeaderName::Other(n) if n.eq_ignore_ascii_case("P-Preferred-Identity"))
            })
            .flat_map(|h| h.value.split(','))
            .filter_map(|v| {
                let v = v.trim();
                let uri = match (v.find('<'), v.rfind('>')) {
                    (Some(a), Some(b)) if a < b => v.get(a + 1..b)?,
                    _ => v,
                };
                Some(uri.trim().to_string())
            })
            .find(|u| u.eq_ignore_ascii_case(&own) || allowed.iter().any(|a| a.eq_ignore_ascii_case(u)));
        format!("<{}>", preferred.unwrap_or(own))
    }

    /// A contact left a request of ours unanswered.
    pub(super) fn mark_silent(&mut self, addr: SocketAddr, now: Instant) {
        if self.silent.len() >= MAX_SILENT && !self.silent.contains_key(&addr) {
            self.silent
                .retain(|_, at| now.saturating_duration_since(*at) < SILENT_FOR);
            if self.silent.len() >= MAX_SILENT {
                debug!(%addr, "silent-contact table full");
                self.metrics
                    .silent_contacts
                    .with_label_values(&["table_full"])
                    .inc();
                return;
            }
        }
        self.silent.insert(addr, now);
        self.metrics
            .silent_contacts
            .with_label_values(&["marked"])
            .inc();
    }

    /// Whether requests to `addr` go without retransmissions.
    pub(super) fn is_silent(&self, addr: SocketAddr, now: Instant) -> bool {
        self.silent
            .get(&addr)
            .is_some_and(|at| now.saturating_duration_since(*at) < SILENT_FOR)
    }

    /// The sends queued since the last call.
    pub fn take_sends(&mut self) -> Vec<(Destination, Vec<u8>)> {
        std::mem::take(&mut self.sends)
    }

    pub(super) fn send(&mut self, dest: Destination, bytes: Vec<u8>) {
        self.sends.push((dest, bytes));
    }

    pub(super) fn unix_secs(&self, now: Instant) -> u64 {
        self.unix_at_start + now.saturating_duration_since(self.start).as_secs()
    }

    /// A branch for a request we forward: 96 bits from the OS CSPRNG, so that nobody who
    /// saw our earlier branches can name an open transaction (a counter let a subscriber
    /// forge final responses to other people's calls), then `.` and the request's loop tag
    /// (RFC 3261 16.6 step 8), which [`Core::looped`] recognises when it comes back.
    pub(super) fn new_branch(&mut self, loop_tag: &str) -> String {
        let mut r = [0u8; 12];
        if getrandom::getrandom(&mut r).is_err() {
            // No randomness left (never seen on Linux): a keyed hash of a counter, still
            // unpredictable without the key.
            self.seq += 1;
            let h = route::mac(&self.rr_key, &[b"branch", &self.seq.to_le_bytes()]);
            r.copy_from_slice(&h[..12]);
        }
        format!("{BRANCH_PREFIX}{}.{loop_tag}", crate::auth::digest::hex(&r))
    }

    /// The loop-detection tag of a request (RFC 3261 16.6 step 8): a keyed hash of its
    /// Request-URI, Call-ID, From and To tags, CSeq number and the Via below ours, so that
    /// the same request coming back is a loop and one whose Request-URI changed a spiral.
    pub(super) fn loop_tag(
        &self,
        ruri: &str,
        get: &dyn Fn(HeaderName<'static>) -> Option<String>,
        below: Option<&via::Via<'_>>,
    ) -> String {
        let tag = |h| {
            get(h)
                .and_then(|v| {
                    name_addr::parse_single(&v)
                        .ok()
                        .and_then(|a| a.tag.map(str::to_string))
                })
                .unwrap_or_default()
        };
        let cseq = get(HeaderName::CSeq)
            .and_then(|c| scalar::cseq(&c).map(|c| c.0))
            .unwrap_or(0);
        let (vb, vh, vp) = match below {
            Some(v) => (
                v.branch.unwrap_or(""),
                match v.host {
                    Host::Domain(d) => d.to_ascii_lowercase(),
                    h => h.ip().map(|i| i.to_string()).unwrap_or_default(),
                },
                v.port.unwrap_or(0),
            ),
            None => ("", String::new(), 0),
        };
        // Salted per process: cluster nodes share `rr_key` (one `[auth] secret`), and a
        // request relayed from one node to another unchanged (an in-dialog BYE through the
        // node holding the callee's flow) is no loop through the second.
        let h = route::mac(
            &self.rr_key,
            &[
                b"loop",
                &self.salt.to_le_bytes(),
                ruri.as_bytes(),
                get(HeaderName::CallId).unwrap_or_default().as_bytes(),
                tag(HeaderName::From).as_bytes(),
                tag(HeaderName::To).as_bytes(),
                &cseq.to_le_bytes(),
                vb.as_bytes(),
                vh.as_bytes(),
                &vp.to_le_bytes(),
            ],
        );
        crate::auth::digest::hex(&h[..8])
    }

    /// RFC 3261 16.3 step 4: whether the request already went through us unchanged (one
    /// of its Vias is ours and carries the loop tag this request would get now). A
    /// request whose Request-URI changed since (a spiral) is not a loop.
    pub(super) fn looped(&self, m: &Message<'_>) -> bool {
        let vias: Vec<via::Via<'_>> = m
            .all(HeaderName::Via)
            .flat_map(via::parse_list)
            .map_while(Result::ok)
            .take(MAX_VIAS_CHECKED)
            .collect();
        let ruri = match m.start {
            StartLine::Request { uri, .. } => uri,
            _ => return false,
        };
        let get = |h: HeaderName<'static>| m.get(h).map(str::to_string);
        vias.iter().enumerate().any(|(i, v)| {
            v.branch
                .and_then(|b| b.strip_prefix(BRANCH_PREFIX))
                .and_then(|b| b.rsplit_once('.'))
                .is_some_and(|(_, tag)| tag == self.loop_tag(ruri, &get, vias.get(i + 1)))
        })
    }

    /// Whether a request comes from a trusted peer: an allow-listed address, or a TLS
    /// connection whose client certificate names a `[tls] trusted_peers` host.
    pub(super) fn is_trusted(&self, ctx: &Context) -> bool {
        in_any(&self.allow, ctx.source.ip())
            || (ctx.transport == Transport::Tls && crate::server::tls::is_trusted_peer(ctx.source))
    }

    /// Count a request refused for routing integrity, and log it as a security event
    /// (`relay_refused`, rate-limited per source).
    pub(super) fn refused(&self, reason: &'static str) {
        match self.requester {
            Some(source) => crate::logging::security_event("relay_refused", source.ip(), reason, 1),
            None => debug!(reason, "request refused"),
        }
        self.metrics
            .dialog_refused
            .with_label_values(&[reason])
            .inc();
    }

    pub(super) fn gauges(&self) {
        let t = &self.metrics.transactions;
        t.with_label_values(&["server"])
            .set(self.servers.len() as i64);
        t.with_label_values(&["client"])
            .set(self.clients.len() as i64);
    }
}

/// `host[:port]` for our Via and Record-Route: `[proxy] advertise`, else the first listen
/// address, else the first domain.
fn advertised(config: &Config) -> (String, Option<u16>) {
    if let Some(a) = &config.proxy.advertise {
        return match uri::parse_hostport(a) {
            Ok((_, port)) => {
                let host = match port {
                    Some(_) => a.rsplit_once(':').map_or(a.as_str(), |(h, _)| h),
                    None => a.as_str(),
                };
                (host.to_string(), port)
            }
            Err(_) => (a.clone(), None),
        };
    }
    match config.sip.listen.first() {
        Some(l) if !l.ip().is_unspecified() => {
            let host = match l {
                SocketAddr::V4(v) => v.ip().to_string(),
                SocketAddr::V6(v) => format!("[{}]", v.ip()),
            };
            (host, Some(l.port()))
        }
        l => {
            // A wildcard and no domain: one of the host's own addresses (the first global
            // one), so that in-dialog requests find their way back without configuration.
            let host_addr = || {
                route::host_addresses()
                    .into_iter()
                    .find(|i| {
                        // 0.0.0.0 receives IPv4 only: advertise an IPv4 address then.
                        let family_ok = !matches!(l, Some(SocketAddr::V4(_))) || i.is_ipv4();
                        family_ok
                            && !i.is_loopback()
                            && !i.is_unspecified()
                            && match i {
                                IpAddr::V4(v) => !v.is_link_local(),
                                IpAddr::V6(v) => !v.is_unicast_link_local(),
                            }
                    })
                    .map(|i| match i {
                        IpAddr::V4(v) => v.to_string(),
                        IpAddr::V6(v) => format!("[{v}]"),
                    })
            };
            let host = config
                .sip
                .domains
                .first()
                .cloned()
                .or_else(host_addr)
                .unwrap_or_else(|| {
                    // Nothing names us: in-dialog requests will not find their way back.
                    tracing::warn!(
                        "no [proxy] advertise, no specific listen address, no domain and no \
                     address on the host: Via and Record-Route say localhost"
                    );
                    "localhost".into()
                });
            (host, l.map(SocketAddr::port))
        }
    }
}

/// Where requests for a binding go: the flow the REGISTER came on (its source address and
/// transport, RFC 5626 in spirit), never a host its Contact names (another host to aim our
/// INVITEs at, or a private address behind NAT). Over TCP the source address is proven by
/// the handshake but its port is that of a connection the client may close: there, a
/// Contact on that very address names the port to connect to again.
fn binding_destination(b: &registrar::Binding) -> Destination {
    if b.transport.is_stream()
        && let Some(d) = route::resolve(&b.contact, None)
        && d.transport == b.transport
        && d.addr.ip().to_canonical() == b.source.ip().to_canonical()
    {
        return Destination {
            addr: SocketAddr::new(b.source.ip(), d.addr.port()),
            transport: b.transport,
        };
    }
    Destination {
        addr: b.source,
        transport: b.transport,
    }
}

/// The first value of a header that the message layer does not name.
fn header<'m>(m: &'m Message<'_>, name: &str) -> Option<&'m str> {
    m.headers
        .iter()
        .find(|h| matches!(h.name, HeaderName::Other(n) if n.eq_ignore_ascii_case(name)))
        .map(|h| h.value.as_ref())
}

/// The value of `;name=value` in a header parameter string.
fn param<'a>(params: &'a str, name: &str) -> Option<&'a str> {
    params.split(';').find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// The server transaction key of a request (RFC 3261 17.2.3; the RFC 2543 fallback keys
/// on Call-ID, CSeq number and From tag).
fn server_key(m: &Message<'_>, method: &str) -> Option<ServerKey> {
    let v = via::parse_list(m.get(HeaderName::Via)?).next()?.ok()?;
    let host = match v.host {
        Host::Domain(d) => d.to_ascii_lowercase(),
        h => h.ip().map(|i| i.to_string()).unwrap_or_default(),
    };
    let sent_by = format!("{host}:{}", v.port.unwrap_or(5060));
    let branch = match v.branch {
        Some(b) if b.starts_with("z9hG4bK") => b.to_string(),
        _ => {
            let from_tag = m
                .get(HeaderName::From)
                .and_then(|f| name_addr::parse_single(f).ok())
                .and_then(|a| a.tag)
                .unwrap_or("");
            let num = m
                .get(HeaderName::CSeq)
                .and_then(scalar::cseq)
                .map_or(0, |c| c.0);
            format!(
                "2543|{}|{num}|{from_tag}",
                m.get(HeaderName::CallId).unwrap_or("")
            )
        }
    };
    let method = if method == "ACK" { "INVITE" } else { method };
    Some(ServerKey {
        branch,
        sent_by,
        method: method.to_string(),
    })
}

/// The reply context of a request, owned (it outlives the receive buffer).
fn owned_ctx(m: &Message<'_>) -> ReplyContext<'static> {
    let c = ReplyContext::from_message(m);
    let own = |v: Option<Cow<'_, str>>| v.map(|v| Cow::Owned(v.into_owned()));
    ReplyContext {
        vias: c
            .vias
            .into_iter()
            .map(|v| Cow::Owned(v.into_owned()))
            .collect(),
        from: own(c.from),
        to: own(c.to),
        call_id: own(c.call_id),
        cseq: own(c.cseq),
    }
}

mod fraud;
mod request;
mod resolve;
mod response;
mod timers;

/// The core's keys: the nonce secret, the Record-Route stamp key and the branch salt.
struct Keys {
    secret: Vec<u8>,
    rr_key: Vec<u8>,
    salt: u64,
}

impl Keys {
    /// From `[auth] secret` when set, else random.
    fn new(configured: Option<&str>) -> anyhow::Result<Keys> {
        let secret = match configured {
            Some(s) => s.as_bytes().to_vec(),
            None => random_bytes(32)?,
        };
        // Derived from the configured secret, dialogs survive a restart; from a random one,
        // in-dialog requests of earlier dialogs are refused (404) after it.
        let rr_key = match configured {
            Some(s) => route::mac(s.as_bytes(), &[b"sip-firewall record-route key"]).to_vec(),
            None => random_bytes(32)?,
        };
        let salt = u64::from_le_bytes(
            random_bytes(8)?
                .try_into()
                .map_err(|_| anyhow::anyhow!("randomness"))?,
        );
        Ok(Keys {
            secret,
            rr_key,
            salt,
        })
    }
}

/// The identities each user may assert besides its own (RFC 3325), by user and domain.
fn identities(users: &[crate::auth::config::UserEntry]) -> HashMap<(String, String), Vec<String>> {
    users
        .iter()
        .filter(|u| !u.identities.is_empty())
        .map(|u| {
            (
                (u.user.clone(), u.domain.to_ascii_lowercase()),
                u.identities.clone(),
            )
        })
        .collect()
}

#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod dns_tests;
#[cfg(test)]
mod edge_tests;
#[cfg(test)]
mod fraud_tests;
#[cfg(test)]
mod tests;
