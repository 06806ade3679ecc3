//! RFC 3263 routing in the core: a request whose next hop is a domain waits for DNS in a
//! pending state, and a branch whose name gave several targets fails over to the next one.
//!
//! The resolver is asynchronous (hickory on tokio) and the core is synchronous on a clock
//! it is given, so the core never resolves: when the next hop of a request is a domain (a
//! Request-URI to a foreign domain without `[proxy] outbound`, or the top Route of a trusted
//! peer's request), routing stops after every policy decision (digest, no-open-relay, fraud)
//! and the request is parked under its server transaction with the name queued
//! ([`Core::take_resolutions`]). The [`crate::proxy::Proxy`] takes the queue after each call
//! into the core, resolves outside the lock, and hands the outcome back as an event
//! ([`Core::resolved`]), under the lock, on the core's clock: the request is then forwarded
//! to the first target, or answered. Unit tests play the resolver by calling `resolved`
//! themselves. An INVITE gets its 100 Trying at once; its retransmissions are absorbed by the
//! server transaction while DNS works; a CANCEL meanwhile gets 200 and the INVITE 487.
//!
//! Never a hang: the resolver gives up within `[dns] timeout`, and a request still parked
//! `[dns] timeout` + 2 s later is answered 503 by the core's own housekeeping. Parked
//! requests are bounded by the server transactions (`[sip] max_transactions`, in total and
//! per source): one per transaction.
//!
//! Answers (RFC 3263 4: the name resolves to no target; RFC 3261 16.7 for the rest): a name
//! that does not exist or has no usable record gets 404, a resolution that failed (servers
//! unreachable, timed out) 503. Targets that are internal addresses (loopback, link-local,
//! ours) are refused as any next hop from a request's text is ([`Core::allowed_hop`]): DNS
//! must not steer the edge at the services of its own host.
//!
//! Failover (RFC 3263 4.3): the further targets ride on the branch. A transport error
//! toward the branch's destination (a connection we could not open, a send that failed), its
//! Timer B/F expiring, or a 503 from it, sends the request to the next target as a new
//! client transaction in the same branch slot (a new Via branch; the old transaction ends
//! on its own and its late responses are absorbed). Once every target failed, the branch
//! ends as before (408 on a timeout, the 503 relayed as 500, 16.7 step 6).

use super::*;
use crate::proxy::dns::DnsError;

/// A request waiting for the resolution of its next hop's name.
pub(super) struct Pending {
    /// The request as it will be forwarded (our routes popped, policy applied).
    msg: SipMsg,
    method: String,
    record_route_from: Option<Transport>,
    since: Instant,
}

/// The requests waiting for DNS, and the names still to hand to the resolver.
pub(super) struct Parked {
    pending: HashMap<ServerKey, Pending>,
    queue: Vec<(ServerKey, String)>,
    /// How long a resolution may take before the request gets 503 (`[dns] timeout` and a
    /// margin: the resolver ends its own work within `[dns] timeout`).
    limit: Duration,
}

impl Parked {
    pub(super) fn new(limit: Duration) -> Parked {
        Parked {
            pending: HashMap::new(),
            queue: Vec::new(),
            limit,
        }
    }

    /// Park the request of `key` until `name` is resolved.
    fn park(&mut self, key: &ServerKey, p: Pending, name: String) {
        self.pending.insert(key.clone(), p);
        self.queue.push((key.clone(), name));
    }

    /// The request of `key`, no longer waiting.
    fn unpark(&mut self, key: &ServerKey) -> Option<Pending> {
        self.pending.remove(key)
    }

    /// The requests waiting longer than a resolution may take.
    fn late(&self, now: Instant) -> Vec<ServerKey> {
        self.pending
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.since) >= self.limit)
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// Whether `uri_text` is a SIP URI whose host is a domain name (DNS decides where it goes).
pub(super) fn names_domain(uri_text: &str) -> bool {
    matches!(uri::parse(uri_text), Ok(Uri::Sip(u)) if u.host.ip().is_none())
}

impl Core {
    /// Park `msg` (the request of the server transaction `o.key`) until `uri` is resolved.
    pub(super) fn resolve_later(
        &mut self,
        o: &Onward<'_>,
        msg: SipMsg,
        uri: String,
    ) -> Result<(), LocalReply> {
        let p = Pending {
            msg,
            method: o.method.to_string(),
            record_route_from: o.record_route_from,
            since: o.now,
        };
        self.parked.park(o.key, p, uri);
        self.metrics
            .dns_routing
            .with_label_values(&["resolving"])
            .inc();
        Ok(())
    }

    /// The names to resolve since the last call, with the transaction each is for.
    pub fn take_resolutions(&mut self) -> Vec<(ServerKey, String)> {
        std::mem::take(&mut self.parked.queue)
    }

    /// The resolution for the request parked under `key` is done: forward it to the first
    /// target (the others kept for failover), or answer it.
    pub fn resolved(
        &mut self,
        key: &ServerKey,
        result: Result<Vec<Destination>, DnsError>,
        now: Instant,
    ) {
        let Some(p) = self.parked.unpark(key) else {
            // Cancelled, or answered at the deadline already.
            return;
        };
        if self.servers.get(key).is_none_or(|e| e.txn.is_final()) {
            return;
        }
        let event = match &result {
            Ok(_) => "resolved",
            Err(DnsError::Failed(_)) => "failed",
            Err(_) => "not_found",
        };
        self.metrics.dns_routing.with_label_values(&[event]).inc();
        let outcome = match result {
            Ok(targets) => {
                let mut usable = Vec::new();
                let mut refused = None;
                for d in targets {
                    match self.allowed_hop(d, None) {
                        Ok(d) => usable.push(d),
                        Err(l) => refused = Some(l),
                    }
                }
                if usable.is_empty() {
                    Err(refused.unwrap_or_else(|| answer(404, "Not Found")))
                } else {
                    let first = usable.remove(0);
                    let o = Onward {
                        key,
                        method: &p.method,
                        record_route_from: p.record_route_from,
                        requester: None,
                        now,
                    };
                    self.forward_with(&o, p.msg, vec![(None, None, first)], usable)
                }
            }
            Err(DnsError::Failed(e)) => {
                debug!(error = %e, "DNS resolution failed");
                Err(answer(503, "Service Unavailable"))
            }
            Err(_) => Err(answer(404, "Not Found")),
        };
        if let Err(l) = outcome {
            if let Some(e) = self.servers.get_mut(key) {
                e.txn.local();
            }
            self.reply(key, &l, now);
        }
        self.gauges();
    }

    /// Requests parked longer than the resolver may take: 503 (never a hang).
    pub(super) fn expire_resolutions(&mut self, now: Instant) {
        for k in self.parked.late(now) {
            self.metrics
                .dns_routing
                .with_label_values(&["expired"])
                .inc();
            self.resolved(&k, Err(DnsError::Failed("no answer in time".into())), now);
        }
    }

    /// A CANCEL of a request still waiting for DNS: it is not forwarded; true when there
    /// was one (the caller answers it 487).
    pub(super) fn cancel_resolution(&mut self, key: &ServerKey) -> bool {
        self.parked.unpark(key).is_some()
    }

    /// Whether branch `idx` of `skey` is still the client transaction `branch` (after a
    /// failover the slot holds a newer one, and the old one's responses are not its).
    pub(super) fn is_current(&self, skey: &ServerKey, idx: usize, branch: &str) -> bool {
        self.servers
            .get(skey)
            .and_then(|e| e.fork.as_ref())
            .and_then(|f| f.branches.get(idx))
            .is_some_and(|b| b.branch == branch)
    }

    /// Send branch `idx` of `skey` to its next target (RFC 3263 4.3), counting `cause`.
    /// False when there is none (or the request is cancelled or answered): the caller ends
    /// the branch as it would have.
    pub(super) fn fail_over(
        &mut self,
        skey: &ServerKey,
        idx: usize,
        cause: &'static str,
        now: Instant,
    ) -> bool {
        let Some(e) = self.servers.get_mut(skey) else {
            return false;
        };
        if e.txn.is_final() {
            return false;
        }
        let Some(fork) = e.fork.as_mut() else {
            return false;
        };
        if fork.cancelled || fork.final_sent {
            return false;
        }
        let Some(b) = fork.branches.get_mut(idx) else {
            return false;
        };
        if b.cancelled || b.cancel_pending || b.state == BranchState::Done {
            return false;
        }
        let Some(mut f) = b.failover.take() else {
            return false;
        };
        let old = b.branch.clone();
        if f.alternates.is_empty() {
            return false;
        }
        let dest = f.alternates.remove(0);
        let method = skey.method.clone();
        self.clients.settled(&ClientKey {
            branch: old,
            method: method.clone(),
        });
        debug!(cause, next = %dest.addr, "failover to the next DNS target");
        self.metrics.dns_routing.with_label_values(&[cause]).inc();
        let o = Onward {
            key: skey,
            method: &method,
            record_route_from: f.record_route_from,
            requester: None,
            now,
        };
        let mut nb = self.start_branch(&o, &f.msg, idx, None, dest);
        if !f.alternates.is_empty() {
            self.clients.fails_over(ClientKey {
                branch: nb.branch.clone(),
                method,
            });
            nb.failover = Some(f);
        }
        if let Some(slot) = self
            .servers
            .get_mut(skey)
            .and_then(|e| e.fork.as_mut())
            .and_then(|f| f.branches.get_mut(idx))
        {
            *slot = nb;
        }
        self.schedule(TimerKey::Server(skey.clone()));
        true
    }

    /// Sending to `dest` failed (a connection that could not be opened, a send refused):
    /// the branches still waiting on it that have a next target move on (RFC 3263 4.3).
    pub fn unreachable(&mut self, dest: Destination, now: Instant) {
        let keys = self.clients.failing_over_to(dest);
        if keys.is_empty() {
            return;
        }
        for k in keys {
            let Some((skey, idx)) = self.clients.get(&k).and_then(|c| c.server.clone()) else {
                continue;
            };
            let pending = self
                .servers
                .get(&skey)
                .and_then(|e| e.fork.as_ref())
                .and_then(|f| f.branches.get(idx))
                .is_some_and(|b| b.branch == k.branch && b.state == BranchState::Pending);
            if pending && self.fail_over(&skey, idx, "failover_transport_error", now) {
                self.remove_client(&k);
            }
        }
        self.gauges();
    }
}
