//! Bans (manual, learned in user space, made by the XDP program): kept in the database, in
//! memory (bounded: at the bound expired bans go, then the learned ban expiring first) and
//! in the XDP maps; the batched writer of learned bans.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use sip_firewall_common::BanReason;

use super::{EnforceError, Enforcer};
use crate::{
    clock::{mono_to_unix, unix_now, unix_to_mono},
    state::{BanRecord, Store},
    xdp::events::KernelBan,
};

/// Most bans kept in memory: every manual one the map holds, every learned one the LRU map
/// holds.
pub(super) const MAX_BANS_IN_MEMORY: usize = (sip_firewall_common::maps::BAN_ENTRIES
    + sip_firewall_common::maps::LEARNED_BAN_ENTRIES)
    as usize;

/// Durable writes of learned bans, batched off the hot path: up to 1024 bans per commit.
/// On shutdown, what is queued is written, then the task ends.
pub async fn write_bans(
    store: std::sync::Arc<Store>,
    mut rx: tokio::sync::mpsc::Receiver<BanRecord>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut stopping = false;
    loop {
        let first = tokio::select! {
            b = rx.recv() => b,
            _ = shutdown.changed() => { stopping = true; None }
        };
        let closed = first.is_none();
        let mut batch: Vec<BanRecord> = first.into_iter().collect();
        while batch.len() < 1024
            && let Ok(b) = rx.try_recv()
        {
            batch.push(b);
        }
        if batch.is_empty() && (stopping || closed) {
            return Ok(());
        }
        let store = store.clone();
        let n = batch.len();
        match tokio::task::spawn_blocking(move || store.put_bans(&batch)).await {
            Ok(Ok(())) => tracing::debug!(n, "learned bans stored"),
            Ok(Err(e)) => tracing::warn!("storing {n} learned bans: {e}"),
            Err(e) => tracing::warn!("ban writer: {e}"),
        }
        if stopping && rx.is_empty() {
            return Ok(());
        }
    }
}

/// The reason code the XDP map stores for a free-text reason.
pub(super) fn reason_code(reason: &str) -> u32 {
    let head = reason.split(':').next().unwrap_or(reason).trim();
    for r in [
        BanReason::Flood,
        BanReason::Scanner,
        BanReason::AuthFailure,
        BanReason::RequestRate,
    ] {
        if head == r.name() {
            return r as u32;
        }
    }
    BanReason::Manual as u32
}

impl Enforcer {
    /// The address a learned ban of `ip` is kept under: its ban prefix (as in XDP).
    pub fn learned_key(&self, ip: IpAddr) -> IpAddr {
        let ip = ip.to_canonical();
        let cfg = sip_firewall_common::XdpConfig::default()
            .with_ban_prefixes(self.ban_prefix.0, self.ban_prefix.1);
        crate::xdp::maps::key_ip(&cfg.ban_key(crate::xdp::maps::ip_key(ip)))
    }

    /// A learned ban in memory and (through the writer, or at once) in the database. The
    /// table is bounded: at the bound expired bans go, then the learned ban expiring first.
    pub(super) fn keep_learned(&mut self, rec: BanRecord) -> Result<(), EnforceError> {
        if self.bans.len() >= MAX_BANS_IN_MEMORY {
            let now = unix_now();
            self.bans.retain(|_, b| b.is_live(now));
            if self.bans.len() >= MAX_BANS_IN_MEMORY
                && let Some(ip) = self
                    .bans
                    .values()
                    .filter(|b| reason_code(&b.reason) != BanReason::Manual as u32)
                    .min_by_key(|b| b.expires_unix.unwrap_or(u64::MAX))
                    .map(|b| b.ip)
            {
                self.bans.remove(&ip);
                tracing::debug!(%ip, "learned ban table full: the ban expiring first forgotten");
            }
        }
        match &self.writer {
            Some(w) => {
                if let Err(e) = w.try_send(rec.clone()) {
                    // Enforced anyway (map and memory); only its survival of a restart is lost.
                    tracing::debug!("ban writer queue: {e}; ban of {} not stored", rec.ip);
                }
            }
            None => self.store.put_ban(&rec)?,
        }
        self.bans.insert(rec.ip, rec);
        Ok(())
    }

    pub(super) fn apply_ban(&mut self, ban: &BanRecord) -> Result<(), EnforceError> {
        if let Some(x) = self.xdp.as_mut() {
            let expires = ban.expires_unix.map_or(u64::MAX, unix_to_mono);
            let reason = reason_code(&ban.reason);
            if reason == BanReason::Manual as u32 {
                x.maps
                    .ban_scoped(ban.ip, expires, reason, self.manual_scope)?;
            } else {
                x.maps
                    .ban_learned(ban.ip, expires, reason, self.learned_scope)?;
            }
        }
        Ok(())
    }

    /// Ban `ip` for `duration` (`None`: until unbanned) with a free-text `reason` whose first
    /// word (before `:`) names the kind (`flood`, `scanner`, `auth_failure`, ...; anything
    /// else is manual).
    pub fn ban(
        &mut self,
        ip: IpAddr,
        duration: Option<Duration>,
        reason: &str,
    ) -> Result<BanRecord, EnforceError> {
        let now = unix_now();
        let manual = reason_code(reason) == BanReason::Manual as u32;
        let rec = BanRecord {
            // A learned ban covers the source's prefix (IPv6 /64 by default).
            ip: if manual { ip } else { self.learned_key(ip) },
            reason: reason.to_string(),
            created_unix: now,
            expires_unix: duration.map(|d| now + d.as_secs().max(1)),
        };
        if manual {
            // The CLI is told done only once the ban is durable.
            self.store.put_ban(&rec)?;
            self.apply_ban(&rec)?;
            self.count_ban(&rec.reason);
            self.bans.insert(rec.ip, rec.clone());
        } else {
            self.apply_ban(&rec)?;
            self.count_ban(&rec.reason);
            self.keep_learned(rec.clone())?;
        }
        self.share(super::publish::LocalChange::Ban(rec.clone()));
        Ok(rec)
    }

    pub(super) fn count_ban(&mut self, reason: &str) {
        let kind = BanReason::from_u32(reason_code(reason)).map_or("manual", BanReason::name);
        *self.bans_made.entry(kind.to_string()).or_default() += 1;
    }

    /// Record a ban the XDP program made by itself (it is already in the map).
    pub fn record_kernel_ban(&mut self, ban: &KernelBan) -> Result<BanRecord, EnforceError> {
        let reason = ban.reason.map_or("flood", BanReason::name).to_string();
        let rec = BanRecord {
            ip: ban.ip,
            reason,
            created_unix: unix_now(),
            expires_unix: (ban.expires_ns != u64::MAX).then(|| mono_to_unix(ban.expires_ns)),
        };
        self.count_ban(&rec.reason);
        self.keep_learned(rec.clone())?;
        self.share(super::publish::LocalChange::Ban(rec.clone()));
        Ok(rec)
    }

    /// Lift the ban of `ip`; whether there was one.
    pub fn unban(&mut self, ip: IpAddr) -> Result<bool, EnforceError> {
        self.share(super::publish::LocalChange::Unban(ip));
        let prefix = self.learned_key(ip);
        let mut stored = self.store.del_ban(ip)?;
        let mut in_memory = self.bans.remove(&ip).is_some();
        if prefix != ip {
            stored |= self.store.del_ban(prefix)?;
            in_memory |= self.bans.remove(&prefix).is_some();
        }
        let in_map = match self.xdp.as_mut() {
            Some(x) => x.maps.unban(ip)?,
            None => false,
        };
        Ok(stored || in_map || in_memory)
    }

    /// Live bans, soonest expiry first; expired ones are forgotten on the way.
    pub fn bans(&mut self) -> Result<Vec<BanRecord>, EnforceError> {
        let now = unix_now();
        let expired: Vec<IpAddr> = self
            .bans
            .values()
            .filter(|b| !b.is_live(now))
            .map(|b| b.ip)
            .collect();
        for ip in expired {
            // Expired everywhere at once (Redis keys carry the same TTL): nothing to share.
            self.cluster_unban(ip)?;
        }
        let mut v: Vec<BanRecord> = self.bans.values().cloned().collect();
        v.sort_by_key(|b| (b.expires_unix.unwrap_or(u64::MAX), b.ip));
        Ok(v)
    }

    /// Whether `ip` has a live ban.
    pub fn is_banned(&self, ip: IpAddr) -> bool {
        let now = unix_now();
        let live = |k: &IpAddr| self.bans.get(k).is_some_and(|b| b.is_live(now));
        live(&ip) || live(&self.learned_key(ip))
    }

    /// Forget expired bans in memory (the janitor sweeps the maps, this the table the gate
    /// reads); how many.
    pub fn forget_expired_bans(&mut self) -> usize {
        let now = unix_now();
        let before = self.bans.len();
        self.bans.retain(|_, b| b.is_live(now));
        before - self.bans.len()
    }

    /// Bans made since start, by kind.
    pub fn bans_made(&self) -> &HashMap<String, u64> {
        &self.bans_made
    }

    /// Live bans right now.
    pub fn bans_active(&self) -> usize {
        let now = unix_now();
        self.bans.values().filter(|b| b.is_live(now)).count()
    }
}
