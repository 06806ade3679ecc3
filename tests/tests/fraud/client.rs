//! A phone (our subscriber, MD5 digest like SIPp) and a trunk, both plain UDP sockets in
//! namespace a: the phone places calls through the daemon; the trunk (the daemon's
//! `[proxy] outbound`) answers INVITEs with a chosen code and BYEs as a UAS does (200 for
//! its dialog, 481 for a To-tag it never gave, 420 for a `Require` it lacks), and records
//! everything it receives.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU16, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use sip_firewall::auth::digest::{Algorithm, response_auth};
use sip_firewall_tests::netns::{Pair, in_ns};

pub const PHONE: &str = "198.51.100.1:5091";
pub const TRUNK: &str = "198.51.100.1:5099";

/// The daemon's config for these tests: the trunk as outbound, `fraud` appended.
pub fn fraud_config(fraud: &str) -> String {
    crate::support::config(&format!("[fraud]\n{fraud}\n"))
        .replace("[proxy]\n", &format!("[proxy]\noutbound = \"{TRUNK}\"\n"))
}

pub fn socket(pair: &Pair, addr: &str) -> UdpSocket {
    let addr = addr.to_string();
    in_ns(&pair.ns_a, move || {
        let s = UdpSocket::bind(addr.as_str())?;
        s.set_read_timeout(Some(Duration::from_millis(50)))?;
        Ok(s)
    })
    .expect("socket in namespace a")
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

/// A response to `req` with `code`: the headers a UAS copies, its tag, a Contact.
pub fn respond(req: &str, code: &str, tag: &str, contact: &str) -> String {
    let mut out = format!("SIP/2.0 {code}\r\n");
    for line in req.split("\r\n").skip(1) {
        let l = line.to_ascii_lowercase();
        if ["via:", "from:", "call-id:", "cseq:", "record-route:"]
            .iter()
            .any(|p| l.starts_with(p))
        {
            out.push_str(line);
            out.push_str("\r\n");
        } else if l.starts_with("to:") {
            if line.contains(";tag=") {
                out.push_str(&format!("{line}\r\n"));
            } else {
                out.push_str(&format!("{line};tag={tag}\r\n"));
            }
        }
    }
    out.push_str(&format!(
        "Contact: <{contact}>\r\nContent-Length: 0\r\n\r\n"
    ));
    out
}

/// The trunk's answer to a BYE: its dialogs are those its 2xx gave the To-tag `trunk`
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

/// The trunk: answers in a thread until stopped.
pub struct Trunk {
    pub received: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Trunk {
    pub fn start(pair: &Pair, code: u16) -> Trunk {
        let s = socket(pair, TRUNK);
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let c = AtomicU16::new(code);
        let (r, st) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let t0 = Instant::now();
            let mut buf = [0u8; 8192];
            // Bounded: no test runs this long.
            while !st.load(Ordering::Relaxed) && t0.elapsed() < Duration::from_secs(120) {
                let Ok((n, from)) = s.recv_from(&mut buf) else {
                    continue;
                };
                let m = String::from_utf8_lossy(&buf[..n]).into_owned();
                let answer = if m.starts_with("INVITE ") {
                    let code = c.load(Ordering::Relaxed);
                    let phrase = if code == 200 { "OK" } else { "Busy Here" };
                    Some(respond(
                        &m,
                        &format!("{code} {phrase}"),
                        "trunk",
                        &format!("sip:gw@{TRUNK}"),
                    ))
                } else if m.starts_with("BYE ") {
                    Some(respond(
                        &m,
                        bye_answer(&m),
                        "trunk",
                        &format!("sip:gw@{TRUNK}"),
                    ))
                } else {
                    None
                };
                if let Some(a) = answer {
                    let _ = s.send_to(a.as_bytes(), from);
                }
                if let Ok(mut v) = r.lock() {
                    v.push(m);
                }
            }
        });
        Trunk {
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

/// Our subscriber's phone.
pub struct Phone {
    pub s: UdpSocket,
    proxy: SocketAddr,
    user: String,
    password: String,
    n: u32,
    /// Requests the phone received (BYEs from the edge), answered 200.
    pub requests: Vec<String>,
}

impl Phone {
    pub fn new(pair: &Pair, user: &str, password: &str) -> Phone {
        Phone {
            s: socket(pair, PHONE),
            proxy: SocketAddr::new(pair.b(false), 5060),
            user: user.into(),
            password: password.into(),
            n: 0,
            requests: Vec::new(),
        }
    }

    /// One message, within 50ms: requests (BYE from the edge) are answered 200 and kept,
    /// responses returned.
    fn receive(&mut self) -> Option<String> {
        let mut buf = [0u8; 8192];
        let (n, from) = self.s.recv_from(&mut buf).ok()?;
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        if m.starts_with("SIP/2.0") {
            return Some(m);
        }
        if !m.starts_with("ACK ") {
            let ok = respond(&m, "200 OK", "ph", &format!("sip:{}@{PHONE}", self.user));
            let _ = self.s.send_to(ok.as_bytes(), from);
        }
        self.requests.push(m);
        None
    }

    /// The final response of `call_id` to a `method` request (None: nothing within 3s).
    fn final_of(&mut self, call_id: &str, method: &str) -> Option<String> {
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(3) {
            if let Some(m) = self.receive()
                && header(&m, "Call-ID") == Some(call_id)
                && header(&m, "CSeq").is_some_and(|c| c.ends_with(method))
                && !m.starts_with("SIP/2.0 1")
            {
                return Some(m);
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

    /// Call `number` at the trunk's domain (407 answered with MD5 digest): the first line
    /// of the final response ("nothing" when none came).
    pub fn call(&mut self, number: &str) -> String {
        self.place(number)
            .and_then(|m| m.lines().next().map(str::to_string))
            .unwrap_or_else(|| "nothing".into())
    }

    /// A BYE for the call whose 2xx the phone got (`ok`), with the To-tag `to_tag`: to the
    /// 2xx's Contact along its Record-Route in reverse (RFC 3261 12.1.2). The first line of
    /// the answer ("nothing" when none came).
    pub fn bye(&mut self, ok: &str, to_tag: &str) -> String {
        self.n += 1;
        let get = |name: &str| header(ok, name).unwrap_or("");
        let target = get("Contact").trim_start_matches('<').trim_end_matches('>');
        let mut routes: Vec<&str> = ok
            .split("\r\n")
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.trim().eq_ignore_ascii_case("Record-Route"))
            .map(|(_, v)| v.trim())
            .collect();
        routes.reverse();
        let to = get("To");
        let to = format!("{};tag={to_tag}", to.split(";tag=").next().unwrap_or(to));
        let call_id = get("Call-ID").to_string();
        let bye = format!(
            "BYE {target} SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKfrbye{}{};rport\r\n\
             Max-Forwards: 70\r\nRoute: {}\r\nFrom: {}\r\nTo: {to}\r\nCall-ID: {call_id}\r\n\
             CSeq: 3 BYE\r\nContent-Length: 0\r\n\r\n",
            self.user,
            self.n,
            routes.join(", "),
            get("From"),
        );
        let _ = self.s.send_to(bye.as_bytes(), self.proxy);
        self.final_of(&call_id, "BYE")
            .and_then(|m| m.lines().next().map(str::to_string))
            .unwrap_or_else(|| "nothing".into())
    }

    /// Call `number` as [`Phone::call`] does: the whole final response (None when none
    /// came).
    pub fn place(&mut self, number: &str) -> Option<String> {
        self.n += 1;
        let uri = format!("sip:{number}@trunk.example");
        let call_id = format!("fraud-{}-{}-{}", self.user, std::process::id(), self.n);
        let (user, n) = (self.user.clone(), self.n);
        let invite = |cseq: u32, auth: &str| {
            format!(
                "INVITE {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKfr{user}{n}c{cseq};rport\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:{user}@example.com>;tag=ft{n}\r\nTo: <{uri}>\r\n\
                 Call-ID: {call_id}\r\nCSeq: {cseq} INVITE\r\nContact: <sip:{user}@{PHONE}>\r\n\
                 {auth}Content-Length: 0\r\n\r\n"
            )
        };
        let _ = self.s.send_to(invite(1, "").as_bytes(), self.proxy);
        let chal = self.final_of(&call_id, "INVITE")?;
        if !chal.starts_with("SIP/2.0 407") {
            return Some(chal);
        }
        let ack = format!(
            "ACK {uri} SIP/2.0\r\nVia: SIP/2.0/UDP {PHONE};branch=z9hG4bKfr{user}{n}c1;rport\r\n\
             Max-Forwards: 70\r\nFrom: <sip:{user}@example.com>;tag=ft{n}\r\n\
             To: {}\r\nCall-ID: {call_id}\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n",
            header(&chal, "To").unwrap_or("")
        );
        let _ = self.s.send_to(ack.as_bytes(), self.proxy);
        let pa = header(&chal, "Proxy-Authenticate").unwrap_or("");
        let field = |k: &str| {
            pa.split(&format!("{k}=\""))
                .nth(1)
                .and_then(|r| r.split('"').next())
                .unwrap_or("")
                .to_string()
        };
        let (realm, nonce) = (field("realm"), field("nonce"));
        let ha1 = Algorithm::Md5.ha1(&self.user, &realm, &self.password);
        let r = response_auth(
            Algorithm::Md5,
            &ha1,
            &nonce,
            "00000001",
            "c0ffee",
            "INVITE",
            &uri,
        );
        let cred = format!(
            "Proxy-Authorization: Digest username=\"{user}\", realm=\"{realm}\", nonce=\"{nonce}\", \
             uri=\"{uri}\", response=\"{r}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"c0ffee\"\r\n"
        );
        let _ = self.s.send_to(invite(2, &cred).as_bytes(), self.proxy);
        self.final_of(&call_id, "INVITE")
    }
}
