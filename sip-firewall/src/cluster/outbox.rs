//! The way out of a node: the queue local changes wait in for the cluster task ([`Outbox`],
//! bounded by [`OUTBOX`]), and, while Redis is away, the state database's `cluster_outbox`
//! they are spooled into (in order, bounded too), so changes made during an outage survive a
//! restart made during it; once Redis answers they go out first, oldest first ([`unspool`]).

use std::{collections::HashSet, net::IpAddr};

use super::{Cluster, ClusterError, Share, apply::Target, metrics, schema::Op, write::send};

/// Changes queued while Redis is unreachable; past it they are counted and dropped (still
/// enforced locally, and in the local state database).
pub const OUTBOX: usize = 65_536;

/// Where the enforcer and the admin API hand local changes to the cluster task.
#[derive(Clone)]
pub struct Outbox {
    tx: tokio::sync::mpsc::Sender<Op>,
    share: Vec<Share>,
    metrics: metrics::ClusterMetrics,
}

impl Outbox {
    /// The outbox and the end the cluster task reads.
    pub(super) fn channel(
        share: Vec<Share>,
        metrics: metrics::ClusterMetrics,
    ) -> (Outbox, tokio::sync::mpsc::Receiver<Op>) {
        let (tx, rx) = tokio::sync::mpsc::channel(OUTBOX);
        (Outbox { tx, share, metrics }, rx)
    }

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

/// Cut off: move the change that failed and everything queued in memory into the state
/// database's outbox (one commit). Without a state database they wait in memory.
pub(super) fn spool(c: &mut Cluster, target: &Target, pending: &mut Option<Op>) {
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
pub(super) async fn unspool(
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
pub(super) fn queued_bans(store: &crate::state::Store) -> HashSet<IpAddr> {
    let mut out = HashSet::new();
    if let Ok(items) = store.outbox_items(OUTBOX) {
        for (_, bytes) in items {
            if let Ok(Op::Ban { ban }) = serde_json::from_slice::<Op>(&bytes) {
                out.insert(ban.ip);
            }
        }
    }
    out
}
