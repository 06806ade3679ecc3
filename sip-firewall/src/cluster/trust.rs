//! What a node takes from Redis, and what it checks first. Redis is an input like the
//! config file: whoever can write to it (a leaked password, a shared instance, a hole in
//! its network) must not steer the edge. So a node trusts only what another node of the
//! same secret made, and checks even that as it checks its own config:
//!
//! - **A MAC on everything**: every published event and every stored record (a ban's value,
//!   an allow or deny entry, a subscriber, a binding) is `sfw1.<tag>.<body>`, the tag an
//!   HMAC-SHA256 under the key `[auth] secret` derives for [`Purpose::ClusterMessage`]
//!   over the record's place (its Redis key and hash field, or the channel) and its body.
//!   A record copied to another key (a ban to another address, a binding to another AOR, a
//!   deny entry into the allow list) or changed in any byte fails. Records made under one
//!   of `[auth] previous_secrets` still verify (a secret is rolled node by node); new ones
//!   are made under the current secret.
//! - **Events are fresh**: an event carries the time it was sent and is refused when it is
//!   more than [`EVENT_WINDOW`] away from this node's clock, or when its tag was already
//!   seen within that window. Events matter only live: a node that misses one (cut off,
//!   restarted) loads the stored records on reconnect instead, so the window only has to
//!   cover delivery and the clock skew between NTP-synchronised nodes (milliseconds); 30 s
//!   is far above both, and keeps the set of tags remembered against replays small.
//! - **The content is checked**: an allow or deny prefix wider than the lists' bound
//!   ([`crate::enforce::lists::check`]) is refused; a subscriber passes the config's checks
//!   ([`crate::auth::config::check_user`]: a domain of ours, hashes, identities within our
//!   domains); a binding's next hop passes the proxy's (`proxy::core`, `internal_next_hops`).
//!
//! A record or event that fails is dropped, counted in `sipfw_cluster_rejected_total{reason}`
//! ([`Reject`]) and logged at most every 10 s.
//!
//! What the MACs cannot do: a record proves that a node made it, not that it is still
//! current, so whoever can write to Redis can delete records (lifting bans, removing
//! entries) and can put back a record that was deleted while it still lives (a ban until its
//! expiry, a subscriber removed since). Keep Redis behind a password or ACL user and TLS.
//!
//! The secrets' fingerprints (`sipfw:secret-fingerprint`: the current secret's first, then
//! the previous ones, as the node that wrote them holds them) are the keys derived for
//! [`Purpose::ClusterFingerprint`], never a secret: a node joins when it shares a secret
//! with them ([`Trust::join`]), so nodes that could verify nothing of each other refuse to,
//! while a secret is rolled node by node (current on some, previous on others) every node
//! keeps its place.

use std::{
    collections::{HashSet, VecDeque},
    net::IpAddr,
    sync::Mutex,
    time::Duration,
};

use hmac::{Hmac, Mac};
use ipnet::IpNet;
use sha2::Sha256;

use super::schema::{
    CHANNEL, Event, Op, USERS_KEY, ban_key, feed_key, list_key, location_key, user_field,
};
use crate::{
    auth::config::UserEntry,
    auth::keys::{KeyRing, Purpose, Secret},
    registrar::{shared::contact_field, store::SharedBinding},
    state::{BanRecord, List},
};

/// How far an event's send time may be from this node's clock (see the module doc).
pub const EVENT_WINDOW: Duration = Duration::from_secs(30);
/// Most event tags remembered against replays within the window.
const MAX_SEEN: usize = 65_536;
/// What a sealed record starts with: the format's version.
const VERSION: &str = "sfw1.";
/// The MAC's first input: the scheme (no other use of the key can collide with it).
const LABEL: &[u8] = b"sip-firewall cluster record v1";

/// Why something from Redis was refused: the `reason` of `sipfw_cluster_rejected_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// No MAC, or one that does not verify for this place under any of our secrets.
    Mac,
    /// An event outside [`EVENT_WINDOW`], or seen already.
    Replay,
    /// An allow or deny prefix wider than the lists' bound.
    Prefix,
    /// A subscriber the config would refuse.
    User,
    /// A binding whose next hop the proxy refuses.
    Binding,
    /// A verified record that does not parse or does not match its place.
    Malformed,
}

impl Reject {
    pub const ALL: [Reject; 6] = [
        Reject::Mac,
        Reject::Replay,
        Reject::Prefix,
        Reject::User,
        Reject::Binding,
        Reject::Malformed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Reject::Mac => "mac",
            Reject::Replay => "replay",
            Reject::Prefix => "prefix",
            Reject::User => "user",
            Reject::Binding => "binding",
            Reject::Malformed => "malformed",
        }
    }
}

/// Where a record lives: its Redis key and, in a hash, its field (the MAC covers both).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    key: String,
    field: String,
}

impl Place {
    /// The events channel.
    pub fn event() -> Place {
        Place::at(CHANNEL, "")
    }

    /// A ban's key.
    pub fn ban(ip: IpAddr) -> Place {
        Place::at(&ban_key(ip), "")
    }

    /// An entry of a list's hash.
    pub fn list(list: List, net: &IpNet) -> Place {
        Place::at(&list_key(list), &net.to_string())
    }

    /// A subscriber's field in the users' hash.
    pub fn user(user: &str, domain: &str) -> Place {
        Place::at(USERS_KEY, &user_field(user, domain))
    }

    /// A contact's field in its AOR's hash.
    pub fn binding(aor: &str, contact: &str) -> Place {
        Place::at(&location_key(aor), &contact_field(contact))
    }

    /// A threat feed's shared load.
    pub fn feed(feed: &str) -> Place {
        Place::at(&feed_key(feed), "")
    }

    fn at(key: &str, field: &str) -> Place {
        Place {
            key: key.to_string(),
            field: field.to_string(),
        }
    }
}

/// The fingerprint of a secret: its key for [`Purpose::ClusterFingerprint`], hex.
pub fn fingerprint(secret: &Secret) -> String {
    crate::auth::digest::hex(&secret.derive::<32>(Purpose::ClusterFingerprint))
}

/// What a node does with the fingerprints Redis holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Join {
    /// Join; they stay.
    Keep,
    /// Join, and write ours: the cluster's current secret is one we hold as previous (the
    /// roll moves on), or ours is the same and we retired some of theirs.
    Write,
    /// No secret in common: do not join.
    Refuse,
}

/// The keys and checks of what comes from Redis.
pub struct Trust {
    /// The [`Purpose::ClusterMessage`] keys, the current secret's first.
    keys: Vec<[u8; 32]>,
    /// The fingerprints of our secrets, the current one first.
    fingerprints: Vec<String>,
    /// `[sip] domains`: a subscriber's domain and identities must be among them.
    domains: Vec<String>,
    seen: Mutex<Seen>,
}

/// Event tags seen within the window, oldest first.
#[derive(Default)]
struct Seen {
    order: VecDeque<(u64, [u8; 32])>,
    tags: HashSet<[u8; 32]>,
}

impl Trust {
    pub fn new(ring: &KeyRing, domains: &[String]) -> Trust {
        Trust {
            keys: ring.derive_all(Purpose::ClusterMessage),
            fingerprints: std::iter::once(ring.current())
                .chain(ring.previous())
                .map(fingerprint)
                .collect(),
            domains: domains.to_vec(),
            seen: Mutex::new(Seen::default()),
        }
    }

    /// Our secrets' fingerprints as this node writes them (current first, spaces between).
    pub fn fingerprints(&self) -> String {
        self.fingerprints.join(" ")
    }

    /// Whether to join a cluster whose Redis holds `stored` (see [`Join`]).
    pub fn join(&self, stored: &str) -> Join {
        let theirs: Vec<&str> = stored.split_whitespace().collect();
        let ours = |f: &&str| self.fingerprints.iter().any(|o| o == f);
        let (Some(their_current), Some(our_current)) = (theirs.first(), self.fingerprints.first())
        else {
            return Join::Write;
        };
        if !theirs.iter().any(ours) {
            return Join::Refuse;
        }
        let newer = self.fingerprints[1..].iter().any(|p| p == their_current);
        let retired = our_current == their_current && !theirs.iter().all(ours);
        if newer || retired {
            Join::Write
        } else {
            Join::Keep
        }
    }

    fn mac(key: &[u8; 32], place: &Place, body: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        // Each part with its length: no two (key, field, body) give the same input.
        for part in [LABEL, place.key.as_bytes(), place.field.as_bytes(), body] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac
    }

    /// `body` sealed for `place` under the current secret.
    pub fn seal(&self, place: &Place, body: &str) -> String {
        let tag = match self.keys.first() {
            Some(k) => Trust::mac(k, place, body.as_bytes())
                .finalize()
                .into_bytes(),
            None => return String::new(),
        };
        format!("{VERSION}{}.{body}", crate::auth::digest::hex(&tag))
    }

    /// The body of a record sealed for `place` under one of our secrets, and its tag.
    fn open<'a>(&self, place: &Place, sealed: &'a str) -> Result<(&'a str, [u8; 32]), Reject> {
        let (tag_hex, body) = sealed
            .strip_prefix(VERSION)
            .and_then(|s| s.split_once('.'))
            .ok_or(Reject::Mac)?;
        let tag = unhex32(tag_hex).ok_or(Reject::Mac)?;
        self.keys
            .iter()
            // `verify_slice` compares in constant time.
            .any(|k| {
                Trust::mac(k, place, body.as_bytes())
                    .verify_slice(&tag)
                    .is_ok()
            })
            .then_some((body, tag))
            .ok_or(Reject::Mac)
    }

    /// A published event: sealed for the channel, fresh, not seen before, its content
    /// checked.
    pub fn event(&self, payload: &[u8], now_ms: u64) -> Result<Event, Reject> {
        let text = std::str::from_utf8(payload).map_err(|_| Reject::Mac)?;
        let (body, tag) = self.open(&Place::event(), text)?;
        let ev: Event = serde_json::from_str(body).map_err(|_| Reject::Malformed)?;
        if now_ms.abs_diff(ev.sent_ms) > EVENT_WINDOW.as_millis() as u64 {
            return Err(Reject::Replay);
        }
        self.first_seen(tag, ev.sent_ms, now_ms)?;
        self.check_op(&ev.op)?;
        Ok(ev)
    }

    /// Remember an event's tag for the window; a tag seen already is a replay.
    fn first_seen(&self, tag: [u8; 32], sent_ms: u64, now_ms: u64) -> Result<(), Reject> {
        let mut seen = self.seen.lock().map_err(|_| Reject::Replay)?;
        let window = EVENT_WINDOW.as_millis() as u64;
        while let Some(&(t, old)) = seen.order.front() {
            if t.saturating_add(window) >= now_ms && seen.order.len() < MAX_SEEN {
                break;
            }
            seen.order.pop_front();
            seen.tags.remove(&old);
        }
        if !seen.tags.insert(tag) {
            return Err(Reject::Replay);
        }
        seen.order.push_back((sent_ms, tag));
        Ok(())
    }

    /// The content of a change, from an event or a stored record.
    pub fn check_op(&self, op: &Op) -> Result<(), Reject> {
        match op {
            Op::ListAdd { net, .. } => check_prefix(net),
            Op::UserAdd { user } => self.check_user(user),
            // A name no `[[feeds]]` table gives (too long to be one) is junk.
            Op::FeedLoad { feed } if feed.len() > MAX_FEED_NAME => Err(Reject::Malformed),
            _ => Ok(()),
        }
    }

    /// A subscriber passes what the config file's would (`[sip] domains`).
    fn check_user(&self, user: &UserEntry) -> Result<(), Reject> {
        crate::auth::config::check_user(user, &self.domains).map_err(|_| Reject::User)
    }

    /// A ban as stored under `key` (`sipfw:ban:<ip>`: the event that made it).
    pub fn ban(&self, key: &str, value: &str) -> Result<BanRecord, Reject> {
        let (body, _) = self.open(&Place::at(key, ""), value)?;
        match serde_json::from_str::<Event>(body) {
            Ok(Event {
                op: Op::Ban { ban },
                ..
            }) if ban_key(ban.ip) == key => Ok(ban),
            _ => Err(Reject::Malformed),
        }
    }

    /// An entry of a list's hash: the prefix in its field.
    pub fn list_entry(&self, list: List, field: &str, value: &str) -> Result<IpNet, Reject> {
        self.open(&Place::at(&list_key(list), field), value)?;
        let net = field.parse::<IpNet>().map_err(|_| Reject::Malformed)?;
        check_prefix(&net)?;
        Ok(net)
    }

    /// A subscriber of the users' hash.
    pub fn user(&self, field: &str, value: &str) -> Result<UserEntry, Reject> {
        let (body, _) = self.open(&Place::at(USERS_KEY, field), value)?;
        let user: UserEntry = serde_json::from_str(body).map_err(|_| Reject::Malformed)?;
        if user_field(&user.user, &user.domain) != field {
            return Err(Reject::Malformed);
        }
        self.check_user(&user)?;
        Ok(user)
    }

    /// A binding of an AOR's hash (`sipfw:loc:<aor>`): the AOR and the binding. Its next
    /// hop is the proxy's to check.
    pub fn binding(
        &self,
        key: &str,
        field: &str,
        value: &str,
    ) -> Result<(String, SharedBinding), Reject> {
        let (body, _) = self.open(&Place::at(key, field), value)?;
        let aor = key
            .strip_prefix(location_key("").as_str())
            .ok_or(Reject::Malformed)?;
        let b: SharedBinding = serde_json::from_str(body).map_err(|_| Reject::Malformed)?;
        if contact_field(&b.contact) != field {
            return Err(Reject::Malformed);
        }
        Ok((aor.to_string(), b))
    }

    /// A threat feed's load as stored under its key: the body, for the feeds task to check
    /// (`crate::feeds::shared::SharedLoad::decode`).
    pub fn feed_load<'a>(&self, feed: &str, value: &'a str) -> Result<&'a str, Reject> {
        Ok(self.open(&Place::feed(feed), value)?.0)
    }
}

/// The longest feed name an event may carry.
const MAX_FEED_NAME: usize = 1024;

/// Count a refusal and log it (at most every 10 s: a Redis full of junk is no log storm).
pub fn refuse(metrics: &super::metrics::ClusterMetrics, why: Reject, what: &str) {
    metrics.rejected.with_label_values(&[why.label()]).inc();
    super::metrics::warn_limited(&format!(
        "cluster: refused {what} from Redis ({}); see sipfw_cluster_rejected_total",
        why.label()
    ));
}

/// An allow or deny prefix within the lists' bound.
fn check_prefix(net: &IpNet) -> Result<(), Reject> {
    crate::enforce::lists::check(net).map_err(|_| Reject::Prefix)
}

/// 64 hex digits as 32 bytes.
fn unhex32(s: &str) -> Option<[u8; 32]> {
    crate::auth::digest::unhex(s)?.try_into().ok()
}

#[cfg(test)]
mod tests;
