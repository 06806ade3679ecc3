//! Serving the admin API on a Unix socket.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use sip_firewall_common::Reason;
use tokio::{
    io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader},
    net::{UnixListener, UnixStream},
    sync::watch,
};
use tracing::{debug, info, warn};

use super::protocol::{BanView, Request, Response, Stats, Status};
use crate::{clock::unix_now, enforce::Enforcer, state::List, tap};

/// What `status` reports besides the enforcer's state, and the proxy it manages.
#[derive(Clone)]
pub struct DaemonInfo {
    pub started: Instant,
    pub xdp: Vec<(String, String)>,
    pub sip_listen: Vec<String>,
    /// The proxy, whose subscribers `user add|del|list` change.
    pub proxy: Option<Arc<crate::proxy::Proxy>>,
    /// The metrics, whose samples `top` shows.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
    /// Re-reads the config (`reload`).
    pub reloader: Option<Arc<crate::reload::Reloader>>,
    /// The threat feeds' status (`feeds`).
    pub feeds: Option<crate::feeds::Statuses>,
    /// `[cluster]`: where subscriber changes go to the other nodes, and what `status` shows.
    pub cluster: Option<(
        crate::cluster::outbox::Outbox,
        Arc<std::sync::Mutex<crate::cluster::ClusterView>>,
    )>,
    /// The TCP connection slots and the user-space gate (`why`).
    pub slots: Option<Arc<crate::server::slots::TcpSlots>>,
    pub gate: Option<Arc<crate::enforce::gate::UserGate>>,
}

/// A request that takes longer than this is cut off (a stuck client must not pile up tasks).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// What `answer` says of the requests `handle` and `answer` take before the match.
const ANSWERED: &str = "internal: answered above";
/// Largest request line accepted.
const MAX_REQUEST: usize = 64 * 1024;

/// Bind the socket: its directory is created, a stale socket replaced, the mode set to 0600.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create {} for the admin socket", dir.display()))?;
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => anyhow::bail!(
            "another sip-firewall is running (its admin socket {} answers); stop it first",
            path.display()
        ),
        Err(_) => {
            let _ = std::fs::remove_file(path);
        }
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("cannot bind the admin socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot restrict {} to mode 0600", path.display()))?;
    Ok(listener)
}

/// Serve until `shutdown`; the socket file is removed on the way out.
pub async fn serve(
    listener: UnixListener,
    path: PathBuf,
    enforcer: Arc<Mutex<Enforcer>>,
    info: DaemonInfo,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    info!(socket = %path.display(), "admin API listening");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => { warn!("admin accept: {e}"); continue; }
                };
                let (enforcer, info, stop) = (enforcer.clone(), info.clone(), shutdown.clone());
                tokio::spawn(async move {
                    if let Err(e) = handle(stream, &enforcer, &info, stop).await {
                        debug!("admin connection: {e:#}");
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    let _ = std::fs::remove_file(&path);
    Ok(())
}

/// One connection: its request read and answered within [`REQUEST_TIMEOUT`]; a capture
/// then streams until it ends (`tap::stream`).
async fn handle(
    stream: UnixStream,
    enforcer: &Mutex<Enforcer>,
    info: &DaemonInfo,
    shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64));
    tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| anyhow::anyhow!("timed out"))??;
    let response = match serde_json::from_str::<Request>(line.trim()) {
        Ok(Request::Capture { filter }) => {
            debug!(?filter, "admin request: capture");
            let limits = (filter.count, filter.duration_ms.map(Duration::from_millis));
            let sub = match tap::subscribe(filter) {
                Ok(sub) => sub,
                Err(e) => {
                    return Ok(tap::write_line(&mut write, &Response::no(e.to_string())).await?);
                }
            };
            tap::write_line(&mut write, &Response::ok(tap::MAX_CAPTURES)).await?;
            return Ok(tap::stream((reader, write), sub, limits, shutdown).await?);
        }
        Ok(req) => {
            debug!(?req, "admin request");
            // The enforcer does blocking database writes: keep them off the async workers.
            let result = tokio::task::block_in_place(|| answer(req, enforcer, info));
            result.unwrap_or_else(|e| Response::no(format!("{e:#}")))
        }
        Err(e) => Response::no(format!("bad request: {e}")),
    };
    let mut out = serde_json::to_vec(&response)?;
    out.push(b'\n');
    tokio::time::timeout(REQUEST_TIMEOUT, async {
        write.write_all(&out).await?;
        write.shutdown().await
    })
    .await
    .map_err(|_| anyhow::anyhow!("timed out"))??;
    Ok(())
}

fn answer(req: Request, enforcer: &Mutex<Enforcer>, info: &DaemonInfo) -> anyhow::Result<Response> {
    if req == Request::Top {
        return top(enforcer, info);
    }
    if req == Request::Reload {
        return Ok(reload(info));
    }
    let mut e = enforcer
        .lock()
        .map_err(|_| anyhow::anyhow!("internal state poisoned"))?;
    Ok(match req {
        Request::Status => status(&e, info),
        Request::Stats => stats(&e),
        Request::Feeds => match &info.feeds {
            Some(f) => Response::ok(f.lock().map(|s| s.clone()).unwrap_or_default()),
            None => Response::ok(Vec::<crate::feeds::FeedStatus>::new()),
        },
        Request::BanAdd {
            ip,
            for_secs,
            reason,
        } => ban_add(&mut e, ip, for_secs, reason)?,
        Request::BanDel { ip } => {
            if e.unban(ip)? {
                info!(%ip, "unbanned by the operator");
                Response::ok(serde_json::json!({ "ip": ip }))
            } else {
                Response::no(format!("{ip} is not banned"))
            }
        }
        Request::BanList => Response::ok(e.bans()?.into_iter().map(view).collect::<Vec<_>>()),
        Request::ListAdd { list, net, force } => {
            if let (false, Err(wide)) = (force, crate::enforce::lists::check(&net)) {
                return Ok(Response::no(format!("{} add: {wide}", list.name())));
            }
            let added = e.list_add(list, &net)?;
            Response::ok(serde_json::json!({ "list": list, "net": net.trunc(), "added": added }))
        }
        Request::ListDel { list, net } if e.is_config_net(list, &net) => Response::no(format!(
            "{} is in [policy] {} of the config file: remove it there and reload",
            net.trunc(),
            list.name()
        )),
        Request::ListDel { list, net } => {
            if e.list_del(list, &net)? {
                Response::ok(serde_json::json!({ "list": list, "net": net.trunc() }))
            } else {
                Response::no(format!(
                    "{} is not on the {} list",
                    net.trunc(),
                    list.name()
                ))
            }
        }
        Request::ListShow { list } => Response::ok(e.list(list)),
        Request::UserAdd { user } => user_add(&e, info, user)?,
        Request::UserDel { user, domain } => user_del(&e, info, user, domain)?,
        Request::UserList => match &info.proxy {
            Some(proxy) => Response::ok(
                proxy
                    .users()
                    .into_iter()
                    .map(|u| serde_json::json!({ "user": u.user, "domain": u.domain }))
                    .collect::<Vec<_>>(),
            ),
            None => Response::no("this daemon runs no proxy"),
        },
        Request::FraudStatus { user } => match &info.proxy {
            Some(proxy) => Response::ok(proxy.fraud_status(user.as_deref())),
            None => Response::no("this daemon runs no proxy"),
        },
        Request::FraudEvents => match &info.proxy {
            Some(proxy) => Response::ok(proxy.fraud_events()),
            None => Response::no("this daemon runs no proxy"),
        },
        Request::FraudUnblock { user } => fraud_unblock(&e, info, user)?,
        Request::Why { ip, port } => why(&e, info, (ip, port))?,
        Request::Top | Request::Reload | Request::Capture { .. } => Response::no(ANSWERED),
    })
}

/// `why`: from the enforcer and the parts of the daemon it reads.
fn why(
    e: &Enforcer,
    info: &DaemonInfo,
    source: (std::net::IpAddr, Option<u16>),
) -> anyhow::Result<Response> {
    let (reloader, slots) = (info.reloader.as_deref(), info.slots.as_deref());
    let (gate, proxy) = (info.gate.as_deref(), info.proxy.as_deref());
    super::why::answer(e, reloader, gate, slots, proxy, source)
}

/// `reload`: the reloader takes the enforcer's lock itself.
fn reload(info: &DaemonInfo) -> Response {
    let Some(reloader) = &info.reloader else {
        return Response::no("this daemon cannot reload");
    };
    match reloader.reload() {
        Ok(report) => {
            info!(applied = ?report.applied, restart_needed = ?report.restart_needed, "config reloaded");
            Response::ok(report)
        }
        Err(e) => {
            warn!("reload refused, the running config stays: {e}");
            Response::no(format!("reload refused, the running config stays: {e}"))
        }
    }
}

/// `status`: the daemon, where the policy is enforced, bans, lists, calls, the cluster.
fn status(e: &Enforcer, info: &DaemonInfo) -> Response {
    let fraud = info
        .proxy
        .as_ref()
        .map(|p| p.fraud_status(None))
        .unwrap_or_default();
    Response::ok(Status {
        version: env!("CARGO_PKG_VERSION").to_string(),
        pid: std::process::id(),
        uptime_secs: info.started.elapsed().as_secs(),
        xdp: info.xdp.clone(),
        enforcement: if e.has_fast_path() {
            "xdp"
        } else {
            "userspace"
        }
        .to_string(),
        sip_listen: info.sip_listen.clone(),
        bans_active: e.bans_active(),
        allow_entries: e.list(List::Allow).len(),
        deny_entries: e.list(List::Deny).len(),
        calls_active: usize::try_from(fraud.calls_active).unwrap_or(usize::MAX),
        fraud_suspended: fraud.suspended.len(),
        relayed_registrations: info.proxy.as_ref().map_or(0, |p| p.relayed_flows()),
        calls_by_account: fraud
            .accounts
            .iter()
            .filter(|a| a.calls_active > 0)
            .map(|a| (a.account.clone(), a.calls_active))
            .collect(),
        calls_by_peer: fraud.calls_by_peer,
        cluster: info
            .cluster
            .as_ref()
            .and_then(|(_, v)| v.lock().ok().map(|v| v.clone())),
        connections: crate::metrics::connections_open()
            .into_iter()
            .map(|(t, n)| (t.to_string(), n))
            .collect(),
    })
}

/// `stats`: the XDP counters and the bans made.
fn stats(e: &Enforcer) -> Response {
    let xdp = e
        .xdp_counters()
        .map(|c| {
            Reason::ALL
                .iter()
                .map(|r| {
                    (
                        r.name().to_string(),
                        c[*r as usize].packets,
                        c[*r as usize].bytes,
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let mut made: Vec<(String, u64)> = e.bans_made().iter().map(|(k, v)| (k.clone(), *v)).collect();
    made.sort();
    Response::ok(Stats {
        xdp,
        bans_active: e.bans_active(),
        bans_made: made,
    })
}

/// `ban add`: an operator's ban is manual, whatever the reason says.
fn ban_add(
    e: &mut Enforcer,
    ip: std::net::IpAddr,
    for_secs: Option<u64>,
    reason: Option<String>,
) -> anyhow::Result<Response> {
    let reason = reason.unwrap_or_else(|| "manual".to_string());
    let reason = if reason.starts_with("manual") {
        reason
    } else {
        format!("manual: {reason}")
    };
    let rec = e.ban(ip, for_secs.map(Duration::from_secs), &reason)?;
    info!(%ip, reason = rec.reason, "banned by the operator");
    Ok(Response::ok(view(rec)))
}

/// `user add`: stored first (acknowledged means it survives a restart), then live and
/// shared with the cluster.
fn user_add(
    e: &Enforcer,
    info: &DaemonInfo,
    user: crate::auth::config::UserEntry,
) -> anyhow::Result<Response> {
    let Some(proxy) = &info.proxy else {
        return Ok(Response::no("this daemon runs no proxy"));
    };
    e.store().put_user(&user)?;
    proxy.add_user(&user);
    if let Some((outbox, _)) = &info.cluster {
        outbox.send(crate::cluster::schema::Op::UserAdd { user: user.clone() });
    }
    info!(user = user.user, domain = user.domain, "subscriber added");
    Ok(Response::ok(
        serde_json::json!({ "user": user.user, "domain": user.domain }),
    ))
}

/// `user del`: from the state, the cluster and the running proxy.
fn user_del(
    e: &Enforcer,
    info: &DaemonInfo,
    user: String,
    domain: String,
) -> anyhow::Result<Response> {
    let Some(proxy) = &info.proxy else {
        return Ok(Response::no("this daemon runs no proxy"));
    };
    let stored = e.store().del_user(&user, &domain)?;
    if let Some((outbox, _)) = &info.cluster {
        outbox.send(crate::cluster::schema::Op::UserDel {
            user: user.clone(),
            domain: domain.clone(),
        });
    }
    Ok(if proxy.remove_user(&user, &domain) || stored {
        info!(user, domain, "subscriber removed");
        Response::ok(serde_json::json!({ "user": user, "domain": domain }))
    } else {
        Response::no(format!("{user}@{domain} is not a subscriber"))
    })
}

/// `fraud unblock`: lifted in the proxy and in the state database (a suspension only stored,
/// none in memory, too).
fn fraud_unblock(e: &Enforcer, info: &DaemonInfo, user: String) -> anyhow::Result<Response> {
    let Some(proxy) = &info.proxy else {
        return Ok(Response::no("this daemon runs no proxy"));
    };
    let lifted = proxy.fraud_unblock(&user);
    // A suspension only in the database (none in memory) is lifted too.
    let mut stored = false;
    for k in &lifted {
        stored |= e.store().del_suspension(k)?;
    }
    if !user.contains('@') {
        for s in e.store().suspensions()? {
            if s.account.split_once('@').is_some_and(|(u, _)| u == user) {
                stored |= e.store().del_suspension(&s.account)?;
            }
        }
    } else {
        stored |= e.store().del_suspension(&user)?;
    }
    Ok(if lifted.is_empty() && !stored {
        Response::no(format!("{user} is not suspended"))
    } else {
        info!(user, ?lifted, "fraud suspension lifted by the operator");
        Response::ok(serde_json::json!({ "user": user, "lifted": lifted }))
    })
}

/// The `top` answer. The samples come first, without the enforcer's lock: rendering the
/// metrics runs refreshers that take it.
fn top(enforcer: &Mutex<Enforcer>, info: &DaemonInfo) -> anyhow::Result<Response> {
    let samples = info
        .metrics
        .as_ref()
        .map(|m| crate::metrics::samples(&m.render()).collect())
        .unwrap_or_default();
    let status = match answer(Request::Status, enforcer, info)? {
        Response { ok: true, data, .. } => serde_json::from_value(data)?,
        Response { error, .. } => anyhow::bail!("{}", error.unwrap_or_default()),
    };
    let stats = match answer(Request::Stats, enforcer, info)? {
        Response { ok: true, data, .. } => serde_json::from_value(data)?,
        Response { error, .. } => anyhow::bail!("{}", error.unwrap_or_default()),
    };
    let now = unix_now();
    let mut recent: Vec<BanView> = enforcer
        .lock()
        .map_err(|_| anyhow::anyhow!("internal state poisoned"))?
        .bans()?
        .into_iter()
        .filter(|b| b.created_unix + 60 >= now)
        .map(view)
        .collect();
    recent.sort_by_key(|b| std::cmp::Reverse(b.ban.created_unix));
    let recent_bans_total = recent.len();
    recent.truncate(super::protocol::TOP_BANS);
    Ok(Response::ok(super::protocol::TopView {
        status,
        stats,
        recent_bans: recent,
        recent_bans_total,
        samples,
    }))
}

fn view(ban: crate::state::BanRecord) -> BanView {
    let remaining_secs = ban.expires_unix.map(|t| t.saturating_sub(unix_now()));
    BanView {
        ban,
        remaining_secs,
    }
}
