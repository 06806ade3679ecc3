//! The proxy's state and decisions, free of I/O: messages and a clock in, queued sends and
//! an [`Action`] out. Unit tests drive it with a fake clock.

use std::{
    borrow::Cow,
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    hash::{Hash as _, Hasher as _},
    net::SocketAddr,
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
    fork::{Branch, BranchState, Fork},
    forward,
    metrics::ProxyMetrics,
    msg::SipMsg,
    observer::Observer,
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
    registrar::{self, ContactParam, LocationStore, MemoryStore, Register},
    server::core::{Action, Context, Destination},
};

/// The `Server` header of our own answers.
const SERVER: &str = concat!("sip-firewall/", env!("CARGO_PKG_VERSION"));
/// What every branch we create starts with: responses whose top Via lacks it are not ours.
const BRANCH_PREFIX: &str = "z9hG4bKsfw";
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
struct Local_ {
    code: u16,
    phrase: &'static str,
    extra: Vec<String>,
}

fn answer(code: u16, phrase: &'static str) -> Local_ {
    Local_ {
        code,
        phrase,
        extra: Vec::new(),
    }
}

/// Everything behind the proxy's lock.
pub struct Core {
    local: Local,
    outbound: Option<SocketAddr>,
    allow: Vec<IpNet>,
    force_rport: bool,
    scanners: Scanners,
    registrar: RegistrarConfig,
    timers: Timers,
    servers: HashMap<ServerKey, ServerEntry>,
    clients: HashMap<ClientKey, ClientEntry>,
    heap: BinaryHeap<Reverse<(Instant, TimerKey)>>,
    store: Box<dyn LocationStore>,
    auth: Authenticator,
    metrics: ProxyMetrics,
    observer: Arc<dyn Observer>,
    sends: Vec<(Destination, Vec<u8>)>,
    /// Makes our branches unique across restarts.
    salt: u64,
    seq: u64,
    /// The clock origin: nonce timestamps are seconds since the Unix epoch, taken as
    /// `unix_at_start` plus monotonic time since `start`.
    start: Instant,
    unix_at_start: u64,
    last_housekeeping: Instant,
}

fn random_bytes(n: usize) -> anyhow::Result<Vec<u8>> {
    let mut b = vec![0u8; n];
    getrandom::getrandom(&mut b).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
    Ok(b)
}

impl Core {
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
        let secret = match &config.auth.secret {
            Some(s) => s.as_bytes().to_vec(),
            None => random_bytes(32)?,
        };
        let salt = u64::from_le_bytes(
            random_bytes(8)?
                .try_into()
                .map_err(|_| anyhow::anyhow!("randomness"))?,
        );
        let algorithms = config
            .auth
            .algorithms
            .iter()
            .filter_map(|a| Algorithm::parse(a))
            .collect();
        Ok(Core {
            local: Local {
                domains,
                listen: config.sip.listen.clone(),
                adv_host,
                adv_port,
            },
            outbound: config.proxy.outbound,
            allow: config.policy.allow.clone(),
            force_rport: config.sip.force_rport,
            scanners: Scanners::new(config.policy.scanners.as_deref()),
            registrar: config.registrar.clone(),
            timers: Timers::from_config(&config.timers),
            servers: HashMap::new(),
            clients: HashMap::new(),
            heap: BinaryHeap::new(),
            store: Box::new(MemoryStore::default()),
            auth: Authenticator::new(
                Users::from_config(&config.auth.users),
                algorithms,
                Nonces::new(secret, config.auth.nonce_lifetime),
            ),
            metrics,
            observer,
            sends: Vec::new(),
            salt,
            seq: 0,
            start: now,
            unix_at_start: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            last_housekeeping: now,
        })
    }

    /// The sends queued since the last call.
    pub fn take_sends(&mut self) -> Vec<(Destination, Vec<u8>)> {
        std::mem::take(&mut self.sends)
    }

    fn send(&mut self, dest: Destination, bytes: Vec<u8>) {
        self.sends.push((dest, bytes));
    }

    fn unix_secs(&self, now: Instant) -> u64 {
        self.unix_at_start + now.saturating_duration_since(self.start).as_secs()
    }

    fn new_branch(&mut self) -> String {
        self.seq += 1;
        format!("{BRANCH_PREFIX}{:x}.{:x}", self.salt, self.seq)
    }

    fn gauges(&self) {
        let t = &self.metrics.transactions;
        t.with_label_values(&["server"])
            .set(self.servers.len() as i64);
        t.with_label_values(&["client"])
            .set(self.clients.len() as i64);
    }

    // ---------------------------------------------------------------- requests

    /// A request that passed the message layer.
    pub fn request(&mut self, m: &Message<'_>, ctx: &Context, now: Instant) -> Action {
        let StartLine::Request { method, .. } = m.start else {
            return Action::Absorb;
        };
        if let Some(ua) = header(m, "User-Agent")
            && let Some(hit) = self.scanners.matches(ua)
        {
            debug!(source = %ctx.source, user_agent = ua, hit, "scanner dropped");
            self.metrics.scanners.inc();
            self.observer.scanner(ctx.source, ua);
            return Action::Drop { reason: "scanner" };
        }
        let Some(key) = server_key(m, method) else {
            return Action::Drop { reason: "no_via" };
        };
        if method == "ACK" {
            if let Some(e) = self.servers.get_mut(&key)
                && e.txn.on_ack(now, &self.timers)
            {
                // The ACK of our (or a relayed) non-2xx final: hop by hop, ends here.
                self.schedule(TimerKey::Server(key));
                return Action::Absorb;
            }
            return self.ack_2xx(m, ctx);
        }
        if let Some(e) = self.servers.get(&key) {
            self.metrics
                .retransmissions
                .with_label_values(&["absorbed"])
                .inc();
            if let Some(b) = e.txn.on_retransmission() {
                // To where this copy came from: over TCP that is the connection it came on,
                // which may be a new one.
                let dest = self.response_destination(m, ctx);
                self.send(dest, b);
            }
            return Action::Absorb;
        }
        self.open_server(&key, m, ctx, now);
        if method == "INVITE" {
            // RFC 3261 16.2: a stateful proxy answers INVITE with 100 at once, which stops
            // the UAC's retransmissions while the branches ring.
            self.reply(&key, &answer(100, "Trying"), now);
        }
        let result = if method == "CANCEL" {
            self.cancel(&key, now)
        } else {
            self.route_request(&key, m, ctx, method, now)
        };
        if let Err(l) = result {
            if let Some(e) = self.servers.get_mut(&key) {
                e.txn.local();
            }
            self.reply(&key, &l, now);
        }
        self.gauges();
        Action::Absorb
    }

    fn open_server(&mut self, key: &ServerKey, m: &Message<'_>, ctx: &Context, now: Instant) {
        let rctx = owned_ctx(m);
        let dest = self.response_destination(m, ctx);
        let kind = if key.method == "INVITE" {
            Kind::Invite
        } else {
            Kind::NonInvite
        };
        self.servers.insert(
            key.clone(),
            ServerEntry {
                txn: ServerTxn::new(kind, ctx.transport == Transport::Stream),
                dest,
                rctx,
                source: ctx.source,
                fork: None,
            },
        );
        let _ = now;
    }

    /// Where responses to a request go (RFC 3261 18.2.2, RFC 3581): back on the connection
    /// over TCP; over UDP to the source address, at the source port when rport applies.
    fn response_destination(&self, m: &Message<'_>, ctx: &Context) -> Destination {
        match ctx.transport {
            Transport::Datagram => Destination {
                addr: reply::udp_destination(
                    &ReplyContext::from_message(m),
                    ctx.source,
                    self.force_rport,
                ),
                transport: Transport::Datagram,
            },
            Transport::Stream => Destination {
                addr: ctx.source,
                transport: Transport::Stream,
            },
        }
    }

    /// Answer within the server transaction `key`.
    fn reply(&mut self, key: &ServerKey, l: &Local_, now: Instant) {
        let Some(e) = self.servers.get_mut(key) else {
            return;
        };
        let bytes = reply::build(
            &e.rctx,
            &Reply {
                code: l.code,
                phrase: l.phrase,
                extra: &l.extra,
                server: SERVER,
            },
            e.source,
        );
        if let Some(b) = e.txn.respond(l.code, bytes, now, &self.timers) {
            let dest = e.dest;
            self.send(dest, b);
            self.metrics
                .local_replies
                .with_label_values(&[&l.code.to_string()])
                .inc();
        }
        self.schedule(TimerKey::Server(key.clone()));
    }

    /// Relay a response from downstream within the server transaction `key`.
    fn relay(&mut self, key: &ServerKey, code: u16, resp: &SipMsg, now: Instant) {
        let Some(e) = self.servers.get_mut(key) else {
            return;
        };
        if let Some(b) = e.txn.respond(code, resp.to_bytes(), now, &self.timers) {
            let dest = e.dest;
            self.send(dest, b);
            self.metrics
                .forwarded
                .with_label_values(&["response"])
                .inc();
        }
        self.schedule(TimerKey::Server(key.clone()));
    }

    /// CANCEL (RFC 3261 16.10): 200 to it, CANCEL every branch of the INVITE; 481 when no
    /// INVITE transaction matches.
    fn cancel(&mut self, key: &ServerKey, now: Instant) -> Result<(), Local_> {
        let ikey = ServerKey {
            method: "INVITE".into(),
            ..key.clone()
        };
        let Some(inv) = self.servers.get_mut(&ikey) else {
            return Err(answer(481, "Call/Transaction Does Not Exist"));
        };
        let pending = !inv.txn.is_final();
        if let Some(f) = inv.fork.as_mut()
            && pending
        {
            f.cancelled = true;
        }
        if let Some(e) = self.servers.get_mut(key) {
            e.txn.local();
        }
        self.reply(key, &answer(200, "OK"), now);
        if pending {
            self.cancel_branches(&ikey, None, now);
            self.maybe_finish(&ikey, now);
        }
        Ok(())
    }

    /// Decide where a new request goes, or the answer.
    fn route_request(
        &mut self,
        key: &ServerKey,
        m: &Message<'_>,
        ctx: &Context,
        method: &str,
        now: Instant,
    ) -> Result<(), Local_> {
        let mut msg = SipMsg::from_parsed(m);
        forward::stamp_top_via(&mut msg, ctx.source, self.force_rport);
        let trusted = in_any(&self.allow, ctx.source.ip());
        let in_dialog = m
            .get(HeaderName::To)
            .and_then(|t| name_addr::parse_single(t).ok())
            .is_some_and(|a| a.tag.is_some());
        let routed = route::pop_our_routes(&mut msg, &self.local);

        if in_dialog {
            // Only what our Record-Route brings back is relayed (loose routing).
            if !routed {
                return Err(answer(404, "Not Here"));
            }
            let dest = route::next_hop(&msg, self.outbound).ok_or(answer(404, "No Route"))?;
            return self.forward(key, msg, vec![(None, dest)], method, now);
        }

        // Initial request. A preloaded route from outside is not honoured: it would let
        // anyone steer us anywhere.
        if !trusted {
            msg.remove(HeaderName::Route);
        } else if !route::routes(&msg).is_empty() {
            let dest = route::next_hop(&msg, self.outbound).ok_or(answer(404, "No Route"))?;
            forward::strip_credentials(&mut msg, |r| self.local.is_our_domain(r));
            if forward::creates_dialog(method) {
                forward::record_route(&mut msg, &self.local.hostport(), dest.transport);
            }
            return self.forward(key, msg, vec![(None, dest)], method, now);
        }

        let ruri_text = msg.request_uri().unwrap_or("").to_string();
        let ruri = match uri::parse(&ruri_text) {
            Ok(Uri::Sip(u)) => Some(u),
            _ => None,
        };
        let local_domain = ruri.as_ref().and_then(|u| self.local.domain_of(u));
        let target = if local_domain.is_some() {
            Target::Local
        } else {
            Target::Foreign
        };

        if method == "REGISTER" {
            return match (&ruri, &local_domain) {
                (Some(_), Some(_)) => self.register(key, m, ctx, trusted, &ruri_text, now),
                _ => Err(answer(403, "Not Our Domain")),
            };
        }
        if let (Some(u), Some(_)) = (&ruri, &local_domain)
            && u.user.is_none()
        {
            // Addressed to the proxy itself: OPTIONS is a keep-alive ping.
            return Err(if method == "OPTIONS" {
                Local_ {
                    code: 200,
                    phrase: "OK",
                    extra: vec![ALLOW.into()],
                }
            } else {
                answer(404, "Not Found")
            });
        }

        // Who is asking: a trusted peer, one of our users (then prove it), or an outsider.
        let from = m
            .get(HeaderName::From)
            .and_then(|f| name_addr::parse_single(f).ok());
        let (from_user, from_domain) = match from.as_ref().map(|a| a.uri) {
            Some(Uri::Sip(u)) => (
                u.user.map(str::to_string),
                match u.host {
                    Host::Domain(d) if self.local.is_our_domain(d) => {
                        Some(d.trim_end_matches('.').to_ascii_lowercase())
                    }
                    _ => None,
                },
            ),
            _ => (None, None),
        };
        let sender = if trusted {
            Sender::Trusted
        } else if let Some(realm) = &from_domain {
            let user = from_user.clone().unwrap_or_default();
            self.authenticate(m, ctx, method, &ruri_text, realm, &[&user], true, now)?;
            Sender::LocalUser
        } else {
            Sender::Outsider
        };
        if !relay::may_relay(sender, target) {
            return Err(answer(403, "Relaying Forbidden"));
        }
        forward::strip_credentials(&mut msg, |r| self.local.is_our_domain(r));

        let targets = match (&ruri, &local_domain) {
            (Some(u), Some(domain)) => {
                let user = u.user.unwrap_or_default();
                let aor = format!("{user}@{domain}");
                let bindings = self.store.lookup(&aor, now);
                if bindings.is_empty() {
                    return Err(if self.auth.users().exists(user, domain) {
                        answer(480, "Temporarily Unavailable")
                    } else {
                        answer(404, "Not Found")
                    });
                }
                bindings
                    .into_iter()
                    .map(|b| {
                        let dest = binding_destination(&b);
                        (Some(b.contact), dest)
                    })
                    .collect()
            }
            _ => {
                let dest = match self.outbound {
                    Some(addr) => Destination {
                        addr,
                        transport: Transport::Datagram,
                    },
                    None => route::resolve(&ruri_text, None)
                        .ok_or(answer(404, "No Route To Destination"))?,
                };
                vec![(None, dest)]
            }
        };
        if forward::creates_dialog(method) {
            let t = match &targets[..] {
                [(_, d)] => d.transport,
                _ => Transport::Datagram,
            };
            forward::record_route(&mut msg, &self.local.hostport(), t);
        }
        self.forward(key, msg, targets, method, now)
    }

    /// Digest authentication. Ok: the user; Err: the challenge or refusal to answer with.
    #[allow(clippy::too_many_arguments)]
    fn authenticate(
        &mut self,
        m: &Message<'_>,
        ctx: &Context,
        method: &str,
        ruri: &str,
        realm: &str,
        must_be: &[&str],
        proxy: bool,
        now: Instant,
    ) -> Result<String, Local_> {
        let (cred_header, chal_header) = if proxy {
            ("Proxy-Authorization", "Proxy-Authenticate")
        } else {
            ("Authorization", "WWW-Authenticate")
        };
        let values: Vec<&str> = m
            .headers
            .iter()
            .filter(
                |h| matches!(h.name, HeaderName::Other(n) if n.eq_ignore_ascii_case(cred_header)),
            )
            .map(|h| h.value.as_ref())
            .collect();
        let secs = self.unix_secs(now);
        let local = &self.local;
        let names_us = |u: &str| matches!(uri::parse(u), Ok(Uri::Sip(s)) if local.is_us(&s));
        let req = auth::Request {
            method,
            uri: ruri,
            uri_also_ok: &names_us,
            realm,
            must_be,
        };
        let challenge = |core: &Core, stale: bool| Local_ {
            code: if proxy { 407 } else { 401 },
            phrase: if proxy {
                "Proxy Authentication Required"
            } else {
                "Unauthorized"
            },
            extra: core
                .auth
                .challenges(realm, stale, secs)
                .into_iter()
                .map(|c| format!("{chal_header}: {c}"))
                .collect(),
        };
        match self.auth.verify(&values, &req, secs) {
            Outcome::Authenticated { user } => {
                self.metrics.auth.with_label_values(&["success"]).inc();
                Ok(user)
            }
            Outcome::Challenge { stale, failure } => {
                let label = match failure {
                    Some(f) => {
                        debug!(source = %ctx.source, reason = f, "authentication failed");
                        self.observer
                            .auth_failure(ctx.source, must_be.first().copied(), f);
                        f
                    }
                    None if stale => "stale",
                    None => "challenge",
                };
                self.metrics.auth.with_label_values(&[label]).inc();
                Err(challenge(self, stale))
            }
            Outcome::Forbidden { reason } => {
                self.metrics.auth.with_label_values(&[reason]).inc();
                self.observer
                    .auth_failure(ctx.source, must_be.first().copied(), reason);
                Err(answer(403, "Forbidden"))
            }
        }
    }

    /// REGISTER for one of our domains (RFC 3261 10.3).
    fn register(
        &mut self,
        key: &ServerKey,
        m: &Message<'_>,
        ctx: &Context,
        trusted: bool,
        ruri: &str,
        now: Instant,
    ) -> Result<(), Local_> {
        let user_of = |h| {
            m.get(h)
                .and_then(|v| name_addr::parse_single(v).ok())
                .and_then(|a| match a.uri {
                    Uri::Sip(u) => Some((u.user?.to_string(), u.host)),
                    _ => None,
                })
        };
        // A To that names no SIP user is not an address of record of ours.
        let (to_user, to_host) = user_of(HeaderName::To).ok_or(answer(403, "Not Our User"))?;
        let to_uri = SipUri {
            secure: false,
            user: Some(&to_user),
            password: None,
            host: to_host,
            port: None,
            params: "",
            headers: None,
        };
        let domain = self
            .local
            .domain_of(&to_uri)
            .ok_or(answer(403, "Not Our Domain"))?;
        let from_user = user_of(HeaderName::From).map(|u| u.0).unwrap_or_default();
        if !trusted {
            self.authenticate(
                m,
                ctx,
                "REGISTER",
                ruri,
                &domain,
                &[&from_user, &to_user],
                false,
                now,
            )?;
        }
        let mut contacts = Vec::new();
        let mut star = false;
        for v in m.all(HeaderName::Contact) {
            let r = name_addr::parse_contact(v, |a| {
                contacts.push(ContactParam {
                    uri: a.uri_text.to_string(),
                    expires: param(a.params, "expires").and_then(scalar::expires),
                })
            });
            match r {
                Ok(true) => star = true,
                Ok(false) => {}
                Err(_) => return Err(answer(400, "Bad Contact")),
            }
        }
        let req = Register {
            aor: format!("{to_user}@{domain}"),
            contacts,
            star,
            expires: m.get(HeaderName::Expires).and_then(scalar::expires),
            call_id: m.get(HeaderName::CallId).unwrap_or("").to_string(),
            cseq: m
                .get(HeaderName::CSeq)
                .and_then(scalar::cseq)
                .map_or(0, |c| c.0),
            source: ctx.source,
            transport: ctx.transport,
        };
        let result = registrar::register(&self.registrar, self.store.as_mut(), &req, now);
        self.metrics.bindings.set(self.store.len() as i64);
        let l = match result {
            Ok(bindings) => Local_ {
                code: 200,
                phrase: "OK",
                extra: registrar::contact_lines(&bindings, now),
            },
            Err(e) => {
                let (code, phrase, extra) = e.answer();
                Local_ {
                    code,
                    phrase,
                    extra,
                }
            }
        };
        if let Some(e) = self.servers.get_mut(key) {
            e.txn.local();
        }
        self.reply(key, &l, now);
        Ok(())
    }

    /// Forward `msg` to every target (Request-URI, destination): one client transaction per
    /// branch, under the response context of the server transaction `key`.
    fn forward(
        &mut self,
        key: &ServerKey,
        mut msg: SipMsg,
        targets: Vec<(Option<String>, Destination)>,
        method: &str,
        now: Instant,
    ) -> Result<(), Local_> {
        if forward::decrement_max_forwards(&mut msg).is_err() {
            return Err(answer(483, "Too Many Hops"));
        }
        let kind = if method == "INVITE" {
            Kind::Invite
        } else {
            Kind::NonInvite
        };
        let mut fork = Fork::default();
        for (i, (ruri, dest)) in targets.into_iter().enumerate() {
            let mut b = msg.clone();
            if let Some(u) = ruri {
                b.set_request_uri(&u);
            }
            let branch = self.new_branch();
            forward::add_via(&mut b, dest.transport, &self.local.hostport(), &branch);
            let bytes = b.to_bytes();
            let reliable = dest.transport == Transport::Stream;
            let txn = ClientTxn::new(kind, reliable, bytes.clone(), now, &self.timers);
            self.send(dest, bytes);
            self.metrics.forwarded.with_label_values(&["request"]).inc();
            self.observer.client_transaction_created(&branch, dest);
            let cancel = (kind == Kind::Invite).then(|| (forward::cancel_for(&b).to_bytes(), dest));
            let ckey = ClientKey {
                branch: branch.clone(),
                method: method.to_string(),
            };
            self.clients.insert(
                ckey.clone(),
                ClientEntry {
                    txn,
                    req: b,
                    dest,
                    server: Some((key.clone(), i)),
                },
            );
            self.schedule(TimerKey::Client(ckey));
            fork.branches.push(Branch {
                branch,
                state: BranchState::Pending,
                timer_c: (kind == Kind::Invite).then(|| now + self.timers.c),
                cancel,
                cancel_pending: false,
                cancelled: false,
            });
        }
        if let Some(e) = self.servers.get_mut(key) {
            e.fork = Some(fork);
        }
        self.schedule(TimerKey::Server(key.clone()));
        Ok(())
    }

    /// An ACK that matches no server transaction: the ACK of a 2xx, its own transaction,
    /// relayed statelessly along the route our Record-Route set up (RFC 3261 16.6, 13.2.2.4).
    fn ack_2xx(&mut self, m: &Message<'_>, ctx: &Context) -> Action {
        let mut msg = SipMsg::from_parsed(m);
        if !route::pop_our_routes(&mut msg, &self.local) {
            return Action::Drop {
                reason: "ack_no_route",
            };
        }
        forward::stamp_top_via(&mut msg, ctx.source, self.force_rport);
        let Some(dest) = route::next_hop(&msg, self.outbound) else {
            return Action::Drop {
                reason: "ack_no_route",
            };
        };
        if forward::decrement_max_forwards(&mut msg).is_err() {
            return Action::Drop {
                reason: "too_many_hops",
            };
        }
        // The same branch for retransmissions of the same ACK: derived from theirs.
        let mut h = std::hash::DefaultHasher::new();
        msg.top_via().unwrap_or("").hash(&mut h);
        self.salt.hash(&mut h);
        let branch = format!("{BRANCH_PREFIX}a{:x}", h.finish());
        forward::add_via(&mut msg, dest.transport, &self.local.hostport(), &branch);
        self.send(dest, msg.to_bytes());
        self.metrics.forwarded.with_label_values(&["ack"]).inc();
        Action::Absorb
    }

    // ---------------------------------------------------------------- responses

    /// A response that passed the message layer: only within its client transaction.
    pub fn response(&mut self, m: &Message<'_>, _ctx: &Context, now: Instant) -> Action {
        let StartLine::Response { code, .. } = m.start else {
            return Action::Absorb;
        };
        let branch = m
            .get(HeaderName::Via)
            .and_then(|v| via::parse_list(v).next())
            .and_then(Result::ok)
            .and_then(|v| v.branch);
        let method = m.get(HeaderName::CSeq).and_then(scalar::cseq).map(|c| c.1);
        let (Some(branch), Some(method)) = (branch, method) else {
            return self.stray();
        };
        if !branch.starts_with(BRANCH_PREFIX) {
            return self.stray();
        }
        let ckey = ClientKey {
            branch: branch.to_string(),
            method: method.to_string(),
        };
        let timers = self.timers;
        let Some(e) = self.clients.get_mut(&ckey) else {
            return self.stray();
        };
        let to = m.get(HeaderName::To);
        let req = &e.req;
        let out = e
            .txn
            .on_response(code, now, &timers, || forward::ack_for(req, to).to_bytes());
        let dest = e.dest;
        let server = e.server.clone();
        if let Some(ack) = out.send {
            self.send(dest, ack);
        }
        self.schedule(TimerKey::Client(ckey));
        if !out.pass_up {
            self.metrics
                .retransmissions
                .with_label_values(&["absorbed"])
                .inc();
            return Action::Absorb;
        }
        if let Some((skey, idx)) = server {
            let mut resp = SipMsg::from_parsed(m);
            resp.pop_via();
            self.branch_response(&skey, idx, code, Some(resp), now);
        }
        self.gauges();
        Action::Absorb
    }

    fn stray(&mut self) -> Action {
        self.metrics.stray.inc();
        Action::Drop {
            reason: crate::metrics::DROP_STRAY_RESPONSE,
        }
    }

    /// A response (None: a timeout, as 408) on branch `idx` of the server transaction `skey`.
    fn branch_response(
        &mut self,
        skey: &ServerKey,
        idx: usize,
        code: u16,
        mut resp: Option<SipMsg>,
        now: Instant,
    ) {
        let invite = skey.method == "INVITE";
        let timer_c = self.timers.c;
        let Some(fork) = self.servers.get_mut(skey).and_then(|e| e.fork.as_mut()) else {
            return;
        };
        let final_sent = fork.final_sent;
        let Some(b) = fork.branches.get_mut(idx) else {
            return;
        };
        // What to do once the borrow of the fork ends.
        let (cancel_this, relay_it, cancel_others) = if b.state == BranchState::Done {
            // A 2xx retransmission (or a 2xx on a branch already given up): relay 2xx only,
            // so the UAC's dialog gets it (RFC 6026).
            (false, (200..300).contains(&code), false)
        } else {
            match code {
                100..=199 => {
                    b.state = BranchState::Provisional;
                    if code > 100 && !b.cancelled {
                        // RFC 3261 16.7 step 2: a provisional resets Timer C.
                        b.timer_c = Some(now + timer_c);
                    }
                    (
                        b.cancel_pending && !b.cancelled,
                        code > 100 && !final_sent,
                        false,
                    )
                }
                200..=299 => {
                    b.state = BranchState::Done;
                    fork.final_sent = true;
                    // RFC 3261 16.7 step 10: CANCEL the other branches.
                    (false, true, invite)
                }
                _ => {
                    b.state = BranchState::Done;
                    fork.offer(code, resp.take());
                    (false, false, invite && code >= 600)
                }
            }
        };
        if cancel_this {
            self.cancel_branch(skey, idx, now);
        }
        if relay_it && let Some(r) = &resp {
            self.relay(skey, code, r, now);
        }
        if cancel_others {
            self.cancel_branches(skey, Some(idx), now);
        }
        self.maybe_finish(skey, now);
    }

    /// Every branch is done and nothing final went up yet: send the best response (16.7).
    fn maybe_finish(&mut self, skey: &ServerKey, now: Instant) {
        let Some(fork) = self.servers.get_mut(skey).and_then(|e| e.fork.as_mut()) else {
            return;
        };
        if fork.final_sent || !fork.all_done() {
            return;
        }
        fork.final_sent = true;
        let cancelled = fork.cancelled;
        match fork.take_best() {
            Some((code, Some(mut resp))) if !(cancelled && code == 408) => {
                // RFC 3261 16.7 step 6: a 503 becomes 500 (the UAC must not retry us
                // elsewhere because one downstream server is busy).
                let code = if code == 503 {
                    resp.start = "SIP/2.0 500 Server Error".into();
                    500
                } else {
                    code
                };
                self.relay(skey, code, &resp, now);
            }
            _ if cancelled => self.reply(skey, &answer(487, "Request Terminated"), now),
            _ => self.reply(skey, &answer(408, "Request Timeout"), now),
        }
    }

    /// CANCEL every unfinished branch but `except`: now when it rang, later when it did not
    /// answer yet (RFC 3261 9.1 forbids a CANCEL before a provisional).
    fn cancel_branches(&mut self, skey: &ServerKey, except: Option<usize>, now: Instant) {
        let Some(fork) = self.servers.get_mut(skey).and_then(|e| e.fork.as_mut()) else {
            return;
        };
        let mut now_list = Vec::new();
        for (i, b) in fork.branches.iter_mut().enumerate() {
            if Some(i) == except || b.state == BranchState::Done || b.cancelled {
                continue;
            }
            match b.state {
                BranchState::Provisional => now_list.push(i),
                _ => b.cancel_pending = true,
            }
        }
        for i in now_list {
            self.cancel_branch(skey, i, now);
        }
    }

    /// Send the CANCEL of branch `idx` (a client transaction of its own).
    fn cancel_branch(&mut self, skey: &ServerKey, idx: usize, now: Instant) {
        let give_up = now + self.timers.b;
        let Some(b) = self
            .servers
            .get_mut(skey)
            .and_then(|e| e.fork.as_mut())
            .and_then(|f| f.branches.get_mut(idx))
        else {
            return;
        };
        let Some((bytes, dest)) = b.cancel.clone() else {
            return;
        };
        b.cancelled = true;
        b.cancel_pending = false;
        // After a CANCEL, wait for the 487 at most 64*T1, then give the branch up.
        b.timer_c = Some(give_up);
        let ckey = ClientKey {
            branch: b.branch.clone(),
            method: "CANCEL".into(),
        };
        let txn = ClientTxn::new(
            Kind::NonInvite,
            dest.transport == Transport::Stream,
            bytes.clone(),
            now,
            &self.timers,
        );
        self.send(dest, bytes);
        self.clients.insert(
            ckey.clone(),
            ClientEntry {
                txn,
                req: SipMsg::request("CANCEL", "sip:invalid"),
                dest,
                server: None,
            },
        );
        self.schedule(TimerKey::Client(ckey));
    }

    // ---------------------------------------------------------------- timers

    fn deadline(&self, k: &TimerKey) -> Option<Instant> {
        match k {
            TimerKey::Server(s) => {
                let e = self.servers.get(s)?;
                let c = e.fork.as_ref().and_then(Fork::next_timer);
                match (e.txn.deadline(), c) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            TimerKey::Client(c) => self.clients.get(c)?.txn.deadline(),
        }
    }

    fn schedule(&mut self, k: TimerKey) {
        if let Some(d) = self.deadline(&k) {
            self.heap.push(Reverse((d, k)));
        }
    }

    /// Run every timer due at `now`, and the periodic housekeeping.
    pub fn tick(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.heap.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, k))) = self.heap.pop() else {
                break;
            };
            // Stale entries (the deadline moved) are skipped; the new one is queued too.
            if self.deadline(&k) != Some(at) {
                continue;
            }
            match k {
                TimerKey::Server(s) => self.server_timer(s, now),
                TimerKey::Client(c) => self.client_timer(c, now),
            }
        }
        if now.saturating_duration_since(self.last_housekeeping) >= Duration::from_secs(1) {
            self.last_housekeeping = now;
            self.store.expire(now);
            self.metrics.bindings.set(self.store.len() as i64);
            let secs = self.unix_secs(now);
            self.auth.expire(secs);
        }
        self.gauges();
    }

    fn server_timer(&mut self, key: ServerKey, now: Instant) {
        // Timer C of the branches first: it may produce the final response.
        let due: Vec<(usize, bool, BranchState, String)> = self
            .servers
            .get(&key)
            .and_then(|e| e.fork.as_ref())
            .map(|f| {
                f.branches
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| {
                        b.state != BranchState::Done && b.timer_c.is_some_and(|t| t <= now)
                    })
                    .map(|(i, b)| (i, b.cancelled, b.state, b.branch.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (i, cancelled, state, branch) in due {
            if !cancelled && state == BranchState::Provisional {
                self.cancel_branch(&key, i, now);
            } else {
                // No answer at all, or none after our CANCEL: give the branch up as 408.
                self.remove_client(&ClientKey {
                    branch,
                    method: key.method.clone(),
                });
                self.branch_response(&key, i, 408, None, now);
            }
        }
        let timers = self.timers;
        let Some(e) = self.servers.get_mut(&key) else {
            return;
        };
        if e.txn.deadline().is_some_and(|d| d <= now)
            && let server::TimerOut::Resend(b) = e.txn.on_timer(now, &timers)
        {
            let dest = e.dest;
            self.send(dest, b);
            self.metrics
                .retransmissions
                .with_label_values(&["sent"])
                .inc();
        }
        let Some(e) = self.servers.get(&key) else {
            return;
        };
        if e.txn.is_terminated() {
            self.servers.remove(&key);
        } else {
            self.schedule(TimerKey::Server(key));
        }
    }

    fn client_timer(&mut self, key: ClientKey, now: Instant) {
        let timers = self.timers;
        let Some(e) = self.clients.get_mut(&key) else {
            return;
        };
        let out = e.txn.on_timer(now, &timers);
        let dest = e.dest;
        let server = e.server.clone();
        match out {
            client::TimerOut::Resend(b) => {
                self.send(dest, b);
                self.metrics
                    .retransmissions
                    .with_label_values(&["sent"])
                    .inc();
            }
            client::TimerOut::Timeout => {
                if let Some((skey, idx)) = server {
                    self.branch_response(&skey, idx, 408, None, now);
                }
            }
            client::TimerOut::Nothing => {}
        }
        if self
            .clients
            .get(&key)
            .is_some_and(|e| e.txn.is_terminated())
        {
            self.remove_client(&key);
        } else {
            self.schedule(TimerKey::Client(key));
        }
    }

    fn remove_client(&mut self, key: &ClientKey) {
        if let Some(e) = self.clients.remove(key) {
            self.observer
                .client_transaction_terminated(&key.branch, e.dest);
        }
    }

    /// Transactions alive (server, client): for tests and the gauges.
    #[cfg(test)]
    pub fn active(&self) -> (usize, usize) {
        (self.servers.len(), self.clients.len())
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
        l => (
            config
                .sip
                .domains
                .first()
                .cloned()
                .unwrap_or_else(|| "localhost".into()),
            l.map(SocketAddr::port),
        ),
    }
}

/// Where requests for a binding go: the Contact's address when it is the address the
/// REGISTER came from (a UA on a public address, maybe registering from another port),
/// else the REGISTER's source (a UA behind NAT, whose Contact nobody can reach).
fn binding_destination(b: &registrar::Binding) -> Destination {
    if let Some(d) = route::resolve(&b.contact, None)
        && d.addr.ip() == b.source.ip()
        && d.transport == b.transport
    {
        return d;
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

#[cfg(test)]
mod tests;
