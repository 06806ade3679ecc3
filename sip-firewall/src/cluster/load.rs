//! The full load on every (re)connect, and its reconciliation: the cluster's bans, allow and
//! deny lists, subscribers, registrations and threat feeds' loads from Redis into this node;
//! the bans this node knew Redis had and Redis no longer has are lifted, but only while Redis
//! still holds the data this node last loaded ([`Epoch`]: a Redis that restarted empty lifts
//! nothing).

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::Mutex,
};

use futures_util::StreamExt as _;
use redis::AsyncCommands as _;
use tracing::{error, info};

use super::{
    Cluster, ClusterError, Share,
    apply::Target,
    metrics,
    outbox::queued_bans,
    schema::{BAN_KEYS, EPOCH_KEY, LOCATION_KEYS, Op, USERS_KEY, list_key, unix_ms},
    trust,
    write::send,
};
use crate::{
    enforce::Enforcer,
    state::{BanRecord, List},
};

/// The full set from Redis into this node.
pub(super) async fn load(
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
                let change = crate::registrar::store::Change::Put { aor, binding };
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
    super::feeds::pull_all(c, conn).await
}

/// Every registration in Redis (live ones; at most
/// [`crate::registrar::shared::MAX_REMOTE_BINDINGS`]).
async fn load_locations(
    conn: &mut redis::aio::ConnectionManager,
    c: &Cluster,
) -> Result<Vec<(String, crate::registrar::store::SharedBinding)>, ClusterError> {
    use crate::registrar::shared::MAX_REMOTE_BINDINGS;
    let mut keys: Vec<String> = Vec::new();
    {
        let mut it = conn.scan_match::<_, String>(LOCATION_KEYS).await?;
        while let Some(k) = it.next().await {
            keys.push(k?);
        }
    }
    let now = crate::clock::unix_now();
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
pub(super) struct Epoch {
    current: Option<String>,
    same: bool,
}

pub(super) async fn epoch(
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
pub(super) async fn load_bans(
    conn: &mut redis::aio::ConnectionManager,
    metrics: &metrics::ClusterMetrics,
    enforcer: &Mutex<Enforcer>,
    store: Option<&crate::state::Store>,
    ep: &Epoch,
    checks: &trust::Trust,
) -> Result<usize, ClusterError> {
    let bans = read_bans(conn, metrics, checks).await?;
    let n = bans.len();
    let lifted = tokio::task::block_in_place(|| match enforcer.lock() {
        Ok(mut e) => {
            apply_bans(&mut e, &bans, metrics);
            store.map_or(0, |s| reconcile(&mut e, &bans, s, ep, metrics))
        }
        Err(_) => {
            error!("cluster: internal state poisoned");
            0
        }
    });
    info!(bans = n, lifted, "cluster: bans loaded");
    Ok(n)
}

/// The bans Redis holds whose seal and content [`trust::Trust::ban`] takes.
async fn read_bans(
    conn: &mut redis::aio::ConnectionManager,
    metrics: &metrics::ClusterMetrics,
    checks: &trust::Trust,
) -> Result<Vec<BanRecord>, ClusterError> {
    let mut keys: Vec<String> = Vec::new();
    {
        let mut it = conn.scan_match::<_, String>(BAN_KEYS).await?;
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
    Ok(bans)
}

/// The cluster's bans into the enforcer (a full table: counted and logged, the rest go on).
fn apply_bans(e: &mut Enforcer, bans: &[BanRecord], metrics: &metrics::ClusterMetrics) {
    for b in bans {
        if let Err(err) = e.cluster_ban(b) {
            metrics.event("ban", "failed");
            metrics::warn_limited(&format!("cannot apply a cluster ban of {}: {err}", b.ip));
        }
    }
}

/// Lift the bans this node knew Redis had and Redis lacks (unless queued here), and record
/// what Redis has now and its epoch. How many bans were lifted.
fn reconcile(
    e: &mut Enforcer,
    bans: &[BanRecord],
    s: &crate::state::Store,
    ep: &Epoch,
    metrics: &metrics::ClusterMetrics,
) -> usize {
    let mut lifted = 0;
    // The same data as last time: what it lacks was deleted, not lost.
    let known = if ep.same {
        s.cluster_bans().unwrap_or_default()
    } else {
        Vec::new()
    };
    let queued = queued_bans(s);
    let now: HashSet<IpAddr> = bans.iter().map(|b| b.ip).collect();
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
    let r = s
        .set_cluster_bans(&on, &off)
        .and_then(|()| match &ep.current {
            Some(ep) => s.set_cluster_meta("epoch", ep),
            None => Ok(()),
        });
    if let Err(err) = r {
        metrics::warn_limited(&format!("cluster: cannot record cluster bans: {err}"));
    }
    lifted
}
