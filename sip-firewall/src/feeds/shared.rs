//! A feed's load as the cluster shares it: the fetching node's entries with their expiry and
//! its status ([`SharedLoad`]), and the [`Exchange`] where the feeds task and the cluster's
//! task meet (which feeds this node fetches now and why, the loads to write, the loads
//! received).
//!
//! **Decides** what a load taken from Redis may put in force here: Redis is an input, so the
//! text is bounded ([`MAX_LOAD_BYTES`]), entries past the feed's `max_entries` are refused and
//! counted, items that are not a prefix with an expiry are counted as invalid, and no entry
//! lives past this node's `expire_after` from now whatever the record says. The entries then
//! go through this node's own vetting (`enforce::feeds`), as a fetched load's do.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use super::config::{FeedConfig, MAX_ENTRIES};

/// The most bytes of a shared load read from Redis: [`MAX_ENTRIES`] of the longest entry
/// (an IPv6 prefix and its expiry) and the status around them.
pub const MAX_LOAD_BYTES: usize = MAX_ENTRIES * 64 + 8192;
/// The longest error text or node name kept from a shared load.
const MAX_TEXT: usize = 512;

/// How a feed's loads went, as its status shows it and as the fetching node shares it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct LoadOutcome {
    /// Unix seconds of the last good load.
    pub last_ok_unix: Option<u64>,
    /// Why the last load failed, when it did (the entries of the last good one stay).
    pub last_error: Option<String>,
}

/// A feed's good load as the fetching node writes it to Redis.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct SharedLoad {
    /// The node that fetched it.
    pub node: String,
    /// When the node last tried a fetch (unix seconds): a node taking the fetching over
    /// fetches again one `refresh` after it.
    pub fetched_unix: u64,
    /// The fetching node's last good load and last failure (the entries are the last good
    /// load's).
    #[serde(flatten)]
    pub outcome: LoadOutcome,
    /// Items of the last good load that were not addresses.
    pub invalid: usize,
    /// The entries, each with until when it lives (unix seconds), sorted.
    pub entries: Vec<(IpNet, u64)>,
}

/// A shared load as this node takes it.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Taken {
    pub load: SharedLoad,
    /// Items of the record that were not a prefix with an expiry.
    pub malformed: usize,
    /// Entries past the feed's `max_entries`, refused.
    pub over: usize,
}

/// Why a record is not a shared load at all (the entries this node has stay).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SharedError {
    #[error("larger than {MAX_LOAD_BYTES} bytes")]
    Oversize,
    #[error("not a shared feed load: {0}")]
    Malformed(String),
}

/// The record as read, before its items are checked one by one.
#[derive(Deserialize)]
struct Raw {
    node: String,
    fetched_unix: u64,
    #[serde(flatten)]
    outcome: LoadOutcome,
    invalid: usize,
    entries: Vec<serde_json::Value>,
}

impl SharedLoad {
    /// The record written to Redis.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A record read from Redis for `cfg`'s feed, taken as hostile input (module doc).
    pub fn decode(text: &str, cfg: &FeedConfig, now_unix: u64) -> Result<Taken, SharedError> {
        if text.len() > MAX_LOAD_BYTES {
            return Err(SharedError::Oversize);
        }
        let raw: Raw =
            serde_json::from_str(text).map_err(|e| SharedError::Malformed(e.to_string()))?;
        let latest = now_unix.saturating_add(cfg.expire_after.as_secs());
        let mut taken = Taken::default();
        let mut seen = std::collections::HashSet::new();
        for item in raw.entries {
            let Ok((net, until)) = serde_json::from_value::<(IpNet, u64)>(item) else {
                taken.malformed += 1;
                continue;
            };
            let net = net.trunc();
            if until <= now_unix || !seen.insert(net) {
                continue;
            }
            if taken.load.entries.len() >= cfg.max_entries {
                taken.over += 1;
                continue;
            }
            taken.load.entries.push((net, until.min(latest)));
        }
        taken.load.node = clip(raw.node);
        taken.load.fetched_unix = raw.fetched_unix.min(now_unix);
        taken.load.outcome = LoadOutcome {
            last_ok_unix: raw.outcome.last_ok_unix.map(|t| t.min(now_unix)),
            last_error: raw.outcome.last_error.map(clip),
        };
        taken.load.invalid = raw.invalid.min(MAX_ENTRIES);
        Ok(taken)
    }
}

fn clip(mut s: String) -> String {
    if s.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// Wait for `ready` (one of an [`Exchange`]'s signals); with no exchange, forever.
pub async fn ready(ready: Option<&tokio::sync::Notify>) {
    match ready {
        Some(n) => n.notified().await,
        None => std::future::pending().await,
    }
}

/// Where the feeds task and the cluster's task meet (`[cluster]` with `share` holding
/// `feeds`).
pub struct Exchange {
    /// Per feed, until when this node holds its fetching lease.
    held: Mutex<HashMap<String, Instant>>,
    /// Since when this node is cut off from the cluster (from its start until it first
    /// connects); `None`: connected.
    cut_off: Mutex<Option<Instant>>,
    /// Cut off this long, a node fetches every feed itself: by then no lease of its own is
    /// live, and a node that cannot reach Redis must not go without feeds (as after a
    /// restart during an outage, feed entries not being kept across one).
    alone_after: Duration,
    /// Redis refuses the leases (answers, but not the script): this node fetches alone.
    no_lease: std::sync::atomic::AtomicBool,
    /// Per feed, the latest load this node fetched and has not written yet.
    outgoing: Mutex<HashMap<String, SharedLoad>>,
    /// Per feed, the latest record received and when (unix seconds).
    incoming: Mutex<HashMap<String, (String, u64)>>,
    /// Rings the cluster's task: a load to write.
    pub out_ready: tokio::sync::Notify,
    /// Rings the feeds task: a load received.
    pub in_ready: tokio::sync::Notify,
}

/// Why this node fetches a feed now, if it does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// It holds the feed's lease: it fetches for the cluster.
    Lease,
    /// Cut off from the cluster for long: it fetches for itself.
    Alone,
}

impl Exchange {
    /// Cut off until it first connects; alone after `alone_after` cut off.
    pub fn new(alone_after: Duration) -> Exchange {
        Exchange {
            held: Mutex::default(),
            cut_off: Mutex::new(Some(Instant::now())),
            alone_after,
            no_lease: std::sync::atomic::AtomicBool::new(false),
            outgoing: Mutex::default(),
            incoming: Mutex::default(),
            out_ready: tokio::sync::Notify::new(),
            in_ready: tokio::sync::Notify::new(),
        }
    }

    /// Whether this node fetches `feed` now, and why.
    pub fn fetches(&self, feed: &str, now: Instant) -> Option<Fetch> {
        if self.holds(feed, now) {
            return Some(Fetch::Lease);
        }
        if self.no_lease.load(std::sync::atomic::Ordering::Relaxed) {
            return Some(Fetch::Alone);
        }
        let since = self.cut_off.lock().ok().and_then(|c| *c)?;
        (now.saturating_duration_since(since) >= self.alone_after).then_some(Fetch::Alone)
    }

    /// Redis refuses the leases (`true`), or takes them again.
    pub fn set_no_lease(&self, on: bool) {
        self.no_lease
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Connected to the cluster, or cut off from it (since now, unless already).
    pub fn set_connected(&self, on: bool) {
        if let Ok(mut c) = self.cut_off.lock() {
            match (on, *c) {
                (true, _) => *c = None,
                (false, None) => *c = Some(Instant::now()),
                (false, Some(_)) => {}
            }
        }
    }

    /// Whether this node holds `feed`'s lease now.
    pub fn holds(&self, feed: &str, now: Instant) -> bool {
        self.held
            .lock()
            .ok()
            .and_then(|h| h.get(feed).copied())
            .is_some_and(|until| until > now)
    }

    /// This node holds `feed`'s lease for `valid` from now (`None`: it does not).
    pub fn set_held(&self, feed: &str, valid: Option<Duration>) {
        if let Ok(mut h) = self.held.lock() {
            match valid {
                Some(v) => h.insert(feed.to_string(), Instant::now() + v),
                None => h.remove(feed),
            };
        }
    }

    /// A load fetched here, for the other nodes.
    pub fn publish(&self, feed: &str, load: SharedLoad) {
        if let Ok(mut o) = self.outgoing.lock() {
            o.insert(feed.to_string(), load);
        }
        self.out_ready.notify_one();
    }

    /// The loads waiting to be written.
    pub fn take_outgoing(&self) -> Vec<(String, SharedLoad)> {
        self.outgoing
            .lock()
            .map(|mut o| o.drain().collect())
            .unwrap_or_default()
    }

    /// Put back a load that could not be written, unless a newer one waits.
    pub fn requeue(&self, feed: String, load: SharedLoad) {
        if let Ok(mut o) = self.outgoing.lock() {
            o.entry(feed).or_insert(load);
        }
    }

    /// A record read from Redis for `feed` (checked by the feeds task).
    pub fn receive(&self, feed: &str, text: String, now_unix: u64) {
        if let Ok(mut i) = self.incoming.lock() {
            i.insert(feed.to_string(), (text, now_unix));
        }
        self.in_ready.notify_one();
    }

    /// The records received since the last call.
    pub fn take_incoming(&self) -> Vec<(String, (String, u64))> {
        self.incoming
            .lock()
            .map(|mut i| i.drain().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(max_entries: usize) -> FeedConfig {
        let mut c: FeedConfig =
            toml::from_str("url = \"file:///f\"\nformat = \"cidr\"\nexpire_after = \"1h\"\n")
                .unwrap();
        c.max_entries = max_entries;
        c
    }

    #[test]
    fn a_load_round_trips() {
        let load = SharedLoad {
            node: "edge-a".into(),
            fetched_unix: 1000,
            outcome: LoadOutcome {
                last_ok_unix: Some(1000),
                last_error: None,
            },
            invalid: 2,
            entries: vec![
                ("192.0.2.0/24".parse().unwrap(), 2000),
                ("2001:db8::1/128".parse().unwrap(), 2000),
            ],
        };
        let taken = SharedLoad::decode(&load.encode(), &cfg(10), 1001).unwrap();
        assert_eq!(taken.load, load);
        assert_eq!((taken.malformed, taken.over), (0, 0));
    }

    #[test]
    fn garbage_is_refused_whole_or_counted_item_by_item() {
        let c = cfg(10);
        assert!(matches!(
            SharedLoad::decode("not json", &c, 0),
            Err(SharedError::Malformed(_))
        ));
        assert!(SharedLoad::decode("{\"entries\": 5}", &c, 0).is_err());
        let text = r#"{"node":"x","fetched_unix":10,"last_ok_unix":10,"last_error":null,
            "invalid":0,"entries":[["192.0.2.1/32",100],"junk",["300.1.1.1/32",100],
            ["192.0.2.9/32",-1],["192.0.2.7/32",5],{"a":1},["192.0.2.1/32",100]]}"#;
        let taken = SharedLoad::decode(text, &c, 10).unwrap();
        assert_eq!(
            taken.load.entries,
            vec![("192.0.2.1/32".parse().unwrap(), 100)]
        );
        // "junk", the bad address, the negative expiry, the object.
        assert_eq!(taken.malformed, 4);
    }

    #[test]
    fn oversize_counts_and_far_expiries_are_bounded() {
        let text = "x".repeat(MAX_LOAD_BYTES + 1);
        assert_eq!(
            SharedLoad::decode(&text, &cfg(10), 0),
            Err(SharedError::Oversize)
        );
        let load = SharedLoad {
            node: "n".repeat(10_000),
            fetched_unix: u64::MAX,
            outcome: LoadOutcome {
                last_ok_unix: None,
                last_error: Some("é".repeat(1000)),
            },
            entries: (0..20u32)
                .map(|i| {
                    (
                        IpNet::from(std::net::IpAddr::from(std::net::Ipv4Addr::from(i + 1))),
                        u64::MAX,
                    )
                })
                .collect(),
            ..SharedLoad::default()
        };
        let taken = SharedLoad::decode(&load.encode(), &cfg(5), 100).unwrap();
        assert_eq!((taken.load.entries.len(), taken.over), (5, 15));
        assert!(taken.load.entries.iter().all(|(_, u)| *u == 100 + 3600));
        assert_eq!(taken.load.fetched_unix, 100);
        assert!(taken.load.node.len() <= MAX_TEXT);
        assert!(taken.load.outcome.last_error.unwrap().len() <= MAX_TEXT);
    }

    #[test]
    fn a_node_fetches_with_the_lease_or_when_long_cut_off() {
        let x = Exchange::new(Duration::from_secs(20));
        let now = Instant::now();
        assert_eq!(x.fetches("f", now), None, "not connected yet, not for long");
        assert_eq!(
            x.fetches("f", now + Duration::from_secs(21)),
            Some(Fetch::Alone),
            "never connected: it fetches itself"
        );
        x.set_connected(true);
        assert_eq!(x.fetches("f", now + Duration::from_secs(21)), None);
        x.set_held("f", Some(Duration::from_secs(10)));
        assert_eq!(x.fetches("f", now), Some(Fetch::Lease));
        assert_eq!(x.fetches("g", now), None, "another feed's lease");
        let lapsed = Instant::now() + Duration::from_secs(11);
        assert_eq!(x.fetches("f", lapsed), None, "the lease lapsed");
        x.set_connected(false);
        let t = Instant::now();
        x.set_connected(false);
        assert_eq!(x.fetches("g", t + Duration::from_secs(19)), None);
        assert_eq!(
            x.fetches("g", t + Duration::from_secs(21)),
            Some(Fetch::Alone),
            "cut off since the first loss, not the last report"
        );
        x.set_held("f", None);
        x.set_connected(true);
        assert_eq!(x.fetches("f", t + Duration::from_secs(60)), None);
        x.set_no_lease(true);
        assert_eq!(
            x.fetches("f", t),
            Some(Fetch::Alone),
            "Redis refuses leases"
        );
        x.set_no_lease(false);
        assert_eq!(x.fetches("f", t), None);
    }
}
