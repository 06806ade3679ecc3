//! What the core queued under its lock, done after it: the fraud guard's writes, the sends
//! (the core's own final answers among them handed back: with the request being handled,
//! the server shows them to captures with it; made with no request in hand, they go to
//! captures alone through the `Outbound`), and the names to resolve.

use sip_firewall_sip::Transport;

use super::{Proxy, Resolved, core, core::Core, dns};
use crate::seams::Answers;

/// What the core queued under its lock, done after it.
struct Queued {
    sends: Vec<(crate::seams::Destination, Vec<u8>)>,
    /// Which of `sends` (by position) are the core's own final answers.
    answers: Vec<usize>,
    /// Destinations of `sends` reached only over their open flow (`core::keepalive`).
    held: Vec<crate::seams::Destination>,
    ops: Vec<crate::fraud::StoreOp>,
    names: Vec<(core::ServerKey, String)>,
}

impl Queued {
    fn take(core: &mut Core) -> Queued {
        let (sends, answers) = core.take_sends_and_answers();
        let ops = core.fraud_store_ops();
        Queued {
            held: core.held_flows(&sends),
            sends,
            answers,
            ops,
            names: core.take_resolutions(),
        }
    }
}

impl Proxy {
    /// Run `f` on the core of shard `shard`, then write what the fraud guard must persist
    /// and send what it queued (outside the lock). Its own final answers, made with no
    /// request in hand, go to captures alone.
    pub(super) fn with_shard<R>(&self, shard: usize, f: impl FnOnce(&mut Core) -> R) -> R {
        let (r, answers) = self.with_shard_answered(shard, f);
        if let Some(out) = self.out.get() {
            for (dest, answer) in &answers {
                out.answered_alone(*dest, answer);
            }
        }
        r
    }

    /// [`Proxy::with_shard`], handing back the core's own final answers it sent.
    pub(super) fn with_shard_answered<R>(
        &self,
        shard: usize,
        f: impl FnOnce(&mut Core) -> R,
    ) -> (R, Answers) {
        let (r, queued, due) = {
            // A panic under the lock (caught at the message boundary) left the tables as
            // they were; keep serving, counted and logged once per panic.
            let mut core = crate::guard::lock(&self.shards[shard], "proxy core");
            let r = f(&mut core);
            (r, Queued::take(&mut core), core.next_due())
        };
        self.alarm.due(due);
        let answers = self.flush(shard, queued);
        (r, answers)
    }

    /// Do what the core of shard `shard` queued, outside its lock; the core's own final
    /// answers among what it sent.
    fn flush(&self, shard: usize, q: Queued) -> Answers {
        // Persisted before the refusal that caused it goes out.
        if !q.ops.is_empty()
            && let Some(store) = self.fraud_store.get()
        {
            store(&q.ops);
        }
        let mut failed = Vec::new();
        let mut answers = Vec::new();
        for (i, (dest, bytes)) in q.sends.into_iter().enumerate() {
            if let Some(out) = self.out.get() {
                let sent = if q.held.contains(&dest) {
                    out.send_on_flow(dest, &bytes)
                } else {
                    out.send(dest, &bytes)
                };
                if !sent {
                    tracing::debug!(?dest, "send failed");
                    failed.push(dest);
                }
            }
            if q.answers.contains(&i) {
                answers.push((dest, bytes));
            }
        }
        if !failed.is_empty() {
            // A transport error: branches with further DNS targets move on (RFC 3263 4.3).
            // Each failover uses up a target, so this recursion ends.
            let now = self.now();
            let more = {
                let mut core = crate::guard::lock(&self.shards[shard], "proxy core");
                for d in failed {
                    core.unreachable(d, now);
                }
                Queued::take(&mut core)
            };
            answers.extend(self.flush(shard, more));
        }
        if !q.names.is_empty() {
            answers.extend(self.resolve(shard, q.names));
        }
        answers
    }

    /// Resolve each name off the lock; the outcome comes back through `resolved_tx`.
    /// Without a resolver or a runtime, the requests get 503 at once (those answers handed
    /// back).
    fn resolve(&self, shard: usize, names: Vec<(core::ServerKey, String)>) -> Answers {
        let rt = tokio::runtime::Handle::try_current();
        match (self.dns.get(), rt) {
            (Some(dns), Ok(rt)) => {
                for (key, name) in names {
                    let (dns, tx) = (dns.clone(), self.resolved_tx.clone());
                    let out = self.out.get().cloned();
                    rt.spawn(async move {
                        let r = dns.targets(&name).await;
                        // TLS targets are verified by the domain they were found under
                        // (RFC 5922 7.1), told to the outbound before anything is sent.
                        if let (Ok(targets), Some(out), Some(host)) =
                            (&r, &out, dns::domain_of(&name))
                        {
                            for t in targets.iter().filter(|t| t.transport == Transport::Tls) {
                                out.name_peer(t.addr, &host);
                            }
                        }
                        // The receiver is gone only at shutdown.
                        let _ = tx.send((shard, key, r));
                    });
                }
                Vec::new()
            }
            _ => {
                let now = self.now();
                self.with_shard_answered(shard, |c| {
                    for (key, _) in names {
                        c.resolved(&key, Err(dns::DnsError::Failed("no resolver".into())), now);
                    }
                })
                .1
            }
        }
    }

    /// Hand a finished resolution to the core of the shard that parked its request.
    pub(super) fn apply_resolved(&self, (shard, key, result): Resolved) {
        let now = self.now();
        let shard = shard.min(self.shards.len().saturating_sub(1));
        crate::guard::catch("timer", None, || {
            self.with_shard(shard, |c| c.resolved(&key, result, now))
        });
    }
}
