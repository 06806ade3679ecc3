//! Timers: one heap of deadlines for every transaction (stale entries skipped), Timer C
//! of the branches, and the periodic expiry of bindings and nonce-counts.

use super::*;

/// How often bindings, nonce-counts, quiet contacts, calls past their limits and waiting
/// resolutions are expired.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
/// How often the host's addresses are taken again.
const ADDR_REFRESH: Duration = Duration::from_secs(30);

impl Core {
    pub(super) fn deadline(&self, k: &TimerKey) -> Option<Instant> {
        match k {
            TimerKey::Server(s) => {
                let e = self.servers.get(s)?;
                let c = e.fork.as_ref().and_then(Fork::next_timer);
                match (e.txn.deadline(), c) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            TimerKey::Client(c) => self.clients.get(c)?.txn.deadline(),
        }
    }

    pub(super) fn schedule(&mut self, k: TimerKey) {
        if let Some(d) = self.deadline(&k) {
            self.heap.push(Reverse((d, k)));
        }
    }

    /// When [`Core::tick`] has work next: the earliest transaction deadline (perhaps a stale
    /// one, which costs a wake-up and nothing else), the housekeeping a second after the
    /// last, or the address refresh.
    pub fn next_due(&self) -> Instant {
        let periodic =
            (self.last_housekeeping + HOUSEKEEPING).min(self.last_addr_refresh + ADDR_REFRESH);
        match self.heap.peek() {
            Some(Reverse((at, _))) => periodic.min(*at),
            None => periodic,
        }
    }

    /// Run every timer due at `now`, and the periodic housekeeping.
    pub fn tick(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.heap.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((at, k))) = self.heap.pop() else {
                break;
            };
            // Stale entries (the deadline moved) are skipped; the new one is queued too.
            if self.deadline(&k) != Some(at) {
                continue;
            }
            match k {
                TimerKey::Server(s) => self.server_timer(s, now),
                TimerKey::Client(c) => self.client_timer(c, now),
            }
        }
        // What the shards share is kept by the first one (`shared`).
        let keeper = self.shard == 0;
        if keeper {
            self.keepalive_tick(now);
        }
        if now.saturating_duration_since(self.last_housekeeping) >= HOUSEKEEPING {
            self.last_housekeeping = now;
            if keeper {
                self.shared_housekeeping(now);
            }
            self.silent.expire(now);
            // Calls past their limits end here (second precision is enough for hours).
            self.fraud_tick(now);
            // Requests DNS left waiting too long: 503 (see `resolve`).
            self.expire_resolutions(now);
        }
        if now.saturating_duration_since(self.last_addr_refresh) >= ADDR_REFRESH {
            // Interfaces come and go: what "us" is follows them (wildcard listeners).
            self.last_addr_refresh = now;
            self.local.refresh();
        }
        self.gauges();
    }

    /// The expiry of what the shards share: bindings, relayed flows, nonce counts.
    fn shared_housekeeping(&mut self, now: Instant) {
        let bindings = {
            let mut store = self.store.lock();
            store.expire(now);
            store.len()
        };
        self.metrics.bindings.set(bindings as i64);
        self.expire_relayed(now);
        let secs = self.unix_secs(now);
        self.auth.lock().expire(secs);
    }

    pub(super) fn server_timer(&mut self, key: ServerKey, now: Instant) {
        // Timer C of the branches first: it may produce the final response.
        let due: Vec<(usize, bool, BranchState, String)> = self
            .servers
            .get(&key)
            .and_then(|e| e.fork.as_ref())
            .map(|f| {
                f.branches
                    .iter()
                    .enumerate()
                    .filter(|(_, b)| {
                        b.state != BranchState::Done && b.timer_c.is_some_and(|t| t <= now)
                    })
                    .map(|(i, b)| (i, b.cancelled, b.state, b.branch.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (i, cancelled, state, branch) in due {
            if !cancelled && state == BranchState::Provisional {
                self.cancel_branch(&key, i, now);
            } else {
                // No answer at all, or none after our CANCEL: give the branch up as 408.
                if state == BranchState::Pending
                    && let Some(dest) = self
                        .clients
                        .get(&ClientKey {
                            branch: branch.clone(),
                            method: key.method.clone(),
                        })
                        .map(|c| c.dest)
                {
                    self.mark_silent(dest.addr, now);
                }
                self.remove_client(&ClientKey {
                    branch,
                    method: key.method.clone(),
                });
                self.branch_response(&key, i, 408, None, now);
            }
        }
        let timers = self.settings.timers;
        let Some(e) = self.servers.get_mut(&key) else {
            return;
        };
        if e.txn.deadline().is_some_and(|d| d <= now)
            && let server::TimerOut::Resend(b) = e.txn.on_timer(now, &timers)
        {
            let dest = e.dest;
            self.send(dest, b);
            self.metrics
                .retransmissions
                .with_label_values(&["sent"])
                .inc();
        }
        let Some(e) = self.servers.get(&key) else {
            return;
        };
        if e.txn.is_terminated() {
            self.servers.remove(&key);
        } else {
            self.schedule(TimerKey::Server(key));
        }
    }

    pub(super) fn client_timer(&mut self, key: ClientKey, now: Instant) {
        let timers = self.settings.timers;
        let Some(e) = self.clients.get_mut(&key) else {
            return;
        };
        let out = e.txn.on_timer(now, &timers);
        let dest = e.dest;
        let server = e.server.clone();
        match out {
            client::TimerOut::Resend(b) => {
                self.send(dest, b);
                self.metrics
                    .retransmissions
                    .with_label_values(&["sent"])
                    .inc();
            }
            client::TimerOut::Timeout => {
                let unanswered = server.as_ref().is_some_and(|(skey, idx)| {
                    self.servers
                        .get(skey)
                        .and_then(|e| e.fork.as_ref())
                        .and_then(|f| f.branches.get(*idx))
                        .is_some_and(|b| b.state == BranchState::Pending)
                });
                if unanswered {
                    self.mark_silent(dest.addr, now);
                }
                if let Some((skey, idx)) = server
                    && self.is_current(&skey, idx, &key.branch)
                    && !self.fail_over(&skey, idx, "failover_timeout", now)
                {
                    self.branch_response(&skey, idx, 408, None, now);
                }
            }
            client::TimerOut::Nothing => {}
        }
        if self
            .clients
            .get(&key)
            .is_some_and(|e| e.txn.is_terminated())
        {
            self.remove_client(&key);
        } else {
            self.schedule(TimerKey::Client(key));
        }
    }

    pub(super) fn remove_client(&mut self, key: &ClientKey) {
        // Our CANCELs (no server transaction) share the branch of the INVITE they cancel and
        // were never announced: their end must not retire the INVITE's branch, whose
        // responses (487, 2xx retransmissions) may still come.
        // Our own BYEs (fraud guard) were announced: their end is announced too.
        if let Some(e) = self.clients.remove(key)
            && (e.server.is_some() || key.method == "BYE")
        {
            self.observer
                .client_transaction_terminated(&key.branch, e.dest);
        }
    }

    /// Transactions alive (server, client): for tests and the gauges.
    #[cfg(test)]
    pub fn active(&self) -> (usize, usize) {
        (self.servers.len(), self.clients.len())
    }
}
