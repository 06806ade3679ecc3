//! HEPv3 export (`[hep]`): every SIP message the proxy receives (once the gate admitted it)
//! and sends, with its real source and destination, to a Homer collector or `sngrep -L`, as
//! Kamailio's siptrace and OpenSIPS's proto_hep do, so an operator sees the calls through
//! the edge; and with `capture = ["drops"]`, a sample of the packets the XDP program dropped,
//! each with its verdict (`drops`), so the attempts that never reached the proxy show too.
//!
//! **Decides**: nothing about traffic. Bounded: the message path only copies the message
//! into a queue of `[hep] queue` messages with `try_send` (never waits); what does not fit,
//! what the collector refuses and what arrives while it is unreachable are dropped and
//! counted. One task sends: UDP datagrams, or HEP frames over one TCP connection (opened
//! again at most every second after a failure). A reload that changes `[hep]`
//! starts a new queue and sender; the old sender ends with its queue. The drops reader
//! (one capture slot of the XDP program) runs while `drops` is asked for and a collector
//! set: a reload that adds `drops` takes the slot, one that removes it (or changes
//! `drops_sample`) frees it; a new collector keeps it. Without an XDP program (`[xdp]`
//! mode off, no interface) the daemon starts all the same, says once that drops cannot be
//! exported, and counts it (`sipfw_hep_drops_unavailable_total{reason="no_xdp"}`): whether
//! XDP runs is known only at start (`--iface`, `--xdp-mode`), not from the file alone.
//!
//! | module | job |
//! | --- | --- |
//! | `config` | `[hep]` |
//! | `encode` | the HEPv3 framing, and the verdict chunk of a dropped packet |
//! | `send` | the sender task |
//! | `drops` | the capture slot and its reader thread (`capture = ["drops"]`) |
//! | `frame` | a copied frame's addresses, ports and payload |
//!
//! **Config**: `[hep]`. **Metrics**: `sipfw_hep_sent_total`,
//! `sipfw_hep_dropped_total{reason}` (`queue_full`, `collector_down`, `send_failed`,
//! `too_large`; for drops also `ring_full`, `not_udp_tcp`), `sipfw_hep_drops_slot` (1 while
//! the slot is held), `sipfw_hep_drops_unavailable_total{reason}` (`no_xdp`, `slots_busy`,
//! `error`).

pub mod config;
pub mod drops;
pub mod encode;
pub mod frame;
mod send;

use std::{
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    sync::{Arc, Mutex, OnceLock},
    time::SystemTime,
};

use arc_swap::ArcSwapOption;
use prometheus::{IntCounter, IntCounterVec, IntGauge};
use tokio::sync::mpsc;

use self::{
    config::HepConfig,
    encode::{Agent, Packet},
};
use crate::section::Invalid;

/// The export's counters.
#[derive(Clone)]
pub(crate) struct Counters {
    sent: IntCounter,
    dropped: IntCounterVec,
    /// 1 while the drops reader holds a capture slot.
    drops_slot: IntGauge,
    unavailable: IntCounterVec,
}

impl Counters {
    /// The counters, registered in `registry`.
    fn new(registry: &prometheus::Registry) -> Counters {
        let r = crate::metrics::Registrar::new(registry, "the HEP metrics");
        Counters {
            sent: r.counter(
                "sipfw_hep_sent_total",
                "SIP messages sent to the HEP collector",
            ),
            dropped: r.counter_family(
                "sipfw_hep_dropped_total",
                "SIP messages not exported, by reason: queue_full (the sender is behind), \
                 collector_down (no connection), send_failed, too_large (over 64 KiB as HEP), \
                 ring_full (XDP drops the reader could not take), not_udp_tcp (XDP drops \
                 that are not UDP or TCP over IP)",
                &["reason"],
            ),
            drops_slot: r.int_gauge(
                "sipfw_hep_drops_slot",
                "1 while the HEP export of XDP drops holds a capture slot",
            ),
            unavailable: r.counter_family(
                "sipfw_hep_drops_unavailable_total",
                "Times the HEP export of XDP drops could not run, by reason: no_xdp (no \
                 XDP program loaded), slots_busy (every capture slot taken), error",
                &["reason"],
            ),
        }
    }

    pub(crate) fn dropped(&self, reason: &str) {
        self.dropped.with_label_values(&[reason]).inc();
    }

    fn dropped_n(&self, reason: &str, n: u64) {
        if n > 0 {
            self.dropped.with_label_values(&[reason]).inc_by(n);
        }
    }

    fn drops_unavailable(&self, reason: &str) {
        self.unavailable.with_label_values(&[reason]).inc();
    }
}

/// The running export: its queue and what is captured.
struct Live {
    tx: mpsc::Sender<Packet>,
    /// The address put for a listener bound to the unspecified address (`[proxy]
    /// advertise`): the source of what it sends, the destination of what it receives.
    local: Option<IpAddr>,
    /// The proxy's messages are exported (`capture` has `sip`).
    sip: bool,
}

/// Queue `p` for the sender of `live`, if the export runs (never waits).
fn queue(live: &ArcSwapOption<Live>, counters: &Counters, p: Packet) {
    if let Some(live) = live.load().as_ref()
        && live.tx.try_send(p).is_err()
    {
        counters.dropped("queue_full");
    }
}

/// See the module doc.
pub struct Hep {
    /// Shared with the drops reader, which queues to whichever sender runs.
    live: Arc<ArcSwapOption<Live>>,
    /// The `[hep]` and local address running (a reload restarts only on a change).
    running: Mutex<Option<(HepConfig, Option<IpAddr>)>>,
    /// The loaded XDP program's pin directory (set at start when there is one).
    pins: OnceLock<PathBuf>,
    drops: Mutex<Option<drops::Reader>>,
    counters: Counters,
}

impl Hep {
    /// Off until [`Hep::apply`]; its counters registered in `registry`.
    pub fn new(registry: &prometheus::Registry) -> Arc<Hep> {
        let counters = Counters::new(registry);
        Arc::new(Hep {
            live: Arc::new(ArcSwapOption::empty()),
            running: Mutex::new(None),
            pins: OnceLock::new(),
            drops: Mutex::new(None),
            counters,
        })
    }

    /// The XDP program runs with its maps pinned in `dir`: drops can be exported (once,
    /// before the first [`Hep::apply`]).
    pub fn set_xdp_pins(&self, dir: PathBuf) {
        let _ = self.pins.set(dir);
    }

    /// Start, restart or stop the export for `cfg` (at start and on reload); `local`: the
    /// address that stands for listeners bound to the unspecified address. Whether anything
    /// changed. Needs a tokio runtime (the sender is a task).
    pub fn apply(&self, cfg: &HepConfig, local: Option<IpAddr>) -> Result<bool, Invalid> {
        let mut running = crate::guard::lock(&self.running, "hep settings");
        let want = (cfg.clone(), local);
        if running
            .as_ref()
            .is_some_and(|r| format!("{r:?}") == format!("{want:?}"))
        {
            return Ok(false);
        }
        let collector = cfg.collector()?;
        let next = match collector.as_ref().filter(|_| cfg.sip() || cfg.drops()) {
            Some(collector) => {
                let rt = tokio::runtime::Handle::try_current().map_err(|_| {
                    crate::section::invalid("hep", "the export needs the daemon's runtime")
                })?;
                let (tx, rx) = mpsc::channel(cfg.queue);
                let agent = Agent {
                    node_id: cfg.node_id,
                    password: cfg.password.clone(),
                };
                tracing::info!(collector = %collector.address, scheme = ?collector.scheme, "HEP export on");
                rt.spawn(send::run(
                    collector.clone(),
                    agent,
                    rx,
                    self.counters.clone(),
                ));
                Some(Arc::new(Live {
                    tx,
                    local,
                    sip: cfg.sip(),
                }))
            }
            None => None,
        };
        // The old sender ends once its queue (the only sender was in `live`) is drained.
        self.live.store(next);
        self.apply_drops(cfg, collector.is_some());
        *running = Some(want);
        Ok(true)
    }

    /// Start, keep or stop the drops reader for `cfg` (`exporting`: a collector is set).
    fn apply_drops(&self, cfg: &HepConfig, exporting: bool) {
        let mut reader = crate::guard::lock(&self.drops, "hep drops reader");
        let want = (exporting && cfg.drops()).then_some(cfg.drops_sample);
        if reader.as_ref().map(|r| r.sample) == want {
            return;
        }
        // The old reader's slot is free before a new one is taken.
        *reader = None;
        let Some(sample) = want else {
            return;
        };
        match self.pins.get() {
            Some(dir) => {
                *reader = drops::start(
                    dir.clone(),
                    sample,
                    self.live.clone(),
                    self.counters.clone(),
                );
                if reader.is_none() {
                    self.counters.drops_unavailable("error");
                }
            }
            None => {
                tracing::warn!(
                    "[hep] capture has \"drops\" but no XDP program is loaded (--xdp-mode off \
                     or no --iface): only the proxy's SIP messages are exported"
                );
                self.counters.drops_unavailable("no_xdp");
            }
        }
    }

    /// Stop the drops reader, freeing its capture slot (the daemon's end).
    pub fn stop_drops(&self) {
        *crate::guard::lock(&self.drops, "hep drops reader") = None;
    }

    /// Capture one message (from the message path: never waits). `stream`: it went over TCP
    /// (TCP, TLS, WebSocket).
    pub fn capture(&self, src: SocketAddr, dst: SocketAddr, stream: bool, bytes: &[u8]) {
        let guard = self.live.load();
        let Some(live) = guard.as_ref().filter(|l| l.sip) else {
            return;
        };
        let fix = |a: SocketAddr| match live.local {
            Some(ip) if a.ip().is_unspecified() => SocketAddr::new(ip, a.port()),
            _ => a,
        };
        let p = Packet {
            time: SystemTime::now(),
            src: fix(src),
            dst: fix(dst),
            stream,
            payload: bytes.to_vec(),
            verdict: None,
        };
        if live.tx.try_send(p).is_err() {
            self.counters.dropped("queue_full");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_queue_drops_and_counts_without_waiting() {
        let registry = prometheus::Registry::new();
        let hep = Hep::new(&registry);
        // A collector that never reads: TCP to a listener that accepts nothing.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let cfg = HepConfig {
            collector: Some(format!("tcp://{}", listener.local_addr().unwrap())),
            queue: 4,
            ..HepConfig::default()
        };
        assert!(hep.apply(&cfg, None).unwrap());
        assert!(
            !hep.apply(&cfg, None).unwrap(),
            "unchanged: nothing restarted"
        );
        let (a, b) = (
            "192.0.2.1:5060".parse().unwrap(),
            "192.0.2.2:5060".parse().unwrap(),
        );
        for _ in 0..100 {
            hep.capture(a, b, false, &[b'x'; 60_000]);
        }
        let lost = hep
            .counters
            .dropped
            .with_label_values(&["queue_full"])
            .get();
        // The sender has not run yet (this runtime has one thread and the loop never
        // yields): four queued, the rest dropped.
        assert_eq!(lost, 96);
        hep.apply(&HepConfig::default(), None).unwrap();
        hep.capture(a, b, false, b"x");
        assert_eq!(
            hep.counters
                .dropped
                .with_label_values(&["queue_full"])
                .get(),
            lost,
            "off: nothing queued"
        );
    }

    #[tokio::test]
    async fn drops_without_xdp_start_the_export_say_so_and_count_it() {
        let hep = Hep::new(&prometheus::Registry::new());
        let cfg = HepConfig {
            collector: Some("udp://127.0.0.1:9".into()),
            capture: vec!["drops".into()],
            ..HepConfig::default()
        };
        assert!(hep.apply(&cfg, None).unwrap());
        let no_xdp = || {
            hep.counters
                .unavailable
                .with_label_values(&["no_xdp"])
                .get()
        };
        assert_eq!(no_xdp(), 1);
        assert!(hep.live.load().is_some(), "the sender runs for the drops");
        assert!(hep.drops.lock().unwrap().is_none());
        // Drops only: the proxy's messages are not queued.
        let a = "192.0.2.1:5060".parse().unwrap();
        hep.capture(a, a, false, b"x");
        assert_eq!(hep.live.load().as_ref().unwrap().tx.capacity(), cfg.queue);
        // Unchanged on reload: said once.
        assert!(!hep.apply(&cfg, None).unwrap());
        assert_eq!(no_xdp(), 1);
    }
}
