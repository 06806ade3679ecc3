//! `sip-firewall fraud status [USER] | unblock USER | events`.

use std::process::ExitCode;

use clap::Subcommand;

use super::{
    commands::{Common, ask, decode, table},
    protocol::Request,
};
use crate::fraud::{Event, Status};

#[derive(Debug, Subcommand)]
pub enum FraudCmd {
    /// Counters per account and rule, calls in progress, suspended accounts.
    Status {
        /// `user@domain`, or `user` in every domain.
        user: Option<String>,
    },
    /// Lift the suspension of an account.
    Unblock { user: String },
    /// The last warnings, critical thresholds and unusual sources.
    Events,
}

fn when(unix: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix))
        .to_string()
}

/// `fraud status`: calls, the accounts with their rules' counters, suspensions.
fn status_text(s: &Status) -> String {
    let mut out = format!("calls active: {}\n", s.calls_active);
    for (p, n) in &s.calls_by_peer {
        out.push_str(&format!("calls with peer {p}: {n}\n"));
    }
    out.push('\n');
    let mut rows = Vec::new();
    for a in &s.accounts {
        let state = if a.suspended { "SUSPENDED" } else { "ok" };
        if a.rules.is_empty() {
            rows.push(vec![
                a.account.clone(),
                state.into(),
                a.calls_active.to_string(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
        }
        for r in &a.rules {
            rows.push(vec![
                a.account.clone(),
                state.into(),
                a.calls_active.to_string(),
                r.prefix.clone(),
                r.calls_last_minute.to_string(),
                r.concurrent.to_string(),
                r.sequential.to_string(),
                r.total_today.to_string(),
            ]);
        }
    }
    out.push_str(&table(
        &[
            "account",
            "state",
            "calls",
            "rule",
            "per min",
            "concurrent",
            "sequential",
            "today",
        ],
        &rows,
    ));
    if !s.suspended.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &["suspended account", "since", "reason"],
            &s.suspended
                .iter()
                .map(|x| vec![x.account.clone(), when(x.since_unix), x.reason.clone()])
                .collect::<Vec<_>>(),
        ));
    }
    out
}

pub fn run(cmd: FraudCmd, common: &Common) -> ExitCode {
    match cmd {
        FraudCmd::Status { user } => ask(common, Request::FraudStatus { user }, |d| {
            Ok(status_text(&decode(d)?))
        }),
        FraudCmd::Unblock { user } => ask(common, Request::FraudUnblock { user }, |d| {
            Ok(format!(
                "unblocked {}\n",
                d["lifted"]
                    .as_array()
                    .map(|l| l
                        .iter()
                        .filter_map(|v| v.as_str())
                        .collect::<Vec<_>>()
                        .join(", "))
                    .filter(|s| !s.is_empty())
                    .unwrap_or_else(|| d["user"].as_str().unwrap_or_default().to_string())
            ))
        }),
        FraudCmd::Events => ask(common, Request::FraudEvents, |d| {
            let ev: Vec<Event> = decode(d)?;
            Ok(table(
                &[
                    "time",
                    "account",
                    "event",
                    "measure",
                    "rule",
                    "value",
                    "threshold",
                ],
                &ev.iter()
                    .map(|e| {
                        vec![
                            when(e.unix),
                            e.account.clone(),
                            e.kind.clone(),
                            e.measure.clone(),
                            e.rule.clone().unwrap_or_else(|| "-".into()),
                            e.value.to_string(),
                            e.threshold.to_string(),
                        ]
                    })
                    .collect::<Vec<_>>(),
            ))
        }),
    }
}
