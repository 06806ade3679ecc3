//! In-dialog requests: the parties sealed in our Record-Route stamp, which of them a
//! request comes from and goes to (RFC 3261 16.12 loose routing), the ACK of a 2xx.

use super::*;

/// Where an in-dialog request goes, and how its Call-ID leaves toward the outside
/// (`super::hide`).
pub(super) struct Hop {
    pub(super) dest: Destination,
    /// It goes to the callee of a dialog made inside.
    pub(super) made_inside: bool,
    /// The ring secret that sealed the dialog's stamp (0: the current one).
    pub(super) secret: usize,
}

impl Core {
    /// Loose routing (RFC 3261 16.4): pop the Route entries at the top of `msg` that name
    /// us. More than [`route::MAX_OUR_ROUTES`] of them is refused before any stamp is
    /// opened, counted `too_many_routes`: on a strict reading of 16.4 each of our entries
    /// is one more pass through us, so such a route set asks for more hops than any honest
    /// one, answered as hops run out (483, RFC 3261 21.4.22).
    pub(super) fn pop_routes(
        &self,
        msg: &mut SipMsg,
        source: SocketAddr,
    ) -> Result<Vec<String>, LocalReply> {
        let popped = route::pop_our_routes(msg, &self.local);
        if popped.len() > route::MAX_OUR_ROUTES {
            self.refused(Some(source), "too_many_routes");
            return Err(answer(483, "Too Many Hops"));
        }
        Ok(popped)
    }

    /// The parties (caller, callee) sealed in the stamp of the topmost Route entry we
    /// popped that carries one, when it is the stamp of this request's dialog (its Call-ID,
    /// and the From-tag of the request that created it: this request's From- or To-tag),
    /// sealed under one of our secrets no longer than `[proxy] stamp_lifetime` ago. One
    /// stamp at most is opened: on a spiral our entries are adjacent and the topmost is the
    /// pass this request is on. Err: the reason it is refused (`bad_stamp`,
    /// `stamp_expired`).
    pub(super) fn dialog_of(
        &self,
        popped: &[String],
        m: &Message<'_>,
        now: Instant,
    ) -> Result<route::Opened, &'static str> {
        let call_id = m.get(HeaderName::CallId).unwrap_or("");
        let tag = |h| {
            m.get(h)
                .and_then(|v| name_addr::parse_single(v).ok())
                .and_then(|a| a.tag)
                .unwrap_or("")
        };
        let tags = [tag(HeaderName::From), tag(HeaderName::To)];
        let stamp = popped
            .iter()
            .find_map(|e| route::stamp_of(e))
            .ok_or("bad_stamp")?;
        let opened = self
            .keys
            .stamp
            .open(call_id, &tags, &stamp)
            .ok_or("bad_stamp")?;
        // Judged once authentic, so that `stamp_expired` counts only stamps we made. A
        // stamp from further ahead than the lifetime (a clock set back) is no better.
        if opened.issued.abs_diff(self.unix_secs(now)) > self.settings.stamp_lifetime.as_secs() {
            return Err("stamp_expired");
        }
        if opened.previous {
            self.metrics
                .auth_previous_key
                .with_label_values(&["stamp"])
                .inc();
        }
        Ok(opened)
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

    /// An in-dialog request's next hop: the other party of the dialog our stamp names,
    /// if it may be a next hop at all ([`Core::allowed_hop`]: a stamp forged with a leaked
    /// key steers us no further inward than a Request-URI could), but for `[proxy]
    /// outbound` and `[registrar] relay_to` (where the edge sends by configuration) and for a request from this very
    /// host (loopback or one of our addresses, which the kernel takes from no other host),
    /// whose sender reaches the host's services without us. Err: the answer (404 without
    /// our valid stamp of this dialog, 403 from or toward anyone else or toward an internal
    /// address), counted in `sipfw_dialog_refused_total`. With the next hop, how the
    /// request's Call-ID leaves toward the outside ([`Hop`]).
    pub(super) fn dialog_hop(
        &self,
        popped: &[String],
        m: &Message<'_>,
        msg: &SipMsg,
        source: SocketAddr,
        now: Instant,
    ) -> Result<Hop, LocalReply> {
        let opened = self.dialog_of(popped, m, now).map_err(|reason| {
            self.refused(Some(source), reason);
            answer(404, "Not Here")
        })?;
        let (caller, callee) = (opened.caller, opened.callee);
        let text = route::next_hop(msg, self.settings.outbound);
        let dest = Self::other_party(source, text, caller, callee, &self.reply_from_any).map_err(
            |reason| {
                self.refused(Some(source), reason);
                answer(403, "Not A Party Of This Dialog")
            },
        )?;
        // RFC 3261 12.1.2: the caller made the Call-ID.
        let made_inside = dest == callee && self.made_inside(caller.addr.ip());
        let hop = |dest| Hop {
            dest,
            made_inside,
            secret: opened.secret,
        };
        let from_host = {
            let ip = source.ip().to_canonical();
            ip.is_loopback() || self.local.is_our_ip(ip)
        };
        if from_host
            || self.settings.outbound == Some(dest.addr)
            || self
                .settings
                .registrar
                .relay_to
                .as_ref()
                .and_then(NextHop::addr)
                == Some(dest.addr)
        {
            return Ok(hop(dest));
        }
        Ok(hop(self.allowed_hop(dest, Some(source))?))
    }

    /// An ACK that matches no server transaction: the ACK of a 2xx, its own transaction,
    /// relayed statelessly along the route our Record-Route set up (RFC 3261 16.6, 13.2.2.4).
    pub(super) fn ack_2xx(&mut self, r: &Req<'_>) -> Action {
        let (m, ctx, now) = (r.m, r.ctx, r.now);
        let mut msg = SipMsg::from_parsed(m);
        let Ok(popped) = self.pop_routes(&mut msg, ctx.source) else {
            return Action::Drop {
                reason: "too_many_routes",
            };
        };
        let Ok(hop) = self.dialog_hop(&popped, m, &msg, ctx.source, now) else {
            return Action::Drop {
                reason: "ack_no_route",
            };
        };
        self.reveal_target(&mut msg);
        forward::stamp_top_via(&mut msg, ctx.source, self.settings.force_rport);
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
        let dest = hop.dest;
        forward::add_via_toward(&mut msg, &self.local, dest, &branch);
        let seal = (hop.made_inside || r.arrived_sealed).then_some(hop.secret);
        self.hide_call_id(&mut msg, dest, seal, (ctx.source.ip(), now));
        let bytes = self.outward(&msg, dest, now);
        self.send(dest, bytes);
        self.metrics.forward("ack");
        Action::Absorb
    }
}
