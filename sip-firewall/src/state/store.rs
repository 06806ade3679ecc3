//! The database: one table per kind of state, values as JSON (readable with any redb tool and
//! tolerant to added fields).

use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use ipnet::IpNet;
use redb::{
    Database, ReadableDatabase as _, ReadableTable as _, ReadableTableMetadata as _,
    TableDefinition,
};
use serde::{Deserialize, Serialize};

use crate::auth::config::UserEntry;

const BANS: TableDefinition<&str, &[u8]> = TableDefinition::new("bans");
const ALLOW: TableDefinition<&str, ()> = TableDefinition::new("allow");
const DENY: TableDefinition<&str, ()> = TableDefinition::new("deny");
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// Accounts suspended by the toll-fraud guard (`crate::fraud`), by account.
const FRAUD_SUSPENSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("fraud_suspensions");
/// `[cluster]`: changes queued while Redis is unreachable, in order (sequence -> the change).
const CLUSTER_OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("cluster_outbox");
/// `[cluster]`: the bans Redis had (received from it or written to it), by address: what a
/// full load may remove when Redis no longer has them.
const CLUSTER_BANS: TableDefinition<&str, ()> = TableDefinition::new("cluster_bans");
/// `[cluster]`: small values (the epoch of the Redis data last loaded).
const CLUSTER_META: TableDefinition<&str, &str> = TableDefinition::new("cluster_meta");

/// The state database could not be opened, read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "cannot create state directory {path}: {source} (set [state] directory to a writable place)"
    )]
    Dir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state database {path}: {message}")]
    Db { path: PathBuf, message: String },
}

/// A ban as stored: wall-clock times, so that it means the same after a reboot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanRecord {
    pub ip: IpAddr,
    pub reason: String,
    /// Unix seconds when the ban was made.
    pub created_unix: u64,
    /// Unix seconds when it ends; `None` never.
    pub expires_unix: Option<u64>,
}

impl BanRecord {
    /// Whether the ban is in force at `now` (unix seconds).
    pub fn is_live(&self, now: u64) -> bool {
        self.expires_unix.is_none_or(|t| t > now)
    }
}

/// Which prefix list.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum List {
    Allow,
    Deny,
}

impl List {
    pub const fn name(self) -> &'static str {
        match self {
            List::Allow => "allow",
            List::Deny => "deny",
        }
    }

    fn table(self) -> TableDefinition<'static, &'static str, ()> {
        match self {
            List::Allow => ALLOW,
            List::Deny => DENY,
        }
    }
}

/// The open database.
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Open (or create) `state.redb` in `dir`, creating `dir` when needed.
    pub fn open(dir: &Path) -> Result<Store, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("state.redb");
        let db = Database::create(&path).map_err(|e| StateError::Db {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let store = Store { db, path };
        // Create the tables so that reads of an empty database succeed.
        store.write(|tx| {
            tx.open_table(BANS)?;
            tx.open_table(ALLOW)?;
            tx.open_table(DENY)?;
            tx.open_table(USERS)?;
            tx.open_table(FRAUD_SUSPENSIONS)?;
            tx.open_table(CLUSTER_OUTBOX)?;
            tx.open_table(CLUSTER_BANS)?;
            tx.open_table(CLUSTER_META)?;
            Ok(())
        })?;
        Ok(store)
    }

    fn err(&self, e: impl std::fmt::Display) -> StateError {
        StateError::Db {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Run `f` in a write transaction and commit it durably.
    fn write(
        &self,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), StateError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        f(&tx).map_err(|e| self.err(e))?;
        tx.commit().map_err(|e| self.err(e))
    }

    /// Record (or replace) `value`, as JSON, under `key` in `table`.
    fn put_json<T: Serialize>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        key: &str,
        value: &T,
    ) -> Result<(), StateError> {
        let value = serde_json::to_vec(value).map_err(|e| self.err(e))?;
        self.write(|tx| {
            tx.open_table(table)?.insert(key, value.as_slice())?;
            Ok(())
        })
    }

    /// Remove `key` from `table`; whether it was there.
    fn del<V: redb::Value + 'static>(
        &self,
        table: TableDefinition<&str, V>,
        key: &str,
    ) -> Result<bool, StateError> {
        let mut was = false;
        self.write(|tx| {
            was = tx.open_table(table)?.remove(key)?.is_some();
            Ok(())
        })?;
        Ok(was)
    }

    /// Every JSON value of `table`; one that does not read as a `T` (a `what`) is skipped
    /// with a warning, so that one bad row does not hide the rest.
    fn all_json<T: serde::de::DeserializeOwned>(
        &self,
        table: TableDefinition<&str, &[u8]>,
        what: &str,
    ) -> Result<Vec<T>, StateError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(table).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (_, v) = entry.map_err(|e| self.err(e))?;
            match serde_json::from_slice(v.value()) {
                Ok(x) => out.push(x),
                Err(e) => tracing::warn!("skipping an unreadable {what}: {e}"),
            }
        }
        Ok(out)
    }

    /// Record (or replace) a ban.
    pub fn put_ban(&self, ban: &BanRecord) -> Result<(), StateError> {
        self.put_json(BANS, &ban.ip.to_string(), ban)
    }

    /// Record (or replace) many bans in one durable commit (learned bans, batched off the
    /// hot path).
    pub fn put_bans(&self, bans: &[BanRecord]) -> Result<(), StateError> {
        let mut rows = Vec::with_capacity(bans.len());
        for b in bans {
            rows.push((
                b.ip.to_string(),
                serde_json::to_vec(b).map_err(|e| self.err(e))?,
            ));
        }
        self.write(|tx| {
            let mut t = tx.open_table(BANS)?;
            for (k, v) in &rows {
                t.insert(k.as_str(), v.as_slice())?;
            }
            Ok(())
        })
    }

    /// Forget the ban of `ip`; whether there was one.
    pub fn del_ban(&self, ip: IpAddr) -> Result<bool, StateError> {
        self.del(BANS, &ip.to_string())
    }

    /// Every stored ban (expired ones included: the caller decides).
    pub fn bans(&self) -> Result<Vec<BanRecord>, StateError> {
        self.all_json(BANS, "ban record")
    }

    /// Append changes to the cluster outbox, in order, in one commit; at most `bound` are
    /// kept (the newest beyond it are refused): how many were appended.
    pub fn outbox_append(&self, items: &[Vec<u8>], bound: usize) -> Result<usize, StateError> {
        let mut n = 0;
        self.write(|tx| {
            let mut t = tx.open_table(CLUSTER_OUTBOX)?;
            let len = t.len()? as usize;
            let first = t.last()?.map_or(0, |(k, _)| k.value() + 1);
            for (key, item) in (first..).zip(items.iter().take(bound.saturating_sub(len))) {
                t.insert(key, item.as_slice())?;
                n += 1;
            }
            Ok(())
        })?;
        Ok(n)
    }

    /// The oldest `limit` changes of the cluster outbox, with their keys.
    pub fn outbox_items(&self, limit: usize) -> Result<Vec<(u64, Vec<u8>)>, StateError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(CLUSTER_OUTBOX).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.err(e))?.take(limit) {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            out.push((k.value(), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Remove changes of the cluster outbox (sent).
    pub fn outbox_remove(&self, keys: &[u64]) -> Result<(), StateError> {
        self.write(|tx| {
            let mut t = tx.open_table(CLUSTER_OUTBOX)?;
            for k in keys {
                t.remove(*k)?;
            }
            Ok(())
        })
    }

    /// Mark (or unmark) bans as known to the cluster, in one commit.
    pub fn set_cluster_bans(&self, on: &[IpAddr], off: &[IpAddr]) -> Result<(), StateError> {
        self.write(|tx| {
            let mut t = tx.open_table(CLUSTER_BANS)?;
            for ip in on {
                t.insert(ip.to_string().as_str(), ())?;
            }
            for ip in off {
                t.remove(ip.to_string().as_str())?;
            }
            Ok(())
        })
    }

    /// A value of the cluster's meta table.
    pub fn cluster_meta(&self, key: &str) -> Result<Option<String>, StateError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(CLUSTER_META).map_err(|e| self.err(e))?;
        Ok(table
            .get(key)
            .map_err(|e| self.err(e))?
            .map(|v| v.value().to_string()))
    }

    pub fn set_cluster_meta(&self, key: &str, value: &str) -> Result<(), StateError> {
        self.write(|tx| {
            tx.open_table(CLUSTER_META)?.insert(key, value)?;
            Ok(())
        })
    }

    /// The bans marked as known to the cluster.
    pub fn cluster_bans(&self) -> Result<Vec<IpAddr>, StateError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(CLUSTER_BANS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (k, _) = entry.map_err(|e| self.err(e))?;
            if let Ok(ip) = k.value().parse() {
                out.push(ip);
            }
        }
        Ok(out)
    }

    /// Record (or replace) a subscriber: hashes only, the caller drops the password.
    pub fn put_user(&self, user: &UserEntry) -> Result<(), StateError> {
        let mut stored = user.clone();
        stored.password = None;
        let key = format!("{}@{}", user.user, user.domain.to_ascii_lowercase());
        self.put_json(USERS, &key, &stored)
    }

    /// Forget a subscriber; whether it was stored.
    pub fn del_user(&self, user: &str, domain: &str) -> Result<bool, StateError> {
        self.del(USERS, &format!("{user}@{}", domain.to_ascii_lowercase()))
    }

    /// Every stored subscriber.
    pub fn users(&self) -> Result<Vec<UserEntry>, StateError> {
        self.all_json(USERS, "user record")
    }

    /// Record (or replace) a fraud suspension.
    pub fn put_suspension(&self, s: &crate::fraud::Suspension) -> Result<(), StateError> {
        self.put_json(FRAUD_SUSPENSIONS, &s.account, s)
    }

    /// Lift a fraud suspension; whether it was stored.
    pub fn del_suspension(&self, account: &str) -> Result<bool, StateError> {
        self.del(FRAUD_SUSPENSIONS, account)
    }

    /// Every stored fraud suspension.
    pub fn suspensions(&self) -> Result<Vec<crate::fraud::Suspension>, StateError> {
        self.all_json(FRAUD_SUSPENSIONS, "fraud suspension")
    }

    /// Add a prefix to a list.
    pub fn put_net(&self, list: List, net: &IpNet) -> Result<(), StateError> {
        let key = net.trunc().to_string();
        self.write(|tx| {
            tx.open_table(list.table())?.insert(key.as_str(), ())?;
            Ok(())
        })
    }

    /// Remove a prefix from a list; whether it was there.
    pub fn del_net(&self, list: List, net: &IpNet) -> Result<bool, StateError> {
        self.del(list.table(), &net.trunc().to_string())
    }

    /// The prefixes of a list.
    pub fn nets(&self, list: List) -> Result<Vec<IpNet>, StateError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = tx.open_table(list.table()).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (k, _) = entry.map_err(|e| self.err(e))?;
            match k.value().parse() {
                Ok(n) => out.push(n),
                Err(e) => tracing::warn!("skipping an unreadable {} entry: {e}", list.name()),
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmp(tag: &str) -> PathBuf {
        super::super::scratch_dir(&format!("store-{tag}"))
    }

    #[test]
    fn cluster_outbox_keeps_order_bound_and_survives_reopen() {
        let dir = tmp("outbox");
        {
            let s = Store::open(&dir).unwrap();
            assert_eq!(
                s.outbox_append(&[b"one".to_vec(), b"two".to_vec()], 3)
                    .unwrap(),
                2
            );
            assert_eq!(
                s.outbox_append(&[b"three".to_vec(), b"four".to_vec()], 3)
                    .unwrap(),
                1,
                "bounded"
            );
            s.set_cluster_bans(&["192.0.2.1".parse().unwrap()], &[])
                .unwrap();
        }
        let s = Store::open(&dir).unwrap();
        let items = s.outbox_items(10).unwrap();
        let texts: Vec<&[u8]> = items.iter().map(|(_, v)| v.as_slice()).collect();
        assert_eq!(texts, vec![&b"one"[..], b"two", b"three"]);
        s.outbox_remove(&[items[0].0]).unwrap();
        assert_eq!(s.outbox_items(10).unwrap().len(), 2);
        s.outbox_append(&[b"five".to_vec()], 3).unwrap();
        let last = s.outbox_items(10).unwrap();
        assert_eq!(last.last().unwrap().1, b"five");
        assert_eq!(
            s.cluster_bans().unwrap(),
            vec!["192.0.2.1".parse::<IpAddr>().unwrap()]
        );
        s.set_cluster_bans(&[], &["192.0.2.1".parse().unwrap()])
            .unwrap();
        assert!(s.cluster_bans().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn survives_reopen() {
        let dir = tmp("reopen");
        let ban = BanRecord {
            ip: "192.0.2.7".parse().unwrap(),
            reason: "manual: scanner seen".into(),
            created_unix: 100,
            expires_unix: Some(200),
        };
        {
            let s = Store::open(&dir).unwrap();
            s.put_ban(&ban).unwrap();
            s.put_net(List::Allow, &"192.0.2.0/24".parse().unwrap())
                .unwrap();
            s.put_net(List::Deny, &"2001:db8::1/128".parse().unwrap())
                .unwrap();
        }
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.bans().unwrap(), vec![ban.clone()]);
        assert_eq!(
            s.nets(List::Allow).unwrap(),
            vec!["192.0.2.0/24".parse::<IpNet>().unwrap()]
        );
        assert_eq!(s.nets(List::Deny).unwrap().len(), 1);
        assert!(s.del_ban(ban.ip).unwrap());
        assert!(!s.del_ban(ban.ip).unwrap());
        assert!(
            s.del_net(List::Allow, &"192.0.2.0/24".parse().unwrap())
                .unwrap()
        );
        assert!(s.nets(List::Allow).unwrap().is_empty());
        let susp = crate::fraud::Suspension {
            account: "alice@example.com".into(),
            reason: "concurrent 3 > 2 (rule 00)".into(),
            since_unix: 5,
        };
        s.put_suspension(&susp).unwrap();
        drop(s);
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.suspensions().unwrap(), vec![susp]);
        assert!(s.del_suspension("alice@example.com").unwrap());
        assert!(s.suspensions().unwrap().is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn unwritable_directory_is_named() {
        let err = match Store::open(Path::new("/proc/sip-firewall-state")) {
            Err(e) => e.to_string(),
            Ok(_) => panic!("opened a store under /proc"),
        };
        assert!(err.contains("/proc/sip-firewall-state"), "{err}");
    }
}
