//! The proxy's state and decisions, free of I/O: messages and a clock in, queued sends and
//! an [`Action`] out. Unit tests drive it with a fake clock. A [`Core`] is one shard of the
//! proxy: it owns the state of its calls (the server and client transaction tables, the
//! timer heap, the requests waiting for DNS) and holds handles on what every shard shares
//! (the location store, the authenticator, the fraud guard, the keep-alive flows: see
//! [`shared`], which lists each part), with the configuration, keys and seams; one
//! request's facts travel as a [`Req`] passed down, never through fields.
//!
//! | file | what it decides |
//! |---|---|
//! | `mod.rs` | the core's state and keys, trust, refusals |
//! | `shared.rs` | what every shard's core shares (bindings, subscribers, fraud guard, flows), which is per shard |
//! | `silent.rs` | contacts that answered nothing: sent to once, without retransmissions |
//! | `setup.rs` | building from the configuration, reloads |
//! | `req.rs` | `Req` (one request's facts) and `Onward` (what a forward's branches share) |
//! | `request.rs` | a new request: scanners, ACK and retransmission matching, CANCEL's source, caps |
//! | `servers.rs` | the server-transaction table: `ServerKey`, `ServerEntry`, per-source caps |
//! | `answers.rs` | answering within a server transaction: where responses go, ours, relayed, CANCEL |
//! | `clients.rs` | the client-transaction table: `ClientKey`, `ClientEntry`, DNS failover marks |
//! | `routing.rs` | where a new request goes, relay policy, the sender |
//! | `dialog.rs` | in-dialog requests by our stamp, the ACK of a 2xx |
//! | `identity.rs` | digest authentication, asserted identities |
//! | `register.rs` | REGISTER, handed to `registrar::request` |
//! | `relay_fraud.rs` | relay mode's fraud guard: checks at the INVITE, the call booked on the registrar's 2xx |
//! | `relay_mode.rs` | relay mode: REGISTER and requests to the operator's registrar, its answers, flows |
//! | `keepalive.rs` | NAT keep-alives of registered flows (`registrar::keepalive` decides) |
//! | `branches.rs` | forwarding: a client transaction per branch, Record-Route |
//! | `response.rs` | responses: matching, best response, CANCEL of branches |
//! | `timers.rs` | one heap of transaction deadlines |
//! | `loops.rs` | loop detection (RFC 3261 16.3) |
//! | `resolve.rs` | requests waiting for DNS, failover (RFC 3263) |
//! | `fraud.rs` | the core's side of the toll-fraud guard |
//! | `tests/` | unit tests on one fixture (`tests/mod.rs`), a file per topic |

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
    uri::{self, Host, Uri},
};
use tracing::debug;

use super::{
    config::{Sections, TopologyHiding},
    fork::{Branch, BranchState, Failover, Fork},
    forward, hide,
    metrics::ProxyMetrics,
    msg::SipMsg,
    route::{self, Local},
    transaction::{
        Kind,
        client::{self, ClientTxn},
        server::{self, ServerTxn},
        timers::Timers,
    },
};
use crate::{
    auth::{
        self, Authenticator, Outcome,
        digest::Algorithm,
        keys::{KeyRing, Purpose},
        nonce::Nonces,
        users::Users,
    },
    policy::{
        relay::{self, Sender, Target},
        scanner::Scanners,
    },
    registrar::{
        self, Register,
        config::RegistrarConfig,
        keepalive::Keepalive,
        request::AddressOfRecord,
        shared::{Sink, WriteThrough},
        store::{Binding, Change, LocationStore, MemoryStore, SharedBinding},
    },
    seams::{Action, Context, Destination, Observer},
    section::{NextHop, in_any},
};
use clients::{ClientEntry, ClientKey, Clients, Outgoing};
use req::{Onward, Req};
pub use servers::ServerKey;
use servers::{ServerEntry, Servers, owned_ctx, server_key};
pub use shared::{Locked, Shared};

// The core's unit tests build it from a whole configuration file.
#[cfg(test)]
use crate::config::Config;

/// What every branch we create starts with: responses whose top Via lacks it are not ours.
const BRANCH_PREFIX: &str = "z9hG4bKsfw";
/// Vias of a request checked for a loop through us (a longer list loops anyway: Max-Forwards).
const MAX_VIAS_CHECKED: usize = 70;
/// The Allow header of our answers to OPTIONS.
const ALLOW: &str = "Allow: INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, PRACK, UPDATE, INFO, MESSAGE, SUBSCRIBE, NOTIFY, REFER";

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum TimerKey {
    Server(ServerKey),
    Client(ClientKey),
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

/// The core's keys, derived from `[auth] secret` (which seals) and `previous_secrets`
/// (which still open; `crate::auth::keys`). An edge without a configured secret has a
/// random one, so in-dialog requests of earlier dialogs get 404 after a restart.
struct CoreKeys {
    /// Of the dialog stamps in our Record-Route.
    stamp: route::StampKeys,
    /// Of the seals of cluster hops: the current secret's (which seals) first, then the
    /// previous secrets'.
    hop: Vec<[u8; 32]>,
    /// Of loop tags (and of branch ids when the OS has no randomness).
    loop_tag: Vec<u8>,
    /// Of the flow tokens of our Path entries in relay mode.
    flow: route::flow::FlowKeys,
    /// Of the inner Contacts shown to the outside (topology hiding).
    contact: hide::ContactSeal,
    /// Of the inner Call-IDs shown to the outside (topology hiding).
    call_id: hide::call_id::CallIdSeal,
    /// Of the inner Path entries shown to a registrar outside (topology hiding).
    path: hide::path::PathSeal,
}

/// This node in a cluster that shares registrations.
struct Member {
    /// Our node name (the bindings whose flow we hold carry it).
    node: String,
    /// Our Path URI (RFC 3327).
    path: String,
}

/// The settings a reload may change while running.
struct Settings {
    outbound: Option<SocketAddr>,
    /// `[proxy] outbound` when it is a name: resolved by DNS like any domain (RFC 3263).
    outbound_name: Option<String>,
    /// `[policy] allow`: trusted peers.
    allow: Vec<IpNet>,
    /// `[proxy] internal_next_hops`: internal addresses a request's text may name as next hop.
    internal_next_hops: Vec<IpNet>,
    /// `[proxy] unavailable`: 480 or 404.
    unavailable: u16,
    /// `[proxy] identity_headers`.
    identity_headers: Vec<String>,
    /// `[proxy] stamp_lifetime` (or its default from `[fraud] max_call_duration`): older
    /// stamps are refused.
    stamp_lifetime: Duration,
    force_rport: bool,
    scanners: Scanners,
    registrar: RegistrarConfig,
    /// `[proxy] inbound`: relay mode's call server (absent: `[registrar] relay_to`).
    inbound: Option<NextHop>,
    timers: Timers,
    /// `[proxy] topology_hiding`.
    topology_hiding: TopologyHiding,
}

/// Everything behind one shard's lock: its own transaction state, and handles on what
/// the shards share ([`shared`]).
pub struct Core {
    /// Which shard this core is (of `shared.shards`).
    shard: usize,
    /// The state every shard's core shares; the fields below that are handles on it are
    /// clones of its parts.
    shared: Shared,
    local: Local,
    /// What a reload changes ([`Core::reconfigure`]).
    settings: Settings,
    /// `[proxy] reply_from_any`: peers whose responses may come from anywhere.
    reply_from_any: Vec<IpNet>,
    /// Contacts that left a request of ours unanswered ([`silent`]).
    silent: silent::Silent,
    /// This shard's transactions (server, client) as the gauges last counted them: each
    /// shard adds its own changes, so the gauges hold the sum over the shards.
    counted: (usize, usize),
    /// The identities each user (user, lower-case domain) may assert besides their own URI.
    identities: Locked<HashMap<(String, String), Vec<String>>>,
    servers: Servers,
    clients: Clients,
    heap: BinaryHeap<Reverse<(Instant, TimerKey)>>,
    store: Locked<Box<dyn LocationStore>>,
    /// Who we are in a cluster that shares registrations (none: standalone).
    cluster: Locked<Option<Member>>,
    /// Relay mode: the flows the operator's registrar registered.
    relayed: Locked<registrar::relay::Flows>,
    auth: Locked<Authenticator>,
    metrics: ProxyMetrics,
    observer: Arc<dyn Observer>,
    sends: Vec<(Destination, Vec<u8>)>,
    /// Which of `sends` (by position) are final answers the core made itself: the I/O
    /// around the core shows them to captures (`crate::tap`) with the request they answer.
    answers: Vec<usize>,
    /// Makes our branches unique across restarts.
    salt: u64,
    keys: Arc<CoreKeys>,
    /// The clock origin: nonce timestamps are seconds since the Unix epoch, taken as
    /// `unix_at_start` plus monotonic time since `start`.
    origin: (Instant, u64),
    last_housekeeping: Instant,
    /// When our interface addresses were last taken from the host.
    last_addr_refresh: Instant,
    /// The toll-fraud guard: its decisions on calls, its dialog tracking.
    pub(crate) fraud: Locked<crate::fraud::Fraud>,
    /// Requests waiting for DNS (RFC 3263), and the names to resolve ([`resolve`]).
    parked: resolve::Parked,
    /// The flows of registered contacts kept alive by pings ([`keepalive`]).
    keepalive: Locked<Keepalive>,
    /// The Call-IDs of dialogs made inside that went out sealed (`hide::dialog_refs`).
    sealed_dialogs: Locked<hide::dialog_refs::SealedDialogs>,
    /// One line per kind of keep-alive event a while ([`keepalive`]).
    keepalive_log: Locked<crate::logging::RateLimit<&'static str>>,
}

impl Core {
    /// The subscribers, changed at run time by the admin API.
    pub fn with_users<R>(&self, f: impl FnOnce(&mut Users) -> R) -> R {
        f(self.auth.lock().users_mut())
    }

    /// A contact left a request of ours unanswered.
    pub(super) fn mark_silent(&mut self, addr: SocketAddr, now: Instant) {
        if !self.silent.mark(addr, now) {
            debug!(%addr, "silent-contact table full");
            self.metrics
                .silent_contacts
                .with_label_values(&["table_full"])
                .inc();
            return;
        }
        self.metrics
            .silent_contacts
            .with_label_values(&["marked"])
            .inc();
    }

    /// Whether requests to `addr` go without retransmissions.
    pub(super) fn is_silent(&self, addr: SocketAddr, now: Instant) -> bool {
        self.silent.is_silent(addr, now)
    }

    /// The sends queued since the last call.
    #[cfg(test)]
    pub fn take_sends(&mut self) -> Vec<(Destination, Vec<u8>)> {
        self.take_sends_and_answers().0
    }

    /// The sends queued since the last call, and which of them (by position) are final
    /// answers the core made itself ([`Core::send_answer`]).
    pub fn take_sends_and_answers(&mut self) -> (Vec<(Destination, Vec<u8>)>, Vec<usize>) {
        (
            std::mem::take(&mut self.sends),
            std::mem::take(&mut self.answers),
        )
    }

    pub(super) fn send(&mut self, dest: Destination, bytes: Vec<u8>) {
        self.sends.push((dest, bytes));
    }

    /// Send a final answer of our own (a 403, 404, 407, 483... within a server transaction),
    /// marked as such.
    pub(super) fn send_answer(&mut self, dest: Destination, bytes: Vec<u8>) {
        self.answers.push(self.sends.len());
        self.send(dest, bytes);
    }

    /// Move the last queued send to position `at` (those from `at` on go one later), its
    /// mark as an answer with it.
    pub(super) fn send_last_at(&mut self, at: usize) {
        let last = self.sends.len().saturating_sub(1);
        if at >= last {
            return;
        }
        self.sends[at..].rotate_right(1);
        for i in &mut self.answers {
            if *i == last {
                *i = at;
            } else if *i >= at {
                *i += 1;
            }
        }
    }

    /// Whether the top Record-Route entry of `msg` is ours (our address, our stamp).
    pub(super) fn record_routed(&self, msg: &SipMsg) -> bool {
        route::record_routes(msg).first().is_some_and(|e| {
            e.contains(&format!(";{}=", route::STAMP_PARAM))
                && route::entry_uri(e)
                    .and_then(|u| uri::parse(u).ok())
                    .is_some_and(|u| matches!(u, uri::Uri::Sip(s) if self.local.is_us(&s)))
        })
    }

    /// The key new cluster hop seals are made with (the current secret's).
    fn hop_key(&self) -> &[u8] {
        self.keys.hop.first().map_or(&[][..], |k| &k[..])
    }

    pub(super) fn unix_secs(&self, now: Instant) -> u64 {
        let (start, unix_at_start) = self.origin;
        unix_at_start + now.saturating_duration_since(start).as_secs()
    }

    /// Whether a request comes from a trusted peer: an allow-listed address, or a TLS
    /// connection whose client certificate names a `[tls] trusted_peers` host.
    pub(super) fn is_trusted(&self, ctx: &Context) -> bool {
        in_any(&self.settings.allow, ctx.source.ip())
            || (ctx.transport == Transport::Tls && ctx.trusted_peer.is_some())
    }

    /// Count a request refused for routing integrity, and log it as a security event of
    /// `requester` (`relay_refused`, rate-limited per source).
    pub(super) fn refused(&self, requester: Option<SocketAddr>, reason: &'static str) {
        match requester {
            Some(source) => crate::logging::security_event("relay_refused", source.ip(), reason, 1),
            None => debug!(reason, "request refused"),
        }
        self.metrics
            .dialog_refused
            .with_label_values(&[reason])
            .inc();
    }

    /// The transactions gauges, by this shard's change since it last counted. A side that
    /// did not change is not written: the gauges are shared by every shard.
    pub(super) fn gauges(&mut self) {
        let now = (self.servers.len(), self.clients.len());
        let (before, [server, client]) = (self.counted, &self.metrics.transactions_by_side);
        if now.0 != before.0 {
            server.add(now.0 as i64 - before.0 as i64);
        }
        if now.1 != before.1 {
            client.add(now.1 as i64 - before.1 as i64);
        }
        self.counted = now;
    }
}

/// Where requests for a binding go: the flow the REGISTER came on (its source address and
/// transport, RFC 5626 in spirit), never a host its Contact names (another host to aim our
/// INVITEs at, or a private address behind NAT). A flow kept alive (`held`) is the only way
/// to the contact (RFC 5626 5.3: requests go down the flow it registered on). Otherwise,
/// over TCP, the source address is proven by the handshake but its port is that of a
/// connection the client may close: there, a Contact on that very address names the port
/// to connect to again.
fn binding_destination(b: &Binding, held: bool) -> Destination {
    if !held
        && b.transport.is_stream()
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

mod answers;
mod branches;
mod clients;
mod dialog;
mod fraud;
mod hiding;
mod identity;
mod keepalive;
mod loops;
mod register;
mod relay_fraud;
mod relay_mode;
mod req;
mod request;
mod resolve;
mod response;
mod routing;
mod servers;
mod setup;
mod shared;
mod silent;
mod timers;

#[cfg(test)]
mod tests;
