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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use sip_firewall_sip::{Message, stun};

    use super::*;
    use crate::{
        metrics::Metrics,
        seams::{Action, Admission, Context, Gate, Handler},
        server::{SipConfig, outbound::SocketOutbound},
    };

    /// A handler holding one UDP flow.
    struct Holds(SocketAddr);

    impl Handler for Holds {
        fn on_request(&self, _: &Message<'_>, _: &Context) -> Action {
            Action::Absorb
        }
        fn on_response(&self, _: &Message<'_>, _: &Context) -> Action {
            Action::Absorb
        }
        fn flow_stun(&self, flow: Destination) -> bool {
            flow.addr == self.0 && flow.transport == Transport::Datagram
        }
    }

    /// A gate that refuses everyone.
    struct Closed;

    impl Gate for Closed {
        fn admit(&self, _: SocketAddr, _: Transport, _: &[u8]) -> Admission {
            Err("test")
        }
    }

    /// A STUN keep-alive is answered with the source's own address only from the flow the
    /// handler holds, and only while the gate admits it.
    #[test]
    fn stun_is_answered_to_the_held_flow_through_the_gate() {
        let phone: SocketAddr = "[2001:db8::5]:40000".parse().expect("literal");
        let other: SocketAddr = "[2001:db8::5]:40001".parse().expect("literal");
        let local: SocketAddr = "[2001:db8::1]:5060".parse().expect("literal");
        let shared = Shared::new(
            &SipConfig::default(),
            Arc::new(Metrics::new()),
            Arc::new(Holds(phone)),
            Arc::new(SocketOutbound::new(Vec::new())),
        );
        let bytes = stun::binding_request([7; 12], true);
        let req = stun::parse(&bytes).expect("valid request");
        let answer = shared.stun(&req, &bytes, (phone, local)).expect("answered");
        assert_eq!(stun::mapped_address(&answer), Some(phone));
        assert_eq!(shared.stun(&req, &bytes, (other, local)), None);
        let _ = shared.gate.set(Arc::new(Closed));
        assert_eq!(shared.stun(&req, &bytes, (phone, local)), None);
    }

    /// The daemon's STUN parser and the XDP payload check bound a keep-alive alike.
    #[test]
    fn stun_bounds_agree_with_the_xdp_check() {
        use sip_firewall_common::payload::{STUN_HEADER_LEN, STUN_MAX_ATTRIBUTES};
        assert_eq!(stun::MAX_ATTRIBUTES_LEN, STUN_MAX_ATTRIBUTES);
        assert_eq!(stun::HEADER_LEN, STUN_HEADER_LEN);
    }
}
