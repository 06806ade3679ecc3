//! Many registrations at a set rate, each phone from its own UDP socket (non-blocking, one
//! thread): REGISTER, answer the digest challenge (MD5, qop=auth), retransmit on Timer E's
//! schedule (RFC 3261 17.1.2.2: T1 doubling, capped at T2) until a final answer or the
//! deadline.

use std::{
    collections::HashMap,
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use super::{
    Account, Ua, digest,
    msg::{header, status},
};

/// One phone: its UA and the local socket it registers from.
struct Phone {
    ua: Ua,
    sock: UdpSocket,
    call_id: String,
    cseq: u32,
    /// The request in flight, when it was last sent, and the retransmission interval.
    pending: Option<(String, Instant, Duration)>,
    done: Option<u16>,
    challenged: bool,
}

/// What a storm of registrations achieved.
#[derive(Debug, Default, Clone)]
pub struct StormResult {
    /// Phones that got 200 to their authenticated REGISTER.
    pub registered: usize,
    /// Final answers other than 200 (after the challenge), by code.
    pub failed: HashMap<u16, usize>,
    /// Phones with no final answer by the deadline.
    pub unanswered: usize,
    /// Requests sent, retransmissions included.
    pub sent: usize,
    pub retransmissions: usize,
}

impl Phone {
    fn request(&mut self, auth: &str) -> String {
        self.cseq += 1;
        let contact = format!("<{}>", self.ua.contact);
        self.ua
            .register(&self.call_id, self.cseq, &contact, 3600, auth)
    }

    fn send(&mut self, server: SocketAddr, req: String, res: &mut StormResult) {
        let _ = self.sock.send_to(req.as_bytes(), server);
        res.sent += 1;
        self.pending = Some((req, Instant::now(), Duration::from_millis(500)));
    }

    /// The digest answer (MD5, qop=auth, nc 1) to the `WWW-Authenticate` challenge `ch`.
    fn authorization(&self, ch: &str) -> String {
        let uri = format!("sip:{}", self.ua.account.domain);
        let cnonce = format!("c{}", self.call_id.len() + self.cseq as usize);
        let value = digest::credentials(
            ch,
            &self.ua.account,
            self.ua.algorithm,
            "REGISTER",
            &uri,
            &cnonce,
        );
        format!("Authorization: {value}\r\n")
    }

    /// Timer E: retransmit the pending request, doubling up to T2 (4 s).
    fn retransmit(&mut self, server: SocketAddr, res: &mut StormResult) {
        if let Some((req, last, every)) = self.pending.as_mut()
            && last.elapsed() >= *every
        {
            let _ = self.sock.send_to(req.as_bytes(), server);
            res.sent += 1;
            res.retransmissions += 1;
            *last = Instant::now();
            *every = (*every * 2).min(Duration::from_secs(4));
        }
    }
}

/// Register `users` (user, password) of `domain` at `server`, each from its own socket on
/// `local_ip`, starting `rate` phones per second; stop at `deadline` after the start.
pub fn register_storm(
    local_ip: std::net::IpAddr,
    server: SocketAddr,
    domain: &str,
    users: &[(String, String)],
    rate: u32,
    deadline: Duration,
) -> anyhow::Result<StormResult> {
    let mut phones = Vec::with_capacity(users.len());
    for (i, (user, password)) in users.iter().enumerate() {
        let sock = UdpSocket::bind(SocketAddr::new(local_ip, 0))?;
        sock.set_nonblocking(true)?;
        let me = sock.local_addr()?;
        let account = Account::new(user, domain, password);
        let contact = format!("sip:{user}@{me}");
        phones.push(Phone {
            ua: Ua::new(account, "UDP", me.to_string(), contact),
            sock,
            call_id: format!("storm-{i}-{user}"),
            cseq: 0,
            pending: None,
            done: None,
            challenged: false,
        });
    }
    let mut res = StormResult::default();
    let t0 = Instant::now();
    let interval = Duration::from_secs(1) / rate.max(1);
    let mut started = 0;
    let mut buf = vec![0u8; 65535];
    while t0.elapsed() < deadline {
        // Start the phones whose time has come.
        while started < phones.len() && t0.elapsed() >= interval * started as u32 {
            let p = &mut phones[started];
            let req = p.request("");
            p.send(server, req, &mut res);
            started += 1;
        }
        let mut open = started < phones.len();
        for p in phones.iter_mut().take(started) {
            if p.done.is_some() {
                continue;
            }
            open = true;
            while let Ok((n, _)) = p.sock.recv_from(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).to_string();
                let code = status(&msg);
                if code < 200 {
                    continue;
                }
                p.pending = None;
                if code == 401 && !p.challenged {
                    p.challenged = true;
                    let Some(ch) = header(&msg, "WWW-Authenticate") else {
                        p.done = Some(code);
                        break;
                    };
                    let auth = p.authorization(ch);
                    let req = p.request(&auth);
                    p.send(server, req, &mut res);
                } else {
                    p.done = Some(code);
                    if code == 200 {
                        res.registered += 1;
                    } else {
                        *res.failed.entry(code).or_default() += 1;
                    }
                    break;
                }
            }
            p.retransmit(server, &mut res);
        }
        if !open {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    res.unanswered = phones.iter().filter(|p| p.done.is_none()).count();
    Ok(res)
}
