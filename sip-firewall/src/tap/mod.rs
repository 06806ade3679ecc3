//! The daemon's half of `sip-firewall capture --layer gate`: copies of what the user-space
//! gate refused (rate, bans, lists, flood, pressure, TCP slots) and of what the message
//! layer answered itself (the request and the local answer: 400 to a malformed request,
//! the proxy's 403, 404, 483...), for the captures the admin API streams them to.
//!
//! **Decides**: which copies a capture gets (its [`TapFilter`]: source prefix, port,
//! sampling, snap length, count, duration, all applied here before anything is copied), and
//! that copying never slows SIP: with no capture running the message path pays one atomic
//! load ([`ACTIVE`]); with captures running, copies go through a bounded channel per
//! capture, and a full channel drops the copy and counts it (`dropped`, and
//! `sipfw_capture_dropped_total`). At most [`MAX_CAPTURES`] run at once. A capture ends
//! when its client hangs up, its count or duration is reached, or the daemon stops.
//!
//! | module | job |
//! | --- | --- |
//! | `record` | a copy as it travels to the CLI: layer, reason, addresses, bytes |
//!
//! **Config**: none. **Metrics**: `sipfw_capture_dropped_total` (copies lost to a slow
//! capture reader).

pub mod record;

use std::{
    net::SocketAddr,
    sync::{
        Arc, LazyLock, Mutex,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sip_firewall_sip::Transport;
use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt as _, AsyncWrite, AsyncWriteExt as _},
    sync::mpsc,
};

use record::{Layer, TapLine, TapRecord};

/// How many gate captures can run at once.
pub const MAX_CAPTURES: usize = 4;
/// Copies a capture's channel holds before the next are dropped (and counted).
pub const QUEUE: usize = 1024;
/// The largest snap length (as the XDP side's).
pub const SNAP_MAX: u32 = sip_firewall_common::capture::SNAP_MAX;

/// Captures running: the message path reads this, and nothing else, when it is zero.
static ACTIVE: AtomicUsize = AtomicUsize::new(0);
/// The running captures.
static CAPTURES: Mutex<Vec<Tap>> = Mutex::new(Vec::new());
/// Ids of captures, for their removal.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

static DROPPED: LazyLock<prometheus::IntCounter> = LazyLock::new(|| {
    prometheus::IntCounter::new(
        "sipfw_capture_dropped_total",
        "Copies for `sip-firewall capture --layer gate` dropped because the capture's reader \
         was slow (its queue full)",
    )
    .expect("static metric definition is valid")
});

/// Register `sipfw_capture_dropped_total` in the daemon's registry.
pub fn register_metrics(metrics: &crate::metrics::Metrics) {
    if let Err(e) = metrics.registry().register(Box::new(DROPPED.clone())) {
        tracing::warn!("registering sipfw_capture_dropped_total: {e}");
    }
}

/// What a gate capture wants (the CLI's `--source`, `--port`, `--sample`, `--snap`,
/// `--count`, `--duration`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TapFilter {
    /// Only copies whose remote side (the source of what was refused, the destination of
    /// an answer) is in this prefix.
    #[serde(default)]
    pub source: Option<IpNet>,
    /// Only copies from or to this port (either side).
    #[serde(default)]
    pub port: Option<u16>,
    /// One matching copy in `sample`, at random; 0 or 1: every one.
    #[serde(default)]
    pub sample: u32,
    /// Bytes of each message kept (0: [`SNAP_MAX`]).
    #[serde(default)]
    pub snap: u32,
    /// Stop after this many copies.
    #[serde(default)]
    pub count: Option<u64>,
    /// Stop after this many milliseconds.
    #[serde(default)]
    pub duration_ms: Option<u64>,
}

impl TapFilter {
    /// Whether a message between `remote` and `local` matches the prefix and the port.
    pub fn takes(&self, remote: SocketAddr, local: SocketAddr) -> bool {
        let ip = remote.ip().to_canonical();
        self.source.is_none_or(|net| net.contains(&ip))
            && self
                .port
                .is_none_or(|p| remote.port() == p || local.port() == p)
    }

    /// The bytes kept of a message of `len` bytes.
    pub fn caplen(&self, len: usize) -> usize {
        let snap = match self.snap {
            0 => SNAP_MAX,
            s => s.min(SNAP_MAX),
        };
        len.min(snap as usize)
    }
}

/// A capture refused.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("all {MAX_CAPTURES} gate captures are running; stop one (or wait) and try again")]
    Busy,
}

/// One running capture, as the message path sees it.
struct Tap {
    id: u64,
    filter: TapFilter,
    tx: mpsc::Sender<TapRecord>,
    dropped: Arc<AtomicU64>,
    /// The state of the sampling's random numbers (xorshift).
    rng: u64,
    /// Copies sent so far (`count`).
    sent: u64,
}

impl Tap {
    /// Whether the sample keeps the next matching copy.
    fn sampled(&mut self) -> bool {
        if self.filter.sample <= 1 {
            return true;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        self.rng.is_multiple_of(u64::from(self.filter.sample))
    }
}

/// A running capture, as its admin connection holds it: dropping it ends the capture.
pub struct Subscription {
    id: u64,
    pub rx: mpsc::Receiver<TapRecord>,
    dropped: Arc<AtomicU64>,
}

impl Subscription {
    /// Copies dropped so far because this capture's queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut taps = crate::guard::lock(&CAPTURES, "gate captures");
        taps.retain(|t| t.id != self.id);
        ACTIVE.store(taps.len(), Ordering::Release);
    }
}

/// Start a capture of `filter`, unless [`MAX_CAPTURES`] run already.
pub fn subscribe(filter: TapFilter) -> Result<Subscription, TapError> {
    let mut taps = crate::guard::lock(&CAPTURES, "gate captures");
    if taps.len() >= MAX_CAPTURES {
        return Err(TapError::Busy);
    }
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let mut seed = [0u8; 8];
    let _ = getrandom::getrandom(&mut seed);
    taps.push(Tap {
        id,
        filter,
        tx,
        dropped: dropped.clone(),
        rng: u64::from_ne_bytes(seed) | 1,
        sent: 0,
    });
    ACTIVE.store(taps.len(), Ordering::Release);
    Ok(Subscription { id, rx, dropped })
}

/// Whether any capture runs: the one load the message path pays when none does.
#[inline]
pub fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed) != 0
}

/// What happened to a message, for [`offer`].
pub struct Seen<'a> {
    pub layer: Layer,
    pub reason: &'a str,
    pub sent: bool,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub transport: Transport,
    pub bytes: &'a [u8],
}

/// Copy `seen` to every running capture that wants it. Call it only when [`active`].
pub fn offer(seen: &Seen<'_>) {
    let remote = if seen.sent { seen.dst } else { seen.src };
    let local = if seen.sent { seen.src } else { seen.dst };
    let unix_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut taps = crate::guard::lock(&CAPTURES, "gate captures");
    for tap in taps.iter_mut() {
        if !tap.filter.takes(remote, local)
            || tap.filter.count.is_some_and(|c| tap.sent >= c)
            || !tap.sampled()
        {
            continue;
        }
        let keep = tap.filter.caplen(seen.bytes.len());
        let record = TapRecord {
            unix_ns,
            layer: seen.layer,
            reason: seen.reason.to_string(),
            sent: seen.sent,
            src: seen.src,
            dst: seen.dst,
            stream: seen.transport != Transport::Datagram,
            len: u32::try_from(seen.bytes.len()).unwrap_or(u32::MAX),
            data: seen.bytes[..keep].to_vec(),
        };
        match tap.tx.try_send(record) {
            Ok(()) => tap.sent += 1,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tap.dropped.fetch_add(1, Ordering::Relaxed);
                DROPPED.inc();
            }
            // Its connection is ending; its subscription leaves the list on the way out.
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

/// A message the gate refused (`reason`, the label of `sipfw_userspace_drops_total`).
#[inline]
pub fn refused(reason: &str, src: SocketAddr, dst: SocketAddr, t: Transport, bytes: &[u8]) {
    if active() {
        offer(&Seen {
            layer: Layer::Gate,
            reason,
            sent: false,
            src,
            dst,
            transport: t,
            bytes,
        });
    }
}

/// A request the message layer answered itself: the request from `src` to `local`, and our
/// `answer` to `to` (the source, or its rport over UDP). Only refusals are copied (3xx to
/// 6xx): a 200 to a keep-alive OPTIONS is no story.
#[inline]
pub fn answered(
    (src, local): (SocketAddr, SocketAddr),
    t: Transport,
    request: &[u8],
    (to, answer): (SocketAddr, &[u8]),
) {
    if !active() || !is_refusal(answer) {
        return;
    }
    let status = status_of(answer);
    for (sent, from, to, bytes) in [(false, src, local, request), (true, local, to, answer)] {
        offer(&Seen {
            layer: Layer::Answered,
            reason: &status,
            sent,
            src: from,
            dst: to,
            transport: t,
            bytes,
        });
    }
}

/// A final answer the proxy made itself with no request in hand (a timer's 408, a finished
/// resolution's 503) going to `dest`: alone, from an unknown local address. (One made while
/// handling a request goes with it, through [`answered`].)
pub fn answered_alone(dest: SocketAddr, t: Transport, answer: &[u8]) {
    if !active() || !is_refusal(answer) {
        return;
    }
    let local = SocketAddr::new(
        match dest {
            SocketAddr::V4(_) => std::net::Ipv4Addr::UNSPECIFIED.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::UNSPECIFIED.into(),
        },
        0,
    );
    offer(&Seen {
        layer: Layer::Answered,
        reason: &status_of(answer),
        sent: true,
        src: local,
        dst: dest,
        transport: t,
        bytes: answer,
    });
}

/// Whether an answer is a final refusal (status 300 to 699), not a success or provisional.
fn is_refusal(answer: &[u8]) -> bool {
    answer
        .strip_prefix(b"SIP/2.0 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| std::str::from_utf8(code).ok())
        .and_then(|code| code.parse::<u16>().ok())
        .is_some_and(|code| (300..700).contains(&code))
}

/// `400 Bad Request` of an answer's status line.
fn status_of(answer: &[u8]) -> String {
    let line = answer
        .split(|b| *b == b'\r' || *b == b'\n')
        .next()
        .unwrap_or(b"");
    let line = String::from_utf8_lossy(line);
    line.strip_prefix("SIP/2.0 ")
        .unwrap_or(&line)
        .trim()
        .to_string()
}

/// Stream the copies of `sub` on an admin connection that accepted it: [`TapLine`]s until
/// its `count`, its `duration`, the client hanging up (or shutting down its side: then an
/// `End` line tells what was dropped), or `shutdown`.
pub async fn stream<R, W>(
    (mut read, mut write): (R, W),
    mut sub: Subscription,
    (count, duration): (Option<u64>, Option<Duration>),
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()>
where
    R: AsyncBufRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let deadline = tokio::time::sleep(duration.unwrap_or(Duration::from_secs(u64::MAX / 4)));
    tokio::pin!(deadline);
    let (mut sent, mut rest) = (0u64, String::new());
    loop {
        tokio::select! {
            r = sub.rx.recv() => match r {
                Some(record) => {
                    write_line(&mut write, &TapLine::Record(record)).await?;
                    sent += 1;
                    if count.is_some_and(|c| sent >= c) {
                        break;
                    }
                }
                None => break,
            },
            // Anything from the client, or its end: the capture stops.
            _ = read.read_line(&mut rest) => break,
            _ = &mut deadline => break,
            _ = shutdown.changed() => break,
        }
    }
    let dropped = sub.dropped();
    drop(sub);
    write_line(&mut write, &TapLine::End { dropped }).await?;
    write.shutdown().await
}

/// One JSON line.
pub async fn write_line<W: AsyncWrite + Unpin>(
    w: &mut W,
    v: &impl Serialize,
) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(v).map_err(std::io::Error::other)?;
    line.push(b'\n');
    w.write_all(&line).await?;
    w.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(source: &str, port: Option<u16>) -> TapFilter {
        TapFilter {
            source: Some(source.parse().unwrap()),
            port,
            snap: 16,
            ..TapFilter::default()
        }
    }

    #[test]
    fn the_filter_takes_the_prefix_and_the_port() {
        let local: SocketAddr = "198.51.100.1:5060".parse().unwrap();
        let f = filter("192.0.2.0/24", Some(5070));
        assert!(f.takes("192.0.2.7:5070".parse().unwrap(), local));
        // A dual-stack socket's view of an IPv4 source.
        assert!(f.takes("[::ffff:192.0.2.7]:5070".parse().unwrap(), local));
        assert!(!f.takes("192.0.3.7:5070".parse().unwrap(), local));
        assert!(!f.takes("192.0.2.7:5071".parse().unwrap(), local));
        // The port of either side.
        assert!(filter("192.0.2.0/24", Some(5060)).takes("192.0.2.7:4000".parse().unwrap(), local));
        let v6 = filter("2001:db8::/32", None);
        assert!(v6.takes("[2001:db8::7]:1".parse().unwrap(), local));
        assert!(!v6.takes("192.0.2.7:1".parse().unwrap(), local));
        assert!(TapFilter::default().takes("192.0.2.7:1".parse().unwrap(), local));
        assert_eq!(f.caplen(100), 16);
        assert_eq!(f.caplen(10), 10);
        assert_eq!(TapFilter::default().caplen(100_000), SNAP_MAX as usize);
    }

    /// Copies go to the captures that want them, cut to the snap length, up to the count;
    /// a full queue drops and counts; at most [`MAX_CAPTURES`] run; a capture gone is no
    /// longer fed, and with none running nothing is copied.
    #[test]
    fn captures_are_fed_bounded_and_released() {
        let local: SocketAddr = "198.51.100.1:5060".parse().unwrap();
        let src: SocketAddr = "203.0.113.9:5070".parse().unwrap();
        let msg = b"OPTIONS sip:x SIP/2.0\r\n\r\n";
        let mut wanted = subscribe(TapFilter {
            count: Some(3),
            ..filter("203.0.113.9/32", None)
        })
        .expect("a capture");
        let mut other = subscribe(filter("203.0.113.10/32", None)).expect("a capture");
        assert!(active());
        refused("request_rate", src, local, Transport::Datagram, msg);
        answered(
            (src, local),
            Transport::Stream,
            msg,
            (src, b"SIP/2.0 400 Bad Request\r\n\r\n"),
        );
        refused("banned", src, local, Transport::Datagram, msg);
        let r = wanted.rx.try_recv().expect("the refusal");
        assert_eq!(
            (r.layer, r.reason.as_str(), r.sent),
            (Layer::Gate, "request_rate", false)
        );
        assert_eq!((r.src, r.dst, r.len), (src, local, msg.len() as u32));
        assert_eq!(r.data, &msg[..16]);
        assert_eq!(r.comment(), "gate: request_rate");
        let q = wanted.rx.try_recv().expect("the request answered");
        assert_eq!(
            q.comment(),
            "answered: 400 Bad Request (the request) (stream transport, shown as UDP)"
        );
        let a = wanted.rx.try_recv().expect("the answer");
        assert_eq!((a.src, a.dst, a.sent), (local, src, true));
        assert_eq!(a.reason, "400 Bad Request");
        // The count was three: the ban is not copied.
        assert!(wanted.rx.try_recv().is_err());
        assert!(other.rx.try_recv().is_err());

        let more: Vec<Subscription> = (0..MAX_CAPTURES - 2)
            .map(|_| subscribe(TapFilter::default()).expect("a capture"))
            .collect();
        assert!(matches!(
            subscribe(TapFilter::default()),
            Err(TapError::Busy)
        ));
        drop(more);
        let other_src: SocketAddr = "203.0.113.10:5070".parse().unwrap();
        for _ in 0..QUEUE + 5 {
            refused("flood", other_src, local, Transport::Datagram, msg);
        }
        assert_eq!(other.dropped(), 5);
        while other.rx.try_recv().is_ok() {}
        drop(wanted);
        drop(other);
        let _ = subscribe(TapFilter::default()).expect("the slots are free again");

        // The proxy's own answer while it handles a request, then one a timer sends.
        let mut proxy = subscribe(filter("203.0.113.11/32", None)).expect("a capture");
        let from: SocketAddr = "203.0.113.11:5070".parse().unwrap();
        for answer in [
            // Successes and provisional answers are not copied.
            &b"SIP/2.0 200 OK\r\n\r\n"[..],
            b"SIP/2.0 100 Trying\r\n",
            b"SIP/2.0 404 Not Found\r\n\r\n",
        ] {
            answered((from, local), Transport::Datagram, msg, (from, answer));
        }
        answered_alone(
            from,
            Transport::Datagram,
            b"SIP/2.0 408 Request Timeout\r\n",
        );
        let got: Vec<(bool, SocketAddr, String)> = std::iter::from_fn(|| proxy.rx.try_recv().ok())
            .map(|r| (r.sent, r.src, r.reason))
            .collect();
        let nowhere: SocketAddr = "0.0.0.0:0".parse().unwrap();
        assert_eq!(
            got,
            [
                (false, from, "404 Not Found".to_string()),
                (true, local, "404 Not Found".to_string()),
                (true, nowhere, "408 Request Timeout".to_string()),
            ]
        );
        let ser = serde_json::to_string(&TapLine::Record(r.clone())).unwrap();
        assert_eq!(
            serde_json::from_str::<TapLine>(&ser).unwrap(),
            TapLine::Record(r)
        );
    }
}
