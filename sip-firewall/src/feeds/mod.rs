//! Threat feeds (`[[feeds]]`): lists of attacking addresses (APIBan, plain CIDR lists) taken
//! into the deny path, XDP's deny trie and the user-space gate, each entry with its expiry.
//!
//! **Decides** what a feed's entries are now: a good load of a `cidr` feed is the whole list
//! (an entry it lacks is removed at once), an `apiban` load adds; every entry lives until
//! `expire_after` after the last good load that listed it, so a feed that fails keeps its
//! last good entries (and says so: `sip-firewall feeds`, the log, `result="error"`) and an
//! abandoned one empties itself. Which entries may be applied is the enforcer's decision
//! (`enforce::feeds`): never one wider than the lists' bound, never one covering an
//! allow-listed prefix or a known good source, at most `max_entries` a feed.
//!
//! **In a cluster** (`[cluster]`, `share` holding `feeds`): one node fetches each feed, the
//! one holding its lease (`crate::cluster::feeds` decides who), and hands each load to the
//! others through Redis ([`shared`]); they take the entries with their expiry and vet them
//! here as their own (allow-list, trusted peers and known sources are each node's). A node
//! cut off from Redis keeps what it has, and once cut off for longer than a lease it fetches
//! for itself until it is back; `sip-firewall feeds` says where a feed's entries came from
//! (fetched here, fetched here while cut off, or received from which node and when).
//!
//! **Metrics**: `sipfw_feed_entries{feed,state}` (`applied`, `too_wide`, `allow_listed`,
//! `known`, `over_bound`, `invalid`), `sipfw_feed_loads_total{feed,result}` (`ok`, `error`:
//! fetched here; `received`: a load from the cluster taken, `refused`: one that is not a
//! load, its entries kept as they were).

pub mod config;
pub mod fetch;
pub mod parse;
pub mod shared;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

use self::{
    config::{FeedConfig, FeedFormat},
    fetch::Fetcher,
    shared::{Exchange, Fetch, LoadOutcome, SharedLoad},
};
use crate::{
    enforce::{Enforcer, feeds::Refused},
    logging::{RateLimit, Verdict},
};

/// How often entries are vetted again and expired ones removed (between loads too).
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);
/// The refused entries a feed's status lists (the counts are whole).
const REFUSED_SHOWN: usize = 20;

/// What `sip-firewall feeds` shows of one feed.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct FeedStatus {
    pub name: String,
    pub url: String,
    #[serde(flatten)]
    pub outcome: LoadOutcome,
    /// Entries by state (`applied`, `too_wide`, `allow_listed`, `known`, `over_bound`,
    /// `invalid`).
    pub entries: std::collections::BTreeMap<String, u64>,
    /// Some entries not applied: (prefix, why).
    pub refused: Vec<(String, String)>,
    /// In a cluster, where the entries come from: fetched here (for the cluster, or alone
    /// while cut off), or received from a node and when.
    #[serde(default)]
    pub source: Option<String>,
}

/// The feeds' status, shared with the admin API.
pub type Statuses = Arc<Mutex<Vec<FeedStatus>>>;

/// One feed as it runs.
struct Feed {
    cfg: FeedConfig,
    fetcher: Result<Fetcher, String>,
    /// Its entries and until when (unix seconds).
    wanted: HashMap<IpNet, u64>,
    /// Lines of the last good load that were not addresses (and, received, the items of the
    /// shared load that were not entries).
    invalid: usize,
    /// Entries of a received load past `max_entries`, refused before vetting.
    over: usize,
    /// The last fetch, here or by the node a load was received from (unix seconds).
    fetched_unix: u64,
    /// The node the entries were received from and when (unix seconds); `None`: fetched here.
    received: Option<(String, u64)>,
    /// Fetched here while cut off from the cluster, not for it.
    alone: bool,
    next_load: Instant,
    status: FeedStatus,
}

/// The feeds' metrics.
struct FeedMetrics {
    entries: prometheus::IntGaugeVec,
    loads: prometheus::IntCounterVec,
}

impl FeedMetrics {
    fn new(metrics: &crate::metrics::Metrics) -> FeedMetrics {
        let r = crate::metrics::Registrar::new(metrics.registry(), "the feed metrics");
        let entries = r.int_gauge_family(
            "sipfw_feed_entries",
            "Entries of each threat feed by state: applied (in the deny path), or not \
             applied: too_wide, allow_listed, known (covers a known good source), \
             over_bound, invalid",
            &["feed", "state"],
        );
        let loads = r.counter_family(
            "sipfw_feed_loads_total",
            "Loads of each threat feed by result (ok, error: its last good entries stay; in a \
             cluster, received: a load from the node fetching it, refused: not a load)",
            &["feed", "result"],
        );
        FeedMetrics { entries, loads }
    }
}

/// Load every feed when due, keep their entries vetted and in force, until shutdown. With
/// `exchange` (a cluster sharing feeds), a feed is fetched only while this node holds its
/// lease (or is long cut off from the cluster), and the loads of the others are taken.
pub async fn run(
    configs: Vec<FeedConfig>,
    enforcer: Arc<Mutex<Enforcer>>,
    metrics: &crate::metrics::Metrics,
    statuses: Statuses,
    exchange: Option<Arc<Exchange>>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let m = FeedMetrics::new(metrics);
    let now = Instant::now();
    let mut feeds: Vec<Feed> = configs
        .into_iter()
        .map(|cfg| Feed {
            fetcher: Fetcher::new(&cfg).map_err(|e| e.to_string()),
            status: FeedStatus {
                name: cfg.name().to_string(),
                url: cfg.url.clone(),
                ..FeedStatus::default()
            },
            cfg,
            wanted: HashMap::new(),
            invalid: 0,
            over: 0,
            fetched_unix: 0,
            received: None,
            alone: false,
            next_load: now,
        })
        .collect();
    let mut log = RateLimit::new(Duration::from_secs(60), 64);
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    loop {
        let received = shared::ready(exchange.as_deref().map(|x| &x.in_ready));
        tokio::select! {
            _ = tick.tick() => {}
            () = received => {}
            _ = shutdown.changed() => return Ok(()),
        }
        if let Some(x) = &exchange {
            take_received(&mut feeds, x, &m);
        }
        for feed in &mut feeds {
            // Without a cluster sharing the feeds, every node fetches its own.
            let fetch = exchange.as_ref().map_or(Some(Fetch::Alone), |x| {
                x.fetches(feed.cfg.name(), Instant::now())
            });
            if let Some(why) = fetch
                && Instant::now() >= feed.next_load
            {
                feed.next_load = Instant::now() + feed.cfg.refresh;
                load(feed, &m).await;
                feed.alone = why == Fetch::Alone;
                if let Some(x) = exchange.as_ref().filter(|_| why == Fetch::Lease) {
                    x.publish(feed.cfg.name(), shared_load(feed));
                }
            }
            apply(feed, &enforcer, &m, &mut log);
            feed.status.source = exchange.as_ref().map(|_| source(feed));
        }
        if let Ok(mut s) = statuses.lock() {
            *s = feeds.iter().map(|f| f.status.clone()).collect();
        }
    }
}

/// What this node fetched, for the others: its entries sorted, its status.
fn shared_load(feed: &Feed) -> SharedLoad {
    let mut entries: Vec<(IpNet, u64)> = feed.wanted.iter().map(|(n, u)| (*n, *u)).collect();
    entries.sort();
    SharedLoad {
        node: String::new(),
        fetched_unix: feed.fetched_unix,
        outcome: feed.status.outcome.clone(),
        invalid: feed.invalid,
        entries,
    }
}

/// Where a feed's entries come from, for `sip-firewall feeds`.
fn source(feed: &Feed) -> String {
    match &feed.received {
        Some((node, at)) => {
            format!("from the cluster (fetched by {node}), last received at {at} (unix)")
        }
        None if feed.alone => {
            "fetched here alone (cut off from the cluster, or Redis refuses the lease)".to_string()
        }
        None if feed.fetched_unix > 0 => "fetched here".to_string(),
        None => "from the cluster: nothing received yet".to_string(),
    }
}

/// Take the loads received from the cluster: each checked ([`SharedLoad::decode`]), and
/// taken when it is newer than what the feed has; its entries replace the feed's, the next
/// fetch (should this node take the fetching over) one `refresh` after that load's.
fn take_received(feeds: &mut [Feed], x: &Exchange, m: &FeedMetrics) {
    for (name, (text, at)) in x.take_incoming() {
        let Some(feed) = feeds.iter_mut().find(|f| f.cfg.name() == name) else {
            continue;
        };
        let now = crate::clock::unix_now();
        let taken = match SharedLoad::decode(&text, &feed.cfg, now) {
            Ok(t) => t,
            Err(e) => {
                warn!(feed = %name, error = %e, kept = feed.wanted.len(),
                      "feed load from the cluster refused: the entries stay as they were");
                m.loads.with_label_values(&[&name, "refused"]).inc();
                continue;
            }
        };
        if taken.load.fetched_unix <= feed.fetched_unix {
            continue;
        }
        let load = taken.load;
        feed.wanted = load.entries.into_iter().collect();
        feed.invalid = load.invalid.saturating_add(taken.malformed);
        feed.over = taken.over;
        feed.fetched_unix = load.fetched_unix;
        feed.status.outcome = load.outcome;
        let due = load.fetched_unix.saturating_add(feed.cfg.refresh.as_secs());
        feed.next_load = Instant::now() + Duration::from_secs(due.saturating_sub(now));
        info!(feed = %name, from = %load.node, entries = feed.wanted.len(),
              malformed = taken.malformed, over = taken.over, "feed load received from the cluster");
        feed.received = Some((load.node, at));
        m.loads.with_label_values(&[&name, "received"]).inc();
    }
}

/// Fetch and parse `feed`; on success its entries become the new ones (see the module doc),
/// on failure they stay.
async fn load(feed: &mut Feed, m: &FeedMetrics) {
    let name = feed.cfg.name().to_string();
    feed.fetched_unix = crate::clock::unix_now();
    feed.received = None;
    let result = match &feed.fetcher {
        Ok(f) => match f.fetch().await {
            Ok(body) => parse::parse(feed.cfg.format, &body).map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.clone()),
    };
    match result {
        Ok(parsed) => {
            let until = crate::clock::unix_now() + feed.cfg.expire_after.as_secs();
            if feed.cfg.format == FeedFormat::Cidr {
                feed.wanted.clear();
            }
            for net in parsed.nets {
                feed.wanted.insert(net, until);
            }
            feed.invalid = parsed.invalid;
            feed.over = 0;
            feed.status.outcome = LoadOutcome {
                last_ok_unix: Some(crate::clock::unix_now()),
                last_error: None,
            };
            m.loads.with_label_values(&[&name, "ok"]).inc();
            info!(feed = %name, entries = feed.wanted.len(), invalid = parsed.invalid, "feed loaded");
        }
        Err(e) => {
            // Once per refresh at most: the next line is the next failed load.
            warn!(feed = %name, error = %e, kept = feed.wanted.len(),
                  "feed failed to load: its last good entries stay until they expire");
            feed.status.outcome.last_error = Some(e);
            m.loads.with_label_values(&[&name, "error"]).inc();
        }
    }
}

/// Drop `feed`'s expired entries and put the rest in force through the enforcer's vetting;
/// counts by state to the metrics and the status.
fn apply(
    feed: &mut Feed,
    enforcer: &Mutex<Enforcer>,
    m: &FeedMetrics,
    log: &mut RateLimit<String>,
) {
    let name = feed.cfg.name().to_string();
    let now = crate::clock::unix_now();
    feed.wanted.retain(|_, until| *until > now);
    let wanted: Vec<(IpNet, u64)> = feed.wanted.iter().map(|(n, u)| (*n, *u)).collect();
    let synced = match enforcer.lock() {
        Ok(mut e) => e.feed_sync(&name, &wanted, feed.cfg.max_entries),
        Err(_) => {
            warn!("enforcer poisoned");
            return;
        }
    };
    let synced = match synced {
        Ok(s) => s,
        Err(e) => {
            warn!(feed = %name, "feed entries not applied: {e}");
            return;
        }
    };
    let mut counts: std::collections::BTreeMap<String, u64> = [
        ("applied", synced.applied as u64),
        ("invalid", feed.invalid as u64),
    ]
    .into_iter()
    .chain(
        [
            Refused::TooWide,
            Refused::AllowListed,
            Refused::Known,
            Refused::OverBound,
        ]
        .into_iter()
        .map(|r| (r.name(), 0)),
    )
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    for (_, why) in &synced.refused {
        *counts.entry(why.name().to_string()).or_default() += 1;
    }
    *counts
        .entry(Refused::OverBound.name().to_string())
        .or_default() += feed.over as u64;
    for (state, n) in &counts {
        m.entries
            .with_label_values(&[&name, state])
            .set(i64::try_from(*n).unwrap_or(i64::MAX));
    }
    if !synced.refused.is_empty()
        && let Verdict::Log { suppressed } = log.decide(name.clone(), Instant::now())
    {
        warn!(feed = %name, refused = synced.refused.len(), suppressed,
              "feed entries not applied (too wide, covering an allow-listed or known good \
               source, or over the bound): see `sip-firewall feeds`");
    }
    feed.status.refused = synced
        .refused
        .iter()
        .take(REFUSED_SHOWN)
        .map(|(n, why)| (n.to_string(), why.name().to_string()))
        .collect();
    feed.status.entries = counts;
}
