//! SIP over UDP: one message per datagram, answers sent per RFC 3261 18.2.2 / RFC 3581.

use std::sync::Arc;

use sip_firewall_sip::Transport;
use tokio::{net::UdpSocket, sync::watch};
use tracing::{debug, warn};

use super::{Shared, is_keepalive};

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
        if is_keepalive(datagram) {
            if shared.admit_keepalive(source, Transport::Datagram, datagram) {
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
