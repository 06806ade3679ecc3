//! The UDP connector, blocking: a phone and a trunk on plain sockets (bound wherever the
//! test needs them: loopback, or namespace a of a pair).

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use super::{
    Account, Ua, in_dialog,
    msg::{ack_of_failure, header, is_final, response_to, status},
};
use crate::netns::{Pair, in_ns};

/// A UDP socket on `addr` in namespace a of `pair`, reads timing out after `read_timeout`.
pub fn socket_in(pair: &Pair, addr: &str, read_timeout: Duration) -> UdpSocket {
    socket_in_ns(&pair.ns_a, addr, read_timeout)
}

/// A UDP socket on `addr` in namespace `ns`, reads timing out after `read_timeout`.
pub fn socket_in_ns(ns: &str, addr: &str, read_timeout: Duration) -> UdpSocket {
    let addr = addr.to_string();
    in_ns(ns, move || {
        let s = UdpSocket::bind(addr.as_str())?;
        s.set_read_timeout(Some(read_timeout))?;
        Ok(s)
    })
    .unwrap_or_else(|e| panic!("socket in namespace {ns}: {e}"))
}

/// A phone on a UDP socket talking to `proxy`: it sends requests and waits for their final
/// responses; requests it receives meanwhile (the edge's BYE, its keep-alive OPTIONS) are
/// answered 200 (but ACK, and OPTIONS when it plays silent) and kept.
pub struct Phone {
    pub sock: UdpSocket,
    pub proxy: SocketAddr,
    pub ua: Ua,
    /// Requests received from the edge, in order.
    pub requests: Vec<String>,
    /// Every message received, requests and responses, in order.
    pub received: Vec<String>,
    /// How long to wait for a final response.
    pub wait: Duration,
    /// Send the request again each time a read times out with nothing (a lost request or
    /// answer; UDP).
    pub resend: bool,
    /// Answer the OPTIONS the edge sends (its keep-alive pings); false: keep them unanswered,
    /// as a phone gone silent.
    pub answer_options: bool,
    n: u32,
}

impl Phone {
    /// `account`'s phone on `sock` (reads must time out: its read timeout paces waiting),
    /// its Contact at the socket's address.
    pub fn new(sock: UdpSocket, proxy: SocketAddr, account: Account) -> Phone {
        let me = sock.local_addr().expect("local address");
        let contact = format!("sip:{}@{me}", account.user);
        Phone {
            sock,
            proxy,
            ua: Ua::new(account, "UDP", me.to_string(), contact),
            requests: Vec::new(),
            received: Vec::new(),
            wait: Duration::from_secs(3),
            resend: false,
            answer_options: true,
            n: 0,
        }
    }

    /// A phone on `addr` in namespace a of `pair`, talking to the daemon in namespace b.
    pub fn in_ns(pair: &Pair, addr: &str, account: Account) -> Phone {
        let sock = socket_in(pair, addr, Duration::from_millis(50));
        Phone::new(sock, SocketAddr::new(pair.b(false), 5060), account)
    }

    /// The number of this phone's next request (Call-IDs, tags, CSeq).
    pub fn next_number(&mut self) -> u32 {
        self.n += 1;
        self.n
    }

    /// Send `text` to the proxy.
    pub fn send(&self, text: &str) {
        let _ = self.sock.send_to(text.as_bytes(), self.proxy);
    }

    /// One message within the socket's read timeout: a response is returned; a request is
    /// kept (and answered 200 unless it is an ACK).
    pub fn receive(&mut self) -> Option<String> {
        let mut buf = [0u8; 8192];
        let (n, from) = self.sock.recv_from(&mut buf).ok()?;
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        self.received.push(m.clone());
        if m.starts_with("SIP/2.0") {
            return Some(m);
        }
        if !m.starts_with("ACK ") && (self.answer_options || !m.starts_with("OPTIONS ")) {
            let contact = format!("Contact: <{}>\r\n", self.ua.contact);
            let ok = response_to(&m, "200 OK", "ph", &contact);
            let _ = self.sock.send_to(ok.as_bytes(), from);
        }
        self.requests.push(m);
        None
    }

    /// Send `req` and wait (`wait` at most) for its final response: the same Call-ID and
    /// CSeq method. None when none came.
    pub fn final_of(&mut self, req: &str) -> Option<String> {
        let call_id = header(req, "Call-ID").unwrap_or_default().to_string();
        let method = req.split(' ').next().unwrap_or_default().to_string();
        self.send(req);
        let t0 = Instant::now();
        while t0.elapsed() < self.wait {
            match self.receive() {
                Some(m)
                    if header(&m, "Call-ID") == Some(&call_id)
                        && header(&m, "CSeq").is_some_and(|c| c.ends_with(&method))
                        && is_final(&m) =>
                {
                    return Some(m);
                }
                Some(_) => {}
                None if self.resend => self.send(req),
                None => {}
            }
        }
        None
    }

    /// Receive requests from the edge (answered 200) until `until` holds or `within` passes.
    pub fn listen(&mut self, within: Duration, until: impl Fn(&[String]) -> bool) {
        let t0 = Instant::now();
        while t0.elapsed() < within && !until(&self.requests) {
            self.receive();
        }
    }

    /// One REGISTER (`contact`: a URI, `*`, or None for the phone's own), `auth` a
    /// credentials line or nothing: its final response.
    pub fn register_once(
        &mut self,
        call_id: &str,
        contact: Option<&str>,
        expires: u32,
        auth: &str,
    ) -> Option<String> {
        let cseq = self.next_number();
        let contact = match contact {
            Some("*") => "*".to_string(),
            Some(uri) => format!("<{uri}>"),
            None => format!("<{}>", self.ua.contact),
        };
        let req = self.ua.register(call_id, cseq, &contact, expires, auth);
        self.final_of(&req)
    }

    /// REGISTER answering the digest challenge (a 401 is required first: anything else
    /// fails the test): the credentials line and the final response to it.
    pub fn register(
        &mut self,
        call_id: &str,
        contact: Option<&str>,
        expires: u32,
    ) -> (String, Option<String>) {
        let chal = self
            .register_once(call_id, contact, expires, "")
            .unwrap_or_else(|| panic!("{call_id}: no answer to REGISTER"));
        assert_eq!(status(&chal), 401, "{call_id}: no challenge: {chal}");
        let uri = format!("sip:{}", self.ua.account.domain);
        let auth = self.ua.authorize(&chal, "REGISTER", &uri);
        let last = self.register_once(call_id, contact, expires, &auth);
        (auth, last)
    }

    /// An INVITE to `uri` (From-tag `from_tag`): a 407 is ACKed and answered with
    /// credentials whose digest `uri` is `digest_uri`. The final response (None: none came).
    pub fn invite(
        &mut self,
        uri: &str,
        digest_uri: &str,
        call_id: &str,
        from_tag: &str,
    ) -> Option<String> {
        let first = self.ua.invite(uri, from_tag, call_id, 1, "");
        let chal = self.final_of(&first)?;
        if status(&chal) != 407 {
            return Some(chal);
        }
        self.send(&ack_of_failure(&first, &chal));
        let auth = self.ua.authorize(&chal, "INVITE", digest_uri);
        let second = self.ua.invite(uri, from_tag, call_id, 2, &auth);
        self.final_of(&second)
    }

    /// A BYE for the call whose 2xx the phone got (`ok`), with the To-tag `to_tag`: the
    /// final response (None: none came).
    pub fn bye(&mut self, ok: &str, to_tag: &str) -> Option<String> {
        let bye = in_dialog("BYE", ok, &self.ua.via(), to_tag, 3);
        self.final_of(&bye)
    }
}

/// The answer of a trunk to a BYE: its dialogs are those its 2xx gave the To-tag `trunk`
/// (RFC 3261 12.2.2: 481 for any other), and it supports no extension (8.2.2.3: 420).
fn bye_answer(bye: &str) -> &'static str {
    let ours = header(bye, "To").is_some_and(|t| t.ends_with(";tag=trunk"));
    if !ours {
        "481 Call/Transaction Does Not Exist"
    } else if header(bye, "Require").is_some() {
        "420 Bad Extension"
    } else {
        "200 OK"
    }
}

/// A trunk (a UAS on a UDP socket, in a thread until dropped): INVITEs get a chosen final
/// code (200, or 486 Busy Here), BYEs as a UAS answers them; it records all it receives.
pub struct Trunk {
    pub addr: SocketAddr,
    pub received: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Trunk {
    /// Answer on `sock` (reads must time out, so that it stops when dropped) with `code`.
    pub fn start(sock: UdpSocket, code: u16) -> Trunk {
        let addr = sock.local_addr().expect("trunk address");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, st) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let contact = format!("Contact: <sip:gw@{addr}>\r\n");
            let final_code = if code == 200 {
                "200 OK"
            } else {
                "486 Busy Here"
            };
            let t0 = Instant::now();
            let mut buf = [0u8; 8192];
            // Bounded: no test runs this long.
            while !st.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(120) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                let code = if m.starts_with("INVITE ") {
                    Some(final_code)
                } else if m.starts_with("BYE ") {
                    Some(bye_answer(&m))
                } else {
                    None
                };
                let answer = code.map(|code| response_to(&m, code, "trunk", &contact));
                // Recorded before it is answered: a test that saw the answer relayed counts
                // the request at once.
                if let Ok(mut v) = r.lock() {
                    v.push(m);
                }
                if let Some(answer) = answer {
                    let _ = sock.send_to(answer.as_bytes(), from);
                }
            }
        });
        Trunk {
            addr,
            received,
            stop,
            thread: Some(thread),
        }
    }

    /// Requests of `method` received so far.
    pub fn count(&self, method: &str) -> usize {
        self.received
            .lock()
            .map(|v| {
                v.iter()
                    .filter(|m| m.starts_with(&format!("{method} ")))
                    .count()
            })
            .unwrap_or(0)
    }

    /// Wait until `count(method) >= n` or `within` passes.
    pub fn wait(&self, method: &str, n: usize, within: Duration) -> bool {
        let t0 = Instant::now();
        while t0.elapsed() < within {
            if self.count(method) >= n {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }
}

impl Drop for Trunk {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
