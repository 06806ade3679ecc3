//! A small SIP UDP client for tests that need many registrations at a set rate: REGISTER,
//! answer the digest challenge (MD5, qop=auth), retransmit on Timer E's schedule
//! (RFC 3261 17.1.2.2: T1 doubling, capped at T2) until a final answer or the deadline.

use std::{
    collections::HashMap,
    net::{SocketAddr, UdpSocket},
    time::{Duration, Instant},
};

use sip_firewall::auth::digest::{Algorithm, response_auth};

/// One phone: its user, password and the local socket it registers from.
struct Phone {
    user: String,
    password: String,
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

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.split("\r\n").find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then_some(v.trim())
    })
}

fn param(value: &str, key: &str) -> Option<String> {
    value.split(',').find_map(|p| {
        let (k, v) = p.trim().split_once('=')?;
        let k = k.trim().trim_start_matches("Digest").trim();
        k.eq_ignore_ascii_case(key)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

impl Phone {
    fn request(&mut self, domain: &str, auth: Option<String>) -> String {
        let local = self.sock.local_addr().expect("local address");
        self.cseq += 1;
        let branch = format!("z9hG4bK-{}-{}-{}", self.user, self.cseq, local.port());
        format!(
            "REGISTER sip:{domain} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch={branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{u}@{domain}>;tag=t{p}\r\nTo: <sip:{u}@{domain}>\r\nCall-ID: {cid}\r\nCSeq: {c} REGISTER\r\nContact: <sip:{u}@{local}>\r\nExpires: 3600\r\n{auth}User-Agent: test-phone\r\nContent-Length: 0\r\n\r\n",
            u = self.user,
            p = local.port(),
            cid = self.call_id,
            c = self.cseq,
            auth = auth
                .map(|a| format!("Authorization: {a}\r\n"))
                .unwrap_or_default(),
        )
    }

    fn send(&mut self, server: SocketAddr, req: String, res: &mut StormResult) {
        let _ = self.sock.send_to(req.as_bytes(), server);
        res.sent += 1;
        self.pending = Some((req, Instant::now(), Duration::from_millis(500)));
    }
}

impl Phone {
    /// The digest answer (MD5, qop=auth, nc 1) to the `WWW-Authenticate` challenge `ch`.
    fn authorization(&self, ch: &str, domain: &str) -> String {
        let realm = param(ch, "realm").unwrap_or_default();
        let nonce = param(ch, "nonce").unwrap_or_default();
        let alg = Algorithm::Md5;
        let ha1 = alg.ha1(&self.user, &realm, &self.password);
        let uri = format!("sip:{domain}");
        let cnonce = format!("c{}", self.call_id.len() + self.cseq as usize);
        let response = response_auth(alg, &ha1, &nonce, "00000001", &cnonce, "REGISTER", &uri);
        format!(
            "Digest username=\"{}\", realm=\"{realm}\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{response}\", algorithm=MD5, qop=auth, nc=00000001, cnonce=\"{cnonce}\"",
            self.user
        )
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
        phones.push(Phone {
            user: user.clone(),
            password: password.clone(),
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
            let req = p.request(domain, None);
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
                let Some(code) = msg.split(' ').nth(1).and_then(|c| c.parse::<u16>().ok()) else {
                    continue;
                };
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
                    let auth = p.authorization(ch, domain);
                    let req = p.request(domain, Some(auth));
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
