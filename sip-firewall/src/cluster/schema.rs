//! What the cluster stores in Redis and publishes: the key of each kind of record, the
//! events channel, and the change ([`Event`], [`Op`]) every node writes and receives. The
//! layout is in the module doc of [`super`]; how each record is sealed, in [`super::trust`].

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::Share;
use crate::{
    auth::config::UserEntry,
    state::{BanRecord, List},
};

/// One change, as published and as stored under a ban's key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The node that made the change.
    pub node: String,
    /// When it was sent (unix ms): the receivers' lag.
    pub sent_ms: u64,
    pub op: Op,
}

/// What changed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    Ban {
        ban: BanRecord,
    },
    Unban {
        ip: IpAddr,
    },
    ListAdd {
        list: List,
        net: ipnet::IpNet,
    },
    ListDel {
        list: List,
        net: ipnet::IpNet,
    },
    UserAdd {
        user: UserEntry,
    },
    UserDel {
        user: String,
        domain: String,
    },
    Location {
        change: crate::registrar::store::Change,
    },
    /// A threat feed's load was written under [`feed_key`] by the node fetching it.
    FeedLoad {
        feed: String,
    },
}

impl Op {
    /// The metric label.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Ban { .. } => "ban",
            Op::Unban { .. } => "unban",
            Op::ListAdd { .. } => "list_add",
            Op::ListDel { .. } => "list_del",
            Op::UserAdd { .. } => "user_add",
            Op::UserDel { .. } => "user_del",
            Op::Location { .. } => "location",
            Op::FeedLoad { .. } => "feed_load",
        }
    }

    /// What `share = [...]` must hold for this change to go out or be taken.
    pub fn share(&self) -> Share {
        match self {
            Op::Ban { .. } | Op::Unban { .. } => Share::Bans,
            Op::ListAdd { .. } | Op::ListDel { .. } => Share::Lists,
            Op::UserAdd { .. } | Op::UserDel { .. } => Share::Users,
            Op::Location { .. } => Share::Registrations,
            Op::FeedLoad { .. } => Share::Feeds,
        }
    }
}

/// The channel every change is published on.
pub const CHANNEL: &str = "sipfw:events";
/// The fingerprints of the writer's secrets ([`super::trust::Trust::join`]).
pub const FINGERPRINT_KEY: &str = "sipfw:secret-fingerprint";
/// The subscribers: a hash [`user_field`] -> the entry.
pub const USERS_KEY: &str = "sipfw:users";
/// Random, set by the first node that finds Redis without it: changes when Redis lost its
/// data.
pub const EPOCH_KEY: &str = "sipfw:epoch";

/// A ban: the sealed [`Event`] that made it, the key's TTL the ban's time left.
pub fn ban_key(ip: IpAddr) -> String {
    format!("sipfw:ban:{ip}")
}

/// What the full load scans for bans.
pub const BAN_KEYS: &str = "sipfw:ban:*";

/// An allow or deny list: a hash prefix -> the node that added it.
pub fn list_key(list: List) -> String {
    format!("sipfw:list:{}", list.name())
}

/// A subscriber's field in [`USERS_KEY`].
pub fn user_field(user: &str, domain: &str) -> String {
    format!("{user}@{domain}")
}

/// An address of record's bindings: a hash contact -> the binding, the key's TTL the latest
/// expiry.
pub fn location_key(aor: &str) -> String {
    format!("sipfw:loc:{aor}")
}

/// A threat feed's last load, as the node fetching it wrote it (sealed
/// `crate::feeds::shared::SharedLoad`: entries with their expiry, last ok, last error).
pub fn feed_key(feed: &str) -> String {
    format!("sipfw:feed:{feed}")
}

/// Who fetches a threat feed now: the holder's node name, for the lease's time
/// (`super::feeds::LEASE`), renewed by the holder at every heartbeat.
pub fn feed_lease_key(feed: &str) -> String {
    format!("sipfw:feed-lease:{feed}")
}

/// What the full load scans for registrations.
pub const LOCATION_KEYS: &str = "sipfw:loc:*";

/// What a node's heartbeat key starts with; the node's name follows.
pub const NODE_PREFIX: &str = "sipfw:node:";

/// What the heartbeat scans for the nodes alive.
pub const NODE_KEYS: &str = "sipfw:node:*";

/// A node's heartbeat.
pub fn node_key(node: &str) -> String {
    format!("{NODE_PREFIX}{node}")
}

/// Now, in unix milliseconds (an [`Event`]'s `sent_ms`).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let ev = Event {
            node: "edge-a".into(),
            sent_ms: 1,
            op: Op::Ban {
                ban: BanRecord {
                    ip: "192.0.2.1".parse().unwrap(),
                    reason: "scanner: x".into(),
                    created_unix: 5,
                    expires_unix: Some(10),
                },
            },
        };
        let j = serde_json::to_string(&ev).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&j).unwrap(), ev);
    }
}
