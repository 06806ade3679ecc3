//! `sip-firewall run`: start every part, wait for SIGINT/SIGTERM, stop cleanly.
//!
//! Start-up order matters: the fast path is loaded and its maps filled before it is attached,
//! so the program never runs with empty lists; the SIP listeners come next.

use std::sync::Arc;

use anyhow::Context as _;
use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::{
    config::{BanScopeConfig, Config, XdpMode},
    metrics::Metrics,
    server::SipServer,
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

/// Load, fill and attach the fast path.
pub fn start_fast_path(config: &Config) -> Result<FastPath, crate::xdp::XdpError> {
    let mut fp = FastPath::load()?;
    let x = &config.xdp;
    let scope = match x.ban_scope {
        BanScopeConfig::All => sip_firewall_common::BanScope::All,
        BanScopeConfig::SipPorts => sip_firewall_common::BanScope::SipPorts,
    };
    let xdp_config = sip_firewall_common::XdpConfig {
        max_payload: x.max_payload,
        ban_scope: scope as u32,
        ..Default::default()
    }
    .with_flood(x.flood_rate, x.flood_burst, x.ban_time.as_nanos() as u64);
    fp.maps.set_config(&xdp_config)?;
    fp.maps.set_sip_ports(&x.sip_ports)?;
    for net in &config.policy.allow {
        fp.maps.allow_add(net)?;
    }
    for net in &config.policy.deny {
        fp.maps.deny_add(net)?;
    }
    for iface in &x.interfaces {
        fp.attach(iface, x.mode)?;
    }
    Ok(fp)
}

/// Run until SIGINT or SIGTERM.
pub async fn run(config: Config) -> anyhow::Result<()> {
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let metrics = Arc::new(Metrics::new());

    let mut fast_path = if config.xdp.mode == XdpMode::Off {
        warn!("XDP fast path off (--xdp-mode off): every check runs in user space");
        None
    } else if config.xdp.interfaces.is_empty() {
        warn!("no interface to attach XDP to (--iface): every check runs in user space");
        None
    } else {
        Some(start_fast_path(&config)?)
    };

    let mut tasks = tokio::task::JoinSet::new();
    if let Some(ring) = fast_path.as_mut().and_then(FastPath::take_ban_events) {
        let rx = shutdown_rx.clone();
        tasks.spawn(async move {
            events::watch(ring, rx, |ban| {
                info!(ip = %ban.ip, reason = ?ban.reason, "XDP banned a source");
            })
            .await
            .context("reading XDP ban events")
        });
    }

    // The stateful proxy and registrar behind the SIP listeners, and its timers.
    let proxy = Arc::new(crate::proxy::Proxy::new(
        &config,
        Some(metrics.registry()),
        Arc::new(crate::proxy::NoObserver),
    )?);
    let server = SipServer::bind_with_handler(&config.sip, metrics.clone(), proxy.clone()).await?;
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

    info!(
        listen = ?config.sip.listen,
        xdp = ?fast_path.as_ref().map(|f| f.attachments()),
        "sip-firewall running"
    );

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
    drop(fast_path);
    match failure {
        Some(e) => Err(e),
        None => Ok(()),
    }
}
