//! The stateful proxy and registrar: the [`Handler`] the SIP server hands accepted messages
//! to. Its call state is split into `[proxy] shards` cores, each behind its own lock, a
//! message going to the one of its Call-ID (`shards`; what the shards share, the location
//! store, the subscribers and nonce counts, the fraud guard, the keep-alive flows, has its
//! own short locks: `core/shared.rs`); every decision is synchronous and non-blocking,
//! sends are queued on the server's [`Outbound`], and one timer task drives
//! retransmissions and expiries of every shard ([`Proxy::run_timers`]).
//!
//! Order of processing a request (after the message layer): scanner check, ACK and
//! retransmission matching, CANCEL, then routing: our Route entries popped (more than four
//! at the top: 483), loop detection (RFC 3261 16.3 step 4, 482), loose routing for
//! in-dialog requests (only along our Record-Route of this dialog, whose sealed stamp, valid
//! for `[proxy] stamp_lifetime`, names its two parties: from one of them to the other),
//! what is addressed to us (our domains, advertised name and every address of the host: OPTIONS
//! keep-alives 200), REGISTER (digest, 401) to the registrar, digest (407) for requests
//! claiming to be from our users, the no-open-relay rule, identity headers (RFC 3325: removed
//! outside the trust domain, asserted by us for our users), and forwarding to every
//! registered contact (parallel forking, toward the flow each REGISTER came on), never to
//! ourselves nor, from a request's text or its dialog's stamp, to loopback or link-local
//! addresses. Responses are taken only from where their request went.
//!
//! | module | job |
//! | --- | --- |
//! | `core/` | the decisions, on a fake-clock-testable core (`request`, `response`, `timers`, `fraud`) |
//! | `shards` | which shard a message goes to, the timers and admin calls over every shard |
//! | `queued` | what the core queued, done outside its lock: sends (its own answers handed back for captures), fraud writes, names to resolve |
//! | `transaction/` | RFC 3261 17 and RFC 6026 state machines and their timers |
//! | `forward` | Via, Max-Forwards, Record-Route, ACK and CANCEL building |
//! | `hide/` | topology hiding: the Via, Record-Route, Contact, Call-ID and Path the outside sees, and what comes back |
//! | `route` | loose routing and the sealed Record-Route stamp |
//! | `fork` | the response context of a forked request (RFC 3261 16.7) |
//! | `msg` | the owned message the core works on |
//! | `dns` | the RFC 3263 resolver (`[dns]`) |
//! | `config` | `[proxy]`, `[timers]`, `[registrar]` (`[auth]` is `auth::config`'s) |
//! | `metrics` | its counters |
//!
//! **Config**: `[proxy]`, `[timers]`, `[registrar]`, `[auth]`. **Metrics**:
//! `sipfw_proxy_forwarded_total{kind}`, `sipfw_proxy_replies_total{code}`,
//! `sipfw_proxy_retransmissions_total`, `sipfw_proxy_stray_responses_total`,
//! `sipfw_proxy_reply_wrong_source_total`, `sipfw_proxy_silent_contacts_total`,
//! `sipfw_proxy_hidden_dialogs_total{event}`,
//! `sipfw_proxy_transactions_active`, `sipfw_registrar_bindings`, `sipfw_auth_total{result}`,
//! `sipfw_dialog_refused_total{reason}`, `sipfw_auth_previous_key_total{what}`,
//! `sipfw_scanner_drops_total`; in relay mode `sipfw_registrar_relayed_flows`,
//! `sipfw_registrar_relayed_full_total{bound}`.

mod alarm;
pub mod config;
mod core;
pub mod dns;
pub mod fork;
pub mod forward;
pub mod hide;
pub mod metrics;
pub mod msg;
mod queued;
pub mod route;
#[cfg(test)]
mod shard_tests;
mod shards;
pub mod transaction;

use std::{
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};

use sip_firewall_sip::Message;
use tokio::sync::watch;

use crate::{
    clock::FakeClock,
    seams::{Action, Answers, Context, Handler, Observer, Outbound},
};
use core::{Core, Shared};
pub use metrics::ProxyMetrics;

/// How often the timer task runs on a fake clock (which moves by hand, so no deadline of its
/// own can wake the task): fine enough for the tests' shortest timers.
const FAKE_TICK: Duration = Duration::from_millis(10);

/// The proxy: shared by every listener task and the timer task.
pub struct Proxy {
    /// The cores, one per shard (`shards`), at least one.
    shards: Vec<Mutex<Core>>,
    /// What the shards' cores share (and which shard a Call-ID goes to).
    shared: Shared,
    out: OnceLock<Arc<dyn Outbound>>,
    /// Where the fraud guard's suspensions are written (the state database), outside the
    /// core's lock.
    fraud_store: OnceLock<FraudStore>,
    /// A clock the caller moves (the pipeline fuzz target and its tests); None: the real one.
    fake_now: Option<FakeClock>,
    /// The RFC 3263 resolver (set by the daemon); without one, a request whose next hop is a
    /// domain gets 503.
    dns: OnceLock<Arc<dns::Dns>>,
    /// Resolutions done, back to the core as events ([`Proxy::run_timers`] applies them).
    resolved_tx: tokio::sync::mpsc::UnboundedSender<Resolved>,
    resolved_rx: Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<Resolved>>>,
    /// Wakes the timer task at the core's next deadline.
    alarm: alarm::Alarm,
}

/// The outcome of one resolution, for the request parked under its transaction key in the
/// shard of that index. The channel holds at most one per parked request, and those are
/// bounded by the server transactions (see `core/resolve.rs`).
type Resolved = (
    usize,
    core::ServerKey,
    Result<Vec<crate::seams::Destination>, dns::DnsError>,
);

/// Writes the fraud guard's changes to the state database.
pub type FraudStore = Box<dyn Fn(&[crate::fraud::StoreOp]) + Send + Sync>;

impl Proxy {
    /// A proxy configured from `config`; its metrics go into `registry`.
    pub fn new<'a>(
        config: impl Into<config::Sections<'a>>,
        registry: Option<&prometheus::Registry>,
        observer: Arc<dyn Observer>,
    ) -> anyhow::Result<Proxy> {
        let metrics = ProxyMetrics::new(registry);
        Proxy::build(config.into(), metrics, observer, Instant::now(), None)
    }

    /// A proxy on a clock that moves only when the returned [`FakeClock`] is advanced (then
    /// [`Proxy::tick`] runs the timers due): the pipeline fuzz target and its tests.
    #[doc(hidden)]
    pub fn with_fake_clock<'a>(
        config: impl Into<config::Sections<'a>>,
        observer: Arc<dyn Observer>,
    ) -> anyhow::Result<(Proxy, FakeClock)> {
        let start = Instant::now();
        let clock = FakeClock::starting(start);
        let metrics = ProxyMetrics::new(None);
        let proxy = Proxy::build(config.into(), metrics, observer, start, Some(clock.clone()))?;
        Ok((proxy, clock))
    }

    /// `[proxy] shards` cores sharing one [`Shared`], their clock starting at `start`.
    fn build(
        config: config::Sections<'_>,
        metrics: ProxyMetrics,
        observer: Arc<dyn Observer>,
        start: Instant,
        fake_now: Option<FakeClock>,
    ) -> anyhow::Result<Proxy> {
        let n = config.proxy.effective_shards();
        let shared = Shared::new(config, metrics, n, start)?;
        let shards = (0..n)
            .map(|i| Mutex::new(Core::shard(config, &shared, i, observer.clone())))
            .collect();
        let (resolved_tx, rx) = tokio::sync::mpsc::unbounded_channel();
        Ok(Proxy {
            shards,
            shared,
            out: OnceLock::new(),
            fraud_store: OnceLock::new(),
            fake_now,
            dns: OnceLock::new(),
            resolved_tx,
            resolved_rx: Mutex::new(Some(rx)),
            alarm: alarm::Alarm::new(),
        })
    }

    fn now(&self) -> Instant {
        self.fake_now
            .as_ref()
            .map_or_else(Instant::now, FakeClock::now)
    }

    /// Resolve domains in next hops with `dns` (RFC 3263; once, before serving).
    pub fn set_dns(&self, dns: dns::Dns) {
        let _ = self.dns.set(Arc::new(dns));
    }

    /// Add or replace a subscriber while running.
    pub fn add_user(&self, e: &crate::auth::config::UserEntry) {
        self.with_core(|c| {
            c.with_users(|u| u.insert(e));
            c.set_identities(&e.user, &e.domain, &e.identities);
        });
    }

    /// Take the settings a reload changes while running (see [`Core::reconfigure`]), in
    /// every shard.
    pub fn reconfigure<'a>(&self, config: impl Into<config::Sections<'a>>) {
        let config = config.into();
        for i in 0..self.shards.len() {
            self.with_shard(i, |c| c.reconfigure(config));
        }
    }

    /// Remove a subscriber; whether there was one.
    pub fn remove_user(&self, user: &str, domain: &str) -> bool {
        self.with_core(|c| {
            c.set_identities(user, domain, &[]);
            c.with_users(|u| u.remove(user, domain))
        })
    }

    /// This node's name in a cluster (`[cluster] node`): its nonces carry it, and a nonce
    /// of another node is answered with a fresh challenge (stale=true).
    pub fn set_node(&self, node: &str) {
        self.with_core(|c| c.set_node(node));
    }

    /// Share registrations with the cluster: see `registrar::shared`.
    pub fn share_locations(
        &self,
        node: String,
        path: Option<String>,
        sink: crate::registrar::shared::Sink,
    ) {
        self.with_core(|c| c.share_locations(node, path, sink));
    }

    /// A registration change another cluster node made; false when its binding's next hop
    /// is refused.
    pub fn location_remote(&self, change: &crate::registrar::store::Change) -> bool {
        let now = self.now();
        self.with_core(|c| c.location_remote(change, now))
    }

    /// The registrations whose flow this node holds, as shared.
    pub fn location_own(&self) -> Vec<(String, crate::registrar::store::SharedBinding)> {
        let now = self.now();
        self.with_core(|c| c.location_own(now))
    }

    /// The cluster's full set of registrations (after a (re)connect); how many were
    /// refused (their next hop).
    pub fn location_reload(
        &self,
        all: &[(String, crate::registrar::store::SharedBinding)],
    ) -> usize {
        let now = self.now();
        self.with_core(|c| c.location_reload(all, now))
    }

    /// The subscribers, hashes only.
    pub fn users(&self) -> Vec<crate::auth::config::UserEntry> {
        self.with_core(|c| {
            let entries: Vec<_> = c.with_users(|users| {
                users
                    .ids()
                    .into_iter()
                    .filter_map(|(u, d)| users.entry(&u, &d))
                    .collect()
            });
            entries
                .into_iter()
                .map(|mut e| {
                    e.identities = c.identities_of(&e.user, &e.domain);
                    e
                })
                .collect()
        })
    }

    /// Where suspensions are written from now on (the daemon's state database).
    pub fn set_fraud_store(&self, store: FraudStore) {
        let _ = self.fraud_store.set(store);
    }

    /// Suspensions read from the state database at start.
    pub fn fraud_restore(&self, list: Vec<crate::fraud::Suspension>) {
        self.with_core(|c| c.fraud.lock().restore(list));
    }

    /// Lift the suspension of `user` (`user@domain`, or `user` in every domain): the
    /// accounts lifted. The caller removes them from the state database.
    pub fn fraud_unblock(&self, user: &str) -> Vec<String> {
        let now = self.now();
        self.with_core(|c| {
            let unix = c.unix_secs(now);
            c.fraud.lock().unblock(user, unix)
        })
    }

    /// `fraud status`.
    pub fn fraud_status(&self, user: Option<&str>) -> crate::fraud::Status {
        let now = self.now();
        self.with_core(|c| c.fraud.lock().status(user, now))
    }

    /// The live registrations from `ip` (and `port`): address of record, binding, time left.
    pub fn bindings_from(
        &self,
        ip: std::net::IpAddr,
        port: Option<u16>,
    ) -> Vec<(String, crate::registrar::Binding, Duration)> {
        let now = self.now();
        self.with_core(|c| c.bindings_from(ip, port, now))
            .into_iter()
            .map(|(aor, b)| {
                let left = b.expires_at.saturating_duration_since(now);
                (aor, b, left)
            })
            .collect()
    }

    /// `fraud events`: the last warnings, oldest first.
    pub fn fraud_events(&self) -> Vec<crate::fraud::Event> {
        self.with_core(|c| c.fraud.lock().events())
    }

    /// Relay mode: the flows the operator's registrar registered.
    pub fn relayed_flows(&self) -> usize {
        self.with_core(|c| c.relayed_flows())
    }

    /// Calls in progress through the edge.
    pub fn calls_active(&self) -> usize {
        self.with_core(|c| c.fraud.lock().calls_active())
    }

    /// Run timers due now, in every shard. A panic in one tick is caught and counted
    /// (`timer`); the next tick runs as usual.
    pub fn tick(&self) {
        let now = self.now();
        for i in 0..self.shards.len() {
            crate::guard::catch("timer", None, || self.with_shard(i, |c| c.tick(now)));
        }
    }

    /// Drive the timers of every shard until `shutdown` flips to true: at the earliest
    /// deadline of the shards (see `alarm`), or every [`FAKE_TICK`] on a fake clock;
    /// resolutions are applied as they come.
    pub async fn run_timers(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut rx = crate::guard::lock(&self.resolved_rx, "dns results").take();
        loop {
            self.alarm.reading();
            let due = if self.fake_now.is_some() {
                Instant::now() + FAKE_TICK
            } else {
                self.next_due()
            };
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = self.alarm.sleep(due) => self.tick(),
                // A second timer task has no receiver: the first one applies the resolutions.
                Some(done) = async { rx.as_mut()?.recv().await }, if rx.is_some() => {
                    self.apply_resolved(done);
                }
            }
        }
    }
}

impl Handler for Proxy {
    fn on_request(&self, req: &Message<'_>, ctx: &Context) -> Action {
        let now = self.now();
        self.with_shard(self.shard_of(req), |c| c.request(req, ctx, now))
    }

    fn on_request_answered(&self, req: &Message<'_>, ctx: &Context) -> (Action, Answers) {
        let now = self.now();
        self.with_shard_answered(self.shard_of(req), |c| c.request(req, ctx, now))
    }

    fn on_response(&self, resp: &Message<'_>, ctx: &Context) -> Action {
        let now = self.now();
        let action = self.with_shard(self.shard_of(resp), |c| c.response(resp, ctx, now));
        if let Action::Drop { reason } = &action
            && *reason == crate::metrics::DROP_STRAY_RESPONSE
        {
            // Forged or late replies: one line a minute per source, with the count.
            crate::logging::security_event(
                "stray_reply",
                ctx.source.ip(),
                "response matching no open transaction",
                1,
            );
        }
        action
    }

    fn attach(&self, out: Arc<dyn Outbound>) {
        let _ = self.out.set(out);
    }

    fn unreachable(&self, dest: crate::seams::Destination) {
        // Branches toward `dest` may be in any shard.
        let now = self.now();
        for i in 0..self.shards.len() {
            self.with_shard(i, |c| c.unreachable(dest, now));
        }
    }

    // The flow events touch only what the shards share (keep-alive flows, bindings,
    // relayed flows): the first shard takes them.

    fn flow_closed(&self, flow: crate::seams::Destination) {
        let now = self.now();
        self.with_core(|c| c.flow_closed(flow, now));
    }

    fn flow_pong(&self, flow: crate::seams::Destination) {
        self.with_core(|c| c.flow_pong(flow));
    }

    fn flow_stun(&self, flow: crate::seams::Destination) -> bool {
        let now = self.now();
        self.with_core(|c| c.flow_stun(flow, now))
    }
}
