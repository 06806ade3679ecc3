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
    config::{BanScopeConfig, Config, XdpMode},
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

/// Load the fast path and write its settings; lists and bans are filled by the
/// [`Enforcer`], and interfaces attached after that (see [`run`]).
pub fn load_fast_path(config: &Config) -> Result<FastPath, crate::xdp::XdpError> {
    let x = &config.xdp;
    let mut fp = FastPath::load_pinned(&x.pin_dir)?;
    fp.detach_on_drop(x.detach_on_stop);
    let xdp_config = sip_firewall_common::XdpConfig {
        max_payload: x.max_payload,
        ban_scope: x.ban_scope.scope() as u32,
        via_scan: x.via_scan_bytes,
        // Flood bans are learned from UDP traffic: `[bans] learned_scope`.
        flags: if config.bans.learned_scope == BanScopeConfig::SipPorts {
            sip_firewall_common::XdpConfig::LEARNED_SIP_PORTS
        } else {
            0
        },
        ..Default::default()
    }
    .with_flood(x.flood_rate, x.flood_burst, x.ban_time.as_nanos() as u64)
    .with_known_flood(x.known_flood_rate, x.known_flood_burst)
    .with_pressure_budget(x.pressure_budget);
    fp.maps.set_config(&xdp_config)?;
    fp.maps.set_sip_ports(&x.sip_ports)?;
    Ok(fp)
}

/// Run until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let metrics = Arc::new(Metrics::new());

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
    for iface in &config.xdp.interfaces {
        if config.xdp.mode != XdpMode::Off {
            lock(&enforcer)?.attach(iface, config.xdp.mode)?;
        }
    }
    crate::metrics::xdp::register(&metrics, enforcer.clone());

    let mut tasks = tokio::task::JoinSet::new();
    if let Some(ring) = ring {
        let rx = shutdown_rx.clone();
        let enforcer = enforcer.clone();
        tasks.spawn(async move {
            events::watch(ring, rx, |ban| {
                info!(ip = %ban.ip, reason = ?ban.reason, "XDP banned a source");
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

    // Bans learned in user space, and the proxy's UDP transactions for the stray check.
    let (learner, events) = Learner::new(65_536);
    let learner = match lock(&enforcer)?.transaction_keys()? {
        Some(keys) => learner.with_transaction_keys(keys),
        None => learner,
    };
    {
        let rx = shutdown_rx.clone();
        let enforcer = enforcer.clone();
        let cfg = config.bans.clone();
        let refusals = learn::Refusals::new(&metrics);
        tasks.spawn(async move { learn::run(events, enforcer, cfg, refusals, rx).await });
    }
    // The proxy reports every UDP client transaction: XDP may drop replies that match none.
    lock(&enforcer)?.set_stray_check(true)?;

    // The stateful proxy and registrar behind the SIP listeners, and its timers.
    let proxy = Arc::new(crate::proxy::Proxy::new(
        &config,
        Some(metrics.registry()),
        Arc::new(learner.clone()),
    )?);
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
    let server = SipServer::bind_with_handler(&config.sip, metrics.clone(), proxy.clone()).await?;
    server.set_gate(Arc::new(UserGate::new(
        &config,
        enforcer.clone(),
        learner,
        &metrics,
    )));
    let proxy_handle = proxy.clone();
    let rx = shutdown_rx.clone();
    tasks.spawn(async move {
        proxy.run_timers(rx).await;
        Ok(())
    });
    let rx = shutdown_rx.clone();
    tasks.spawn(async move { server.run(rx).await });

    if let Some(addr) = config.metrics.listen {
        let rx = shutdown_rx.clone();
        let m = metrics.clone();
        tasks.spawn(async move { crate::metrics::http::serve(addr, m, rx).await });
    }

    let attachments = lock(&enforcer)?.attachments();
    let info = admin::server::DaemonInfo {
        started: std::time::Instant::now(),
        xdp: attachments.clone(),
        sip_listen: config.sip.listen.iter().map(|a| a.to_string()).collect(),
        proxy: Some(proxy_handle),
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

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot install the SIGTERM handler")?;
    let failure = tokio::select! {
        _ = tokio::signal::ctrl_c() => { info!("SIGINT: stopping"); None }
        _ = term.recv() => { info!("SIGTERM: stopping"); None }
        Some(done) = tasks.join_next() => match done {
            Ok(Ok(())) => Some(anyhow::anyhow!("a task ended unexpectedly")),
            Ok(Err(e)) => Some(e),
            Err(e) => Some(anyhow::anyhow!("a task panicked: {e}")),
        },
    };
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

/// The enforcer, or an error when a panic poisoned it.
fn lock(e: &Mutex<Enforcer>) -> anyhow::Result<MutexGuard<'_, Enforcer>> {
    e.lock()
        .map_err(|_| anyhow::anyhow!("internal state poisoned"))
}
