//! Accounts: suspensions (made, restored at start, lifted by the operator), the networks
//! an account logs in from (a new one while it has calls from another is unusual), and the
//! bound on the account table.

use std::net::IpAddr;

use tracing::{info, warn};

use super::{
    Event, Fraud, MAX_ACCOUNTS, MAX_NETWORKS, NETWORK_MEMORY, OnCritical, StoreOp, Suspension,
    network,
};

impl Fraud {
    pub(super) fn expire_idle_accounts(&mut self) {
        let suspended = &self.suspended;
        self.accounts
            .retain(|k, a| a.active > 0 || suspended.contains_key(k) || !a.networks.is_empty());
    }

    pub(super) fn suspend(&mut self, account: &str, reason: String, unix: u64) {
        let s = Suspension {
            account: account.to_string(),
            reason,
            since_unix: unix,
        };
        warn!(
            account,
            reason = s.reason,
            "account suspended by the fraud guard"
        );
        self.store_ops.push(StoreOp::Suspend(s.clone()));
        self.presence.set_ops(true);
        self.suspended.insert(account.to_string(), s);
        self.metrics.suspended.set(self.suspended.len() as i64);
        if self.on_critical == OnCritical::BlockAndHangup {
            for c in self.calls.values_mut() {
                if c.account == account && c.dialog.is_some() {
                    c.hangup = Some("fraud_hangup");
                }
            }
        }
    }

    /// A successful digest login of `account` from `ip`: a network (/16, /48) not seen in
    /// the last 30 days while the account has calls from another is a warning.
    pub fn login(&mut self, account: &str, ip: IpAddr, unix: u64) {
        let net = network(ip);
        if !self.accounts.contains_key(account) && self.accounts.len() >= MAX_ACCOUNTS {
            self.expire_idle_accounts();
            if self.accounts.len() >= MAX_ACCOUNTS {
                return;
            }
        }
        let acct = self.accounts.entry(account.to_string()).or_default();
        acct.networks
            .retain(|(_, seen)| unix.saturating_sub(*seen) < NETWORK_MEMORY);
        let known = acct.networks.iter().any(|(n, _)| *n == net);
        if known {
            for (n, seen) in &mut acct.networks {
                if *n == net {
                    *seen = unix;
                }
            }
            return;
        }
        if acct.networks.len() >= MAX_NETWORKS {
            acct.networks
                .sort_by_key(|(_, seen)| std::cmp::Reverse(*seen));
            acct.networks.truncate(MAX_NETWORKS - 1);
        }
        acct.networks.push((net, unix));
        let elsewhere = self
            .calls
            .values()
            .any(|c| c.account == account && c.net != net);
        if elsewhere {
            self.metrics
                .warnings
                .with_label_values(&["unusual_source"])
                .inc();
            self.event(Event {
                unix,
                account: account.to_string(),
                kind: "unusual_source".into(),
                measure: net.to_string(),
                rule: None,
                value: 0,
                threshold: 0,
            });
        }
    }

    /// Suspensions read from the state database at start.
    pub fn restore(&mut self, list: Vec<Suspension>) {
        for s in list {
            self.suspended.insert(s.account.clone(), s);
        }
        self.metrics.suspended.set(self.suspended.len() as i64);
    }

    /// Lift a suspension; whether there was one. `user` is `user@domain` or `user` (every
    /// domain).
    pub fn unblock(&mut self, user: &str, unix: u64) -> Vec<String> {
        let lifted: Vec<String> = self
            .suspended
            .keys()
            .filter(|k| k.as_str() == user || k.split_once('@').is_some_and(|(u, _)| u == user))
            .cloned()
            .collect();
        for k in &lifted {
            // The admin command removes it from the state database itself (stored first:
            // it holds the database while asking the proxy).
            self.suspended.remove(k);
            // The counters start again: the operator judged the account.
            if let Some(a) = self.accounts.get_mut(k) {
                for c in &mut a.rules {
                    c.recent.clear();
                    c.sequential = 0;
                    c.total = 0;
                }
            }
            info!(account = k, "account unblocked by the operator");
            self.event(Event {
                unix,
                account: k.clone(),
                kind: "unblocked".into(),
                measure: String::new(),
                rule: None,
                value: 0,
                threshold: 0,
            });
        }
        self.metrics.suspended.set(self.suspended.len() as i64);
        lifted
    }

    /// What the state database must record since the last call.
    pub fn take_store_ops(&mut self) -> Vec<StoreOp> {
        self.presence.set_ops(false);
        std::mem::take(&mut self.store_ops)
    }

    /// A handle on whether it tracks calls and has writes queued, readable without its lock.
    pub fn presence(&self) -> super::presence::Presence {
        self.presence.clone()
    }
}
