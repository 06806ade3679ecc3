//! SIP over UDP: one message per datagram, answers sent per RFC 3261 18.2.2 / RFC 3581.
//!
//! Each listen address has `[sip] workers` sockets bound with SO_REUSEPORT, each served on
//! its own: socket i of a group is worker i. By default the steering program (`steer`)
//! picks a socket by the datagram's Call-ID, so every message of a call arrives on one
//! socket; without it (or for a datagram without a Call-ID) the kernel picks one by the
//! hash of the datagram's addresses. The proxy's transaction table is one for all workers
//! (the handler behind its lock), so a response or a retransmission that arrives on another
//! worker's socket (another source, or the same one after the group changed) is matched all
//! the same.
//!
//! A worker receives what is queued in one `recvmmsg`, judges each datagram, and sends the
//! answers of the batch in one `sendmmsg`. It is a task of the shared runtime, or with
//! `[sip] udp_threads` a thread of its own running a runtime that only waits for its
//! socket, so that a datagram's receive, judging and answer wake no other thread. Either
//! way the judging runs in the main runtime's context: what the handler spawns (a TCP dial,
//! a DNS lookup) runs there, as from any listener. The sockets the handler sends through
//! (`outbound`) are the same ones, registered with no runtime: a send never waits.
//!
//! A STUN Binding request (RFC 5626 4.4.2) is recognised before SIP parsing and answered
//! only to a registered flow (`Shared::stun`); any other datagram that is not SIP is the
//! message layer's to refuse.

use std::{
    io,
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    sync::Arc,
    thread::JoinHandle,
};

use anyhow::Context as _;
use sip_firewall_sip::{Transport, stun};
use tokio::{
    io::{Interest, unix::AsyncFd},
    runtime::Handle,
    sync::{oneshot, watch},
};
use tracing::{debug, warn};

use super::{
    Shared, is_keepalive,
    mmsg::{BATCH, Kind, RecvBatch, SendBatch},
};

/// Bind `workers` UDP sockets on `addr` (at least one), non-blocking. With more than one
/// they share the address through SO_REUSEPORT; the first decides the port when `addr` asks
/// for port 0. One worker binds without SO_REUSEPORT, as a plain socket does (a second
/// process cannot join it).
pub(super) fn bind(addr: SocketAddr, workers: usize) -> io::Result<Vec<UdpSocket>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut out: Vec<UdpSocket> = Vec::new();
    let mut at = addr;
    for _ in 0..workers.max(1) {
        let s = Socket::new(Domain::for_address(at), Type::DGRAM, Some(Protocol::UDP))?;
        if workers > 1 {
            s.set_reuse_port(true)?;
        }
        s.set_nonblocking(true)?;
        s.bind(&at.into())?;
        let u = UdpSocket::from(s);
        if out.is_empty() {
            at = u.local_addr()?;
        }
        out.push(u);
    }
    Ok(out)
}

/// A worker's thread, stopped and joined when this is dropped.
pub(super) struct Worker {
    /// Dropped to tell the thread to stop (the server stopped waiting for it).
    abandon: Option<oneshot::Sender<()>>,
    /// Resolves when the thread's work is over, however it ended.
    over: oneshot::Receiver<()>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Worker {
    /// Serve `socket` on a thread of its own until `shutdown`; called from the main runtime,
    /// whose context the judging runs in.
    pub(super) fn start(
        socket: &UdpSocket,
        n: usize,
        shared: Arc<Shared>,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Worker> {
        let own = socket.try_clone().context("UDP worker socket")?;
        let main = Handle::current();
        let (abandon, abandoned) = oneshot::channel();
        let (over_tx, over) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("sip-udp-{n}"))
            .spawn(move || {
                // Dropped last, once the runtime is gone: the thread's work is over.
                let _over = over_tx;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("UDP worker runtime")?;
                let stop = Stop {
                    shutdown,
                    abandoned,
                    stopped: false,
                };
                rt.block_on(async move {
                    let socket = register(own, Interest::READABLE)?;
                    serve(socket, shared, main, stop).await
                })
            })
            .context("UDP worker thread")?;
        Ok(Worker {
            abandon: Some(abandon),
            over,
            thread: Some(thread),
        })
    }

    /// Wait for the thread to end and say how it did.
    pub(super) async fn finished(mut self) -> anyhow::Result<()> {
        let _ = (&mut self.over).await;
        self.join()
    }

    fn join(&mut self) -> anyhow::Result<()> {
        self.abandon.take();
        match self.thread.take().map(JoinHandle::join) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(anyhow::anyhow!("a UDP worker thread panicked")),
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.join();
    }
}

/// Serve `socket` as a task of the current runtime (the default, `[sip] udp_threads` off).
pub(super) async fn serve_task(
    socket: UdpSocket,
    shared: Arc<Shared>,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    // Never abandoned: dropping the task drops the whole loop.
    let (_keep, abandoned) = oneshot::channel();
    let stop = Stop {
        shutdown,
        abandoned,
        stopped: false,
    };
    serve(
        register(socket, Interest::READABLE)?,
        shared,
        Handle::current(),
        stop,
    )
    .await
}

/// When a worker stops: shutdown, or nobody waiting for it any more.
struct Stop {
    shutdown: watch::Receiver<bool>,
    abandoned: oneshot::Receiver<()>,
    /// Seen once: the channels are not asked again.
    stopped: bool,
}

impl Stop {
    async fn wait(&mut self) {
        if !self.stopped {
            tokio::select! {
                _ = self.shutdown.wait_for(|s| *s) => {}
                _ = &mut self.abandoned => {}
            }
            self.stopped = true;
        }
    }
}

/// Receive, judge and answer until stopped.
async fn serve(
    socket: AsyncFd<UdpSocket>,
    shared: Arc<Shared>,
    main: Handle,
    mut stop: Stop,
) -> anyhow::Result<()> {
    let local = socket.get_ref().local_addr()?;
    // One byte over the message limit: a datagram that fills it is too large, refused by
    // the parser as today, and one the kernel cut is said so.
    let mut batch = RecvBatch::new(shared.limits.max_message_bytes + 1);
    let mut answers = SendBatch::default();
    loop {
        let mut ready = tokio::select! {
            _ = stop.wait() => return Ok(()),
            r = socket.readable() => r?,
        };
        let n = match ready.try_io(|s| batch.recv(s.as_raw_fd())) {
            Ok(Ok(n)) => n,
            // Nothing queued after all: the readiness is cleared, wait again.
            Err(_) => continue,
            Ok(Err(e)) => {
                // ICMP errors from earlier sends surface here; they are not fatal.
                debug!(%local, "UDP receive: {e}");
                continue;
            }
        };
        if n < BATCH {
            // Fewer than asked: the queue is empty, and the next datagram to arrive marks
            // the socket ready again; no further call just to hear it is empty.
            ready.clear_ready();
        }
        {
            let _main = main.enter();
            for d in batch.iter() {
                judge(&shared, d.bytes, d.source, local, d.truncated, &mut answers);
            }
        }
        send(&socket, &mut answers, &mut stop).await;
        take_budget(n).await;
    }
}

/// Take `datagrams` units of the task's cooperative budget, one a datagram as tokio's own
/// sockets take. Waiting for readiness (`AsyncFd::readable`) takes none: without this, a
/// socket a flood keeps full would hold its runtime thread for as long as the flood lasts,
/// and a task the judging woke (the pressure governor, which the gate wakes) would wait
/// behind it, in the thread's next-task slot that no other thread takes. With it, the
/// worker yields once the budget is spent (128 units in tokio).
async fn take_budget(datagrams: usize) {
    for _ in 0..datagrams {
        tokio::task::coop::consume_budget().await;
    }
}

/// One datagram, as every datagram is judged: its answer, if any, joins `answers`.
fn judge(
    shared: &Shared,
    datagram: &[u8],
    source: SocketAddr,
    local: SocketAddr,
    truncated: bool,
    answers: &mut SendBatch,
) {
    // A cut datagram is larger than any STUN request or keep-alive: the message layer
    // refuses it as too large.
    if !truncated {
        if let Ok(req) = stun::parse(datagram) {
            if let Some(answer) = shared.stun(&req, datagram, (source, local)) {
                answers.push(answer, source, Kind::Stun);
            }
            return;
        }
        if is_keepalive(datagram) {
            if shared.admit_keepalive((source, local), Transport::Datagram, datagram) {
                shared.metrics.keepalive("udp");
            }
            return;
        }
    }
    if let Some(out) = shared.process(datagram, source, local, Transport::Datagram) {
        answers.push(out.bytes, out.udp_destination, Kind::Sip);
    }
}

/// Send the batch's answers, waiting while the socket's buffer is full (unless stopped);
/// one that fails is said and skipped.
async fn send(socket: &AsyncFd<UdpSocket>, answers: &mut SendBatch, stop: &mut Stop) {
    let fd = socket.as_raw_fd();
    let mut from = 0;
    while from < answers.len() {
        match answers.send(fd, from) {
            Ok(n) => from += n.max(1),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !writable(socket.get_ref(), stop).await {
                    break;
                }
            }
            Err(e) => {
                match answers.at(from) {
                    Some((dest, Kind::Sip)) => warn!(%dest, "UDP send: {e}"),
                    Some((dest, Kind::Stun)) => debug!(%dest, "UDP send of a STUN answer: {e}"),
                    None => {}
                }
                from += 1;
            }
        }
    }
    answers.clear();
}

/// Wait until `socket` can send: false when stopped first. The worker's socket is
/// registered for reading only (a wake-up for every datagram the kernel frees would cost
/// more than this rare wait), so a copy of it is registered for writing meanwhile.
async fn writable(socket: &UdpSocket, stop: &mut Stop) -> bool {
    let copy = match socket
        .try_clone()
        .and_then(|c| register(c, Interest::WRITABLE))
    {
        Ok(c) => c,
        Err(e) => {
            warn!("UDP send: cannot wait for room in the socket's buffer: {e}");
            return false;
        }
    };
    tokio::select! {
        _ = stop.wait() => false,
        r = copy.writable() => r.is_ok(),
    }
}

/// `socket` registered with the current runtime for `interest`.
fn register(socket: UdpSocket, interest: Interest) -> io::Result<AsyncFd<UdpSocket>> {
    // SAFETY: the socket owns its descriptor, open until the socket is dropped with the
    // AsyncFd, and `as_raw_fd` always gives that one.
    unsafe { AsyncFd::register_with_interest(socket, interest) }.map_err(|e| e.into_parts().1)
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicBool, AtomicUsize, Ordering},
        time::{Duration, Instant},
    };

    use sip_firewall_sip::Message;

    use super::*;
    use crate::{
        metrics::Metrics,
        seams::{Action, Context, Handler},
        server::{config::SipConfig, outbound::SocketOutbound, tests::request},
    };

    /// A core that takes its time over each request (a proxy under load) and counts them.
    struct Slow(AtomicUsize);

    impl Handler for Slow {
        fn on_request(&self, _: &Message<'_>, _: &Context) -> Action {
            self.0.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_micros(200));
            Action::Absorb
        }
        fn on_response(&self, _: &Message<'_>, _: &Context) -> Action {
            Action::Absorb
        }
    }

    /// A flood that keeps a worker's socket full does not hold the runtime's thread: another
    /// task of the runtime (in the daemon, the pressure governor the gate wakes) gets its
    /// turn while the flood goes on, as it does between the datagrams of tokio's own sockets.
    #[test]
    fn a_socket_kept_full_leaves_the_runtime_to_other_tasks() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let socket = bind(([127, 0, 0, 1], 0).into(), 1).expect("bind").remove(0);
        let to = socket.local_addr().expect("address");
        let core = Arc::new(Slow(AtomicUsize::new(0)));
        let shared = Arc::new(Shared::new(
            &SipConfig::default(),
            Arc::new(Metrics::new()),
            core.clone(),
            Arc::new(SocketOutbound::new(Vec::new())),
        ));
        // Far faster than the core judges; over by itself after 5 s.
        let flooding = Arc::new(AtomicBool::new(true));
        let flood = {
            let flooding = flooding.clone();
            std::thread::spawn(move || {
                let tx = UdpSocket::bind("127.0.0.1:0").expect("sender");
                let t0 = Instant::now();
                for n in 0u64.. {
                    if !flooding.load(Ordering::Relaxed) || t0.elapsed() > Duration::from_secs(5) {
                        break;
                    }
                    let _ = tx.send_to(&request(&n.to_string()), to);
                }
                flooding.store(false, Ordering::Relaxed);
            })
        };
        let (_shutdown, rx) = watch::channel(false);
        let (took, during) = rt.block_on(async {
            let t0 = Instant::now();
            let worker = tokio::spawn(serve_task(socket, shared, rx));
            // Until the worker has judged a request, then one more turn.
            while core.0.load(Ordering::Relaxed) == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            tokio::task::yield_now().await;
            let took = t0.elapsed();
            let during = flooding.load(Ordering::Relaxed);
            worker.abort();
            (took, during)
        });
        flooding.store(false, Ordering::Relaxed);
        flood.join().expect("flood thread");
        assert!(
            during && took < Duration::from_secs(1),
            "the other task had its turns over {took:?} (the flood still on: {during}); {} requests judged",
            core.0.load(Ordering::Relaxed)
        );
    }
}
