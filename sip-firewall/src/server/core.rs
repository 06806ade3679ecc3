//! The core behind the message layer: what happens to a message that passed parsing and
//! sanity checks. This is the seam where the proxy (issue 4) plugs in; until then the core
//! is a stateless policy that relays nothing.

use std::{borrow::Cow, net::SocketAddr, sync::Arc};

use sip_firewall_sip::{
    Message, StartLine, Transport,
    uri::{self, Host, Uri},
};

/// Where a message came from and arrived.
#[derive(Clone, Copy, Debug)]
pub struct Context {
    pub source: SocketAddr,
    pub local: SocketAddr,
    pub transport: Transport,
}

/// What to do with an accepted message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Answer the request statelessly.
    Reply {
        code: u16,
        phrase: Cow<'static, str>,
        /// Extra header lines without CRLF.
        extra: Vec<String>,
    },
    /// Discard, counting the reason (e.g. a response that matches no transaction).
    Drop { reason: &'static str },
    /// Consumed, nothing to send (e.g. an ACK).
    Absorb,
}

/// Decides the fate of accepted messages.
pub trait Handler: Send + Sync + 'static {
    /// A request that passed the message layer.
    fn on_request(&self, req: &Message<'_>, ctx: &Context) -> Action;
    /// A response that passed the message layer.
    fn on_response(&self, resp: &Message<'_>, ctx: &Context) -> Action;
    /// Called once when the server is bound: the handle through which a stateful core sends
    /// what it originates (forwarded requests, relayed responses, retransmissions from its
    /// timers). A stateless core ignores it.
    fn attach(&self, _out: Arc<dyn Outbound>) {}
    /// A connection the core asked for could not be opened (or its handshake failed): a
    /// transport error toward `dest` (RFC 3263 4.3 fails over on it).
    fn unreachable(&self, _dest: Destination) {}
}

/// Where a message the core originates goes: an address and how to reach it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Destination {
    pub addr: SocketAddr,
    /// Datagram: UDP from our listening socket; Stream: the open TCP connection with `addr`.
    pub transport: Transport,
}

/// Sends bytes for the core without blocking (the core calls it under its own lock).
pub trait Outbound: Send + Sync + 'static {
    /// Queue `bytes` for `dest`; false when they cannot go (no socket of that address family,
    /// no open connection to that peer, or its queue full). Loss is what UDP retransmission
    /// timers are for; the caller counts it.
    fn send(&self, dest: Destination, bytes: &[u8]) -> bool;
    /// `addr` was found under the domain `name` (RFC 3263): a TLS connection to it sends
    /// `name` as SNI and verifies the certificate against it (RFC 5922 7.1), not the address.
    fn name_peer(&self, _addr: SocketAddr, _name: &str) {}
}

/// The stateless stand-in for the proxy: answers OPTIONS pings addressed to this node with
/// 200, refuses every other request with 403 "No route" (it relays nothing), absorbs ACKs,
/// and drops responses as stray (there are no transactions yet).
#[derive(Clone, Debug, Default)]
pub struct StatelessCore {
    /// Domains this node is responsible for (lower case).
    domains: Vec<String>,
    /// Addresses the node listens on.
    listen: Vec<SocketAddr>,
}

impl StatelessCore {
    /// A core for these domains and listen addresses.
    pub fn new(domains: &[String], listen: &[SocketAddr]) -> Self {
        StatelessCore {
            domains: domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
            listen: listen.to_vec(),
        }
    }

    /// Whether a Request-URI host (and port) names this node.
    fn is_us(&self, host: &Host<'_>, port: Option<u16>, ctx: &Context) -> bool {
        let port_ok = |p: u16| port.is_none_or(|x| x == p);
        match host {
            Host::Domain(d) => {
                let d = d.trim_end_matches('.');
                self.domains.iter().any(|x| x.eq_ignore_ascii_case(d))
            }
            h => h.ip().is_some_and(|ip| {
                (ip == ctx.local.ip() && port_ok(ctx.local.port()))
                    || self
                        .listen
                        .iter()
                        .any(|l| l.ip() == ip && port_ok(l.port()))
            }),
        }
    }
}

impl Handler for StatelessCore {
    fn on_request(&self, req: &Message<'_>, ctx: &Context) -> Action {
        let StartLine::Request { method, uri: ruri } = req.start else {
            return Action::Absorb;
        };
        if method == "ACK" {
            return Action::Absorb;
        }
        if method == "OPTIONS"
            && let Ok(Uri::Sip(u)) = uri::parse(ruri)
            && u.user.is_none()
            && self.is_us(&u.host, u.port, ctx)
        {
            return Action::Reply {
                code: 200,
                phrase: "OK".into(),
                extra: vec!["Allow: OPTIONS".into()],
            };
        }
        Action::Reply {
            code: 403,
            phrase: "No route".into(),
            extra: Vec::new(),
        }
    }

    fn on_response(&self, _resp: &Message<'_>, _ctx: &Context) -> Action {
        Action::Drop {
            reason: crate::metrics::DROP_STRAY_RESPONSE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_firewall_sip::{Limits, parse::parse};

    fn act(core: &StatelessCore, msg: &str) -> Action {
        let m = parse(msg.as_bytes(), &Limits::default(), Transport::Datagram).unwrap();
        let ctx = Context {
            source: "192.0.2.1:5060".parse().unwrap(),
            local: "127.0.0.1:5060".parse().unwrap(),
            transport: Transport::Datagram,
        };
        if m.is_request() {
            core.on_request(&m, &ctx)
        } else {
            core.on_response(&m, &ctx)
        }
    }

    #[test]
    fn policy() {
        let core = StatelessCore::new(
            &["Example.com".into()],
            &["127.0.0.1:5060".parse().unwrap()],
        );
        let code = |a: Action| match a {
            Action::Reply { code, .. } => code,
            _ => 0,
        };
        assert_eq!(
            code(act(&core, "OPTIONS sip:example.com SIP/2.0\r\n\r\n")),
            200
        );
        assert_eq!(
            code(act(&core, "OPTIONS sip:127.0.0.1:5060 SIP/2.0\r\n\r\n")),
            200
        );
        assert_eq!(
            code(act(&core, "OPTIONS sip:127.0.0.1:5070 SIP/2.0\r\n\r\n")),
            403
        );
        assert_eq!(
            code(act(&core, "OPTIONS sip:bob@example.com SIP/2.0\r\n\r\n")),
            403
        );
        assert_eq!(
            code(act(&core, "OPTIONS sip:other.org SIP/2.0\r\n\r\n")),
            403
        );
        assert_eq!(
            code(act(&core, "INVITE sip:example.com SIP/2.0\r\n\r\n")),
            403
        );
        assert_eq!(
            act(&core, "ACK sip:example.com SIP/2.0\r\n\r\n"),
            Action::Absorb
        );
        assert_eq!(
            act(&core, "SIP/2.0 200 OK\r\n\r\n"),
            Action::Drop {
                reason: "stray_response"
            }
        );
    }
}
