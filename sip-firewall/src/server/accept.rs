//! The accept loop of the stream transports (TCP, TLS, WS, WSS): the one place where a new
//! connection meets the gate (a banned or denied source is closed unread, before any
//! handshake) and the connection slots (`[sip] max_tcp_connections` in total,
//! `max_tcp_per_source` per source; one over them is closed at once and counted). What
//! follows (a handshake, an upgrade, the framer) is each transport's own.

use std::{fmt::Display, net::SocketAddr, sync::Arc};

use sip_firewall_sip::Transport;
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    time::error::Elapsed,
};
use tracing::debug;

use super::{
    Shared,
    slots::{Full, Slot},
};

/// A connection the gate admitted, holding its slot for as long as it lives.
pub(super) struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub slot: Slot,
}

/// Accept connections on `listener` until shutdown; each admitted one goes to `serve`, which
/// spawns its handling. `label` names the transport in metrics and logs.
pub(super) async fn accept_loop(
    listener: TcpListener,
    transport: Transport,
    label: &'static str,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
    mut serve: impl FnMut(Accepted),
) -> anyhow::Result<()> {
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return Ok(()),
            a = listener.accept() => match a {
                Ok(a) => a,
                Err(e) => {
                    debug!(transport = label, "accept: {e}");
                    continue;
                }
            },
        };
        let local = stream.local_addr().unwrap_or(peer);
        if !shared.admit_connection((peer, local), transport, label) {
            // A banned or denied source: closed unread, before any handshake.
            drop(stream);
            continue;
        }
        match shared.slots.take(peer.ip()) {
            Ok(slot) => {
                crate::metrics::connection(label, "accepted");
                serve(Accepted { stream, peer, slot });
            }
            Err(full) => {
                crate::metrics::connection(label, "refused_slots");
                let what = match full {
                    Full::Total => "tcp_total",
                    Full::PerSource => "tcp_per_source",
                };
                crate::metrics::limit_hit(what, Some(peer.ip()));
                crate::tap::refused(what, peer, local, transport, b"");
                // Closed unread: RST or FIN, the peer learns at once.
                drop(stream);
            }
        }
    }
}

/// What became of a connection's opening step (a TLS handshake, a WebSocket upgrade) run
/// under a timeout: counted by `count` as `ok`, `failed` or `timeout`, and logged (as
/// `what`) when it did not open; the opened stream, if it did.
pub(super) fn opened<T, E: Display>(
    step: Result<Result<T, E>, Elapsed>,
    what: &str,
    peer: SocketAddr,
    count: fn(&'static str),
) -> Option<T> {
    match step {
        Ok(Ok(s)) => {
            count("ok");
            Some(s)
        }
        Ok(Err(e)) => {
            count("failed");
            debug!(%peer, "{what}: {e}");
            None
        }
        Err(_) => {
            count("timeout");
            debug!(%peer, "{what} timed out");
            None
        }
    }
}
