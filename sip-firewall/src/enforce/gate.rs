//! The user-space gate in front of the message layer: the same policy as the XDP program
//! when the program is not attached (one policy, two places: allow and deny lists, bans, the
//! flood limit; the payload checks are the message layer's own), and the per-source request
//! rate always (XDP cannot see messages inside TCP, and counts packets, not requests).
//!
//! "XDP attached" is not "XDP saw this packet": traffic from the host itself (loopback, or
//! any of the host's own addresses, which the kernel delivers over `lo`) never crosses the
//! interfaces the program is attached to. The gate applies the whole policy to every
//! message XDP did not see; it knows them by their source, since the listener does not tell
//! it on which interface a datagram arrived: a source that is loopback or one of the host's
//! addresses (refreshed every [`LOCAL_REFRESH`]) came over `lo`, unless the program is
//! attached to `lo` itself. Limitation: a host with interfaces the program is not attached to
//! (other than `lo`) gets no XDP policy on them; attach to every interface SIP arrives on.

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
    learn::{Event, Learner},
    live::EnforceSettings,
    why::{Effect, Finding, FloodState, flood_finding},
    window::Window,
};
use crate::{
    guard::lock,
    metrics::Metrics,
    seams::{Admission, Gate},
    xdp::maps::ip_key,
};

/// Most sources tracked by the user-space flood and rate tables before the oldest go.
const MAX_TRACKED: usize = 100_000;
/// How often the host's own addresses are read again (addresses come and go with DHCP,
/// SLAAC, failover).
pub const LOCAL_REFRESH: std::time::Duration = std::time::Duration::from_secs(10);

/// The host's own addresses (`getifaddrs`), loopback included. Empty when the call fails.
pub fn host_addresses() -> std::collections::HashSet<IpAddr> {
    let mut out = std::collections::HashSet::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return out;
    }
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned; its ifa_addr, when not
        // null, points to a sockaddr of the family it names.
        unsafe {
            let a = (*cur).ifa_addr;
            if !a.is_null() {
                match i32::from((*a).sa_family) {
                    libc::AF_INET => {
                        let sin = &*(a as *const libc::sockaddr_in);
                        out.insert(IpAddr::from(
                            u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                        ));
                    }
                    libc::AF_INET6 => {
                        let sin6 = &*(a as *const libc::sockaddr_in6);
                        out.insert(IpAddr::from(sin6.sin6_addr.s6_addr));
                    }
                    _ => {}
                }
            }
            cur = (*cur).ifa_next;
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    out
}

/// Which messages the XDP program saw (see the module doc).
struct XdpSight {
    /// XDP is attached to some interface.
    attached: bool,
    /// ... and to `lo`: it sees local traffic too.
    on_loopback: bool,
    /// The host's addresses and when they were read.
    local: Mutex<(Instant, std::collections::HashSet<IpAddr>)>,
}

impl XdpSight {
    fn saw(&self, ip: IpAddr) -> bool {
        if !self.attached {
            return false;
        }
        if self.on_loopback {
            return true;
        }
        let ip = ip.to_canonical();
        if ip.is_loopback() {
            return false;
        }
        let mut local = lock(&self.local, "gate local addresses");
        if local.0.elapsed() >= LOCAL_REFRESH {
            *local = (Instant::now(), host_addresses());
        }
        !local.1.contains(&ip)
    }
}

/// See the module doc.
pub struct UserGate {
    enforcer: Arc<Mutex<Enforcer>>,
    learner: Learner,
    /// Which messages XDP already judged (lists, bans, flood limit, payload checks).
    sight: XdpSight,
    /// `[bans]` and the user-space copy of the `[xdp]` limits, swapped by a reload.
    settings: Arc<EnforceSettings>,
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
        settings: Arc<EnforceSettings>,
        enforcer: Arc<Mutex<Enforcer>>,
        learner: Learner,
        metrics: &Metrics,
    ) -> UserGate {
        let (attached, on_loopback) = enforcer.lock().map_or((false, false), |e| {
            (
                e.has_fast_path(),
                e.attachments().iter().any(|(iface, _)| iface == "lo"),
            )
        });
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
        UserGate {
            enforcer,
            learner,
            sight: XdpSight {
                attached,
                on_loopback,
                local: Mutex::new((Instant::now(), host_addresses())),
            },
            settings,
            pressure: Mutex::new(0),
            flood: Mutex::new(HashMap::new()),
            requests: Mutex::new(Window::default()),
            started: Instant::now(),
            dropped,
        }
    }

    fn drop_for(&self, reason: &'static str) -> Admission {
        self.dropped.with_label_values(&[reason]).inc();
        Err(reason)
    }

    fn now_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    /// The XDP pressure budget, in user space.
    fn over_pressure_budget(&self, limits: &XdpConfig) -> bool {
        let interval = limits.pressure_interval_ns;
        let mut tat = lock(&self.pressure, "gate pressure budget");
        match gcra::admit(*tat, self.now_ns(), interval, limits.pressure_tolerance_ns) {
            Some(next) => {
                *tat = next;
                false
            }
            None => true,
        }
    }

    /// The XDP flood limit, in user space: the known sources' budget when `known`.
    fn over_flood_limit(&self, limits: &XdpConfig, ip: IpAddr, known: bool) -> bool {
        let (interval, tolerance) = if known {
            (
                limits.known_flood_interval_ns,
                limits.known_flood_tolerance_ns,
            )
        } else {
            (limits.flood_interval_ns, limits.flood_tolerance_ns)
        };
        if interval == 0 {
            return false;
        }
        let mut table = lock(&self.flood, "gate flood table");
        if table.len() > MAX_TRACKED {
            table.clear();
        }
        let now = self.now_ns();
        let tat = table.entry(flood_group(ip_key(ip))).or_insert(now);
        match gcra::admit(*tat, now, interval, tolerance) {
            Some(next) => {
                *tat = next;
                false
            }
            None => true,
        }
    }
}

impl UserGate {
    /// What the gate holds of `ip` (`sip-firewall why`): its requests in the rate window
    /// and, when XDP does not see it, its user-space flood state; `known` as the enforcer
    /// says (the caller holds its lock).
    pub fn explain(&self, ip: IpAddr, known: bool) -> Vec<Finding> {
        let mut out = Vec::new();
        if !self.sight.saw(ip) {
            let tat = lock(&self.flood, "gate flood table")
                .get(&flood_group(ip_key(ip)))
                .copied();
            let state = tat.map(|tat| FloodState {
                tat,
                now: self.now_ns(),
                known,
            });
            let limits = self.settings.gate_limits();
            out.extend(state.and_then(|s| flood_finding(&ip.to_string(), s, &limits)));
        }
        let bans = self.settings.bans();
        let (limit, window) = (
            if known {
                bans.known_request_limit
            } else {
                bans.request_limit
            },
            bans.request_window,
        );
        let n = lock(&self.requests, "gate request windows").count(&ip, Instant::now(), window);
        if limit > 0 && n > 0 {
            let over = n > limit as usize;
            let effect = match (over, known) {
                (true, true) => Effect::Throttle,
                (true, false) => Effect::Drop,
                (false, _) => Effect::Info,
            };
            out.push(Finding::new(
                "request_rate",
                effect,
                format!(
                    "{n} requests in the last {} ({} limit {limit}){}",
                    super::why::human(window),
                    if known { "known sources'" } else { "the" },
                    if over { ": over it now" } else { "" }
                ),
                over.then(|| "slow down; [bans] request_limit and reload".to_string()),
            ));
        }
        out
    }
}

impl Gate for UserGate {
    /// Bans and the deny list at accept (XDP judges SYNs only to its `sip_ports`, and
    /// nothing that does not cross an attached interface).
    fn admit_connection(&self, source: SocketAddr, _transport: Transport) -> Admission {
        let ip = source.ip();
        let verdict = lock(&self.enforcer, "enforcer").source_verdict(ip);
        match verdict {
            Some(Reason::Denied) => self.drop_for("denied"),
            Some(Reason::Banned) => self.drop_for("banned"),
            _ => Ok(()),
        }
    }

    fn admit(&self, source: SocketAddr, transport: Transport, bytes: &[u8]) -> Admission {
        let ip = source.ip();
        // A lock poisoned by a panic elsewhere is recovered and counted, never a pass for
        // everyone (which a banned source would otherwise get).
        let (verdict, known) = {
            let e = lock(&self.enforcer, "enforcer");
            (e.source_verdict(ip), e.is_known(ip))
        };
        if verdict == Some(Reason::Allowed) {
            return Ok(());
        }
        let is_request = !bytes.starts_with(b"SIP/2.0 ");
        // The budget's traffic, here whether XDP charged it or the gate does below: the
        // governor samples at its full pace while there is some.
        if transport == Transport::Datagram && is_request && !known {
            self.settings.count_unknown_request();
        }
        if !self.sight.saw(ip) {
            let limits = self.settings.gate_limits();
            match verdict {
                Some(Reason::Denied) => return self.drop_for("denied"),
                Some(Reason::Banned) => return self.drop_for("banned"),
                _ => {}
            }
            // Everything here arrived on our SIP listeners: the XDP flood limit of the SIP
            // ports. (No payload drops: in user space the message layer is the payload check,
            // and it answers what it refuses with the code RFC 3261 wants, 400, 505, 513...,
            // where XDP can only drop; non-SIP junk it drops and counts.)
            if transport == Transport::Datagram && self.over_flood_limit(&limits, ip, known) {
                // Trust tiers: a known source is throttled, never banned.
                if known {
                    return self.drop_for("throttled");
                }
                self.learner.report(Event::Flood(ip));
                return self.drop_for("flood");
            }
            if transport == Transport::Datagram
                && is_request
                && !known
                && limits.pressure_interval_ns != 0
                && self.over_pressure_budget(&limits)
            {
                self.settings.count_pressure_drop();
                return self.drop_for("pressure");
            }
        }
        // Requests per source per window, on every transport (pike's job for streams). Known
        // sources have their own limit and are throttled over it (the Learner refuses to
        // ban them on a rate).
        let bans = self.settings.bans();
        let limit = if known {
            bans.known_request_limit
        } else {
            bans.request_limit
        };
        if limit > 0 && is_request {
            let n = {
                let mut w = lock(&self.requests, "gate request windows");
                if w.len() > MAX_TRACKED {
                    w.prune(Instant::now(), bans.request_window);
                }
                w.hit(ip, Instant::now(), bans.request_window)
            };
            if n > limit as usize {
                if known {
                    return self.drop_for("throttled");
                }
                if n == limit as usize + 1 {
                    self.learner.report(Event::RequestRate(ip));
                }
                return self.drop_for("request_rate");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn sight(attached: bool, on_loopback: bool) -> XdpSight {
        XdpSight {
            attached,
            on_loopback,
            local: Mutex::new((Instant::now(), host_addresses())),
        }
    }

    /// With XDP attached the gate still checks messages that never crossed an attached
    /// interface (local sources over `lo`).
    #[test]
    fn local_traffic_is_not_seen_by_xdp() {
        let s = sight(true, false);
        for local in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"] {
            assert!(!s.saw(local.parse().unwrap()), "{local}");
        }
        let own = host_addresses();
        assert!(own.iter().any(|a| a.is_loopback()), "getifaddrs works");
        for a in own {
            assert!(!s.saw(a), "own address {a}");
        }
        // A documentation address is no address of this host: it came over the wire.
        assert!(s.saw("192.0.2.77".parse().unwrap()));
        assert!(s.saw("2001:db8::77".parse().unwrap()));
        // Not attached: XDP saw nothing; attached to lo: it saw everything.
        assert!(!sight(false, false).saw("192.0.2.77".parse().unwrap()));
        assert!(sight(true, true).saw("127.0.0.1".parse().unwrap()));
    }

    /// A panic while the enforcer was locked must not open the gate: the banned source is
    /// still refused, and the poisoned lock is counted.
    #[test]
    fn a_poisoned_enforcer_does_not_open_the_gate() {
        let config = Config::default();
        let (enforcer, dir) = Enforcer::scratch("gate-poison", &config);
        let enforcer = Arc::new(Mutex::new(enforcer));
        let banned: SocketAddr = "192.0.2.66:5060".parse().expect("addr");
        enforcer
            .lock()
            .expect("enforcer")
            .ban(
                banned.ip(),
                Some(std::time::Duration::from_secs(60)),
                "manual: test",
            )
            .expect("ban");
        let (learner, _events) = Learner::new(16);
        let gate = UserGate::new(
            EnforceSettings::new(&config),
            enforcer.clone(),
            learner,
            &Metrics::new(),
        );
        let e = enforcer.clone();
        let _ = std::thread::spawn(move || {
            let _held = e.lock();
            panic!("a panic while the enforcer is locked");
        })
        .join();
        assert!(enforcer.is_poisoned());
        let before = crate::metrics::internal_errors("lock_poisoned");
        assert_eq!(
            gate.admit(
                banned,
                Transport::Datagram,
                b"OPTIONS sip:x SIP/2.0\r\n\r\n"
            ),
            Err("banned")
        );
        assert_eq!(crate::metrics::internal_errors("lock_poisoned"), before + 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
