//! Bans learned in user space: sources that fail digest authentication too often
//! (svcrack), scanners (svmap by its User-Agent; svwar and other sweeps over user names by
//! their behaviour, `policy::sweep`), sources over the per-source request rate; and the proxy's UDP
//! client transactions, written into the XDP map so that their responses pass.
//!
//! The proxy reports through [`Learner`] (its `Observer`) under its own lock, so events go
//! through a bounded channel to [`run`], which does the slow part (database writes).

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::Deserialize;
use sip_firewall_sip::Transport;
use tokio::sync::{mpsc, watch};
use tracing::warn;

use super::{Enforcer, refusals::Refusals, window::Window};
use crate::{
    logging::{RateLimit, Verdict},
    policy::sweep::{self, Hit, SweepLimits, Sweeps},
    seams::{Destination, Observer},
    xdp::{config::BanScopeConfig, maps::TransactionKeys},
};

/// `[bans]`: when user space bans a source by itself.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BansConfig {
    /// Failed authentications from one source within `auth_window` that ban it.
    pub auth_failures: u32,
    #[serde(deserialize_with = "crate::section::duration")]
    pub auth_window: Duration,
    #[serde(deserialize_with = "crate::section::duration")]
    pub auth_ban_time: Duration,
    /// Ban a source whose User-Agent is on the scanner list.
    pub scanners: bool,
    #[serde(deserialize_with = "crate::section::duration")]
    pub scanner_ban_time: Duration,
    /// Requests from one source within `request_window` (over TCP, and over UDP after XDP)
    /// that ban it; 0 disables.
    pub request_limit: u32,
    #[serde(deserialize_with = "crate::section::duration")]
    pub request_window: Duration,
    /// The request limit of known sources (registered, recently authenticated, peers of
    /// ours) within `request_window`: over it they are throttled, never banned.
    pub known_request_limit: u32,
    #[serde(deserialize_with = "crate::section::duration")]
    pub request_ban_time: Duration,
    /// What bans learned from traffic block (flood, scanner, auth failures, request rate):
    /// only the SIP ports by default, so that a spoofed source cannot cut a host off
    /// entirely. Manual bans keep `[xdp] ban_scope`.
    pub learned_scope: BanScopeConfig,
}

impl Default for BansConfig {
    fn default() -> Self {
        // In the spirit of the fail2ban recipe for Kamailio: a handful of failures in ten
        // minutes is a password guesser, not a user who mistyped.
        BansConfig {
            auth_failures: 5,
            auth_window: Duration::from_secs(600),
            auth_ban_time: Duration::from_secs(3600),
            scanners: true,
            scanner_ban_time: Duration::from_secs(3600),
            request_limit: 500,
            request_window: Duration::from_secs(10),
            known_request_limit: 10_000,
            request_ban_time: Duration::from_secs(600),
            learned_scope: BanScopeConfig::SipPorts,
        }
    }
}

/// What the proxy and the gate report.
#[derive(Debug)]
pub enum Event {
    /// A UDP client transaction and the peer its responses must come from (`None`: any).
    TransactionOpen(String, Option<SocketAddr>),
    TransactionClose(String, Option<SocketAddr>),
    /// A failed authentication; `proven` when it came after a nonce we issued to that very
    /// address (the source can receive what we send it: not spoofed).
    AuthFailure(IpAddr, bool),
    Scanner(IpAddr, String),
    /// A user name refused to this source: a target answered 403/404/480, or named in
    /// failing digest credentials.
    Target(IpAddr, String),
    RequestRate(IpAddr),
    Flood(IpAddr),
    /// A good source: authenticated, or the peer of a transaction of ours.
    Known(IpAddr),
}

/// How long a good source stays known after it last proved itself.
pub const KNOWN_TTL: Duration = Duration::from_secs(3600);

/// How long a UDP client transaction key lives in the XDP map if its end is never reported:
/// longer than any transaction (Timer B/F 32 s, then Timer D/K/M up to 32 s).
pub const TRANSACTION_TTL: Duration = Duration::from_secs(300);

/// The `kind` of `sipfw_internal_errors_total` that counts events lost on a full queue.
pub const QUEUE_FULL_KIND: &str = "learner_queue_full";
/// At most one warning about lost events per this long.
pub const QUEUE_FULL_LOG_EVERY: Duration = Duration::from_secs(10);
/// The rate limit of the warning about lost events.
static QUEUE_FULL_WARNING: Mutex<RateLimit<()>> =
    Mutex::new(RateLimit::new(QUEUE_FULL_LOG_EVERY, 1));

/// The proxy's observer: queues events without blocking, except the opening of a UDP client
/// transaction, whose key must be in the XDP map before the request leaves.
#[derive(Clone)]
pub struct Learner {
    tx: mpsc::Sender<Event>,
    /// Where transaction keys are written at once. Through the queue, the reply of a quick
    /// peer (a 180 sent as soon as the INVITE arrives) could reach XDP before its key and be
    /// dropped as a stray. A map handle of its own, not the enforcer: the proxy calls us
    /// under its lock, and the admin server holds the enforcer while it calls the proxy.
    keys: Option<Arc<Mutex<TransactionKeys>>>,
    /// Peers that may answer from another address than the one we sent to (`[proxy]
    /// reply_from_any`): their transactions' keys are of the branch alone.
    reply_from_any: Arc<Vec<ipnet::IpNet>>,
}

impl Learner {
    pub fn new(capacity: usize) -> (Learner, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::channel(capacity);
        (
            Learner {
                tx,
                keys: None,
                reply_from_any: Arc::new(Vec::new()),
            },
            rx,
        )
    }

    /// Peers that may answer from any address (`[proxy] reply_from_any`).
    pub fn with_reply_from_any(mut self, nets: Vec<ipnet::IpNet>) -> Learner {
        self.reply_from_any = Arc::new(nets);
        self
    }

    /// The peer a transaction's responses must come from: where the request went, unless
    /// that peer may answer from anywhere.
    fn reply_peer(&self, dest: &Destination) -> Option<SocketAddr> {
        let ip = dest.addr.ip().to_canonical();
        (!crate::section::in_any(&self.reply_from_any, ip)).then_some(dest.addr)
    }

    /// Write transaction keys through `keys` synchronously (see the field).
    pub fn with_transaction_keys(mut self, keys: TransactionKeys) -> Learner {
        self.keys = Some(Arc::new(Mutex::new(keys)));
        self
    }

    /// Queue an event; when the queue is full it is lost: a lost authentication failure or
    /// scanner is evidence a ban would have used (fail-open), so each loss is counted in
    /// `sipfw_internal_errors_total{kind="learner_queue_full"}` and warned about at most
    /// every [`QUEUE_FULL_LOG_EVERY`].
    pub fn report(&self, e: Event) {
        if let Err(mpsc::error::TrySendError::Full(e)) = self.tx.try_send(e) {
            crate::metrics::internal_error(QUEUE_FULL_KIND);
            let verdict = crate::logging::decide_shared(&QUEUE_FULL_WARNING, (), Instant::now());
            if let Verdict::Log { .. } = verdict {
                warn!(
                    event = ?e,
                    "ban learning queue full: events lost (counted in \
                     sipfw_internal_errors_total{{kind=\"{QUEUE_FULL_KIND}\"}})"
                );
            }
        }
    }
}

impl Observer for Learner {
    fn client_transaction_created(&self, branch: &str, dest: Destination) {
        // Only UDP responses come through XDP; TCP ones arrive on our own connection.
        if dest.transport == Transport::Datagram {
            let peer = self.reply_peer(&dest);
            // The proxy sends the request only after this returns.
            match &self.keys {
                Some(keys) => {
                    let expires = crate::clock::expiry_after(Some(TRANSACTION_TTL));
                    match keys.lock() {
                        Ok(mut k) => {
                            if let Err(e) = k.open(branch, peer, expires) {
                                warn!("{e}");
                            }
                        }
                        Err(_) => warn!("transaction keys poisoned"),
                    }
                }
                None => self.report(Event::TransactionOpen(branch.to_string(), peer)),
            }
        }
        // We send it requests: a registered contact, a trunk, a peer of a dialog.
        self.report(Event::Known(dest.addr.ip()));
    }

    fn authenticated(&self, source: std::net::SocketAddr, _user: &str) {
        self.report(Event::Known(source.ip()));
    }

    fn client_transaction_terminated(&self, branch: &str, dest: Destination) {
        if dest.transport == Transport::Datagram {
            self.report(Event::TransactionClose(
                branch.to_string(),
                self.reply_peer(&dest),
            ));
        }
    }

    fn auth_failure(&self, source: std::net::SocketAddr, user: Option<&str>, reason: &str) {
        // The user name is the attacker's text: not logged (the reason is ours).
        crate::logging::security_event("auth_failure", source.ip(), reason, 1);
        self.report(Event::AuthFailure(
            source.ip(),
            proves_return_routability(reason),
        ));
        if let Some(user) = user.filter(|u| !u.is_empty()) {
            self.refused_target(source, user, 0);
        }
    }

    fn refused_target(&self, source: std::net::SocketAddr, user: &str, _code: u16) {
        // Bounded copy: the learner keeps only a hash of it.
        let user = user.get(..user.len().min(256)).unwrap_or(user);
        self.report(Event::Target(source.ip(), user.to_string()));
    }

    fn scanner(&self, source: std::net::SocketAddr, user_agent: &str) {
        crate::logging::security_event("scanner", source.ip(), "scanner User-Agent", 1);
        self.report(Event::Scanner(source.ip(), user_agent.to_string()));
    }
}

/// Whether an authentication failure (a reason of [`crate::auth::Outcome`]) came after a
/// valid nonce, which the authenticator binds to the client's address: the source received
/// our challenge, so the failure is its own. The others (malformed, bad nonce, qop,
/// algorithm, identity mismatch) can be sent by anyone with any source address.
pub fn proves_return_routability(reason: &str) -> bool {
    matches!(
        reason,
        "wrong_password" | "unknown_user" | "uri_mismatch" | "replay"
    )
}

/// The evidence the learner keeps per source between events.
#[derive(Default)]
struct Evidence {
    /// Failed authentications.
    failures: Window,
    /// Distinct refused target users (`policy::sweep`).
    sweeps: Sweeps,
}

/// Apply events until shutdown.
pub async fn run(
    mut rx: mpsc::Receiver<Event>,
    enforcer: Arc<Mutex<Enforcer>>,
    // `[bans]` as in force now (a reload swaps it: `live::EnforceSettings::bans`).
    bans: impl Fn() -> Arc<BansConfig>,
    // `[policy] scan_targets` and `scan_window` as in force now.
    sweep: impl Fn() -> SweepLimits,
    mut refusals: Refusals,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut evidence = Evidence::default();
    let mut prune = tokio::time::interval(Duration::from_secs(60));
    loop {
        let event = tokio::select! {
            e = rx.recv() => match e { Some(e) => e, None => return Ok(()) },
            _ = prune.tick() => {
                let now = Instant::now();
                evidence.failures.prune(now, bans().auth_window);
                evidence.sweeps.prune(now, sweep().window);
                continue;
            }
            _ = shutdown.changed() => return Ok(()),
        };
        // As in force now: a reload changes thresholds and ban times for the next event.
        let cfg = bans();
        let ban = match event {
            Event::Target(ip, user) => {
                let hit = evidence.sweeps.hit(ip, &user, Instant::now(), sweep());
                swept(hit, ip, &enforcer, &cfg, sweep(), &mut refusals)
            }
            event => decide(
                event,
                &enforcer,
                &cfg,
                &mut evidence.failures,
                &mut refusals,
            ),
        };
        if let Some((ip, time, reason)) = ban {
            let already = with(&enforcer, |e| Ok(e.is_banned(ip))).unwrap_or(false);
            if !already && with(&enforcer, |e| e.ban(ip, Some(time), &reason).map(|_| ())).is_some()
            {
                // One structured line per kind and source a minute, however many events.
                crate::logging::security_event("ban", ip, &reason, 1);
            }
        }
    }
}

/// What a refused target user leads to: a ban once the source reached `[policy]
/// scan_targets`, unless the source is known good (refused and counted: its excess is
/// throttled by the gate, never banned on this evidence).
fn swept(
    hit: Hit,
    ip: IpAddr,
    enforcer: &Mutex<Enforcer>,
    cfg: &BansConfig,
    limits: SweepLimits,
    refusals: &mut Refusals,
) -> Option<(IpAddr, Duration, String)> {
    match hit {
        Hit::Off | Hit::Counted(_) => None,
        Hit::Full => {
            crate::metrics::limit_hit(sweep::SOURCES_BOUND, Some(ip));
            None
        }
        Hit::Scanner(n) => ban_unless_protected(enforcer, refusals, ip, "scan_targets", || {
            let window = humantime::format_duration(limits.window);
            let reason = format!("scanner: {n} distinct users refused within {window}");
            (cfg.scanner_ban_time, reason)
        }),
    }
}

/// What one event leads to: a ban to make (source, time, reason), or nothing (recorded,
/// counted, or refused on a protected source).
fn decide(
    event: Event,
    enforcer: &Mutex<Enforcer>,
    cfg: &BansConfig,
    failures: &mut Window,
    refusals: &mut Refusals,
) -> Option<(IpAddr, Duration, String)> {
    match event {
        Event::TransactionOpen(branch, peer) => {
            with(enforcer, |e| {
                e.transaction_open(&branch, peer, TRANSACTION_TTL)
            });
            None
        }
        Event::TransactionClose(branch, peer) => {
            with(enforcer, |e| e.transaction_close(&branch, peer));
            None
        }
        Event::Known(ip) => {
            with(enforcer, |e| e.know(ip, KNOWN_TTL));
            None
        }
        Event::AuthFailure(ip, proven) => {
            let known = protected(enforcer, ip);
            if known && !proven {
                refusals.refuse(ip, "auth_unproven");
                None
            } else {
                let n = failures.hit(ip, Instant::now(), cfg.auth_window);
                (n >= cfg.auth_failures as usize).then(|| {
                    failures.forget(&ip);
                    if known {
                        // Its own failed logins: demoted, it no longer gets the known
                        // tier (trust tiers).
                        with(enforcer, |e| e.forget_known(ip));
                    }
                    (
                        ip,
                        cfg.auth_ban_time,
                        format!("auth_failure: {n} failed authentications"),
                    )
                })
            }
        }
        Event::Scanner(ip, ua) if cfg.scanners => {
            ban_unless_protected(enforcer, refusals, ip, "scanner", || {
                (cfg.scanner_ban_time, format!("scanner: {ua}"))
            })
        }
        Event::Scanner(..) => None,
        // Counted by `run`, which holds the sweeps.
        Event::Target(..) => None,
        // The gate keeps dropping a known source's excess (throttled), without a ban.
        Event::RequestRate(ip) => {
            ban_unless_protected(enforcer, refusals, ip, "request_rate", || {
                let (limit, window) = (cfg.request_limit, cfg.request_window);
                let reason = format!("request_rate: over {limit} requests in {window:?}");
                (cfg.request_ban_time, reason)
            })
        }
        Event::Flood(ip) => ban_unless_protected(enforcer, refusals, ip, "flood", || {
            let reason = "flood: user-space flood limit".to_string();
            (cfg.request_ban_time, reason)
        }),
    }
}

/// A ban of `ip` for `ban()` (time, reason), unless `ip` is [`protected`]: then the
/// refusal is counted as `what`, and nothing is banned.
fn ban_unless_protected(
    enforcer: &Mutex<Enforcer>,
    refusals: &mut Refusals,
    ip: IpAddr,
    what: &'static str,
    ban: impl FnOnce() -> (Duration, String),
) -> Option<(IpAddr, Duration, String)> {
    if protected(enforcer, ip) {
        refusals.refuse(ip, what);
        return None;
    }
    let (time, reason) = ban();
    Some((ip, time, reason))
}

/// Known sources (allow list, registrations, recent authentication, peers of our
/// transactions) are never banned on evidence anyone can forge with their address:
/// otherwise one spoofed packet takes a subscriber or a trunk off the air.
fn protected(enforcer: &Mutex<Enforcer>, ip: IpAddr) -> bool {
    with(enforcer, |e| {
        Ok(e.source_verdict(ip) == Some(sip_firewall_common::Reason::Allowed) || e.is_known(ip))
    })
    .unwrap_or(false)
}

/// Run `f` on the enforcer, logging failures.
fn with<T>(
    enforcer: &Mutex<Enforcer>,
    f: impl FnOnce(&mut Enforcer) -> Result<T, super::EnforceError>,
) -> Option<T> {
    let mut e = match enforcer.lock() {
        Ok(e) => e,
        Err(_) => {
            warn!("enforcer poisoned");
            return None;
        }
    };
    match f(&mut e) {
        Ok(v) => Some(v),
        Err(err) => {
            warn!("{err}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An event lost on a full queue (an authentication failure a ban would have counted) is
    /// evidence lost: each loss is counted as an internal error, not only logged.
    #[test]
    fn events_lost_on_a_full_queue_are_counted() {
        let (learner, _rx) = Learner::new(1);
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        let before = crate::metrics::internal_errors(QUEUE_FULL_KIND);
        learner.report(Event::AuthFailure(ip, true));
        assert_eq!(crate::metrics::internal_errors(QUEUE_FULL_KIND), before);
        learner.report(Event::AuthFailure(ip, true));
        learner.report(Event::AuthFailure(ip, true));
        assert_eq!(crate::metrics::internal_errors(QUEUE_FULL_KIND), before + 2);
    }

    fn enforcer(tag: &str) -> (Arc<Mutex<Enforcer>>, std::path::PathBuf) {
        let (e, d) = Enforcer::scratch(&format!("learn-{tag}"), &crate::config::Config::default());
        (Arc::new(Mutex::new(e)), d)
    }

    /// The learner running on a fresh enforcer with the default `[bans]` and `[policy]`.
    struct Running {
        enforcer: Arc<Mutex<Enforcer>>,
        dir: std::path::PathBuf,
        learner: Learner,
        counter: prometheus::IntCounterVec,
        stop: watch::Sender<bool>,
        task: tokio::task::JoinHandle<anyhow::Result<()>>,
    }

    impl Running {
        fn start(tag: &str) -> Running {
            let (enforcer, dir) = enforcer(tag);
            let refusals = Refusals::new(&crate::metrics::Metrics::new());
            let counter = refusals.counter.clone();
            let (learner, rx) = Learner::new(1024);
            let (stop, stop_rx) = watch::channel(false);
            let task = tokio::spawn(run(
                rx,
                enforcer.clone(),
                || Arc::new(BansConfig::default()),
                || SweepLimits::of(&crate::policy::config::PolicyConfig::default()),
                refusals,
                stop_rx,
            ));
            Running {
                enforcer,
                dir,
                learner,
                counter,
                stop,
                task,
            }
        }

        /// Whether `ip` is banned within two seconds.
        async fn banned(&self, ip: IpAddr) -> bool {
            for _ in 0..200 {
                if self.enforcer.lock().unwrap().is_banned(ip) {
                    return true;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            false
        }

        async fn stop(self) {
            let _ = self.stop.send(true);
            let _ = self.task.await;
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A known source is not banned on forgeable evidence (counted instead); its own proven
    /// failures ban and demote it; an unknown source is banned on the same evidence.
    #[tokio::test]
    async fn known_sources_refuse_unproven_bans_and_demote_on_proven_ones() {
        let r = Running::start("tiers");
        let (enforcer, learner, counter) = (&r.enforcer, &r.learner, &r.counter);
        let known: IpAddr = "192.0.2.1".parse().unwrap();
        let v6_known: IpAddr = "2001:db8:1::1".parse().unwrap();
        let stranger: IpAddr = "192.0.2.2".parse().unwrap();
        learner.report(Event::Known(known));
        learner.report(Event::Known(v6_known));
        learner.report(Event::Scanner(known, "friendly-scanner".into()));
        // Another address of the known /64.
        learner.report(Event::Scanner(
            "2001:db8:1::99".parse().unwrap(),
            "sipvicious".into(),
        ));
        learner.report(Event::RequestRate(known));
        learner.report(Event::Flood(known));
        for _ in 0..10 {
            learner.report(Event::AuthFailure(known, false));
        }
        learner.report(Event::Scanner(stranger, "friendly-scanner".into()));
        assert!(r.banned(stranger).await, "the unknown scanner is banned");
        {
            let e = enforcer.lock().unwrap();
            assert!(!e.is_banned(known), "not banned on unproven evidence");
            assert!(!e.is_banned(v6_known));
            assert!(e.is_known(known), "still known");
        }
        for (kind, n) in [
            ("scanner", 2),
            ("request_rate", 1),
            ("flood", 1),
            ("auth_unproven", 10),
        ] {
            assert_eq!(counter.with_label_values(&[kind]).get(), n, "{kind}");
        }
        // Its own failed logins (after a valid nonce) count: banned and demoted.
        for _ in 0..5 {
            learner.report(Event::AuthFailure(known, true));
        }
        assert!(r.banned(known).await, "proven failures ban a known source");
        assert!(!enforcer.lock().unwrap().is_known(known), "and demote it");
        r.stop().await;
    }

    /// Ten distinct refused users ban an unknown source as a scanner, whatever its
    /// User-Agent; a known source (a trunk, a registered PBX) sweeping two hundred users is
    /// refused the ban and counted; the same user over and over is one target.
    #[tokio::test]
    async fn sweeps_over_users_ban_unknown_sources_only() {
        let r = Running::start("sweep");
        let (enforcer, learner) = (&r.enforcer, &r.learner);
        let at = |ip: &str| -> SocketAddr { format!("{ip}:5060").parse().unwrap() };
        let (trunk, retrier, scanner) = (at("192.0.2.1"), at("192.0.2.2"), at("192.0.2.3"));
        learner.report(Event::Known(trunk.ip()));
        for i in 0..200 {
            learner.refused_target(trunk, &format!("+4930{i:06}"), 480);
            learner.refused_target(retrier, "100", 404);
        }
        for i in 0..9 {
            learner.refused_target(scanner, &format!("{}", 100 + i), 404);
        }
        // The tenth name, in failing credentials.
        learner.auth_failure(scanner, Some("admin"), "bad_nonce");
        assert!(r.banned(scanner.ip()).await, "the sweep's source is banned");
        {
            let mut e = enforcer.lock().unwrap();
            assert!(!e.is_banned(trunk.ip()), "the known trunk is not");
            assert!(!e.is_banned(retrier.ip()), "one user retried is one target");
            let reason = e
                .bans()
                .unwrap()
                .into_iter()
                .find(|b| b.ip == scanner.ip())
                .map(|b| b.reason)
                .unwrap_or_default();
            assert_eq!(reason, "scanner: 10 distinct users refused within 1m");
        }
        // Every tenth distinct user of the trunk reached the threshold once more.
        assert_eq!(r.counter.with_label_values(&["scan_targets"]).get(), 20);
        r.stop().await;
    }

    /// A transaction's key binds the peer the request went to, except for peers
    /// in `[proxy] reply_from_any`; the close event names the same peer as the open one.
    #[tokio::test]
    async fn transaction_keys_bind_the_peer() {
        let (learner, mut rx) = Learner::new(8);
        let learner = learner.with_reply_from_any(vec!["203.0.113.0/24".parse().unwrap()]);
        let bound: SocketAddr = "192.0.2.5:5060".parse().unwrap();
        let trunk: SocketAddr = "203.0.113.9:5060".parse().unwrap();
        for addr in [bound, trunk] {
            let dest = Destination {
                addr,
                transport: Transport::Datagram,
            };
            learner.client_transaction_created("z9hG4bK-x", dest);
            learner.client_transaction_terminated("z9hG4bK-x", dest);
        }
        let mut peers = Vec::new();
        while let Ok(e) = rx.try_recv() {
            match e {
                Event::TransactionOpen(_, p) | Event::TransactionClose(_, p) => peers.push(p),
                _ => {}
            }
        }
        assert_eq!(peers, vec![Some(bound), Some(bound), None, None]);
    }

    /// Only failures after a nonce we issued (bound to the client's address) prove the
    /// source can receive: the reasons of `auth::Authenticator::verify`.
    #[test]
    fn proven_failures() {
        for r in ["wrong_password", "unknown_user", "uri_mismatch", "replay"] {
            assert!(proves_return_routability(r), "{r}");
        }
        for r in [
            "malformed",
            "bad_nonce",
            "qop",
            "algorithm",
            "identity_mismatch",
            "",
        ] {
            assert!(!proves_return_routability(r), "{r}");
        }
    }
}
