//! RFC 3263 resolution against a real DNS server: dnsmasq (Debian's dnsmasq-base, installed
//! by `cargo xtask setup`) on a loopback port, serving NAPTR, SRV and A records made here.

use std::{
    net::{SocketAddr, UdpSocket},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sip_firewall::{
    proxy::dns::{Dns, DnsConfig, DnsError},
    server::core::Destination,
};
use sip_firewall_sip::Transport;

mod common;

struct Dnsmasq(Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// dnsmasq on 127.0.0.1:`port` with `records`; None when it is not installed.
fn dnsmasq(port: u16, records: &[&str]) -> Option<Dnsmasq> {
    let mut cmd = Command::new("dnsmasq");
    cmd.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--pid-file",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
        // Names under .test are all ours: anything else under it is NXDOMAIN at once.
        "--local=/test/",
        "--local-ttl=30",
    ])
    .arg(format!("--port={port}"))
    .args(records)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Debian's dnsmasq-base would drop to a `dnsmasq` user that may not exist.
        cmd.arg("--user=root");
    }
    let child = cmd.spawn().ok()?;
    let d = Dnsmasq(child);
    // Up when its port is taken.
    let t0 = Instant::now();
    while UdpSocket::bind(("127.0.0.1", port)).is_ok() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "dnsmasq did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(d)
}

fn udp(a: &str) -> Destination {
    Destination {
        addr: a.parse().unwrap(),
        transport: Transport::Datagram,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naptr_srv_and_a_records_give_the_ordered_targets() {
    let port = common::free_port();
    let Some(_dns) = dnsmasq(
        port,
        &[
            "--naptr-record=example.test,10,10,S,SIP+D2U,,_sip._udp.example.test",
            "--naptr-record=example.test,20,10,S,SIP+D2T,,_sip._tcp.example.test",
            // The first target (priority 10) and the failover (priority 20).
            "--srv-host=_sip._udp.example.test,sip2.example.test,5080,20,0",
            "--srv-host=_sip._udp.example.test,sip1.example.test,5070,10,0",
            "--srv-host=_sip._tcp.example.test,sip1.example.test,5070,10,0",
            "--host-record=sip1.example.test,127.0.0.11",
            "--host-record=sip2.example.test,127.0.0.12",
            "--host-record=plain.test,127.0.0.13",
            "--srv-host=_sips._tcp.secure.test,sip1.example.test,5061,10,0",
        ],
    ) else {
        common::skip::skip(
            "naptr_srv_and_a_records_give_the_ordered_targets",
            "dnsmasq not installed (cargo xtask setup)",
        );
        return;
    };
    let dns = Dns::new(&DnsConfig {
        nameservers: vec![SocketAddr::from(([127, 0, 0, 1], port))],
        ..DnsConfig::default()
    })
    .expect("resolver");
    // NAPTR (UDP first by order) -> SRV by priority -> A.
    assert_eq!(
        dns.targets("sip:bob@example.test").await,
        Ok(vec![udp("127.0.0.11:5070"), udp("127.0.0.12:5080")])
    );
    // A transport named: its SRV records only.
    assert_eq!(
        dns.targets("sip:bob@example.test;transport=tcp").await,
        Ok(vec![Destination {
            addr: "127.0.0.11:5070".parse().unwrap(),
            transport: Transport::Stream
        }])
    );
    // sips: the _sips._tcp records, over TLS.
    assert_eq!(
        dns.targets("sips:bob@secure.test").await,
        Ok(vec![Destination {
            addr: "127.0.0.11:5061".parse().unwrap(),
            transport: Transport::Tls
        }])
    );
    // No NAPTR, no SRV: the A record on the default port (4.2).
    assert_eq!(
        dns.targets("sip:bob@plain.test").await,
        Ok(vec![udp("127.0.0.13:5060")])
    );
    // A port named: A/AAAA only.
    assert_eq!(
        dns.targets("sip:bob@sip2.example.test:5099").await,
        Ok(vec![udp("127.0.0.12:5099")])
    );
    // Nothing there: an answer, not a hang.
    assert_eq!(
        dns.targets("sip:bob@nothing.test").await,
        Err(DnsError::NotFound)
    );
    // An IP host is not DNS's business.
    assert_eq!(
        dns.targets("sip:bob@127.0.0.1").await,
        Err(DnsError::NotADomain)
    );
}

/// Name servers that do not answer: the resolution ends within `[dns] timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_name_server_costs_at_most_the_timeout() {
    // A bound UDP socket that never answers.
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let dns = Dns::new(&DnsConfig {
        nameservers: vec![silent.local_addr().expect("addr")],
        timeout: Duration::from_secs(1),
        ..DnsConfig::default()
    })
    .expect("resolver");
    // A generous deadline: the resolver's own timeout must end it long before.
    let r = tokio::time::timeout(Duration::from_secs(30), dns.targets("sip:bob@example.test"))
        .await
        .expect("the resolution ends (no hang)");
    assert!(
        matches!(r, Err(DnsError::Failed(_) | DnsError::NotFound)),
        "{r:?}"
    );
}
