//! The gate as the listeners meet it: a connection at accept, a keep-alive (a STUN one
//! answered here), a message.
//! A refusal is what the gate says it is (`seams::Admission`): counted by the gate, and
//! offered with its reason to the captures of the gate layer (`crate::tap`, one atomic
//! load when none runs).

use std::net::SocketAddr;

use sip_firewall_sip::{Transport, stun::BindingRequest};

use super::Shared;
use crate::{guard, seams::Destination, tap};

impl Shared {
    /// A connection just accepted on a `label` listener (tcp, tls, ws, wss), before its
    /// slot and any handshake: the gate refuses banned and denied sources here, so that
    /// they cost no TLS handshake or upgrade. Counted in `sipfw_sip_connections_total`.
    pub(crate) fn admit_connection(
        &self,
        (peer, local): (SocketAddr, SocketAddr),
        transport: Transport,
        label: &'static str,
    ) -> bool {
        let verdict = guard::catch("message", Some(peer), || {
            self.gate
                .get()
                .map_or(Ok(()), |g| g.admit_connection(peer, transport))
        })
        .unwrap_or(Err("internal_error"));
        if let Err(reason) = verdict {
            crate::metrics::connection(label, "refused_gate");
            tap::refused(reason, peer, local, transport, b"");
        }
        verdict.is_ok()
    }

    /// A keep-alive (CRLFs on UDP, a CRLFCRLF ping on TCP) is traffic like any other: it
    /// passes the gate (bans, lists, flood, request rate) before it counts or keeps a
    /// connection alive.
    pub(crate) fn admit_keepalive(
        &self,
        (source, local): (SocketAddr, SocketAddr),
        transport: Transport,
        bytes: &[u8],
    ) -> bool {
        guard::catch("message", Some(source), || {
            self.admitted(source, local, transport, bytes)
        })
        .unwrap_or(false)
    }

    /// A STUN Binding request on a UDP socket (RFC 5626 4.4.2, 5.4): gated like any
    /// keep-alive, then answered only when `source` holds a flow registered here
    /// (`Handler::flow_stun`): the answer is larger than the request, and the edge never
    /// sends a source it has not verified more bytes than it received. The answer, if any.
    pub(crate) fn stun(
        &self,
        req: &BindingRequest,
        bytes: &[u8],
        (source, local): (SocketAddr, SocketAddr),
    ) -> Option<Vec<u8>> {
        if !self.admit_keepalive((source, local), Transport::Datagram, bytes) {
            return None;
        }
        self.metrics.keepalive("udp");
        let flow = Destination {
            addr: source,
            transport: Transport::Datagram,
        };
        let held = guard::catch("message", Some(source), || self.handler.flow_stun(flow));
        held.unwrap_or(false).then(|| req.success(source))
    }

    /// Whether the gate admits a message (or keep-alive); a refusal is offered to the
    /// captures of the gate with its reason.
    pub(super) fn admitted(
        &self,
        source: SocketAddr,
        local: SocketAddr,
        transport: Transport,
        bytes: &[u8],
    ) -> bool {
        let Some(gate) = self.gate.get() else {
            return true;
        };
        match gate.admit(source, transport, bytes) {
            Ok(()) => true,
            Err(reason) => {
                tap::refused(reason, source, local, transport, bytes);
                false
            }
        }
    }
}
