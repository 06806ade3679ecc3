//! Memory per registration binding and per live transaction, 100,000 of each, through the
//! public APIs: `cargo run --release -p sip-firewall-tests --example memory_costs`.
//!
//! A counting global allocator gives the net bytes allocated (allocated minus freed) over
//! each fill, divided by the count; the process's RSS (`/proc/self/statm`) delta is printed
//! beside it (it includes the allocator's own slack and pages not yet returned).
//!
//! - Bindings: 100,000 REGISTERs (one contact each, a distinct AOR each) through the proxy
//!   (`Handler::on_request`) from an allow-listed peer, then the fake clock moved past their
//!   transactions' end (Timer J) so that only the bindings remain; and the same bindings put
//!   directly in a `MemoryStore` (the registrar's store alone).
//! - Transactions: 100,000 INVITEs from outside callers to registered users, forwarded and
//!   never answered: each is a server transaction (100 Trying sent) with its client
//!   transaction (Timer B running). The bytes of the messages a transaction keeps (the
//!   forwarded request, the last response) are those the proxy sent; they are subtracted to
//!   give the transaction's own cost, printed beside the total.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    net::SocketAddr,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicI64, AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use sip_firewall::{
    config::Config,
    proxy::Proxy,
    registrar::store::{Binding, LocationStore, MemoryStore},
    seams::{Context, Destination, Handler, NoObserver, Outbound},
};
use sip_firewall_sip::{Limits, Transport, inspect};

struct Counting;

static NET: AtomicI64 = AtomicI64::new(0);
/// Allocations made (alloc, alloc_zeroed and realloc calls): the per-message cost the CPU
/// profile showed in malloc.
static CALLS: AtomicU64 = AtomicU64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        NET.fetch_add(l.size() as i64, Relaxed);
        CALLS.fetch_add(1, Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        NET.fetch_sub(l.size() as i64, Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        NET.fetch_add(l.size() as i64, Relaxed);
        CALLS.fetch_add(1, Relaxed);
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        NET.fetch_add(new as i64 - l.size() as i64, Relaxed);
        CALLS.fetch_add(1, Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

const N: usize = 100_000;

/// Sends nothing; counts the bytes the proxy hands it.
#[derive(Default)]
struct Sink(AtomicU64);

impl Outbound for Sink {
    fn send(&self, _dest: Destination, bytes: &[u8]) -> bool {
        self.0.fetch_add(bytes.len() as u64, Relaxed);
        true
    }
}

fn rss() -> i64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: i64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Net bytes and RSS bytes used by `f`.
fn measure(f: impl FnOnce()) -> (i64, i64) {
    let (n0, r0) = (NET.load(Relaxed), rss());
    f();
    (NET.load(Relaxed) - n0, rss() - r0)
}

fn feed(proxy: &Proxy, bytes: &[u8], source: SocketAddr, transport: Transport) {
    let msg = match inspect(bytes, &Limits::default(), transport, &[]) {
        Ok(m) => m,
        Err(e) => panic!("the message layer refused a test message: {e:?}"),
    };
    let ctx = Context {
        source,
        local: "198.51.100.1:5060".parse().unwrap(),
        transport,
        trusted_peer: None,
    };
    let a = proxy.on_request(&msg, &ctx);
    if !matches!(a, sip_firewall::seams::Action::Absorb) {
        panic!("the proxy did not take a test message statefully: {a:?}");
    }
}

fn register(i: usize, src: SocketAddr) -> Vec<u8> {
    format!(
        "REGISTER sip:example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP {src};branch=z9hG4bK-reg-{i}\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:user{i}@example.com>;tag=r{i}\r\n\
         To: <sip:user{i}@example.com>\r\n\
         Call-ID: reg-{i}-4f2a9c1e@192.0.2.10\r\n\
         CSeq: 1 REGISTER\r\n\
         Contact: <sip:user{i}@{src};transport=udp>\r\n\
         Expires: 3600\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn invite(i: usize, src: SocketAddr) -> Vec<u8> {
    format!(
        "INVITE sip:user{i}@example.com SIP/2.0\r\n\
         Via: SIP/2.0/UDP {src};branch=z9hG4bK-inv-{i};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:caller{i}@203.0.113.1>;tag=c{i}\r\n\
         To: <sip:user{i}@example.com>\r\n\
         Call-ID: call-{i}-8d7e6f5a@203.0.113.1\r\n\
         CSeq: 1 INVITE\r\n\
         Contact: <sip:caller{i}@{src}>\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

fn main() -> anyhow::Result<()> {
    let config = Config::from_toml(
        r#"
[sip]
domains = ["example.com"]
max_transactions = 1000000
max_transactions_per_source = 1000000
[policy]
allow = ["192.0.2.0/24"]
[registrar]
max_expires = 7200
"#,
        Path::new("memory_costs.toml"),
    )?;
    let (proxy, clock) = Proxy::with_fake_clock(&config, Arc::new(NoObserver))?;
    let sink = Arc::new(Sink::default());
    proxy.attach(sink.clone());
    let peer = |i: usize| -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 10 + (i % 200) as u8], 5060 + (i / 200) as u16))
    };
    let caller = |i: usize| -> SocketAddr {
        SocketAddr::from(([203, 0, 113, 1 + (i % 250) as u8], 20000 + (i / 250) as u16))
    };
    // Build the messages first: their bytes are not the table's.
    let registers: Vec<Vec<u8>> = (0..N).map(|i| register(i, peer(i))).collect();
    let invites: Vec<Vec<u8>> = (0..N).map(|i| invite(i, caller(i))).collect();

    println!("memory per entry, {N} of each (net bytes from a counting allocator; RSS delta)");
    // Bindings through the registrar, then its transactions ended (Timer J, 32 s on UDP).
    let (net, rss_d) = measure(|| {
        for (i, r) in registers.iter().enumerate() {
            feed(&proxy, r, peer(i), Transport::Datagram);
        }
        clock.advance(Duration::from_secs(40));
        proxy.tick();
    });
    println!(
        "registration binding (registrar, via REGISTER): {:>6} B net, {:>6} B RSS",
        net / N as i64,
        rss_d / N as i64
    );
    let mut store = MemoryStore::default();
    let now = Instant::now();
    let (net_s, rss_s) = measure(|| {
        for i in 0..N {
            let src = peer(i);
            store.put(
                &format!("sip:user{i}@example.com"),
                Binding {
                    contact: format!("<sip:user{i}@{src};transport=udp>"),
                    expires_at: now + Duration::from_secs(3600),
                    call_id: format!("reg-{i}-4f2a9c1e@192.0.2.10"),
                    cseq: 1,
                    source: src,
                    transport: Transport::Datagram,
                    authenticated: None,
                    path: None,
                },
            );
        }
    });
    println!(
        "registration binding (MemoryStore::put alone):  {:>6} B net, {:>6} B RSS \
         (size_of::<Binding>() = {} B; the rest is the AOR, contact and Call-ID strings and the map)",
        net_s / N as i64,
        rss_s / N as i64,
        std::mem::size_of::<Binding>()
    );
    assert_eq!(store.len(), N);

    let sent0 = sink.0.load(Relaxed);
    let calls0 = CALLS.load(Relaxed);
    let (net_t, rss_t) = measure(|| {
        for (i, r) in invites.iter().enumerate() {
            feed(&proxy, r, caller(i), Transport::Datagram);
        }
    });
    let allocs = CALLS.load(Relaxed) - calls0;
    let sent = (sink.0.load(Relaxed) - sent0) as i64;
    let received: i64 = invites.iter().map(|v| v.len() as i64).sum();
    let active = proxy.calls_active();
    println!(
        "live transaction (INVITE server + client, unanswered): {:>6} B net, {:>6} B RSS; \
         messages it sent {} B (kept: forwarded INVITE, 100 Trying), received INVITE {} B: \
         {} B per transaction without the messages sent",
        net_t / N as i64,
        rss_t / N as i64,
        sent / N as i64,
        received / N as i64,
        (net_t - sent) / N as i64
    );
    println!(
        "allocations per INVITE handled (message layer, proxy, forward and 100 Trying): {:.1}",
        allocs as f64 / N as f64
    );
    println!("(calls the proxy counts active: {active})");
    drop(store);
    Ok(())
}
