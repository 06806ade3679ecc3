//! Responses: matched to their client transaction (strays dropped), then the response
//! context of RFC 3261 16.7: relay provisionals and 2xx, keep the best final, CANCEL the
//! other branches.

use super::*;

/// The client transaction a response names: its topmost Via's branch (one of ours) and
/// its CSeq method.
fn client_key(m: &Message<'_>) -> Option<ClientKey> {
    let branch = m
        .get(HeaderName::Via)
        .and_then(|v| via::parse_list(v).next())
        .and_then(Result::ok)
        .and_then(|v| v.branch)?;
    let method = m.get(HeaderName::CSeq).and_then(scalar::cseq)?.1;
    branch.starts_with(BRANCH_PREFIX).then(|| ClientKey {
        branch: branch.to_string(),
        method: method.to_string(),
    })
}

impl Core {
    /// A response that passed the message layer: only within its client transaction.
    pub fn response(&mut self, m: &Message<'_>, ctx: &Context, now: Instant) -> Action {
        let StartLine::Response { code, .. } = m.start else {
            return Action::Absorb;
        };
        // The answer of a request that left with its Call-ID sealed: the inner one back
        // before it is relayed (`super::hide`).
        let opened = self.open_call_id(m);
        let m = opened.as_ref().map_or(m, |(inner, _)| inner);
        let revealed = self.reveal_bindings(m, now);
        let m = revealed.as_ref().unwrap_or(m);
        let Some(ckey) = client_key(m) else {
            return self.stray();
        };
        let timers = self.settings.timers;
        let Some(e) = self.clients.get(&ckey) else {
            return self.keepalive_answer(&ckey.branch, ctx);
        };
        // Only from where the request went, on the same transport (over TCP: the same
        // connection, whose peer is that address), unless `[proxy] reply_from_any` lists
        // the peer: a branch seen by someone else must not let them answer for the peer.
        let from_peer = ctx.transport == e.dest.transport
            && ctx.source.ip().to_canonical() == e.dest.addr.ip().to_canonical()
            && ctx.source.port() == e.dest.addr.port();
        if !from_peer && !in_any(&self.reply_from_any, e.dest.addr.ip()) {
            debug!(source = %ctx.source, expected = %e.dest.addr, "response from elsewhere");
            self.metrics.wrong_source.inc();
            return self.stray();
        }
        // It answers: retransmissions toward it again.
        self.silent.answered(&e.dest.addr);
        // It was reached: a later transport error is not a reason to try another target.
        self.clients.settled(&ckey);
        let relay_mode = self.relay_mode();
        let Some(e) = self.clients.get_mut(&ckey) else {
            return self.stray();
        };
        let to = m.get(HeaderName::To);
        let req = &e.req;
        let out = e
            .txn
            .on_response(code, now, &timers, || forward::ack_for(req, to).to_bytes());
        let dest = e.dest;
        let server = e.server.clone();
        let relayed = relay_mode::Sent::of(&e.req, relay_mode && code >= 200);
        if let Some(ack) = out.send {
            self.send(dest, ack);
        }
        self.schedule(TimerKey::Client(ckey.clone()));
        if !out.pass_up {
            self.metrics
                .retransmissions
                .with_label_values(&["absorbed"])
                .inc();
            return Action::Absorb;
        }
        if let Some((skey, idx)) = server {
            if !self.is_current(&skey, idx, &ckey.branch) {
                // A target we failed over from answers late: not this branch's any more.
                return Action::Absorb;
            }
            // RFC 3263 4.3: a 503 sends the request to the next target of the name.
            if code == 503 && self.fail_over(&skey, idx, "failover_503", now) {
                self.gauges();
                return Action::Absorb;
            }
            self.relayed_answer(relayed.as_ref(), &skey, code, m, now);
            let mut resp = SipMsg::from_parsed(m);
            resp.pop_via();
            self.mend_hidden(&mut resp, &ckey, dest);
            self.branch_response(&skey, idx, code, Some(resp), now);
        }
        self.gauges();
        Action::Absorb
    }

    /// A response from `dest` to the request of client transaction `ckey` (our Via popped):
    /// when that request left hidden (`super::hide`), given back what hiding took.
    fn mend_hidden(&self, resp: &mut SipMsg, ckey: &ClientKey, dest: Destination) {
        if !self.hides_toward(dest.addr.ip()) {
            return;
        }
        if let Some(sent) = self.clients.get(ckey).map(|c| &c.req) {
            hide::response_inward(resp, sent, self.record_routed(sent));
        }
    }

    pub(super) fn stray(&mut self) -> Action {
        self.metrics.stray.inc();
        Action::Drop {
            reason: crate::metrics::DROP_STRAY_RESPONSE,
        }
    }

    /// A response (None: a timeout, as 408) on branch `idx` of the server transaction `skey`.
    pub(super) fn branch_response(
        &mut self,
        skey: &ServerKey,
        idx: usize,
        code: u16,
        mut resp: Option<SipMsg>,
        now: Instant,
    ) {
        let invite = skey.method == "INVITE";
        // A relayed BYE's 2xx, or no answer at all, decides its call in the fraud guard.
        if (200..300).contains(&code) && resp.is_some() {
            self.fraud_bye_final(skey, idx, true, now);
        } else if resp.is_none() {
            self.fraud_bye_final(skey, idx, false, now);
        }
        let timer_c = self.settings.timers.c;
        let Some(fork) = self.servers.get_mut(skey).and_then(|e| e.fork.as_mut()) else {
            return;
        };
        let final_sent = fork.final_sent;
        let Some(b) = fork.branches.get_mut(idx) else {
            return;
        };
        // The first 2xx of this branch to an INVITE starts a dialog (fraud guard).
        let mut first_2xx = false;
        // What to do once the borrow of the fork ends.
        let (cancel_this, relay_it, cancel_others) = if b.state == BranchState::Done {
            // A 2xx retransmission (or a 2xx on a branch already given up): relay 2xx only,
            // so the UAC's dialog gets it (RFC 6026).
            (false, (200..300).contains(&code), false)
        } else {
            match code {
                100..=199 => {
                    b.state = BranchState::Provisional;
                    if code > 100 && !b.cancelled {
                        // RFC 3261 16.7 step 2: a provisional resets Timer C.
                        b.timer_c = Some(now + timer_c);
                    }
                    (
                        b.cancel_pending && !b.cancelled,
                        code > 100 && !final_sent,
                        false,
                    )
                }
                200..=299 => {
                    b.state = BranchState::Done;
                    first_2xx = invite;
                    fork.final_sent = true;
                    // RFC 3261 16.7 step 10: CANCEL the other branches.
                    (false, true, invite)
                }
                _ => {
                    b.state = BranchState::Done;
                    fork.offer(code, resp.take());
                    (false, false, invite && code >= 600)
                }
            }
        };
        if cancel_this {
            self.cancel_branch(skey, idx, now);
        }
        let refused = match (first_2xx, &resp) {
            (true, Some(r)) => self.fraud_answered(skey, idx, r, now),
            _ => None,
        };
        if relay_it && let Some(r) = &resp {
            self.relay(skey, code, r, now);
        }
        // A call the guard's books refused is ended once its 2xx went up.
        if let Some(d) = refused {
            self.end_call(&d, "fraud_hangup", now);
        }
        if cancel_others {
            self.cancel_branches(skey, Some(idx), now);
        }
        self.maybe_finish(skey, now);
    }

    /// Every branch is done and nothing final went up yet: send the best response (16.7).
    pub(super) fn maybe_finish(&mut self, skey: &ServerKey, now: Instant) {
        let Some(fork) = self.servers.get_mut(skey).and_then(|e| e.fork.as_mut()) else {
            return;
        };
        if fork.final_sent || !fork.all_done() {
            return;
        }
        fork.final_sent = true;
        let cancelled = fork.cancelled;
        match fork.take_best() {
            Some((code, Some(mut resp))) if !(cancelled && code == 408) => {
                // RFC 3261 16.7 step 6: a 503 becomes 500 (the UAC must not retry us
                // elsewhere because one downstream server is busy).
                let code = if code == 503 {
                    resp.start = "SIP/2.0 500 Server Error".into();
                    500
                } else {
                    code
                };
                self.relay(skey, code, &resp, now);
            }
            _ if cancelled => self.reply(skey, &answer(487, "Request Terminated"), now),
            _ => self.reply(skey, &answer(408, "Request Timeout"), now),
        }
    }

    /// CANCEL every unfinished branch but `except`: now when it rang, later when it did not
    /// answer yet (RFC 3261 9.1 forbids a CANCEL before a provisional).
    pub(super) fn cancel_branches(
        &mut self,
        skey: &ServerKey,
        except: Option<usize>,
        now: Instant,
    ) {
        let Some(fork) = self.servers.get_mut(skey).and_then(|e| e.fork.as_mut()) else {
            return;
        };
        let mut now_list = Vec::new();
        for (i, b) in fork.branches.iter_mut().enumerate() {
            if Some(i) == except || b.state == BranchState::Done || b.cancelled {
                continue;
            }
            match b.state {
                BranchState::Provisional => now_list.push(i),
                _ => b.cancel_pending = true,
            }
        }
        for i in now_list {
            self.cancel_branch(skey, i, now);
        }
    }

    /// Send the CANCEL of branch `idx` (a client transaction of its own).
    pub(super) fn cancel_branch(&mut self, skey: &ServerKey, idx: usize, now: Instant) {
        let give_up = now + self.settings.timers.b;
        let Some(b) = self
            .servers
            .get_mut(skey)
            .and_then(|e| e.fork.as_mut())
            .and_then(|f| f.branches.get_mut(idx))
        else {
            return;
        };
        let Some((bytes, dest)) = b.cancel.clone() else {
            return;
        };
        b.cancelled = true;
        b.cancel_pending = false;
        // After a CANCEL, wait for the 487 at most 64*T1, then give the branch up.
        b.timer_c = Some(give_up);
        let out = Outgoing {
            key: ClientKey {
                branch: b.branch.clone(),
                method: "CANCEL".into(),
            },
            kind: Kind::NonInvite,
            reliable: dest.transport.is_reliable(),
            req: SipMsg::request("CANCEL", "sip:invalid"),
            dest,
            server: None,
        };
        self.start_client(out, bytes, now);
    }
}
