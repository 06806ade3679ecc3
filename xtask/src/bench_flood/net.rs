//! The bench's network: three namespaces made for one run and deleted after it.
//!
//! ```text
//!  ns C (callers)            ns E (the edge)                 ns S (servers)
//!  SIPp UAC 198.51.100.1     e0 198.51.100.2 <- XDP here     SIPp UAS 192.0.2.1
//!  trafgen (raw frames)  c0 <-> e0          e1 <-> s0        victim   192.0.2.99
//!                            e1 192.0.2.2                    (nft counter)
//! ```
//!
//! The edge listens on 198.51.100.2:5060 only; ns S routes 198.51.100.0/24 through e1, the
//! edge's default route points into ns C (where answers to spoofed sources die: C does not
//! forward). Every neighbour is static, so no ARP runs while packets are counted. Addresses
//! are documentation ranges (RFC 5737) and 10/8, inside these namespaces only.

use std::process::Command;

use anyhow::{Context as _, bail};
use sip_firewall_netns::{End, Namespace, ip_in, neigh, veth};

/// The SIPp caller, in ns C.
pub const UAC: &str = "198.51.100.1";
/// The edge's SIP address (our daemon or Kamailio), on e0 in ns E.
pub const EDGE: &str = "198.51.100.2";
/// The edge's address toward the servers, on e1.
const EDGE_IN: &str = "192.0.2.2";
/// The called party (SIPp UAS), in ns S.
pub const UAS: &str = "192.0.2.1";
/// The UAS's SIP port.
pub const UAS_PORT: u16 = 5080;
/// Where forged replies ask to be sent: a host of ns S that never sent a request.
pub const VICTIM: &str = "192.0.2.99";
/// The single source of the one-source flood (not an address of ns C).
pub const FLOODER: &str = "198.51.100.66";
/// MAC addresses of c0 and e0 (trafgen writes its frames from one to the other).
pub const MAC_C0: &str = "02:00:00:00:01:01";
pub const MAC_E0: &str = "02:00:00:00:01:02";
const MAC_E1: &str = "02:00:00:00:02:01";
const MAC_S0: &str = "02:00:00:00:02:02";

/// Run a command; fail with its stderr.
pub fn sh(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    Ok(sip_firewall_netns::run(cmd, args)?)
}

/// The three namespaces of one run, deleted on drop (with them the veths and any XDP
/// program attached there).
pub struct Net {
    pub c: Namespace,
    pub e: Namespace,
    pub s: Namespace,
}

impl Net {
    pub fn new(tag: &str) -> anyhow::Result<Net> {
        let id = format!("sfw-flood-{}-{tag}", std::process::id());
        let net = Net {
            c: Namespace::new(format!("{id}-c"))?,
            e: Namespace::new(format!("{id}-e"))?,
            s: Namespace::new(format!("{id}-s"))?,
        };
        let end = |ns, name, mac| End {
            ns,
            name,
            mac: Some(mac),
        };
        veth(end(&net.c, "c0", MAC_C0), end(&net.e, "e0", MAC_E0))?;
        veth(end(&net.e, "e1", MAC_E1), end(&net.s, "s0", MAC_S0))?;
        net.addresses()?;
        net.victim_counter()?;
        Ok(net)
    }

    /// `ip -n NS args`.
    pub fn ip(&self, ns: &str, args: &[&str]) -> anyhow::Result<String> {
        Ok(ip_in(ns, args)?)
    }

    /// A command run in namespace `ns` (nsenter: bpffs pins and paths stay the host's).
    pub fn exec(&self, ns: &str, program: &str) -> Command {
        sip_firewall_netns::exec(ns, program)
    }

    fn addresses(&self) -> anyhow::Result<()> {
        let (c, e, s) = (&self.c, &self.e, &self.s);
        self.ip(c, &["addr", "add", &format!("{UAC}/24"), "dev", "c0"])?;
        self.ip(e, &["addr", "add", &format!("{EDGE}/24"), "dev", "e0"])?;
        self.ip(e, &["addr", "add", &format!("{EDGE_IN}/24"), "dev", "e1"])?;
        self.ip(s, &["addr", "add", &format!("{UAS}/24"), "dev", "s0"])?;
        self.ip(s, &["addr", "add", &format!("{VICTIM}/24"), "dev", "s0"])?;
        self.ip(s, &["route", "add", "198.51.100.0/24", "via", EDGE_IN])?;
        self.ip(e, &["route", "add", "default", "via", UAC])?;
        neigh(c, EDGE, MAC_E0, "c0")?;
        neigh(e, UAC, MAC_C0, "e0")?;
        neigh(e, FLOODER, MAC_C0, "e0")?;
        neigh(e, UAS, MAC_S0, "e1")?;
        neigh(e, VICTIM, MAC_S0, "e1")?;
        neigh(s, EDGE_IN, MAC_E1, "s0")?;
        Ok(())
    }

    /// An nftables counter in ns S of every packet to the victim's address.
    fn victim_counter(&self) -> anyhow::Result<()> {
        let rules = format!(
            "table inet flood {{\n counter victim {{ }}\n chain pre {{\n  \
             type filter hook prerouting priority -300;\n  \
             ip daddr {VICTIM} counter name victim\n }}\n}}\n"
        );
        let file = std::env::temp_dir().join(format!("{}.nft", self.s));
        std::fs::write(&file, rules)?;
        let path = file.to_string_lossy().into_owned();
        let r = sh(
            "nsenter",
            &[
                &format!("--net=/var/run/netns/{}", self.s),
                "nft",
                "-f",
                &path,
            ],
        );
        let _ = std::fs::remove_file(&file);
        r.map(|_| ())
    }

    /// Packets that reached the victim's address so far.
    pub fn reflected(&self) -> anyhow::Result<u64> {
        let out = sh(
            "nsenter",
            &[
                &format!("--net=/var/run/netns/{}", self.s),
                "nft",
                "list",
                "counter",
                "inet",
                "flood",
                "victim",
            ],
        )?;
        // "packets 12 bytes 3456"
        let mut words = out.split_whitespace();
        while let Some(w) = words.next() {
            if w == "packets" {
                return words
                    .next()
                    .context("nft counter")?
                    .parse()
                    .context("nft counter");
            }
        }
        bail!("no packet count in: {out}")
    }

    /// Packets c0 has sent so far (the flood, and SIPp's calls): veth counts what it
    /// handed to e0.
    pub fn c0_tx_packets(&self) -> anyhow::Result<u64> {
        let out = self.ip(&self.c, &["-s", "link", "show", "c0"])?;
        // "    TX:  bytes packets errors ..." then the numbers on the next line.
        let mut lines = out.lines();
        while let Some(l) = lines.next() {
            if l.trim_start().starts_with("TX:") {
                let n = lines.next().context("ip -s link")?;
                return n
                    .split_whitespace()
                    .nth(1)
                    .context("ip -s link")?
                    .parse()
                    .context("ip -s link");
            }
        }
        bail!("no TX counters in: {out}")
    }

    /// How XDP is attached to e0, from `ip -d link`: "native" (driver mode, `prog/xdp`),
    /// "generic" (`prog/xdpgeneric`) or "none".
    pub fn xdp_mode(&self) -> String {
        let out = self
            .ip(&self.e, &["-d", "link", "show", "e0"])
            .unwrap_or_default();
        if out.contains("xdpgeneric") {
            "generic (skb)".into()
        } else if out.contains("prog/xdp") || out.contains(" xdp ") {
            "native (driver)".into()
        } else {
            "none".into()
        }
    }
}
