//! The seams between the daemon's units: the traits and value types they share, in a leaf
//! module that depends on none of them, so dependencies point one way.
//!
//! - the SIP server (`server/`) hands accepted messages to a [`Handler`] (the proxy) with their
//!   [`Context`] and carries out its [`Action`]; what the handler originates leaves through the
//!   server's [`Outbound`] toward a [`Destination`];
//! - every message passes a [`Gate`] first (the user-space half of the firewall, `enforce/`);
//! - the proxy tells an [`Observer`] what the fast path learns from (client transactions,
//!   authentications, failures, scanners: `enforce/`).

use std::{
    borrow::Cow,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use sip_firewall_sip::{Message, Transport};

/// Where a message came from and arrived, and what its transport vouches for.
#[derive(Clone, Debug)]
pub struct Context {
    pub source: SocketAddr,
    pub local: SocketAddr,
    pub transport: Transport,
    /// The `[tls] trusted_peers` host the client certificate of the TLS connection the
    /// message came on is valid for (None: any other connection or transport).
    pub trusted_peer: Option<Arc<str>>,
}

impl Context {
    /// A message's context on a transport that vouches for nobody.
    pub fn new(source: SocketAddr, local: SocketAddr, transport: Transport) -> Context {
        Context {
            source,
            local,
            transport,
            trusted_peer: None,
        }
    }
}

/// The key a source is counted under (connection slots, transactions): the address, or
/// its /64 for IPv6 (one host owns a whole /64 and can rotate through it).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::V6(o.into())
            }
        },
    }
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
    /// [`Handler::on_request`], also handing back the final answers the handler sent itself
    /// while handling the request: the server shows them to captures with it.
    fn on_request_answered(&self, req: &Message<'_>, ctx: &Context) -> (Action, Answers) {
        (self.on_request(req, ctx), Vec::new())
    }
    /// A response that passed the message layer.
    fn on_response(&self, resp: &Message<'_>, ctx: &Context) -> Action;
    /// Called once when the server is bound: the handle through which a stateful core sends
    /// what it originates (forwarded requests, relayed responses, retransmissions from its
    /// timers). A stateless core ignores it.
    fn attach(&self, _out: Arc<dyn Outbound>) {}
    /// A connection the core asked for could not be opened (or its handshake failed): a
    /// transport error toward `dest` (RFC 3263 4.3 fails over on it).
    fn unreachable(&self, _dest: Destination) {}
    /// The connection `flow` (TCP, TLS, WebSocket) closed: what was reached through it is
    /// gone.
    fn flow_closed(&self, _flow: Destination) {}
    /// The single CRLF pong of RFC 5626 4.4.1 came on the connection `flow`.
    fn flow_pong(&self, _flow: Destination) {}
    /// A STUN keep-alive (RFC 5626 4.4.2) came from the UDP `flow`: true when the flow is
    /// registered here, and so may be answered.
    fn flow_stun(&self, _flow: Destination) -> bool {
        false
    }
}

/// A [`Handler`] method taking the flow a connection event happened on
/// (`Handler::flow_closed`, `Handler::flow_pong`).
pub type FlowEvent = fn(&dyn Handler, Destination);

/// Final answers a stateful core made and sent itself (a 403, 404, 407, 483... within its
/// server transaction), each with where it went.
pub type Answers = Vec<(Destination, Vec<u8>)>;

/// Where a message the core originates goes: an address and how to reach it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
    /// Like [`Outbound::send`], but over a connection only when one with `dest` is open:
    /// never a new one (a contact behind NAT is reachable only over the flow it opened).
    fn send_on_flow(&self, dest: Destination, bytes: &[u8]) -> bool {
        dest.transport == Transport::Datagram && self.send(dest, bytes)
    }
    /// `answer` (sent already) is a final answer the core made itself with no request in
    /// hand (a timer's, a finished resolution's): shown to captures alone.
    fn answered_alone(&self, _dest: Destination, _answer: &[u8]) {}
}

/// A check on every message before it is parsed: the user-space half of the firewall's
/// policy (bans, lists, flood and payload checks when XDP is not attached; the per-source
/// request rate always). A refusal drops the message silently; its reason (`banned`,
/// `request_rate`, ...) is what captures of the gate are told.
pub trait Gate: Send + Sync + 'static {
    fn admit(&self, source: SocketAddr, transport: Transport, bytes: &[u8]) -> Admission;
    /// A connection from `source` at accept, before any handshake (TCP, TLS, WebSocket):
    /// a refusal closes it at once (banned and denied sources).
    fn admit_connection(&self, _source: SocketAddr, _transport: Transport) -> Admission {
        Ok(())
    }
}

/// What the [`Gate`] says of a message or connection: `Err(reason)` refuses it.
pub type Admission = Result<(), &'static str>;

/// Receives proxy events.
pub trait Observer: Send + Sync + 'static {
    /// A client transaction was created: a request with our Via `branch` went to `dest`.
    fn client_transaction_created(&self, _branch: &str, _dest: Destination) {}
    /// That client transaction ended and was freed.
    fn client_transaction_terminated(&self, _branch: &str, _dest: Destination) {}
    /// `source` proved to be our subscriber `user` (it is known good for a while).
    fn authenticated(&self, _source: SocketAddr, _user: &str) {}
    /// Credentials from `source` were refused (`reason`: wrong_password, replay, ...).
    fn auth_failure(&self, _source: SocketAddr, _user: Option<&str>, _reason: &str) {}
    /// A request from a scanner (User-Agent on the list) was dropped.
    fn scanner(&self, _source: SocketAddr, _user_agent: &str) {}
    /// A new request from `source` to the user `user` was refused with `code` (403, 404,
    /// 480: unknown, unregistered, not ours to reach): evidence of a sweep over user names.
    fn refused_target(&self, _source: SocketAddr, _user: &str, _code: u16) {}
}

/// The observer that ignores everything.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoObserver;

impl Observer for NoObserver {}
