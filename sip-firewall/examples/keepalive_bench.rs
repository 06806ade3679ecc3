//! The CPU of NAT keep-alives (`cargo xtask bench keepalive`): N contacts (100,000 by
//! default, the first argument otherwise) registered behind NAT, half over UDP, a quarter
//! over TCP and a quarter over WebSocket, pinged every 30 s by the proxy's timer ticks
//! (10 ms, as the daemon runs them) on a fake clock. The first interval spreads the first
//! pings; the second is measured: the process's user and system CPU (getrusage) of the
//! ticks that send every ping (an OPTIONS built per UDP contact, a double-CRLF per stream)
//! and of taking every answer (a 200 parsed and matched per OPTIONS, a pong per stream),
//! which this program builds too (counted in, so the figure is an upper bound).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use sip_firewall::{
    config::Config,
    proxy::Proxy,
    seams::{Context, Destination, Handler, NoObserver, Outbound},
};
use sip_firewall_sip::{Limits, Transport, parse::parse};

/// Keeps what the proxy sends, for the answers.
#[derive(Default)]
struct Sent(Mutex<Vec<(Destination, Vec<u8>)>>);

impl Outbound for Sent {
    fn send(&self, dest: Destination, bytes: &[u8]) -> bool {
        let mut v = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        v.push((dest, bytes.to_vec()));
        true
    }

    /// Every flow is open here: the pings down TCP and WebSocket connections too.
    fn send_on_flow(&self, dest: Destination, bytes: &[u8]) -> bool {
        self.send(dest, bytes)
    }
}

struct Bench {
    proxy: Proxy,
    sent: Arc<Sent>,
    local: SocketAddr,
}

/// User plus system CPU of this process so far.
fn cpu() -> Duration {
    // SAFETY: getrusage writes the struct it is given; a zeroed rusage is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn source(i: usize) -> SocketAddr {
    SocketAddr::new(
        [10, (i >> 16) as u8, (i >> 8) as u8, i as u8].into(),
        20000 + (i % 40000) as u16,
    )
}

fn transport(i: usize) -> Transport {
    match i % 4 {
        0 | 1 => Transport::Datagram,
        2 => Transport::Stream,
        _ => Transport::Ws,
    }
}

impl Bench {
    fn register(&self, i: usize) {
        let src = source(i);
        let text = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {src};branch=z9hG4bKr{i}\r\n\
             Max-Forwards: 70\r\nFrom: <sip:u{i}@example.com>;tag=r\r\nTo: <sip:u{i}@example.com>\r\n\
             Call-ID: r{i}\r\nCSeq: 1 REGISTER\r\nContact: <sip:u{i}@192.168.1.2:5060>\r\n\
             Content-Length: 0\r\n\r\n"
        );
        let t = transport(i);
        let m = parse(text.as_bytes(), &Limits::default(), t).expect("REGISTER parses");
        self.proxy.on_request(&m, &Context::new(src, self.local, t));
    }

    /// Answer every ping sent since the last call: how many.
    fn answer(&self) -> usize {
        let sent = std::mem::take(
            &mut *self
                .sent
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for (dest, bytes) in &sent {
            if dest.transport != Transport::Datagram {
                self.proxy.flow_pong(*dest);
                continue;
            }
            let req = String::from_utf8_lossy(bytes);
            let lines: String = req
                .split("\r\n")
                .filter(|l| {
                    ["Via:", "From:", "To:", "Call-ID:", "CSeq:"]
                        .iter()
                        .any(|h| l.starts_with(h))
                })
                .map(|l| format!("{l}\r\n"))
                .collect();
            let ok = format!("SIP/2.0 200 OK\r\n{lines}Content-Length: 0\r\n\r\n");
            if let Ok(m) = parse(ok.as_bytes(), &Limits::default(), Transport::Datagram) {
                self.proxy.on_response(
                    &m,
                    &Context::new(dest.addr, self.local, Transport::Datagram),
                );
            }
        }
        sent.len()
    }

    /// Run the timers over `d` in 10 ms ticks, answering what they send: pings answered.
    fn run(&self, clock: &sip_firewall::clock::FakeClock, d: Duration) -> usize {
        let mut pings = 0;
        for _ in 0..d.as_millis() / 10 {
            clock.advance(Duration::from_millis(10));
            self.proxy.tick();
            pings += self.answer();
        }
        pings
    }
}

fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(100_000);
    let text = "[sip]\ndomains = [\"example.com\"]\n[policy]\nallow = [\"10.0.0.0/8\"]\n\
                [registrar]\nkeepalive = \"nat\"\nkeepalive_interval = \"30s\"\n";
    let config = Config::from_toml(text, std::path::Path::new("bench.toml"))?;
    let (proxy, clock) = Proxy::with_fake_clock(&config, Arc::new(NoObserver))?;
    let sent = Arc::new(Sent::default());
    proxy.attach(sent.clone());
    let b = Bench {
        proxy,
        sent,
        local: "192.0.2.1:5060".parse()?,
    };
    for i in 0..n {
        b.register(i);
    }
    b.answer();
    let interval = Duration::from_secs(30);
    let first = b.run(&clock, interval);
    let t0 = cpu();
    let pings = b.run(&clock, interval);
    let used = cpu() - t0;
    println!(
        "keepalive: {n} contacts ({} UDP, {} TCP, {} WebSocket), first interval {first} pings",
        n.div_ceil(2),
        n / 4,
        n - n.div_ceil(2) - n / 4
    );
    println!(
        "keepalive: one 30 s interval: {pings} pings sent and answered, {:.3} CPU-s ({:.2}% of one core)",
        used.as_secs_f64(),
        100.0 * used.as_secs_f64() / interval.as_secs_f64()
    );
    Ok(())
}
