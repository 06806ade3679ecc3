//! What the daemon's own integration tests use of the test-support library
//! (`sip-firewall-tests`, `tests/src`): a free loopback port, the daemon binary started on
//! loopback with its own state and admin socket (no root: `--xdp-mode off`), a metrics
//! scrape, the loud skip; and dnsmasq for the RFC 3263 tests.

#![allow(dead_code, unused_imports)]

use std::{
    net::UdpSocket,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub use sip_firewall_tests::{
    daemon::Loopback as Daemon, metrics::scrape_opt, ports::free_port, skip,
};

/// Start this package's daemon binary on loopback with `config` (see
/// [`sip_firewall_tests::daemon::Loopback::start`]).
pub fn start(tag: &str, config: &str, rust_log: Option<&str>) -> Daemon {
    Daemon::start(
        env!("CARGO_BIN_EXE_sip-firewall"),
        tag,
        config,
        rust_log,
        &[],
    )
}

/// dnsmasq, killed when dropped.
pub struct Dnsmasq(Child);

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// dnsmasq on 127.0.0.1:`port` with `records`; None, after `test` says loudly it is
/// skipped, when it is not installed.
pub fn dnsmasq(test: &str, port: u16, records: &[&str]) -> Option<Dnsmasq> {
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
    ])
    .args(
        // 30 s unless the caller sets its own TTL.
        (!records.iter().any(|r| r.starts_with("--local-ttl"))).then_some("--local-ttl=30"),
    )
    .arg(format!("--port={port}"))
    .args(records)
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // Debian's dnsmasq-base would drop to a `dnsmasq` user that may not exist.
        cmd.arg("--user=root");
    }
    let Ok(child) = cmd.spawn() else {
        skip(test, "dnsmasq not installed (cargo xtask setup)");
        return None;
    };
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
