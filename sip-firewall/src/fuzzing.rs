//! The whole receive path without sockets, for the pipeline fuzz target
//! (`fuzz/fuzz_targets/pipeline.rs`) and tests: bytes from a source, over UDP (one datagram)
//! or TCP (a byte stream per source through the framer, as `server/tcp.rs` serves it), through the
//! gate, the message layer and the proxy core on a fake clock; what the proxy sends is
//! captured and counted, never sent.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use sip_firewall_sip::{
    Rejection, Transport,
    frame::{Event, StreamFramer},
};

use crate::{
    clock::FakeClock,
    config::Config,
    guard,
    metrics::Metrics,
    proxy::Proxy,
    seams::{Destination, Gate, NoObserver, Outbound},
    server::{Shared, SocketOutbound, is_keepalive},
};

/// Most TCP "connections" (framers) the harness keeps, like a bound on real ones.
const MAX_STREAMS: usize = 64;

/// Everything the proxy sent, by destination address (either transport): (messages, bytes).
#[derive(Default)]
pub struct Captured {
    pub sent: Mutex<HashMap<SocketAddr, (usize, usize)>>,
}

impl Outbound for Captured {
    fn send(&self, dest: Destination, bytes: &[u8]) -> bool {
        let mut m = guard::lock(&self.sent, "captured sends");
        if m.len() < 10_000 || m.contains_key(&dest.addr) {
            let e = m.entry(dest.addr).or_default();
            e.0 += 1;
            e.1 += bytes.len();
        }
        true
    }
}

/// The receive path of one daemon, driven by hand.
pub struct Pipeline {
    shared: Shared,
    pub proxy: Arc<Proxy>,
    pub clock: FakeClock,
    pub captured: Arc<Captured>,
    streams: HashMap<SocketAddr, StreamFramer>,
    local: SocketAddr,
}

impl Pipeline {
    /// A pipeline for `config`, with `gate` in front when given.
    pub fn new(config: &Config, gate: Option<Arc<dyn Gate>>) -> anyhow::Result<Pipeline> {
        let (proxy, clock) = Proxy::with_fake_clock(config, Arc::new(NoObserver))?;
        let proxy = Arc::new(proxy);
        let captured = Arc::new(Captured::default());
        crate::seams::Handler::attach(&*proxy, captured.clone());
        let shared = Shared::new(
            &config.sip,
            Arc::new(Metrics::new()),
            proxy.clone(),
            Arc::new(SocketOutbound::new(Vec::new())),
        );
        if let Some(g) = gate {
            let _ = shared.gate.set(g);
        }
        let local = config
            .sip
            .listen
            .first()
            .map(|l| l.addr)
            .unwrap_or_else(|| ([127, 0, 0, 1], 5060).into());
        Ok(Pipeline {
            shared,
            proxy,
            clock,
            captured,
            streams: HashMap::new(),
            local,
        })
    }

    /// One UDP datagram from `source`: the bytes of the direct answer, if any (what the
    /// proxy sends through its outbound is in [`Pipeline::captured`]).
    pub fn datagram(&mut self, source: SocketAddr, bytes: &[u8]) -> usize {
        if let Ok(req) = sip_firewall_sip::stun::parse(bytes) {
            let answer = self.shared.stun(&req, bytes, (source, self.local));
            return answer.map_or(0, |a| a.len());
        }
        if is_keepalive(bytes) {
            return 0;
        }
        self.shared
            .process(bytes, source, self.local, Transport::Datagram)
            .map_or(0, |o| o.bytes.len())
    }

    /// Bytes on the TCP connection of `source`: framed, each message processed; a framing
    /// error answers what it can and closes the connection. The bytes answered directly.
    pub fn stream(&mut self, source: SocketAddr, bytes: &[u8]) -> usize {
        if !self.streams.contains_key(&source) && self.streams.len() >= MAX_STREAMS {
            return 0;
        }
        let limits = self.shared.limits;
        let framer = self
            .streams
            .entry(source)
            .or_insert_with(|| StreamFramer::new(limits));
        framer.push(bytes);
        let mut events = Vec::new();
        let mut error = None;
        loop {
            match framer.next_event() {
                Ok(Some(e)) => events.push(e),
                Ok(None) => break,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            }
        }
        let mut answered = 0;
        for e in events {
            match e {
                Event::Ping => answered += 2,
                // A pong answers a ping of ours; nothing goes back.
                Event::Pong => {}
                Event::Message(m) => {
                    answered += self
                        .shared
                        .process(&m, source, self.local, Transport::Stream)
                        .map_or(0, |o| o.bytes.len());
                }
            }
        }
        if let Some(e) = error {
            self.streams.remove(&source);
            let rej = Rejection {
                reason: e.reason,
                kind: e.kind,
                unsupported: None,
            };
            answered += guard::catch("message", Some(source), || {
                self.shared.refuse(&e.head, &rej, source)
            })
            .flatten()
            .map_or(0, |o| o.bytes.len());
        }
        answered
    }

    /// The peer of `source` closed its TCP connection.
    pub fn close(&mut self, source: SocketAddr) {
        if let Some(mut f) = self.streams.remove(&source) {
            let _ = f.finish();
        }
    }

    /// Move the clock and run the timers due.
    pub fn advance(&mut self, d: Duration) {
        self.clock.advance(d);
        self.proxy.tick();
    }
}

/// The daemon's user-space gate (lists, bans, flood, pressure and request-rate checks, as
/// without XDP) over a state database in `state_dir`; the learner's events are discarded.
pub fn user_gate(config: &Config, state_dir: &std::path::Path) -> anyhow::Result<Arc<dyn Gate>> {
    let store = crate::state::Store::open(state_dir)?;
    let enforcer = crate::enforce::Enforcer::new(store, None, config)?;
    let (learner, _events) = crate::enforce::learn::Learner::new(1024);
    Ok(Arc::new(crate::enforce::gate::UserGate::new(
        crate::enforce::live::EnforceSettings::new(config),
        Arc::new(Mutex::new(enforcer)),
        learner,
        &Metrics::new(),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness works end to end: a trusted peer registers bob, an outsider's INVITE to
    /// bob is forwarded to the binding (captured), timers run on the fake clock until every
    /// transaction is freed.
    #[test]
    fn register_invite_and_timers() {
        let config = Config::from_toml(
            "[sip]\ndomains = [\"example.com\"]\nlisten = [\"127.0.0.1:5060\"]\n\
             [policy]\nallow = [\"10.0.0.0/8\"]\n\
             [auth]\nusers = [{ user = \"bob\", domain = \"example.com\", password = \"pw\" }]\n",
            std::path::Path::new("t.toml"),
        )
        .unwrap();
        let mut p = Pipeline::new(&config, None).unwrap();
        let phone: SocketAddr = "10.0.0.5:5062".parse().unwrap();
        let reg = "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK-r1\r\nMax-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\nCall-ID: r1@x\r\nCSeq: 1 REGISTER\r\nContact: <sip:bob@10.0.0.5:5062>\r\nContent-Length: 0\r\n\r\n";
        p.datagram(phone, reg.as_bytes());
        let caller: SocketAddr = "192.0.2.7:5060".parse().unwrap();
        let inv = "INVITE sip:bob@example.com SIP/2.0\r\nVia: SIP/2.0/TCP 192.0.2.7:5060;branch=z9hG4bK-i1\r\nMax-Forwards: 70\r\nFrom: <sip:carol@example.org>;tag=2\r\nTo: <sip:bob@example.com>\r\nCall-ID: i1@x\r\nCSeq: 1 INVITE\r\nContact: <sip:carol@192.0.2.7>\r\nContent-Length: 0\r\n\r\n";
        p.stream(caller, inv.as_bytes());
        let sent = p.captured.sent.lock().unwrap().get(&phone).copied();
        assert!(sent.is_some_and(|(n, _)| n >= 1), "{sent:?}");
        for _ in 0..100 {
            p.advance(Duration::from_secs(1));
        }
    }
}
