//! Two namespaces, a sender and the host behind the firewall, joined by a veth pair: the
//! set-up of most integration tests; and a third namespace on a second interface of the
//! host (`Side`), for a dual-homed edge between an inside and an outside. Removed on drop.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    sync::atomic::{AtomicU32, Ordering},
};

use crate::{End, Result, ip, ip_in, neigh, quiet_ipv6, veth};

/// The MACs of `veth-a` and `veth-b`.
const MAC_A: &str = "02:00:00:00:00:0a";
const MAC_B: &str = "02:00:00:00:00:0b";
/// The MACs of `veth-c` and of b's end toward it, `veth-bc`.
const MAC_C: &str = "02:00:00:00:00:0c";
const MAC_BC: &str = "02:00:00:00:00:bc";

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

    /// A third namespace `c` joined to b by a second veth (`veth-c` <-> `veth-bc`) on
    /// 203.0.113.0/24: b becomes dual-homed, with a on one side and c on the other. Neither
    /// a nor c has a route to the other's subnet, and b forwards nothing (a new namespace
    /// does not): what crosses goes through a program in b.
    pub fn add_side(&self) -> Result<Side> {
        let side = Side {
            ns_c: format!("{}-c", self.ns_a.trim_end_matches("-a")),
            if_c: "veth-c",
            if_bc: "veth-bc",
            c4: Ipv4Addr::new(203, 0, 113, 2),
            bc4: Ipv4Addr::new(203, 0, 113, 1),
        };
        ip(&["netns", "add", &side.ns_c])?;
        veth(
            End {
                ns: &side.ns_c,
                name: side.if_c,
                mac: Some(MAC_C),
            },
            End {
                ns: &self.ns_b,
                name: side.if_bc,
                mac: Some(MAC_BC),
            },
        )?;
        for (ns, ifc, v4, peer4, peer_mac) in [
            (&side.ns_c, side.if_c, side.c4, side.bc4, MAC_BC),
            (&self.ns_b, side.if_bc, side.bc4, side.c4, MAC_C),
        ] {
            ip_in(ns, &["addr", "add", &format!("{v4}/24"), "dev", ifc])?;
            ip_in(ns, &["link", "set", "lo", "up"])?;
            neigh(ns, &peer4.to_string(), peer_mac, ifc)?;
            quiet_ipv6(ns, ifc)?;
        }
        Ok(side)
    }

    pub fn a(&self, v6: bool) -> IpAddr {
        if v6 { self.a6.into() } else { self.a4.into() }
    }

    pub fn b(&self, v6: bool) -> IpAddr {
        if v6 { self.b6.into() } else { self.b4.into() }
    }
}

/// Namespace c of a dual-homed b (see [`Pair::add_side`]); deleted on drop, and with it
/// b's second veth.
pub struct Side {
    pub ns_c: String,
    pub if_c: &'static str,
    pub if_bc: &'static str,
    /// c's address, and b's on that side.
    pub c4: Ipv4Addr,
    pub bc4: Ipv4Addr,
}

impl Drop for Side {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.ns_c]);
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and with it the pair.
        let _ = ip(&["netns", "del", &self.ns_a]);
        let _ = ip(&["netns", "del", &self.ns_b]);
    }
}
