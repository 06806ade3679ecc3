//! Relay mode (`[registrar] mode = "relay"`): the operator's registrar keeps the bindings
//! and the credentials; the edge relays REGISTER to it with a Path entry naming the phone's
//! flow (RFC 3327, RFC 5626) and learns from each 200 which flows are registered, for how
//! long and for which address of record. [`Flows`] is what it learned: the flows requests
//! from the registrar may be sent down (a token of a flow not here is stale: 430), the
//! sources that are known good, and what `status` counts.
//!
//! Bounded per source address (`max_relayed_per_source`: the phones behind one NAT share
//! it) and in total (`max_relayed`); a flow refused at the bound is the caller's to count
//! and log ([`Full`]).

use std::{
    collections::HashMap,
    net::IpAddr,
    time::{Duration, Instant},
};

use sip_firewall_sip::{
    Message,
    headers::{HeaderName, name_addr, scalar},
};

use crate::{
    registrar::{config::RegistrarConfig, request::param},
    seams::Destination,
};

/// One registered flow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flow {
    /// The address of record the registrar bound (the REGISTER's To URI).
    pub aor: String,
    pub expires_at: Instant,
}

/// The bound a new flow hit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Full {
    PerSource,
    Total,
}

impl Full {
    /// The label of its metric and log line.
    pub fn label(self) -> &'static str {
        match self {
            Full::PerSource => "per_source",
            Full::Total => "total",
        }
    }
}

/// The flows of relayed registrations, by flow (transport and the address the edge
/// reaches the phone at).
#[derive(Default)]
pub struct Flows {
    map: HashMap<Destination, Flow>,
    per_source: HashMap<IpAddr, usize>,
}

fn source_of(flow: &Destination) -> IpAddr {
    flow.addr.ip().to_canonical()
}

impl Flows {
    /// The registrar accepted `aor`'s registration on `flow` for `expires` (RFC 3261 10.3
    /// step 8: the 200 lists the contacts with their expiry); 0: it removed it. Err: the
    /// table is at a bound, nothing changed.
    pub fn learn(
        &mut self,
        limits: &RegistrarConfig,
        flow: Destination,
        aor: &str,
        expires: Duration,
        now: Instant,
    ) -> Result<(), Full> {
        if expires.is_zero() {
            self.forget(&flow);
            return Ok(());
        }
        let entry = Flow {
            aor: aor.to_string(),
            expires_at: now + expires,
        };
        if let Some(f) = self.map.get_mut(&flow) {
            *f = entry;
            return Ok(());
        }
        let ip = source_of(&flow);
        if self.per_source.get(&ip).copied().unwrap_or(0) >= limits.max_relayed_per_source {
            return Err(Full::PerSource);
        }
        if self.map.len() >= limits.max_relayed {
            return Err(Full::Total);
        }
        self.map.insert(flow, entry);
        *self.per_source.entry(ip).or_default() += 1;
        Ok(())
    }

    /// The flow's registration, while it lasts.
    pub fn get(&self, flow: &Destination, now: Instant) -> Option<&Flow> {
        self.map.get(flow).filter(|f| f.expires_at > now)
    }

    /// Drop `flow` (unregistered, or gone: its keep-alives unanswered, its connection
    /// closed); whether it was held.
    pub fn forget(&mut self, flow: &Destination) -> bool {
        if self.map.remove(flow).is_none() {
            return false;
        }
        let ip = source_of(flow);
        if let Some(n) = self.per_source.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_source.remove(&ip);
            }
        }
        true
    }

    /// Drop the expired flows; how many went.
    pub fn expire(&mut self, now: Instant) -> usize {
        let gone: Vec<Destination> = self
            .map
            .iter()
            .filter(|(_, f)| f.expires_at <= now)
            .map(|(d, _)| *d)
            .collect();
        for d in &gone {
            self.forget(d);
        }
        gone.len()
    }

    /// Flows held (live or not yet expired).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether none is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// How long the registrar's 200 `answer` to a relayed REGISTER binds the contacts that
/// REGISTER named (`asked`: its Contact values): the 200 lists every current binding of
/// the address of record with its expiry (RFC 3261 10.3 step 8), the longest of those the
/// REGISTER named counts. Zero when none of them is bound any more (removed, `Contact: *`).
pub fn granted<'a>(asked: impl Iterator<Item = &'a str>, answer: &Message<'_>) -> Duration {
    let mut ours = Vec::new();
    for v in asked {
        // `*` and what does not parse name no contact of this flow.
        let _ = name_addr::parse_contact(v, |a| ours.push(a.uri_text.to_string()));
    }
    let default = answer.get(HeaderName::Expires).and_then(scalar::expires);
    let mut longest = 0;
    for v in answer.all(HeaderName::Contact) {
        let _ = name_addr::parse_contact(v, |a| {
            if ours.iter().any(|u| u.eq_ignore_ascii_case(a.uri_text)) {
                let e = param(a.params, "expires")
                    .and_then(scalar::expires)
                    .or(default)
                    .unwrap_or(0);
                longest = longest.max(e);
            }
        });
    }
    Duration::from_secs(u64::from(longest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use sip_firewall_sip::Transport;

    fn flow(addr: &str) -> Destination {
        Destination {
            addr: addr.parse().expect("addr"),
            transport: Transport::Datagram,
        }
    }

    fn limits(total: usize, per_source: usize) -> RegistrarConfig {
        RegistrarConfig {
            max_relayed: total,
            max_relayed_per_source: per_source,
            ..RegistrarConfig::default()
        }
    }

    #[test]
    fn bounded_per_source_and_in_total() {
        let l = limits(3, 2);
        let t0 = Instant::now();
        let hour = Duration::from_secs(3600);
        let mut f = Flows::default();
        let learn = |f: &mut Flows, addr: &str| f.learn(&l, flow(addr), "a@x", hour, t0);
        assert_eq!(learn(&mut f, "198.51.100.1:1"), Ok(()));
        assert_eq!(learn(&mut f, "198.51.100.1:2"), Ok(()));
        assert_eq!(learn(&mut f, "198.51.100.1:3"), Err(Full::PerSource));
        // A refresh of a held flow is no new flow.
        assert_eq!(learn(&mut f, "198.51.100.1:2"), Ok(()));
        assert_eq!(learn(&mut f, "198.51.100.2:1"), Ok(()));
        assert_eq!(learn(&mut f, "198.51.100.3:1"), Err(Full::Total));
        // Unregistered (expires 0): its place is free again.
        f.learn(&l, flow("198.51.100.1:1"), "a@x", Duration::ZERO, t0)
            .expect("removed");
        assert!(f.get(&flow("198.51.100.1:1"), t0).is_none());
        f.learn(&l, flow("198.51.100.1:3"), "c@x", hour, t0)
            .expect("room again");
        assert_eq!(f.len(), 3);
    }

    fn parsed(text: &str) -> Message<'_> {
        sip_firewall_sip::parse::parse(
            text.as_bytes(),
            &sip_firewall_sip::Limits::default(),
            Transport::Datagram,
        )
        .expect("parse")
    }

    #[test]
    fn what_the_200_granted_our_contacts() {
        let ok = parsed(
            "SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@x>;tag=1\r\n\
             To: <sip:a@x>;tag=2\r\nCall-ID: c\r\nCSeq: 2 REGISTER\r\n\
             Contact: <sip:a@10.0.0.1:5060>;expires=120, <sip:a@10.0.0.9>;expires=3600\r\n\
             Contact: <sip:a@10.0.0.2:5060>\r\nExpires: 60\r\nContent-Length: 0\r\n\r\n",
        );
        let asked = ["<sip:a@10.0.0.1:5060>;expires=300"];
        assert_eq!(granted(asked.into_iter(), &ok), Duration::from_secs(120));
        assert_eq!(
            granted(["<SIP:a@10.0.0.2:5060>"].into_iter(), &ok),
            Duration::from_secs(60),
            "the Expires header when the contact has no parameter"
        );
        assert_eq!(
            granted(["<sip:a@10.0.0.3>"].into_iter(), &ok),
            Duration::ZERO
        );
        assert_eq!(granted(["*"].into_iter(), &ok), Duration::ZERO);
    }

    #[test]
    fn flows_expire() {
        let l = limits(10, 10);
        let t0 = Instant::now();
        let mut f = Flows::default();
        f.learn(
            &l,
            flow("198.51.100.1:1"),
            "a@x",
            Duration::from_secs(60),
            t0,
        )
        .expect("a");
        let held = f.get(&flow("198.51.100.1:1"), t0).map(|x| x.aor.clone());
        assert_eq!(held.as_deref(), Some("a@x"));
        let later = t0 + Duration::from_secs(60);
        assert!(f.get(&flow("198.51.100.1:1"), later).is_none(), "expired");
        assert_eq!(f.expire(later), 1);
        assert!(f.is_empty() && f.per_source.is_empty());
    }
}
