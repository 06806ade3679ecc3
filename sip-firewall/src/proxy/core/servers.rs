//! The server-transaction table (RFC 3261 17.2): each transaction by its key, with where its
//! responses go and its fork, bounded in total and per source (`[sip] max_transactions`,
//! `max_transactions_per_source`; a source counted by [`crate::seams::source_key`]).

use super::*;

/// A server transaction's identity (RFC 3261 17.2.3): branch, sent-by, method (ACK as
/// INVITE).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServerKey {
    pub(super) branch: String,
    pub(super) sent_by: String,
    pub(super) method: String,
}

pub(super) struct ServerEntry {
    pub(super) txn: ServerTxn,
    /// Where responses go.
    pub(super) dest: Destination,
    /// The request's headers our own answers copy, and its source (for `received`).
    pub(super) rctx: ReplyContext<'static>,
    pub(super) source: SocketAddr,
    pub(super) fork: Option<Fork>,
    /// The Call-ID as the request came, when it was one of our seals: its answers carry it
    /// back (`crate::proxy::hide`).
    pub(super) wire_call_id: Option<String>,
    /// Whether the request's dialog was made inside: toward a hidden destination its
    /// Call-ID leaves sealed (`crate::proxy::hide`), under the ring's `secret` (that of
    /// the dialog's stamp; 0, the current one, for a new dialog).
    pub(super) made_inside: bool,
    pub(super) secret: usize,
}

impl ServerEntry {
    /// The ring secret the request's Call-ID leaves sealed under toward a hidden
    /// destination, when it does: its dialog was made inside, or it came sealed
    /// (`crate::proxy::hide`).
    pub(super) fn call_id_seal(&self) -> Option<usize> {
        (self.made_inside || self.wire_call_id.is_some()).then_some(self.secret)
    }
}

/// The open server transactions of one shard; their counts per source are shared by
/// every shard ([`Counts`]).
pub(super) struct Servers {
    map: HashMap<ServerKey, ServerEntry>,
    counts: Locked<Counts>,
}

/// The server transactions open in every shard, in total and per source, and their bounds:
/// `[sip] max_transactions` and `max_transactions_per_source` bound the whole proxy.
pub(crate) struct Counts {
    total: usize,
    /// Transactions open per source key.
    per_source: HashMap<IpAddr, usize>,
    /// `[sip] max_transactions` and `max_transactions_per_source`.
    max: (usize, usize),
}

impl Counts {
    /// None open yet, bounded by `max` (in total, per source).
    pub(super) fn new(max: (usize, usize)) -> Counts {
        Counts {
            total: 0,
            per_source: HashMap::new(),
            max,
        }
    }
}

impl Servers {
    /// An empty table counted in `counts`.
    pub(super) fn new(counts: Locked<Counts>) -> Servers {
        Servers {
            map: HashMap::new(),
            counts,
        }
    }

    /// New bounds (a reload); the transactions open stay.
    pub(super) fn set_max(&mut self, max: (usize, usize)) {
        self.counts.lock().max = max;
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn contains_key(&self, key: &ServerKey) -> bool {
        self.map.contains_key(key)
    }

    pub(super) fn get(&self, key: &ServerKey) -> Option<&ServerEntry> {
        self.map.get(key)
    }

    pub(super) fn get_mut(&mut self, key: &ServerKey) -> Option<&mut ServerEntry> {
        self.map.get_mut(key)
    }

    /// Open the transaction `made` makes (its entry's source `source`), counted for that
    /// source, unless a new one from there would pass a bound: which one (see
    /// [`Counts::full`]). Checked and counted under one lock of the counts every shard
    /// shares; a refused one is not even made.
    pub(super) fn open(
        &mut self,
        source: IpAddr,
        exempt: bool,
        made: impl FnOnce() -> (ServerKey, ServerEntry),
    ) -> Result<(), &'static str> {
        let source = crate::seams::source_key(source);
        {
            let mut c = self.counts.lock();
            if let Some(what) = c.full(source, exempt) {
                return Err(what);
            }
            c.total += 1;
            *c.per_source.entry(source).or_insert(0) += 1;
        }
        let (key, e) = made();
        if let Some(old) = self.map.insert(key, e) {
            // The same key again: the old entry's count goes with it.
            self.uncount(old.source.ip());
        }
        Ok(())
    }

    /// End the transaction `key`, uncounted for its source.
    pub(super) fn remove(&mut self, key: &ServerKey) -> Option<ServerEntry> {
        let e = self.map.remove(key)?;
        self.uncount(e.source.ip());
        Some(e)
    }

    fn uncount(&self, ip: IpAddr) {
        let k = crate::seams::source_key(ip);
        let mut c = self.counts.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_source.get_mut(&k) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                c.per_source.remove(&k);
            }
        }
    }

    /// Whether no source has a transaction counted (every count went back to zero).
    #[cfg(test)]
    pub(super) fn no_source_counted(&self) -> bool {
        self.counts.lock().per_source.is_empty()
    }
}

impl Counts {
    /// Which bound a new transaction from source key `source` would pass, if any
    /// (`transactions_total`, or `transactions_per_source` unless `exempt`: an allow-listed
    /// source is bound by the total only), counting every shard's.
    fn full(&self, source: IpAddr, exempt: bool) -> Option<&'static str> {
        let (total, per_source) = self.max;
        if self.total >= total {
            Some("transactions_total")
        } else if !exempt
            && self
                .per_source
                .get(&source)
                .is_some_and(|&n| n >= per_source)
        {
            Some("transactions_per_source")
        } else {
            None
        }
    }
}

/// The server transaction key of a request (RFC 3261 17.2.3; the RFC 2543 fallback keys
/// on Call-ID, CSeq number and From tag).
pub(super) fn server_key(m: &Message<'_>, method: &str) -> Option<ServerKey> {
    let v = via::parse_list(m.get(HeaderName::Via)?).next()?.ok()?;
    let host = match v.host {
        Host::Domain(d) => d.to_ascii_lowercase(),
        h => h.ip().map(|i| i.to_string()).unwrap_or_default(),
    };
    let sent_by = format!("{host}:{}", v.port.unwrap_or(5060));
    let branch = match v.branch {
        Some(b) if b.starts_with("z9hG4bK") => b.to_string(),
        _ => {
            let from_tag = m
                .get(HeaderName::From)
                .and_then(|f| name_addr::parse_single(f).ok())
                .and_then(|a| a.tag)
                .unwrap_or("");
            let num = m
                .get(HeaderName::CSeq)
                .and_then(scalar::cseq)
                .map_or(0, |c| c.0);
            format!(
                "2543|{}|{num}|{from_tag}",
                m.get(HeaderName::CallId).unwrap_or("")
            )
        }
    };
    let method = if method == "ACK" { "INVITE" } else { method };
    Some(ServerKey {
        branch,
        sent_by,
        method: method.to_string(),
    })
}

/// The reply context of a request, owned (it outlives the receive buffer).
pub(super) fn owned_ctx(m: &Message<'_>) -> ReplyContext<'static> {
    let c = ReplyContext::from_message(m);
    let own = |v: Option<Cow<'_, str>>| v.map(|v| Cow::Owned(v.into_owned()));
    ReplyContext {
        vias: c
            .vias
            .into_iter()
            .map(|v| Cow::Owned(v.into_owned()))
            .collect(),
        from: own(c.from),
        to: own(c.to),
        call_id: own(c.call_id),
        cseq: own(c.cseq),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(branch: &str) -> ServerKey {
        ServerKey {
            branch: branch.into(),
            sent_by: "192.0.2.1:5060".into(),
            method: "OPTIONS".into(),
        }
    }

    fn entry(source: &str) -> ServerEntry {
        let source: SocketAddr = source.parse().expect("addr");
        ServerEntry {
            txn: ServerTxn::new(Kind::NonInvite, false),
            dest: Destination {
                addr: source,
                transport: Transport::Datagram,
            },
            rctx: ReplyContext {
                vias: Vec::new(),
                from: None,
                to: None,
                call_id: None,
                cseq: None,
            },
            source,
            fork: None,
            wire_call_id: None,
            made_inside: false,
            secret: 0,
        }
    }

    /// Open transaction `branch` from `source` in `s`.
    fn open(s: &mut Servers, branch: &str, source: &str, exempt: bool) -> Result<(), &'static str> {
        let e = entry(source);
        s.open(e.source.ip(), exempt, || (key(branch), e))
    }

    /// Open z9hG4bK1 and 2 from the first two of `sources` (one source key, bound at 2):
    /// the third's z9hG4bK3 is refused at the per-source bound, and not opened.
    fn fill_one_source(s: &mut Servers, sources: [&str; 3]) {
        assert_eq!(open(s, "z9hG4bK1", sources[0], false), Ok(()));
        assert_eq!(open(s, "z9hG4bK2", sources[1], false), Ok(()));
        let third = open(s, "z9hG4bK3", sources[2], false);
        assert_eq!(third, Err("transactions_per_source"));
        assert_eq!(s.len(), 2, "a refused transaction is not opened");
    }

    #[test]
    fn a_source_is_bound_per_source_until_its_transactions_end() {
        let mut s = Servers::new(Locked::new(Counts::new((10, 2))));
        let third = "192.0.2.1:5064";
        fill_one_source(&mut s, ["192.0.2.1:5060", "192.0.2.1:5062", third]);
        assert_eq!(
            open(&mut s, "z9hG4bK3", third, true),
            Ok(()),
            "an allow-listed source: the total only"
        );
        assert_eq!(open(&mut s, "z9hG4bK4", "192.0.2.9:5060", false), Ok(()));
        assert!(s.remove(&key("z9hG4bK1")).is_some());
        assert!(s.remove(&key("z9hG4bK3")).is_some());
        assert_eq!(open(&mut s, "z9hG4bK5", "192.0.2.1:5066", false), Ok(()));
        assert!(s.remove(&key("z9hG4bK1")).is_none());
    }

    #[test]
    fn an_ipv6_source_is_counted_by_its_64_and_the_total_binds_everyone() {
        let mut s = Servers::new(Locked::new(Counts::new((3, 2))));
        fill_one_source(
            &mut s,
            [
                "[2001:db8::1]:5060",
                "[2001:db8::2]:5060",
                "[2001:db8::3]:5060",
            ],
        );
        assert_eq!(open(&mut s, "z9hG4bK3", "192.0.2.7:5060", false), Ok(()));
        assert_eq!(s.len(), 3);
        let total = open(&mut s, "z9hG4bK4", "192.0.2.8:5060", true);
        assert_eq!(total, Err("transactions_total"));
    }
}
