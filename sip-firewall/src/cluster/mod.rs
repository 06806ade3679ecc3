//! `[cluster]`: several edges, one policy. Bans, allow/deny lists and subscribers made on
//! any node are written to Redis and published; every node applies them to its own state
//! database, memory and XDP maps.
//!
//! Redis is the engine; we write no replication of our own. Layout (prefix `sipfw:`); every
//! value and event is sealed with a MAC bound to its key and field ([`trust`]: what a node
//! takes from Redis and what it checks first):
//! - `sipfw:ban:<ip>`: the [`Event`] that made the ban (reason, origin node, expiry), with the
//!   ban's time left as the key's TTL, so Redis forgets expired bans by itself;
//! - `sipfw:list:allow`, `sipfw:list:deny`: hashes prefix -> the node that added it;
//! - `sipfw:users`: hash `user@domain` -> the subscriber entry (digest hashes only);
//! - `sipfw:loc:<aor>`: hash contact -> the binding (expiry, the node holding the flow, its
//!   Path URI; [`crate::registrar::shared`]), the key's TTL the latest expiry;
//! - `sipfw:node:<name>`: heartbeat, TTL [`HEARTBEAT_TTL`];
//! - `sipfw:secret-fingerprint`: derived from `[auth] secret` and `previous_secrets`
//!   ([`trust::fingerprint`], never a secret), so nodes whose stamps and records
//!   would not verify on each other refuse to join, and a secret is rolled node by node
//!   ([`trust::Trust::join`]);
//! - channel `sipfw:events`: every change, as an [`Event`].
//!
//! Order on (re)connect: subscribe, push what was queued while cut off, load the full set,
//! then follow the channel. Messages published while the set loads wait in the subscription,
//! and every change is idempotent, so no ban known to Redis goes unenforced.
//!
//! Cut off, the task moves what is queued into the state database (`cluster_outbox`, in
//! order, bounded by [`OUTBOX`]), so changes made during an outage survive a restart made
//! during it too; they go out first, oldest first, when Redis answers again.
//!
//! Bans deleted elsewhere while a node was cut off: the full load reconciles. The bans a
//! node knows Redis had (received from it, loaded from it, or written to it: marked in the
//! state database, `cluster_bans`) and that Redis no longer has are lifted locally; bans
//! that never reached Redis (made before the node joined, or made while cut off and still
//! queued) are local and stay. Only when Redis still holds the data this node last loaded
//! (`sipfw:epoch`, a random value the first node to reach an empty Redis sets): a Redis that
//! restarted empty lifts nothing. Marks are written in batches (at each heartbeat and load),
//! so a crash may forget the last few seconds' marks: such a ban then stays until it expires.
//!
//! Client: the `redis` crate, tokio flavour. Commands go through its `ConnectionManager`
//! (one multiplexed connection that reconnects by itself, cheap to clone); the subscription
//! is a dedicated `PubSub` connection that [`run`] re-opens (a subscription cannot share the
//! multiplexed connection under RESP2, which every Redis speaks).

pub mod endpoint;
pub mod metrics;
mod publish;
pub mod trust;

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt as _;
use redis::AsyncCommands as _;
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::{
    auth::config::UserEntry,
    enforce::Enforcer,
    state::{BanRecord, List},
};

/// What is shared (`share = [...]`, default all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Share {
    Bans,
    Lists,
    Users,
    /// Registrations (location), with Path (RFC 3327).
    Registrations,
}

/// `[cluster]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `redis://host:port/db`, `rediss://...` (TLS: rustls, the system's roots),
    /// `redis+unix:///path`, or a primary managed by Sentinels:
    /// `redis+sentinel://host:26379,host2:26379/<master name>/<db>` ([`endpoint`]).
    pub redis: String,
    /// This node's name (default: the host name).
    #[serde(default)]
    pub node: Option<String>,
    /// What is shared.
    #[serde(default = "all_shared")]
    pub share: Vec<Share>,
    /// This node's Path URI (RFC 3327): where the other nodes send requests for phones
    /// registered here, e.g. `sip:10.0.0.11:5060;lr` on the network between the edges.
    /// Default: `sip:<[proxy] advertise>;lr`.
    #[serde(default)]
    pub path: Option<String>,
}

fn all_shared() -> Vec<Share> {
    vec![
        Share::Bans,
        Share::Lists,
        Share::Users,
        Share::Registrations,
    ]
}

impl ClusterConfig {
    /// The node name: configured, or the host name.
    pub fn node_name(&self) -> String {
        if let Some(n) = self.node.as_ref().filter(|n| !n.is_empty()) {
            return n.clone();
        }
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "node".to_string())
    }

    pub fn shares(&self, s: Share) -> bool {
        self.share.contains(&s)
    }
}

/// One change, as published and as stored under a ban's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The node that made the change.
    pub node: String,
    /// When it was sent (unix ms): the receivers' lag.
    pub sent_ms: u64,
    pub op: Op,
}

/// What changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Ban {
        ban: BanRecord,
    },
    Unban {
        ip: IpAddr,
    },
    ListAdd {
        list: List,
        net: ipnet::IpNet,
    },
    ListDel {
        list: List,
        net: ipnet::IpNet,
    },
    UserAdd {
        user: UserEntry,
    },
    UserDel {
        user: String,
        domain: String,
    },
    Location {
        change: crate::registrar::shared::Change,
    },
}

impl Op {
    /// The metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Ban { .. } => "ban",
            Op::Unban { .. } => "unban",
            Op::ListAdd { .. } => "list_add",
            Op::ListDel { .. } => "list_del",
            Op::UserAdd { .. } => "user_add",
            Op::UserDel { .. } => "user_del",
            Op::Location { .. } => "location",
        }
    }

    fn share(&self) -> Share {
        match self {
            Op::Ban { .. } | Op::Unban { .. } => Share::Bans,
            Op::ListAdd { .. } | Op::ListDel { .. } => Share::Lists,
            Op::UserAdd { .. } | Op::UserDel { .. } => Share::Users,
            Op::Location { .. } => Share::Registrations,
        }
    }
}

const CHANNEL: &str = "sipfw:events";
const FINGERPRINT_KEY: &str = "sipfw:secret-fingerprint";
const USERS_KEY: &str = "sipfw:users";
/// Random, set by the first node that finds Redis without it: changes when Redis lost its
/// data.
const EPOCH_KEY: &str = "sipfw:epoch";
/// How long a node is listed after its last heartbeat.
pub const HEARTBEAT_TTL: Duration = Duration::from_secs(15);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(5);
/// Changes queued while Redis is unreachable; past it they are counted and dropped (still
/// enforced locally, and in the local state database).
pub const OUTBOX: usize = 65_536;

fn ban_key(ip: IpAddr) -> String {
    format!("sipfw:ban:{ip}")
}

fn list_key(list: List) -> String {
    format!("sipfw:list:{}", list.name())
}

fn user_field(user: &str, domain: &str) -> String {
    format!("{user}@{domain}")
}

fn location_key(aor: &str) -> String {
    format!("sipfw:loc:{aor}")
}

fn node_key(node: &str) -> String {
    format!("sipfw:node:{node}")
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Where the enforcer and the admin API hand local changes to the cluster task.
#[derive(Clone)]
pub struct Outbox {
    tx: tokio::sync::mpsc::Sender<Op>,
    share: Vec<Share>,
    metrics: metrics::ClusterMetrics,
}

impl Outbox {
    /// Queue a local change for Redis. Never blocks: at the bound the change is counted
    /// (`sipfw_cluster_events_total{dir="dropped"}`), logged, and stays local.
    pub fn send(&self, op: Op) {
        if !self.share.contains(&op.share()) {
            return;
        }
        let kind = op.kind();
        tracing::debug!(kind, "cluster: queued");
        if let Err(e) = self.tx.try_send(op) {
            self.metrics.event(kind, "dropped");
            metrics::warn_limited(&format!(
                "cluster queue: {e}; a {kind} stays on this node only"
            ));
        }
    }
}

/// What `status` shows of the cluster.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClusterView {
    pub node: String,
    pub connected: bool,
    /// Nodes with a live heartbeat (this one included), sorted.
    pub nodes: Vec<String>,
    /// The Redis server in use (host:port or socket; the primary Sentinels named).
    #[serde(default)]
    pub redis: String,
}

/// The cluster task's handles.
pub struct Cluster {
    pub config: ClusterConfig,
    pub node: String,
    endpoint: endpoint::Endpoint,
    rx: tokio::sync::mpsc::Receiver<Op>,
    pub metrics: metrics::ClusterMetrics,
    pub view: Arc<Mutex<ClusterView>>,
    /// The MAC keys, the fingerprints and the checks of what comes from Redis.
    pub trust: trust::Trust,
}

/// A configuration that cannot form a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("[cluster] redis = {0:?}: {1}")]
    Url(String, redis::RedisError),
    #[error(
        "[cluster] needs [auth] secret, the same on every node: Record-Route stamps and the \
         cluster's records made on one node must verify on the others"
    )]
    NoSecret,
    #[error(
        "[cluster] refused: this node's [auth] secret differs from the cluster's (Redis holds \
         another fingerprint under {FINGERPRINT_KEY}); give every node the same secret"
    )]
    SecretMismatch,
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("the Sentinels name another primary now: {0}")]
    PrimaryMoved(String),
}

impl Cluster {
    /// Check the config and make the outbox the enforcer writes to; nothing is connected yet.
    /// `domains`: `[sip] domains` (a subscriber from Redis must be in one of them).
    pub fn new(
        config: &ClusterConfig,
        keys: &crate::auth::keys::KeyRing,
        domains: &[String],
        registry: &prometheus::Registry,
    ) -> Result<(Cluster, Outbox), ClusterError> {
        if !keys.configured() {
            return Err(ClusterError::NoSecret);
        }
        let endpoint = endpoint::Endpoint::open(config.redis.as_str())
            .map_err(|e| ClusterError::Url(endpoint::redact(&config.redis), e))?;
        let (tx, rx) = tokio::sync::mpsc::channel(OUTBOX);
        let metrics = metrics::ClusterMetrics::register(registry);
        for r in trust::Reject::ALL {
            metrics.rejected.with_label_values(&[r.label()]);
        }
        let node = config.node_name();
        let outbox = Outbox {
            tx,
            share: config.share.clone(),
            metrics: metrics.clone(),
        };
        Ok((
            Cluster {
                config: config.clone(),
                view: Arc::new(Mutex::new(ClusterView {
                    node: node.clone(),
                    ..Default::default()
                })),
                node,
                endpoint,
                rx,
                metrics,
                trust: trust::Trust::new(keys, domains),
            },
            outbox,
        ))
    }
}

/// Where remote changes are applied.
pub struct Target {
    pub enforcer: Arc<Mutex<Enforcer>>,
    pub proxy: Option<Arc<crate::proxy::Proxy>>,
    pub metrics: metrics::ClusterMetrics,
    /// The state database: the outbox while cut off, the marks of cluster bans.
    pub store: Option<Arc<crate::state::Store>>,
    /// Marks not yet written: (address, known to the cluster).
    pub marks: Mutex<Vec<(IpAddr, bool)>>,
}

impl Target {
    fn mark(&self, ip: IpAddr, on: bool) {
        if let Ok(mut m) = self.marks.lock()
            && m.len() < OUTBOX
        {
            m.push((ip, on));
        }
    }

    /// Write the pending marks in one commit.
    fn flush_marks(&self) {
        let Some(store) = &self.store else { return };
        let marks = match self.marks.lock() {
            Ok(mut m) => std::mem::take(&mut *m),
            Err(_) => return,
        };
        if marks.is_empty() {
            return;
        }
        // Last word wins per address.
        let mut last: HashMap<IpAddr, bool> = HashMap::new();
        for (ip, on) in marks {
            last.insert(ip, on);
        }
        let on: Vec<IpAddr> = last.iter().filter(|e| *e.1).map(|e| *e.0).collect();
        let off: Vec<IpAddr> = last.iter().filter(|e| !*e.1).map(|e| *e.0).collect();
        if let Err(e) = tokio::task::block_in_place(|| store.set_cluster_bans(&on, &off)) {
            metrics::warn_limited(&format!("cluster: cannot record cluster bans: {e}"));
        }
    }
}

impl Target {
    /// Apply a change made on another node: state database, memory, maps; never re-published.
    fn apply(&self, op: &Op) {
        if let Op::Location { change } = op {
            // The proxy checks the binding's next hop as it checks a request's.
            if let Some(p) = &self.proxy
                && !p.location_remote(change)
            {
                trust::refuse(&self.metrics, trust::Reject::Binding, "a binding");
            }
            return;
        }
        let r: anyhow::Result<()> = tokio::task::block_in_place(|| {
            let mut e = self
                .enforcer
                .lock()
                .map_err(|_| anyhow::anyhow!("internal state poisoned"))?;
            match op {
                Op::Ban { ban } => {
                    e.cluster_ban(ban)?;
                    self.mark(ban.ip, true);
                }
                Op::Unban { ip } => {
                    e.cluster_unban(*ip)?;
                    self.mark(*ip, false);
                }
                Op::ListAdd { list, net } => {
                    e.cluster_list(*list, net, true)?;
                }
                Op::ListDel { list, net } => {
                    e.cluster_list(*list, net, false)?;
                }
                Op::UserAdd { user } => {
                    e.store().put_user(user)?;
                    if let Some(p) = &self.proxy {
                        p.add_user(user);
                    }
                }
                Op::UserDel { user, domain } => {
                    e.store().del_user(user, domain)?;
                    if let Some(p) = &self.proxy {
                        p.remove_user(user, domain);
                    }
                }
                Op::Location { .. } => {}
            }
            Ok(())
        });
        if let Err(e) = r {
            // Counted; logged at most every 10 s (a storm of refusals is not a log storm).
            self.metrics.event(op.kind(), "failed");
            metrics::warn_limited(&format!("cannot apply a cluster {}: {e:#}", op.kind()));
        }
    }
}

/// Follow the cluster until shutdown: reconnects on its own, queues while cut off. Returns
/// an error only for a node that must not join (a different secret).
pub async fn run(
    mut c: Cluster,
    target: Target,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut pending: Option<Op> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        match session(&mut c, &target, &mut pending, &mut shutdown).await {
            Ok(()) => {
                set_connected(&c, false);
                return Ok(());
            }
            Err(ClusterError::SecretMismatch) => {
                set_connected(&c, false);
                return Err(ClusterError::SecretMismatch.into());
            }
            Err(e) => {
                if connected(&c) {
                    warn!("cluster: lost Redis ({e}); enforcing local state, queueing changes");
                } else {
                    metrics::warn_limited(&format!("cluster: Redis unreachable: {e}"));
                }
                set_connected(&c, false);
            }
        }
        // Cut off: what is queued waits in the state database (a restart keeps it).
        spool(&mut c, &target, &mut pending);
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                op = c.rx.recv() => {
                    let Some(op) = op else { return Ok(()) };
                    pending = Some(op);
                    spool(&mut c, &target, &mut pending);
                }
                _ = shutdown.changed() => return Ok(()),
            }
        }
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

fn connected(c: &Cluster) -> bool {
    c.view.lock().is_ok_and(|v| v.connected)
}

fn set_connected(c: &Cluster, on: bool) {
    c.metrics.connected.set(i64::from(on));
    if let Ok(mut v) = c.view.lock() {
        v.connected = on;
    }
}

/// One connection's life: Ok(()) on shutdown, Err when Redis went away.
async fn session(
    c: &mut Cluster,
    target: &Target,
    pending: &mut Option<Op>,
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
) -> Result<(), ClusterError> {
    let (mut conn, client) = connect(c).await?;
    // Subscribed before the set is loaded: what is published meanwhile waits here.
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(CHANNEL).await?;
    let mut messages = pubsub.into_on_message();

    // What was queued while cut off goes out first (the state database's outbox, oldest
    // first, then memory), then the full set comes in.
    unspool(c, &mut conn, target).await?;
    if let Some(op) = pending.take() {
        push(c, &mut conn, target, op, pending).await?;
    }
    while let Ok(op) = c.rx.try_recv() {
        push(c, &mut conn, target, op, pending).await?;
    }
    load(c, &mut conn, target).await?;
    // REGISTERs taken here while the set loaded are queued, not in what was loaded: their
    // bindings go back into the cache the load replaced, then out to Redis.
    while let Ok(op) = c.rx.try_recv() {
        if let Op::Location {
            change: crate::registrar::shared::Change::Put { binding, .. },
        } = &op
            && binding.node == c.node
        {
            target.apply(&op);
        }
        push(c, &mut conn, target, op, pending).await?;
    }
    set_connected(c, true);
    info!(node = c.node, "cluster: connected to Redis, state loaded");
    heartbeat(c, &mut conn, &client).await?;

    let mut beat = tokio::time::interval(HEARTBEAT_EVERY);
    beat.tick().await;
    loop {
        tokio::select! {
            msg = messages.next() => {
                let Some(msg) = msg else {
                    return Err(redis::RedisError::from((redis::ErrorKind::Io, "subscription closed")).into());
                };
                let payload: Vec<u8> = msg.get_payload_bytes().to_vec();
                receive(c, target, &payload);
            }
            op = c.rx.recv() => {
                let Some(op) = op else { return Ok(()) };
                push(c, &mut conn, target, op, pending).await?;
            }
            _ = beat.tick() => {
                target.flush_marks();
                heartbeat(c, &mut conn, &client).await?
            }
            _ = shutdown.changed() => return Ok(()),
        }
    }
}

/// A published event from another node: applied when [`trust::Trust::event`] takes it.
fn receive(c: &Cluster, target: &Target, payload: &[u8]) {
    let ev = match c.trust.event(payload, unix_ms()) {
        Ok(ev) => ev,
        Err(why) => return trust::refuse(&c.metrics, why, "an event"),
    };
    if ev.node == c.node || !c.config.shares(ev.op.share()) {
        return;
    }
    let lag = unix_ms().saturating_sub(ev.sent_ms) as f64 / 1000.0;
    c.metrics.lag.set(lag);
    c.metrics.event(ev.op.kind(), "in");
    target.apply(&ev.op);
}

/// Write one local change to Redis and publish it. On failure the change is kept in
/// `pending` and goes out first after reconnecting.
async fn push(
    c: &Cluster,
    conn: &mut redis::aio::ConnectionManager,
    target: &Target,
    op: Op,
    pending: &mut Option<Op>,
) -> Result<(), ClusterError> {
    if let Err((op, e)) = send(c, conn, target, op).await {
        *pending = Some(op);
        return Err(e);
    }
    Ok(())
}

/// Write one change to Redis and publish it; on failure the change comes back.
async fn send(
    c: &Cluster,
    conn: &mut redis::aio::ConnectionManager,
    target: &Target,
    op: Op,
) -> Result<(), (Op, ClusterError)> {
    let kind = op.kind();
    tracing::debug!(kind, "cluster: pushing");
    let ev = Event {
        node: c.node.clone(),
        sent_ms: unix_ms(),
        op,
    };
    let Ok(json) = serde_json::to_string(&ev) else {
        return Ok(());
    };
    let mut p = redis::pipe();
    p.atomic();
    if !stage(c, &mut p, &ev, &json) {
        return Ok(());
    }
    p.publish(CHANNEL, c.trust.seal(&trust::Place::event(), &json))
        .ignore();
    match p.query_async::<()>(conn).await {
        Ok(()) => {
            c.metrics.event(kind, "out");
            match &ev.op {
                Op::Ban { ban } => target.mark(ban.ip, true),
                Op::Unban { ip } => target.mark(*ip, false),
                _ => {}
            }
            Ok(())
        }
        Err(e) => Err((ev.op, e.into())),
    }
}

/// Put one change's write to its key (sealed, [`trust`]) into `p`; false when there is
/// nothing to share (expired already).
fn stage(c: &Cluster, p: &mut redis::Pipeline, ev: &Event, json: &str) -> bool {
    let t = &c.trust;
    match &ev.op {
        Op::Ban { ban } => {
            let now = crate::enforce::unix_now();
            match ban.expires_unix {
                Some(end) if end <= now => {
                    // Already over: nothing to share.
                    return false;
                }
                Some(end) => {
                    let v = t.seal(&trust::Place::ban(ban.ip), json);
                    p.set_ex(ban_key(ban.ip), v, end - now).ignore()
                }
                None => p
                    .set(ban_key(ban.ip), t.seal(&trust::Place::ban(ban.ip), json))
                    .ignore(),
            };
        }
        Op::Unban { ip } => {
            p.del(ban_key(*ip)).ignore();
        }
        Op::ListAdd { list, net } => {
            let by = serde_json::json!({ "node": c.node }).to_string();
            let v = t.seal(&trust::Place::list(*list, net), &by);
            p.hset(list_key(*list), net.to_string(), v).ignore();
        }
        Op::ListDel { list, net } => {
            p.hdel(list_key(*list), net.to_string()).ignore();
        }
        Op::UserAdd { user } => {
            // Hashes only leave the node (the CLI sends no password; this makes sure).
            let mut user = user.clone();
            user.password = None;
            let Ok(u) = serde_json::to_string(&user) else {
                return false;
            };
            let v = t.seal(&trust::Place::user(&user.user, &user.domain), &u);
            p.hset(USERS_KEY, user_field(&user.user, &user.domain), v)
                .ignore();
        }
        Op::UserDel { user, domain } => {
            p.hdel(USERS_KEY, user_field(user, domain)).ignore();
        }
        Op::Location { change } => {
            use crate::registrar::shared::{Change, contact_field};
            match change {
                Change::Put { aor, binding } => {
                    let now = crate::enforce::unix_now();
                    if binding.expires_unix <= now {
                        return false;
                    }
                    let Ok(b) = serde_json::to_string(binding) else {
                        return false;
                    };
                    let key = location_key(aor);
                    let ttl = binding.expires_unix - now;
                    let v = t.seal(&trust::Place::binding(aor, &binding.contact), &b);
                    p.hset(&key, contact_field(&binding.contact), v).ignore();
                    // The key lives as long as its latest binding (NX: a new key; GT: a
                    // later expiry than the current one).
                    p.cmd("EXPIRE").arg(&key).arg(ttl).arg("NX").ignore();
                    p.cmd("EXPIRE").arg(&key).arg(ttl).arg("GT").ignore();
                }
                Change::Remove { aor, contact } => {
                    p.hdel(location_key(aor), contact_field(contact)).ignore();
                }
                Change::Clear { aor } => {
                    p.del(location_key(aor)).ignore();
                }
            }
        }
    }
    true
}

/// Cut off: move the change that failed and everything queued in memory into the state
/// database's outbox (one commit). Without a state database they wait in memory.
fn spool(c: &mut Cluster, target: &Target, pending: &mut Option<Op>) {
    target.flush_marks();
    let Some(store) = &target.store else { return };
    let mut ops: Vec<Op> = pending.take().into_iter().collect();
    while let Ok(op) = c.rx.try_recv() {
        ops.push(op);
    }
    if ops.is_empty() {
        return;
    }
    let items: Vec<Vec<u8>> = ops
        .iter()
        .filter_map(|op| serde_json::to_vec(op).ok())
        .collect();
    match tokio::task::block_in_place(|| store.outbox_append(&items, OUTBOX)) {
        Ok(n) => {
            for op in ops.iter().skip(n) {
                c.metrics.event(op.kind(), "dropped");
            }
            if n < items.len() {
                metrics::warn_limited(&format!(
                    "cluster outbox full ({OUTBOX}): {} changes stay on this node only",
                    items.len() - n
                ));
            }
        }
        Err(e) => {
            for op in &ops {
                c.metrics.event(op.kind(), "dropped");
            }
            metrics::warn_limited(&format!(
                "cluster: cannot queue changes in the state database ({e}); they stay on this node only"
            ));
        }
    }
}

/// Send what the state database's outbox holds, oldest first; each change is removed once
/// Redis has it.
async fn unspool(
    c: &Cluster,
    conn: &mut redis::aio::ConnectionManager,
    target: &Target,
) -> Result<(), ClusterError> {
    let Some(store) = target.store.clone() else {
        return Ok(());
    };
    loop {
        let items = match tokio::task::block_in_place(|| store.outbox_items(512)) {
            Ok(items) => items,
            Err(e) => {
                metrics::warn_limited(&format!("cluster: cannot read the outbox: {e}"));
                return Ok(());
            }
        };
        if items.is_empty() {
            return Ok(());
        }
        let mut sent = Vec::with_capacity(items.len());
        let mut failed = None;
        for (key, bytes) in items {
            match serde_json::from_slice::<Op>(&bytes) {
                Ok(op) => {
                    if let Err((_, e)) = send(c, conn, target, op).await {
                        failed = Some(e);
                        break;
                    }
                }
                Err(_) => c.metrics.event("malformed", "out"),
            }
            sent.push(key);
        }
        if let Err(e) = tokio::task::block_in_place(|| store.outbox_remove(&sent)) {
            metrics::warn_limited(&format!("cluster: cannot clear the outbox: {e}"));
            return Ok(());
        }
        if let Some(e) = failed {
            return Err(e);
        }
    }
}

/// The addresses with a ban queued in the state database's outbox (local, not yet in
/// Redis: a full load must not lift them).
fn queued_bans(store: &crate::state::Store) -> std::collections::HashSet<IpAddr> {
    let mut out = std::collections::HashSet::new();
    if let Ok(items) = store.outbox_items(OUTBOX) {
        for (_, bytes) in items {
            if let Ok(Op::Ban { ban }) = serde_json::from_slice::<Op>(&bytes) {
                out.insert(ban.ip);
            }
        }
    }
    out
}

/// The full set from Redis into this node.
async fn load(
    c: &Cluster,
    conn: &mut redis::aio::ConnectionManager,
    target: &Target,
) -> Result<(), ClusterError> {
    let ep = epoch(conn, target.store.as_deref()).await?;
    if c.config.shares(Share::Bans) {
        // What this node learnt of the cluster's bans, recorded before it is compared.
        target.flush_marks();
        load_bans(
            conn,
            &c.metrics,
            &target.enforcer,
            target.store.as_deref(),
            &ep,
            &c.trust,
        )
        .await?;
        target.flush_marks();
    }
    if c.config.shares(Share::Lists) {
        for list in [List::Allow, List::Deny] {
            let nets: HashMap<String, String> = conn.hgetall(list_key(list)).await?;
            for (n, v) in &nets {
                match c.trust.list_entry(list, n, v) {
                    Ok(net) => target.apply(&Op::ListAdd { list, net }),
                    Err(why) => trust::refuse(&c.metrics, why, "a list entry"),
                }
            }
        }
    }
    if c.config.shares(Share::Registrations)
        && let Some(proxy) = &target.proxy
    {
        if !ep.same {
            // Redis lost its data (or this node never loaded from this Redis): the
            // registrations whose flow we hold are written back first, or the reload below
            // would take them for removed elsewhere.
            let own = tokio::task::block_in_place(|| proxy.location_own());
            for (aor, binding) in own {
                let change = crate::registrar::shared::Change::Put { aor, binding };
                send(c, conn, target, Op::Location { change })
                    .await
                    .map_err(|(_, e)| e)?;
            }
        }
        let all = load_locations(conn, c).await?;
        info!(bindings = all.len(), "cluster: registrations loaded");
        let refused = tokio::task::block_in_place(|| proxy.location_reload(&all));
        for _ in 0..refused {
            trust::refuse(&c.metrics, trust::Reject::Binding, "a binding");
        }
    }
    if let (Some(s), Some(current)) = (&target.store, &ep.current)
        && let Err(e) = tokio::task::block_in_place(|| s.set_cluster_meta("epoch", current))
    {
        metrics::warn_limited(&format!("cluster: cannot record Redis's epoch: {e}"));
    }
    if c.config.shares(Share::Users) {
        let users: HashMap<String, String> = conn.hgetall(USERS_KEY).await?;
        for (field, u) in &users {
            match c.trust.user(field, u) {
                Ok(user) => target.apply(&Op::UserAdd { user }),
                Err(why) => trust::refuse(&c.metrics, why, "a subscriber"),
            }
        }
    }
    Ok(())
}

/// Every registration in Redis (live ones; at most
/// [`crate::registrar::shared::MAX_REMOTE_BINDINGS`]).
async fn load_locations(
    conn: &mut redis::aio::ConnectionManager,
    c: &Cluster,
) -> Result<Vec<(String, crate::registrar::shared::SharedBinding)>, ClusterError> {
    use crate::registrar::shared::MAX_REMOTE_BINDINGS;
    let mut keys: Vec<String> = Vec::new();
    {
        let mut it = conn.scan_match::<_, String>("sipfw:loc:*").await?;
        while let Some(k) = it.next().await {
            keys.push(k?);
        }
    }
    let now = crate::enforce::unix_now();
    let mut all = Vec::new();
    for key in keys {
        let fields: HashMap<String, String> = conn.hgetall(&key).await?;
        for (field, v) in &fields {
            match c.trust.binding(&key, field, v) {
                Ok((aor, b)) if b.expires_unix > now => all.push((aor, b)),
                Ok(_) => {}
                Err(why) => trust::refuse(&c.metrics, why, "a binding"),
            }
            if all.len() >= MAX_REMOTE_BINDINGS {
                metrics::warn_limited(
                    "cluster: too many registrations in Redis; the rest not loaded",
                );
                return Ok(all);
            }
        }
    }
    Ok(all)
}

/// Redis's epoch ([`EPOCH_KEY`], set here if Redis has none) and whether it is the one
/// this node last loaded from: then Redis kept its data, and what it lacks was deleted.
struct Epoch {
    current: Option<String>,
    same: bool,
}

async fn epoch(
    conn: &mut redis::aio::ConnectionManager,
    store: Option<&crate::state::Store>,
) -> Result<Epoch, ClusterError> {
    let Some(s) = store else {
        return Ok(Epoch {
            current: None,
            same: false,
        });
    };
    let mut r = [0u8; 16];
    let fresh = getrandom::getrandom(&mut r)
        .map(|()| r.iter().map(|b| format!("{b:02x}")).collect::<String>())
        .unwrap_or_else(|_| unix_ms().to_string());
    let _: Option<String> = redis::cmd("SET")
        .arg(EPOCH_KEY)
        .arg(&fresh)
        .arg("NX")
        .query_async(conn)
        .await?;
    let current: Option<String> = conn.get(EPOCH_KEY).await?;
    let last = tokio::task::block_in_place(|| s.cluster_meta("epoch"))
        .ok()
        .flatten();
    Ok(Epoch {
        same: current.is_some() && last == current,
        current,
    })
}

/// Every ban in Redis into the enforcer, and the reconciliation: bans this node knew Redis
/// had, that Redis no longer has and that are not queued here, are lifted (deleted
/// elsewhere while we were cut off). How many bans were loaded.
async fn load_bans(
    conn: &mut redis::aio::ConnectionManager,
    metrics: &metrics::ClusterMetrics,
    enforcer: &Mutex<Enforcer>,
    store: Option<&crate::state::Store>,
    ep: &Epoch,
    checks: &trust::Trust,
) -> Result<usize, ClusterError> {
    let mut keys: Vec<String> = Vec::new();
    {
        let mut it = conn.scan_match::<_, String>("sipfw:ban:*").await?;
        while let Some(k) = it.next().await {
            keys.push(k?);
        }
    }
    let mut bans = Vec::new();
    for chunk in keys.chunks(512) {
        let vals: Vec<Option<String>> = redis::cmd("MGET").arg(chunk).query_async(conn).await?;
        for (key, v) in chunk.iter().zip(vals) {
            let Some(v) = v else { continue };
            match checks.ban(key, &v) {
                Ok(ban) => bans.push(ban),
                Err(why) => trust::refuse(metrics, why, "a ban"),
            }
        }
    }
    let n = bans.len();
    let mut lifted = 0;
    let epoch = &ep.current;
    tokio::task::block_in_place(|| match enforcer.lock() {
        Ok(mut e) => {
            for b in &bans {
                if let Err(err) = e.cluster_ban(b) {
                    metrics.event("ban", "failed");
                    metrics::warn_limited(&format!(
                        "cannot apply a cluster ban of {}: {err}",
                        b.ip
                    ));
                }
            }
            let Some(s) = store else { return };
            // The same data as last time: what it lacks was deleted, not lost.
            let known = if ep.same {
                s.cluster_bans().unwrap_or_default()
            } else {
                Vec::new()
            };
            let queued = queued_bans(s);
            let now: std::collections::HashSet<IpAddr> = bans.iter().map(|b| b.ip).collect();
            let mut off = Vec::new();
            for ip in known {
                if now.contains(&ip) || queued.contains(&ip) {
                    continue;
                }
                match e.cluster_unban(ip) {
                    Ok(true) => {
                        lifted += 1;
                        metrics.event("unban", "reconciled");
                    }
                    Ok(false) => {}
                    Err(err) => {
                        metrics.event("unban", "failed");
                        metrics::warn_limited(&format!(
                            "cannot lift the ban of {ip} Redis no longer has: {err}"
                        ));
                        continue;
                    }
                }
                off.push(ip);
            }
            let on: Vec<IpAddr> = bans.iter().map(|b| b.ip).collect();
            let r = s.set_cluster_bans(&on, &off).and_then(|()| match epoch {
                Some(ep) => s.set_cluster_meta("epoch", ep),
                None => Ok(()),
            });
            if let Err(err) = r {
                metrics::warn_limited(&format!("cluster: cannot record cluster bans: {err}"));
            }
        }
        Err(_) => error!("cluster: internal state poisoned"),
    });
    info!(bans = n, lifted, "cluster: bans loaded");
    Ok(n)
}

/// At start, before XDP is attached and the listeners open: check the secret and load the
/// cluster's bans, so a node never serves without them. Redis unreachable within `limit`:
/// the node starts on its local state (the cluster task catches up when Redis answers).
pub async fn preload(
    c: &Cluster,
    enforcer: &Mutex<Enforcer>,
    limit: Duration,
) -> Result<(), ClusterError> {
    let work = async {
        let (mut conn, _) = connect(c).await?;
        if c.config.shares(Share::Bans) {
            // The state database's handle outlives the lock: the load takes the lock itself.
            let store = enforcer.lock().ok().map(|e| e.store_handle());
            let ep = epoch(&mut conn, store.as_deref()).await?;
            let (m, t) = (&c.metrics, &c.trust);
            load_bans(&mut conn, m, enforcer, store.as_deref(), &ep, t).await?;
        }
        Ok::<_, ClusterError>(())
    };
    match tokio::time::timeout(limit, work).await {
        Ok(Err(ClusterError::SecretMismatch)) => Err(ClusterError::SecretMismatch),
        Ok(Err(e)) => {
            warn!("cluster: Redis unreachable at start ({e}): starting on the local state");
            Ok(())
        }
        Err(_) => {
            warn!("cluster: Redis did not answer within {limit:?}: starting on the local state");
            Ok(())
        }
        Ok(Ok(())) => Ok(()),
    }
}

/// A command connection to the primary (looked up through the Sentinels, if any) and its
/// client, after the secret check: a node with another secret takes nothing and gives
/// nothing.
async fn connect(
    c: &Cluster,
) -> Result<(redis::aio::ConnectionManager, redis::Client), ClusterError> {
    let client = c.endpoint.primary().await?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(1);
    let mut conn = redis::aio::ConnectionManager::new_with_config(client.clone(), config).await?;
    let ours = c.trust.fingerprints();
    let set: bool = redis::cmd("SET")
        .arg(FINGERPRINT_KEY)
        .arg(&ours)
        .arg("NX")
        .query_async::<Option<String>>(&mut conn)
        .await?
        .is_some();
    if !set {
        let theirs: Option<String> = conn.get(FINGERPRINT_KEY).await?;
        match c.trust.join(theirs.as_deref().unwrap_or_default()) {
            trust::Join::Keep => {}
            trust::Join::Write => {
                info!("cluster: the secrets' fingerprints in Redis follow this node's roll");
                let _: () = conn.set(FINGERPRINT_KEY, &ours).await?;
            }
            trust::Join::Refuse => {
                error!("{}", ClusterError::SecretMismatch);
                return Err(ClusterError::SecretMismatch);
            }
        }
    }
    if let Ok(mut v) = c.view.lock() {
        v.redis = endpoint::address(&client);
    }
    Ok((conn, client))
}

/// This node's heartbeat, and the nodes seen recently. Under Sentinels, the session ends
/// when they name another primary than `client`'s (a failover): [`run`] reconnects there.
async fn heartbeat(
    c: &Cluster,
    conn: &mut redis::aio::ConnectionManager,
    client: &redis::Client,
) -> Result<(), ClusterError> {
    if let Some(now) = c.endpoint.moved(client).await {
        info!(
            primary = now,
            "cluster: the Sentinels moved the primary; reconnecting"
        );
        return Err(ClusterError::PrimaryMoved(now));
    }
    let _: () = conn
        .set_ex(node_key(&c.node), unix_ms(), HEARTBEAT_TTL.as_secs())
        .await?;
    let mut nodes = Vec::new();
    {
        let mut it = conn.scan_match::<_, String>("sipfw:node:*").await?;
        while let Some(k) = it.next().await {
            if let Some(n) = k?.strip_prefix("sipfw:node:") {
                nodes.push(n.to_string());
            }
            if nodes.len() >= 1024 {
                break;
            }
        }
    }
    nodes.sort();
    nodes.dedup();
    if let Ok(mut v) = c.view.lock() {
        v.nodes = nodes;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_config(text: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
        crate::config::Config::from_toml(text, std::path::Path::new("test.toml"))
    }

    #[test]
    fn config_defaults_share_everything_and_absence_is_one_node() {
        let c = parse_config("[cluster]\nredis = \"redis://10.0.0.5:6379/0\"\nnode = \"edge-a\"\n")
            .unwrap();
        let cl = c.cluster.unwrap();
        assert_eq!(cl.node_name(), "edge-a");
        assert!(cl.shares(Share::Bans) && cl.shares(Share::Lists) && cl.shares(Share::Users));
        let c = parse_config("[cluster]\nredis = \"redis://r\"\nshare = [\"bans\"]\n").unwrap();
        let cl = c.cluster.unwrap();
        assert!(cl.shares(Share::Bans) && !cl.shares(Share::Users));
        assert!(!cl.node_name().is_empty(), "the host name by default");
        assert!(parse_config("").unwrap().cluster.is_none());
        assert!(parse_config("[cluster]\nredis = \"r\"\nbogus = 1\n").is_err());
    }

    /// `rediss://` needs the redis crate's rustls TLS (`tokio-rustls-comp`): without it the
    /// URL is refused ("can't connect with TLS, the feature is not enabled").
    #[test]
    fn rediss_urls_are_accepted() {
        let c = parse_config("[cluster]\nredis = \"rediss://10.0.0.5:6380/0\"\nnode = \"a\"\n")
            .unwrap()
            .cluster
            .unwrap();
        let keys = crate::auth::keys::KeyRing::from_config(Some(&"5a".repeat(32)), &[]).unwrap();
        let r = Cluster::new(&c, &keys, &[], &prometheus::Registry::new());
        assert!(r.is_ok(), "{:?}", r.err());
        let random = crate::auth::keys::KeyRing::from_config(None, &[]).unwrap();
        let r = Cluster::new(&c, &random, &[], &prometheus::Registry::new());
        assert!(
            matches!(r, Err(ClusterError::NoSecret)),
            "a random secret cannot be shared"
        );
    }

    /// The shipped files document `[cluster]`: default.toml's commented section, uncommented,
    /// parses and sets every key; example.toml's Sentinel URL opens.
    #[test]
    fn the_shipped_configs_document_the_cluster() {
        let default = include_str!("../../config/default.toml");
        let at = default
            .find("# [cluster]")
            .expect("default.toml documents [cluster]");
        let section: String = default[at..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with('[') || l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        let c = parse_config(&section)
            .unwrap()
            .cluster
            .expect("uncommented: a cluster");
        assert!(c.redis.starts_with("redis+sentinel://"), "{section}");
        assert_eq!(c.node.as_deref(), Some("edge-a"));
        assert_eq!(c.share, all_shared());
        assert!(c.path.is_some(), "{section}");
        let example = parse_config(include_str!("../../config/example.toml")).unwrap();
        let c = example.cluster.expect("example.toml has a [cluster]");
        assert!(example.auth.secret.is_some());
        assert!(matches!(
            endpoint::Endpoint::open(&c.redis),
            Ok(endpoint::Endpoint::Sentinel { .. })
        ));
    }

    #[test]
    fn events_round_trip() {
        let ev = Event {
            node: "edge-a".into(),
            sent_ms: 1,
            op: Op::Ban {
                ban: BanRecord {
                    ip: "192.0.2.1".parse().unwrap(),
                    reason: "scanner: x".into(),
                    created_unix: 5,
                    expires_unix: Some(10),
                },
            },
        };
        let j = serde_json::to_string(&ev).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&j).unwrap(), ev);
    }
}
