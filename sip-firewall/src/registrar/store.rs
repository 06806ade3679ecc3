//! The location store: bindings of addresses of record to contacts. The registrar and the
//! proxy see only the [`LocationStore`] trait, so a shared store can replace the in-memory one.

use std::{collections::HashMap, net::SocketAddr, time::Instant};

use serde::{Deserialize, Serialize};
use sip_firewall_sip::Transport;

/// One contact bound to an address of record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI as registered.
    pub contact: String,
    pub expires_at: Instant,
    /// Call-ID and CSeq of the REGISTER that last wrote it (RFC 3261 10.3 step 7).
    pub call_id: String,
    pub cseq: u32,
    /// Where the REGISTER came from: requests for the contact go there, which is what a
    /// client behind NAT needs (its Contact names an address nobody can reach).
    pub source: SocketAddr,
    pub transport: Transport,
    /// The user whose digest credentials the REGISTER proved (None: an allow-listed peer
    /// registered without them).
    pub authenticated: Option<String>,
    /// RFC 3327: the Path of a binding whose flow another cluster node holds (that node's
    /// Path URI): requests for the contact are routed through it. None: the flow is ours
    /// (`source`, `transport`).
    pub path: Option<String>,
}

/// Where bindings live.
pub trait LocationStore: Send {
    /// The live bindings of `aor`.
    fn lookup(&self, aor: &str, now: Instant) -> Vec<Binding>;
    /// Add or replace (same contact URI) a binding.
    fn put(&mut self, aor: &str, binding: Binding);
    /// Remove one contact.
    fn remove(&mut self, aor: &str, contact: &str);
    /// Remove every binding of `aor`.
    fn clear(&mut self, aor: &str);
    /// Drop expired bindings; returns how many went.
    fn expire(&mut self, now: Instant) -> usize;
    /// Bindings stored (live or not yet expired by [`LocationStore::expire`]).
    fn len(&self) -> usize;
    /// Whether nothing is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Apply a change another cluster node made (never written through again). A store
    /// that is not shared has no other nodes: nothing to do.
    fn apply_remote(&mut self, _change: &Change, _now: Instant) {}
    /// The full set of the cluster after a (re)connect: see `shared::WriteThrough`.
    fn reload_remote(&mut self, _all: &[(String, SharedBinding)], _now: Instant) {}
    /// Every AOR with its bindings (live or not yet expired), for a full resynchronisation.
    fn all(&self) -> Vec<(String, Binding)> {
        Vec::new()
    }
    /// The live bindings whose flow this node holds, as the cluster stores them (written
    /// back to a Redis that lost its data). A store that is not shared: none.
    fn own_shared(&self, _now: Instant) -> Vec<(String, SharedBinding)> {
        Vec::new()
    }
}

/// Contact URIs compare case-insensitively here: good enough for the same client
/// refreshing its own registration, which writes the URI the same way every time.
fn same_contact(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// The default store: a map in memory.
#[derive(Debug, Default)]
pub struct MemoryStore {
    by_aor: HashMap<String, Vec<Binding>>,
    count: usize,
}

impl LocationStore for MemoryStore {
    fn lookup(&self, aor: &str, now: Instant) -> Vec<Binding> {
        self.by_aor
            .get(aor)
            .map(|v| v.iter().filter(|b| b.expires_at > now).cloned().collect())
            .unwrap_or_default()
    }

    fn put(&mut self, aor: &str, binding: Binding) {
        let list = self.by_aor.entry(aor.to_string()).or_default();
        if let Some(b) = list
            .iter_mut()
            .find(|b| same_contact(&b.contact, &binding.contact))
        {
            *b = binding;
        } else {
            list.push(binding);
            self.count += 1;
        }
    }

    fn remove(&mut self, aor: &str, contact: &str) {
        if let Some(list) = self.by_aor.get_mut(aor) {
            let before = list.len();
            list.retain(|b| !same_contact(&b.contact, contact));
            self.count -= before - list.len();
            if list.is_empty() {
                self.by_aor.remove(aor);
            }
        }
    }

    fn clear(&mut self, aor: &str) {
        if let Some(list) = self.by_aor.remove(aor) {
            self.count -= list.len();
        }
    }

    fn expire(&mut self, now: Instant) -> usize {
        let before = self.count;
        self.by_aor.retain(|_, list| {
            list.retain(|b| b.expires_at > now);
            !list.is_empty()
        });
        self.count = self.by_aor.values().map(Vec::len).sum();
        before - self.count
    }

    fn len(&self) -> usize {
        self.count
    }

    fn all(&self) -> Vec<(String, Binding)> {
        self.by_aor
            .iter()
            .flat_map(|(aor, list)| list.iter().map(|b| (aor.clone(), b.clone())))
            .collect()
    }
}

/// One binding as the cluster stores it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedBinding {
    pub contact: String,
    /// Wall clock (Unix seconds).
    pub expires_unix: u64,
    pub call_id: String,
    pub cseq: u32,
    /// The flow, as the holding node sees it.
    pub source: SocketAddr,
    /// `udp`, `tcp`, `tls`, `ws`.
    pub transport: String,
    pub authenticated: Option<String>,
    /// The node holding the flow.
    pub node: String,
    /// That node's Path URI (RFC 3327): where the others send requests for the contact.
    pub path: String,
}

/// A change to the bindings of one address of record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    Put { aor: String, binding: SharedBinding },
    Remove { aor: String, contact: String },
    Clear { aor: String },
}
