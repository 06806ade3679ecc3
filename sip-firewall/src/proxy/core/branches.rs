//! Forwarding: one client transaction per branch (RFC 3261 16.6), Record-Route per
//! branch, DNS failover targets (RFC 3263 4.3), the Path route of another node's binding.

use super::*;

impl Core {
    /// Forward `msg` to every target (Request-URI, destination): one client transaction per
    /// branch, under the response context of the server transaction `o.key`. With
    /// `o.record_route_from` (the transport the request came on) each branch is
    /// record-routed for the transport it leaves on.
    pub(super) fn forward(
        &mut self,
        o: &Onward<'_>,
        msg: SipMsg,
        targets: Vec<(Option<String>, Destination)>,
    ) -> Result<(), LocalReply> {
        let targets = targets.into_iter().map(|(u, d)| (u, None, d)).collect();
        self.forward_routed(o, msg, targets)
    }

    /// [`Core::forward`] with a Route entry of its own for some branches (the Path of a
    /// binding another cluster node holds, RFC 3327), put above the request's routes.
    pub(super) fn forward_routed(
        &mut self,
        o: &Onward<'_>,
        msg: SipMsg,
        targets: Vec<(Option<String>, Option<String>, Destination)>,
    ) -> Result<(), LocalReply> {
        self.forward_with(o, msg, targets, Vec::new())
    }

    /// [`Core::forward`], with `alternates`: the further targets of a one-target forward
    /// whose name DNS resolved (RFC 3263 4.3), tried in order when a target fails.
    pub(super) fn forward_with(
        &mut self,
        o: &Onward<'_>,
        mut msg: SipMsg,
        targets: Vec<(Option<String>, Option<String>, Destination)>,
        alternates: Vec<Destination>,
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
            self.refused(o.requester, "own_address");
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
            let mut b = self.start_branch(o, msg_for, i, ruri, dest);
            if one && !alternates.is_empty() {
                self.clients.fails_over(ClientKey {
                    branch: b.branch.clone(),
                    method: o.method.to_string(),
                });
                b.failover = Some(Box::new(Failover {
                    msg: msg.clone(),
                    record_route_from: o.record_route_from,
                    alternates: alternates.clone(),
                }));
            }
            fork.branches.push(b);
        }
        if let Some(e) = self.servers.get_mut(o.key) {
            e.fork = Some(fork);
        }
        self.schedule(TimerKey::Server(o.key.clone()));
        Ok(())
    }

    /// Send branch `i` of the server transaction `o.key` (`msg`, Max-Forwards already
    /// decremented) to `dest`: its client transaction, and the branch to put in the fork.
    pub(super) fn start_branch(
        &mut self,
        o: &Onward<'_>,
        msg: &SipMsg,
        i: usize,
        ruri: Option<String>,
        dest: Destination,
    ) -> Branch {
        let loop_tag = self.loop_tag_of(msg);
        let privacy_id = msg
            .all(HeaderName::Other("Privacy"))
            .flat_map(|v| v.split([';', ',']))
            .any(|t| t.trim().eq_ignore_ascii_case("id"));
        // The caller as the dialog will reach it: where our responses go.
        let caller = self.servers.get(o.key).map(|e| e.dest);
        let from_tag = msg
            .get(HeaderName::From)
            .and_then(|f| name_addr::parse_single(f).ok())
            .and_then(|a| a.tag.map(str::to_string))
            .unwrap_or_default();
        // Our Via and up to two Record-Route entries.
        let mut b = msg.copy_with_room(3);
        if let Some(u) = ruri {
            b.set_request_uri(&u);
        }
        if privacy_id && !in_any(&self.settings.allow, dest.addr.ip()) {
            // RFC 3325 9.1, RFC 3323: `Privacy: id` keeps the asserted identity
            // inside the trust domain (allow-listed peers, e.g. the trunk, which must
            // honour it in turn).
            b.remove(HeaderName::Other("P-Asserted-Identity"));
        }
        if let Some(inbound) = o.record_route_from
            && let Some(caller) = caller
        {
            // Per branch: each may leave on another transport, and has its own callee.
            let local = &self.local;
            let call_id = b.get(HeaderName::CallId).unwrap_or("");
            let stamp =
                self.keys
                    .stamp
                    .seal(self.unix_secs(o.now), call_id, &from_tag, caller, dest);
            // Each side's entry names the address that side reaches us at (RFC 5658).
            let caller_side = local.hostport_toward(inbound, caller.addr.ip());
            let callee_side = local.hostport_toward(dest.transport, dest.addr.ip());
            forward::record_route(
                &mut b,
                (inbound, &caller_side),
                (dest.transport, &callee_side),
                &stamp,
            );
        }
        // After the stamp, which binds the inner Call-ID; the client transaction keeps the
        // request as sent, so its CANCEL and ACK carry the same text.
        let seal = self.servers.get(o.key).and_then(ServerEntry::call_id_seal);
        let from = caller.map_or(dest.addr.ip(), |c| c.addr.ip());
        self.hide_call_id(&mut b, dest, seal, (from, o.now));
        let branch = self.new_branch(&loop_tag);
        forward::add_via_toward(&mut b, &self.local, dest, &branch);
        self.send_branch(o, i, b, branch, dest)
    }

    /// The loop tag of a request as it came (16.6 step 8), before any branch's
    /// Request-URI changes.
    fn loop_tag_of(&self, msg: &SipMsg) -> String {
        let ruri = msg.request_uri().unwrap_or("").to_string();
        let below = msg.top_via().map(str::to_string);
        let below = below
            .as_deref()
            .and_then(|v| via::parse_list(v).next())
            .and_then(Result::ok);
        let get = |h: HeaderName<'static>| msg.get(h).map(str::to_string);
        self.loop_tag(&ruri, &get, below.as_ref(), &route::routes(msg).join(","))
    }

    /// Send `b`, branch `i` of the server transaction `o.key` with our Via (`branch`) on
    /// top, to `dest`: its client transaction, and the branch to put in the fork.
    fn send_branch(
        &mut self,
        o: &Onward<'_>,
        i: usize,
        b: SipMsg,
        branch: String,
        dest: Destination,
    ) -> Branch {
        let now = o.now;
        let kind = if o.method == "INVITE" {
            Kind::Invite
        } else {
            Kind::NonInvite
        };
        let bytes = self.outward(&b, dest, now);
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
        self.metrics.forward("request");
        self.observer.client_transaction_created(&branch, dest);
        let cancel = (kind == Kind::Invite).then(|| (forward::cancel_for(&b).to_bytes(), dest));
        let key = ClientKey {
            branch: branch.clone(),
            method: o.method.to_string(),
        };
        let server = Some((o.key.clone(), i));
        let out = Outgoing {
            key,
            kind,
            reliable,
            req: b,
            dest,
            server,
        };
        self.start_client(out, bytes, now);
        Branch {
            branch,
            state: BranchState::Pending,
            timer_c: (kind == Kind::Invite).then(|| now + self.settings.timers.c),
            cancel,
            cancel_pending: false,
            cancelled: false,
            failover: None,
        }
    }
}
