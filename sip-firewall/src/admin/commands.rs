//! The CLI's admin commands: parse, ask the daemon, print a table or JSON.
//!
//! Exit codes: 0 done, 1 the daemon said no (or is not running), 2 usage (clap).

use std::{net::IpAddr, path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Subcommand};
use ipnet::IpNet;

use super::{
    client,
    protocol::{BanView, Request, Response, Stats, Status},
};
use crate::state::List;

/// Options every admin command takes.
#[derive(Debug, Clone, Args)]
pub struct Common {
    /// The daemon's admin socket (default: `[admin] socket` of the config, else
    /// /run/sip-firewall/admin.sock).
    #[arg(long, global = true)]
    pub socket: Option<PathBuf>,
    /// Config file to read the socket path from.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum BanCmd {
    /// Ban an address (all traffic, or the SIP ports with ban_scope = "sip-ports").
    Add {
        ip: IpAddr,
        /// How long: 30s, 10m, 1h, 7d (default: until unbanned).
        #[arg(long = "for", value_parser = humantime::parse_duration)]
        duration: Option<Duration>,
        /// Why, for the list and the logs.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Lift a ban.
    Del { ip: IpAddr },
    /// List live bans.
    List,
}

#[derive(Debug, Subcommand)]
pub enum ListCmd {
    /// Add a prefix (an address alone is a /32 or /128).
    Add {
        #[arg(value_parser = parse_net)]
        net: IpNet,
        /// Take a prefix wider than IPv4 /8 or IPv6 /32 (refused otherwise: one such entry
        /// passes or drops a large part of the Internet). The other nodes of a cluster still
        /// refuse it: it stays on this node.
        #[arg(long)]
        force: bool,
    },
    /// Remove a prefix.
    Del {
        #[arg(value_parser = parse_net)]
        net: IpNet,
    },
    /// Show the list.
    List,
}

/// A prefix, or an address as a host prefix.
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            format!("{s:?} is not an address or a prefix like 192.0.2.0/24 or 2001:db8::/32")
        })
}

/// The socket to talk to.
pub fn socket(common: &Common) -> PathBuf {
    if let Some(s) = &common.socket {
        return s.clone();
    }
    match crate::config::Config::load(common.config.as_deref()) {
        Ok(c) => c.admin.socket,
        Err(_) => PathBuf::from(crate::config::DEFAULT_SOCKET),
    }
}

/// Ask, and print the answer with `show` (or as JSON).
pub(crate) fn ask(
    common: &Common,
    req: Request,
    show: impl FnOnce(&serde_json::Value) -> Result<String, String>,
) -> ExitCode {
    let path = socket(common);
    match client::call(&path, &req) {
        Err(e) => {
            eprintln!("sip-firewall: {e}");
            ExitCode::from(1)
        }
        Ok(Response {
            ok: false, error, ..
        }) => {
            eprintln!(
                "sip-firewall: the daemon said no: {}",
                error.unwrap_or_default()
            );
            ExitCode::from(1)
        }
        Ok(Response { data, .. }) => {
            if common.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&data).unwrap_or_default()
                );
                return ExitCode::SUCCESS;
            }
            match show(&data) {
                Ok(text) => {
                    print!("{text}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!(
                        "sip-firewall: unreadable answer from {}: {e}",
                        path.display()
                    );
                    ExitCode::from(1)
                }
            }
        }
    }
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(v: &serde_json::Value) -> Result<T, String> {
    serde_json::from_value(v.clone()).map_err(|e| e.to_string())
}

/// `user` commands: ask the daemon; for `add` a daemon that is not running is fine (the
/// printed line is the way to add the subscriber then).
pub fn ask_user(common: &Common, req: Request, optional: bool) -> ExitCode {
    if optional
        && matches!(
            client::call(&socket(common), &Request::Status),
            Err(client::ClientError::NotRunning(_))
        )
    {
        eprintln!("sip-firewall: no daemon running: add the line above to the config");
        return ExitCode::SUCCESS;
    }
    let listing = matches!(req, Request::UserList);
    ask(common, req, |d| {
        if listing {
            let users: Vec<serde_json::Value> = decode(d)?;
            let rows: Vec<Vec<String>> = users
                .iter()
                .map(|u| {
                    vec![
                        u["user"].as_str().unwrap_or_default().to_string(),
                        u["domain"].as_str().unwrap_or_default().to_string(),
                    ]
                })
                .collect();
            Ok(table(&["user", "domain"], &rows))
        } else {
            Ok(format!(
                "done: {}@{}\n",
                d["user"].as_str().unwrap_or_default(),
                d["domain"].as_str().unwrap_or_default()
            ))
        }
    })
}

/// Columns padded to their widest cell.
pub fn table(head: &[&str], rows: &[Vec<String>]) -> String {
    let mut width: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = cells
            .iter()
            .zip(&width)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ");
        s.truncate(s.trim_end().len());
        s.push('\n');
        s
    };
    let mut out = line(head.to_vec());
    for r in rows {
        out.push_str(&line(r.iter().map(String::as_str).collect()));
    }
    out
}

fn human(secs: Option<u64>) -> String {
    match secs {
        None => "permanent".to_string(),
        Some(s) => humantime::format_duration(Duration::from_secs(s)).to_string(),
    }
}

pub fn status(common: &Common) -> ExitCode {
    ask(common, Request::Status, |d| {
        let s: Status = decode(d)?;
        let xdp = if s.xdp.is_empty() {
            "not attached".to_string()
        } else {
            s.xdp
                .iter()
                .map(|(i, m)| format!("{i} ({m})"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        // Calls per trunk peer and per account: a table of their own (long names would
        // widen the first column).
        let mut calls: Vec<Vec<String>> = s
            .calls_by_peer
            .iter()
            .map(|(p, n)| vec![format!("peer {p}"), n.to_string()])
            .collect();
        calls.extend(
            s.calls_by_account
                .iter()
                .map(|(a, n)| vec![a.clone(), n.to_string()]),
        );
        let mut rows = vec![
            vec!["version".into(), s.version],
            vec!["pid".into(), s.pid.to_string()],
            vec!["uptime".into(), human(Some(s.uptime_secs))],
            vec!["xdp".into(), xdp],
            vec!["enforcement".into(), s.enforcement],
            vec!["sip listen".into(), s.sip_listen.join(", ")],
            vec!["bans active".into(), s.bans_active.to_string()],
            vec!["allow entries".into(), s.allow_entries.to_string()],
            vec!["deny entries".into(), s.deny_entries.to_string()],
            vec!["calls active".into(), s.calls_active.to_string()],
            vec!["fraud blocked".into(), s.fraud_suspended.to_string()],
            vec![
                "relayed registrations".into(),
                s.relayed_registrations.to_string(),
            ],
            vec![
                "connections".into(),
                s.connections
                    .iter()
                    .map(|(t, n)| format!("{t} {n}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            ],
        ];
        if let Some(c) = &s.cluster {
            rows.push(vec!["cluster node".into(), c.node.clone()]);
            rows.push(vec![
                "cluster redis".into(),
                if c.connected {
                    format!("connected ({})", c.redis)
                } else {
                    "unreachable: enforcing local state".into()
                },
            ]);
            rows.push(vec!["cluster nodes".into(), c.nodes.join(", ")]);
        }
        let mut out = table(&["field", "value"], &rows);
        if !calls.is_empty() {
            out.push('\n');
            out.push_str(&table(&["calls of", "in progress"], &calls));
        }
        Ok(out)
    })
}

pub fn feeds(common: &Common) -> ExitCode {
    ask(common, Request::Feeds, |d| {
        let feeds: Vec<crate::feeds::FeedStatus> = decode(d)?;
        if feeds.is_empty() {
            return Ok("no feeds ([[feeds]] in the config)\n".to_string());
        }
        let mut out = String::new();
        for f in feeds {
            let last = match (f.outcome.last_ok_unix, &f.outcome.last_error) {
                (_, Some(e)) => format!("FAILED: {e} (the last good entries stay)"),
                (Some(t), None) => format!("ok, loaded at {t} (unix)"),
                (None, None) => "not loaded yet".to_string(),
            };
            let mut rows = vec![
                vec!["url".to_string(), f.url.clone()],
                vec!["last load".to_string(), last],
            ];
            if let Some(source) = &f.source {
                rows.push(vec!["source".to_string(), source.clone()]);
            }
            rows.extend(
                f.entries
                    .iter()
                    .map(|(k, n)| vec![format!("entries {k}"), n.to_string()]),
            );
            rows.extend(
                f.refused
                    .iter()
                    .map(|(n, why)| vec![format!("refused {n}"), why.clone()]),
            );
            let title = format!("feed {}", f.name);
            out.push_str(&table(&[title.as_str(), ""], &rows));
            out.push('\n');
        }
        Ok(out)
    })
}

pub fn stats(common: &Common) -> ExitCode {
    ask(common, Request::Stats, |d| {
        let s: Stats = decode(d)?;
        let mut out = if s.xdp.is_empty() {
            "xdp: not attached\n".to_string()
        } else {
            table(
                &["xdp verdict", "packets", "bytes"],
                &s.xdp
                    .iter()
                    .map(|(r, p, b)| vec![r.clone(), p.to_string(), b.to_string()])
                    .collect::<Vec<_>>(),
            )
        };
        out.push('\n');
        let mut rows = vec![vec!["active".to_string(), s.bans_active.to_string()]];
        rows.extend(
            s.bans_made
                .iter()
                .map(|(k, n)| vec![format!("made: {k}"), n.to_string()]),
        );
        out.push_str(&table(&["bans", "count"], &rows));
        Ok(out)
    })
}

/// `reload`: what was applied, and what needs a restart.
pub fn reload(common: &Common) -> ExitCode {
    ask(common, Request::Reload, |d| {
        let r: crate::reload::ReloadReport = decode(d)?;
        let mut out = String::new();
        if r.applied.is_empty() {
            out.push_str("reloaded: nothing to apply\n");
        } else {
            out.push_str("reloaded, applied:\n");
            for a in &r.applied {
                out.push_str(&format!("  {a}\n"));
            }
        }
        if !r.restart_needed.is_empty() {
            out.push_str("changed but needs a restart (still running with the old value):\n");
            for a in &r.restart_needed {
                out.push_str(&format!("  {a}\n"));
            }
        }
        Ok(out)
    })
}

pub fn ban(common: &Common, cmd: BanCmd) -> ExitCode {
    match cmd {
        BanCmd::Add {
            ip,
            duration,
            reason,
        } => ask(
            common,
            Request::BanAdd {
                ip,
                for_secs: duration.map(|d| d.as_secs().max(1)),
                reason,
            },
            |d| {
                let b: BanView = decode(d)?;
                Ok(format!(
                    "banned {} ({}) for {}\n",
                    b.ban.ip,
                    b.ban.reason,
                    human(b.remaining_secs)
                ))
            },
        ),
        BanCmd::Del { ip } => ask(common, Request::BanDel { ip }, |_| {
            Ok(format!("unbanned {ip}\n"))
        }),
        BanCmd::List => ask(common, Request::BanList, |d| {
            let bans: Vec<BanView> = decode(d)?;
            Ok(table(
                &["address", "reason", "remaining"],
                &bans
                    .iter()
                    .map(|b| {
                        vec![
                            b.ban.ip.to_string(),
                            b.ban.reason.clone(),
                            human(b.remaining_secs),
                        ]
                    })
                    .collect::<Vec<_>>(),
            ))
        }),
    }
}

pub fn list(common: &Common, list: List, cmd: ListCmd) -> ExitCode {
    let name = list.name();
    match cmd {
        ListCmd::Add { net, force } => ask(common, Request::ListAdd { list, net, force }, |_| {
            Ok(format!("added {} to the {name} list\n", net.trunc()))
        }),
        ListCmd::Del { net } => ask(common, Request::ListDel { list, net }, |_| {
            Ok(format!("removed {} from the {name} list\n", net.trunc()))
        }),
        ListCmd::List => ask(common, Request::ListShow { list }, |d| {
            let nets: Vec<IpNet> = decode(d)?;
            Ok(table(
                &[&format!("{name} prefix")],
                &nets.iter().map(|n| vec![n.to_string()]).collect::<Vec<_>>(),
            ))
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(&["a", "bb"], &[vec!["xxx".into(), "y".into()]]);
        assert_eq!(t, "a    bb\nxxx  y\n");
    }

    #[test]
    fn nets_and_hosts() {
        assert_eq!(parse_net("192.0.2.1").unwrap().to_string(), "192.0.2.1/32");
        assert_eq!(
            parse_net("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert!(
            parse_net("example.com")
                .unwrap_err()
                .contains("example.com")
        );
    }
}
