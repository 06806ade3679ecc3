//! `sip-firewall run`: start every part, wait for SIGINT/SIGTERM, stop cleanly.
//!
//! Start-up order matters: the fast path is loaded and its maps filled before it is attached,
//! so the program never runs with empty lists; the SIP listeners come next.

mod tasks;

use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::Context as _;
use tokio::sync::watch;
use tracing::{error, info, warn};

pub use self::tasks::MAP_SWEEP_EVERY;
use self::tasks::{
    Signals, Tasks, announce_ready, serve_signals, spawn_admin, spawn_ban_writer, spawn_cluster,
    spawn_feeds, spawn_janitor, spawn_kernel_bans, spawn_pressure, spawn_serving, stop,
};
use crate::{
    admin,
    config::Config,
    enforce::{
        Enforcer,
        gate::UserGate,
        learn::{self, Learner},
        live::EnforceSettings,
    },
    metrics::Metrics,
    server::SipServer,
    state::Store,
    xdp::FastPath,
    xdp::config::XdpMode,
};

/// Run the daemon on a new tokio runtime until a signal stops it.
pub fn run_blocking(config: Config) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run(config))
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
    let signals = Signals::install()?;
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let metrics = new_metrics();

    let store = Store::open(&config.state.directory)?;
    // Bound before anything is attached: a second daemon stops here, not after touching XDP.
    let socket = admin::server::bind(&config.admin.socket)?;

    let mut fast_path = load_if_wanted(&config)?;
    let ring = fast_path.as_mut().and_then(FastPath::take_ban_events);
    // Lists and stored bans go into the maps before the program sees a packet.
    let enforcer = Arc::new(Mutex::new(Enforcer::new(store, fast_path, &config)?));
    let cluster = join_cluster(&config, &metrics, &enforcer).await?;
    attach(&config, &enforcer)?;
    crate::metrics::xdp::register(&metrics, enforcer.clone());

    let mut tasks = Tasks::new();
    spawn_ban_writer(&mut tasks, &enforcer, &shutdown_rx)?;
    if let Some(ring) = ring {
        spawn_kernel_bans(&mut tasks, ring, &enforcer, &shutdown_rx);
    }
    spawn_janitor(&mut tasks, &enforcer, &metrics, &shutdown_rx)?;

    // `[bans]` and the gate's limits, swapped by a reload while the learner and gate run.
    let settings = EnforceSettings::new(&config);
    spawn_pressure(&mut tasks, &enforcer, &settings, &metrics, &shutdown_rx);
    let learner = start_learner(
        &mut tasks,
        &config,
        &settings,
        &enforcer,
        &metrics,
        &shutdown_rx,
    )?;

    let proxy = start_proxy(&config, &metrics, &enforcer, &learner, cluster.as_ref())?;
    let (server, gate) =
        bind_server(&config, &settings, &metrics, &proxy, &enforcer, learner).await?;
    let proxy_handle = proxy.clone();
    let (slots, hep) = (server.slots(), server.hep());
    let (cluster_info, link) = spawn_cluster(&mut tasks, cluster, &enforcer, &proxy, &shutdown_rx)?;
    spawn_serving(&mut tasks, proxy, server, &shutdown_rx);

    let reloader = reloader(
        &config,
        &enforcer,
        &proxy_handle,
        (settings, hep),
        &metrics,
        &shutdown_rx,
    )?;
    let feeds = spawn_feeds(&mut tasks, &config, &enforcer, &metrics, link, &shutdown_rx);
    let info = admin::server::DaemonInfo {
        proxy: Some(proxy_handle),
        metrics: Some(metrics.clone()),
        reloader: Some(reloader.clone()),
        feeds: Some(feeds),
        cluster: cluster_info,
        ..admin_info(&config, &enforcer, (slots, gate))?
    };
    let attachments = info.xdp.clone();
    spawn_admin(&mut tasks, socket, &config, &enforcer, info, &shutdown_rx);

    info!(listen = ?config.sip.listen, xdp = ?attachments, "sip-firewall running");
    // Listeners bound, XDP attached and filled: systemd may start what depends on us.
    let notifier = announce_ready(&mut tasks, &enforcer, &config, &shutdown_rx);

    let failure = serve_signals(
        signals, &mut tasks, &reloader, &notifier, &enforcer, &config,
    )
    .await?;
    notifier.notify("STOPPING=1");
    let _ = shutdown_tx.send(true);
    stop(tasks, &enforcer).await;
    failure.map_or(Ok(()), Err)
}

/// What `status` reports of the daemon itself, and what `why` reads of the listeners (the
/// parts it manages are added by `run`).
fn admin_info(
    config: &Config,
    enforcer: &Mutex<Enforcer>,
    (slots, gate): (Arc<crate::server::slots::TcpSlots>, Arc<UserGate>),
) -> anyhow::Result<admin::server::DaemonInfo> {
    Ok(admin::server::DaemonInfo {
        started: std::time::Instant::now(),
        xdp: lock(enforcer)?.attachments(),
        sip_listen: config.sip.addrs().iter().map(|a| a.to_string()).collect(),
        proxy: None,
        metrics: None,
        reloader: None,
        cluster: None,
        feeds: None,
        slots: Some(slots),
        gate: Some(gate),
    })
}

/// The registry, with the security log's counters.
fn new_metrics() -> Arc<Metrics> {
    let metrics = Arc::new(Metrics::new());
    for m in [
        crate::logging::suppressed_metric(),
        crate::logging::events_metric(),
    ] {
        if let Err(e) = metrics.registry().register(Box::new(m.clone())) {
            warn!("registering the security log's metrics: {e}");
        }
    }
    metrics
}

/// Attach the loaded program to every `[xdp] interfaces` (after its maps were filled).
fn attach(config: &Config, enforcer: &Mutex<Enforcer>) -> anyhow::Result<()> {
    for iface in &config.xdp.interfaces {
        if config.xdp.mode != XdpMode::Off {
            lock(enforcer)?.attach(iface, config.xdp.mode)?;
        }
    }
    Ok(())
}

/// The metrics endpoint, bound here before the admin socket answers (a reload may move
/// it), and what `reload` and SIGHUP go through.
fn reloader(
    config: &Config,
    enforcer: &Arc<Mutex<Enforcer>>,
    proxy: &Arc<crate::proxy::Proxy>,
    (settings, hep): (Arc<EnforceSettings>, Option<Arc<crate::hep::Hep>>),
    metrics: &Arc<Metrics>,
    shutdown_rx: &watch::Receiver<bool>,
) -> anyhow::Result<Arc<crate::reload::Reloader>> {
    let feed: crate::metrics::http::FeedSource = config.metrics.feed.then(|| {
        let e = enforcer.clone();
        Arc::new(move || e.lock().map(|e| e.learned_feed()).unwrap_or_default())
            as Arc<dyn Fn() -> String + Send + Sync>
    });
    let endpoint = Arc::new(crate::metrics::http::Endpoint::start(
        config.metrics.listen,
        metrics.clone(),
        feed,
        shutdown_rx.clone(),
    )?);
    let reloader =
        crate::reload::Reloader::new(config.clone(), enforcer.clone(), Some(proxy.clone()))
            .with_settings(settings)
            .with_metrics_endpoint(endpoint);
    Ok(Arc::new(match hep {
        Some(hep) => reloader.with_hep(hep),
        None => reloader,
    }))
}

/// The SIP listeners (UDP and TCP, TLS, WebSocket) in front of the proxy, behind the gate,
/// copying to the HEP export.
async fn bind_server(
    config: &Config,
    settings: &Arc<EnforceSettings>,
    metrics: &Arc<Metrics>,
    proxy: &Arc<crate::proxy::Proxy>,
    enforcer: &Arc<Mutex<Enforcer>>,
    learner: Learner,
) -> anyhow::Result<(SipServer, Arc<UserGate>)> {
    let mut server =
        SipServer::bind_with_handler(&config.sip, metrics.clone(), proxy.clone()).await?;
    server.bind_tls(&config.tls).await?;
    server.bind_ws(&config.ws).await?;
    server
        .bind_wss(&config.wss, &config.ws, &config.tls)
        .await?;
    let gate = Arc::new(UserGate::new(
        settings.clone(),
        enforcer.clone(),
        learner,
        metrics,
    ));
    server.set_gate(gate.clone());
    crate::tap::register_metrics(metrics);
    // `[hep]`: a copy of every message received and sent (the proxy's side named by
    // `[proxy] advertise` where a listener is bound to the unspecified address).
    let hep = crate::hep::Hep::new(metrics.registry());
    // `capture = ["drops"]` takes a capture slot of the program pinned there.
    if lock(enforcer)?.has_fast_path() {
        hep.set_xdp_pins(config.xdp.pin_dir.clone());
    }
    hep.apply(&config.hep, crate::reload::advertised_ip(config))
        .map_err(|e| anyhow::anyhow!("{}: {}", e.key, e.message))?;
    server.set_hep(hep);
    Ok((server, gate))
}

/// Without XDP, say so when an earlier daemon's program is still attached (its pins remain).
fn warn_about_stale_pins(config: &Config) {
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
}

/// The fast path to load, or none (XDP off, or no interface: said once, and whether an
/// earlier daemon's program is still attached).
fn load_if_wanted(config: &Config) -> anyhow::Result<Option<FastPath>> {
    warn_about_stale_pins(config);
    Ok(if config.xdp.mode == XdpMode::Off {
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
        Some(load_fast_path(config)?)
    })
}

/// `[cluster]`: checked now (a bad URL or a missing secret stops the start), connected by its
/// task later; until then (and whenever Redis is away) the local state is enforced.
async fn join_cluster(
    config: &Config,
    metrics: &Metrics,
    enforcer: &Arc<Mutex<Enforcer>>,
) -> anyhow::Result<Option<(crate::cluster::Cluster, crate::cluster::outbox::Outbox)>> {
    Ok(match &config.cluster {
        Some(c) => {
            // The cluster's MAC keys and fingerprint come from the key ring, never the raw
            // secret; records made under a previous secret still verify.
            let keys = crate::auth::keys::KeyRing::from_config(
                config.auth.secret.as_deref(),
                &config.auth.previous_secrets,
            )?;
            let domains = &config.sip.domains;
            let (mut cluster, outbox) =
                crate::cluster::Cluster::new(c, &keys, domains, metrics.registry())?;
            // One node fetches each threat feed, the others take its loads.
            let shared = config
                .feeds
                .iter()
                .map(crate::cluster::feeds::SharedFeed::of);
            let shared = shared.collect();
            cluster.share_feeds(shared);
            // The cluster's bans before the first packet (bounded wait: Redis down must not
            // keep the edge from starting on its local state).
            crate::cluster::preload(&cluster, enforcer, std::time::Duration::from_secs(3)).await?;
            lock(enforcer)?.set_cluster(outbox.clone());
            Some((cluster, outbox))
        }
        None => None,
    })
}

/// Bans learned in user space, and the proxy's UDP transactions for the stray check: the
/// learner (the proxy's observer and the gate's reporter) and its task.
fn start_learner(
    tasks: &mut Tasks,
    config: &Config,
    settings: &Arc<EnforceSettings>,
    enforcer: &Arc<Mutex<Enforcer>>,
    metrics: &Metrics,
    shutdown_rx: &watch::Receiver<bool>,
) -> anyhow::Result<Learner> {
    let (learner, events) = Learner::new(65_536);
    let learner = match lock(enforcer)?.transaction_keys()? {
        Some(keys) => learner.with_transaction_keys(keys),
        None => learner,
    }
    .with_reply_from_any(config.proxy.reply_from_any.clone());
    lock(enforcer)?.set_any_peer_keys(!config.proxy.reply_from_any.is_empty())?;
    {
        let rx = shutdown_rx.clone();
        let enforcer = enforcer.clone();
        let settings = settings.clone();
        let refusals = crate::enforce::refusals::Refusals::new(metrics);
        let sweep = {
            let settings = settings.clone();
            move || settings.sweep()
        };
        let bans = move || settings.bans();
        tasks.spawn(async move { learn::run(events, enforcer, bans, sweep, refusals, rx).await });
    }
    // The proxy reports every UDP client transaction: XDP may drop replies that match none.
    lock(enforcer)?.set_stray_check(true)?;
    Ok(learner)
}

/// The stateful proxy and registrar, with the subscribers and fraud suspensions of the state
/// database.
fn start_proxy(
    config: &Config,
    metrics: &Metrics,
    enforcer: &Arc<Mutex<Enforcer>>,
    learner: &Learner,
    cluster: Option<&(crate::cluster::Cluster, crate::cluster::outbox::Outbox)>,
) -> anyhow::Result<Arc<crate::proxy::Proxy>> {
    let proxy = Arc::new(crate::proxy::Proxy::new(
        config,
        Some(metrics.registry()),
        Arc::new(learner.clone()),
    )?);
    // RFC 3263: next hops named by domain are resolved with `[dns]` (or the system's).
    match crate::proxy::dns::Dns::new(&config.dns) {
        Ok(dns) => proxy.set_dns(dns),
        Err(e) => warn!("no DNS resolver ({e}): requests to domains get 503"),
    }
    // `[cluster]`: our nonces name this node (another node's are stale here).
    if let Some((c, _)) = cluster {
        proxy.set_node(&c.node);
    }
    // `[cluster]`: registrations are written through to Redis (with our Path URI).
    if let Some((c, outbox)) = cluster
        && c.config.shares(crate::cluster::Share::Registrations)
    {
        let outbox = outbox.clone();
        proxy.share_locations(
            c.node.clone(),
            c.config.path.clone(),
            Box::new(move |change| outbox.send(crate::cluster::schema::Op::Location { change })),
        );
    }
    // Subscribers added at run time (`sip-firewall user add`) come back from the state.
    for user in lock(enforcer)?.store().users()? {
        proxy.add_user(&user);
    }
    // Fraud suspensions persist until `sip-firewall fraud unblock`.
    proxy.fraud_restore(lock(enforcer)?.store().suspensions()?);
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
    Ok(proxy)
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
    let listen: Vec<String> = config.sip.addrs().iter().map(|a| a.to_string()).collect();
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
