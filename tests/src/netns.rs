//! Throw-away network namespaces: two hosts joined by a veth pair, removed on drop.
//!
//! Addresses are the documentation ranges inside the test's own namespaces: nothing here
//! ever reaches another host.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::{Context as _, bail};

/// Run `ip` with `args`; fail with its stderr.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    run("ip", args)
}

/// Run a command; fail with its stderr.
pub fn run(cmd: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

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
    pub fn new(tag: &str) -> anyhow::Result<Pair> {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let id = format!("sfw-{}-{tag}-{n}", std::process::id());
        let p = Pair {
            ns_a: format!("{id}-a"),
            ns_b: format!("{id}-b"),
            if_a: "veth-a",
            if_b: "veth-b",
            a4: Ipv4Addr::new(198, 51, 100, 1),
            b4: Ipv4Addr::new(198, 51, 100, 2),
            a6: "2001:db8:51::1".parse()?,
            b6: "2001:db8:51::2".parse()?,
        };
        ip(&["netns", "add", &p.ns_a])?;
        ip(&["netns", "add", &p.ns_b])?;
        ip(&[
            "link", "add", p.if_a, "netns", &p.ns_a, "type", "veth", "peer", "name", p.if_b,
            "netns", &p.ns_b,
        ])?;
        let mac_a = "02:00:00:00:00:0a";
        let mac_b = "02:00:00:00:00:0b";
        for (ns, ifc, mac, v4, v6, peer4, peer6, peer_mac) in [
            (&p.ns_a, p.if_a, mac_a, p.a4, p.a6, p.b4, p.b6, mac_b),
            (&p.ns_b, p.if_b, mac_b, p.b4, p.b6, p.a4, p.a6, mac_a),
        ] {
            let x = |args: &[&str]| {
                let mut full = vec!["netns", "exec", ns.as_str(), "ip"];
                full.extend_from_slice(args);
                ip(&full)
            };
            x(&["link", "set", ifc, "address", mac])?;
            x(&["addr", "add", &format!("{v4}/24"), "dev", ifc])?;
            x(&["addr", "add", &format!("{v6}/64"), "dev", ifc, "nodad"])?;
            x(&["link", "set", ifc, "up"])?;
            x(&["link", "set", "lo", "up"])?;
            x(&[
                "neigh",
                "replace",
                &peer4.to_string(),
                "lladdr",
                peer_mac,
                "dev",
                ifc,
                "nud",
                "permanent",
            ])?;
            x(&[
                "neigh",
                "replace",
                &peer6.to_string(),
                "lladdr",
                peer_mac,
                "dev",
                ifc,
                "nud",
                "permanent",
            ])?;
            quiet_ipv6(ns, ifc)?;
        }
        Ok(p)
    }

    /// Give namespace a one more IPv4 address, 198.51.100.`host` (a second, unrelated
    /// client), with a static neighbour entry in b so that answers need no ARP.
    pub fn add_a4(&self, host: u8) -> anyhow::Result<Ipv4Addr> {
        let addr = Ipv4Addr::new(198, 51, 100, host);
        ip(&[
            "netns",
            "exec",
            &self.ns_a,
            "ip",
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            self.if_a,
        ])?;
        ip(&[
            "netns",
            "exec",
            &self.ns_b,
            "ip",
            "neigh",
            "replace",
            &addr.to_string(),
            "lladdr",
            "02:00:00:00:00:0a",
            "dev",
            self.if_b,
            "nud",
            "permanent",
        ])?;
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

/// Run `f` on a new thread that lives in namespace `ns`: sockets it opens and interfaces it
/// names belong there. The calling thread's namespace is untouched.
pub fn in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
        use std::os::fd::AsRawFd;
        // SAFETY: a valid fd of a network namespace; affects only this thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            bail!("setns {path}: {}", std::io::Error::last_os_error());
        }
        f()
    })
    .join()
    .map_err(|_| anyhow::anyhow!("thread in {ns} panicked"))?
}

/// Send raw Ethernet `frames` out of `veth-a` in namespace `ns_a` (a packet socket: any
/// source address, spoofed at will). How many were sent.
pub fn inject<I>(ns_a: &str, frames: I) -> anyhow::Result<u64>
where
    I: Iterator<Item = Vec<u8>> + Send + 'static,
{
    in_ns(ns_a, move || {
        // SAFETY: plain socket(2), sendto(2) on a raw packet socket we own and close.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        anyhow::ensure!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        let name = std::ffi::CString::new("veth-a")?;
        let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = ifindex as i32;
        addr.sll_halen = 6;
        let mut sent = 0;
        for f in frames {
            let rc = unsafe {
                libc::sendto(
                    fd,
                    f.as_ptr().cast(),
                    f.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if rc > 0 {
                sent += 1;
            }
        }
        unsafe { libc::close(fd) };
        Ok(sent)
    })
}

/// No router solicitations or MLD reports from `ifc` in `ns` while a test counts packets.
fn quiet_ipv6(ns: &str, ifc: &str) -> anyhow::Result<()> {
    let sysctl = |setting: &str| run("ip", &["netns", "exec", ns, "sysctl", "-qw", setting]);
    sysctl(&format!("net.ipv6.conf.{ifc}.router_solicitations=0"))?;
    sysctl("net.ipv6.conf.all.force_mld_version=2")
}
