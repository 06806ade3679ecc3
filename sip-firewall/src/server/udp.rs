//! SIP over UDP: one message per datagram, answers sent per RFC 3261 18.2.2 / RFC 3581.
//!
//! Each listen address has `[sip] workers` sockets bound with SO_REUSEPORT, each served by
//! its own task: socket i of a group is worker i. By default the steering program (`steer`)
//! picks a socket by the datagram's Call-ID, so every message of a call arrives on one
//! socket; without it (or for a datagram without a Call-ID) the kernel picks one by the
//! hash of the datagram's addresses. The runtime's threads take the sockets in parallel. The proxy's transaction table is one for all workers (the handler
//! behind its lock), so a response or a retransmission that arrives on another worker's
//! socket (another source, or the same one after the group changed) is matched all the same.
//!
//! A STUN Binding request (RFC 5626 4.4.2) is recognised before SIP parsing and answered
//! only to a registered flow (`Shared::stun`); any other datagram that is not SIP is the
//! message layer's to refuse.

use std::{io, net::SocketAddr, sync::Arc};

use sip_firewall_sip::{Transport, stun};
use tokio::{net::UdpSocket, sync::watch};
use tracing::{debug, warn};

use super::{Shared, is_keepalive};

/// Bind `workers` UDP sockets on `addr` (at least one). With more than one they share the
/// address through SO_REUSEPORT; the first decides the port when `addr` asks for port 0.
/// One worker binds without SO_REUSEPORT, as a plain socket does (a second process cannot
/// join it).
pub(super) fn bind(addr: SocketAddr, workers: usize) -> io::Result<Vec<UdpSocket>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut out: Vec<UdpSocket> = Vec::new();
    let mut at = addr;
    for _ in 0..workers.max(1) {
        let s = Socket::new(Domain::for_address(at), Type::DGRAM, Some(Protocol::UDP))?;
        if workers > 1 {
            s.set_reuse_port(true)?;
        }
        s.set_nonblocking(true)?;
        s.bind(&at.into())?;
        let u = UdpSocket::from_std(std::net::UdpSocket::from(s))?;
        if out.is_empty() {
            at = u.local_addr()?;
        }
        out.push(u);
    }
    Ok(out)
}

/// Receive, judge and answer until shutdown.
pub(super) async fn serve(
    socket: Arc<UdpSocket>,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let local = socket.local_addr()?;
    // The largest UDP payload; anything over the message limit is refused by the parser.
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, source) = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
            r = socket.recv_from(&mut buf) => match r {
                Ok(r) => r,
                Err(e) => {
                    // ICMP errors from earlier sends surface here; they are not fatal.
                    debug!(%local, "UDP receive: {e}");
                    continue;
                }
            },
        };
        let datagram = &buf[..n];
        if let Ok(req) = stun::parse(datagram) {
            if let Some(answer) = shared.stun(&req, datagram, (source, local))
                && let Err(e) = socket.send_to(&answer, source).await
            {
                debug!(dest = %source, "UDP send of a STUN answer: {e}");
            }
            continue;
        }
        if is_keepalive(datagram) {
            if shared.admit_keepalive((source, local), Transport::Datagram, datagram) {
                shared.metrics.keepalive("udp");
            }
            continue;
        }
        if let Some(out) = shared.process(datagram, source, local, Transport::Datagram)
            && let Err(e) = socket.send_to(&out.bytes, out.udp_destination).await
        {
            warn!(dest = %out.udp_destination, "UDP send: {e}");
        }
    }
}
