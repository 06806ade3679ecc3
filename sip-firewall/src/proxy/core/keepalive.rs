//! The core's side of the NAT keep-alives (`registrar::keepalive` decides which flows, when,
//! and which are dead): flows tracked after each REGISTER taken here, pings sent (an
//! OPTIONS on UDP, RFC 3261 11; the double-CRLF ping of RFC 5626 4.4.1 on TCP, TLS and
//! WebSocket), their answers matched, and the bindings of dead or closed flows removed at
//! once, so that a call to them gets 480 instead of waiting for Timer B. In relay mode the
//! flows the registrar's 200s registered (`registrar::relay`) are kept alive alike, and a
//! dead or closed one leaves the relayed table at once (a request down its token: 430).
//!
//! A STUN Binding request on UDP (RFC 5626 4.4.2) is answered only from a flow held here
//! (kept alive, or a relayed registration's), and proves a kept-alive flow alive
//! ([`Core::flow_stun`]).
//!
//! Pings go only to registered (authenticated or allow-listed) contacts, down the flow their
//! REGISTER came on: a flow kept alive is never reached by a new connection
//! ([`Core::flow_of`], [`Core::held_flows`]).
//!
//! Metrics: `sipfw_registrar_keepalive_total{event}` (`stun_answered`, `stun_refused` among
//! them), `sipfw_registrar_keepalive_flows`.

use sip_firewall_sip::frame::PING;

use crate::{
    logging::Verdict,
    registrar::keepalive::{Answer, Flow, Member, Track},
};

use super::*;

/// One line per kind of keep-alive event at most this often (with the count folded in).
pub(super) const KEEPALIVE_LOG_EVERY: Duration = Duration::from_secs(10);

fn dest_of(flow: Flow) -> Destination {
    Destination {
        addr: flow.addr,
        transport: flow.transport,
    }
}

fn flow_of_dest(d: Destination) -> Flow {
    Flow {
        addr: d.addr,
        transport: d.transport,
    }
}

impl Core {
    /// Where requests for `b` go: its flow (see [`binding_destination`]).
    pub(super) fn flow_of(&self, b: &Binding) -> Destination {
        let held = self.keepalive.lock().holds(&Flow {
            addr: b.source,
            transport: b.transport,
        });
        binding_destination(b, held)
    }

    /// Of the destinations of `sends`, those that are flows kept alive: the server sends
    /// there only down the open flow, never over a new connection.
    pub(crate) fn held_flows(&self, sends: &[(Destination, Vec<u8>)]) -> Vec<Destination> {
        let mut held: Vec<Destination> = Vec::new();
        for (d, _) in sends {
            if d.transport.is_reliable()
                && !held.contains(d)
                && self.keepalive.lock().holds(&flow_of_dest(*d))
            {
                held.push(*d);
            }
        }
        held
    }

    /// A REGISTER of `aor` from `ctx` was taken: keep the flow of its bindings alive (a
    /// REGISTER proves the flow alive: its misses start again).
    pub(super) fn keep_alive(&mut self, aor: &str, ctx: &Context, now: Instant) {
        let bindings = self.store.lock().lookup(aor, now);
        for b in bindings {
            if b.path.is_some() || b.source != ctx.source || b.transport != ctx.transport {
                continue;
            }
            let t = self.keepalive.lock().track(aor, &b, now);
            self.tracked(t, ctx.source, now);
        }
        self.flows_gauge();
    }

    /// Relay mode: the registrar's 200 registered `flow` for `aor` with the REGISTER's
    /// Contact values `contacts` (`registrar::relay`): keep its contacts alive as a local
    /// binding's (the same mode decides: the flow is ours, only the binding is the
    /// registrar's).
    pub(super) fn keep_relayed_alive(
        &mut self,
        flow: Destination,
        aor: &str,
        contacts: &[String],
        now: Instant,
    ) {
        let mut uris = Vec::new();
        for v in contacts {
            // `*` and what does not parse name no contact to ping.
            let _ = name_addr::parse_contact(v, |a| uris.push(a.uri_text.to_string()));
        }
        for contact in uris {
            let t = self
                .keepalive
                .lock()
                .track_contact(aor, &contact, flow_of_dest(flow), now);
            self.tracked(t, flow.addr, now);
        }
        self.flows_gauge();
    }

    /// What tracking a contact of `source` did: a bound hit is counted and logged.
    fn tracked(&mut self, t: Track, source: SocketAddr, now: Instant) {
        match t {
            Track::Full => self.keepalive_event("table_full", Some(source), now),
            Track::MembersFull => self.keepalive_event("flow_full", Some(source), now),
            Track::Tracked | Track::NotKept => {}
        }
    }

    /// Pings due now, and the bindings of flows that left too many unanswered.
    pub(super) fn keepalive_tick(&mut self, now: Instant) {
        let tick = self.keepalive.lock().due(now);
        if let Some(why) = tick.deferred {
            self.keepalive_event(
                if why == "rate" {
                    "deferred_rate"
                } else {
                    "deferred_in_flight"
                },
                None,
                now,
            );
        }
        for (flow, members, branch) in tick.dead {
            self.close_branch(branch, flow);
            self.drop_flow(flow, &members, "removed_unanswered", now);
        }
        for flow in tick.checks {
            if self.live_member(flow, now).is_none() {
                let branch = self.keepalive.lock().forget(&flow);
                self.close_branch(branch, flow);
            }
        }
        for flow in tick.pings {
            let Some(member) = self.live_member(flow, now) else {
                // Its bindings went another way (removed, expired, registered elsewhere).
                let branch = self.keepalive.lock().forget(&flow);
                self.close_branch(branch, flow);
                continue;
            };
            if flow.transport == Transport::Datagram {
                self.ping_options(flow, &member);
                self.keepalive_count("ping_options");
            } else {
                self.send(dest_of(flow), PING.to_vec());
                self.keepalive_count("ping_crlf");
            }
        }
        self.flows_gauge();
    }

    /// A binding still riding `flow`.
    fn live_member(&self, flow: Flow, now: Instant) -> Option<Member> {
        // Not under the keep-alive lock: `rides` takes the store's.
        let members = self.keepalive.lock().members(&flow).to_vec();
        members.into_iter().find(|m| self.rides(m, flow, now))
    }

    /// Whether `m` is still registered over `flow`: bound here, or (relay mode) its flow
    /// registered for its address of record at the registrar.
    fn rides(&self, m: &Member, flow: Flow, now: Instant) -> bool {
        self.bound_here(m, flow, now)
            || self
                .relayed
                .lock()
                .get(&dest_of(flow), now)
                .is_some_and(|f| f.aor == m.aor)
    }

    /// Whether `flow` is a relayed registration's.
    fn relayed_holds(&self, flow: Destination, now: Instant) -> bool {
        self.relayed.lock().get(&flow, now).is_some()
    }

    /// Whether the binding `m` is still bound here over `flow`.
    fn bound_here(&self, m: &Member, flow: Flow, now: Instant) -> bool {
        self.store.lock().lookup(&m.aor, now).iter().any(|b| {
            b.path.is_none()
                && b.source == flow.addr
                && b.transport == flow.transport
                && b.contact.eq_ignore_ascii_case(&m.contact)
        })
    }

    /// An OPTIONS to the contact `m` over its UDP flow (RFC 3261 11), its answer awaited
    /// under a branch nobody can guess (the XDP stray filter learns it like any of ours).
    fn ping_options(&mut self, flow: Flow, m: &Member) {
        let branch = self.new_branch("ka");
        let host = self.local.hostport_for(Transport::Datagram);
        let bytes = format!(
            "OPTIONS {contact} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {host};branch={branch};rport\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:keepalive@{host}>;tag={tag}\r\n\
             To: <{contact}>\r\n\
             Call-ID: {branch}\r\n\
             CSeq: 1 OPTIONS\r\n\
             Content-Length: 0\r\n\r\n",
            contact = m.contact,
            tag = branch
                .get(BRANCH_PREFIX.len()..BRANCH_PREFIX.len() + 8)
                .unwrap_or("ka"),
        );
        self.send(dest_of(flow), bytes.into_bytes());
        self.observer
            .client_transaction_created(&branch, dest_of(flow));
        let old = self.keepalive.lock().sent(&flow, branch);
        self.close_branch(old, flow);
    }

    /// The branch of a ping no longer awaited: the XDP stray filter forgets it.
    fn close_branch(&self, branch: Option<String>, flow: Flow) {
        if let Some(b) = branch {
            self.observer
                .client_transaction_terminated(&b, dest_of(flow));
        }
    }

    /// A response matching no client transaction: the answer to an OPTIONS ping, when it
    /// names one in flight and comes from the flow pinged (anything else is a stray).
    pub(super) fn keepalive_answer(&mut self, branch: &str, ctx: &Context) -> Action {
        let answer = self
            .keepalive
            .lock()
            .answered(branch, ctx.source, ctx.transport);
        match answer {
            Answer::Alive(flow) => {
                self.close_branch(Some(branch.to_string()), flow);
                self.keepalive_count("answered");
                Action::Absorb
            }
            Answer::WrongSource => {
                debug!(source = %ctx.source, "keep-alive answer from elsewhere");
                self.metrics.wrong_source.inc();
                self.keepalive_count("wrong_source");
                self.stray()
            }
            Answer::Unknown => self.stray(),
        }
    }

    /// The single CRLF pong of RFC 5626 4.4.1 came on the connection `flow`.
    pub fn flow_pong(&mut self, flow: Destination) {
        if self.keepalive.lock().pong(&flow_of_dest(flow)) {
            self.keepalive_count("pong");
        }
    }

    /// A STUN Binding request came from the UDP `flow` (RFC 5626 4.4.2): answered only when
    /// the flow is registered here (kept alive, or a relayed registration's), because the
    /// answer is larger than the request and the edge never sends an unverified source more
    /// than it sent. It proves a kept-alive flow alive, as a pong does.
    pub fn flow_stun(&mut self, flow: Destination, now: Instant) -> bool {
        let held = self.keepalive.lock().pong(&flow_of_dest(flow)) || self.relayed_holds(flow, now);
        self.keepalive_count(if held {
            "stun_answered"
        } else {
            "stun_refused"
        });
        held
    }

    /// The connection `flow` closed: the bindings kept alive over it go at once (nothing
    /// else reaches a contact behind NAT), and so does a relayed registration of it, kept
    /// alive or not (RFC 5626 5.3: its flow token names a flow that no longer exists).
    pub fn flow_closed(&mut self, flow: Destination, now: Instant) {
        let f = flow_of_dest(flow);
        let (members, branch) = self.keepalive.lock().closed(&f).unwrap_or_default();
        self.close_branch(branch, f);
        self.drop_flow(f, &members, "removed_closed", now);
        self.flows_gauge();
    }

    /// Remove the bindings of `members` still riding `flow`, and the relayed registration
    /// of `flow` (a request down its token then gets 430, RFC 5626 5.3) (`event`: why,
    /// counted per binding or relayed flow and logged as a registrar event, which says
    /// nothing of the contact's honesty).
    fn drop_flow(&mut self, flow: Flow, members: &[Member], event: &'static str, now: Instant) {
        let mut removed = 0;
        for m in members {
            if self.bound_here(m, flow, now) {
                self.store.lock().remove(&m.aor, &m.contact);
                removed += 1;
            }
        }
        if self.relayed.lock().forget(&dest_of(flow)) {
            self.metrics
                .relayed
                .flows
                .set(self.relayed.lock().len() as i64);
            removed += 1;
        }
        if removed == 0 {
            return;
        }
        self.metrics
            .keepalive
            .events
            .with_label_values(&[event])
            .inc_by(removed);
        self.metrics.bindings.set(self.store.lock().len() as i64);
        let verdict = self.keepalive_log.lock().decide(event, now);
        if let Verdict::Log { suppressed } = verdict {
            tracing::info!(
                target: "registrar",
                event,
                flow = %flow.addr,
                transport = ?flow.transport,
                removed,
                suppressed,
                "bindings removed: their flow is gone"
            );
        }
    }

    fn keepalive_count(&self, event: &'static str) {
        self.metrics
            .keepalive
            .events
            .with_label_values(&[event])
            .inc();
    }

    /// A bound was hit (`event`): counted, and logged once per kind a while.
    fn keepalive_event(&mut self, event: &'static str, source: Option<SocketAddr>, now: Instant) {
        self.keepalive_count(event);
        let verdict = self.keepalive_log.lock().decide(event, now);
        if let Verdict::Log { suppressed } = verdict {
            tracing::warn!(
                target: "registrar",
                event,
                source = ?source,
                flows = self.keepalive.lock().len(),
                in_flight = self.keepalive.lock().in_flight(),
                suppressed,
                "keep-alive bound reached"
            );
        }
    }

    fn flows_gauge(&self) {
        self.metrics
            .keepalive
            .flows
            .set(self.keepalive.lock().len() as i64);
    }
}
