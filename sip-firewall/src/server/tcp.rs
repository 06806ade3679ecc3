//! SIP over TCP: a framer per connection, answers on the same connection (RFC 3261 18.2.2).
//! A connection that stays silent or sends no complete message for `tcp_idle_timeout`, or
//! whose stream cannot be framed any more, is closed; nothing else is affected. The
//! connection handling is generic over the byte stream: TLS (`super::tls`) reuses it whole.

use std::{net::SocketAddr, sync::Arc};

use sip_firewall_sip::{
    Rejection, Transport,
    frame::{Event, PING, StreamFramer},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _},
    net::TcpListener,
    sync::{mpsc, watch},
    time::{Instant, timeout_at},
};
use tracing::debug;

use crate::seams::{Context, Handler};

use super::{
    Shared,
    accept::{Accepted, accept_loop},
};

/// How many messages may wait for one TCP connection's writer.
pub(crate) const TCP_QUEUE: usize = 256;

/// Accept TCP connections until shutdown (gate and slots: [`super::accept`]).
pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (owner, rx) = (shared.clone(), shutdown.clone());
    accept_loop(listener, Transport::Stream, "tcp", owner, shutdown, |a| {
        let (shared, rx) = (shared.clone(), rx.clone());
        // Messages the core sends to this peer (relayed responses, forwarded requests) go
        // out on this connection.
        let (tx, out_rx) = mpsc::channel(TCP_QUEUE);
        shared.outbound.register(a.peer, Transport::Stream, tx);
        tokio::spawn(async move {
            let Accepted { stream, peer, slot } = a;
            let local = match stream.local_addr() {
                Ok(l) => l,
                Err(e) => {
                    debug!(%peer, "TCP local address: {e}");
                    shared.outbound.unregister(peer, Transport::Stream);
                    return;
                }
            };
            let conn = Conn {
                peer,
                local,
                transport: Transport::Stream,
                trusted_peer: None,
            };
            serve_connection(stream, conn, shared, rx, out_rx).await;
            drop(slot);
        });
    })
    .await
}

/// The two ends of a connection, what it is (TCP or TLS), and the `[tls] trusted_peers`
/// host its client certificate named, which every message it brings carries in its
/// [`Context`](crate::seams::Context).
#[derive(Clone, Debug)]
pub(super) struct Conn {
    pub peer: SocketAddr,
    pub local: SocketAddr,
    pub transport: Transport,
    pub trusted_peer: Option<Arc<str>>,
}

impl Conn {
    /// The transport's name in metrics (the `transport` label).
    fn label(&self) -> &'static str {
        match self.transport {
            Transport::Tls => "tls",
            _ => "tcp",
        }
    }
}

/// Serve one connection, accepted or opened by us to send a request: frame, judge and
/// answer what it brings, write what the core queues for the peer (`outgoing`, registered
/// with the outbound already), then unregister it.
pub(super) async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    conn: Conn,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
    outgoing: mpsc::Receiver<Vec<u8>>,
) {
    let peer = conn.peer;
    shared.metrics.tcp_opened();
    crate::metrics::connection_open(conn.label(), 1);
    let why = match connection(stream, &conn, &shared, shutdown, outgoing).await {
        Ok(why) => why,
        Err(e) => {
            debug!(%peer, transport = conn.label(), "stream connection: {e}");
            "error"
        }
    };
    shared.outbound.unregister(peer, conn.transport);
    shared.flow(peer, conn.transport, <dyn Handler>::flow_closed);
    shared.metrics.tcp_closed(why);
    crate::metrics::connection_open(conn.label(), -1);
}

async fn connection<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    conn: &Conn,
    shared: &Shared,
    mut shutdown: watch::Receiver<bool>,
    mut outgoing: mpsc::Receiver<Vec<u8>>,
) -> std::io::Result<&'static str> {
    let (peer, local, transport) = (conn.peer, conn.local, conn.transport);
    let mut framer = StreamFramer::new(shared.limits);
    let mut chunk = vec![0u8; 8192];
    let mut deadline = Instant::now() + shared.tcp_idle_timeout;
    loop {
        let got = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return Ok("shutdown"),
            Some(bytes) = outgoing.recv() => Err(bytes),
            r = timeout_at(deadline, stream.read(&mut chunk)) => match r {
                Ok(r) => Ok(r?),
                Err(_) => {
                    debug!(%peer, "TCP idle timeout: closing");
                    return Ok("idle_timeout");
                }
            },
        };
        let n = match got {
            Ok(n) => n,
            // A message the core sends to this peer (a relayed response, a request, or the
            // registrar's keep-alive ping, whose pong comes back as a single CRLF).
            Err(bytes) => {
                shared.outbound.capture(local, peer, transport, &bytes);
                queued(&mut stream, &mut framer, &bytes, shared).await?;
                continue;
            }
        };
        if n == 0 {
            flush(&mut stream, &mut outgoing, shared).await?;
            // The peer closed its side: answer an unfinished request if we can, then close.
            if let Err(e) = framer.finish() {
                fatal(&mut stream, peer, shared, e, deadline).await?;
                return Ok("framing");
            }
            return Ok("peer");
        }
        framer.push(&chunk[..n]);
        loop {
            match framer.next_event() {
                Ok(None) => break,
                Ok(Some(e @ (Event::Ping | Event::Pong))) => {
                    if !keepalive(shared, conn, &e) {
                        continue;
                    }
                    deadline = Instant::now() + shared.tcp_idle_timeout;
                    if e == Event::Ping {
                        // RFC 5626 4.4.1: a double-CRLF ping gets a single CRLF pong.
                        write(&mut stream, b"\r\n", deadline).await?;
                    }
                }
                Ok(Some(Event::Message(msg))) => {
                    deadline = Instant::now() + shared.tcp_idle_timeout;
                    if let Some(out) = shared.process_in(
                        &msg,
                        Context {
                            trusted_peer: conn.trusted_peer.clone(),
                            ..Context::new(peer, local, transport)
                        },
                    ) {
                        write(&mut stream, &out.bytes, deadline).await?;
                    }
                    // What the core queued for this peer goes out before the next answer.
                    flush(&mut stream, &mut outgoing, shared).await?;
                }
                Err(e) => {
                    fatal(&mut stream, peer, shared, e, deadline).await?;
                    return Ok("framing");
                }
            }
        }
    }
}

/// A keep-alive on the connection (the peer's ping, or the pong of ours), gated like a
/// message: a source over its rate (or banned) keeps no connection alive with them. True:
/// it counts as activity (and a pong tells the handler the flow is alive).
fn keepalive(shared: &Shared, conn: &Conn, e: &Event) -> bool {
    let bytes: &[u8] = if *e == Event::Ping { PING } else { b"\r\n" };
    if !shared.admit_keepalive((conn.peer, conn.local), conn.transport, bytes) {
        return false;
    }
    shared.metrics.keepalive(conn.label());
    if *e == Event::Pong {
        shared.flow(conn.peer, conn.transport, <dyn Handler>::flow_pong);
    }
    true
}

/// Write one message the core queued for this connection; after our keep-alive ping, the
/// framer awaits its pong.
async fn queued<S: AsyncWrite + Unpin>(
    stream: &mut S,
    framer: &mut StreamFramer,
    bytes: &[u8],
    shared: &Shared,
) -> std::io::Result<()> {
    if bytes == PING {
        framer.expect_pong();
    }
    write(stream, bytes, Instant::now() + shared.tcp_idle_timeout).await
}

/// Write every message the core queued for this connection.
async fn flush<S: AsyncWrite + Unpin>(
    stream: &mut S,
    outgoing: &mut mpsc::Receiver<Vec<u8>>,
    shared: &Shared,
) -> std::io::Result<()> {
    while let Ok(bytes) = outgoing.try_recv() {
        write(stream, &bytes, Instant::now() + shared.tcp_idle_timeout).await?;
    }
    Ok(())
}

/// The stream cannot be framed any more: answer what can be answered, then close.
async fn fatal<S: AsyncWrite + Unpin>(
    stream: &mut S,
    peer: SocketAddr,
    shared: &Shared,
    e: sip_firewall_sip::frame::FrameError,
    deadline: Instant,
) -> std::io::Result<()> {
    debug!(%peer, reason = %e.reason, "TCP framing error: closing");
    let rej = Rejection {
        reason: e.reason,
        kind: e.kind,
        unsupported: None,
    };
    let out = crate::guard::catch("message", Some(peer), || shared.refuse(&e.head, &rej, peer));
    if let Some(out) = out.flatten() {
        write(stream, &out.bytes, deadline).await?;
    }
    let _ = stream.shutdown().await;
    Ok(())
}

/// Write everything before the deadline (a peer that never reads must not hold us).
async fn write<S: AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
    deadline: Instant,
) -> std::io::Result<()> {
    // flush: TLS buffers records until flushed; plain TCP flushes at no cost.
    let all = async {
        stream.write_all(bytes).await?;
        stream.flush().await
    };
    match timeout_at(deadline, all).await {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "write timed out",
        )),
    }
}
