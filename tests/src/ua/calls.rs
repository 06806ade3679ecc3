//! The call sequences of the transport tests: a client on a stream connection to the edge
//! (TLS, WebSocket) registers with digest authentication, is called from a UDP phone
//! through the edge, and calls that phone, each call a full dialog (INVITE, 100/180/200,
//! ACK, BYE in one direction or the other). Every step checks what the edge changed: its
//! Via names the transport and listener of each side, Record-Route is doubled across the
//! transport change (RFC 5658) with one stamp in both entries, and in-dialog requests reach
//! each side over its own transport.

use std::net::SocketAddr;

use sip_firewall::auth::digest::Algorithm;

use super::{
    Account, Ua,
    msg::{Request, ack_of_failure, header, headers, record_route, response_to, status},
    unique,
    wire::{WAIT, Wire},
};

/// The user every client registers as.
pub const USER: &str = "alice";
pub const DOMAIN: &str = "example.com";
const PASSWORD: &str = "s3cret";

/// The config sections for `alice@example.com` (MD5 and SHA-256 digest) and loopback next
/// hops.
pub fn alice_config() -> String {
    let ha1 = Algorithm::Md5.ha1(USER, DOMAIN, PASSWORD);
    let ha1_256 = Algorithm::Sha256.ha1(USER, DOMAIN, PASSWORD);
    format!(
        "[sip]\ndomains = [\"{DOMAIN}\"]\n\
         [proxy]\ninternal_next_hops = [\"127.0.0.0/8\"]\n\
         [auth]\nalgorithms = [\"MD5\", \"SHA-256\"]\n\
         users = [{{ user = \"{USER}\", domain = \"{DOMAIN}\", ha1 = \"{ha1}\", ha1_sha256 = \"{ha1_256}\" }}]\n"
    )
}

/// The edge as the client and the phone see it.
#[derive(Clone, Copy, Debug)]
pub struct Edge {
    /// The UDP (and TCP) SIP address.
    pub sip: SocketAddr,
    /// The listener the client is connected to.
    pub listener: SocketAddr,
    /// The Via transport the edge writes towards the client: TLS, WS or WSS.
    pub via: &'static str,
    /// The `transport` URI parameter of its Record-Route on the client's side: tls or ws.
    pub rr_transport: &'static str,
}

impl Edge {
    /// Our Record-Route entry on the client's side, up to its stamp.
    fn client_entry(&self) -> String {
        format!(
            "<sip:{};transport={};lr;sfw=",
            self.listener, self.rr_transport
        )
    }

    /// Our Record-Route entry on the UDP phone's side, up to its stamp.
    fn phone_entry(&self) -> String {
        format!("<sip:{};lr;sfw=", self.sip)
    }
}

/// A SIP client on a `W` connection to the edge, as `alice@example.com`.
pub struct Client<W> {
    pub wire: W,
    /// Its requests: Via transport (TLS, WS, WSS) and sent-by, Contact, digest algorithm.
    pub ua: Ua,
}

impl<W: Wire> Client<W> {
    /// alice on `wire`, her Via transport `via`, answering MD5 challenges.
    pub fn new(wire: W, via: &'static str, sent_by: String, contact: String) -> Client<W> {
        let account = Account::new(USER, DOMAIN, PASSWORD);
        Client {
            wire,
            ua: Ua::new(account, via, sent_by, contact),
        }
    }

    /// The same answering challenges of `alg`.
    pub fn with_algorithm(mut self, alg: Algorithm) -> Client<W> {
        self.ua.algorithm = alg;
        self
    }

    /// The next message that is not a 100 Trying.
    pub async fn next(&mut self, what: &str) -> String {
        loop {
            let m = self
                .wire
                .recv()
                .await
                .unwrap_or_else(|| panic!("{what}: nothing on the client's connection"));
            if status(&m) != 100 {
                return m;
            }
        }
    }

    /// REGISTER with digest: 401, then 200 with the credentials.
    pub async fn register(&mut self, call_id: &str) {
        let contact = format!("<{}>", self.ua.contact);
        let first = self.ua.register(call_id, 1, &contact, 300, "");
        self.wire.send(&first).await;
        let r = self.next("REGISTER").await;
        assert_eq!(status(&r), 401, "{r}");
        let auth = self.ua.authorize(&r, "REGISTER", &format!("sip:{DOMAIN}"));
        let second = self.ua.register(call_id, 2, &contact, 300, &auth);
        self.wire.send(&second).await;
        let r = self.next("REGISTER").await;
        assert_eq!(status(&r), 200, "{r}");
    }
}

/// A phone on UDP (`bob@pbx.example`), talking to the edge's SIP address.
pub struct Phone {
    pub sock: tokio::net::UdpSocket,
    pub addr: SocketAddr,
    edge: SocketAddr,
}

impl Phone {
    pub async fn new(edge: SocketAddr) -> Phone {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
            .await
            .expect("phone");
        let addr = sock.local_addr().expect("addr");
        Phone { sock, addr, edge }
    }

    pub async fn send(&self, text: &str) {
        self.sock
            .send_to(text.as_bytes(), self.edge)
            .await
            .expect("send");
    }

    /// The phone's INVITE to the client's address of record (bob calls alice).
    pub fn invite(&self, call_id: &str) -> String {
        Request {
            method: "INVITE",
            uri: &format!("sip:{USER}@{DOMAIN}"),
            via: &self.via("pinv"),
            from: "<sip:bob@pbx.example>;tag=b1",
            to: &format!("<sip:{USER}@{DOMAIN}>"),
            call_id,
            cseq: 1,
            extra: &format!("Contact: <sip:bob@{}>\r\n", self.addr),
        }
        .text()
    }

    /// A Via of the phone's with a new branch (`z9hG4bK<kind>...`).
    pub fn via(&self, kind: &str) -> String {
        format!(
            "SIP/2.0/UDP {};branch=z9hG4bK{kind}{};rport",
            self.addr,
            unique()
        )
    }

    /// The answers to the phone's INVITE, up to the 200: the client's 180 and 200, in that
    /// order, and the edge's 100. The 100 is not asserted first: the edge flushes it after
    /// the forwarded INVITE, so a quick 180 may overtake it (harmless, RFC 3261 17.1.1.2: a
    /// provisional in Proceeding goes to the TU). The 200.
    async fn ringing_then_ok(&self) -> String {
        let mut codes = Vec::new();
        let ok = loop {
            let m = self
                .expect("the answers to the INVITE", |m| status(m) != 0)
                .await;
            assert!(m.contains("CSeq: 1 INVITE"), "{m}");
            codes.push(status(&m));
            if status(&m) == 200 {
                break m;
            }
        };
        codes.retain(|c| *c != 100);
        assert_eq!(codes, [180, 200], "{ok}");
        ok
    }

    /// The next datagram `want` accepts, skipping retransmissions and provisional
    /// answers the test does not wait for (UDP: Timer A/E resends).
    pub async fn expect(&self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let mut buf = vec![0u8; 65535];
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let (n, from) = tokio::time::timeout_at(deadline, self.sock.recv_from(&mut buf))
                .await
                .unwrap_or_else(|_| panic!("{what}: nothing at the phone"))
                .expect("recv");
            assert_eq!(from, self.edge, "only the edge talks to the phone");
            let text = String::from_utf8_lossy(&buf[..n]).into_owned();
            if want(&text) {
                return text;
            }
        }
    }
}

/// An established call between the client and the phone, as each side holds it.
pub struct Call {
    pub call_id: String,
    /// The Record-Route of the dialog, top first, as the 2xx carried it.
    pub record_route: Vec<String>,
    /// The phone's and the client's From/To (with tags) for requests each sends.
    phone_from: String,
    phone_to: String,
    /// The phone's and the client's remote targets.
    phone_target: String,
    client_target: String,
    /// Whether the phone is the caller (its route set is the Record-Route reversed).
    phone_called: bool,
}

impl Call {
    fn route_for_phone(&self) -> String {
        let mut rr = self.record_route.clone();
        if !self.phone_called {
            rr.reverse();
        }
        rr.join(", ")
    }

    fn route_for_client(&self) -> String {
        let mut rr = self.record_route.clone();
        if self.phone_called {
            rr.reverse();
        }
        rr.join(", ")
    }

    /// The client's in-dialog `method` with CSeq `cseq`, sent on its connection along the
    /// route set: the request as the phone received it.
    async fn client_sends<W: Wire>(
        &self,
        phone: &Phone,
        c: &mut Client<W>,
        method: &str,
        cseq: u32,
    ) -> String {
        let request = Request {
            method,
            uri: &self.phone_target,
            via: &c.ua.via(),
            from: &self.phone_to,
            to: &self.phone_from,
            call_id: &self.call_id,
            cseq,
            extra: &format!("Route: {}\r\n", self.route_for_client()),
        };
        c.wire.send(&request.text()).await;
        let start = format!("{method} ");
        phone
            .expect(&format!("the client's {method}"), |m| m.starts_with(&start))
            .await
    }

    /// The phone hangs up: its BYE reaches the client over the client's connection, with
    /// the edge's Via for that transport; the client's 200 reaches the phone over UDP.
    pub async fn bye_from_phone<W: Wire>(&self, phone: &Phone, edge: &Edge, c: &mut Client<W>) {
        let bye = Request {
            method: "BYE",
            uri: &self.client_target,
            via: &phone.via("pbye"),
            from: &self.phone_from,
            to: &self.phone_to,
            call_id: &self.call_id,
            cseq: 9,
            extra: &format!("Route: {}\r\n", self.route_for_phone()),
        };
        phone.send(&bye.text()).await;
        let req = c.next("the phone's BYE").await;
        assert!(req.starts_with("BYE "), "{req}");
        assert!(req.contains(&format!("Call-ID: {}", self.call_id)), "{req}");
        let via = headers(&req, "Via");
        assert!(
            via.first().is_some_and(|v| v.starts_with(&format!(
                "SIP/2.0/{} {};branch=z9hG4bK",
                edge.via, edge.listener
            ))),
            "the edge's Via towards the client names its transport and listener: {req}"
        );
        assert!(
            headers(&req, "Route").is_empty(),
            "the edge consumed both of its Route entries: {req}"
        );
        c.wire.send(&response_to(&req, "200 OK", "x", "")).await;
        phone
            .expect("the 200 for the BYE", |m| {
                status(m) == 200 && m.contains("CSeq: 9 BYE")
            })
            .await;
    }

    /// The client hangs up: its BYE reaches the phone over UDP with the edge's UDP Via
    /// above the client's; the phone's 200 reaches the client on its connection.
    pub async fn bye_from_client<W: Wire>(&self, phone: &Phone, edge: &Edge, c: &mut Client<W>) {
        let req = self.client_sends(phone, c, "BYE", 7).await;
        vias_toward_phone(&req, edge, c);
        assert!(headers(&req, "Route").is_empty(), "{req}");
        phone.send(&response_to(&req, "200 OK", "x", "")).await;
        let r = c.next("the 200 for the BYE").await;
        assert_eq!(status(&r), 200, "{r}");
        assert!(r.contains("CSeq: 7 BYE"), "{r}");
    }
}

/// A request of the client as the phone gets it: the edge's UDP Via on top, the client's
/// below it.
fn vias_toward_phone<W>(req: &str, edge: &Edge, c: &Client<W>) {
    let vias = headers(req, "Via");
    assert!(
        vias.first()
            .is_some_and(|v| v.starts_with(&format!("SIP/2.0/UDP {};branch=", edge.sip))),
        "{req}"
    );
    let client = format!("SIP/2.0/{} {}", c.ua.transport, c.ua.sent_by);
    assert!(
        vias.get(1).is_some_and(|v| v.starts_with(&client)),
        "the client's Via below ours: {req}"
    );
}

/// The 2xx of a call set-up at the `caller`: the dialog's Record-Route `rr`, the caller's
/// Via alone. Its To (with the callee's tag).
fn answer_to(ok: &str, rr: &[String], caller: &str) -> String {
    assert_eq!(record_route(ok), rr, "the dialog's Record-Route: {ok}");
    assert_eq!(headers(ok, "Via").len(), 1, "only the {caller}'s Via: {ok}");
    header(ok, "To").expect("To").to_string()
}

/// Both Record-Route entries of the edge carry one stamp: returns it.
fn stamp_of(rr: &[String], first: &str, second: &str, msg: &str) -> String {
    assert_eq!(
        rr.len(),
        2,
        "Record-Route doubled on the transport change: {msg}"
    );
    let stamp = rr[0]
        .strip_prefix(first)
        .unwrap_or_else(|| panic!("top Record-Route {first}...: {msg}"));
    assert_eq!(
        rr[1].strip_prefix(second),
        Some(stamp),
        "second Record-Route {second}<same stamp>: {msg}"
    );
    stamp.to_string()
}

/// The phone calls the registered client: INVITE over UDP, delivered on the client's
/// connection (the edge's Via for that transport, Record-Route doubled: the client's side
/// on top); the client answers 180 and 200, relayed to the phone over UDP; the phone's ACK
/// comes on the client's connection. Returns the call, up and running.
pub async fn phone_calls_client<W: Wire>(
    phone: &Phone,
    edge: &Edge,
    c: &mut Client<W>,
    call_id: &str,
) -> Call {
    phone.send(&phone.invite(call_id)).await;
    let req = c.next("the phone's INVITE").await;
    assert!(
        req.starts_with(&format!("INVITE {} SIP/2.0", c.ua.contact)),
        "the INVITE goes to the registered contact: {req}"
    );
    assert!(
        header(&req, "Via").is_some_and(|v| v.starts_with(&format!(
            "SIP/2.0/{} {};branch=z9hG4bK",
            edge.via, edge.listener
        ))),
        "the edge's Via names the client's transport and listener: {req}"
    );
    let rr = record_route(&req);
    // RFC 5658: the client reaches us over its transport, the phone over UDP.
    stamp_of(&rr, &edge.client_entry(), &edge.phone_entry(), &req);
    let contact = format!("Contact: <{}>\r\n", c.ua.contact);
    c.wire
        .send(&response_to(&req, "180 Ringing", "a1", &contact))
        .await;
    c.wire
        .send(&response_to(&req, "200 OK", "a1", &contact))
        .await;
    let ok = phone.ringing_then_ok().await;
    let to = answer_to(&ok, &rr, "phone");
    let call = Call {
        call_id: call_id.to_string(),
        record_route: rr,
        phone_from: "<sip:bob@pbx.example>;tag=b1".into(),
        phone_to: to,
        phone_target: format!("sip:bob@{}", phone.addr),
        client_target: c.ua.contact.clone(),
        phone_called: false,
    };
    // The ACK for the 2xx, by the route set (RFC 3261 12.2.1.1; the caller's is the
    // Record-Route reversed).
    let ack = Request {
        method: "ACK",
        uri: &call.client_target,
        via: &phone.via("pack"),
        from: &call.phone_from,
        to: &call.phone_to,
        call_id,
        cseq: 1,
        extra: &format!("Route: {}\r\n", call.route_for_phone()),
    };
    phone.send(&ack.text()).await;
    let ack = c.next("the ACK").await;
    assert!(
        ack.starts_with("ACK ") && ack.contains("CSeq: 1 ACK"),
        "{ack}"
    );
    assert!(ack.contains(&format!("Call-ID: {call_id}")), "{ack}");
    call
}

/// The client calls the phone (`sip:bob@<phone>`): digest (407, ACK, INVITE with
/// credentials), the INVITE reaches the phone over UDP (the edge's UDP Via above the
/// client's, Record-Route doubled: the phone's side on top); the phone's 180 and 200 reach
/// the client on its connection; the client's ACK reaches the phone. Returns the call.
pub async fn client_calls_phone<W: Wire>(
    phone: &Phone,
    edge: &Edge,
    c: &mut Client<W>,
    call_id: &str,
) -> Call {
    let target = format!("sip:bob@{}", phone.addr);
    let from = format!("<sip:{USER}@{DOMAIN}>;tag=a7");
    let first = c.ua.invite(&target, "a7", call_id, 1, "");
    c.wire.send(&first).await;
    let r = c.next("the answer to the INVITE").await;
    assert_eq!(status(&r), 407, "{r}");
    // The ACK for a non-2xx goes to the edge with the INVITE's branch (RFC 3261 17.1.1.3).
    c.wire.send(&ack_of_failure(&first, &r)).await;
    let auth = c.ua.authorize(&r, "INVITE", &target);
    let second = c.ua.invite(&target, "a7", call_id, 2, &auth);
    c.wire.send(&second).await;

    let req = phone
        .expect("the client's INVITE", |m| m.starts_with("INVITE "))
        .await;
    assert!(
        req.starts_with(&format!("INVITE {target} SIP/2.0")),
        "{req}"
    );
    vias_toward_phone(&req, edge, c);
    assert!(
        header(&req, "Proxy-Authorization").is_none(),
        "our credentials are not passed on: {req}"
    );
    let rr = record_route(&req);
    stamp_of(&rr, &edge.phone_entry(), &edge.client_entry(), &req);
    let contact = format!("Contact: <{target}>\r\n");
    phone
        .send(&response_to(&req, "180 Ringing", "b9", &contact))
        .await;
    let r = c.next("the 180").await;
    assert_eq!(status(&r), 180, "{r}");
    phone
        .send(&response_to(&req, "200 OK", "b9", &contact))
        .await;
    let ok = c.next("the 200").await;
    assert_eq!(status(&ok), 200, "{ok}");
    assert!(ok.contains("CSeq: 2 INVITE"), "{ok}");
    let to = answer_to(&ok, &rr, "client");
    let call = Call {
        call_id: call_id.to_string(),
        record_route: rr,
        // The phone's view: it is the callee.
        phone_from: to,
        phone_to: from.clone(),
        phone_target: target.clone(),
        client_target: c.ua.contact.clone(),
        phone_called: true,
    };
    let ack = call.client_sends(phone, c, "ACK", 2).await;
    assert!(ack.contains("CSeq: 2 ACK"), "{ack}");
    assert!(
        header(&ack, "Via")
            .is_some_and(|v| v.starts_with(&format!("SIP/2.0/UDP {};branch=", edge.sip))),
        "{ack}"
    );
    call
}

/// The whole sequence each stream transport must carry: `c` registers, the phone calls it
/// and `c` hangs up, then `c` calls the phone and the phone hangs up. `tag` makes the
/// Call-IDs unique.
pub async fn register_called_and_calling<W: Wire>(c: &mut Client<W>, edge: &Edge, tag: &str) {
    c.register(&format!("reg-{tag}")).await;
    let phone = Phone::new(edge.sip).await;
    let call = phone_calls_client(&phone, edge, c, &format!("in-{tag}")).await;
    call.bye_from_client(&phone, edge, c).await;
    let call = client_calls_phone(&phone, edge, c, &format!("out-{tag}")).await;
    call.bye_from_phone(&phone, edge, c).await;
}
