//! The daemon's background tasks: the ban writer, the XDP ban events, the maps' janitor, the
//! cluster, the listeners and timers, the metrics endpoint, the watchdog; serving signals and
//! stopping them all.

use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio::sync::watch;
use tracing::{error, info, warn};

use super::{lock, summary};
use crate::{
    config::Config,
    enforce::{Enforcer, live::EnforceSettings, pressure},
    metrics::Metrics,
    server::SipServer,
    xdp::events,
};

/// How often the XDP maps are swept of expired entries and their fill reported.
pub const MAP_SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// How often the bans the XDP program made are summed up in the log.
const BAN_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Bans the XDP program made, logged as one line per [`BAN_LOG_EVERY`].
#[derive(Default)]
struct BanSummary {
    since: Option<std::time::Instant>,
    count: u64,
}

impl BanSummary {
    fn add(&mut self, ip: std::net::IpAddr) {
        self.count += 1;
        let now = std::time::Instant::now();
        match self.since {
            // The first ban of a quiet period is logged at once.
            None => {
                info!(%ip, "XDP banned a source");
                self.since = Some(now);
                self.count = 0;
            }
            Some(t) if now.duration_since(t) >= BAN_LOG_EVERY => {
                info!(bans = self.count, last = %ip, "XDP banned sources in the last {:?}", now.duration_since(t));
                self.since = Some(now);
                self.count = 0;
            }
            Some(_) => {}
        }
    }
}

/// The proxy's timers and the SIP listeners (their end frees the HEP drops reader's slot).
pub(super) fn spawn_serving(
    tasks: &mut Tasks,
    proxy: Arc<crate::proxy::Proxy>,
    server: SipServer,
    shutdown_rx: &watch::Receiver<bool>,
) {
    let rx = shutdown_rx.clone();
    tasks.spawn(async move {
        proxy.run_timers(rx).await;
        Ok(())
    });
    let rx = shutdown_rx.clone();
    tasks.spawn(async move {
        let hep = server.hep();
        let served = server.run(rx).await;
        // The HEP drops reader's capture slot is freed before the fast path stops, not left
        // to a dead owner.
        if let Some(hep) = hep {
            hep.stop_drops();
        }
        served
    });
}

/// The cluster's task (`[cluster]`): remote changes applied to the enforcer and the proxy;
/// what the admin API needs of it (the outbox, the view for `status`), and where the feeds
/// task meets it when the threat feeds are shared.
pub(super) fn spawn_cluster(
    tasks: &mut Tasks,
    cluster: Option<(crate::cluster::Cluster, crate::cluster::outbox::Outbox)>,
    enforcer: &Arc<Mutex<Enforcer>>,
    proxy: &Arc<crate::proxy::Proxy>,
    shutdown_rx: &watch::Receiver<bool>,
) -> anyhow::Result<(
    Option<ClusterInfo>,
    Option<Arc<crate::feeds::shared::Exchange>>,
)> {
    let Some((cluster, outbox)) = cluster else {
        return Ok((None, None));
    };
    let view = cluster.view.clone();
    let feeds = cluster.feeds.as_ref().map(|l| l.exchange.clone());
    let target = crate::cluster::apply::Target {
        store: Some(lock(enforcer)?.store_handle()),
        enforcer: enforcer.clone(),
        proxy: Some(proxy.clone()),
        metrics: cluster.metrics.clone(),
        marks: Default::default(),
    };
    tasks.spawn(crate::cluster::run(cluster, target, shutdown_rx.clone()));
    Ok((Some((outbox, view)), feeds))
}

/// The cluster as the admin API sees it.
type ClusterInfo = (
    crate::cluster::outbox::Outbox,
    Arc<Mutex<crate::cluster::ClusterView>>,
);

/// Wait for every task to end (shutdown was sent), then detach the fast path (dropping it
/// detaches it from every interface).
pub(super) async fn stop(mut tasks: Tasks, enforcer: &Mutex<Enforcer>) {
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e)) = done {
            error!("while stopping: {e:#}");
        }
    }
    if let Ok(mut e) = enforcer.lock() {
        e.stop_fast_path();
    }
}

/// The background tasks of the daemon; the first to end stops it.
pub(super) type Tasks = tokio::task::JoinSet<anyhow::Result<()>>;

/// Learned bans are stored in batches by a writer task, never under the lock the gate takes
/// for every message.
pub(super) fn spawn_ban_writer(
    tasks: &mut Tasks,
    enforcer: &Mutex<Enforcer>,
    shutdown_rx: &watch::Receiver<bool>,
) -> anyhow::Result<()> {
    {
        let (ban_tx, ban_rx) = tokio::sync::mpsc::channel(65_536);
        let store = lock(enforcer)?.set_ban_writer(ban_tx);
        tasks.spawn(crate::enforce::write_bans(
            store,
            ban_rx,
            shutdown_rx.clone(),
        ));
    }
    Ok(())
}

/// Record the bans the XDP program makes; one log line per interval with the count, not one
/// per ban: a flood of spoofed sources must not become a flood of log lines.
pub(super) fn spawn_kernel_bans(
    tasks: &mut Tasks,
    ring: aya::maps::RingBuf<aya::maps::MapData>,
    enforcer: &Arc<Mutex<Enforcer>>,
    shutdown_rx: &watch::Receiver<bool>,
) {
    let rx = shutdown_rx.clone();
    let enforcer = enforcer.clone();
    let mut summary = BanSummary::default();
    tasks.spawn(async move {
        events::watch(ring, rx, move |ban| {
            summary.add(ban.ip);
            let recorded = enforcer
                .lock()
                .map_err(|_| anyhow::anyhow!("state poisoned"))
                .and_then(|mut e| e.record_kernel_ban(&ban).map_err(anyhow::Error::from));
            if let Err(e) = recorded {
                error!(ip = %ban.ip, "cannot record the XDP ban: {e:#}");
            }
        })
        .await
        .context("reading XDP ban events")
    });
}

/// The admin API on its socket (bound at start), answering with `info`.
pub(super) fn spawn_admin(
    tasks: &mut Tasks,
    listener: tokio::net::UnixListener,
    config: &Config,
    enforcer: &Arc<Mutex<Enforcer>>,
    info: crate::admin::server::DaemonInfo,
    shutdown_rx: &watch::Receiver<bool>,
) {
    let path = config.admin.socket.clone();
    let (rx, e) = (shutdown_rx.clone(), enforcer.clone());
    tasks.spawn(async move { crate::admin::server::serve(listener, path, e, info, rx).await });
}

/// The threat feeds (`[[feeds]]`): loaded, vetted and kept in the deny path; their status,
/// for `sip-firewall feeds`. `link`: where the feeds task meets the cluster, when it shares
/// them (one node fetches each).
pub(super) fn spawn_feeds(
    tasks: &mut Tasks,
    config: &Config,
    enforcer: &Arc<Mutex<Enforcer>>,
    metrics: &Arc<Metrics>,
    link: Option<Arc<crate::feeds::shared::Exchange>>,
    shutdown_rx: &watch::Receiver<bool>,
) -> crate::feeds::Statuses {
    let statuses = crate::feeds::Statuses::default();
    if !config.feeds.is_empty() {
        let (feeds, e, m) = (config.feeds.clone(), enforcer.clone(), metrics.clone());
        let (s, rx) = (statuses.clone(), shutdown_rx.clone());
        tasks.spawn(async move { crate::feeds::run(feeds, e, &m, s, link, rx).await });
    }
    statuses
}

/// The maps' janitor: expired entries deleted, fill reported, off the hot path.
pub(super) fn spawn_janitor(
    tasks: &mut Tasks,
    enforcer: &Arc<Mutex<Enforcer>>,
    metrics: &Metrics,
    shutdown_rx: &watch::Receiver<bool>,
) -> anyhow::Result<()> {
    if let Some(mut janitor) = lock(enforcer)?.map_janitor()? {
        let gauges = crate::metrics::xdp::MapGauges::register(metrics);
        let enforcer = enforcer.clone();
        let mut rx = shutdown_rx.clone();
        // Replies XDP dropped as strays: the kernel counts them, so user space logs their
        // sum, one security line a minute at most.
        let mut strays = crate::logging::SummaryEvent::new(
            "stray_reply",
            "response matching no open transaction (XDP)",
        );
        tasks.spawn(async move {
            let mut every = tokio::time::interval(MAP_SWEEP_EVERY);
            loop {
                tokio::select! {
                    _ = every.tick() => {}
                    _ = rx.changed() => return Ok(()),
                }
                let now = crate::clock::monotonic_ns();
                let (j, fills) = tokio::task::spawn_blocking(move || {
                    let fills = janitor.sweep(now);
                    (janitor, fills)
                })
                .await
                .context("map sweep")?;
                janitor = j;
                gauges.set(&fills);
                for f in &fills {
                    if f.entries * 10 >= f.capacity * 8 {
                        warn!(
                            map = f.map,
                            entries = f.entries,
                            capacity = f.capacity,
                            "XDP map over 80% full"
                        );
                    }
                }
                if let Ok(mut e) = enforcer.lock() {
                    e.forget_expired_bans();
                    if let Some(c) = e.xdp_counter(sip_firewall_common::Reason::StrayReply) {
                        strays.observe(c.packets, std::time::Instant::now());
                    }
                }
            }
        });
    }
    Ok(())
}

/// Watchdog pings come from a task of the runtime that takes the enforcer's lock: a stuck
/// runtime or a deadlocked enforcer stops them, and systemd restarts the daemon.
fn spawn_watchdog(
    tasks: &mut Tasks,
    notifier: &Arc<crate::notify::Notifier>,
    enforcer: &Arc<Mutex<Enforcer>>,
    config: &Config,
    shutdown_rx: &watch::Receiver<bool>,
) {
    let notifier = notifier.clone();
    let enforcer = enforcer.clone();
    let config = config.clone();
    let mut rx = shutdown_rx.clone();
    let every =
        crate::notify::watchdog_interval().map_or(std::time::Duration::from_secs(5), |w| w / 2);
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let status = summary(&enforcer, &config);
                    notifier.notify(&format!("WATCHDOG=1\nSTATUS={}", status.replace('\n', " ")));
                }
                _ = rx.wait_for(|s| *s) => return Ok(()),
            }
        }
    });
}

/// Tell systemd the daemon is ready (and keep its watchdog fed when it asks for one): the
/// notifier the rest of the run reports through.
pub(super) fn announce_ready(
    tasks: &mut Tasks,
    enforcer: &Arc<Mutex<Enforcer>>,
    config: &Config,
    shutdown_rx: &watch::Receiver<bool>,
) -> Arc<crate::notify::Notifier> {
    let notifier = Arc::new(crate::notify::Notifier::from_env());
    notifier.ready(&summary(enforcer, config));
    if notifier.enabled() {
        spawn_watchdog(tasks, &notifier, enforcer, config, shutdown_rx);
    }
    notifier
}

/// SIGTERM and SIGHUP, caught from the start: a signal that comes while the daemon is
/// still starting (its admin API may already answer) waits for [`serve_signals`] instead of
/// killing it with the default action.
pub(super) struct Signals {
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    pub(super) fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?,
            hup: signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?,
        })
    }
}

/// Serve signals until SIGINT/SIGTERM or a task ends: SIGHUP reloads as `sip-firewall reload`
/// does (a bad file changes nothing). The failure that stopped the daemon, if any.
pub(super) async fn serve_signals(
    Signals { mut term, mut hup }: Signals,
    tasks: &mut Tasks,
    reloader: &crate::reload::Reloader,
    notifier: &crate::notify::Notifier,
    enforcer: &Mutex<Enforcer>,
    config: &Config,
) -> anyhow::Result<Option<anyhow::Error>> {
    let failure = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => { info!("SIGINT: stopping"); break None }
            _ = term.recv() => { info!("SIGTERM: stopping"); break None }
            _ = hup.recv() => {
                // SIGHUP: reload as `sip-firewall reload` does; a bad file changes nothing.
                notifier.notify("RELOADING=1");
                match tokio::task::block_in_place(|| reloader.reload()) {
                    Ok(r) => info!(applied = ?r.applied, restart_needed = ?r.restart_needed, "SIGHUP: config reloaded"),
                    Err(e) => error!("SIGHUP: reload refused, the running config stays: {e}"),
                }
                notifier.ready(&summary(enforcer, config));
            }
            Some(done) = tasks.join_next() => break match done {
                Ok(Ok(())) => Some(anyhow::anyhow!("a task ended unexpectedly")),
                Ok(Err(e)) => Some(e),
                Err(e) => Some(anyhow::anyhow!("a task panicked: {e}")),
            },
        }
    };
    Ok(failure)
}

/// The unknown-source budget's governor (`enforce::pressure`): every `[pressure] tick`
/// while the budget has work (longer while it has none), a sample of the daemon's CPU, its
/// event loop's lag, the drops for the budget and the unknown requests the gate saw; each
/// new budget written to the gate and the XDP config map.
pub(super) fn spawn_pressure(
    tasks: &mut Tasks,
    enforcer: &Arc<Mutex<Enforcer>>,
    settings: &Arc<EnforceSettings>,
    metrics: &Metrics,
    shutdown_rx: &watch::Receiver<bool>,
) {
    let gauges = pressure::PressureGauges::register(metrics);
    let (enforcer, settings, mut rx) = (enforcer.clone(), settings.clone(), shutdown_rx.clone());
    tasks.spawn(async move {
        let mut governor = pressure::Governor::new(settings.pressure_ceiling());
        gauges.budget.set(i64::from(governor.budget()));
        let mut at = Marks::read(&enforcer, &settings);
        let mut generation = settings.generation();
        let mut logged: Option<std::time::Instant> = None;
        loop {
            let cfg = settings.pressure();
            let sleep = governor.tick(&cfg);
            let asleep = std::time::Instant::now();
            let woken = tokio::select! {
                woken = settings.governor_sleep(sleep, sleep > cfg.tick) => woken,
                _ = rx.changed() => return Ok(()),
            };
            // A timer that fired late is the loop's lag; a sleep cut short measured none.
            let lag = if woken {
                std::time::Duration::ZERO
            } else {
                asleep.elapsed().saturating_sub(sleep)
            };
            let now = Marks::read(&enforcer, &settings);
            let sample = at.sample(&now, lag);
            at = now;
            gauges.lag.set(lag.as_secs_f64());
            let before = governor.budget();
            let after = governor.next(settings.pressure_ceiling(), &cfg, sample);
            // Written on a change, and after a reload (which wrote the ceiling to both).
            let reloaded = settings.generation() != generation;
            generation = settings.generation();
            if reloaded || after != before {
                settings.set_pressure_budget(after);
                let limits = settings.gate_limits();
                if let Err(e) = lock(&enforcer).and_then(|mut e| Ok(e.set_kernel_limits(&limits)?))
                {
                    warn!("writing the pressure budget to XDP: {e}");
                }
            }
            gauges.budget.set(i64::from(after));
            if after != before
                && logged.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60))
            {
                logged = Some(std::time::Instant::now());
                info!(
                    budget = after,
                    was = before,
                    cpu = format!("{:.3}", sample.cpu),
                    baseline = format!("{:.3}", governor.baseline().unwrap_or(0.0)),
                    lag_ms = lag.as_millis() as u64,
                    saturated = sample.saturated,
                    "unknown-source budget changed"
                );
            }
        }
    });
}

/// What the governor's samples are differences of.
struct Marks {
    cpu: std::time::Duration,
    at: std::time::Instant,
    drops: u64,
    unknown: u64,
}

impl Marks {
    fn read(enforcer: &Mutex<Enforcer>, settings: &EnforceSettings) -> Marks {
        Marks {
            cpu: pressure::cpu_time(),
            at: std::time::Instant::now(),
            drops: pressure_drops(enforcer, settings),
            unknown: settings.unknown_requests(),
        }
    }

    /// The sample from these marks to `now`'s.
    fn sample(&self, now: &Marks, lag: std::time::Duration) -> pressure::Sample {
        let span = now.at.duration_since(self.at);
        pressure::Sample {
            cpu: now.cpu.saturating_sub(self.cpu).as_secs_f64() / span.as_secs_f64().max(1e-3),
            lag,
            saturated: now.drops > self.drops,
            unknown: now.unknown > self.unknown,
            span,
        }
    }
}

/// Requests dropped for the budget so far: the XDP program's and the gate's.
fn pressure_drops(enforcer: &Mutex<Enforcer>, settings: &EnforceSettings) -> u64 {
    let xdp = enforcer
        .lock()
        .ok()
        .and_then(|e| e.xdp_counter(sip_firewall_common::Reason::Pressure))
        .map_or(0, |c| c.packets);
    xdp + settings.pressure_drops()
}
