//! HEPv3 export (`[hep]`): every SIP message the proxy receives (once the gate admitted it)
//! and sends, with its real source and destination, to a Homer collector or `sngrep -L`, as
//! Kamailio's siptrace and OpenSIPS's proto_hep do, so an operator sees the calls through
//! the edge.
//!
//! **Decides**: nothing about traffic. Bounded: the message path only copies the message
//! into a queue of `[hep] queue` messages with `try_send` (never waits); what does not fit,
//! what the collector refuses and what arrives while it is unreachable are dropped and
//! counted. One task sends: UDP datagrams, or HEP frames over one TCP connection (opened
//! again at most every second after a failure). A reload that changes `[hep]`
//! starts a new queue and sender; the old sender ends with its queue.
//!
//! | module | job |
//! | --- | --- |
//! | `config` | `[hep]` |
//! | `encode` | the HEPv3 framing |
//! | `send` | the sender task |
//!
//! **Config**: `[hep]`. **Metrics**: `sipfw_hep_sent_total`,
//! `sipfw_hep_dropped_total{reason}` (`queue_full`, `collector_down`, `send_failed`,
//! `too_large`).

pub mod config;
pub mod encode;
mod send;

use std::{
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::SystemTime,
};

use arc_swap::ArcSwapOption;
use prometheus::{IntCounter, IntCounterVec, Opts};
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
}

impl Counters {
    fn new() -> Counters {
        Counters {
            sent: IntCounter::new(
                "sipfw_hep_sent_total",
                "SIP messages sent to the HEP collector",
            )
            .expect("static metric definition is valid"),
            dropped: IntCounterVec::new(
                Opts::new(
                    "sipfw_hep_dropped_total",
                    "SIP messages not exported, by reason: queue_full (the sender is behind), \
                     collector_down (no connection), send_failed, too_large (over 64 KiB as HEP)",
                ),
                &["reason"],
            )
            .expect("static metric definition is valid"),
        }
    }

    pub(crate) fn dropped(&self, reason: &str) {
        self.dropped.with_label_values(&[reason]).inc();
    }
}

/// The running export: its queue and what is captured.
struct Live {
    tx: mpsc::Sender<Packet>,
    /// The address put for a listener bound to the unspecified address (`[proxy]
    /// advertise`): the source of what it sends, the destination of what it receives.
    local: Option<IpAddr>,
}

/// See the module doc.
pub struct Hep {
    live: ArcSwapOption<Live>,
    /// The `[hep]` and local address running (a reload restarts only on a change).
    running: Mutex<Option<(HepConfig, Option<IpAddr>)>>,
    counters: Counters,
}

impl Hep {
    /// Off until [`Hep::apply`]; its counters registered in `registry`.
    pub fn new(registry: &prometheus::Registry) -> Arc<Hep> {
        let counters = Counters::new();
        for c in [
            Box::new(counters.sent.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(counters.dropped.clone()),
        ] {
            if let Err(e) = registry.register(c) {
                tracing::warn!("registering the HEP metrics: {e}");
            }
        }
        Arc::new(Hep {
            live: ArcSwapOption::empty(),
            running: Mutex::new(None),
            counters,
        })
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
        let next = match collector.filter(|_| cfg.sip()) {
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
                rt.spawn(send::run(collector, agent, rx, self.counters.clone()));
                Some(Arc::new(Live { tx, local }))
            }
            None => None,
        };
        // The old sender ends once its queue (the only sender was in `live`) is drained.
        self.live.store(next);
        *running = Some(want);
        Ok(true)
    }

    /// Capture one message (from the message path: never waits). `stream`: it went over TCP
    /// (TCP, TLS, WebSocket).
    pub fn capture(&self, src: SocketAddr, dst: SocketAddr, stream: bool, bytes: &[u8]) {
        let guard = self.live.load();
        let Some(live) = guard.as_ref() else {
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
}
