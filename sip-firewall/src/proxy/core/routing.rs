//! Where a new request goes (RFC 3261 16.4-16.6): in-dialog by our stamp, preloaded Route
//! from trusted peers, our users' bindings (through another node's Path, RFC 3327), the
//! outbound proxy or DNS (RFC 3263); relay policy and the fraud guard on the way.

use super::*;

impl Core {
    /// A next hop a request names (its Request-URI or Route, a name DNS resolved, the
    /// parties of its dialog stamp), unless [`Core::forbidden_hop`] refuses it (403,
    /// counted `internal_hop`).
    pub(super) fn allowed_hop(
        &self,
        d: Destination,
        requester: Option<SocketAddr>,
    ) -> Result<Destination, LocalReply> {
        if self.forbidden_hop(d.addr.ip()) {
            self.refused(requester, "internal_hop");
            return Err(answer(403, "Forbidden Next Hop"));
        }
        Ok(d)
    }

    /// Whether a next hop named by someone else (a request's text, the parties of a dialog
    /// stamp, a binding from the cluster's Redis) is refused: loopback, link-local,
    /// unspecified, multicast and our own addresses are, unless `[proxy] internal_next_hops`
    /// lists them (nobody outside steers us to the services of this host or its link).
    pub(super) fn forbidden_hop(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        let internal = ip.is_loopback()
            || ip.is_unspecified()
            || ip.is_multicast()
            || match ip {
                IpAddr::V4(v) => v.is_link_local() || v.is_broadcast(),
                IpAddr::V6(v) => v.is_unicast_link_local(),
            }
            || self.local.is_our_ip(ip);
        internal && !in_any(&self.settings.internal_next_hops, ip)
    }

    /// Note on the server transaction `key` whether its request's dialog was made inside,
    /// and the ring secret its Call-ID is sealed under toward the outside (`super::hide`).
    fn set_made_inside(&mut self, key: &ServerKey, made_inside: bool, secret: usize) {
        if let Some(e) = self.servers.get_mut(key) {
            e.made_inside = made_inside;
            e.secret = secret;
        }
    }

    /// Decide where a new request goes, or the answer.
    pub(super) fn route_request(&mut self, r: &mut Req<'_>) -> Result<(), LocalReply> {
        let (m, ctx) = (r.m, r.ctx);
        let mut msg = SipMsg::from_parsed(m);
        // Before anything keyed is computed (loop tags, stamps, hop seals).
        let popped = self.pop_routes(&mut msg, ctx.source)?;
        // RFC 3261 16.3 step 4: the same request back through us is a loop.
        if self.looped(m, &route::routes(&msg).join(",")) {
            self.refused(Some(ctx.source), "loop");
            return Err(answer(482, "Loop Detected"));
        }
        forward::stamp_top_via(&mut msg, ctx.source, self.settings.force_rport);
        let trusted = self.is_trusted(ctx);
        let in_dialog = m
            .get(HeaderName::To)
            .and_then(|t| name_addr::parse_single(t).ok())
            .is_some_and(|a| a.tag.is_some());
        // An initial request makes its dialog where its source is (`super::hide`).
        self.set_made_inside(&r.key, !in_dialog && self.made_inside(ctx.source.ip()), 0);

        // Relay mode: a request the registrar sends through our Path entry (RFC 5626 5.3).
        if !in_dialog
            && let Some((entry, token)) = popped
                .iter()
                .find_map(|e| route::flow::flow_token_of(e).map(|t| (e, t)))
        {
            return self.flow_hop(r, msg, entry, &token);
        }
        // A request another cluster node sends through the Path of a registration whose
        // flow we hold (RFC 3327): relayed to that flow, for a cluster node only.
        if !in_dialog && let Some(seal) = popped.iter().find_map(|e| route::cluster_hop_of(e)) {
            return self.cluster_hop(r, msg, &seal);
        }

        if in_dialog {
            // Only what our Record-Route of this very dialog brings back is relayed (loose
            // routing), from one of its parties to the other; a Route naming us without our
            // stamp is not ours.
            let hop = self.dialog_hop(&popped, m, &msg, ctx.source, r.now)?;
            self.set_made_inside(&r.key, hop.made_inside, hop.secret);
            self.reveal_target(&mut msg);
            self.fraud_in_dialog(m, r.method, r.now);
            if !trusted {
                // In-dialog requests are not authenticated: nobody outside the trust
                // domain asserts an identity (RFC 3325 5).
                self.strip_identity(&mut msg);
            }
            return self.forward(&r.onward(None), msg, vec![(None, hop.dest)]);
        }

        // Initial request. A preloaded route from outside is not honoured: it would let
        // anyone steer us anywhere.
        if !trusted {
            msg.remove(HeaderName::Route);
        } else if !route::routes(&msg).is_empty() {
            return self.route_preloaded(r, msg);
        }
        if let Some(target) = self.sealed_target(&msg, ctx.source, r.now)? {
            return self.route_redirected(r, msg, &target);
        }
        self.route_initial(r, msg, trusted)
    }

    /// The inner target of an initial request whose Request-URI is a redirect target or a
    /// binding we sealed for the outside (`super::hide`); None for any other Request-URI.
    /// One of ours whose seal does not open (forged, tampered, expired) is refused: it names
    /// nobody here.
    pub(super) fn sealed_target(
        &self,
        msg: &SipMsg,
        source: SocketAddr,
        now: Instant,
    ) -> Result<Option<String>, LocalReply> {
        let Some(u) = msg.request_uri() else {
            return Ok(None);
        };
        let (seal, unix) = (&self.keys.contact, self.unix_secs(now));
        let target = seal
            .reveal_redirect(u, &self.local, unix, source.ip())
            .or_else(|| seal.reveal_binding(u, &self.local, unix));
        if target.is_none() && seal.names_seal(u, &self.local) {
            self.refused(Some(source), "bad_hidden_contact");
            return Err(answer(404, "Not Found"));
        }
        Ok(target)
    }

    /// An initial request to a redirect target we sealed in a 3xx relayed outward
    /// (`super::hide`): to the inner target, whose side sent the 3xx to this very outside.
    /// No relay policy: the target is the inside's answer, not the requester's choice; it
    /// still passes the next-hop check like any target a text names.
    fn route_redirected(
        &mut self,
        r: &Req<'_>,
        mut msg: SipMsg,
        target: &str,
    ) -> Result<(), LocalReply> {
        msg.set_request_uri(target);
        let rr = forward::creates_dialog(r.method).then_some(r.ctx.transport);
        let ours = match uri::parse(target) {
            Ok(Uri::Sip(u)) => self
                .local
                .domain_of(&u)
                .map(|d| format!("{}@{d}", u.user.unwrap_or_default())),
            _ => None,
        };
        if let Some(aor) = ours {
            return self.route_to_bindings(r, msg, &aor);
        }
        if resolve::names_domain(target) {
            return self.resolve_later(&r.onward(rr), msg, target.to_string());
        }
        let dest = self.allowed_hop(
            route::resolve(target, None).ok_or(answer(404, "No Route To Destination"))?,
            Some(r.source()),
        )?;
        self.forward(&r.onward(rr), msg, vec![(None, dest)])
    }

    /// An initial request from a trusted peer with a preloaded Route: to its first entry,
    /// after the fraud guard for an INVITE.
    fn route_preloaded(&mut self, r: &Req<'_>, mut msg: SipMsg) -> Result<(), LocalReply> {
        let (ctx, method) = (r.ctx, r.method);
        // A Route naming a domain is resolved by DNS (RFC 3263), after the checks below.
        let by_dns = route::routes(&msg)
            .first()
            .and_then(|e| route::entry_uri(e))
            .filter(|u| resolve::names_domain(u))
            .map(str::to_string);
        let dest = match by_dns {
            Some(_) => None,
            None => Some(self.allowed_hop(
                route::next_hop(&msg, self.settings.outbound).ok_or(answer(404, "No Route"))?,
                Some(ctx.source),
            )?),
        };
        if method == "INVITE" {
            let ruri = msg.request_uri().unwrap_or("").to_string();
            let account = format!("peer:{}", ctx.source.ip().to_canonical());
            let peer = Some(ctx.source.ip().to_canonical());
            self.fraud_check(r, &ruri, &account, peer, true)?;
        }
        forward::strip_credentials(&mut msg, |r| self.local.is_our_domain(r));
        let rr = forward::creates_dialog(method).then_some(ctx.transport);
        match (dest, by_dns) {
            (Some(dest), _) => self.forward(&r.onward(rr), msg, vec![(None, dest)]),
            (None, Some(uri)) => self.resolve_later(&r.onward(rr), msg, uri),
            (None, None) => Err(answer(404, "No Route")),
        }
    }

    /// An initial request without a preloaded route: REGISTER and requests to the proxy
    /// itself are answered here; the rest, once the sender is known, passes the relay
    /// policy and the fraud guard and goes to our user's bindings or toward its domain.
    fn route_initial(
        &mut self,
        r: &mut Req<'_>,
        msg: SipMsg,
        trusted: bool,
    ) -> Result<(), LocalReply> {
        let (ctx, method) = (r.ctx, r.method);
        let ruri_text = msg.request_uri().unwrap_or("").to_string();
        let ruri = match uri::parse(&ruri_text) {
            Ok(Uri::Sip(u)) => Some(u),
            _ => None,
        };
        let local_domain = ruri.as_ref().and_then(|u| self.local.domain_of(u));
        // Our addresses, our advertised name and our domains are us, with or without a
        // domain configured: what is addressed to us is answered here, never relayed.
        let to_us = ruri.as_ref().is_some_and(|u| self.local.is_us(u));
        let target = if local_domain.is_some() || to_us {
            Target::Local
        } else {
            Target::Foreign
        };

        if method == "REGISTER" {
            return match (&ruri, &local_domain) {
                (Some(_), Some(_)) if self.relay_mode() => self.relay_register(r, msg),
                (Some(_), Some(_)) => self.register(r, trusted, &ruri_text),
                _ => Err(answer(403, "Not Our Domain")),
            };
        }
        if let Some(u) = &ruri
            && u.user.is_none()
            && to_us
        {
            return Err(to_the_proxy(method));
        }

        let Some(mut msg) = self.relay_initial(r, msg, local_domain.is_some(), trusted)? else {
            return Ok(());
        };
        let (sender, account, asserted) = self.sender_of(r, &ruri_text, trusted)?;
        // RFC 3325: identities pass only within the trust domain; for our authenticated
        // users the edge asserts the identity itself, whatever they claimed.
        if !trusted {
            self.strip_identity(&mut msg);
        }
        if let Some(pai) = asserted {
            msg.push(HeaderName::Other("P-Asserted-Identity"), pai);
        }
        if !relay::may_relay(sender, target) {
            crate::logging::security_event("relay_refused", ctx.source.ip(), "open relay", 1);
            return Err(answer(403, "Relaying Forbidden"));
        }
        if method == "INVITE"
            && let Some(account) = &account
        {
            let foreign = target == Target::Foreign;
            let peer = self.fraud_peer(r, trusted, foreign);
            self.fraud_check(r, &ruri_text, account, peer, foreign)?;
        }
        forward::strip_credentials(&mut msg, |r| self.local.is_our_domain(r));

        match (&ruri, &local_domain) {
            (Some(u), Some(domain)) => {
                let user = u.user.unwrap_or_default();
                let aor = format!("{user}@{domain}");
                self.route_to_bindings(r, msg, &aor)
            }
            // A user at one of our addresses while we serve no domain: nobody is here.
            _ if to_us => Err(self.unavailable()),
            _ => self.route_foreign(r, msg, ruri_text.clone()),
        }
    }

    /// The peer an initial INVITE's call leaves through, for the fraud guard's decision on
    /// what its account may call, how much and how often: the trusted peer it came from, or
    /// the outbound proxy.
    fn fraud_peer(&self, r: &Req<'_>, trusted: bool, foreign: bool) -> Option<IpAddr> {
        if trusted {
            Some(r.source().ip().to_canonical())
        } else if foreign {
            self.settings.outbound.map(|o| o.ip().to_canonical())
        } else {
            None
        }
    }

    /// Who is asking: a trusted peer, one of our users (then prove it), or an outsider.
    /// With the account the fraud guard books the call on (an authenticated user or a
    /// trusted peer) and the identity the edge asserts for an authenticated user.
    #[allow(clippy::type_complexity)]
    fn sender_of(
        &mut self,
        r: &mut Req<'_>,
        ruri_text: &str,
        trusted: bool,
    ) -> Result<(Sender, Option<String>, Option<String>), LocalReply> {
        let m = r.m;
        if trusted {
            let account = format!("peer:{}", r.source().ip().to_canonical());
            return Ok((Sender::Trusted, Some(account), None));
        }
        let from = m
            .get(HeaderName::From)
            .and_then(|f| name_addr::parse_single(f).ok());
        let (from_user, from_domain) = match from.as_ref().map(|a| a.uri) {
            Some(Uri::Sip(u)) => (
                u.user.map(str::to_string),
                match u.host {
                    Host::Domain(d) if self.local.is_our_domain(d) => {
                        Some(d.trim_end_matches('.').to_ascii_lowercase())
                    }
                    _ => None,
                },
            ),
            _ => (None, None),
        };
        let Some(realm) = from_domain else {
            return Ok((Sender::Outsider, None, None));
        };
        let user = from_user.unwrap_or_default();
        let who = self.authenticate(r, ruri_text, &realm, &[&user], true)?;
        let asserted = self.asserted_identity(m, &who, &realm);
        Ok((
            Sender::LocalUser,
            Some(format!("{who}@{realm}")),
            Some(asserted),
        ))
    }

    /// To the bindings of `aor`, one of our users: over the flow we hold, or through the
    /// Path of the cluster node that holds it (RFC 3327).
    fn route_to_bindings(&mut self, r: &Req<'_>, msg: SipMsg, aor: &str) -> Result<(), LocalReply> {
        let (m, now) = (r.m, r.now);
        let bindings = self.store.lock().lookup(aor, now);
        if bindings.is_empty() {
            // Unknown and unregistered look the same: no enumeration of users.
            return Err(self.unavailable());
        }
        let call_id = m.get(HeaderName::CallId).unwrap_or("").to_string();
        let unix = self.unix_secs(now);
        let mut routed = Vec::with_capacity(bindings.len());
        for b in bindings {
            match &b.path {
                // Our flow.
                None => {
                    let dest = self.flow_of(&b);
                    routed.push((Some(b.contact.clone()), None, dest));
                }
                // Another node holds the flow (RFC 3327): through its Path URI,
                // sealed for this request so that it relays for cluster nodes only.
                Some(path) => {
                    let Some(dest) = route::resolve(path, None) else {
                        self.refused(Some(r.source()), "bad_path");
                        continue;
                    };
                    let seal =
                        route::seal_cluster_hop(self.hop_key(), unix, aor, &call_id, &b.contact);
                    let route = format!("<{path};{}={seal}>", route::CLUSTER_PARAM);
                    routed.push((Some(b.contact.clone()), Some(route), dest));
                }
            }
        }
        if routed.is_empty() {
            return Err(self.unavailable());
        }
        let rr = forward::creates_dialog(r.method).then_some(r.ctx.transport);
        self.forward_routed(&r.onward(rr), msg, routed)
    }

    /// Toward a foreign domain: the outbound proxy (by name: where DNS says, with
    /// failover), else where DNS says for the Request-URI (RFC 3263), else its address.
    fn route_foreign(
        &mut self,
        r: &Req<'_>,
        msg: SipMsg,
        ruri_text: String,
    ) -> Result<(), LocalReply> {
        let rr = forward::creates_dialog(r.method).then_some(r.ctx.transport);
        if let Some(name) = self.settings.outbound_name.clone() {
            // The outbound proxy by name: where DNS says, with failover.
            return self.resolve_later(&r.onward(rr), msg, name);
        }
        let dest = match self.settings.outbound {
            Some(addr) => Destination {
                addr,
                transport: Transport::Datagram,
            },
            // A foreign domain and no outbound proxy: where DNS says (RFC 3263).
            None if resolve::names_domain(&ruri_text) => {
                return self.resolve_later(&r.onward(rr), msg, ruri_text);
            }
            None => self.allowed_hop(
                route::resolve(&ruri_text, None).ok_or(answer(404, "No Route To Destination"))?,
                Some(r.source()),
            )?,
        };
        self.forward(&r.onward(rr), msg, vec![(None, dest)])
    }

    /// The answer for a user who is unknown or not registered (`[proxy] unavailable`).
    pub(super) fn unavailable(&self) -> LocalReply {
        match self.settings.unavailable {
            404 => answer(404, "Not Found"),
            _ => answer(480, "Temporarily Unavailable"),
        }
    }

    /// A request from another cluster node for a contact whose flow we hold: its Route
    /// named our Path URI with a seal made under the cluster's key for this very Call-ID
    /// and Request-URI (`route::open_cluster_hop`). Relayed to the flow of our binding of
    /// that contact, record-routed (the phone's in-dialog requests come back through us);
    /// the node it came from authenticated and checked the caller. A missing or wrong seal
    /// (an outsider writing our Path into a Route) is refused: no open relay.
    pub(super) fn cluster_hop(
        &mut self,
        r: &Req<'_>,
        msg: SipMsg,
        seal: &str,
    ) -> Result<(), LocalReply> {
        let (m, ctx, now) = (r.m, r.ctx, r.now);
        let call_id = m.get(HeaderName::CallId).unwrap_or("");
        let ruri = msg.request_uri().unwrap_or("").to_string();
        // Seals of the previous secrets too: during a roll, nodes already on the new secret
        // and nodes still on the old one keep reaching each other's flows.
        let unix = self.unix_secs(now);
        let Some(aor) = self
            .keys
            .hop
            .iter()
            .find_map(|k| route::open_cluster_hop(k, unix, seal, call_id, &ruri))
        else {
            debug!(source = %ctx.source, "cluster hop without a valid seal refused");
            self.refused(Some(ctx.source), "cluster_hop");
            return Err(answer(403, "Forbidden"));
        };
        let found = self
            .store
            .lock()
            .lookup(&aor, now)
            .into_iter()
            .find(|b| b.path.is_none() && b.contact.eq_ignore_ascii_case(&ruri));
        let Some(b) = found else {
            // The phone moved or left since the other node looked.
            return Err(self.unavailable());
        };
        let dest = self.flow_of(&b);
        self.down_the_flow(r, msg, dest, None, "cluster_hop")
    }

    /// A request routed through our Path entry, to the phone's flow `dest`, record-routed
    /// (the phone's in-dialog requests come back through us); counted as forwarded `kind`.
    /// Nothing below our Path is honoured: the flow is the next hop. `inner`: the Route
    /// set our own entry carried sealed (the inner Path entries, `super::hide::path`),
    /// for the proxies inside down the flow (RFC 3327 5).
    pub(super) fn down_the_flow(
        &mut self,
        r: &Req<'_>,
        mut msg: SipMsg,
        dest: Destination,
        inner: Option<String>,
        kind: &str,
    ) -> Result<(), LocalReply> {
        msg.replace_all(HeaderName::Route, inner.into_iter().collect());
        self.metrics.forward(kind);
        let rr = forward::creates_dialog(r.method).then_some(r.ctx.transport);
        self.forward(&r.onward(rr), msg, vec![(None, dest)])
    }
}

/// The answer to a request addressed to the proxy itself (no user): OPTIONS is a
/// keep-alive ping.
fn to_the_proxy(method: &str) -> LocalReply {
    if method == "OPTIONS" {
        LocalReply {
            code: 200,
            phrase: "OK",
            extra: vec![ALLOW.into()],
        }
    } else {
        answer(404, "Not Found")
    }
}
