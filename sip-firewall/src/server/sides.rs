//! Which of our listen addresses a message leaves from, on an edge with more than one (an
//! inside and an outside interface): the one the kernel would take as the source toward the
//! destination (a route lookup, as Kamailio's `mhomed`). The UDP socket bound to it sends the
//! datagram, and our Via and Record-Route name it, so that the answers come back to an
//! address the destination can route to.
//!
//! The lookup is a UDP socket connected to the destination (`connect(2)` on a datagram
//! socket sends nothing: it only resolves the route and the source address), read back with
//! `getsockname(2)`. Answers are cached per destination address for [`TTL`] (routes change
//! seldom; a changed one is taken within that time), at most [`MAX_CACHED`] of them: at the
//! bound the cache starts again empty, counted in
//! `sipfw_limits_refused_total{what="route_cache"}` and logged (rate-limited).
//!
//! With one specific listen address of a family (or a wildcard, whose socket the kernel
//! sends from the routed source by itself) there is nothing to choose and nothing is looked
//! up: single-homed edges behave as without this module.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

/// How long a route lookup's answer is used.
pub const TTL: Duration = Duration::from_secs(30);

/// Most destinations whose source is cached at once.
pub const MAX_CACHED: usize = 4096;

/// Our specific listen addresses and the cached route lookups toward destinations.
#[derive(Debug, Default)]
pub struct Sides {
    /// The specific (not wildcard) listen addresses, canonical.
    listen: Vec<IpAddr>,
    /// Destination -> (our listen address toward it, if one is, and when it was looked up).
    cache: Mutex<HashMap<IpAddr, (Option<IpAddr>, Instant)>>,
}

impl Sides {
    /// The sides of an edge listening on `listen` (wildcards have no side of their own).
    pub fn new(listen: impl IntoIterator<Item = IpAddr>) -> Sides {
        let mut listen: Vec<IpAddr> = listen
            .into_iter()
            .filter(|i| !i.is_unspecified())
            .map(|i| i.to_canonical())
            .collect();
        listen.sort();
        listen.dedup();
        Sides {
            listen,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The specific listen addresses it chooses among.
    pub fn listen(&self) -> &[IpAddr] {
        &self.listen
    }

    /// Our listen address a message to `dest` leaves from: the one the kernel routes from
    /// toward it. None when there is no choice (at most one specific listen address of that
    /// family) or when the route's source is none of ours (e.g. loopback): the caller's
    /// default applies.
    pub fn toward(&self, dest: IpAddr) -> Option<IpAddr> {
        let dest = dest.to_canonical();
        let candidates = self
            .listen
            .iter()
            .filter(|l| l.is_ipv4() == dest.is_ipv4())
            .count();
        if candidates < 2 {
            return None;
        }
        let now = Instant::now();
        let mut cache = crate::guard::lock(&self.cache, "route cache");
        if let Some((side, at)) = cache.get(&dest)
            && now.saturating_duration_since(*at) < TTL
        {
            return *side;
        }
        let side = route_source(dest).filter(|s| self.listen.contains(s));
        if cache.len() >= MAX_CACHED && !cache.contains_key(&dest) {
            crate::metrics::limit_hit("route_cache", Some(dest));
            cache.clear();
        }
        cache.insert(dest, (side, now));
        side
    }
}

/// The source address the kernel picks toward `dest` (None when it has no route).
pub fn route_source(dest: IpAddr) -> Option<IpAddr> {
    use socket2::{Domain, Protocol, Socket, Type};
    let to = SocketAddr::new(dest, 9);
    let s = Socket::new(Domain::for_address(to), Type::DGRAM, Some(Protocol::UDP)).ok()?;
    s.connect(&to.into()).ok()?;
    let local = s.local_addr().ok()?.as_socket()?;
    Some(local.ip().to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One address of a family: no choice, no lookup.
    #[test]
    fn single_homed_has_no_side() {
        let s = Sides::new(["127.0.0.1".parse().unwrap()]);
        assert_eq!(s.toward("127.0.0.1".parse().unwrap()), None);
        let wild = Sides::new(["0.0.0.0".parse().unwrap(), "127.0.0.1".parse().unwrap()]);
        assert_eq!(wild.toward("127.0.0.1".parse().unwrap()), None);
    }

    /// The side is the kernel's route source, not the destination: every loopback
    /// address is reached from 127.0.0.1 (`ip route get 127.0.0.2`: src 127.0.0.1). A route
    /// source that is none of ours gives no side. (Two interfaces: `tests/tests/dual_homed.rs`.)
    #[test]
    fn the_routed_source_is_the_side() {
        let ip = |s: &str| -> IpAddr { s.parse().unwrap() };
        let s = Sides::new([ip("127.0.0.1"), ip("127.0.0.2")]);
        assert_eq!(s.toward(ip("127.0.0.2")), Some(ip("127.0.0.1")));
        assert_eq!(s.toward(ip("127.0.0.1")), Some(ip("127.0.0.1")));
        let s = Sides::new([ip("127.0.0.2"), ip("127.0.0.3")]);
        assert_eq!(s.toward(ip("127.0.0.1")), None);
    }

    /// At the bound the cache starts again, counted.
    #[test]
    fn the_cache_is_bounded_and_counted() {
        let (a, b): (IpAddr, IpAddr) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let s = Sides::new([a, b]);
        let before = crate::metrics::limits_refused("route_cache");
        for i in 0..=MAX_CACHED as u32 {
            let _ = s.toward(IpAddr::from(std::net::Ipv4Addr::from(0x7f01_0000 + i)));
        }
        assert!(crate::guard::lock(&s.cache, "test").len() <= MAX_CACHED);
        assert_eq!(crate::metrics::limits_refused("route_cache"), before + 1);
    }
}
