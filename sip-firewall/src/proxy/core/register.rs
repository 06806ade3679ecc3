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
        r: &mut Req<'_>,
        trusted: bool,
        ruri: &str,
    ) -> Result<(), LocalReply> {
        let (m, ctx, now) = (r.m, r.ctx, r.now);
        let aor = AddressOfRecord::of(m, |u| self.local.domain_of(u))?;
        let authenticated = if trusted {
            None
        } else {
            Some(self.authenticate(r, ruri, &aor.domain, &[&aor.from_user, &aor.user], false)?)
        };
        let req = Register::from_message(m, &aor, ctx.source, ctx.transport, authenticated)?;
        let path = self.cluster.lock().as_ref().map(|c| c.path.clone());
        let answer = registrar::request::apply(
            &self.settings.registrar,
            self.store.lock().as_mut(),
            &req,
            path.as_deref(),
            registrar::request::supports_path(m),
            now,
        );
        if answer.code == 200 {
            self.keep_alive(&req.aor, ctx, now);
        }
        self.metrics.bindings.set(self.store.lock().len() as i64);
        if let Some(e) = self.servers.get_mut(&r.key) {
            e.txn.local();
        }
        let mut answer: LocalReply = answer.into();
        if self.hides_toward(ctx.source.ip()) {
            let own: Vec<&str> = req.contacts.iter().map(|c| c.uri.as_str()).collect();
            hide::register_answer_outward(&mut answer.extra, &own);
        }
        self.reply(&r.key, &answer, now);
        Ok(())
    }

    /// Share registrations with a cluster: the location store becomes a cache
    /// written through to `sink` (see `registrar::shared`). `path`: the URI the other nodes
    /// reach us at (default: our advertised host and port over UDP).
    pub fn share_locations(&mut self, node: String, path: Option<String>, sink: Sink) {
        let path = path
            .unwrap_or_else(|| format!("sip:{};lr", self.local.hostport_for(Transport::Datagram)));
        let mut inner = MemoryStore::default();
        let mut store = self.store.lock();
        for (aor, b) in store.all() {
            inner.put(&aor, b);
        }
        *store = Box::new(WriteThrough::new(
            inner,
            node.clone(),
            path.clone(),
            self.origin,
            sink,
        ));
        drop(store);
        *self.cluster.lock() = Some(Member { node, path });
    }

    /// A registration change another node made; false (not applied) when it puts a
    /// binding whose next hop is refused ([`Core::remote_hop_ok`]).
    pub fn location_remote(&mut self, change: &Change, now: Instant) -> bool {
        if let Change::Put { binding, .. } = change
            && !self.remote_hop_ok(binding)
        {
            return false;
        }
        self.store.lock().apply_remote(change, now);
        self.metrics.bindings.set(self.store.lock().len() as i64);
        true
    }

    /// Whether a binding from the cluster leads somewhere we may send: the flow of one we
    /// hold (ours, after a restart) or the Path URI of the node holding it passes the
    /// next-hop check of a request's text ([`Core::forbidden_hop`]). A Path naming a host
    /// is refused when it is used (`bad_path`).
    fn remote_hop_ok(&self, b: &SharedBinding) -> bool {
        let hop = if self
            .cluster
            .lock()
            .as_ref()
            .is_some_and(|c| c.node == b.node)
        {
            Some(b.source.ip())
        } else {
            route::resolve(&b.path, None).map(|d| d.addr.ip())
        };
        hop.is_none_or(|ip| !self.forbidden_hop(ip))
    }

    /// The live bindings registered from `ip` (and `port`, when given): address of record,
    /// binding.
    pub fn bindings_from(
        &self,
        ip: std::net::IpAddr,
        port: Option<u16>,
        now: Instant,
    ) -> Vec<(String, Binding)> {
        self.store
            .lock()
            .all()
            .into_iter()
            .filter(|(_, b)| {
                b.expires_at > now
                    && b.source.ip() == ip
                    && port.is_none_or(|p| p == b.source.port())
            })
            .collect()
    }

    /// The bindings whose flow we hold, as shared (for a Redis that lost them).
    pub fn location_own(&self, now: Instant) -> Vec<(String, SharedBinding)> {
        self.store.lock().own_shared(now)
    }

    /// The cluster's full set of registrations, after a (re)connect; how many were refused
    /// (their next hop, [`Core::remote_hop_ok`]).
    pub fn location_reload(&mut self, all: &[(String, SharedBinding)], now: Instant) -> usize {
        let ok: Vec<(String, SharedBinding)> = all
            .iter()
            .filter(|(_, b)| self.remote_hop_ok(b))
            .cloned()
            .collect();
        self.store.lock().reload_remote(&ok, now);
        self.metrics.bindings.set(self.store.lock().len() as i64);
        all.len() - ok.len()
    }
}

impl Core {
    /// The answer `m` to a REGISTER with the bindings we sealed for a registrar we hide from
    /// given back as the inner contacts (`super::hide::binding`), before anything reads them
    /// (the registrant checks its own, RFC 3261 10.2.4; relay mode learns what was granted);
    /// None when it names none of ours.
    pub(super) fn reveal_bindings<'a>(&self, m: &Message<'a>, now: Instant) -> Option<Message<'a>> {
        let register = m
            .get(HeaderName::CSeq)
            .and_then(scalar::cseq)
            .is_some_and(|(_, method)| method == "REGISTER");
        if !register || self.settings.topology_hiding != TopologyHiding::Outside {
            return None;
        }
        let unix = self.unix_secs(now);
        let mut revealed = m.clone();
        let mut any = false;
        for h in revealed
            .headers
            .iter_mut()
            .filter(|h| h.name == HeaderName::Contact)
        {
            let inner =
                hide::binding::reveal_bindings(&h.value, &self.keys.contact, &self.local, unix);
            if let Some(inner) = inner {
                h.value = Cow::Owned(inner);
                any = true;
            }
        }
        any.then_some(revealed)
    }
}
