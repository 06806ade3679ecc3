//! The [`Outbound`] the server gives its handler: UDP from the listening sockets (so replies
//! and forwarded requests leave from the address peers know), TCP and TLS over the
//! connection with the peer, which we open when there is none.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex, OnceLock, Weak},
    time::Duration,
};

use sip_firewall_sip::Transport;
use std::net::UdpSocket;
use tokio::{
    net::TcpStream,
    sync::{mpsc, watch},
};
use tracing::debug;

use super::Shared;
use crate::seams::{Destination, Outbound};

/// How long opening a connection may take; its messages are lost after that (the client
/// transaction's timers decide what happens next).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What opening connections needs, known once the server runs.
struct Connector {
    shared: Weak<Shared>,
    shutdown: watch::Receiver<bool>,
}

/// Open connections by peer and transport (TCP or TLS): where their messages queue.
type Connections = HashMap<(SocketAddr, Transport), mpsc::Sender<Vec<u8>>>;

/// Sockets and open connections.
pub(crate) struct SocketOutbound {
    /// The UDP sockets, each with its local address: found once here, not by a
    /// `getsockname` for every datagram sent (a profile showed it).
    udp: Vec<(SocketAddr, Arc<UdpSocket>)>,
    /// Which listen address a datagram to a destination leaves from.
    sides: super::sides::Sides,
    tcp: Mutex<Connections>,
    connector: OnceLock<Connector>,
    /// How TLS connections to next hops are opened (set when `[tls]` is configured).
    tls: OnceLock<Arc<super::tls::LiveTls>>,
    /// The domain each TLS next hop was found under (RFC 3263): its SNI and the name its
    /// certificate must carry. Bounded ([`MAX_TLS_NAMES`]).
    tls_names: Mutex<HashMap<SocketAddr, String>>,
    /// Where every message received and sent is copied (`[hep]`; set once, before serving).
    pub(crate) hep: OnceLock<Arc<crate::hep::Hep>>,
}

/// Most TLS next hops whose domain is remembered; at the bound one is forgotten (counted)
/// for the new one: the proxy names a target again each time DNS gives it, just before it
/// sends, so a full table costs nobody their name (refusing new names instead would let an
/// authenticated user who resolves many names make every later target fail verification).
const MAX_TLS_NAMES: usize = 4096;

/// A connection the proxy opens: to whom, and what it needs once connected.
struct Dial {
    dest: Destination,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    /// The messages queued for it while it connects.
    rx: mpsc::Receiver<Vec<u8>>,
}

impl Dial {
    /// Connect (TCP, then TLS when `tls` is given with the target's domain, if any) and serve
    /// the connection like an accepted one; on failure the target is unreachable.
    async fn run(self, tls: Option<(tokio_rustls::TlsConnector, Option<String>)>) {
        let addr = self.dest.addr;
        let stream = match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return self.failed(format_args!("TCP connect: {e}")),
            Err(_) => return self.failed(format_args!("TCP connect: timed out")),
        };
        let local = match stream.local_addr() {
            Ok(l) => l,
            Err(e) => return self.failed(format_args!("TCP local address: {e}")),
        };
        let conn = super::tcp::Conn {
            peer: addr,
            local,
            transport: self.dest.transport,
            trusted_peer: None,
        };
        let Some((tls, domain)) = tls else {
            return super::tcp::serve_connection(stream, conn, self.shared, self.shutdown, self.rx)
                .await;
        };
        // A target found under a domain (RFC 3263): SNI and verification by that domain
        // (RFC 5922 7.1). A target given as an address: the certificate must name that
        // address (an IP SAN); rustls sends no SNI for it.
        let name = domain
            .and_then(|d| rustls::pki_types::ServerName::try_from(d).ok())
            .unwrap_or(rustls::pki_types::ServerName::IpAddress(addr.ip().into()));
        match tokio::time::timeout(CONNECT_TIMEOUT, tls.connect(name, stream)).await {
            Ok(Ok(s)) => {
                crate::metrics::tls_handshake("outbound_ok");
                super::tcp::serve_connection(s, conn, self.shared, self.shutdown, self.rx).await;
            }
            Ok(Err(e)) => {
                crate::metrics::tls_handshake("outbound_failed");
                self.failed(format_args!("TLS connect: {e}"));
            }
            Err(_) => {
                crate::metrics::tls_handshake("outbound_failed");
                self.failed(format_args!("TLS connect: handshake timed out"));
            }
        }
    }

    /// The connection could not be made: forgotten, and the proxy told its target is
    /// unreachable (its transactions fail over or fail at once).
    fn failed(&self, why: std::fmt::Arguments<'_>) {
        debug!(addr = %self.dest.addr, "{why}");
        self.shared
            .outbound
            .unregister(self.dest.addr, self.dest.transport);
        self.shared.handler.unreachable(self.dest);
    }
}

impl SocketOutbound {
    pub(crate) fn new(udp: Vec<Arc<UdpSocket>>) -> SocketOutbound {
        let udp = udp
            .into_iter()
            .filter_map(|s| match s.local_addr() {
                Ok(l) => Some((l, s)),
                Err(e) => {
                    tracing::warn!("a UDP socket without a local address is not used to send: {e}");
                    None
                }
            })
            .collect::<Vec<_>>();
        SocketOutbound {
            sides: super::sides::Sides::new(udp.iter().map(|(l, _)| l.ip())),
            udp,
            tcp: Mutex::new(HashMap::new()),
            connector: OnceLock::new(),
            tls: OnceLock::new(),
            tls_names: Mutex::new(HashMap::new()),
            hep: OnceLock::new(),
        }
    }

    /// Allow opening TLS connections (from `SipServer::bind_tls`).
    pub(crate) fn enable_tls(&self, live: Arc<super::tls::LiveTls>) {
        let _ = self.tls.set(live);
    }

    /// Allow opening TCP connections to peers we have none with (from `run`).
    pub(crate) fn enable_connect(&self, shared: Weak<Shared>, shutdown: watch::Receiver<bool>) {
        let _ = self.connector.set(Connector { shared, shutdown });
    }

    /// Open a connection to `addr` for `bytes`: registered at once, so what the core sends
    /// meanwhile queues behind them; served like an accepted one once connected.
    fn connect(&self, addr: SocketAddr, transport: Transport, bytes: &[u8]) -> bool {
        let Some(c) = self.connector.get() else {
            return false;
        };
        let tls = match transport {
            Transport::Tls => match self.tls.get() {
                Some(t) => Some((
                    t.connector(),
                    crate::guard::lock(&self.tls_names, "tls names")
                        .get(&addr)
                        .cloned(),
                )),
                // No `[tls]` section: we cannot speak TLS (counted by the caller as a loss).
                None => return false,
            },
            _ => None,
        };
        let (Some(shared), Ok(rt)) = (c.shared.upgrade(), tokio::runtime::Handle::try_current())
        else {
            return false;
        };
        // Connections we open count against the same bounds as those we accept: a next hop
        // named by a peer must not open connections without limit.
        let slot = match shared.slots.take(addr.ip()) {
            Ok(slot) => slot,
            Err(full) => {
                crate::metrics::limit_hit(
                    match full {
                        super::slots::Full::Total => "tcp_outbound_total",
                        super::slots::Full::PerSource => "tcp_outbound_per_source",
                    },
                    Some(addr.ip()),
                );
                return false;
            }
        };
        let (tx, rx) = mpsc::channel(super::tcp::TCP_QUEUE);
        if tx.try_send(bytes.to_vec()).is_err() {
            return false;
        }
        self.register(addr, transport, tx);
        let dial = Dial {
            dest: Destination { addr, transport },
            shared,
            shutdown: c.shutdown.clone(),
            rx,
        };
        rt.spawn(async move {
            let _slot = slot;
            dial.run(tls).await;
        });
        true
    }

    /// Copy a message received or sent to the HEP export, if any.
    pub(crate) fn capture(&self, src: SocketAddr, dst: SocketAddr, t: Transport, bytes: &[u8]) {
        if let Some(hep) = self.hep.get() {
            hep.capture(src, dst, t != Transport::Datagram, bytes);
        }
    }

    /// A TCP or TLS connection with `peer` opened: messages for it go to `tx`.
    pub(crate) fn register(&self, peer: SocketAddr, t: Transport, tx: mpsc::Sender<Vec<u8>>) {
        crate::guard::lock(&self.tcp, "tcp connections").insert((peer, t), tx);
    }

    /// The queue of the open connection with `peer` over `t`.
    fn open(&self, peer: SocketAddr, t: Transport) -> Option<mpsc::Sender<Vec<u8>>> {
        crate::guard::lock(&self.tcp, "tcp connections")
            .get(&(peer, t))
            .cloned()
    }

    /// The connection with `peer` closed.
    pub(crate) fn unregister(&self, peer: SocketAddr, t: Transport) {
        crate::guard::lock(&self.tcp, "tcp connections").remove(&(peer, t));
    }
}

impl Outbound for SocketOutbound {
    fn name_peer(&self, addr: SocketAddr, name: &str) {
        let mut names = crate::guard::lock(&self.tls_names, "tls names");
        if names.len() >= MAX_TLS_NAMES
            && !names.contains_key(&addr)
            && let Some(old) = names.keys().next().copied()
        {
            crate::metrics::limit_hit("tls_names", Some(addr.ip()));
            names.remove(&old);
        }
        names.insert(addr, name.to_string());
    }

    fn send(&self, dest: Destination, bytes: &[u8]) -> bool {
        match dest.transport {
            Transport::Datagram => {
                // The socket of the listen address that routes to the destination (the
                // address our Via names, see `sides`), else the first of its family. The
                // socket is non-blocking: with its buffer full the datagram is lost, as on
                // the way.
                let v4 = dest.addr.is_ipv4();
                let side = self.sides.toward(dest.addr.ip());
                let sock = side
                    .and_then(|ip| self.udp.iter().find(|(l, _)| l.ip().to_canonical() == ip))
                    .or_else(|| self.udp.iter().find(|(l, _)| l.is_ipv4() == v4));
                sock.is_some_and(|(local, s)| {
                    let sent = s.send_to(bytes, dest.addr).is_ok();
                    if sent {
                        self.capture(*local, dest.addr, Transport::Datagram, bytes);
                    }
                    sent
                })
            }
            // RFC 7118: a WebSocket client cannot be dialled; only its open flow reaches it.
            // Its `;transport=ws` URI does not say ws or wss (5.2): the flow at that
            // address, whichever it is.
            Transport::Ws | Transport::Wss => {
                let flows = crate::guard::lock(&self.tcp, "tcp connections");
                let other = if dest.transport == Transport::Ws {
                    Transport::Wss
                } else {
                    Transport::Ws
                };
                let tx = flows
                    .get(&(dest.addr, dest.transport))
                    .or_else(|| flows.get(&(dest.addr, other)))
                    .cloned();
                drop(flows);
                tx.is_some_and(|tx| tx.try_send(bytes.to_vec()).is_ok())
            }
            t @ (Transport::Stream | Transport::Tls) => match self.open(dest.addr, t) {
                Some(tx) => tx.try_send(bytes.to_vec()).is_ok(),
                None => self.connect(dest.addr, t, bytes),
            },
        }
    }

    fn answered_alone(&self, dest: Destination, answer: &[u8]) {
        crate::tap::answered_alone(dest.addr, dest.transport, answer);
    }

    fn send_on_flow(&self, dest: Destination, bytes: &[u8]) -> bool {
        match dest.transport {
            t @ (Transport::Stream | Transport::Tls) => self
                .open(dest.addr, t)
                .is_some_and(|tx| tx.try_send(bytes.to_vec()).is_ok()),
            // UDP has no connection to open, WebSocket never dials.
            _ => self.send(dest, bytes),
        }
    }
}
