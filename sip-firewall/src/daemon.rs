//! `sip-firewall run`: start every part, wait for SIGINT/SIGTERM, stop cleanly.
//!
//! Start-up order matters: the fast path is loaded and its maps filled before it is attached,
//! so the program never runs with empty lists; the SIP listeners come next.

use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context as _;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::{
    admin,
    config::{Config, XdpMode},
    enforce::{
        Enforcer,
        gate::UserGate,
        learn::{self, Learner},
    },
    metrics::Metrics,
    server::SipServer,
    state::Store,
    xdp::{FastPath, events},
};

/// Run the daemon on a new tokio runtime until a signal stops it.
pub fn run_blocking(config: Config) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run(config))
}

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

/// Load the fast path and write its settings; lists and bans are filled by the
/// [`Enforcer`], and interfaces attached after that (see [`run`]).
pub fn load_fast_path(config: &Config) -> Result<FastPath, crate::xdp::XdpError> {
    let x = &config.xdp;
    let mut fp = FastPath::load_pinned(&x.pin_dir)?;
    fp.detach_on_drop(x.detach_on_stop);
    fp.maps.set_config(&xdp_config(config))?;
    fp.maps.set_ports(&x.sip_ports, &config.stream_ports())?;
    Ok(fp)
}

/// The fast path's settings from the config (at start, and on reload).
pub fn xdp_config(config: &Config) -> sip_firewall_common::XdpConfig {
    config.xdp.kernel_config(config.bans.learned_scope)
}

/// Run until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let metrics = Arc::new(Metrics::new());
    for m in [
        crate::logging::suppressed_metric(),
        crate::logging::events_metric(),
    ] {
        if let Err(e) = metrics.registry().register(Box::new(m.clone())) {
            warn!("registering the security log's metrics: {e}");
        }
    }

    let store = Store::open(&config.state.directory)?;
    // Bound before anything is attached: a second daemon stops here, not after touching XDP.
    let admin_listener = admin::server::bind(&config.admin.socket)?;

    if (config.xdp.mode == XdpMode::Off || config.xdp.interfaces.is_empty())
        && let Ok(entries) = std::fs::read_dir(&config.xdp.pin_dir)
    {
        let links: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("link-"))
            .collect();
        if !links.is_empty() {
            warn!(
                pins = %config.xdp.pin_dir.display(),
                ?links,
                "an earlier daemon's XDP program is still attached and enforcing its last state; \
                 run with --iface to take it over (with --detach to remove it when that daemon \
                 stops), or delete the pin directory to detach it now"
            );
        }
    }

    let mut fast_path = if config.xdp.mode == XdpMode::Off {
        warn!(
            "XDP fast path off (--xdp-mode off): allow/deny lists, bans, the flood limit and payload checks run in user space"
        );
        None
    } else if config.xdp.interfaces.is_empty() {
        warn!(
            "no interface to attach XDP to (--iface): allow/deny lists, bans, the flood limit and payload checks run in user space"
        );
        None
    } else {
        Some(load_fast_path(&config)?)
    };
    let ring = fast_path.as_mut().and_then(FastPath::take_ban_events);
    // Lists and stored bans go into the maps before the program sees a packet.
    let enforcer = Arc::new(Mutex::new(Enforcer::new(store, fast_path, &config)?));
    // `[cluster]`: checked now (a bad URL or a missing secret stops the start), connected by
    // its task below; until then (and whenever Redis is away) the local state is enforced.
    let cluster = match &config.cluster {
        Some(c) => {
            let (cluster, outbox) =
                crate::cluster::Cluster::new(c, config.auth.secret.as_deref(), metrics.registry())?;
            // The cluster's bans before the first packet (bounded wait: Redis down must not
            // keep the edge from starting on its local state).
            crate::cluster::preload(&cluster, &enforcer, std::time::Duration::from_secs(3)).await?;
            lock(&enforcer)?.set_cluster(outbox.clone());
            Some((cluster, outbox))
        }
        None => None,
    };
    for iface in &config.xdp.interfaces {
        if config.xdp.mode != XdpMode::Off {
            lock(&enforcer)?.attach(iface, config.xdp.mode)?;
        }
    }
    crate::metrics::xdp::register(&metrics, enforcer.clone());

    let mut tasks = tokio::task::JoinSet::new();
    // Learned bans are stored in batches by a writer task, never under the lock the gate
    // takes for every message.
    {
        let (ban_tx, ban_rx) = tokio::sync::mpsc::channel(65_536);
        let store = lock(&enforcer)?.set_ban_writer(ban_tx);
        tasks.spawn(crate::enforce::write_bans(
            store,
            ban_rx,
            shutdown_rx.clone(),
        ));
    }
    if let Some(ring) = ring {
        let rx = shutdown_rx.clone();
        let enforcer = enforcer.clone();
        // One line per interval with the count, not one per ban: a flood of spoofed sources
        // must not become a flood of log lines.
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
    // The maps' janitor: expired entries deleted, fill reported, off the hot path.
    if let Some(mut janitor) = lock(&enforcer)?.map_janitor()? {
        let gauges = crate::metrics::xdp::MapGauges::register(&metrics);
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
                    if let Some(c) = e.xdp_counters() {
                        let stray = sip_firewall_common::Reason::StrayReply as usize;
                        strays.observe(c[stray].packets, std::time::Instant::now());
                    }
                }
            }
        });
    }

    // Bans learned in user space, and the proxy's UDP transactions for the stray check.
    let (learner, events) = Learner::new(65_536);
    let learner = match lock(&enforcer)?.transaction_keys()? {
        Some(keys) => learner.with_transaction_keys(keys),
        None => learner,
    }
    .with_reply_from_any(config.proxy.reply_from_any.clone());
    lock(&enforcer)?.set_any_peer_keys(!config.proxy.reply_from_any.is_empty())?;
    // `[bans]` and the gate's limits, swapped by a reload while the learner and gate run.
    let settings = crate::enforce::live::EnforceSettings::new(&config);
    {
        let rx = shutdown_rx.clone();
        let enforcer = enforcer.clone();
        let settings = settings.clone();
        let refusals = learn::Refusals::new(&metrics);
        let bans = move || settings.bans();
        tasks.spawn(async move { learn::run(events, enforcer, bans, refusals, rx).await });
    }
    // The proxy reports every UDP client transaction: XDP may drop replies that match none.
    lock(&enforcer)?.set_stray_check(true)?;

    // The stateful proxy and registrar behind the SIP listeners, and its timers.
    let proxy = Arc::new(crate::proxy::Proxy::new(
        &config,
        Some(metrics.registry()),
        Arc::new(learner.clone()),
    )?);
    // RFC 3263: next hops named by domain are resolved with `[dns]` (or the system's).
    match crate::proxy::dns::Dns::new(&config.dns) {
        Ok(dns) => proxy.set_dns(dns),
        Err(e) => warn!("no DNS resolver ({e}): requests to domains get 503"),
    }
    // `[cluster]`: registrations are written through to Redis (with our Path URI).
    if let Some((c, outbox)) = &cluster
        && c.config.shares(crate::cluster::Share::Registrations)
    {
        let outbox = outbox.clone();
        proxy.share_locations(
            c.node.clone(),
            c.config.path.clone(),
            Box::new(move |change| outbox.send(crate::cluster::Op::Location { change })),
        );
    }
    // Subscribers added at run time (`sip-firewall user add`) come back from the state.
    for user in lock(&enforcer)?.store().users()? {
        proxy.add_user(&user);
    }
    // Fraud suspensions persist until `sip-firewall fraud unblock`.
    proxy.fraud_restore(lock(&enforcer)?.store().suspensions()?);
    {
        let enforcer = enforcer.clone();
        proxy.set_fraud_store(Box::new(move |ops| {
            let Ok(e) = enforcer.lock() else {
                error!("cannot record a fraud suspension: internal state poisoned");
                return;
            };
            for op in ops {
                let r = match op {
                    crate::fraud::StoreOp::Suspend(s) => e.store().put_suspension(s),
                    crate::fraud::StoreOp::Unsuspend(a) => e.store().del_suspension(a).map(|_| ()),
                };
                if let Err(err) = r {
                    error!("cannot record a fraud suspension: {err}");
                }
            }
        }));
    }
    let mut server =
        SipServer::bind_with_handler(&config.sip, metrics.clone(), proxy.clone()).await?;
    server.bind_tls(&config.tls).await?;
    server.bind_ws(&config.ws).await?;
    server
        .bind_wss(&config.wss, &config.ws, &config.tls)
        .await?;
    server.set_gate(Arc::new(UserGate::new(
        settings.clone(),
        enforcer.clone(),
        learner,
        &metrics,
    )));
    let proxy_handle = proxy.clone();
    let cluster_info = match cluster {
        Some((cluster, outbox)) => {
            let view = cluster.view.clone();
            let target = crate::cluster::Target {
                store: Some(lock(&enforcer)?.store_handle()),
                enforcer: enforcer.clone(),
                proxy: Some(proxy.clone()),
                metrics: cluster.metrics.clone(),
                marks: Default::default(),
            };
            tasks.spawn(crate::cluster::run(cluster, target, shutdown_rx.clone()));
            Some((outbox, view))
        }
        None => None,
    };
    let rx = shutdown_rx.clone();
    tasks.spawn(async move {
        proxy.run_timers(rx).await;
        Ok(())
    });
    let rx = shutdown_rx.clone();
    tasks.spawn(async move { server.run(rx).await });

    // Bound here, before the admin socket answers; a reload may move it.
    let metrics_endpoint = Arc::new(crate::metrics::http::Endpoint::start(
        config.metrics.listen,
        metrics.clone(),
        shutdown_rx.clone(),
    )?);

    let reloader = Arc::new(
        crate::reload::Reloader::new(config.clone(), enforcer.clone(), Some(proxy_handle.clone()))
            .with_settings(settings)
            .with_metrics_endpoint(metrics_endpoint),
    );
    let attachments = lock(&enforcer)?.attachments();
    let info = admin::server::DaemonInfo {
        started: std::time::Instant::now(),
        xdp: attachments.clone(),
        sip_listen: config.sip.listen.iter().map(|a| a.to_string()).collect(),
        proxy: Some(proxy_handle),
        metrics: Some(metrics.clone()),
        reloader: Some(reloader.clone()),
        cluster: cluster_info,
    };
    {
        let rx = shutdown_rx.clone();
        let enforcer = enforcer.clone();
        let path = config.admin.socket.clone();
        tasks.spawn(
            async move { admin::server::serve(admin_listener, path, enforcer, info, rx).await },
        );
    }

    info!(listen = ?config.sip.listen, xdp = ?attachments, "sip-firewall running");
    // Listeners bound, XDP attached and filled: systemd may start what depends on us.
    let notifier = Arc::new(crate::notify::Notifier::from_env());
    notifier.ready(&summary(&enforcer, &config));
    if notifier.enabled() {
        let notifier = notifier.clone();
        let enforcer = enforcer.clone();
        let config = config.clone();
        let mut rx = shutdown_rx.clone();
        // Pings come from a task of the runtime that takes the enforcer's lock: a stuck
        // runtime or a deadlocked enforcer stops them, and systemd restarts the daemon.
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

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot install the SIGHUP handler")?;
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
                notifier.ready(&summary(&enforcer, &config));
            }
            Some(done) = tasks.join_next() => break match done {
                Ok(Ok(())) => Some(anyhow::anyhow!("a task ended unexpectedly")),
                Ok(Err(e)) => Some(e),
                Err(e) => Some(anyhow::anyhow!("a task panicked: {e}")),
            },
        }
    };
    notifier.notify("STOPPING=1");
    let _ = shutdown_tx.send(true);
    while let Some(done) = tasks.join_next().await {
        if let Ok(Err(e)) = done {
            error!("while stopping: {e:#}");
        }
    }
    // Dropping the fast path detaches it from every interface.
    if let Ok(mut e) = enforcer.lock() {
        e.stop_fast_path();
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// One line for systemd's STATUS=: where the policy is enforced, bans, listeners.
fn summary(enforcer: &Mutex<Enforcer>, config: &Config) -> String {
    let Ok(e) = enforcer.lock() else {
        return "internal state poisoned".to_string();
    };
    let xdp = e.attachments();
    let place = if xdp.is_empty() {
        "enforcing in user space (no XDP)".to_string()
    } else {
        let on: Vec<String> = xdp.iter().map(|(i, m)| format!("{i} ({m})")).collect();
        format!("XDP on {}", on.join(", "))
    };
    let listen: Vec<String> = config.sip.listen.iter().map(|a| a.to_string()).collect();
    format!(
        "{place}; {} bans active; SIP on {}",
        e.bans_active(),
        listen.join(", ")
    )
}

/// The enforcer, or an error when a panic poisoned it.
fn lock(e: &Mutex<Enforcer>) -> anyhow::Result<MutexGuard<'_, Enforcer>> {
    e.lock()
        .map_err(|_| anyhow::anyhow!("internal state poisoned"))
}
