//! The [`Outbound`] the server gives its handler: UDP from the listening sockets (so replies
//! and forwarded requests leave from the address peers know), TCP over connections peers
//! opened to us.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use sip_firewall_sip::Transport;
use tokio::{net::UdpSocket, sync::mpsc};

use super::core::{Destination, Outbound};

/// How many messages may wait for one TCP connection's writer.
pub(crate) const TCP_QUEUE: usize = 256;

/// Sockets and open connections.
pub(crate) struct SocketOutbound {
    udp: Vec<Arc<UdpSocket>>,
    tcp: Mutex<HashMap<SocketAddr, mpsc::Sender<Vec<u8>>>>,
}

impl SocketOutbound {
    pub(crate) fn new(udp: Vec<Arc<UdpSocket>>) -> SocketOutbound {
        SocketOutbound {
            udp,
            tcp: Mutex::new(HashMap::new()),
        }
    }

    /// A TCP connection with `peer` opened: messages for it go to `tx`.
    pub(crate) fn register(&self, peer: SocketAddr, tx: mpsc::Sender<Vec<u8>>) {
        if let Ok(mut m) = self.tcp.lock() {
            m.insert(peer, tx);
        }
    }

    /// The connection with `peer` closed.
    pub(crate) fn unregister(&self, peer: SocketAddr) {
        if let Ok(mut m) = self.tcp.lock() {
            m.remove(&peer);
        }
    }
}

impl Outbound for SocketOutbound {
    fn send(&self, dest: Destination, bytes: &[u8]) -> bool {
        match dest.transport {
            Transport::Datagram => {
                // The first socket of the destination's family; try_send_to never blocks.
                let sock = self.udp.iter().find(|s| {
                    s.local_addr()
                        .is_ok_and(|l| l.is_ipv4() == dest.addr.is_ipv4())
                });
                sock.is_some_and(|s| s.try_send_to(bytes, dest.addr).is_ok())
            }
            Transport::Stream => {
                let tx = self
                    .tcp
                    .lock()
                    .ok()
                    .and_then(|m| m.get(&dest.addr).cloned());
                tx.is_some_and(|tx| tx.try_send(bytes.to_vec()).is_ok())
            }
        }
    }
}
