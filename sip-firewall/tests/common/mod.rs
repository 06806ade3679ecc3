//! What the daemon's own integration tests share: a free loopback port, the daemon binary
//! started on loopback with its own state and admin socket (no root: `--xdp-mode off`), and
//! a metrics scrape.

#![allow(dead_code)]

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

#[path = "../../../tests/src/skip.rs"]
pub mod skip;

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The daemon, killed when dropped.
pub struct Daemon {
    pub child: Child,
    pub sip: SocketAddr,
    pub metrics: SocketAddr,
    pub dir: TempDir,
    /// Held while the daemon runs, for tests that run one daemon at a time.
    pub turn: Option<std::sync::MutexGuard<'static, ()>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free on both UDP and TCP.
pub fn free_port() -> u16 {
    loop {
        let t = TcpListener::bind("127.0.0.1:0").expect("bind tcp");
        let port = t.local_addr().expect("addr").port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// Start the daemon on loopback with `config`, its own state and admin socket (tests run side
/// by side), and wait until it answers. `rust_log` sets its log filter.
pub fn start(tag: &str, config: &str, rust_log: Option<&str>) -> Daemon {
    let dir = std::env::temp_dir().join(format!(
        "sipfw-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let cfg = dir.join("sip-firewall.toml");
    std::fs::write(&cfg, config).expect("config");
    let sip: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let metrics: SocketAddr = ([127, 0, 0, 1], free_port()).into();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sip-firewall"));
    cmd.args(["run", "--xdp-mode", "off", "--config"])
        .arg(&cfg)
        .args([
            "--sip-listen",
            &sip.to_string(),
            "--metrics-listen",
            &metrics.to_string(),
        ])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--admin-socket")
        .arg(dir.join("admin.sock"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(filter) = rust_log {
        cmd.env("RUST_LOG", filter);
    }
    let child = cmd.spawn().expect("spawn sip-firewall");
    let mut d = Daemon {
        child,
        sip,
        metrics,
        dir: TempDir(dir),
        turn: None,
    };
    let t0 = Instant::now();
    loop {
        if let Some(status) = d.child.try_wait().expect("try_wait") {
            panic!("sip-firewall exited early: {status}");
        }
        if scrape_opt(d.metrics).is_some() && TcpStream::connect(d.sip).is_ok() {
            return d;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "daemon did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `GET /metrics`: every sample by its series (`name{labels}`), or `None` when the endpoint
/// does not answer 200.
pub fn scrape_opt(addr: SocketAddr) -> Option<HashMap<String, f64>> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (_, body) = text.split_once("\r\n\r\n")?;
    if !text.starts_with("HTTP/1.1 200") {
        return None;
    }
    Some(
        body.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect(),
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

/// dnsmasq on 127.0.0.1:`port` with `records`; None when it is not installed.
pub fn dnsmasq(port: u16, records: &[&str]) -> Option<Dnsmasq> {
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
