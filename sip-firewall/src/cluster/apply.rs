//! The way in: what a change from the cluster does on this node ([`Target::apply`]: the
//! state database, memory, the XDP maps, the proxy's subscribers and bindings; never
//! published again), and the marks of the bans this node knows Redis has (`cluster_bans` in
//! the state database), which the full load compares with Redis to lift what was deleted
//! elsewhere.

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use super::{metrics, schema::Op, trust};
use crate::enforce::Enforcer;

/// Marks kept until they are written (at every heartbeat and load); past it a mark is lost
/// as in a crash (the module doc of [`super`]: such a ban stays until it expires).
const MAX_MARKS: usize = 65_536;

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
    /// Note that Redis has (`on`) or no longer has a ban of `ip`; written by [`Target::flush_marks`].
    pub(super) fn mark(&self, ip: IpAddr, on: bool) {
        if let Ok(mut m) = self.marks.lock()
            && m.len() < MAX_MARKS
        {
            m.push((ip, on));
        }
    }

    /// Write the pending marks in one commit.
    pub(super) fn flush_marks(&self) {
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

    /// Apply a change made on another node: state database, memory, maps; never re-published.
    pub(super) fn apply(&self, op: &Op) {
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
                // Read from Redis by the session, taken by the feeds task.
                Op::Location { .. } | Op::FeedLoad { .. } => {}
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
