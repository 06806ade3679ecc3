//! Metrics of the fast path and the bans: the XDP counters by verdict (summed over CPUs at
//! scrape time), bans active and made, and where the policy is enforced.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use prometheus::{IntCounterVec, IntGauge, IntGaugeVec, Opts};
use sip_firewall_common::Reason;

use sip_firewall_common::Counter;

use super::Metrics;

/// What the fast-path metrics read at each scrape: the enforcer (`enforce/`), which holds the
/// maps and the bans. A trait here so that metrics names no unit.
pub trait FastPathSource: Send + 'static {
    /// Whether the XDP program is attached to at least one interface.
    fn attached(&self) -> bool;
    /// Bans in force now.
    fn bans_active(&self) -> usize;
    /// Bans made since start, by reason.
    fn bans_made(&self) -> &HashMap<String, u64>;
    /// The XDP program's counters summed over CPUs (None without XDP).
    fn counters(&self) -> Option<[Counter; Reason::COUNT as usize]>;
}

fn counter(m: &Metrics, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("static metric definition");
    m.registry()
        .register(Box::new(c.clone()))
        .expect("metric names are unique");
    c
}

fn gauge(m: &Metrics, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("static metric definition");
    m.registry()
        .register(Box::new(g.clone()))
        .expect("metric names are unique");
    g
}

/// Register the fast-path metrics and refresh them from `enforcer` at every scrape.
pub fn register<S: FastPathSource>(m: &Metrics, enforcer: Arc<Mutex<S>>) {
    let packets = counter(
        m,
        "sipfw_xdp_packets_total",
        "Packets judged by the XDP program, by verdict reason",
        &["reason"],
    );
    let bytes = counter(
        m,
        "sipfw_xdp_bytes_total",
        "Bytes (whole frames) judged by the XDP program, by verdict reason",
        &["reason"],
    );
    let bans_made = counter(
        m,
        "sipfw_bans_total",
        "Bans made since start, by reason (flood, scanner, auth_failure, request_rate, manual)",
        &["reason"],
    );
    let bans_active = gauge(m, "sipfw_bans_active", "Bans in force now");
    let attached = gauge(
        m,
        "sipfw_xdp_attached",
        "1 while the XDP program is attached to at least one interface, 0 otherwise",
    );
    let place = IntGaugeVec::new(
        Opts::new(
            "sipfw_enforcement_place",
            "1 for the place that enforces allow/deny/ban/flood/payload checks (xdp or userspace)",
        ),
        &["place"],
    )
    .expect("static metric definition");
    m.registry()
        .register(Box::new(place.clone()))
        .expect("metric names are unique");
    for r in Reason::ALL {
        packets.with_label_values(&[r.name()]);
        bytes.with_label_values(&[r.name()]);
    }

    // Counters only go up: add what the source grew by since the last scrape.
    let last: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::new());
    let grow = move |c: &IntCounterVec, label: &str, key: String, now: u64| {
        if let Ok(mut last) = last.lock() {
            let before = last.entry(key).or_insert(0);
            if now > *before {
                c.with_label_values(&[label]).inc_by(now - *before);
            }
            *before = now;
        }
    };
    m.on_scrape(move || {
        let Ok(e) = enforcer.lock() else { return };
        let xdp = e.attached();
        attached.set(i64::from(xdp));
        place.with_label_values(&["xdp"]).set(i64::from(xdp));
        place.with_label_values(&["userspace"]).set(i64::from(!xdp));
        bans_active.set(e.bans_active() as i64);
        for (kind, n) in e.bans_made() {
            grow(&bans_made, kind, format!("bans/{kind}"), *n);
        }
        if let Some(c) = e.counters() {
            for r in Reason::ALL {
                let v = c[r as usize];
                grow(&packets, r.name(), format!("p/{}", r.name()), v.packets);
                grow(&bytes, r.name(), format!("b/{}", r.name()), v.bytes);
            }
        }
    });
}

/// `sipfw_map_entries{map}` and `sipfw_map_capacity{map}`: how full each XDP map that fills
/// up is (bans, learned bans, flood state, known sources, transactions), set by the sweep.
#[derive(Clone)]
pub struct MapGauges {
    entries: IntGaugeVec,
    capacity: IntGaugeVec,
}

impl MapGauges {
    pub fn register(m: &Metrics) -> MapGauges {
        let vec = |name: &str, help: &str| {
            let g = IntGaugeVec::new(Opts::new(name, help), &["map"])
                .expect("static metric definition");
            m.registry()
                .register(Box::new(g.clone()))
                .expect("metric names are unique");
            g
        };
        MapGauges {
            entries: vec(
                "sipfw_map_entries",
                "Entries in an XDP map after the last sweep (expired ones deleted)",
            ),
            capacity: vec("sipfw_map_capacity", "Capacity of an XDP map (max entries)"),
        }
    }

    pub fn set(&self, fills: &[crate::xdp::maps::MapFill]) {
        for f in fills {
            self.entries
                .with_label_values(&[f.map])
                .set(f.entries as i64);
            self.capacity
                .with_label_values(&[f.map])
                .set(f.capacity as i64);
        }
    }
}
