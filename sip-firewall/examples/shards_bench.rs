//! The proxy's throughput by shards (`cargo xtask bench shards`): calls (INVITE, 100, 180,
//! 200, ACK, BYE, 200) fed straight into the proxy through its `Handler`, no sockets, from
//! 2 threads at once, with `[proxy] shards = 1` and then 2; calls/s of each and the ratio.
//!
//! Every call has its own Call-ID. The caller's requests are bytes made before the clock
//! starts; the callee's answers and the caller's ACK and BYE copy what the proxy sent
//! (its Via branch and Record-Route stamp are its own per call), as a UA does, and are
//! parsed like every message: that work is counted in. Each thread runs `CALLS` calls per
//! round; between rounds, off the clock, a fake clock moves 40 s and the timers run, so
//! that the transactions of finished calls end as they would.
//!
//! For reference, one thread alone on one shard: what 2 threads would do with no lock
//! between them is twice that (on 2 free cores).
//!
//! Arguments: calls per thread per round (1000), rounds (20).

use std::{
    cell::RefCell,
    net::SocketAddr,
    sync::{Arc, Barrier},
    time::{Duration, Instant},
};

use sip_firewall::{
    clock::FakeClock,
    config::Config,
    proxy::Proxy,
    seams::{Context, Destination, Handler, NoObserver, Outbound},
};
use sip_firewall_sip::{Limits, Transport, parse::parse};

const THREADS: usize = 2;
const LOCAL: &str = "127.0.0.1:5060";
const BOB: &str = "10.0.0.2:5062";

thread_local! {
    /// What the proxy sent while this thread was in it (sends are flushed on the thread
    /// whose message caused them).
    static SENT: RefCell<Vec<(SocketAddr, String)>> = const { RefCell::new(Vec::new()) };
}

/// Keeps each thread's sends for that thread.
struct Sent;

impl Outbound for Sent {
    fn send(&self, dest: Destination, bytes: &[u8]) -> bool {
        let text = String::from_utf8_lossy(bytes).into_owned();
        SENT.with(|s| s.borrow_mut().push((dest.addr, text)));
        true
    }
}

fn take_sent() -> Vec<(SocketAddr, String)> {
    SENT.with(|s| std::mem::take(&mut *s.borrow_mut()))
}

struct Bench {
    proxy: Proxy,
    local: SocketAddr,
    bob: SocketAddr,
}

impl Bench {
    fn new(shards: usize) -> anyhow::Result<(Bench, FakeClock)> {
        let text = format!(
            "[sip]\ndomains = [\"example.com\"]\nlisten = [\"{LOCAL}\"]\n\
             max_transactions = 1000000\nmax_transactions_per_source = 1000000\n\
             [policy]\nallow = [\"10.0.0.0/8\"]\n[proxy]\nshards = {shards}\n"
        );
        let config = Config::from_toml(&text, std::path::Path::new("bench.toml"))?;
        let (proxy, clock) = Proxy::with_fake_clock(&config, Arc::new(NoObserver))?;
        proxy.attach(Arc::new(Sent));
        let b = Bench {
            proxy,
            local: LOCAL.parse()?,
            bob: BOB.parse()?,
        };
        let reg = format!(
            "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {BOB};branch=z9hG4bKreg\r\n\
             From: <sip:bob@example.com>;tag=r\r\nTo: <sip:bob@example.com>\r\n\
             Call-ID: reg@bench\r\nCSeq: 1 REGISTER\r\nContact: <sip:bob@{BOB}>\r\n\
             Expires: 3600\r\nContent-Length: 0\r\n\r\n"
        );
        b.feed(reg.as_bytes(), b.bob);
        anyhow::ensure!(
            take_sent()
                .iter()
                .any(|(_, m)| m.starts_with("SIP/2.0 200")),
            "bob is registered"
        );
        Ok((b, clock))
    }

    /// Feed `bytes` from `source`, parsed as the server parses them.
    fn feed(&self, bytes: &[u8], source: SocketAddr) {
        let Ok(m) = parse(bytes, &Limits::default(), Transport::Datagram) else {
            panic!("the bench's own message parses");
        };
        let ctx = Context::new(source, self.local, Transport::Datagram);
        if m.is_request() {
            self.proxy.on_request(&m, &ctx);
        } else {
            self.proxy.on_response(&m, &ctx);
        }
    }

    /// One call of `invite` (bytes made in advance) from `caller`; whether it went through.
    fn call(&self, invite: &[u8], caller: SocketAddr) -> bool {
        self.feed(invite, caller);
        let Some(inv) = sent_to(&take_sent(), self.bob, "INVITE ") else {
            return false;
        };
        self.feed(answer(&inv, "180 Ringing").as_bytes(), self.bob);
        self.feed(answer(&inv, "200 OK").as_bytes(), self.bob);
        let Some(ok) = sent_to(&take_sent(), caller, "SIP/2.0 200") else {
            return false;
        };
        self.feed(in_dialog(&ok, "ACK", 1).as_bytes(), caller);
        self.feed(in_dialog(&ok, "BYE", 2).as_bytes(), caller);
        let Some(bye) = sent_to(&take_sent(), self.bob, "BYE ") else {
            return false;
        };
        self.feed(answer(&bye, "200 OK").as_bytes(), self.bob);
        sent_to(&take_sent(), caller, "SIP/2.0 200").is_some()
    }
}

fn sent_to(sent: &[(SocketAddr, String)], to: SocketAddr, start: &str) -> Option<String> {
    sent.iter()
        .find(|(a, m)| *a == to && m.starts_with(start))
        .map(|(_, m)| m.clone())
}

/// bob's answer `status` to `req` as the proxy forwarded it.
fn answer(req: &str, status: &str) -> String {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for line in req.split("\r\n").skip(1) {
        if line.starts_with("To:") {
            out.push_str(line);
            out.push_str(";tag=b\r\n");
        } else if ["Via:", "From:", "Call-ID:", "CSeq:", "Record-Route:"]
            .iter()
            .any(|h| line.starts_with(h))
        {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str(&format!(
        "Contact: <sip:bob@{BOB}>\r\nContent-Length: 0\r\n\r\n"
    ));
    out
}

/// The caller's `method` (CSeq `n`) in the dialog of the 200 `ok` it got: along its
/// Record-Route, to bob's Contact.
fn in_dialog(ok: &str, method: &str, n: u32) -> String {
    let mut head = String::new();
    let mut via = "";
    for line in ok.split("\r\n").skip(1) {
        if let Some(rr) = line.strip_prefix("Record-Route:") {
            head.push_str(&format!("Route:{rr}\r\n"));
        } else if line.starts_with("Via:") {
            via = line;
        } else if ["From:", "To:", "Call-ID:"]
            .iter()
            .any(|h| line.starts_with(h))
        {
            head.push_str(line);
            head.push_str("\r\n");
        }
    }
    let via = via.replace(";branch=z9hG4bK", &format!(";branch=z9hG4bK{method}"));
    format!(
        "{method} sip:bob@{BOB} SIP/2.0\r\n{via}\r\nMax-Forwards: 70\r\n{head}\
         CSeq: {n} {method}\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The INVITEs of thread `t` for round `r`: their bytes and the caller's address.
fn invites(t: usize, r: usize, calls: usize) -> (SocketAddr, Vec<Vec<u8>>) {
    let caller: SocketAddr = format!("192.0.2.{}:5060", t + 1)
        .parse()
        .unwrap_or_else(|_| SocketAddr::from(([192, 0, 2, 1], 5060)));
    let msgs = (0..calls)
        .map(|i| {
            format!(
                "INVITE sip:bob@example.com SIP/2.0\r\n\
                 Via: SIP/2.0/UDP {caller};branch=z9hG4bK{t}x{r}x{i}\r\nMax-Forwards: 70\r\n\
                 From: <sip:carol@other.org>;tag=c{i}\r\nTo: <sip:bob@example.com>\r\n\
                 Call-ID: bench-{t}-{r}-{i}@192.0.2.{}\r\nCSeq: 1 INVITE\r\n\
                 Contact: <sip:carol@{caller}>\r\nContent-Length: 0\r\n\r\n",
                t + 1
            )
            .into_bytes()
        })
        .collect();
    (caller, msgs)
}

/// Calls/s of the proxy with `shards`, `threads` threads feeding it; calls that failed.
fn measure(
    shards: usize,
    threads: usize,
    calls: usize,
    rounds: usize,
) -> anyhow::Result<(f64, usize)> {
    let (bench, clock) = Bench::new(shards)?;
    let mut busy = Duration::ZERO;
    let mut failed = 0;
    for r in 0..rounds {
        let work: Vec<_> = (0..threads).map(|t| invites(t, r, calls)).collect();
        let start = Barrier::new(threads + 1);
        let started = std::thread::scope(|s| {
            let handles: Vec<_> = work
                .iter()
                .map(|(caller, msgs)| {
                    let (bench, start) = (&bench, &start);
                    s.spawn(move || {
                        start.wait();
                        msgs.iter().filter(|m| !bench.call(m, *caller)).count()
                    })
                })
                .collect();
            start.wait();
            let t0 = Instant::now();
            for h in handles {
                failed += h.join().unwrap_or(calls);
            }
            t0.elapsed()
        });
        busy += started;
        // Off the clock: the transactions of finished calls end.
        clock.advance(Duration::from_secs(40));
        bench.proxy.tick();
        take_sent();
    }
    let total = (threads * calls * rounds) as f64;
    Ok((total / busy.as_secs_f64(), failed))
}

fn main() -> anyhow::Result<()> {
    let arg = |i: usize, d: usize| -> anyhow::Result<usize> {
        Ok(std::env::args()
            .nth(i)
            .map(|a| a.parse())
            .transpose()?
            .unwrap_or(d))
    };
    let (calls, rounds) = (arg(1, 1000)?, arg(2, 20)?);
    println!(
        "{THREADS} threads, {calls} calls each per round, {rounds} rounds \
         (INVITE/100/180/200/ACK/BYE/200 through the Handler, no sockets)"
    );
    let (alone, failed) = measure(1, 1, calls, rounds)?;
    println!("reference, 1 thread, shards = 1: {alone:>10.0} calls/s ({failed} failed)");
    let mut rates = Vec::new();
    for shards in [1usize, 2] {
        let (rate, failed) = measure(shards, THREADS, calls, rounds)?;
        println!("{THREADS} threads, shards = {shards}: {rate:>10.0} calls/s ({failed} failed)");
        rates.push(rate);
    }
    if let [one, two] = rates[..] {
        println!("ratio shards 2 / shards 1: {:.2}", two / one);
    }
    Ok(())
}
