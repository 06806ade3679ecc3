//! REGISTER for one of our domains: the registrar (`crate::registrar::request`) owns it end
//! to end (address of record, contacts, `*`, expiry, bindings, Path); the core adds the
//! digest challenge in between and answers within the server transaction.

use super::*;

impl From<registrar::request::Answer> for LocalReply {
    fn from(a: registrar::request::Answer) -> LocalReply {
        LocalReply {
            code: a.code,
            phrase: a.phrase,
            extra: a.extra,
        }
    }
}

impl Core {
    /// REGISTER for one of our domains (RFC 3261 10.3).
    pub(super) fn register(
        &mut self,
        key: &ServerKey,
        m: &Message<'_>,
        ctx: &Context,
        trusted: bool,
        ruri: &str,
        now: Instant,
    ) -> Result<(), LocalReply> {
        let aor = AddressOfRecord::of(m, |u| self.local.domain_of(u))?;
        let authenticated = if trusted {
            None
        } else {
            Some(self.authenticate(
                m,
                ctx,
                "REGISTER",
                ruri,
                &aor.domain,
                &[&aor.from_user, &aor.user],
                false,
                now,
            )?)
        };
        let req = Register::from_message(m, &aor, ctx.source, ctx.transport, authenticated)?;
        let answer = registrar::request::apply(
            &self.registrar,
            self.store.as_mut(),
            &req,
            self.cluster_path.as_deref(),
            registrar::request::supports_path(m),
            now,
        );
        self.metrics.bindings.set(self.store.len() as i64);
        if let Some(e) = self.servers.get_mut(key) {
            e.txn.local();
        }
        self.reply(key, &answer.into(), now);
        Ok(())
    }

    /// Share registrations with a cluster: the location store becomes a cache
    /// written through to `sink` (see `registrar::shared`). `path`: the URI the other nodes
    /// reach us at (default: our advertised host and port over UDP).
    pub fn share_locations(&mut self, node: String, path: Option<String>, sink: Sink) {
        let path = path
            .unwrap_or_else(|| format!("sip:{};lr", self.local.hostport_for(Transport::Datagram)));
        let mut inner = MemoryStore::default();
        for (aor, b) in self.store.all() {
            inner.put(&aor, b);
        }
        self.store = Box::new(WriteThrough::new(
            inner,
            node,
            path.clone(),
            (self.start, self.unix_at_start),
            sink,
        ));
        self.cluster_path = Some(path);
    }

    /// A registration change another node made.
    pub fn location_remote(&mut self, change: &Change, now: Instant) {
        self.store.apply_remote(change, now);
        self.metrics.bindings.set(self.store.len() as i64);
    }

    /// The bindings whose flow we hold, as shared (for a Redis that lost them).
    pub fn location_own(&self, now: Instant) -> Vec<(String, SharedBinding)> {
        self.store.own_shared(now)
    }

    /// The cluster's full set of registrations, after a (re)connect.
    pub fn location_reload(&mut self, all: &[(String, SharedBinding)], now: Instant) {
        self.store.reload_remote(all, now);
        self.metrics.bindings.set(self.store.len() as i64);
    }
}
