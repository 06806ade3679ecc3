//! Threat feeds in a cluster: one node fetches each feed, the others receive its load.
//!
//! A feed is shared by the nodes whose `[[feeds]]` entry has the same name, URL and format:
//! its keys in Redis and its events name it by [`shared_id`] (the name and a digest of the
//! URL and format), so a node whose entry of that name fetches from elsewhere, or reads
//! another format, neither takes the others' loads nor gives them its own.
//!
//! **Decides** who fetches: a per-feed lease in Redis (`sipfw:feed-lease:<id>` = the
//! holder's node name, for [`LEASE`]), taken with `SET NX` semantics and renewed by its holder
//! at every heartbeat in one script (take it if free, extend it if ours, else leave it). A
//! node holds a feed for [`LEASE`] less one heartbeat after its last renewal, so it stops
//! fetching before its lease can lapse in Redis; a node stopping gives its leases up, one
//! that is lost (killed, cut off) hands the fetching over within [`LEASE`] and a heartbeat,
//! and the new holder fetches one `refresh` after the last fetch it received. Two live nodes
//! never hold one lease.
//!
//! The holder writes each load (sealed, `sipfw:feed:<id>`) and publishes
//! [`Op::FeedLoad`]; the others read the record on the event and at every full load (start,
//! reconnect), bounded to [`MAX_LOAD_BYTES`], and hand it to the feeds task, which checks it
//! as hostile input and vets its entries locally (`crate::feeds::shared`). Cut off, a node
//! keeps the entries it has; cut off for longer than [`LEASE`] and a heartbeat (when no lease
//! of its own can be live), it fetches every feed itself until it is back, as it does when
//! Redis answers but refuses the lease's script (a user without `+eval`).

use std::{sync::Arc, time::Duration};

use super::{
    Cluster, ClusterError,
    heartbeat::{HEARTBEAT_EVERY, HEARTBEAT_TTL},
    metrics,
    schema::{CHANNEL, Event, Op, feed_key, feed_lease_key, unix_ms},
    trust,
};
use crate::feeds::{
    config::{FeedConfig, FeedFormat},
    shared::{Exchange, MAX_LOAD_BYTES},
};

/// How long a feed's lease lives in Redis after its holder's last renewal.
pub const LEASE: Duration = HEARTBEAT_TTL;

/// Take the lease if free, extend it if ours; 1 when this node holds it.
const LEASE_SCRIPT: &str = "local v = redis.call('GET', KEYS[1]) \
     if v == false then redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) return 1 end \
     if v == ARGV[1] then redis.call('PEXPIRE', KEYS[1], ARGV[2]) return 1 end \
     return 0";

/// Give the lease up if ours (delete it), so a node stopping hands the fetching over at once.
const RELEASE_SCRIPT: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
     return redis.call('DEL', KEYS[1]) end return 0";

/// The feeds this node shares and where it meets the feeds task.
pub struct FeedLink {
    pub exchange: Arc<Exchange>,
    pub feeds: Vec<SharedFeed>,
}

/// A feed as this node shares it: its name here (the feeds task's) and its id in the
/// cluster ([`shared_id`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedFeed {
    pub name: String,
    pub id: String,
}

impl SharedFeed {
    /// `cfg`'s feed as the cluster names it.
    pub fn of(cfg: &FeedConfig) -> SharedFeed {
        SharedFeed {
            name: cfg.name().to_string(),
            id: shared_id(cfg.name(), &cfg.url, cfg.format),
        }
    }
}

/// The id a feed named `name`, fetched from `url` in `format`, has in the cluster:
/// `<name>#<the first 8 bytes of SHA-256 over the URL and format, in hex>`.
///
/// ```
/// use sip_firewall::{cluster::feeds::shared_id, feeds::config::FeedFormat};
///
/// let id = shared_id("threats", "https://feeds.example/t.txt", FeedFormat::Cidr);
/// assert!(id.starts_with("threats#") && id.len() == "threats#".len() + 16);
/// assert_ne!(id, shared_id("threats", "https://feeds.example/t.txt", FeedFormat::Apiban));
/// ```
pub fn shared_id(name: &str, url: &str, format: FeedFormat) -> String {
    use sha2::{Digest as _, Sha256};
    let format = match format {
        FeedFormat::Apiban => "apiban",
        FeedFormat::Cidr => "cidr",
    };
    let digest = Sha256::new()
        .chain_update(url.as_bytes())
        .chain_update(b"\n")
        .chain_update(format.as_bytes())
        .finalize();
    format!("{name}#{}", crate::auth::digest::hex(&digest[..8]))
}

impl FeedLink {
    /// The feed the cluster names `id`.
    fn by_id(&self, id: &str) -> Option<&SharedFeed> {
        self.feeds.iter().find(|f| f.id == id)
    }

    /// The feed named `name` here.
    fn by_name(&self, name: &str) -> Option<&SharedFeed> {
        self.feeds.iter().find(|f| f.name == name)
    }
}

/// How long this node may fetch after Redis confirmed its lease: the lease less a heartbeat,
/// so it stops before another node can take the lease over.
pub fn held_for(confirmed: bool) -> Option<Duration> {
    confirmed.then(|| LEASE.saturating_sub(HEARTBEAT_EVERY))
}

/// Take or renew every feed's lease, then write the loads fetched here. A Redis that answers
/// but refuses the script (a user without `+eval`) does not end the session: this node then
/// fetches its feeds itself, as when cut off, and says so in the log.
pub(super) async fn lease(
    c: &Cluster,
    conn: &mut redis::aio::ConnectionManager,
) -> Result<(), ClusterError> {
    let Some(link) = &c.feeds else { return Ok(()) };
    for SharedFeed { name, id } in &link.feeds {
        let got = redis::cmd("EVAL")
            .arg(LEASE_SCRIPT)
            .arg(1)
            .arg(feed_lease_key(id))
            .arg(&c.node)
            .arg(LEASE.as_millis() as u64)
            .query_async::<i64>(conn)
            .await;
        let got = match got {
            Ok(got) => got,
            Err(e) if refused(&e) => {
                metrics::warn_limited(&format!(
                    "cluster: Redis refuses the feeds' lease ({e}): this node fetches its \
                     feeds itself (the Redis user needs +eval)"
                ));
                link.exchange.set_no_lease(true);
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        if got == 1 && !link.exchange.holds(name, std::time::Instant::now()) {
            tracing::info!(feed = %name, "cluster: this node fetches the feed now");
        }
        link.exchange.set_held(name, held_for(got == 1));
    }
    link.exchange.set_no_lease(false);
    write(c, conn).await
}

/// An error Redis answered (a refusal), not a connection lost.
fn refused(e: &redis::RedisError) -> bool {
    !(e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal())
}

/// On shutdown: the leases this node holds are given up (a node lost instead hands them
/// over when they lapse).
pub(super) async fn release(c: &Cluster, conn: &mut redis::aio::ConnectionManager) {
    let Some(link) = &c.feeds else { return };
    for SharedFeed { name, id } in &link.feeds {
        link.exchange.set_held(name, None);
        let released = redis::cmd("EVAL")
            .arg(RELEASE_SCRIPT)
            .arg(1)
            .arg(feed_lease_key(id))
            .arg(&c.node)
            .query_async::<i64>(conn)
            .await;
        if let Err(e) = released {
            tracing::debug!(feed = %name, "cluster: the feed's lease is left to lapse: {e}");
        }
    }
}

/// Write the loads fetched here and publish them; a load of a feed this node no longer
/// holds is dropped (its holder writes), one that fails waits for the next connection.
pub(super) async fn write(
    c: &Cluster,
    conn: &mut redis::aio::ConnectionManager,
) -> Result<(), ClusterError> {
    let Some(link) = &c.feeds else { return Ok(()) };
    for (name, mut load) in link.exchange.take_outgoing() {
        let Some(feed) = link.by_name(&name) else {
            continue;
        };
        if !link.exchange.holds(&name, std::time::Instant::now()) {
            continue;
        }
        let id = &feed.id;
        load.node.clone_from(&c.node);
        let ev = Event {
            node: c.node.clone(),
            sent_ms: unix_ms(),
            op: Op::FeedLoad { feed: id.clone() },
        };
        let Ok(json) = serde_json::to_string(&ev) else {
            continue;
        };
        let mut p = redis::pipe();
        p.atomic()
            .set(
                feed_key(id),
                c.trust.seal(&trust::Place::feed(id), &load.encode()),
            )
            .ignore()
            .publish(CHANNEL, c.trust.seal(&trust::Place::event(), &json))
            .ignore();
        if let Err(e) = p.query_async::<()>(conn).await {
            link.exchange.requeue(name, load);
            return Err(e.into());
        }
        c.metrics.event("feed_load", "out");
    }
    Ok(())
}

/// Read the load of the feed the cluster names `id` from Redis (at most [`MAX_LOAD_BYTES`])
/// and hand it to the feeds task; a feed this node does not share as `id` is not read.
pub(super) async fn pull(
    c: &Cluster,
    conn: &mut redis::aio::ConnectionManager,
    id: &str,
) -> Result<(), ClusterError> {
    let Some(link) = &c.feeds else { return Ok(()) };
    let Some(SharedFeed { name, id }) = link.by_id(id) else {
        return Ok(());
    };
    // The seal's prefix and tag come before the body: a few bytes more than the body's bound.
    let bound = MAX_LOAD_BYTES + 128;
    let value: Vec<u8> = redis::cmd("GETRANGE")
        .arg(feed_key(id))
        .arg(0)
        .arg(bound)
        .query_async(conn)
        .await?;
    if value.is_empty() {
        return Ok(());
    }
    let text = match std::str::from_utf8(&value) {
        Ok(text) if value.len() <= bound => text,
        _ => {
            trust::refuse(&c.metrics, trust::Reject::Malformed, "a feed load");
            return Ok(());
        }
    };
    match c.trust.feed_load(id, text) {
        Ok(body) => link
            .exchange
            .receive(name, body.to_string(), crate::clock::unix_now()),
        Err(why) => trust::refuse(&c.metrics, why, "a feed load"),
    }
    Ok(())
}

/// Every shared feed's load (the full load on start and reconnect).
pub(super) async fn pull_all(
    c: &Cluster,
    conn: &mut redis::aio::ConnectionManager,
) -> Result<(), ClusterError> {
    let Some(link) = &c.feeds else { return Ok(()) };
    for f in &link.feeds {
        pull(c, conn, &f.id).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_stops_before_its_lease_can_lapse() {
        let held = held_for(true).unwrap();
        assert!(held < LEASE && held >= HEARTBEAT_EVERY, "renewed in time");
        assert_eq!(held_for(false), None);
    }
}
