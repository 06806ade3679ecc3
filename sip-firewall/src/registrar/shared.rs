//! Registrations shared between the nodes of a cluster (RFC 3327 Path).
//!
//! The proxy core is synchronous and runs on a clock that its tests move by hand, so it
//! never talks to Redis itself. [`WriteThrough`] keeps the in-memory store as the core's
//! cache and makes it shared:
//! - the core reads and writes it exactly as before (lookups never wait for the network);
//! - every local change (a REGISTER taken here: add, refresh, `expires=0`, `*`) is also
//!   handed, without blocking, to a sink: the cluster task's outbox, which writes it to Redis
//!   (`sipfw:loc:<aor>`, a hash contact -> [`SharedBinding`], sealed by `cluster::trust`) and
//!   publishes it;
//! - what other nodes changed comes back from the cluster task through
//!   [`LocationStore::apply_remote`], and after every (re)connect the full set through
//!   [`LocationStore::reload_remote`]; the proxy core first refuses those whose next hop it
//!   would refuse in a request (`proxy::core` `remote_hop_ok`).
//!
//! Redis down: the cache serves what it has, REGISTERs taken meanwhile are served locally
//! and queued in the outbox, which writes them back when Redis returns (before the full set
//! is loaded again). Expiries cross nodes as wall-clock seconds (an `Instant` means nothing
//! on another host); the layer converts with the anchor the core's clock started at.
//!
//! A binding another node holds the flow of carries that node's Path URI
//! ([`Binding::path`]): requests for the contact are sent there (Route: that URI, sealed for
//! this very request with the cluster's key, see `proxy::route::seal_cluster_hop`), and that
//! node reaches the phone over the flow the REGISTER came on.

use std::time::{Duration, Instant};

use sip_firewall_sip::Transport;

use super::store::{Binding, Change, LocationStore, MemoryStore, SharedBinding};

/// Most bindings taken from other nodes (each node caps contacts per AOR; this bounds the
/// total a Redis full of junk could make us hold). Beyond it remote bindings are not
/// cached (counted, logged).
pub const MAX_REMOTE_BINDINGS: usize = 1 << 20;

/// Where local changes go (the cluster's outbox); must not block.
pub type Sink = Box<dyn Fn(Change) + Send>;

pub fn transport_name(t: Transport) -> &'static str {
    match t {
        Transport::Datagram => "udp",
        Transport::Stream => "tcp",
        Transport::Tls => "tls",
        Transport::Ws => "ws",
        Transport::Wss => "wss",
    }
}

pub fn transport_of(s: &str) -> Option<Transport> {
    Some(match s {
        "udp" => Transport::Datagram,
        "tcp" => Transport::Stream,
        "tls" => Transport::Tls,
        "ws" => Transport::Ws,
        "wss" => Transport::Wss,
        _ => return None,
    })
}

/// The field of a contact in its AOR's hash: contacts compare case-insensitively.
pub fn contact_field(contact: &str) -> String {
    contact.to_ascii_lowercase()
}

/// The in-memory store as a cache, written through to the cluster.
pub struct WriteThrough {
    inner: MemoryStore,
    node: String,
    path: String,
    /// The same moment on the core's clock and on the wall clock (Unix seconds).
    anchor: (Instant, u64),
    sink: Sink,
    /// Remote bindings refused at [`MAX_REMOTE_BINDINGS`].
    pub refused: u64,
}

impl WriteThrough {
    /// `node`: this node's name; `path`: its Path URI; `anchor`: an instant of the core's
    /// clock and the Unix time it stands for.
    pub fn new(
        inner: MemoryStore,
        node: String,
        path: String,
        anchor: (Instant, u64),
        sink: Sink,
    ) -> WriteThrough {
        WriteThrough {
            inner,
            node,
            path,
            anchor,
            sink,
            refused: 0,
        }
    }

    fn to_unix(&self, t: Instant) -> u64 {
        let (i, u) = self.anchor;
        match t.checked_duration_since(i) {
            Some(d) => u.saturating_add(d.as_secs()),
            None => u.saturating_sub(i.saturating_duration_since(t).as_secs()),
        }
    }

    fn instant_of(&self, secs: u64) -> Option<Instant> {
        let (i, u) = self.anchor;
        if secs >= u {
            i.checked_add(Duration::from_secs(secs - u))
        } else {
            i.checked_sub(Duration::from_secs(u - secs))
        }
    }

    fn shared(&self, b: &Binding) -> SharedBinding {
        SharedBinding {
            contact: b.contact.clone(),
            expires_unix: self.to_unix(b.expires_at),
            call_id: b.call_id.clone(),
            cseq: b.cseq,
            source: b.source,
            transport: transport_name(b.transport).into(),
            authenticated: b.authenticated.clone(),
            node: self.node.clone(),
            path: self.path.clone(),
        }
    }

    /// A shared binding as this node caches it: its own flows (after a restart) without a
    /// Path, the others' through their node. None: expired or unreadable.
    fn local(&self, s: &SharedBinding, now: Instant) -> Option<Binding> {
        let expires_at = self.instant_of(s.expires_unix)?;
        if expires_at <= now {
            return None;
        }
        Some(Binding {
            contact: s.contact.clone(),
            expires_at,
            call_id: s.call_id.clone(),
            cseq: s.cseq,
            source: s.source,
            transport: transport_of(&s.transport)?,
            authenticated: s.authenticated.clone(),
            path: (s.node != self.node).then(|| s.path.clone()),
        })
    }

    fn remote_count(&self) -> usize {
        self.inner
            .all()
            .iter()
            .filter(|(_, b)| b.path.is_some())
            .count()
    }

    fn put_remote(&mut self, aor: &str, b: Binding, remote: &mut usize) {
        if b.path.is_some() {
            if *remote >= MAX_REMOTE_BINDINGS {
                self.refused += 1;
                if self.refused.is_power_of_two() {
                    tracing::warn!(
                        refused = self.refused,
                        "cluster: more than {MAX_REMOTE_BINDINGS} remote bindings; not cached"
                    );
                }
                return;
            }
            *remote += 1;
        }
        self.inner.put(aor, b);
    }
}

impl LocationStore for WriteThrough {
    fn lookup(&self, aor: &str, now: Instant) -> Vec<Binding> {
        self.inner.lookup(aor, now)
    }

    fn put(&mut self, aor: &str, binding: Binding) {
        let s = self.shared(&binding);
        self.inner.put(aor, binding);
        (self.sink)(Change::Put {
            aor: aor.to_string(),
            binding: s,
        });
    }

    fn remove(&mut self, aor: &str, contact: &str) {
        self.inner.remove(aor, contact);
        (self.sink)(Change::Remove {
            aor: aor.to_string(),
            contact: contact.to_string(),
        });
    }

    fn clear(&mut self, aor: &str) {
        self.inner.clear(aor);
        (self.sink)(Change::Clear {
            aor: aor.to_string(),
        });
    }

    /// Local only: Redis forgets expired bindings by itself (key TTL; readers skip expired
    /// fields).
    fn expire(&mut self, now: Instant) -> usize {
        self.inner.expire(now)
    }

    fn len(&self) -> usize {
        self.inner.len()
    }

    fn apply_remote(&mut self, change: &Change, now: Instant) {
        match change {
            Change::Put { aor, binding } => match self.local(binding, now) {
                Some(b) => {
                    let mut remote = self.remote_count();
                    self.put_remote(aor, b, &mut remote);
                }
                // Expired on arrival: whatever we had under that contact is stale too.
                None => self.inner.remove(aor, &binding.contact),
            },
            Change::Remove { aor, contact } => self.inner.remove(aor, contact),
            Change::Clear { aor } => self.inner.clear(aor),
        }
    }

    /// After a (re)connect, Redis is the truth: what we took while cut off was queued and
    /// written before this load, and when Redis had lost its data our own bindings were
    /// written back first (`cluster::load`). So every cached remote binding is replaced by
    /// the loaded set, and an own binding Redis no longer has was removed on another node
    /// (`*` or `expires=0` there while we were cut off, RFC 3261 10.3) and goes too. A
    /// contact Redis says another node now holds moves there unless ours expires later. A
    /// REGISTER taken here while this load ran is put back by the cluster task from its queue
    /// (`cluster::session`).
    fn reload_remote(&mut self, all: &[(String, SharedBinding)], now: Instant) {
        let in_redis: std::collections::HashSet<(String, String)> = all
            .iter()
            .map(|(aor, s)| (aor.clone(), contact_field(&s.contact)))
            .collect();
        for (aor, b) in self.inner.all() {
            let gone = !in_redis.contains(&(aor.clone(), contact_field(&b.contact)));
            if b.path.is_some() || gone {
                self.inner.remove(&aor, &b.contact);
            }
        }
        let mut remote = 0;
        for (aor, s) in all {
            let Some(b) = self.local(s, now) else {
                continue;
            };
            let ours = self
                .inner
                .lookup(aor, now)
                .into_iter()
                .find(|x| x.contact.eq_ignore_ascii_case(&b.contact));
            if ours.is_some_and(|o| o.expires_at >= b.expires_at) {
                continue;
            }
            self.put_remote(aor, b, &mut remote);
        }
    }

    fn all(&self) -> Vec<(String, Binding)> {
        self.inner.all()
    }

    fn own_shared(&self, now: Instant) -> Vec<(String, SharedBinding)> {
        self.inner
            .all()
            .into_iter()
            .filter(|(_, b)| b.path.is_none() && b.expires_at > now)
            .map(|(aor, b)| {
                let s = self.shared(&b);
                (aor, s)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    fn binding(contact: &str, expires_at: Instant) -> Binding {
        Binding {
            contact: contact.into(),
            expires_at,
            call_id: "c".into(),
            cseq: 1,
            source: "198.51.100.1:5070".parse().unwrap(),
            transport: Transport::Datagram,
            authenticated: Some("bob".into()),
            path: None,
        }
    }

    fn store(node: &str, t0: Instant) -> (WriteThrough, Arc<Mutex<Vec<Change>>>) {
        let out = Arc::new(Mutex::new(Vec::new()));
        let o = out.clone();
        let s = WriteThrough::new(
            MemoryStore::default(),
            node.into(),
            format!("sip:{node}.example.net;lr"),
            (t0, 1_000_000),
            Box::new(move |c| o.lock().unwrap().push(c)),
        );
        (s, out)
    }

    /// A REGISTER on A is written through with A's Path and wall-clock expiry; B caches it
    /// with A's Path (reach it through A), A itself (after a restart) as its own flow.
    #[test]
    fn local_changes_are_written_through_and_read_back_on_the_others() {
        let t0 = Instant::now();
        let (mut a, out_a) = store("edge-a", t0);
        a.put(
            "bob@example.com",
            binding("sip:bob@10.0.0.1", t0 + Duration::from_secs(600)),
        );
        let changes = out_a.lock().unwrap().clone();
        let Change::Put { aor, binding: s } = &changes[0] else {
            panic!("{changes:?}")
        };
        assert_eq!(aor, "bob@example.com");
        assert_eq!(s.expires_unix, 1_000_600);
        assert_eq!(s.node, "edge-a");
        assert_eq!(s.path, "sip:edge-a.example.net;lr");

        // B's clock started elsewhere: its anchor differs, the wall clock agrees.
        let t1 = t0 + Duration::from_secs(5);
        let (mut b, out_b) = WriteThroughPair::other("edge-b", t1, 1_000_005);
        b.apply_remote(&changes[0], t1);
        let got = b.lookup("bob@example.com", t1);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].path.as_deref(), Some("sip:edge-a.example.net;lr"));
        assert_eq!(got[0].expires_at, t1 + Duration::from_secs(595));
        assert!(out_b.lock().unwrap().is_empty(), "never re-published");

        // Removal from anywhere: `*` on B reaches A.
        b.clear("bob@example.com");
        let clear = out_b.lock().unwrap()[0].clone();
        a.apply_remote(&clear, t0);
        assert!(a.lookup("bob@example.com", t0).is_empty());

        // A restarted: its own binding comes back from Redis as its own flow.
        let (mut a2, _) = store("edge-a", t0);
        a2.reload_remote(&[("bob@example.com".into(), s.clone())], t0);
        assert_eq!(a2.lookup("bob@example.com", t0)[0].path, None);
    }

    /// The full load replaces every cached remote binding: one Redis no longer has (removed
    /// elsewhere while we were cut off) goes; our own stay while Redis has them.
    #[test]
    fn reload_drops_remote_bindings_redis_no_longer_has() {
        let t0 = Instant::now();
        let (mut b, _) = store("edge-b", t0);
        let mut s = SharedBinding {
            contact: "sip:bob@10.0.0.1".into(),
            expires_unix: 1_000_600,
            call_id: "c".into(),
            cseq: 1,
            source: "198.51.100.1:5070".parse().unwrap(),
            transport: "udp".into(),
            authenticated: None,
            node: "edge-a".into(),
            path: "sip:a;lr".into(),
        };
        b.apply_remote(
            &Change::Put {
                aor: "bob@example.com".into(),
                binding: s.clone(),
            },
            t0,
        );
        b.put(
            "carol@example.com",
            binding("sip:carol@10.0.0.2", t0 + Duration::from_secs(600)),
        );
        let carol = b.own_shared(t0);
        assert_eq!(carol.len(), 1);
        assert_eq!(carol[0].1.node, "edge-b");
        b.reload_remote(&carol, t0);
        assert!(b.lookup("bob@example.com", t0).is_empty());
        assert_eq!(b.lookup("carol@example.com", t0).len(), 1);
        // Our own binding that Redis no longer has: removed on another node while we were
        // cut off (`*` or expires=0 there): it goes too.
        b.reload_remote(&[], t0);
        assert!(b.lookup("carol@example.com", t0).is_empty());
        // Expired in Redis: not loaded.
        s.expires_unix = 999_999;
        b.reload_remote(&[("bob@example.com".into(), s)], t0);
        assert!(b.lookup("bob@example.com", t0).is_empty());
    }

    struct WriteThroughPair;
    impl WriteThroughPair {
        fn other(node: &str, at: Instant, unix: u64) -> (WriteThrough, Arc<Mutex<Vec<Change>>>) {
            let out = Arc::new(Mutex::new(Vec::new()));
            let o = out.clone();
            (
                WriteThrough::new(
                    MemoryStore::default(),
                    node.into(),
                    format!("sip:{node}.example.net;lr"),
                    (at, unix),
                    Box::new(move |c| o.lock().unwrap().push(c)),
                ),
                out,
            )
        }
    }
}
