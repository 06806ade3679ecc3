//! The user-space gate in front of the message layer: the same policy as the XDP program
//! when the program is not attached (one policy, two places: allow and deny lists, bans, the
//! flood limit; the payload checks are the message layer's own), and the per-source request
//! rate always (XDP cannot see messages inside TCP, and counts packets, not requests).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{Arc, Mutex},
    time::Instant,
};

use prometheus::{IntCounterVec, Opts};
use sip_firewall_common::{Reason, XdpConfig, addr::flood_group, gcra};
use sip_firewall_sip::Transport;

use super::{
    Enforcer,
    learn::{BansConfig, Event, Learner, Window},
};
use crate::{config::Config, metrics::Metrics, server::Gate, xdp::maps::ip_key};

/// Most sources tracked by the user-space flood and rate tables before the oldest go.
const MAX_TRACKED: usize = 100_000;

/// See the module doc.
pub struct UserGate {
    enforcer: Arc<Mutex<Enforcer>>,
    learner: Learner,
    /// XDP is attached: it already applied lists, bans, the flood limit and payload checks.
    fast_path: bool,
    xdp: XdpConfig,
    bans: BansConfig,
    /// GCRA per flood group (the XDP program's algorithm, here for when it is absent).
    flood: Mutex<HashMap<[u8; 16], u64>>,
    requests: Mutex<Window>,
    /// GCRA of the budget of requests from unknown sources (as in XDP).
    pressure: Mutex<u64>,
    started: Instant,
    dropped: IntCounterVec,
}

impl UserGate {
    pub fn new(
        config: &Config,
        enforcer: Arc<Mutex<Enforcer>>,
        learner: Learner,
        metrics: &Metrics,
    ) -> UserGate {
        let fast_path = enforcer.lock().is_ok_and(|e| e.has_fast_path());
        let dropped = IntCounterVec::new(
            Opts::new(
                "sipfw_userspace_drops_total",
                "Messages dropped by the user-space half of the policy, by reason (the XDP \
                 reasons when XDP is not attached, and request_rate)",
            ),
            &["reason"],
        )
        .expect("static metric definition");
        if let Err(e) = metrics.registry().register(Box::new(dropped.clone())) {
            tracing::warn!("registering sipfw_userspace_drops_total: {e}");
        }
        let x = &config.xdp;
        UserGate {
            enforcer,
            learner,
            fast_path,
            xdp: XdpConfig::default()
                .with_flood(x.flood_rate, x.flood_burst, x.ban_time.as_nanos() as u64)
                .with_pressure_budget(x.pressure_budget),
            pressure: Mutex::new(0),
            bans: config.bans.clone(),
            flood: Mutex::new(HashMap::new()),
            requests: Mutex::new(Window::default()),
            started: Instant::now(),
            dropped,
        }
    }

    fn drop_for(&self, reason: &str) -> bool {
        self.dropped.with_label_values(&[reason]).inc();
        false
    }

    fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// The XDP pressure budget, in user space.
    fn over_pressure_budget(&self) -> bool {
        let interval = self.xdp.pressure_interval_ns;
        let Ok(mut tat) = self.pressure.lock() else {
            return false;
        };
        match gcra::admit(
            *tat,
            self.now_ns(),
            interval,
            self.xdp.pressure_tolerance_ns,
        ) {
            Some(next) => {
                *tat = next;
                false
            }
            None => true,
        }
    }

    /// The XDP flood limit, in user space.
    fn over_flood_limit(&self, ip: IpAddr) -> bool {
        let interval = self.xdp.flood_interval_ns;
        if interval == 0 {
            return false;
        }
        let Ok(mut table) = self.flood.lock() else {
            return false;
        };
        if table.len() > MAX_TRACKED {
            table.clear();
        }
        let now = self.now_ns();
        let tat = table.entry(flood_group(ip_key(ip))).or_insert(now);
        match gcra::admit(*tat, now, interval, self.xdp.flood_tolerance_ns) {
            Some(next) => {
                *tat = next;
                false
            }
            None => true,
        }
    }
}

impl Gate for UserGate {
    fn admit(&self, source: SocketAddr, transport: Transport, bytes: &[u8]) -> bool {
        let ip = source.ip();
        let (verdict, known) = match self.enforcer.lock() {
            Ok(e) => (e.source_verdict(ip), e.is_known(ip)),
            Err(_) => (None, false),
        };
        if verdict == Some(Reason::Allowed) {
            return true;
        }
        if !self.fast_path {
            match verdict {
                Some(Reason::Denied) => return self.drop_for("denied"),
                Some(Reason::Banned) => return self.drop_for("banned"),
                _ => {}
            }
            // Everything here arrived on our SIP listeners: the XDP flood limit of the SIP
            // ports. (No payload drops: in user space the message layer is the payload check,
            // and it answers what it refuses with the code RFC 3261 wants, 400, 505, 513...,
            // where XDP can only drop; non-SIP junk it drops and counts.)
            if transport == Transport::Datagram && self.over_flood_limit(ip) {
                self.learner.report(Event::Flood(ip));
                return self.drop_for("flood");
            }
            let is_request = !bytes.starts_with(b"SIP/2.0 ");
            if transport == Transport::Datagram
                && is_request
                && !known
                && self.xdp.pressure_interval_ns != 0
                && self.over_pressure_budget()
            {
                return self.drop_for("pressure");
            }
        }
        // Requests per source per window, on every transport (pike's job for streams).
        if self.bans.request_limit > 0 && !bytes.starts_with(b"SIP/2.0 ") {
            let n = match self.requests.lock() {
                Ok(mut w) => {
                    if w.len() > MAX_TRACKED {
                        w.prune(Instant::now(), self.bans.request_window);
                    }
                    w.hit(ip, Instant::now(), self.bans.request_window)
                }
                Err(_) => 0,
            };
            if n > self.bans.request_limit as usize {
                if n == self.bans.request_limit as usize + 1 {
                    self.learner.report(Event::RequestRate(ip));
                }
                return self.drop_for("request_rate");
            }
        }
        true
    }
}
