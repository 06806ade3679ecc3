//! The SIP sequences the transport tests share (issue 14): a client on a TLS or WebSocket
//! connection to the edge registers with digest authentication, is called from a UDP phone
//! through the edge, and calls that phone, each call a full dialog (INVITE, 100/180/200,
//! ACK, BYE in one direction or the other). Every step checks what the edge changed: its
//! Via names the transport and listener of each side, Record-Route is doubled across the
//! transport change (RFC 5658) with one stamp in both entries, and in-dialog requests reach
//! each side over its own transport.

use std::{net::SocketAddr, time::Duration};

use futures_util::{SinkExt, StreamExt as _};
use sip_firewall::auth::digest::{Algorithm, response_auth};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio_tungstenite::{WebSocketStream, tungstenite::Message};

/// A number no other branch or tag of this test process has.
fn unique() -> u32 {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// How long any one message may take to arrive.
const WAIT: Duration = Duration::from_secs(10);

/// The user every client registers as, with `[auth]` MD5 digest.
pub const USER: &str = "alice";
pub const DOMAIN: &str = "example.com";
const PASSWORD: &str = "s3cret";

/// The config sections for `alice@example.com` (MD5 digest) and loopback next hops.
pub fn alice_config() -> String {
    let ha1 = Algorithm::Md5.ha1(USER, DOMAIN, PASSWORD);
    let ha1_256 = Algorithm::Sha256.ha1(USER, DOMAIN, PASSWORD);
    format!(
        "[sip]\ndomains = [\"{DOMAIN}\"]\n\
         [proxy]\ninternal_next_hops = [\"127.0.0.0/8\"]\n\
         [auth]\nalgorithms = [\"MD5\"]\n\
         users = [{{ user = \"{USER}\", domain = \"{DOMAIN}\", ha1 = \"{ha1}\", ha1_sha256 = \"{ha1_256}\" }}]\n"
    )
}

/// Where SIP text goes to and comes from: a TLS (or TCP) byte stream, or a WebSocket.
#[allow(async_fn_in_trait)]
pub trait Wire {
    async fn send(&mut self, text: &str);
    /// The next SIP message; `None` when the connection ended or nothing came in time.
    async fn recv(&mut self) -> Option<String>;
}

/// A byte stream carrying SIP framed by Content-Length (RFC 3261 18.3).
pub struct Stream<S>(pub S);

impl<S: AsyncRead + AsyncWrite + Unpin> Wire for Stream<S> {
    async fn send(&mut self, text: &str) {
        self.0.write_all(text.as_bytes()).await.expect("send");
        self.0.flush().await.expect("flush");
    }

    async fn recv(&mut self) -> Option<String> {
        read_message(&mut self.0).await
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Wire for WebSocketStream<S> {
    async fn send(&mut self, text: &str) {
        SinkExt::send(self, Message::text(text.to_string()))
            .await
            .expect("send");
    }

    async fn recv(&mut self) -> Option<String> {
        loop {
            match tokio::time::timeout(WAIT, self.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => return Some(t.to_string()),
                Ok(Some(Ok(Message::Binary(b)))) => {
                    return Some(String::from_utf8_lossy(&b).into_owned());
                }
                Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) | Err(_) => {
                    return None;
                }
                // Pings (answered by tungstenite), pongs.
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

/// Read one SIP message (headers and Content-Length body); `None` at EOF or an error.
pub async fn read_message<S: AsyncRead + Unpin>(s: &mut S) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        match tokio::time::timeout(WAIT, s.read(&mut byte)).await {
            Ok(Ok(1)) => buf.push(byte[0]),
            _ => return None,
        }
        // Keep-alive pongs and stray CRLFs between messages.
        if buf == b"\r\n" {
            buf.clear();
        }
    }
    let text = String::from_utf8_lossy(&buf).into_owned();
    let len = header(&text, "Content-Length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).await.ok()?;
    Some(text + &String::from_utf8_lossy(&body))
}

/// The first value of header `name` (full form, case-insensitive).
pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    headers(msg, name).into_iter().next()
}

/// Every value of header `name`, one per line, in order.
pub fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .split("\r\n")
        .skip(1)
        .filter_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
        })
        .collect()
}

/// The status code of a response, 0 for a request.
pub fn status(msg: &str) -> u16 {
    msg.strip_prefix("SIP/2.0 ")
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A quoted or bare parameter of a header value.
pub fn param<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    let at = header.find(&format!("{name}="))? + name.len() + 1;
    let rest = &header[at..];
    Some(match rest.strip_prefix('"') {
        Some(q) => &q[..q.find('"')?],
        None => rest.split([',', ' ', ';', '>']).next()?,
    })
}

/// A response to `req`: its Via, From, Call-ID, CSeq and Record-Route, its To with
/// `to_tag` unless already tagged, then `extra` lines.
pub fn response_to(req: &str, code: &str, to_tag: &str, extra: &str) -> String {
    let mut resp = format!("SIP/2.0 {code}\r\n");
    for l in req
        .split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .split("\r\n")
        .skip(1)
    {
        let lower = l.to_ascii_lowercase();
        if ["via:", "from:", "call-id:", "cseq:", "record-route:"]
            .iter()
            .any(|p| lower.starts_with(p))
        {
            resp.push_str(l);
            resp.push_str("\r\n");
        } else if lower.starts_with("to:") {
            if lower.contains(";tag=") {
                resp.push_str(&format!("{l}\r\n"));
            } else {
                resp.push_str(&format!("{l};tag={to_tag}\r\n"));
            }
        }
    }
    resp + extra + "Content-Length: 0\r\n\r\n"
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
    /// Its Via transport (TLS, WS, WSS) and sent-by.
    pub via: &'static str,
    pub sent_by: String,
    /// The Contact URI it registers.
    pub contact: String,
    branches: u32,
}

impl<W: Wire> Client<W> {
    pub fn new(wire: W, via: &'static str, sent_by: String, contact: String) -> Client<W> {
        Client {
            wire,
            via,
            sent_by,
            contact,
            branches: 0,
        }
    }

    fn via_line(&mut self) -> String {
        self.branches += 1;
        format!(
            "Via: SIP/2.0/{} {};branch=z9hG4bKcl{}x{};rport\r\n",
            self.via,
            self.sent_by,
            self.branches,
            unique()
        )
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
        let register = |c: &mut Self, cseq: u32, auth: &str| {
            format!(
                "REGISTER sip:{DOMAIN} SIP/2.0\r\n{}Max-Forwards: 70\r\nFrom: <sip:{USER}@{DOMAIN}>;tag=r{cseq}\r\nTo: <sip:{USER}@{DOMAIN}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} REGISTER\r\nContact: <{}>\r\nExpires: 300\r\n{auth}Content-Length: 0\r\n\r\n",
                c.via_line(),
                c.contact
            )
        };
        let first = register(self, 1, "");
        self.wire.send(&first).await;
        let r = self.next("REGISTER").await;
        assert_eq!(status(&r), 401, "{r}");
        let auth = credentials(
            &r,
            "WWW-Authenticate",
            "Authorization",
            "REGISTER",
            &format!("sip:{DOMAIN}"),
        );
        let second = register(self, 2, &auth);
        self.wire.send(&second).await;
        let r = self.next("REGISTER").await;
        assert_eq!(status(&r), 200, "{r}");
    }
}

/// Digest credentials (MD5, qop=auth) answering the challenge in `resp`'s `challenge`
/// header, as a `header` line.
fn credentials(resp: &str, challenge: &str, header_name: &str, method: &str, uri: &str) -> String {
    let c = header(resp, challenge).unwrap_or_else(|| panic!("a {challenge}: {resp}"));
    let nonce = param(c, "nonce").expect("nonce");
    let realm = param(c, "realm").expect("realm");
    let ha1 = Algorithm::Md5.ha1(USER, realm, PASSWORD);
    let r = response_auth(
        Algorithm::Md5,
        &ha1,
        nonce,
        "00000001",
        "c0ffee",
        method,
        uri,
    );
    format!(
        "{header_name}: Digest username=\"{USER}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{r}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"c0ffee\"\r\n"
    )
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

    /// The phone hangs up: its BYE reaches the client over the client's connection, with
    /// the edge's Via for that transport; the client's 200 reaches the phone over UDP.
    pub async fn bye_from_phone<W: Wire>(&self, phone: &Phone, edge: &Edge, c: &mut Client<W>) {
        let bye = format!(
            "BYE {} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKpbye{};rport\r\nMax-Forwards: 70\r\nRoute: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 9 BYE\r\nContent-Length: 0\r\n\r\n",
            self.client_target,
            phone.addr,
            unique(),
            self.route_for_phone(),
            self.phone_from,
            self.phone_to,
            self.call_id
        );
        phone.send(&bye).await;
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
        let via = c.via_line();
        let bye = format!(
            "BYE {} SIP/2.0\r\n{via}Max-Forwards: 70\r\nRoute: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: 7 BYE\r\nContent-Length: 0\r\n\r\n",
            self.phone_target,
            self.route_for_client(),
            self.phone_to,
            self.phone_from,
            self.call_id
        );
        c.wire.send(&bye).await;
        let req = phone
            .expect("the client's BYE", |m| m.starts_with("BYE "))
            .await;
        let vias = headers(&req, "Via");
        assert!(
            vias.first()
                .is_some_and(|v| v.starts_with(&format!("SIP/2.0/UDP {};branch=", edge.sip))),
            "{req}"
        );
        assert!(
            vias.get(1)
                .is_some_and(|v| v.starts_with(&format!("SIP/2.0/{} {}", c.via, c.sent_by))),
            "the client's Via below ours: {req}"
        );
        assert!(headers(&req, "Route").is_empty(), "{req}");
        phone.send(&response_to(&req, "200 OK", "x", "")).await;
        let r = c.next("the 200 for the BYE").await;
        assert_eq!(status(&r), 200, "{r}");
        assert!(r.contains("CSeq: 7 BYE"), "{r}");
    }
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
    let invite = format!(
        "INVITE sip:{USER}@{DOMAIN} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKpinv{};rport\r\nMax-Forwards: 70\r\nFrom: <sip:bob@pbx.example>;tag=b1\r\nTo: <sip:{USER}@{DOMAIN}>\r\nCall-ID: {call_id}\r\nCSeq: 1 INVITE\r\nContact: <sip:bob@{}>\r\nContent-Length: 0\r\n\r\n",
        phone.addr,
        unique(),
        phone.addr
    );
    phone.send(&invite).await;
    let req = c.next("the phone's INVITE").await;
    assert!(
        req.starts_with(&format!("INVITE {} SIP/2.0", c.contact)),
        "the INVITE goes to the registered contact: {req}"
    );
    assert!(
        header(&req, "Via").is_some_and(|v| v.starts_with(&format!(
            "SIP/2.0/{} {};branch=z9hG4bK",
            edge.via, edge.listener
        ))),
        "the edge's Via names the client's transport and listener: {req}"
    );
    let rr: Vec<String> = headers(&req, "Record-Route")
        .into_iter()
        .map(str::to_string)
        .collect();
    // RFC 5658: the client reaches us over its transport, the phone over UDP.
    stamp_of(&rr, &edge.client_entry(), &edge.phone_entry(), &req);
    let contact = format!("Contact: <{}>\r\n", c.contact);
    c.wire
        .send(&response_to(&req, "180 Ringing", "a1", &contact))
        .await;
    c.wire
        .send(&response_to(&req, "200 OK", "a1", &contact))
        .await;
    let ringing = phone.expect("the 180", |m| status(m) == 180).await;
    assert!(ringing.contains("CSeq: 1 INVITE"), "{ringing}");
    let ok = phone
        .expect("the 200", |m| {
            status(m) == 200 && m.contains("CSeq: 1 INVITE")
        })
        .await;
    let rr_ok: Vec<String> = headers(&ok, "Record-Route")
        .into_iter()
        .map(str::to_string)
        .collect();
    assert_eq!(rr_ok, rr, "the 2xx carries the dialog's Record-Route: {ok}");
    assert_eq!(headers(&ok, "Via").len(), 1, "only the phone's Via: {ok}");
    let to = header(&ok, "To").expect("To").to_string();
    let call = Call {
        call_id: call_id.to_string(),
        record_route: rr,
        phone_from: "<sip:bob@pbx.example>;tag=b1".into(),
        phone_to: to,
        phone_target: format!("sip:bob@{}", phone.addr),
        client_target: c.contact.clone(),
        phone_called: false,
    };
    // The ACK for the 2xx, by the route set (RFC 3261 12.2.1.1; the caller's is the
    // Record-Route reversed).
    let ack = format!(
        "ACK {} SIP/2.0\r\nVia: SIP/2.0/UDP {};branch=z9hG4bKpack{};rport\r\nMax-Forwards: 70\r\nRoute: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        call.client_target,
        phone.addr,
        unique(),
        call.route_for_phone(),
        call.phone_from,
        call.phone_to
    );
    phone.send(&ack).await;
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
    let invite = |c: &mut Client<W>, cseq: u32, auth: &str| {
        format!(
            "INVITE {target} SIP/2.0\r\n{}Max-Forwards: 70\r\nFrom: {from}\r\nTo: <{target}>\r\nCall-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\nContact: <{}>\r\n{auth}Content-Length: 0\r\n\r\n",
            c.via_line(),
            c.contact
        )
    };
    let first = invite(c, 1, "");
    c.wire.send(&first).await;
    let r = c.next("the answer to the INVITE").await;
    assert_eq!(status(&r), 407, "{r}");
    // The ACK for a non-2xx goes to the edge with the INVITE's branch (RFC 3261 17.1.1.3).
    let ack = format!(
        "ACK {target} SIP/2.0\r\nVia: {}\r\nMax-Forwards: 70\r\nFrom: {from}\r\nTo: {}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
        header(&first, "Via").expect("Via"),
        header(&r, "To").expect("To")
    );
    c.wire.send(&ack).await;
    let auth = credentials(
        &r,
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "INVITE",
        &target,
    );
    let second = invite(c, 2, &auth);
    c.wire.send(&second).await;

    let req = phone
        .expect("the client's INVITE", |m| m.starts_with("INVITE "))
        .await;
    assert!(
        req.starts_with(&format!("INVITE {target} SIP/2.0")),
        "{req}"
    );
    let vias = headers(&req, "Via");
    assert!(
        vias.first()
            .is_some_and(|v| v.starts_with(&format!("SIP/2.0/UDP {};branch=", edge.sip))),
        "{req}"
    );
    assert!(
        vias.get(1)
            .is_some_and(|v| v.starts_with(&format!("SIP/2.0/{} {}", c.via, c.sent_by))),
        "the client's Via below ours: {req}"
    );
    assert!(
        header(&req, "Proxy-Authorization").is_none(),
        "our credentials are not passed on: {req}"
    );
    let rr: Vec<String> = headers(&req, "Record-Route")
        .into_iter()
        .map(str::to_string)
        .collect();
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
    let rr_ok: Vec<String> = headers(&ok, "Record-Route")
        .into_iter()
        .map(str::to_string)
        .collect();
    assert_eq!(rr_ok, rr, "{ok}");
    assert_eq!(headers(&ok, "Via").len(), 1, "only the client's Via: {ok}");
    let to = header(&ok, "To").expect("To").to_string();
    let call = Call {
        call_id: call_id.to_string(),
        record_route: rr,
        // The phone's view: it is the callee.
        phone_from: to,
        phone_to: from.clone(),
        phone_target: target.clone(),
        client_target: c.contact.clone(),
        phone_called: true,
    };
    let via = c.via_line();
    let ack = format!(
        "ACK {target} SIP/2.0\r\n{via}Max-Forwards: 70\r\nRoute: {}\r\nFrom: {from}\r\nTo: {}\r\nCall-ID: {call_id}\r\nCSeq: 2 ACK\r\nContent-Length: 0\r\n\r\n",
        call.route_for_client(),
        call.phone_from
    );
    c.wire.send(&ack).await;
    let ack = phone
        .expect("the client's ACK", |m| m.starts_with("ACK "))
        .await;
    assert!(ack.contains("CSeq: 2 ACK"), "{ack}");
    assert!(
        header(&ack, "Via")
            .is_some_and(|v| v.starts_with(&format!("SIP/2.0/UDP {};branch=", edge.sip))),
        "{ack}"
    );
    call
}

/// The whole sequence the issue asks of each transport: `c` registers, the phone calls it
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
