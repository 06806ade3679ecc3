//! The SIP transport: UDP, TCP, TLS and WebSocket listeners feeding the message layer
//! (`sip-firewall-sip`), which answers malformed requests itself and hands accepted messages to
//! the [`Handler`] (the proxy).
//!
//! **Decides**: whether a datagram or connection gets to the message layer at all: every message
//! and keep-alive passes the [`Gate`] first (bans, lists, rates: `enforce/`), connections take a
//! slot of one pool in total and per source (`slots`), idle connections close; a panic while
//! handling one message is caught at the boundary (`crate::guard`).
//!
//! | module | job |
//! | --- | --- |
//! | `admit` | the gate as the listeners meet it: connections, keep-alives, messages; refusals offered to captures |
//! | `config` | `[sip]` (`SipConfig`): listeners and the message layer's limits, defaults and checks |
//! | `udp`, `tcp` | the listeners; TCP connections framed, served and written |
//! | `steer` | which worker socket of a listen address a datagram reaches: by Call-ID (eBPF `SO_REUSEPORT` program) |
//! | `tls`, `ws` | TLS (RFC 3261 26.2) and WebSocket (RFC 7118) over the TCP handling |
//! | `outbound` | what the proxy sends: UDP from our socket, or the open (or newly opened) connection |
//! | `sides` | which listen address a message leaves from: the one routing to its destination |
//! | `slots` | the TCP connection slots, in total and per source |
//!
//! **Config**: `[sip]` (and `[tls]`, `[ws]`). **Metrics**: `sipfw_sip_requests_total{method}`,
//! `sipfw_sip_responses_total`, `sipfw_sip_accepted_total`, `sipfw_sip_rejections_total{reason}`,
//! `sipfw_sip_dropped_total{reason}`, `sipfw_sip_keepalives_total{transport}`,
//! `sipfw_sip_tcp_connections`, `sipfw_sip_tcp_closed_total`, `sipfw_sip_tls_handshakes_total`,
//! `sipfw_sip_ws_upgrades_total`, `sipfw_limits_refused_total{what}` (defined in `metrics`),
//! `sipfw_udp_steering{mode}` (`steer`).

mod accept;
mod admit;
#[doc(hidden)]
pub mod config;
mod mmsg;
mod outbound;
#[cfg(feature = "fuzzing")]
pub(crate) use outbound::SocketOutbound;
pub mod sides;
pub mod slots;
pub mod steer;
mod tcp;
pub mod tls;
mod udp;
pub mod ws;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use sip_firewall_sip::{
    Kind, Limits, Method, Reason, Rejection, StartLine, Transport, inspect,
    reply::{self, Reply, ReplyContext},
};
use tokio::sync::watch;
use tracing::{debug, info};

use crate::seams::{Action, Context, Destination, FlowEvent, Gate, Handler};
use crate::{guard, metrics::Metrics, server::config::SipConfig, tap};

/// Option tags this proxy supports in Proxy-Require (none yet: every one gets 420).
const EXTENSIONS: &[&str] = &[];

/// Bound UDP sockets and TCP listeners, ready to serve.
pub struct SipServer {
    udp: Vec<Arc<std::net::UdpSocket>>,
    /// Each UDP socket on a thread of its own (`[sip] udp_threads`).
    udp_threads: bool,
    tcp: Vec<tokio::net::TcpListener>,
    /// TLS listeners and their acceptor (`[tls]`, see [`SipServer::bind_tls`]).
    tls: Vec<tokio::net::TcpListener>,
    tls_acceptor: Option<(Arc<tls::LiveTls>, Duration)>,
    /// WebSocket listeners and their settings (`[ws]`, see [`SipServer::bind_ws`]).
    ws: Vec<(tokio::net::TcpListener, ws::WsSettings)>,
    /// Secure WebSocket listeners (`[wss]`), with the live TLS material.
    wss: Vec<(tokio::net::TcpListener, ws::WsSettings, Arc<tls::LiveTls>)>,
    shared: Arc<Shared>,
}

/// What every listener task needs.
pub(crate) struct Shared {
    pub(crate) limits: Limits,
    force_rport: bool,
    tcp_idle_timeout: Duration,
    /// TCP connections in total and per source, accepted and opened alike.
    slots: Arc<slots::TcpSlots>,
    metrics: Arc<Metrics>,
    handler: Arc<dyn Handler>,
    /// What the handler sends through; TCP connections register here.
    outbound: Arc<outbound::SocketOutbound>,
    /// Checks run on every message before the message layer (set once, before serving).
    pub(crate) gate: std::sync::OnceLock<Arc<dyn Gate>>,
}

/// An answer to send: the bytes, and where they go when the transport is UDP.
pub(crate) struct Outgoing {
    pub bytes: Vec<u8>,
    pub udp_destination: SocketAddr,
}

impl SipServer {
    /// Bind UDP and TCP on every cfg.listen address, handing accepted messages to `handler`
    /// (the proxy, or a test double).
    pub async fn bind_with_handler(
        cfg: &SipConfig,
        metrics: Arc<Metrics>,
        handler: Arc<dyn Handler>,
    ) -> anyhow::Result<SipServer> {
        let mut udp = Vec::new();
        let mut tcp = Vec::new();
        // Each listen address's worker sockets, a group steered on its own.
        let mut groups = Vec::new();
        for addr in &cfg.addrs() {
            let us = udp::bind(*addr, cfg.udp_workers())
                .with_context(|| format!("cannot bind SIP UDP on {addr}"))?;
            // Port 0 in the config: let TCP take the port UDP was given.
            let bound = us
                .first()
                .context("no UDP socket")?
                .local_addr()
                .context("UDP local address")?;
            let t = tokio::net::TcpListener::bind(bound)
                .await
                .with_context(|| format!("cannot bind SIP TCP on {bound}"))?;
            info!(%bound, workers = us.len(), "SIP listening on UDP and TCP");
            groups.push(us);
            tcp.push(t);
        }
        let slices: Vec<&[std::net::UdpSocket]> = groups.iter().map(Vec::as_slice).collect();
        steer::start(&slices, cfg.udp_steering, &metrics);
        udp.extend(groups.into_iter().flatten().map(Arc::new));
        let outbound = Arc::new(outbound::SocketOutbound::new(udp.clone()));
        handler.attach(outbound.clone());
        Ok(SipServer {
            udp,
            udp_threads: cfg.udp_threads,
            tcp,
            tls: Vec::new(),
            tls_acceptor: None,
            ws: Vec::new(),
            wss: Vec::new(),
            shared: Arc::new(Shared::new(cfg, metrics, handler, outbound)),
        })
    }

    /// The bound UDP addresses (TCP listens on the same ones).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        let mut out: Vec<SocketAddr> = Vec::new();
        // Each address once, though several workers' sockets share it.
        for a in self.udp.iter().filter_map(|u| u.local_addr().ok()) {
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }

    /// Listen for TLS on every `[tls] listen` address and open TLS connections to next hops
    /// (nothing when the list is empty).
    pub async fn bind_tls(&mut self, cfg: &crate::server::config::TlsConfig) -> anyhow::Result<()> {
        if cfg.listen.is_empty() {
            return Ok(());
        }
        let t = tls::Tls::load(cfg)?;
        self.tls.extend(listen(&cfg.listen, "TLS").await?);
        let handshake_timeout = t.handshake_timeout;
        let live = tls::go_live(t);
        self.shared.outbound.enable_tls(live.clone());
        self.tls_acceptor = Some((live, handshake_timeout));
        Ok(())
    }

    /// Listen for SIP over WebSocket on every `[ws] listen` address.
    pub async fn bind_ws(&mut self, cfg: &crate::server::config::WsConfig) -> anyhow::Result<()> {
        let settings = ws::WsSettings::new(cfg, self.shared.limits.max_message_bytes);
        for l in listen(&cfg.listen, "WebSocket").await? {
            self.ws.push((l, settings.clone()));
        }
        Ok(())
    }

    /// Listen for SIP over secure WebSocket on every `[wss] listen` address, with the
    /// `[tls]` certificate (the one TLS listeners use, loaded here when there are none) and
    /// the `[ws]` upgrade rules.
    pub async fn bind_wss(
        &mut self,
        wss: &ws::WssConfig,
        ws_cfg: &crate::server::config::WsConfig,
        tls_cfg: &crate::server::config::TlsConfig,
    ) -> anyhow::Result<()> {
        if wss.listen.is_empty() {
            return Ok(());
        }
        let live = match &self.tls_acceptor {
            Some((live, _)) => live.clone(),
            None => {
                let live = tls::go_live(tls::Tls::load(tls_cfg)?);
                self.shared.outbound.enable_tls(live.clone());
                live
            }
        };
        let settings = ws::WsSettings::new(ws_cfg, self.shared.limits.max_message_bytes);
        for l in listen(&wss.listen, "secure WebSocket").await? {
            self.wss.push((l, settings.clone(), live.clone()));
        }
        Ok(())
    }

    /// Copy every SIP message received and sent to `hep` (once, before [`SipServer::run`]).
    pub fn set_hep(&self, hep: Arc<crate::hep::Hep>) {
        let _ = self.shared.outbound.hep.set(hep);
    }

    /// The HEP export set by [`SipServer::set_hep`].
    pub fn hep(&self) -> Option<Arc<crate::hep::Hep>> {
        self.shared.outbound.hep.get().cloned()
    }

    /// The TCP connection slots (what `sip-firewall why` reports of a source).
    pub fn slots(&self) -> Arc<slots::TcpSlots> {
        self.shared.slots.clone()
    }

    /// The bound TLS addresses.
    pub fn tls_addrs(&self) -> Vec<SocketAddr> {
        tls::addrs(&self.tls)
    }

    /// Put `gate` in front of every message (once, before [`SipServer::run`]).
    pub fn set_gate(&self, gate: Arc<dyn Gate>) {
        if self.shared.gate.set(gate).is_err() {
            tracing::warn!("a gate was already set; keeping the first");
        }
    }

    /// Serve until `shutdown` flips to true.
    pub async fn run(self, shutdown: watch::Receiver<bool>) -> anyhow::Result<()> {
        self.shared
            .outbound
            .enable_connect(Arc::downgrade(&self.shared), shutdown.clone());
        let mut tasks = tokio::task::JoinSet::new();
        for (n, u) in self.udp.iter().enumerate() {
            let (shared, rx) = (self.shared.clone(), shutdown.clone());
            if self.udp_threads {
                tasks.spawn(udp::Worker::start(u, n, shared, rx)?.finished());
            } else {
                tasks.spawn(udp::serve_task(u.try_clone()?, shared, rx));
            }
        }
        for t in self.tcp {
            tasks.spawn(tcp::serve(t, self.shared.clone(), shutdown.clone()));
        }
        for (l, settings) in self.ws {
            tasks.spawn(ws::serve(
                l,
                settings,
                None,
                self.shared.clone(),
                shutdown.clone(),
            ));
        }
        for (l, settings, live) in self.wss {
            tasks.spawn(ws::serve(
                l,
                settings,
                Some(live),
                self.shared.clone(),
                shutdown.clone(),
            ));
        }
        if let Some((acceptor, handshake)) = self.tls_acceptor {
            for t in self.tls {
                let (a, s, rx) = (acceptor.clone(), self.shared.clone(), shutdown.clone());
                tasks.spawn(tls::serve(t, a, handshake, s, rx));
            }
        }
        while let Some(done) = tasks.join_next().await {
            match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e),
                Err(e) => return Err(anyhow::anyhow!("SIP listener task failed: {e}")),
            }
        }
        Ok(())
    }
}

impl Shared {
    pub(crate) fn new(
        cfg: &SipConfig,
        metrics: Arc<Metrics>,
        handler: Arc<dyn Handler>,
        outbound: Arc<outbound::SocketOutbound>,
    ) -> Shared {
        Shared {
            limits: Limits {
                max_message_bytes: cfg.max_message_bytes,
                max_header_bytes: cfg.max_header_bytes,
                max_request_uri_bytes: cfg.max_request_uri_bytes,
            },
            force_rport: cfg.force_rport,
            tcp_idle_timeout: cfg.tcp_idle_timeout,
            slots: slots::TcpSlots::new(cfg.max_tcp_connections, cfg.max_tcp_per_source),
            metrics,
            handler,
            outbound,
            gate: std::sync::OnceLock::new(),
        }
    }

    /// Tell the handler the connection with `peer` over `transport` closed or answered our
    /// keep-alive ping (`event`: `Handler::flow_closed`, `flow_pong`); panics are counted.
    pub(crate) fn flow(&self, peer: SocketAddr, transport: Transport, event: FlowEvent) {
        let flow = Destination {
            addr: peer,
            transport,
        };
        guard::catch("message", Some(peer), || event(&*self.handler, flow));
    }

    /// Judge one message and decide the answer, counting everything on the way. A panic in
    /// the gate, the message layer or the handler is caught here (see [`guard`]): the message
    /// is dropped, the error counted, and the listener goes on.
    pub(crate) fn process(
        &self,
        buf: &[u8],
        source: SocketAddr,
        local: SocketAddr,
        transport: Transport,
    ) -> Option<Outgoing> {
        self.process_in(buf, Context::new(source, local, transport))
    }

    /// [`Shared::process`] of a message whose context says more than its addresses (the
    /// trusted peer of a TLS connection).
    pub(crate) fn process_in(&self, buf: &[u8], ctx: Context) -> Option<Outgoing> {
        let (source, local, transport) = (ctx.source, ctx.local, ctx.transport);
        let out = guard::catch("message", Some(ctx.source), || {
            self.process_unguarded(buf, ctx)
        })
        .flatten();
        if let Some(o) = &out {
            // Answered on the same flow: to the request's source (its rport for UDP).
            let to = if transport == Transport::Datagram {
                o.udp_destination
            } else {
                source
            };
            self.outbound.capture(local, to, transport, &o.bytes);
            tap::answered((source, local), transport, buf, (to, &o.bytes));
        }
        out
    }

    fn process_unguarded(&self, buf: &[u8], ctx: Context) -> Option<Outgoing> {
        let (source, transport) = (ctx.source, ctx.transport);
        if !self.admitted(source, ctx.local, transport, buf) {
            return None;
        }
        self.outbound.capture(source, ctx.local, transport, buf);
        let m = &self.metrics;
        match inspect(buf, &self.limits, transport, EXTENSIONS) {
            Ok(msg) => {
                let action = match msg.start {
                    StartLine::Request { method, .. } => {
                        m.request(method);
                        m.accepted(true);
                        let (action, answers) = self.handler.on_request_answered(&msg, &ctx);
                        // The handler's own answers go to captures with the request.
                        for (dest, answer) in &answers {
                            tap::answered((source, ctx.local), transport, buf, (dest.addr, answer));
                        }
                        action
                    }
                    StartLine::Response { code, .. } => {
                        m.response(Some(code));
                        m.accepted(false);
                        self.handler.on_response(&msg, &ctx)
                    }
                };
                match action {
                    Action::Reply {
                        code,
                        phrase,
                        extra,
                    } if msg.is_request() => {
                        let rctx = ReplyContext::from_message(&msg);
                        Some(self.answer(&rctx, code, &phrase, &extra, source))
                    }
                    Action::Reply { .. } | Action::Absorb => None,
                    Action::Drop { reason } => {
                        m.dropped(reason);
                        None
                    }
                }
            }
            Err(rej) => self.refuse(buf, &rej, source),
        }
    }

    /// A message the layer refused: answer a request (not an ACK), drop anything else.
    pub(crate) fn refuse(
        &self,
        buf: &[u8],
        rej: &Rejection,
        source: SocketAddr,
    ) -> Option<Outgoing> {
        let m = &self.metrics;
        debug!(%source, reason = %rej.reason, "message refused");
        match rej.kind {
            Kind::Request { method } => {
                m.request_of(method);
                if method == Method::Ack {
                    // Never answer an ACK (RFC 3261 17.2.1): there is nothing to acknowledge.
                    m.dropped(rej.reason.as_str());
                    return None;
                }
                m.rejected(rej.reason);
                let extra: Vec<String> = rej
                    .unsupported
                    .iter()
                    .map(|t| format!("Unsupported: {t}"))
                    .collect();
                let rctx = ReplyContext::salvage(buf);
                Some(self.answer(
                    &rctx,
                    rej.reason.status(),
                    rej.reason.phrase(),
                    &extra,
                    source,
                ))
            }
            Kind::Response { code } => {
                m.response(code);
                m.dropped(rej.reason.as_str());
                None
            }
            Kind::Unknown => {
                m.dropped(Reason::NotSip.as_str());
                None
            }
        }
    }

    fn answer(
        &self,
        ctx: &ReplyContext<'_>,
        code: u16,
        phrase: &str,
        extra: &[String],
        source: SocketAddr,
    ) -> Outgoing {
        let r = Reply {
            code,
            phrase,
            extra,
            // No Server header: an answer to an unverified source is kept lean (no amplification).
            server: "",
        };
        Outgoing {
            bytes: reply::build(ctx, &r, source),
            udp_destination: reply::udp_destination(ctx, source, self.force_rport),
        }
    }
}

/// Listeners bound to each of `addrs` for a stream transport (`what`, for the log and the
/// error naming the address that could not be bound).
async fn listen(addrs: &[SocketAddr], what: &str) -> anyhow::Result<Vec<tokio::net::TcpListener>> {
    let mut out = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot bind SIP {what} on {addr}"))?;
        info!(bound = ?l.local_addr().ok(), "SIP listening on {what}");
        out.push(l);
    }
    Ok(out)
}

/// Whether a datagram is only a keep-alive (CRLFs, RFC 5626 4.4.1 style, or a NUL some
/// phones send): counted, never answered on UDP.
pub(crate) fn is_keepalive(buf: &[u8]) -> bool {
    !buf.is_empty() && buf.iter().all(|&b| matches!(b, b'\r' | b'\n' | b' ' | 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core with a bug: it panics on requests carrying a marker header, answers 200 to
    /// every other request.
    struct Buggy;

    impl Handler for Buggy {
        fn on_request(&self, req: &sip_firewall_sip::Message<'_>, _: &Context) -> Action {
            if req.headers.iter().any(|h| h.value.contains("panic-here")) {
                panic!("a bug reachable from one packet");
            }
            Action::Reply {
                code: 200,
                phrase: "OK".into(),
                extra: Vec::new(),
            }
        }
        fn on_response(&self, _: &sip_firewall_sip::Message<'_>, _: &Context) -> Action {
            Action::Absorb
        }
    }

    /// An OPTIONS request told apart by `subject` (its branch, Call-ID and Subject).
    pub(super) fn request(subject: &str) -> Vec<u8> {
        format!(
            "OPTIONS sip:example.com SIP/2.0\r\n\
             Via: SIP/2.0/UDP 192.0.2.9:5060;branch=z9hG4bK-{subject}\r\n\
             Max-Forwards: 70\r\n\
             From: <sip:a@example.org>;tag=1\r\n\
             To: <sip:example.com>\r\n\
             Call-ID: {subject}@x\r\n\
             CSeq: 1 OPTIONS\r\n\
             Subject: {subject}\r\n\
             Content-Length: 0\r\n\r\n"
        )
        .into_bytes()
    }

    /// A panic while handling one message is caught at the message boundary
    /// (UDP and TCP both go through `process`), counted, and the next message is served.
    #[test]
    fn a_panic_costs_one_message_not_the_listener() {
        let metrics = Arc::new(Metrics::new());
        let shared = Shared::new(
            &SipConfig::default(),
            metrics.clone(),
            Arc::new(Buggy),
            Arc::new(outbound::SocketOutbound::new(Vec::new())),
        );
        let src: SocketAddr = "192.0.2.9:5060".parse().unwrap();
        let local: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        let before = crate::metrics::internal_errors("message");
        for transport in [Transport::Datagram, Transport::Stream] {
            let ok = shared.process(&request("fine"), src, local, transport);
            assert!(ok.is_some_and(|o| o.bytes.starts_with(b"SIP/2.0 200")));
            assert!(
                shared
                    .process(&request("panic-here"), src, local, transport)
                    .is_none()
            );
            let ok = shared.process(&request("fine-again"), src, local, transport);
            assert!(ok.is_some_and(|o| o.bytes.starts_with(b"SIP/2.0 200")));
        }
        assert_eq!(crate::metrics::internal_errors("message"), before + 2);
        assert!(
            metrics
                .render()
                .contains("sipfw_internal_errors_total{kind=\"message\"}")
        );
    }
}

#[cfg(test)]
mod keepalive_tests {
    use super::*;
    use sip_firewall_sip::Message;

    /// A handler that takes every message and does nothing.
    pub(super) struct Absorb;

    impl Handler for Absorb {
        fn on_request(&self, _: &Message<'_>, _: &Context) -> Action {
            Action::Absorb
        }
        fn on_response(&self, _: &Message<'_>, _: &Context) -> Action {
            Action::Absorb
        }
    }

    /// A gate that refuses one source.
    struct Refuse(std::net::IpAddr);

    impl Gate for Refuse {
        fn admit(&self, source: SocketAddr, _: Transport, _: &[u8]) -> crate::seams::Admission {
            if source.ip() == self.0 {
                Err("test")
            } else {
                Ok(())
            }
        }
    }

    /// Keep-alives are judged like messages, so that a banned or rate-limited host cannot
    /// hold its TCP connections with pings.
    #[test]
    fn keepalives_pass_the_gate() {
        let shared = Shared::new(
            &SipConfig::default(),
            Arc::new(Metrics::new()),
            Arc::new(keepalive_tests::Absorb),
            Arc::new(outbound::SocketOutbound::new(Vec::new())),
        );
        let bad: SocketAddr = "192.0.2.66:5060".parse().unwrap();
        let good: SocketAddr = "192.0.2.67:5060".parse().unwrap();
        let local: SocketAddr = "192.0.2.1:5060".parse().unwrap();
        assert!(shared.admit_keepalive((bad, local), Transport::Stream, b"\r\n\r\n"));
        let _ = shared.gate.set(Arc::new(Refuse(bad.ip())));
        assert!(!shared.admit_keepalive((bad, local), Transport::Stream, b"\r\n\r\n"));
        assert!(!shared.admit_keepalive((bad, local), Transport::Datagram, b"\r\n"));
        assert!(shared.admit_keepalive((good, local), Transport::Stream, b"\r\n\r\n"));
    }
}

#[cfg(test)]
mod outbound_tests {
    use super::*;
    use crate::seams::{Destination, Outbound as _};

    /// An outbound that may open connections, the server state it opens them for, and the
    /// shutdown switch (kept alive by the caller).
    fn connecting(
        cfg: &SipConfig,
    ) -> (
        Arc<outbound::SocketOutbound>,
        Arc<Shared>,
        watch::Sender<bool>,
    ) {
        let out = Arc::new(outbound::SocketOutbound::new(Vec::new()));
        let shared = Arc::new(Shared::new(
            cfg,
            Arc::new(Metrics::new()),
            Arc::new(keepalive_tests::Absorb),
            out.clone(),
        ));
        let (stop, rx) = watch::channel(false);
        out.enable_connect(Arc::downgrade(&shared), rx);
        (out, shared, stop)
    }

    /// Connections the proxy opens toward a next hop count against the same TCP
    /// bounds as those it accepts; beyond them the send fails (the client transaction's
    /// timers decide what follows) and is counted.
    #[tokio::test]
    async fn outbound_connections_count_against_the_tcp_caps() {
        let cfg = SipConfig {
            max_tcp_connections: 4,
            max_tcp_per_source: 1,
            ..SipConfig::default()
        };
        let (out, shared, _stop) = connecting(&cfg);
        let peer = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = peer.local_addr().unwrap();
        let stream = |addr| Destination {
            addr,
            transport: Transport::Stream,
        };
        assert!(out.send(stream(addr), b"OPTIONS"), "the first one opens");
        assert_eq!(shared.slots.used(addr.ip()), (1, 1));
        let before = crate::metrics::limits_refused("tcp_outbound_per_source");
        let other: SocketAddr = (addr.ip(), addr.port().wrapping_add(1)).into();
        assert!(
            !out.send(stream(other), b"OPTIONS"),
            "a second to that host"
        );
        assert_eq!(
            crate::metrics::limits_refused("tcp_outbound_per_source"),
            before + 1
        );
        // And the host cannot connect in either: one budget for both directions.
        assert!(shared.slots.take(addr.ip()).is_err());
    }

    /// A flow kept alive (a contact behind NAT) is reached down its open connection only:
    /// with none open, nothing is sent and no connection is attempted (RFC 5626 5.3).
    #[tokio::test]
    async fn held_flows_are_never_dialled() {
        let (out, shared, _stop) = connecting(&SipConfig::default());
        let phone = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let flow = Destination {
            addr: phone.local_addr().unwrap(),
            transport: Transport::Stream,
        };
        assert!(!out.send_on_flow(flow, b"\r\n\r\n"), "no connection open");
        assert_eq!(shared.slots.used(flow.addr.ip()), (0, 0), "none opened");
        // Its open connection carries it.
        let (tx, mut queued) = tokio::sync::mpsc::channel(1);
        out.register(flow.addr, Transport::Stream, tx);
        assert!(out.send_on_flow(flow, b"\r\n\r\n"));
        assert_eq!(queued.try_recv().ok().as_deref(), Some(&b"\r\n\r\n"[..]));
    }
}
