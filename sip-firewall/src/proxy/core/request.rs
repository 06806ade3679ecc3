//! Requests: scanners, ACK and retransmission matching, CANCEL, routing and policy,
//! REGISTER, digest challenges, and forwarding to the branches.

use super::*;

impl Core {
    /// A request that passed the message layer.
    pub fn request(&mut self, m: &Message<'_>, ctx: &Context, now: Instant) -> Action {
        let StartLine::Request { method, .. } = m.start else {
            return Action::Absorb;
        };
        if let Some(ua) = header(m, "User-Agent")
            && let Some(hit) = self.scanners.matches(ua)
        {
            debug!(source = %ctx.source, user_agent = ua, hit, "scanner dropped");
            self.metrics.scanners.inc();
            self.observer.scanner(ctx.source, ua);
            return Action::Drop { reason: "scanner" };
        }
        let Some(key) = server_key(m, method) else {
            return Action::Drop { reason: "no_via" };
        };
        if method == "ACK" {
            if let Some(e) = self.servers.get(&key)
                && !same_source(e, ctx)
            {
                // RFC 3261 17.2.3 matches on the Via alone; only the transaction's own source
                // may acknowledge (and so end) it.
                return self.foreign_copy(ctx);
            }
            if let Some(e) = self.servers.get_mut(&key)
                && e.txn.on_ack(now, &self.timers)
            {
                // The ACK of our (or a relayed) non-2xx final: hop by hop, ends here.
                self.schedule(TimerKey::Server(key));
                return Action::Absorb;
            }
            return self.ack_2xx(m, ctx);
        }
        if let Some(e) = self.servers.get(&key) {
            if !same_source(e, ctx) {
                // A copy of someone's request (same top Via) from another address: answering
                // it would send the stored response, up to 16 Vias of it, wherever a spoofed
                // source says (reflection, issue 9). Only the original source's
                // retransmissions are absorbed (RFC 3261 17.2.3 matching, 18.2.2 destination).
                return self.foreign_copy(ctx);
            }
            self.metrics
                .retransmissions
                .with_label_values(&["absorbed"])
                .inc();
            if let Some(b) = e.txn.on_retransmission() {
                // Over UDP to where the answers of this transaction go; over TCP on the
                // connection this copy came on, which may be a new one from the same host.
                let dest = match ctx.transport {
                    Transport::Datagram => e.dest,
                    Transport::Stream | Transport::Tls | Transport::Ws | Transport::Wss => {
                        self.response_destination(m, ctx)
                    }
                };
                self.send(dest, b);
            }
            return Action::Absorb;
        }
        if method == "CANCEL" {
            let ikey = ServerKey {
                method: "INVITE".into(),
                ..key.clone()
            };
            if self
                .servers
                .get(&ikey)
                .is_some_and(|e| !same_source(e, ctx))
            {
                // Only the INVITE's own source may cancel it: for a CANCEL from elsewhere
                // (a copy of the top Via is all it takes) the INVITE does not exist. Answered
                // statelessly, so that no transaction of its stands in the way of the real
                // CANCEL.
                self.metrics
                    .retransmissions
                    .with_label_values(&["foreign_source"])
                    .inc();
                return Action::Reply {
                    code: 481,
                    phrase: "Call/Transaction Does Not Exist".into(),
                    extra: Vec::new(),
                };
            }
        }
        if let Some(full) = self.transactions_full(ctx) {
            return full;
        }
        self.open_server(&key, m, ctx);
        // An allow-listed source receives what we send it: Timer G may resend to it.
        if in_any(&self.allow, ctx.source.ip())
            && let Some(e) = self.servers.get_mut(&key)
        {
            e.txn.verified();
        }
        self.authenticated_source = None;
        let result = if method == "CANCEL" {
            self.cancel(&key, now)
        } else {
            self.route_request(&key, m, ctx, method, now)
        };
        // Digest success within this transaction proves the source receives at its address
        // (the nonce was sent there).
        if self.authenticated_source.take() == Some(ctx.source)
            && let Some(e) = self.servers.get_mut(&key)
        {
            e.txn.verified();
        }
        match result {
            Err(l) => {
                // Our own final answer (401, 407, 403, 404...) is the first response the
                // UAC sees: without Timer G, its INVITE retransmissions (Timer A) recover
                // a lost answer, and sources that never ACK get no stream of retransmissions.
                if let Some(e) = self.servers.get_mut(&key) {
                    e.txn.local();
                }
                self.reply(&key, &l, now);
            }
            Ok(()) if method == "INVITE" => {
                // RFC 3261 16.2: a stateful proxy answers a forwarded INVITE with 100 at
                // once, which stops the UAC's retransmissions while the branches ring. Not
                // before a local answer: after a 100 the UAC stops retransmitting, and a
                // lost answer without Timer G would never be recovered.
                if self.servers.get(&key).is_some_and(|e| !e.txn.is_final()) {
                    self.reply(&key, &answer(100, "Trying"), now);
                }
            }
            Ok(()) => {}
        }
        self.gauges();
        Action::Absorb
    }

    /// The transaction table is full, in total or for this source (allow-listed sources are
    /// bound by the total only): 503 with Retry-After (RFC 3261 21.5.4), statelessly, counted.
    pub(super) fn transactions_full(&mut self, ctx: &Context) -> Option<Action> {
        let (total, per_source) = self.max_transactions;
        let what = if self.servers.len() >= total {
            "transactions_total"
        } else if !in_any(&self.allow, ctx.source.ip())
            && self
                .transactions_per_source
                .get(&crate::server::slots::source_key(ctx.source.ip()))
                .is_some_and(|&n| n >= per_source)
        {
            "transactions_per_source"
        } else {
            return None;
        };
        crate::metrics::limit_hit(what, Some(ctx.source.ip()));
        self.metrics.local_replies.with_label_values(&["503"]).inc();
        Some(Action::Reply {
            code: 503,
            phrase: "Service Unavailable".into(),
            extra: vec!["Retry-After: 5".into()],
        })
    }

    /// A request matching a transaction opened by another source: dropped and counted.
    pub(super) fn foreign_copy(&mut self, ctx: &Context) -> Action {
        debug!(source = %ctx.source, "copy of another source's transaction dropped");
        self.metrics
            .retransmissions
            .with_label_values(&["foreign_source"])
            .inc();
        Action::Drop {
            reason: "foreign_source_retransmission",
        }
    }

    /// The parties (caller, callee) sealed in the stamp of one of the Route entries we
    /// popped, when it is the stamp of this request's dialog (its Call-ID, and the From-tag
    /// of the request that created it: this request's From- or To-tag).
    pub(super) fn dialog_of(
        &self,
        popped: &[String],
        m: &Message<'_>,
    ) -> Option<(Destination, Destination)> {
        let call_id = m.get(HeaderName::CallId).unwrap_or("");
        let tag = |h| {
            m.get(h)
                .and_then(|v| name_addr::parse_single(v).ok())
                .and_then(|a| a.tag)
                .unwrap_or("")
        };
        let tags = [tag(HeaderName::From), tag(HeaderName::To)];
        popped
            .iter()
            .find_map(|e| route::open_dialog(&self.rr_key, call_id, &tags, &route::stamp_of(e)?))
    }

    /// Where an in-dialog request from `source` goes: to the other party of its dialog,
    /// only from one of the two (by address: a UDP phone may send from another port than
    /// it receives on, a TCP one from a new connection). When both parties share an
    /// address, the exact source decides, else the request's own next hop. Err: the
    /// reason it is refused.
    /// A peer in `[proxy] reply_from_any` (a load-balanced trunk) is one party from any
    /// address of the same listed network.
    pub(super) fn other_party(
        source: SocketAddr,
        text_hop: Option<Destination>,
        caller: Destination,
        callee: Destination,
        any_source: &[IpNet],
    ) -> Result<Destination, &'static str> {
        let ip = source.ip().to_canonical();
        let is = |d: Destination| {
            let p = d.addr.ip().to_canonical();
            p == ip || any_source.iter().any(|n| n.contains(&p) && n.contains(&ip))
        };
        let from_caller = is(caller);
        let from_callee = is(callee);
        let same =
            |d: Destination| d.addr.ip().to_canonical() == ip && d.addr.port() == source.port();
        match (from_caller, from_callee) {
            (false, false) => Err("not_a_party"),
            (true, false) => Ok(callee),
            (false, true) => Ok(caller),
            (true, true) => {
                if same(caller) && !same(callee) {
                    Ok(callee)
                } else if same(callee) && !same(caller) {
                    Ok(caller)
                } else {
                    match text_hop {
                        Some(t) if t.addr == callee.addr => Ok(callee),
                        Some(t) if t.addr == caller.addr => Ok(caller),
                        _ => Err("ambiguous"),
                    }
                }
            }
        }
    }

    /// An in-dialog request's next hop: the other party of the dialog our stamp names.
    /// Err: the answer (404 without our stamp of this dialog, 403 from or toward anyone
    /// else), counted in `sipfw_dialog_refused_total`.
    pub(super) fn dialog_hop(
        &self,
        popped: &[String],
        m: &Message<'_>,
        msg: &SipMsg,
        source: SocketAddr,
    ) -> Result<Destination, LocalReply> {
        let Some((caller, callee)) = self.dialog_of(popped, m) else {
            self.refused("bad_stamp");
            return Err(answer(404, "Not Here"));
        };
        let text = route::next_hop(msg, self.outbound);
        Self::other_party(source, text, caller, callee, &self.reply_from_any).map_err(|reason| {
            self.refused(reason);
            answer(403, "Not A Party Of This Dialog")
        })
    }

    /// A next hop taken from the text of a request (Request-URI, Route): loopback,
    /// link-local, unspecified and our own addresses only when `[proxy] internal_next_hops`
    /// lists them (nobody outside steers us to the services of this host or its link).
    pub(super) fn text_hop(&self, d: Destination) -> Result<Destination, LocalReply> {
        let ip = d.addr.ip().to_canonical();
        let internal = ip.is_loopback()
            || ip.is_unspecified()
            || match ip {
                IpAddr::V4(v) => v.is_link_local(),
                IpAddr::V6(v) => v.is_unicast_link_local(),
            }
            || self.local.is_our_ip(ip);
        if internal && !in_any(&self.internal_next_hops, ip) {
            self.refused("internal_hop");
            return Err(answer(403, "Forbidden Next Hop"));
        }
        Ok(d)
    }

    /// A server transaction for a new request.
    pub(super) fn open_server(&mut self, key: &ServerKey, m: &Message<'_>, ctx: &Context) {
        let rctx = owned_ctx(m);
        let dest = self.response_destination(m, ctx);
        let kind = if key.method == "INVITE" {
            Kind::Invite
        } else {
            Kind::NonInvite
        };
        *self
            .transactions_per_source
            .entry(crate::server::slots::source_key(ctx.source.ip()))
            .or_insert(0) += 1;
        self.servers.insert(
            key.clone(),
            ServerEntry {
                txn: ServerTxn::new(kind, ctx.transport.is_reliable()),
                dest,
                rctx,
                source: ctx.source,
                fork: None,
            },
        );
    }

    /// Where responses to a request go (RFC 3261 18.2.2, RFC 3581): back on the connection
    /// over TCP; over UDP to the source address, at the source port when rport applies.
    pub(super) fn response_destination(&self, m: &Message<'_>, ctx: &Context) -> Destination {
        match ctx.transport {
            Transport::Datagram => Destination {
                addr: reply::udp_destination(
                    &ReplyContext::from_message(m),
                    ctx.source,
                    self.force_rport,
                ),
                transport: Transport::Datagram,
            },
            // TLS too: the answer goes back on the connection it came on.
            t @ (Transport::Stream | Transport::Tls | Transport::Ws | Transport::Wss) => {
                Destination {
                    addr: ctx.source,
                    transport: t,
                }
            }
        }
    }

    /// Answer within the server transaction `key`.
    pub(super) fn reply(&mut self, key: &ServerKey, l: &LocalReply, now: Instant) {
        self.fraud_final(key, l.code);
        let Some(e) = self.servers.get_mut(key) else {
            return;
        };
        let bytes = reply::build(
            &e.rctx,
            &Reply {
                code: l.code,
                phrase: l.phrase,
                extra: &l.extra,
                // No Server header: lean answers (issue 9, amplification).
                server: "",
            },
            e.source,
        );
        if let Some(b) = e.txn.respond(l.code, bytes, now, &self.timers) {
            let dest = e.dest;
            self.send(dest, b);
            self.metrics
                .local_replies
                .with_label_values(&[&l.code.to_string()])
                .inc();
        }
        self.schedule(TimerKey::Server(key.clone()));
    }

    /// Relay a response from downstream within the server transaction `key`.
    pub(super) fn relay(&mut self, key: &ServerKey, code: u16, resp: &SipMsg, now: Instant) {
        self.fraud_final(key, code);
        let Some(e) = self.servers.get_mut(key) else {
            return;
        };
        if let Some(b) = e.txn.respond(code, resp.to_bytes(), now, &self.timers) {
            let dest = e.dest;
            self.send(dest, b);
            self.metrics
                .forwarded
                .with_label_values(&["response"])
                .inc();
        }
        self.schedule(TimerKey::Server(key.clone()));
    }

    /// CANCEL (RFC 3261 16.10): 200 to it, CANCEL every branch of the INVITE; 481 when no
    /// INVITE transaction matches.
    pub(super) fn cancel(&mut self, key: &ServerKey, now: Instant) -> Result<(), LocalReply> {
        let ikey = ServerKey {
            method: "INVITE".into(),
            ..key.clone()
        };
        let Some(inv) = self.servers.get_mut(&ikey) else {
            return Err(answer(481, "Call/Transaction Does Not Exist"));
        };
        let pending = !inv.txn.is_final();
        if let Some(f) = inv.fork.as_mut()
            && pending
        {
            f.cancelled = true;
        }
        if let Some(e) = self.servers.get_mut(key) {
            e.txn.local();
        }
        self.reply(key, &answer(200, "OK"), now);
        if pending && self.cancel_resolution(&ikey) {
            // Still waiting for DNS: never forwarded, the INVITE ends here.
            self.reply(&ikey, &answer(487, "Request Terminated"), now);
        } else if pending {
            self.cancel_branches(&ikey, None, now);
            self.maybe_finish(&ikey, now);
        }
        Ok(())
    }

    /// Decide where a new request goes, or the answer.
    pub(super) fn route_request(
        &mut self,
        key: &ServerKey,
        m: &Message<'_>,
        ctx: &Context,
        method: &str,
        now: Instant,
    ) -> Result<(), LocalReply> {
        // RFC 3261 16.3 step 4: the same request back through us is a loop.
        if self.looped(m) {
            self.refused("loop");
            return Err(answer(482, "Loop Detected"));
        }
        let mut msg = SipMsg::from_parsed(m);
        forward::stamp_top_via(&mut msg, ctx.source, self.force_rport);
        let trusted = self.is_trusted(ctx);
        let in_dialog = m
            .get(HeaderName::To)
            .and_then(|t| name_addr::parse_single(t).ok())
            .is_some_and(|a| a.tag.is_some());
        let popped = route::pop_our_routes(&mut msg, &self.local);

        // A request another cluster node sends through the Path of a registration whose
        // flow we hold (RFC 3327): relayed to that flow, for a cluster node only.
        if !in_dialog && let Some(seal) = popped.iter().find_map(|e| route::cluster_hop_of(e)) {
            return self.cluster_hop(key, msg, m, ctx, method, &seal, now);
        }

        if in_dialog {
            // Only what our Record-Route of this very dialog brings back is relayed (loose
            // routing), from one of its parties to the other; a Route naming us without our
            // stamp is not ours.
            let dest = self.dialog_hop(&popped, m, &msg, ctx.source)?;
            self.fraud_in_dialog(m, method, now);
            if !trusted {
                // In-dialog requests are not authenticated: nobody outside the trust
                // domain asserts an identity (RFC 3325 5).
                self.strip_identity(&mut msg);
            }
            return self.forward(key, msg, vec![(None, dest)], method, None, now);
        }

        // Initial request. A preloaded route from outside is not honoured: it would let
        // anyone steer us anywhere.
        if !trusted {
            msg.remove(HeaderName::Route);
        } else if !route::routes(&msg).is_empty() {
            // A Route naming a domain is resolved by DNS (RFC 3263), after the checks below.
            let by_dns = route::routes(&msg)
                .first()
                .and_then(|e| route::entry_uri(e))
                .filter(|u| resolve::names_domain(u))
                .map(str::to_string);
            let dest = match by_dns {
                Some(_) => None,
                None => Some(self.text_hop(
                    route::next_hop(&msg, self.outbound).ok_or(answer(404, "No Route"))?,
                )?),
            };
            if method == "INVITE" {
                let ruri = msg.request_uri().unwrap_or("").to_string();
                let account = format!("peer:{}", ctx.source.ip().to_canonical());
                let peer = Some(ctx.source.ip().to_canonical());
                self.fraud_check(key, m, &ruri, &account, peer, true, ctx.source, now)?;
            }
            forward::strip_credentials(&mut msg, |r| self.local.is_our_domain(r));
            let rr = forward::creates_dialog(method).then_some(ctx.transport);
            return match (dest, by_dns) {
                (Some(dest), _) => self.forward(key, msg, vec![(None, dest)], method, rr, now),
                (None, Some(uri)) => self.resolve_later(key, msg, uri, method, rr, now),
                (None, None) => Err(answer(404, "No Route")),
            };
        }

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
                (Some(_), Some(_)) => self.register(key, m, ctx, trusted, &ruri_text, now),
                _ => Err(answer(403, "Not Our Domain")),
            };
        }
        if let Some(u) = &ruri
            && u.user.is_none()
            && to_us
        {
            // Addressed to the proxy itself: OPTIONS is a keep-alive ping.
            return Err(if method == "OPTIONS" {
                LocalReply {
                    code: 200,
                    phrase: "OK",
                    extra: vec![ALLOW.into()],
                }
            } else {
                answer(404, "Not Found")
            });
        }

        // Who is asking: a trusted peer, one of our users (then prove it), or an outsider.
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
        let mut asserted = None;
        // Whose call it is, for the fraud guard: an authenticated user or a trusted peer.
        let mut account = None;
        let sender = if trusted {
            account = Some(format!("peer:{}", ctx.source.ip().to_canonical()));
            Sender::Trusted
        } else if let Some(realm) = &from_domain {
            let user = from_user.clone().unwrap_or_default();
            let who = self.authenticate(m, ctx, method, &ruri_text, realm, &[&user], true, now)?;
            asserted = Some(self.asserted_identity(m, &who, realm));
            account = Some(format!("{who}@{realm}"));
            Sender::LocalUser
        } else {
            Sender::Outsider
        };
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
            // Issue 12: what this account may call, how much and how often.
            let foreign = target == Target::Foreign;
            let peer = if trusted {
                Some(ctx.source.ip().to_canonical())
            } else if foreign {
                self.outbound.map(|o| o.ip().to_canonical())
            } else {
                None
            };
            self.fraud_check(key, m, &ruri_text, account, peer, foreign, ctx.source, now)?;
        }
        forward::strip_credentials(&mut msg, |r| self.local.is_our_domain(r));

        let targets = match (&ruri, &local_domain) {
            (Some(u), Some(domain)) => {
                let user = u.user.unwrap_or_default();
                let aor = format!("{user}@{domain}");
                let bindings = self.store.lookup(&aor, now);
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
                            routed.push((Some(b.contact.clone()), None, binding_destination(&b)))
                        }
                        // Another node holds the flow (RFC 3327): through its Path URI,
                        // sealed for this request so that it relays for cluster nodes only.
                        Some(path) => {
                            let Some(dest) = route::resolve(path, None) else {
                                self.refused("bad_path");
                                continue;
                            };
                            let seal = route::seal_cluster_hop(
                                &self.rr_key,
                                unix,
                                &aor,
                                &call_id,
                                &b.contact,
                            );
                            let route = format!("<{path};{}={seal}>", route::CLUSTER_PARAM);
                            routed.push((Some(b.contact.clone()), Some(route), dest));
                        }
                    }
                }
                if routed.is_empty() {
                    return Err(self.unavailable());
                }
                let rr = forward::creates_dialog(method).then_some(ctx.transport);
                return self.forward_routed(key, msg, routed, method, rr, now);
            }
            _ if to_us => {
                // A user at one of our addresses while we serve no domain: nobody is here.
                return Err(self.unavailable());
            }
            _ => {
                if let Some(name) = self.outbound_name.clone() {
                    // The outbound proxy by name: where DNS says, with failover.
                    let rr = forward::creates_dialog(method).then_some(ctx.transport);
                    return self.resolve_later(key, msg, name, method, rr, now);
                }
                let dest = match self.outbound {
                    Some(addr) => Destination {
                        addr,
                        transport: Transport::Datagram,
                    },
                    // A foreign domain and no outbound proxy: where DNS says (RFC 3263).
                    None if resolve::names_domain(&ruri_text) => {
                        let rr = forward::creates_dialog(method).then_some(ctx.transport);
                        return self.resolve_later(key, msg, ruri_text, method, rr, now);
                    }
                    None => self.text_hop(
                        route::resolve(&ruri_text, None)
                            .ok_or(answer(404, "No Route To Destination"))?,
                    )?,
                };
                vec![(None, dest)]
            }
        };
        let rr = forward::creates_dialog(method).then_some(ctx.transport);
        self.forward(key, msg, targets, method, rr, now)
    }

    /// The answer for a user who is unknown or not registered (`[proxy] unavailable`).
    pub(super) fn unavailable(&self) -> LocalReply {
        match self.unavailable {
            404 => answer(404, "Not Found"),
            _ => answer(480, "Temporarily Unavailable"),
        }
    }

    /// Digest authentication. Ok: the user; Err: the challenge or refusal to answer with.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn authenticate(
        &mut self,
        m: &Message<'_>,
        ctx: &Context,
        method: &str,
        ruri: &str,
        realm: &str,
        must_be: &[&str],
        proxy: bool,
        now: Instant,
    ) -> Result<String, LocalReply> {
        let (cred_header, chal_header) = if proxy {
            ("Proxy-Authorization", "Proxy-Authenticate")
        } else {
            ("Authorization", "WWW-Authenticate")
        };
        let values: Vec<&str> = m
            .headers
            .iter()
            .filter(
                |h| matches!(h.name, HeaderName::Other(n) if n.eq_ignore_ascii_case(cred_header)),
            )
            .map(|h| h.value.as_ref())
            .collect();
        let secs = self.unix_secs(now);
        let local = &self.local;
        let names_us = |u: &str| matches!(uri::parse(u), Ok(Uri::Sip(s)) if local.is_us(&s));
        let req = auth::Request {
            method,
            uri: ruri,
            uri_also_ok: &names_us,
            realm,
            must_be,
            client: ctx.source.ip(),
        };
        let challenge = |core: &Core, stale: bool| LocalReply {
            code: if proxy { 407 } else { 401 },
            phrase: if proxy {
                "Proxy Authentication Required"
            } else {
                "Unauthorized"
            },
            extra: core
                .auth
                .challenges(realm, stale, secs, ctx.source.ip())
                .into_iter()
                .map(|c| format!("{chal_header}: {c}"))
                .collect(),
        };
        match self.auth.verify(&values, &req, secs) {
            Outcome::Authenticated { user } => {
                self.authenticated_source = Some(ctx.source);
                // A login from a network this account has not used lately (issue 12).
                self.fraud
                    .login(&format!("{user}@{realm}"), ctx.source.ip(), secs);
                self.metrics.auth.with_label_values(&["success"]).inc();
                self.observer.authenticated(ctx.source, &user);
                Ok(user)
            }
            Outcome::Challenge { stale, failure } => {
                let label = match failure {
                    Some(f) => {
                        debug!(source = %ctx.source, reason = f, "authentication failed");
                        self.observer
                            .auth_failure(ctx.source, must_be.first().copied(), f);
                        f
                    }
                    None if stale => "stale",
                    None => "challenge",
                };
                self.metrics.auth.with_label_values(&[label]).inc();
                Err(challenge(self, stale))
            }
            Outcome::Forbidden { reason } => {
                self.metrics.auth.with_label_values(&[reason]).inc();
                self.observer
                    .auth_failure(ctx.source, must_be.first().copied(), reason);
                Err(answer(403, "Forbidden"))
            }
        }
    }

    /// A request from another cluster node for a contact whose flow we hold: its Route
    /// named our Path URI with a seal made under the cluster's key for this very Call-ID
    /// and Request-URI (`route::open_cluster_hop`). Relayed to the flow of our binding of
    /// that contact, record-routed (the phone's in-dialog requests come back through us);
    /// the node it came from authenticated and checked the caller. A missing or wrong seal
    /// (an outsider writing our Path into a Route) is refused: no open relay.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn cluster_hop(
        &mut self,
        key: &ServerKey,
        mut msg: SipMsg,
        m: &Message<'_>,
        ctx: &Context,
        method: &str,
        seal: &str,
        now: Instant,
    ) -> Result<(), LocalReply> {
        let call_id = m.get(HeaderName::CallId).unwrap_or("");
        let ruri = msg.request_uri().unwrap_or("").to_string();
        let Some(aor) =
            route::open_cluster_hop(&self.rr_key, self.unix_secs(now), seal, call_id, &ruri)
        else {
            debug!(source = %ctx.source, "cluster hop without a valid seal refused");
            self.refused("cluster_hop");
            return Err(answer(403, "Forbidden"));
        };
        let Some(b) = self
            .store
            .lookup(&aor, now)
            .into_iter()
            .find(|b| b.path.is_none() && b.contact.eq_ignore_ascii_case(&ruri))
        else {
            // The phone moved or left since the other node looked.
            return Err(self.unavailable());
        };
        // Nothing below our Path is honoured: the flow is the next hop.
        msg.remove(HeaderName::Route);
        let dest = binding_destination(&b);
        self.metrics
            .forwarded
            .with_label_values(&["cluster_hop"])
            .inc();
        let rr = forward::creates_dialog(method).then_some(ctx.transport);
        self.forward(key, msg, vec![(None, dest)], method, rr, now)
    }

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
        let user_of = |h| {
            m.get(h)
                .and_then(|v| name_addr::parse_single(v).ok())
                .and_then(|a| match a.uri {
                    Uri::Sip(u) => Some((u.user?.to_string(), u.host)),
                    _ => None,
                })
        };
        // A To that names no SIP user is not an address of record of ours.
        let (to_user, to_host) = user_of(HeaderName::To).ok_or(answer(403, "Not Our User"))?;
        let to_uri = SipUri {
            secure: false,
            user: Some(&to_user),
            password: None,
            host: to_host,
            port: None,
            params: "",
            headers: None,
        };
        let domain = self
            .local
            .domain_of(&to_uri)
            .ok_or(answer(403, "Not Our Domain"))?;
        let from_user = user_of(HeaderName::From).map(|u| u.0).unwrap_or_default();
        let authenticated = if trusted {
            None
        } else {
            Some(self.authenticate(
                m,
                ctx,
                "REGISTER",
                ruri,
                &domain,
                &[&from_user, &to_user],
                false,
                now,
            )?)
        };
        let mut contacts = Vec::new();
        let mut star = false;
        for v in m.all(HeaderName::Contact) {
            let r = name_addr::parse_contact(v, |a| {
                contacts.push(ContactParam {
                    uri: a.uri_text.to_string(),
                    expires: param(a.params, "expires").and_then(scalar::expires),
                })
            });
            match r {
                Ok(true) => star = true,
                Ok(false) => {}
                Err(_) => return Err(answer(400, "Bad Contact")),
            }
        }
        let req = Register {
            aor: format!("{to_user}@{domain}"),
            contacts,
            star,
            expires: m.get(HeaderName::Expires).and_then(scalar::expires),
            call_id: m.get(HeaderName::CallId).unwrap_or("").to_string(),
            cseq: m
                .get(HeaderName::CSeq)
                .and_then(scalar::cseq)
                .map_or(0, |c| c.0),
            source: ctx.source,
            transport: ctx.transport,
            authenticated,
        };
        let result = registrar::register(&self.registrar, self.store.as_mut(), &req, now);
        self.metrics.bindings.set(self.store.len() as i64);
        let l = match result {
            Ok(bindings) => {
                let mut extra = registrar::contact_lines(&bindings, now);
                // RFC 3327 5.3: the registrar returns the Path it stored only to a UA that
                // said it supports it. Ours is the edge's own Path URI (we are edge and
                // registrar in one: nothing between the phone and us adds one), stored
                // with the binding in the cluster whether or not the UA supports Path: it
                // steers the other nodes, never the UA.
                if let Some(p) = &self.cluster_path
                    && !bindings.is_empty()
                    && m.all(HeaderName::Supported)
                        .flat_map(|v| v.split(','))
                        .any(|t| t.trim().eq_ignore_ascii_case("path"))
                {
                    extra.push(format!("Path: <{p}>"));
                }
                LocalReply {
                    code: 200,
                    phrase: "OK",
                    extra,
                }
            }
            Err(e) => {
                let (code, phrase, extra) = e.answer();
                LocalReply {
                    code,
                    phrase,
                    extra,
                }
            }
        };
        if let Some(e) = self.servers.get_mut(key) {
            e.txn.local();
        }
        self.reply(key, &l, now);
        Ok(())
    }

    /// Forward `msg` to every target (Request-URI, destination): one client transaction per
    /// branch, under the response context of the server transaction `key`. With
    /// `record_route_from` (the transport the request came on) each branch is
    /// record-routed for the transport it leaves on.
    pub(super) fn forward(
        &mut self,
        key: &ServerKey,
        msg: SipMsg,
        targets: Vec<(Option<String>, Destination)>,
        method: &str,
        record_route_from: Option<Transport>,
        now: Instant,
    ) -> Result<(), LocalReply> {
        let targets = targets.into_iter().map(|(u, d)| (u, None, d)).collect();
        self.forward_routed(key, msg, targets, method, record_route_from, now)
    }

    /// [`Core::forward`] with a Route entry of its own for some branches (the Path of a
    /// binding another cluster node holds, RFC 3327), put above the request's routes.
    pub(super) fn forward_routed(
        &mut self,
        key: &ServerKey,
        msg: SipMsg,
        targets: Vec<(Option<String>, Option<String>, Destination)>,
        method: &str,
        record_route_from: Option<Transport>,
        now: Instant,
    ) -> Result<(), LocalReply> {
        self.forward_with(
            key,
            msg,
            targets,
            Vec::new(),
            method,
            record_route_from,
            now,
        )
    }

    /// [`Core::forward`], with `alternates`: the further targets of a one-target forward
    /// whose name DNS resolved (RFC 3263 4.3), tried in order when a target fails.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn forward_with(
        &mut self,
        key: &ServerKey,
        mut msg: SipMsg,
        targets: Vec<(Option<String>, Option<String>, Destination)>,
        alternates: Vec<Destination>,
        method: &str,
        record_route_from: Option<Transport>,
        now: Instant,
    ) -> Result<(), LocalReply> {
        if forward::decrement_max_forwards(&mut msg).is_err() {
            return Err(answer(483, "Too Many Hops"));
        }
        // Never a hop to ourselves (RFC 3261 16.3 step 4): it would come back until
        // Max-Forwards runs out.
        let before = targets.len();
        let targets: Vec<_> = targets
            .into_iter()
            .filter(|(_, _, d)| !self.local.is_own_destination(d.addr))
            .collect();
        for _ in targets.len()..before {
            self.refused("own_address");
        }
        if targets.is_empty() {
            return Err(answer(482, "Loop Detected"));
        }
        let alternates: Vec<_> = alternates
            .into_iter()
            .filter(|d| !self.local.is_own_destination(d.addr))
            .collect();
        let one = targets.len() == 1;
        let mut fork = Fork::default();
        for (i, (ruri, route, dest)) in targets.into_iter().enumerate() {
            let mut branch_msg;
            let msg_for = match route {
                // RFC 3327: through the Path of the node that holds the flow.
                Some(r) => {
                    branch_msg = msg.clone();
                    branch_msg.push_front(HeaderName::Route, r);
                    &branch_msg
                }
                None => &msg,
            };
            let mut b =
                self.start_branch(key, msg_for, i, ruri, dest, method, record_route_from, now);
            if one && !alternates.is_empty() {
                self.with_failover.insert(ClientKey {
                    branch: b.branch.clone(),
                    method: method.to_string(),
                });
                b.failover = Some(Box::new(Failover {
                    msg: msg.clone(),
                    record_route_from,
                    alternates: alternates.clone(),
                }));
            }
            fork.branches.push(b);
        }
        if let Some(e) = self.servers.get_mut(key) {
            e.fork = Some(fork);
        }
        self.schedule(TimerKey::Server(key.clone()));
        Ok(())
    }

    /// Send branch `i` of the server transaction `key` (`msg`, Max-Forwards already
    /// decremented) to `dest`: its client transaction, and the branch to put in the fork.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start_branch(
        &mut self,
        key: &ServerKey,
        msg: &SipMsg,
        i: usize,
        ruri: Option<String>,
        dest: Destination,
        method: &str,
        record_route_from: Option<Transport>,
        now: Instant,
    ) -> Branch {
        let kind = if method == "INVITE" {
            Kind::Invite
        } else {
            Kind::NonInvite
        };
        // The loop tag of the request as it came (16.6 step 8), before any branch's
        // Request-URI changes.
        let loop_tag = {
            let ruri = msg.request_uri().unwrap_or("").to_string();
            let below = msg.top_via().map(str::to_string);
            let below = below
                .as_deref()
                .and_then(|v| via::parse_list(v).next())
                .and_then(Result::ok);
            let get = |h: HeaderName<'static>| msg.get(h).map(str::to_string);
            self.loop_tag(&ruri, &get, below.as_ref())
        };
        let privacy_id = msg
            .all(HeaderName::Other("Privacy"))
            .flat_map(|v| v.split([';', ',']))
            .any(|t| t.trim().eq_ignore_ascii_case("id"));
        // The caller as the dialog will reach it: where our responses go.
        let caller = self.servers.get(key).map(|e| e.dest);
        let from_tag = msg
            .get(HeaderName::From)
            .and_then(|f| name_addr::parse_single(f).ok())
            .and_then(|a| a.tag.map(str::to_string))
            .unwrap_or_default();
        let mut b = msg.clone();
        if let Some(u) = ruri {
            b.set_request_uri(&u);
        }
        if privacy_id && !in_any(&self.allow, dest.addr.ip()) {
            // RFC 3325 9.1, RFC 3323: `Privacy: id` keeps the asserted identity
            // inside the trust domain (allow-listed peers, e.g. the trunk, which must
            // honour it in turn).
            b.remove(HeaderName::Other("P-Asserted-Identity"));
        }
        if let Some(inbound) = record_route_from
            && let Some(caller) = caller
        {
            // Per branch: each may leave on another transport, and has its own callee.
            let local = &self.local;
            let call_id = b.get(HeaderName::CallId).unwrap_or("");
            let stamp = route::seal_dialog(&self.rr_key, call_id, &from_tag, caller, dest);
            let hostport = |t| local.hostport_for(t);
            forward::record_route(&mut b, hostport, inbound, dest.transport, &stamp);
        }
        let branch = self.new_branch(&loop_tag);
        forward::add_via(
            &mut b,
            dest.transport,
            &self.local.hostport_for(dest.transport),
            &branch,
        );
        let bytes = b.to_bytes();
        // A contact that answered nothing lately gets this request once: no Timer A/E
        // retransmissions (Timer B/F still ends the branch).
        let quiet = dest.transport == Transport::Datagram && self.is_silent(dest.addr, now);
        if quiet {
            self.metrics
                .silent_contacts
                .with_label_values(&["no_retransmit"])
                .inc();
        }
        let reliable = dest.transport.is_reliable() || quiet;
        let txn = ClientTxn::new(kind, reliable, bytes.clone(), now, &self.timers);
        self.send(dest, bytes);
        self.metrics.forwarded.with_label_values(&["request"]).inc();
        self.observer.client_transaction_created(&branch, dest);
        let cancel = (kind == Kind::Invite).then(|| (forward::cancel_for(&b).to_bytes(), dest));
        let ckey = ClientKey {
            branch: branch.clone(),
            method: method.to_string(),
        };
        self.clients.insert(
            ckey.clone(),
            ClientEntry {
                txn,
                req: b,
                dest,
                server: Some((key.clone(), i)),
            },
        );
        self.schedule(TimerKey::Client(ckey));
        Branch {
            branch,
            state: BranchState::Pending,
            timer_c: (kind == Kind::Invite).then(|| now + self.timers.c),
            cancel,
            cancel_pending: false,
            cancelled: false,
            failover: None,
        }
    }

    /// An ACK that matches no server transaction: the ACK of a 2xx, its own transaction,
    /// relayed statelessly along the route our Record-Route set up (RFC 3261 16.6, 13.2.2.4).
    pub(super) fn ack_2xx(&mut self, m: &Message<'_>, ctx: &Context) -> Action {
        let mut msg = SipMsg::from_parsed(m);
        let popped = route::pop_our_routes(&mut msg, &self.local);
        let Ok(dest) = self.dialog_hop(&popped, m, &msg, ctx.source) else {
            return Action::Drop {
                reason: "ack_no_route",
            };
        };
        forward::stamp_top_via(&mut msg, ctx.source, self.force_rport);
        if forward::decrement_max_forwards(&mut msg).is_err() {
            return Action::Drop {
                reason: "too_many_hops",
            };
        }
        // The same branch for retransmissions of the same ACK: derived from theirs.
        let mut h = std::hash::DefaultHasher::new();
        msg.top_via().unwrap_or("").hash(&mut h);
        self.salt.hash(&mut h);
        let branch = format!("{BRANCH_PREFIX}a{:x}", h.finish());
        forward::add_via(
            &mut msg,
            dest.transport,
            &self.local.hostport_for(dest.transport),
            &branch,
        );
        self.send(dest, msg.to_bytes());
        self.metrics.forwarded.with_label_values(&["ack"]).inc();
        Action::Absorb
    }
}

/// Whether a request comes from the source of the server transaction it matches: over UDP
/// the same address and port, over TCP the same host (a retransmission may come on a new
/// connection).
fn same_source(e: &ServerEntry, ctx: &Context) -> bool {
    match ctx.transport {
        // A WebSocket flow is its connection: the same address and port.
        Transport::Datagram | Transport::Ws | Transport::Wss => e.source == ctx.source,
        Transport::Stream | Transport::Tls => e.source.ip() == ctx.source.ip(),
    }
}
