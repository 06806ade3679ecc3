//! A request that passed the message layer: scanners, ACK and retransmission matching,
//! foreign copies, CANCEL's source, the transaction caps; then routing (`routing.rs`) or
//! CANCEL, and the local answer or 100 Trying.

use super::*;

impl Core {
    /// A request that passed the message layer.
    pub fn request(&mut self, m: &Message<'_>, ctx: &Context, now: Instant) -> Action {
        let StartLine::Request { method, .. } = m.start else {
            return Action::Absorb;
        };
        // Before anything reads the Call-ID (`super::hide`).
        let opened = self.open_call_id(m);
        let (m, wire_call_id) = match &opened {
            Some((inner, wire)) => (inner, Some(wire.clone())),
            None => (m, None),
        };
        if let Some(ua) = header(m, "User-Agent")
            && let Some(hit) = self.settings.scanners.matches(ua)
        {
            debug!(source = %ctx.source, user_agent = ua, hit, "scanner dropped");
            self.metrics.scanners.inc();
            self.observer.scanner(ctx.source, ua);
            return Action::Drop { reason: "scanner" };
        }
        let Some(key) = server_key(m, method) else {
            return Action::Drop { reason: "no_via" };
        };
        let mut r = Req {
            m,
            ctx,
            key,
            method,
            now,
            proved: false,
            arrived_sealed: wire_call_id.is_some(),
        };
        if method == "ACK" {
            return self.on_ack(&r);
        }
        if self.servers.contains_key(&r.key) {
            return self.on_retransmission(&r);
        }
        if method == "CANCEL"
            && let Some(refused) = self.foreign_cancel(&r.key, ctx)
        {
            return refused;
        }
        if let Err(bound) = self.open_server(&r.key, m, ctx, wire_call_id) {
            return self.transactions_full(bound, ctx);
        }
        // An allow-listed source receives what we send it: Timer G may resend to it.
        if in_any(&self.settings.allow, ctx.source.ip())
            && let Some(e) = self.servers.get_mut(&r.key)
        {
            e.txn.verified();
        }
        // Where what this request makes us send begins: a 100 Trying goes there.
        let first_send = self.sends.len();
        let result = if method == "CANCEL" {
            self.cancel(&r.key, now)
        } else {
            self.route_request(&mut r)
        };
        if let Err(l) = &result {
            self.report_refused_target(m, ctx, l.code);
        }
        // Digest success within this transaction proves the source receives at its address
        // (the nonce was sent there).
        if r.proved
            && let Some(e) = self.servers.get_mut(&r.key)
        {
            e.txn.verified();
        }
        self.answer_new(&r.key, method, result, first_send, now);
        self.gauges();
        Action::Absorb
    }

    /// An ACK. RFC 3261 17.2.3 matches it on the Via alone: only the transaction's own
    /// source may acknowledge (and so end) it. The ACK of our (or a relayed) non-2xx final
    /// ends here (hop by hop); any other is the ACK of a 2xx.
    fn on_ack(&mut self, r: &Req<'_>) -> Action {
        if let Some(e) = self.servers.get(&r.key)
            && !same_source(e, r.ctx)
        {
            // RFC 3261 17.2.3 matches on the Via alone; only the transaction's own source
            // may acknowledge (and so end) it.
            return self.foreign_copy(r.ctx);
        }
        if let Some(e) = self.servers.get_mut(&r.key)
            && e.txn.on_ack(r.now, &self.settings.timers)
        {
            // The ACK of our (or a relayed) non-2xx final: hop by hop, ends here.
            self.schedule(TimerKey::Server(r.key.clone()));
            return Action::Absorb;
        }
        self.ack_2xx(r)
    }

    /// A request of an open server transaction `key`: a retransmission from its source,
    /// absorbed (the last response sent again), or a copy from elsewhere.
    fn on_retransmission(&mut self, r: &Req<'_>) -> Action {
        let (m, ctx) = (r.m, r.ctx);
        let Some(e) = self.servers.get(&r.key) else {
            return Action::Absorb;
        };
        if !same_source(e, ctx) {
            // A copy of someone's request (same top Via) from another address: answering
            // it would send the stored response, up to 16 Vias of it, wherever a spoofed
            // source says (reflection). Only the original source's
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
                    answers::response_destination(m, ctx, self.settings.force_rport)
                }
            };
            self.send(dest, b);
        }
        Action::Absorb
    }

    /// A CANCEL whose INVITE another source opened: the answer, statelessly.
    fn foreign_cancel(&mut self, key: &ServerKey, ctx: &Context) -> Option<Action> {
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
            return Some(Action::Reply {
                code: 481,
                phrase: "Call/Transaction Does Not Exist".into(),
                extra: Vec::new(),
            });
        }
        None
    }

    /// After routing a new request: our own answer, or 100 Trying to a forwarded INVITE
    /// (sent before the INVITE's branches, from `first_send` in the send queue).
    fn answer_new(
        &mut self,
        key: &ServerKey,
        method: &str,
        result: Result<(), LocalReply>,
        first_send: usize,
        now: Instant,
    ) {
        match result {
            Err(l) => {
                // Our own final answer (401, 407, 403, 404...) is the first response the
                // UAC sees: without Timer G, its INVITE retransmissions (Timer A) recover
                // a lost answer, and sources that never ACK get no stream of retransmissions.
                if let Some(e) = self.servers.get_mut(key) {
                    e.txn.local();
                }
                self.reply(key, &l, now);
            }
            Ok(()) if method == "INVITE" => {
                // RFC 3261 16.2: a stateful proxy answers a forwarded INVITE with 100 at
                // once, which stops the UAC's retransmissions while the branches ring. Not
                // before a local answer: after a 100 the UAC stops retransmitting, and a
                // lost answer without Timer G would never be recovered.
                if self.servers.get(key).is_some_and(|e| !e.txn.is_final()) {
                    let queued = self.sends.len();
                    self.reply(key, &answer(100, "Trying"), now);
                    // The 100 leaves before the INVITE it answers: sent after it, it could
                    // reach the caller after the callee's 180 or 200, which another worker
                    // may relay meanwhile, and a UAC past its 100 takes it as out of order.
                    if self.sends.len() == queued + 1 && first_send <= queued {
                        self.send_last_at(first_send);
                    }
                }
            }
            Ok(()) => {}
        }
    }

    /// Our final answer to a new request that names a user who is not there to reach (404
    /// and 480 for unknown or unregistered users, `[proxy] unavailable`; 403 for targets we
    /// refuse): the observer counts distinct such users per source (`policy::sweep`).
    /// Challenges (401, 407) are not refusals: every user, known or not, gets one.
    fn report_refused_target(&self, m: &Message<'_>, ctx: &Context, code: u16) {
        if !matches!(code, 403 | 404 | 480) {
            return;
        }
        let StartLine::Request { method, uri: ruri } = m.start else {
            return;
        };
        // A REGISTER names its target in To (its Request-URI is the domain: RFC 3261 10.2).
        let target = if method == "REGISTER" {
            match m
                .get(HeaderName::To)
                .and_then(|t| name_addr::parse_single(t).ok())
            {
                Some(to) => to.uri_text,
                None => return,
            }
        } else {
            ruri
        };
        let user = match uri::parse(target) {
            Ok(Uri::Sip(u)) => u.user,
            // RFC 3966: the number is the target.
            Ok(Uri::Tel(number)) => Some(number.split(';').next().unwrap_or(number)),
            _ => None,
        };
        if let Some(user) = user.filter(|u| !u.is_empty()) {
            self.observer.refused_target(ctx.source, user, code);
        }
    }

    /// The transaction table is full (`what`: in total or for this source; allow-listed
    /// sources are bound by the total only): 503 with Retry-After (RFC 3261 21.5.4),
    /// statelessly, counted.
    fn transactions_full(&mut self, what: &'static str, ctx: &Context) -> Action {
        crate::metrics::limit_hit(what, Some(ctx.source.ip()));
        self.metrics.local_reply(503);
        Action::Reply {
            code: 503,
            phrase: "Service Unavailable".into(),
            extra: vec!["Retry-After: 5".into()],
        }
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
