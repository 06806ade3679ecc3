//! `[cluster]`: several edges, one policy. Bans, allow/deny lists and subscribers made on
//! any node are written to Redis and published; every node applies them to its own state
//! database, memory and XDP maps.
//!
//! Redis is the engine; we write no replication of our own. Layout (prefix `sipfw:`); every
//! value and event is sealed with a MAC bound to its key and field ([`trust`]: what a node
//! takes from Redis and what it checks first):
//! - `sipfw:ban:<ip>`: the [`schema::Event`] that made the ban (reason, origin node, expiry), with the
//!   ban's time left as the key's TTL, so Redis forgets expired bans by itself;
//! - `sipfw:list:allow`, `sipfw:list:deny`: hashes prefix -> the node that added it;
//! - `sipfw:users`: hash `user@domain` -> the subscriber entry (digest hashes only);
//! - `sipfw:loc:<aor>`: hash contact -> the binding (expiry, the node holding the flow, its
//!   Path URI; [`crate::registrar::shared`]), the key's TTL the latest expiry;
//! - `sipfw:node:<name>`: heartbeat, TTL `heartbeat::HEARTBEAT_TTL`;
//! - `sipfw:feed:<id>`: a threat feed's last load (entries with their expiry, last ok,
//!   last error), written by the one node fetching it, which holds `sipfw:feed-lease:<id>`
//!   ([`feeds`]: one node fetches, the others receive; the id is the feed's name and a
//!   digest of its URL and format, [`feeds::shared_id`]);
//! - `sipfw:secret-fingerprint`: derived from `[auth] secret` and `previous_secrets`
//!   ([`trust::fingerprint`], never a secret), so nodes whose stamps and records
//!   would not verify on each other refuse to join, and a secret is rolled node by node
//!   ([`trust::Trust::join`]);
//! - channel `sipfw:events`: every change, as an [`schema::Event`].
//!
//! Order on (re)connect: subscribe, push what was queued while cut off, load the full set,
//! then follow the channel. Messages published while the set loads wait in the subscription,
//! and every change is idempotent, so no ban known to Redis goes unenforced.
//!
//! Cut off, the task moves what is queued into the state database (`cluster_outbox`, in
//! order, bounded by [`outbox::OUTBOX`]), so changes made during an outage survive a restart made
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
//!
//! Files, one job each (a file uses those below it and this one, never one above it):
//!
//! | file | what it decides |
//! |---|---|
//! | `mod.rs` | `[cluster]` ([`ClusterConfig`]), the task's handles ([`Cluster`]), [`run`] (reconnect, back off, spool while cut off), [`preload`] at start |
//! | `session.rs` | one connection: connect and the secret check, subscribe, push what waited, load, follow the channel, send, beat |
//! | `load.rs` | the full load on (re)connect and the reconciliation of bans deleted elsewhere (the epoch) |
//! | `outbox.rs` | the queue of local changes, spooled to the state database while cut off, unspooled on reconnect |
//! | `write.rs` | what one change writes to Redis (record, TTL, event) |
//! | `feeds.rs` | which node fetches each threat feed (the lease), its loads written, published and read |
//! | `heartbeat.rs` | this node's heartbeat, the nodes alive, a primary moved by the Sentinels |
//! | `apply.rs` | what a change from another node does here; the marks of the bans Redis has |
//! | `trust.rs` | what a node takes from Redis and what it checks first (MACs, freshness, content) |
//! | `schema.rs` | the key names, the channel, the change ([`schema::Event`], [`schema::Op`]) |
//! | `endpoint.rs` | the Redis URL, Sentinels |
//! | `metrics.rs` | `sipfw_cluster_*`, the cluster's rate-limited warnings |
//! | `publish.rs` | the outbox as the enforcer's `Publish` |

pub mod apply;
pub mod endpoint;
pub mod feeds;
mod heartbeat;
mod load;
pub mod metrics;
pub mod outbox;
mod publish;
pub mod schema;
mod session;
pub mod trust;
mod write;

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::enforce::Enforcer;
use apply::Target;
use outbox::Outbox;
use schema::{FINGERPRINT_KEY, Op};

/// What is shared (`share = [...]`, default all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Share {
    Bans,
    Lists,
    Users,
    /// Registrations (location), with Path (RFC 3327).
    Registrations,
    /// Threat feeds (`[[feeds]]`): one node fetches each, the others take its load.
    Feeds,
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
        Share::Feeds,
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
    /// The threat feeds shared ([`Cluster::share_feeds`]).
    pub feeds: Option<feeds::FeedLink>,
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
        let metrics = metrics::ClusterMetrics::register(registry);
        for r in trust::Reject::ALL {
            metrics.rejected.with_label_values(&[r.label()]);
        }
        let node = config.node_name();
        let (outbox, rx) = Outbox::channel(config.share.clone(), metrics.clone());
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
                feeds: None,
            },
            outbox,
        ))
    }

    /// Share the threat feeds `shared` (`share` holding `feeds`): where the feeds task meets
    /// this one, or `None` when they are not shared (every node fetches its own).
    pub fn share_feeds(
        &mut self,
        shared: Vec<feeds::SharedFeed>,
    ) -> Option<Arc<crate::feeds::shared::Exchange>> {
        if shared.is_empty() || !self.config.shares(Share::Feeds) {
            return None;
        }
        let alone_after = feeds::LEASE + heartbeat::HEARTBEAT_EVERY;
        let exchange = Arc::new(crate::feeds::shared::Exchange::new(alone_after));
        self.feeds = Some(feeds::FeedLink {
            exchange: exchange.clone(),
            feeds: shared,
        });
        Some(exchange)
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
        match session::session(&mut c, &target, &mut pending, &mut shutdown).await {
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
        outbox::spool(&mut c, &target, &mut pending);
        let sleep = tokio::time::sleep(backoff);
        tokio::pin!(sleep);
        loop {
            tokio::select! {
                _ = &mut sleep => break,
                op = c.rx.recv() => {
                    let Some(op) = op else { return Ok(()) };
                    pending = Some(op);
                    outbox::spool(&mut c, &target, &mut pending);
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
    if let Some(link) = &c.feeds {
        link.exchange.set_connected(on);
    }
    if let Ok(mut v) = c.view.lock() {
        v.connected = on;
    }
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
        let (mut conn, _) = session::connect(c).await?;
        if c.config.shares(Share::Bans) {
            // The state database's handle outlives the lock: the load takes the lock itself.
            let store = enforcer.lock().ok().map(|e| e.store_handle());
            let ep = load::epoch(&mut conn, store.as_deref()).await?;
            let (m, t) = (&c.metrics, &c.trust);
            load::load_bans(&mut conn, m, enforcer, store.as_deref(), &ep, t).await?;
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
}
