//! `cargo xtask bench cluster`: ban propagation between two release daemons sharing a
//! `redis-server` (on a Unix socket, no network). For each of [`BANS`] addresses: `ban add`
//! on A (over its admin socket) until B's `ban list` shows it, then `ban del` on A until B's
//! list no longer does; p50/p99/max of both.
//!
//! Both daemons run with `--xdp-mode off` (no interface to attach to without namespaces):
//! B's list is written after its XDP map when XDP is on, so the figures leave out one map
//! update per ban (microseconds). Redis, both daemons and this poller share the machine.
//! Not measured: CPU per call with the location in Redis (registrations are not shared yet).

use std::{
    io::{BufRead as _, BufReader, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{cargo, root, run};

/// Bans measured (`SIPFW_BENCH_CLUSTER_BANS` overrides it, for a quick check).
const BANS: usize = 1000;
/// Longest wait for one ban to show on B.
const LIMIT: Duration = Duration::from_secs(5);

/// A child process killed when dropped.
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One admin request (a JSON line), the answer line.
fn ask(sock: &Path, req: &str) -> anyhow::Result<String> {
    let mut s = UnixStream::connect(sock).with_context(|| format!("{}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(req.as_bytes())?;
    s.write_all(b"\n")?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line)?;
    Ok(line)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

fn daemon(bin: &Path, dir: &Path, node: &str, redis: &Path) -> anyhow::Result<(Guard, PathBuf)> {
    let d = dir.join(node);
    std::fs::create_dir_all(&d)?;
    let cfg = d.join("sip-firewall.toml");
    std::fs::write(
        &cfg,
        format!(
            "[auth]\nsecret = \"bench-cluster-secret\"\n[cluster]\nredis = \"redis+unix://{}\"\nnode = \"{node}\"\n",
            redis.display()
        ),
    )?;
    let sock = d.join("admin.sock");
    let sip = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let child = Command::new(bin)
        .args(["run", "--xdp-mode", "off", "--config"])
        .arg(&cfg)
        .args(["--sip-listen", &sip.to_string()])
        .args(["--metrics-listen", &metrics.to_string()])
        .arg("--state-dir")
        .arg(d.join("state"))
        .arg("--admin-socket")
        .arg(&sock)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok((Guard(child), sock))
}

fn wait_connected(sock: &Path) -> anyhow::Result<()> {
    let t0 = Instant::now();
    loop {
        if ask(sock, r#"{"cmd":"status"}"#).is_ok_and(|s| s.contains(r#""connected":true"#)) {
            return Ok(());
        }
        if t0.elapsed() > Duration::from_secs(20) {
            bail!("{} did not join the cluster", sock.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Poll B's ban list until `ip` is (`want`) on it; the time from `t0`.
fn until(sock: &Path, ip: &str, want: bool, t0: Instant) -> anyhow::Result<Duration> {
    let needle = format!(r#""ip":"{ip}""#);
    loop {
        let list = ask(sock, r#"{"cmd":"ban_list"}"#)?;
        if list.contains(&needle) == want {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > LIMIT {
            bail!("{ip}: not propagated within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

pub fn run_bench() -> anyhow::Result<()> {
    if Command::new("redis-server")
        .arg("--version")
        .output()
        .is_err()
    {
        bail!("redis-server is not installed (cargo xtask setup installs it)");
    }
    let bans: usize = std::env::var("SIPFW_BENCH_CLUSTER_BANS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(BANS);
    // `SIPFW_BENCH_DEBUG=1`: the debug daemon already built (a smoke check of the bench).
    let bin = if std::env::var_os("SIPFW_BENCH_DEBUG").is_some() {
        root().join("target/debug/sip-firewall")
    } else {
        run(cargo().args(["build", "--release", "--package", "sip-firewall"]))?;
        root().join("target/release/sip-firewall")
    };
    let dir = std::env::temp_dir().join(format!("sipfw-bench-cluster-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let redis_sock = dir.join("redis.sock");
    let _redis = Guard(
        Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&redis_sock)
            .args(["--unixsocketperm", "700"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .spawn()
            .context("starting redis-server")?,
    );
    let t0 = Instant::now();
    while UnixStream::connect(&redis_sock).is_err() {
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("redis-server did not come up");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let (_a, sock_a) = daemon(&bin, &dir, "edge-a", &redis_sock)?;
    let (_b, sock_b) = daemon(&bin, &dir, "edge-b", &redis_sock)?;
    wait_connected(&sock_a)?;
    wait_connected(&sock_b)?;

    let mut add = Vec::with_capacity(bans);
    let mut del = Vec::with_capacity(bans);
    for i in 0..bans {
        let ip = format!("10.77.{}.{}", i / 250, i % 250 + 1);
        let t = Instant::now();
        let r = ask(
            &sock_a,
            &format!(r#"{{"cmd":"ban_add","ip":"{ip}","for_secs":3600,"reason":"bench"}}"#),
        )?;
        if !r.contains(r#""ok":true"#) {
            bail!("ban add {ip}: {r}");
        }
        add.push(until(&sock_b, &ip, true, t)?);
        let t = Instant::now();
        let r = ask(&sock_a, &format!(r#"{{"cmd":"ban_del","ip":"{ip}"}}"#))?;
        if !r.contains(r#""ok":true"#) {
            bail!("ban del {ip}: {r}");
        }
        del.push(until(&sock_b, &ip, false, t)?);
    }
    add.sort();
    del.sort();
    println!(
        "cluster ban propagation, A -> Redis -> B, {bans} bans (ms from the admin request on A to B's list):"
    );
    for (what, v) in [("ban add", &add), ("ban del", &del)] {
        println!(
            "  {what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            pct(v, 0.50),
            pct(v, 0.99),
            pct(v, 1.0)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
