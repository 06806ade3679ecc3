//! The client transactions (RFC 3261 17.1) of our branches, our CANCELs and our BYEs, and
//! which of them have further DNS targets to fail over to (RFC 3263 4.3).

use std::collections::HashSet;

use super::*;

/// A client transaction's identity (RFC 3261 17.1.3): our branch and the CSeq method.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct ClientKey {
    pub(super) branch: String,
    pub(super) method: String,
}

pub(super) struct ClientEntry {
    pub(super) txn: ClientTxn,
    /// The request as sent (for the ACK of a non-2xx final).
    pub(super) req: SipMsg,
    pub(super) dest: Destination,
    /// The server transaction and branch index this belongs to (None: a CANCEL of ours).
    pub(super) server: Option<(ServerKey, usize)>,
}

/// A request leaving under a new client transaction: what [`Core::start_client`] needs.
pub(super) struct Outgoing {
    pub(super) key: ClientKey,
    pub(super) kind: Kind,
    /// Sent once, without Timer A/E retransmissions (a reliable transport, or a contact
    /// that answered nothing lately).
    pub(super) reliable: bool,
    /// The request as written.
    pub(super) req: SipMsg,
    pub(super) dest: Destination,
    pub(super) server: Option<(ServerKey, usize)>,
}

impl Core {
    /// Send `bytes` (`o.req` as written) to `o.dest` under a new client transaction
    /// (RFC 3261 17.1) and arm its timers.
    pub(super) fn start_client(&mut self, o: Outgoing, bytes: Vec<u8>, now: Instant) {
        let txn = ClientTxn::new(
            o.kind,
            o.reliable,
            bytes.clone(),
            now,
            &self.settings.timers,
        );
        self.send(o.dest, bytes);
        self.clients.insert(
            o.key.clone(),
            ClientEntry {
                txn,
                req: o.req,
                dest: o.dest,
                server: o.server,
            },
        );
        self.schedule(TimerKey::Client(o.key));
    }
}

/// The open client transactions.
#[derive(Default)]
pub(super) struct Clients {
    map: HashMap<ClientKey, ClientEntry>,
    /// Those whose branch has further DNS targets: the ones a transport error toward their
    /// destination moves on.
    with_failover: HashSet<ClientKey>,
}

impl Clients {
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }

    pub(super) fn get(&self, key: &ClientKey) -> Option<&ClientEntry> {
        self.map.get(key)
    }

    pub(super) fn get_mut(&mut self, key: &ClientKey) -> Option<&mut ClientEntry> {
        self.map.get_mut(key)
    }

    pub(super) fn insert(&mut self, key: ClientKey, e: ClientEntry) {
        self.map.insert(key, e);
    }

    /// End the transaction `key` (and its failover).
    pub(super) fn remove(&mut self, key: &ClientKey) -> Option<ClientEntry> {
        self.with_failover.remove(key);
        self.map.remove(key)
    }

    /// `key`'s branch has further targets.
    pub(super) fn fails_over(&mut self, key: ClientKey) {
        self.with_failover.insert(key);
    }

    /// `key`'s branch moves on no more (it was reached, or it moved on already).
    pub(super) fn settled(&mut self, key: &ClientKey) {
        self.with_failover.remove(key);
    }

    /// The transactions toward `dest` whose branch has further targets.
    pub(super) fn failing_over_to(&self, dest: Destination) -> Vec<ClientKey> {
        if self.with_failover.is_empty() {
            return Vec::new();
        }
        self.with_failover
            .iter()
            .filter(|k| self.map.get(k).is_some_and(|c| c.dest == dest))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(branch: &str) -> ClientKey {
        ClientKey {
            branch: branch.into(),
            method: "INVITE".into(),
        }
    }

    fn entry(dest: &str, now: Instant) -> ClientEntry {
        let bytes = b"INVITE sip:a@192.0.2.1 SIP/2.0\r\n\r\n".to_vec();
        ClientEntry {
            txn: ClientTxn::new(Kind::Invite, false, bytes, now, &Timers::default()),
            req: SipMsg {
                start: "INVITE sip:a@192.0.2.1 SIP/2.0".into(),
                headers: Vec::new(),
                body: Vec::new(),
            },
            dest: Destination {
                addr: dest.parse().expect("addr"),
                transport: Transport::Datagram,
            },
            server: None,
        }
    }

    #[test]
    fn only_branches_with_further_targets_toward_that_destination_fail_over() {
        let now = Instant::now();
        let mut c = Clients::default();
        c.insert(key("a"), entry("192.0.2.1:5060", now));
        c.insert(key("b"), entry("192.0.2.1:5060", now));
        c.insert(key("c"), entry("192.0.2.2:5060", now));
        c.fails_over(key("a"));
        c.fails_over(key("c"));
        let dest = c.get(&key("a")).expect("a").dest;
        assert_eq!(c.failing_over_to(dest), vec![key("a")]);
        c.settled(&key("a"));
        assert!(c.failing_over_to(dest).is_empty());
        assert_eq!(c.len(), 3, "settling keeps the transaction");
        let other = c.get(&key("c")).expect("c").dest;
        assert!(c.remove(&key("c")).is_some());
        assert!(c.failing_over_to(other).is_empty(), "an ended one no more");
    }
}
