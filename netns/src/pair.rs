//! Two namespaces, a sender and the host behind the firewall, joined by a veth pair: the
//! set-up of most integration tests. Removed on drop.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicU32, Ordering},
};

use crate::{End, Result, ip, ip_in, neigh, quiet_ipv6, veth};

/// The MACs of `veth-a` and `veth-b`.
const MAC_A: &str = "02:00:00:00:00:0a";
const MAC_B: &str = "02:00:00:00:00:0b";

/// Two namespaces, `a` (the sender) and `b` (the host behind the firewall), joined by
/// `veth-a` <-> `veth-b`.
pub struct Pair {
    pub ns_a: String,
    pub ns_b: String,
    pub if_a: &'static str,
    pub if_b: &'static str,
    pub a4: Ipv4Addr,
    pub b4: Ipv4Addr,
    pub a6: Ipv6Addr,
    pub b6: Ipv6Addr,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Pair {
    /// Make the namespaces, the veth pair, addresses and static neighbours (so that no ARP
    /// or neighbour discovery runs while a test counts packets).
    pub fn new(tag: &str) -> Result<Pair> {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let id = format!("sfw-{}-{tag}-{n}", std::process::id());
        // Made before the namespaces: a failure below drops it, and that deletes them.
        let p = Pair {
            ns_a: format!("{id}-a"),
            ns_b: format!("{id}-b"),
            if_a: "veth-a",
            if_b: "veth-b",
            a4: Ipv4Addr::new(198, 51, 100, 1),
            b4: Ipv4Addr::new(198, 51, 100, 2),
            a6: Ipv6Addr::new(0x2001, 0xdb8, 0x51, 0, 0, 0, 0, 1),
            b6: Ipv6Addr::new(0x2001, 0xdb8, 0x51, 0, 0, 0, 0, 2),
        };
        ip(&["netns", "add", &p.ns_a])?;
        ip(&["netns", "add", &p.ns_b])?;
        veth(
            End {
                ns: &p.ns_a,
                name: p.if_a,
                mac: Some(MAC_A),
            },
            End {
                ns: &p.ns_b,
                name: p.if_b,
                mac: Some(MAC_B),
            },
        )?;
        for (ns, ifc, v4, v6, peer4, peer6, peer_mac) in [
            (&p.ns_a, p.if_a, p.a4, p.a6, p.b4, p.b6, MAC_B),
            (&p.ns_b, p.if_b, p.b4, p.b6, p.a4, p.a6, MAC_A),
        ] {
            ip_in(ns, &["addr", "add", &format!("{v4}/24"), "dev", ifc])?;
            ip_in(
                ns,
                &["addr", "add", &format!("{v6}/64"), "dev", ifc, "nodad"],
            )?;
            ip_in(ns, &["link", "set", "lo", "up"])?;
            neigh(ns, &peer4.to_string(), peer_mac, ifc)?;
            neigh(ns, &peer6.to_string(), peer_mac, ifc)?;
            quiet_ipv6(ns, ifc)?;
        }
        Ok(p)
    }

    /// Give namespace a one more IPv4 address, 198.51.100.`host` (a second, unrelated
    /// client), with a static neighbour entry in b so that answers need no ARP.
    pub fn add_a4(&self, host: u8) -> Result<Ipv4Addr> {
        let addr = Ipv4Addr::new(198, 51, 100, host);
        ip_in(
            &self.ns_a,
            &["addr", "add", &format!("{addr}/24"), "dev", self.if_a],
        )?;
        neigh(&self.ns_b, &addr.to_string(), MAC_A, self.if_b)?;
        Ok(addr)
    }

    pub fn a(&self, v6: bool) -> IpAddr {
        if v6 { self.a6.into() } else { self.a4.into() }
    }

    pub fn b(&self, v6: bool) -> IpAddr {
        if v6 { self.b6.into() } else { self.b4.into() }
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and with it the pair.
        let _ = ip(&["netns", "del", &self.ns_a]);
        let _ = ip(&["netns", "del", &self.ns_b]);
    }
}
