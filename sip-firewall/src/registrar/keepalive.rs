//! NAT keep-alives of registered contacts: which bindings are pinged, when, and when one is
//! dead. A phone behind NAT is reachable only through the mapping its REGISTER opened (its
//! flow: the source address and transport, on TCP, TLS and WebSocket the very connection);
//! without traffic the NAT forgets it and calls fail silently, and a dead contact keeps its
//! slot until it expires, so callers wait for Timer B.
//!
//! This module decides, free of I/O on a clock it is given; the proxy core
//! (`proxy::core::keepalive`) sends the pings and removes the bindings:
//! - **which**: `[registrar] keepalive`: `"nat"` the bindings whose source differs from their
//!   Contact (or whose Contact asks for its flow, RFC 5626 `;ob`), `"all"` every binding
//!   whose flow this node holds, `"off"` none. Only bindings registered here are tracked: in
//!   a cluster the node holding a contact's flow pings it, the others hold a Path to it. In
//!   relay mode the contacts of the flows the registrar's 200s registered
//!   (`registrar::relay`) are tracked the same way ([`Keepalive::track_contact`]).
//! - **when**: every `keepalive_interval` per flow, the first one at a point of the interval
//!   drawn at random so that a crowd registering at once does not ping at once; at most
//!   [`MAX_PINGS_PER_SECOND`] pings leave in one second and [`MAX_IN_FLIGHT`] OPTIONS wait
//!   for their answer (the rest wait for the next round, counted: [`Tick::deferred`]).
//! - **dead**: a flow that left `keepalive_failures` pings in a row unanswered is dead when
//!   the next one is due; one whose connection closed is dead at once
//!   ([`Keepalive::closed`]). Its bindings go, so a call to the contact gets 480 at once.
//!
//! A contact that asks for its flow (`;ob`) over UDP may keep its NAT mapping open itself
//! with STUN (RFC 5626 4.4.2), which an edge must answer on its SIP ports (5.4) whatever its
//! own keep-alives: where the mode does not ping it, its flow is held all the same, unpinged,
//! so that its STUN requests are answered ([`Keepalive::pong`]) and requests for it go down
//! its flow (5.3).
//!
//! An answer counts only from the flow pinged: the OPTIONS answer must carry the branch of
//! the ping in flight and come from the address and transport it went to
//! ([`Keepalive::answered`]), so a forged 200 from elsewhere keeps nothing alive.
//!
//! Bounds: [`MAX_FLOWS`] flows (beyond, a binding is not pinged: [`Track::Full`]),
//! [`MAX_MEMBERS`] bindings per flow.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap},
    hash::{BuildHasher as _, RandomState},
    net::SocketAddr,
    time::{Duration, Instant},
};

use sip_firewall_sip::{
    Transport,
    uri::{self, Host, Uri},
};

use super::{
    config::{KeepaliveMode, RegistrarConfig},
    store::Binding,
};

/// Most flows kept alive at once (a binding beyond it is not pinged, counted).
pub const MAX_FLOWS: usize = 1 << 20;
/// Most bindings sharing one flow (one phone's lines): beyond, a binding rides along
/// unpinged (its flow is pinged for the others).
pub const MAX_MEMBERS: usize = 16;
/// Most pings sent in one second: a million flows every 30 s is 33,000/s; above this the
/// rest wait for the next second.
pub const MAX_PINGS_PER_SECOND: u32 = 50_000;
/// Most OPTIONS pings awaiting their answer.
pub const MAX_IN_FLIGHT: usize = 1 << 17;

/// A flow: where a binding's REGISTER came from and how.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Flow {
    pub addr: SocketAddr,
    pub transport: Transport,
}

/// A binding riding a flow: its address of record and Contact URI.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Member {
    pub aor: String,
    pub contact: String,
}

/// What [`Keepalive::track`] did with a binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Track {
    /// Pinged from now on (or already).
    Tracked,
    /// The mode does not keep it alive (or another node holds its flow).
    NotKept,
    /// [`MAX_FLOWS`] reached: not pinged.
    Full,
    /// [`MAX_MEMBERS`] on its flow: not tracked itself, its flow is.
    MembersFull,
}

/// What is due at one tick.
#[derive(Debug, Default)]
pub struct Tick {
    /// Flows to ping now.
    pub pings: Vec<Flow>,
    /// Flows held unpinged (they keep themselves alive) whose bindings to look for now: a
    /// flow without any is the caller's to forget.
    pub checks: Vec<Flow>,
    /// Flows that left too many pings unanswered, with their bindings and the branch of the
    /// OPTIONS still in flight (forgotten now).
    pub dead: Vec<(Flow, Vec<Member>, Option<String>)>,
    /// Why pings due now wait for a later tick: `rate` ([`MAX_PINGS_PER_SECOND`]) or
    /// `in_flight` ([`MAX_IN_FLIGHT`]).
    pub deferred: Option<&'static str>,
}

/// What an answer to an OPTIONS ping proved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// From the flow pinged: alive. The branch is closed.
    Alive(Flow),
    /// The branch of a ping in flight, from another address or transport: ignored.
    WrongSource,
    /// No ping of ours.
    Unknown,
}

#[derive(Debug)]
struct FlowState {
    members: Vec<Member>,
    /// Pings in a row without an answer.
    unanswered: u32,
    /// When the next ping is due (the heap's entry with another time is stale).
    due: Instant,
    /// The branch of the OPTIONS in flight (UDP).
    branch: Option<String>,
    /// Whether we ping it: false for a flow held only for its own STUN keep-alives.
    pinged: bool,
}

/// The flows kept alive and their schedule.
#[derive(Debug)]
pub struct Keepalive {
    mode: KeepaliveMode,
    interval: Duration,
    failures: u32,
    flows: HashMap<Flow, FlowState>,
    heap: BinaryHeap<Reverse<(Instant, FlowKey)>>,
    /// OPTIONS branches in flight -> the flow pinged.
    pending: HashMap<String, Flow>,
    /// The current second and the pings sent in it.
    window: Option<(Instant, u32)>,
    /// Where each flow's first ping falls in its interval.
    spread: RandomState,
}

/// A flow as the heap orders it (its address, then transport by name).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct FlowKey(Flow);

impl Ord for FlowKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        let t = |f: &Flow| f.transport as u8;
        (self.0.addr, t(&self.0)).cmp(&(other.0.addr, t(&other.0)))
    }
}

impl PartialOrd for FlowKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Whether the contact URI `contact`, registered over `flow`, is behind NAT as far as we
/// can tell: it names another host or port than the REGISTER came from (or no address at
/// all: a name, or the `.invalid` host of a WebSocket client, RFC 7118 5.2), or it asks for
/// its flow (RFC 5626 5.2: `;ob`).
pub fn behind_nat(contact: &str, flow: Flow) -> bool {
    let Ok(Uri::Sip(u)) = uri::parse(contact) else {
        return true;
    };
    if has_param(u.params, "ob") {
        return true;
    }
    let ip = match u.host {
        Host::V4(a) => std::net::IpAddr::V4(a),
        Host::V6(a) => std::net::IpAddr::V6(a),
        Host::Domain(_) => return true,
    };
    // RFC 3263 4.2: no port means 5060, 5061 for sips and TLS.
    let default = if u.secure || flow.transport == Transport::Tls {
        5061
    } else {
        5060
    };
    let contact = SocketAddr::new(ip.to_canonical(), u.port.unwrap_or(default));
    contact != SocketAddr::new(flow.addr.ip().to_canonical(), flow.addr.port())
}

/// Whether the contact URI `contact`, registered over `flow`, keeps its flow alive itself:
/// it asks for its flow (RFC 5626 5.2: `;ob`) over UDP, where its keep-alives are STUN
/// requests (4.4.2) that the edge answers.
fn keeps_itself(contact: &str, flow: Flow) -> bool {
    flow.transport == Transport::Datagram
        && matches!(uri::parse(contact), Ok(Uri::Sip(u)) if has_param(u.params, "ob"))
}

/// Whether the URI parameters `params` (`;a;b=c`) carry `name`.
fn has_param(params: &str, name: &str) -> bool {
    params.split(';').any(|p| {
        let key = p.split_once('=').map_or(p, |(k, _)| k);
        key.trim().eq_ignore_ascii_case(name)
    })
}

impl Keepalive {
    pub fn new(cfg: &RegistrarConfig) -> Keepalive {
        Keepalive {
            mode: cfg.keepalive,
            interval: cfg.keepalive_interval,
            failures: cfg.keepalive_failures,
            flows: HashMap::new(),
            heap: BinaryHeap::new(),
            pending: HashMap::new(),
            window: None,
            spread: RandomState::new(),
        }
    }

    /// A reload: the new interval and tolerance apply from each flow's next ping, the new
    /// mode to the bindings of each REGISTER from now on (a flow kept alive stays so until
    /// it is dead or its bindings go); `"off"` forgets every flow at once.
    pub fn reconfigure(&mut self, cfg: &RegistrarConfig) {
        self.mode = cfg.keepalive;
        self.interval = cfg.keepalive_interval;
        self.failures = cfg.keepalive_failures;
        if self.mode == KeepaliveMode::Off {
            // Only the flows that keep themselves alive stay held, unpinged.
            self.flows.retain(|f, s| {
                s.pinged = false;
                s.branch = None;
                s.members.retain(|m| keeps_itself(&m.contact, *f));
                !s.members.is_empty()
            });
            self.heap = self
                .flows
                .iter()
                .map(|(f, s)| Reverse((s.due, FlowKey(*f))))
                .collect();
            self.pending.clear();
        }
    }

    /// Whether the mode keeps `b` alive here (a binding whose flow this node holds).
    pub fn keeps(&self, b: &Binding) -> bool {
        b.path.is_none()
            && self.keeps_contact(
                &b.contact,
                Flow {
                    addr: b.source,
                    transport: b.transport,
                },
            )
    }

    /// Whether the mode keeps the contact URI `contact`, registered over `flow`, alive.
    pub fn keeps_contact(&self, contact: &str, flow: Flow) -> bool {
        match self.mode {
            KeepaliveMode::Off => false,
            KeepaliveMode::All => true,
            KeepaliveMode::Nat => behind_nat(contact, flow),
        }
    }

    /// Flows held: kept alive, or keeping themselves alive.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// OPTIONS pings awaiting their answer.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Whether `flow` is kept alive: requests for it go down that flow only, never by a new
    /// connection (a NATed contact cannot be reached by one).
    pub fn holds(&self, flow: &Flow) -> bool {
        self.flows.contains_key(flow)
    }

    /// `b` of `aor` was just registered (or refreshed) over its flow: keep it alive when the
    /// mode says so. A REGISTER proves the flow alive: its misses start again.
    pub fn track(&mut self, aor: &str, b: &Binding, now: Instant) -> Track {
        if b.path.is_some() {
            return Track::NotKept;
        }
        let flow = Flow {
            addr: b.source,
            transport: b.transport,
        };
        self.track_contact(aor, &b.contact, flow, now)
    }

    /// The contact URI `contact` of `aor` was just registered (or refreshed) over `flow`,
    /// which this node holds (a binding of its own, or a relayed registration): as
    /// [`Keepalive::track`].
    pub fn track_contact(&mut self, aor: &str, contact: &str, flow: Flow, now: Instant) -> Track {
        let pinged = self.keeps_contact(contact, flow);
        if !pinged && !keeps_itself(contact, flow) {
            return Track::NotKept;
        }
        let member = Member {
            aor: aor.to_string(),
            contact: contact.to_string(),
        };
        if let Some(s) = self.flows.get_mut(&flow) {
            s.unanswered = 0;
            // Its next check becomes its first ping.
            s.pinged |= pinged;
            if s.members.iter().any(|m| same(m, &member)) {
                return Track::Tracked;
            }
            if s.members.len() >= MAX_MEMBERS {
                return Track::MembersFull;
            }
            s.members.push(member);
            return Track::Tracked;
        }
        if self.flows.len() >= MAX_FLOWS {
            return Track::Full;
        }
        let first_due = self.first_due(flow, now);
        self.flows.insert(
            flow,
            FlowState {
                members: vec![member],
                unanswered: 0,
                due: first_due,
                branch: None,
                pinged,
            },
        );
        self.heap.push(Reverse((first_due, FlowKey(flow))));
        Track::Tracked
    }

    /// When a new flow's first turn (a ping, or a look at its bindings when it keeps itself
    /// alive) falls: at a random point of the second half of the interval.
    fn first_due(&self, flow: Flow, now: Instant) -> Instant {
        let u = (self.spread.hash_one(flow) % 1024) as u32;
        now + self.interval / 2 + self.interval / 2 * u / 1024
    }

    /// The bindings riding `flow`.
    pub fn members(&self, flow: &Flow) -> &[Member] {
        self.flows.get(flow).map_or(&[], |s| &s.members)
    }

    /// Stop keeping `flow` alive (its bindings went another way: removed, expired,
    /// re-registered elsewhere); the branch of its OPTIONS in flight, if any.
    pub fn forget(&mut self, flow: &Flow) -> Option<String> {
        let s = self.flows.remove(flow)?;
        let branch = s.branch?;
        self.pending.remove(&branch);
        Some(branch)
    }

    /// The connection of `flow` closed: its bindings (none when it was not kept alive) and
    /// the branch in flight.
    pub fn closed(&mut self, flow: &Flow) -> Option<(Vec<Member>, Option<String>)> {
        let s = self.flows.remove(flow)?;
        if let Some(b) = &s.branch {
            self.pending.remove(b);
        }
        Some((s.members, s.branch))
    }

    /// A pong (the single CRLF of RFC 5626 4.4.1) came on `flow`, or a STUN keep-alive
    /// (4.4.2) from it: alive. False: not a flow held here.
    pub fn pong(&mut self, flow: &Flow) -> bool {
        match self.flows.get_mut(flow) {
            Some(s) => {
                s.unanswered = 0;
                true
            }
            None => false,
        }
    }

    /// The OPTIONS ping of `flow` left with `branch`; the branch it replaces (unanswered).
    pub fn sent(&mut self, flow: &Flow, branch: String) -> Option<String> {
        let s = self.flows.get_mut(flow)?;
        self.pending.insert(branch.clone(), *flow);
        let old = s.branch.replace(branch)?;
        self.pending.remove(&old);
        Some(old)
    }

    /// A response with `branch` came from `source` over `transport`.
    pub fn answered(&mut self, branch: &str, source: SocketAddr, transport: Transport) -> Answer {
        let Some(flow) = self.pending.get(branch).copied() else {
            return Answer::Unknown;
        };
        let same_ip = source.ip().to_canonical() == flow.addr.ip().to_canonical();
        if !same_ip || source.port() != flow.addr.port() || transport != flow.transport {
            return Answer::WrongSource;
        }
        self.pending.remove(branch);
        if let Some(s) = self.flows.get_mut(&flow) {
            s.unanswered = 0;
            s.branch = None;
        }
        Answer::Alive(flow)
    }

    /// What is due at `now`: flows to ping (each counted as unanswered until it answers),
    /// and dead flows (forgotten here; their bindings are the caller's to remove).
    pub fn due(&mut self, now: Instant) -> Tick {
        let mut tick = Tick::default();
        while let Some(Reverse((at, FlowKey(flow)))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            let Some(state) = self.flows.get(&flow) else {
                self.heap.pop();
                continue;
            };
            if state.due != at {
                self.heap.pop();
                continue;
            }
            if !state.pinged {
                // Held for its own keep-alives: only whether its bindings are still here.
                self.heap.pop();
                self.reschedule(flow, now);
                tick.checks.push(flow);
                continue;
            }
            if state.unanswered >= self.failures {
                self.heap.pop();
                if let Some((members, branch)) = self.closed(&flow) {
                    tick.dead.push((flow, members, branch));
                }
                continue;
            }
            if let Some(why) = self.over_bound(&flow, now) {
                tick.deferred = Some(why);
                break;
            }
            self.heap.pop();
            if let Some(s) = self.flows.get_mut(&flow) {
                s.unanswered += 1;
            }
            self.reschedule(flow, now);
            tick.pings.push(flow);
        }
        tick
    }

    /// `flow`'s next turn one interval after `now`.
    fn reschedule(&mut self, flow: Flow, now: Instant) {
        let next = now + self.interval;
        if let Some(s) = self.flows.get_mut(&flow) {
            s.due = next;
        }
        self.heap.push(Reverse((next, FlowKey(flow))));
    }

    /// Whether a ping of `flow` must wait (and why); counts it in the second's budget when
    /// not.
    fn over_bound(&mut self, flow: &Flow, now: Instant) -> Option<&'static str> {
        if flow.transport == Transport::Datagram && self.pending.len() >= MAX_IN_FLIGHT {
            return Some("in_flight");
        }
        let (start, sent) = match self.window {
            Some((start, sent))
                if now.saturating_duration_since(start) < Duration::from_secs(1) =>
            {
                (start, sent)
            }
            _ => (now, 0),
        };
        if sent >= MAX_PINGS_PER_SECOND {
            return Some("rate");
        }
        self.window = Some((start, sent + 1));
        None
    }
}

fn same(a: &Member, b: &Member) -> bool {
    a.aor == b.aor && a.contact.eq_ignore_ascii_case(&b.contact)
}

#[cfg(test)]
mod tests;
