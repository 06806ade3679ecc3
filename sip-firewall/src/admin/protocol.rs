//! Requests and responses of the admin API, as JSON.

use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::{
    auth::config::UserEntry,
    state::{BanRecord, List},
};

/// What the CLI asks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    Status,
    Stats,
    /// The threat feeds' status (`feeds::FeedStatus`).
    Feeds,
    BanAdd {
        ip: IpAddr,
        /// Seconds; `None` until unbanned.
        for_secs: Option<u64>,
        reason: Option<String>,
    },
    BanDel {
        ip: IpAddr,
    },
    BanList,
    ListAdd {
        list: List,
        net: IpNet,
        /// Take a prefix wider than the lists' bound (`enforce::lists::check`).
        #[serde(default)]
        force: bool,
    },
    ListDel {
        list: List,
        net: IpNet,
    },
    ListShow {
        list: List,
    },
    /// Add or replace a subscriber (hashes only travel).
    UserAdd {
        user: UserEntry,
    },
    UserDel {
        user: String,
        domain: String,
    },
    UserList,
    /// Everything `sip-firewall top` shows, in one answer.
    Top,
    /// The toll-fraud guard's counters (one user, or all).
    FraudStatus {
        #[serde(default)]
        user: Option<String>,
    },
    /// Lift a fraud suspension.
    FraudUnblock {
        user: String,
    },
    /// The guard's last warnings.
    FraudEvents,
    /// Re-read the config file and apply what changed.
    Reload,
    /// Every reason the edge would drop or throttle this source now.
    Why {
        ip: IpAddr,
        /// The source port: narrows the registrations looked at to that flow.
        #[serde(default)]
        port: Option<u16>,
    },
    /// Stream copies of what the gate refused and the message layer answered
    /// (`sip-firewall capture --layer gate`): an answer line, then `tap::record::TapLine`s.
    Capture {
        filter: crate::tap::TapFilter,
    },
}

/// The daemon's answer: `ok` with data, or the reason it said no.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Response {
    pub fn ok(data: impl Serialize) -> Response {
        Response {
            ok: true,
            error: None,
            data: serde_json::to_value(data).unwrap_or(serde_json::Value::Null),
        }
    }

    pub fn no(error: impl Into<String>) -> Response {
        Response {
            ok: false,
            error: Some(error.into()),
            data: serde_json::Value::Null,
        }
    }
}

/// `status`: what runs and where.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub pid: u32,
    pub uptime_secs: u64,
    /// Interfaces with the XDP program, and their mode.
    pub xdp: Vec<(String, String)>,
    /// Where the policy is enforced: `xdp` or `userspace`.
    pub enforcement: String,
    pub sip_listen: Vec<String>,
    pub bans_active: usize,
    pub allow_entries: usize,
    pub deny_entries: usize,
    /// Calls in progress through the edge (fraud guard's dialog tracking).
    #[serde(default)]
    pub calls_active: usize,
    /// Accounts suspended by the fraud guard.
    #[serde(default)]
    pub fraud_suspended: usize,
    /// `[registrar] mode = "relay"`: the phones' flows the operator's registrar registered.
    #[serde(default)]
    pub relayed_registrations: usize,
    /// Calls in progress per trunk peer and per account (those with calls).
    #[serde(default)]
    pub calls_by_peer: Vec<(String, u64)>,
    #[serde(default)]
    pub calls_by_account: Vec<(String, u64)>,
    /// `[cluster]`: this node, whether Redis is reachable, the nodes seen recently.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::ClusterView>,
    /// Stream connections being served, by transport (tcp, tls, ws, wss).
    #[serde(default)]
    pub connections: Vec<(String, i64)>,
}

/// `stats`: the XDP counters (when attached) and ban counts.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Stats {
    /// (reason, packets, bytes), summed over CPUs.
    pub xdp: Vec<(String, u64, u64)>,
    pub bans_active: usize,
    /// (kind, bans made since start).
    pub bans_made: Vec<(String, u64)>,
}

/// `top`: status, counters, the bans of the last minute, and every metric sample (the view
/// computes rates from two answers).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TopView {
    pub status: Status,
    pub stats: Stats,
    /// Bans made in the last minute, newest first (at most [`TOP_BANS`]).
    pub recent_bans: Vec<BanView>,
    /// Bans made in the last minute, all of them.
    pub recent_bans_total: usize,
    /// `name{labels}` and value of every sample of the metrics endpoint.
    pub samples: Vec<(String, f64)>,
}

/// Recent bans a `top` answer carries.
pub const TOP_BANS: usize = 20;

/// `why`: the source and the findings of every check, in the order they decide.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WhyView {
    pub source: String,
    /// `pass` (allow-listed), `drop`, `throttle`, or `nothing` (no check drops it now).
    pub verdict: String,
    pub findings: Vec<crate::enforce::why::Finding>,
}

/// A ban as listed: the record plus the seconds left (`None`: permanent).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BanView {
    #[serde(flatten)]
    pub ban: BanRecord,
    pub remaining_secs: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_tagged_json() {
        let r = Request::BanAdd {
            ip: "192.0.2.1".parse().unwrap(),
            for_secs: Some(3600),
            reason: Some("test".into()),
        };
        let j = serde_json::to_string(&r).unwrap();
        assert!(j.contains(r#""cmd":"ban_add""#), "{j}");
        assert_eq!(serde_json::from_str::<Request>(&j).unwrap(), r);
        let l = Request::ListAdd {
            list: List::Deny,
            net: "2001:db8::/32".parse().unwrap(),
            force: false,
        };
        let j = serde_json::to_string(&l).unwrap();
        assert!(j.contains(r#""list":"deny""#), "{j}");
    }
}
