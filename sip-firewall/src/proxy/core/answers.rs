//! Server transactions: opening one, where its responses go (RFC 3261 18.2.2, RFC 3581),
//! our own answers and relayed responses within it, and CANCEL (16.10).

use super::*;

impl Core {
    /// A server transaction for a new request; `wire_call_id`: its Call-ID as it came, when
    /// that was one of our seals (`m` has the inner one).
    pub(super) fn open_server(
        &mut self,
        key: &ServerKey,
        m: &Message<'_>,
        ctx: &Context,
        wire_call_id: Option<String>,
    ) -> Result<(), &'static str> {
        let exempt = in_any(&self.settings.allow, ctx.source.ip());
        let force_rport = self.settings.force_rport;
        let kind = if key.method == "INVITE" {
            Kind::Invite
        } else {
            Kind::NonInvite
        };
        self.servers.open(ctx.source.ip(), exempt, || {
            let e = ServerEntry {
                txn: ServerTxn::new(kind, ctx.transport.is_reliable()),
                dest: response_destination(m, ctx, force_rport),
                rctx: owned_ctx(m),
                source: ctx.source,
                fork: None,
                wire_call_id,
                made_inside: false,
                secret: 0,
            };
            (key.clone(), e)
        })
    }

    /// Answer within the server transaction `key`.
    pub(super) fn reply(&mut self, key: &ServerKey, l: &LocalReply, now: Instant) {
        self.fraud_final(key, l.code);
        let Some(e) = self.servers.get_mut(key) else {
            return;
        };
        // RFC 3261 8.2.6.2: the Call-ID as the request came.
        let rctx = match &e.wire_call_id {
            Some(w) => Cow::Owned(ReplyContext {
                call_id: Some(Cow::Owned(w.clone())),
                ..e.rctx.clone()
            }),
            None => Cow::Borrowed(&e.rctx),
        };
        let bytes = reply::build(
            &rctx,
            &Reply {
                code: l.code,
                phrase: l.phrase,
                extra: &l.extra,
                // No Server header: lean answers (amplification).
                server: "",
            },
            e.source,
        );
        if let Some(b) = e.txn.respond(l.code, bytes, now, &self.settings.timers) {
            let dest = e.dest;
            self.send_answer(dest, b);
            self.metrics.local_reply(l.code);
        }
        self.schedule(TimerKey::Server(key.clone()));
    }

    /// Relay a response from downstream within the server transaction `key`.
    pub(super) fn relay(&mut self, key: &ServerKey, code: u16, resp: &SipMsg, now: Instant) {
        self.fraud_final(key, code);
        let shown = self
            .servers
            .get(key)
            .map(|e| self.as_shown(e, code, resp, now));
        let resp = shown.as_ref().unwrap_or(resp);
        let Some(e) = self.servers.get_mut(key) else {
            return;
        };
        if let Some(b) = e
            .txn
            .respond(code, resp.to_bytes(), now, &self.settings.timers)
        {
            let dest = e.dest;
            self.send(dest, b);
            self.metrics.forward("response");
        }
        self.schedule(TimerKey::Server(key.clone()));
    }

    /// The response `resp` (`code`) as the source of the server transaction `e` gets it:
    /// with the Call-ID its request came with (RFC 3261 8.2.6.2), and hidden
    /// (`super::hide`) when that source is: a 3xx's Contacts sealed as redirect targets.
    fn as_shown(&self, e: &ServerEntry, code: u16, resp: &SipMsg, now: Instant) -> SipMsg {
        let mut out = resp.clone();
        if let Some(w) = &e.wire_call_id {
            out.replace_all(HeaderName::CallId, vec![w.clone()]);
        }
        let d = e.dest;
        if self.hides_toward(d.addr.ip()) {
            let side = self.local.hostport_toward(d.transport, d.addr.ip());
            hide::response_outward(&mut out, &self.local, &side);
            if (300..400).contains(&code) {
                let unix = self.unix_secs(now);
                let to = (side.as_str(), d.addr.ip());
                hide::hide_redirects(&mut out, &self.keys.contact, to, unix);
            } else {
                hide::hide_contacts(&mut out, &self.keys.contact, &side);
            }
        }
        out
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
}

/// Where responses to a request go (RFC 3261 18.2.2, RFC 3581): back on the connection
/// over TCP; over UDP to the source address, at the source port when rport applies
/// (`force_rport`: `[proxy] force_rport`).
pub(super) fn response_destination(
    m: &Message<'_>,
    ctx: &Context,
    force_rport: bool,
) -> Destination {
    match ctx.transport {
        Transport::Datagram => Destination {
            addr: reply::udp_destination(&ReplyContext::from_message(m), ctx.source, force_rport),
            transport: Transport::Datagram,
        },
        // TLS too: the answer goes back on the connection it came on.
        t @ (Transport::Stream | Transport::Tls | Transport::Ws | Transport::Wss) => Destination {
            addr: ctx.source,
            transport: t,
        },
    }
}
