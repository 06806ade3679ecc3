//! `cargo xtask bench cluster`: ban propagation between two release daemons sharing a
//! `redis-server` (on a Unix socket, no network). For each of [`BANS`] addresses: `ban add`
//! on A (over its admin socket) until B's `ban list` shows it, then `ban del` on A until B's
//! list no longer does; p50/p99/max of both.
//!
//! Both daemons run with `--xdp-mode off` (no interface to attach to without namespaces):
//! B's list is written after its XDP map when XDP is on, so the figures leave out one map
//! update per ban (microseconds). Redis, both daemons and this poller share the machine.
//!
//! Then, in the same run, CPU per call with the location store in Redis against the
//! in-memory one: a daemon with `[cluster]` (registrations written through to Redis,
//! heartbeats, the events channel) and one without, each with bob registered (SIPp) and
//! [`CALLS`] SIPp calls (INVITE/180/200/ACK/BYE, `tests/sipp/uac_bench.xml`) at [`RATE`]
//! calls/s; the daemon's CPU time (user + system, `/proc/<pid>/stat`) over the calls,
//! divided by the calls that succeeded; then CPU per REGISTER (one SIPp client refreshing
//! its binding, a tenth as many times as calls): the write-through is paid there, a call
//! only reads the local cache.

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
/// Calls per store (`SIPFW_BENCH_CLUSTER_CALLS` overrides it).
const CALLS: u32 = 2000;
/// Calls per second.
const RATE: u32 = 100;

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
            "[auth]\nsecret = \"62656e63682d636c75737465722d7365637265742e2e2e2e2e2e2e2e2e2e2e2e\"\n[cluster]\nredis = \"redis+unix://{}\"\nnode = \"{node}\"\n",
            redis.display()
        ),
    )?;
    let sock = d.join("admin.sock");
    let sip = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let child = crate::daemon::loopback(bin, &d, &sip.to_string(), &metrics.to_string())
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
    let bans = env_number("SIPFW_BENCH_CLUSTER_BANS", BANS as u32)? as usize;
    let calls = env_number("SIPFW_BENCH_CLUSTER_CALLS", CALLS)?;
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
    let _redis = start_redis(&dir, &redis_sock)?;
    {
        let (_a, sock_a) = daemon(&bin, &dir, "edge-a", &redis_sock)?;
        let (_b, sock_b) = daemon(&bin, &dir, "edge-b", &redis_sock)?;
        wait_connected(&sock_a)?;
        wait_connected(&sock_b)?;
        let (add, del) = ban_propagation(&sock_a, &sock_b, bans)?;
        print_propagation(bans, &add, &del);
    }
    cpu_comparison(&bin, &dir, &redis_sock, calls)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// A number from the environment (a quick check), else `default`.
fn env_number(var: &str, default: u32) -> anyhow::Result<u32> {
    match std::env::var(var) {
        Ok(v) => v.parse().with_context(|| format!("{var}={v}")),
        Err(_) => Ok(default),
    }
}

/// `redis-server` on the Unix socket `sock` (no network, no persistence), up.
fn start_redis(dir: &Path, sock: &Path) -> anyhow::Result<Guard> {
    let redis = Guard(
        Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(sock)
            .args(["--unixsocketperm", "700"])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .spawn()
            .context("starting redis-server")?,
    );
    let t0 = Instant::now();
    while UnixStream::connect(sock).is_err() {
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("redis-server did not come up");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(redis)
}

/// For each of `bans` addresses: `ban add` on A until B lists it, `ban del` on A until B no
/// longer does; the two times of each, sorted.
fn ban_propagation(
    sock_a: &Path,
    sock_b: &Path,
    bans: usize,
) -> anyhow::Result<(Vec<Duration>, Vec<Duration>)> {
    let mut add = Vec::with_capacity(bans);
    let mut del = Vec::with_capacity(bans);
    for i in 0..bans {
        let ip = format!("10.77.{}.{}", i / 250, i % 250 + 1);
        let t = Instant::now();
        let r = ask(
            sock_a,
            &format!(r#"{{"cmd":"ban_add","ip":"{ip}","for_secs":3600,"reason":"bench"}}"#),
        )?;
        if !r.contains(r#""ok":true"#) {
            bail!("ban add {ip}: {r}");
        }
        add.push(until(sock_b, &ip, true, t)?);
        let t = Instant::now();
        let r = ask(sock_a, &format!(r#"{{"cmd":"ban_del","ip":"{ip}"}}"#))?;
        if !r.contains(r#""ok":true"#) {
            bail!("ban del {ip}: {r}");
        }
        del.push(until(sock_b, &ip, false, t)?);
    }
    add.sort();
    del.sort();
    Ok((add, del))
}

fn print_propagation(bans: usize, add: &[Duration], del: &[Duration]) {
    println!(
        "cluster ban propagation, A -> Redis -> B, {bans} bans (ms from the admin request on A to B's list):"
    );
    for (what, v) in [("ban add", add), ("ban del", del)] {
        println!(
            "  {what}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            pct(v, 0.50),
            pct(v, 0.99),
            pct(v, 1.0)
        );
    }
}

/// CPU per call and per REGISTER with the location in memory, then in Redis; printed.
fn cpu_comparison(bin: &Path, dir: &Path, redis_sock: &Path, calls: u32) -> anyhow::Result<()> {
    println!(
        "CPU per call, location in memory vs in Redis ({calls} calls at {RATE}/s each, SIPp on \
         the same machine; daemon CPU = utime + stime from /proc/<pid>/stat):"
    );
    for redis in [None, Some(redis_sock)] {
        let c = cpu_per_call(bin, dir, redis, calls)?;
        let what = if redis.is_some() {
            "Redis (write-through)"
        } else {
            "in memory"
        };
        println!(
            "  {what:<22} {:>6} calls ok, daemon CPU {:.0} ms, {:.3} ms/call; {} REGISTERs{}, {:.3} ms/REGISTER",
            c.calls_ok,
            c.calls * 1000.0,
            if c.calls_ok > 0 {
                c.calls * 1000.0 / c.calls_ok as f64
            } else {
                f64::NAN
            },
            c.registers,
            if c.registers_ok { "" } else { " (some failed)" },
            c.registers_cpu * 1000.0 / f64::from(c.registers)
        );
    }
    Ok(())
}

/// CPU seconds (user + system) a process used so far.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').context("/proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5): 12 and 13 after the command.
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(f.get(i).context("/proc stat field")?.parse::<f64>()?)
    };
    let hz = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or(100.0);
    Ok((ticks(11)? + ticks(12)?) / hz)
}

/// bob registers from `port` (SIPp); whether it worked.
fn register_bob(dir: &Path, sip: &str, port: &str) -> anyhow::Result<bool> {
    Ok(Command::new("sipp")
        .arg(sip)
        .arg("-sf")
        .arg(root().join("tests/sipp/register.xml"))
        .args(["-set", "domain", "example.com", "-s", "bob"])
        .args(["-au", "bob", "-ap", "bench", "-m", "1"])
        .args(["-i", "127.0.0.1", "-p", port, "-timeout", "10", "-nostdin"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success())
}

/// `calls` calls through a daemon with the location in Redis (`redis`) or in memory: the
/// daemon's CPU seconds over the calls and the calls that succeeded, then over REGISTERs.
fn cpu_per_call(bin: &Path, dir: &Path, redis: Option<&Path>, calls: u32) -> anyhow::Result<Cpu> {
    let name = if redis.is_some() {
        "cpu-redis"
    } else {
        "cpu-memory"
    };
    let d = dir.join(name);
    std::fs::create_dir_all(&d)?;
    let (daemon, sip) = call_daemon(bin, &d, name, redis)?;
    let pid = daemon.0.id();
    let uas_port = crate::sipp::free_port()?.to_string();
    if !register_bob(&d, &sip, &uas_port)? {
        bail!("bob could not register ({name})");
    }
    let _uas = start_uas(&d, &uas_port)?;
    let cpu0 = cpu_seconds(pid)?;
    let ok = run_calls(&d, &sip, calls)?;
    let cpu = cpu_seconds(pid)? - cpu0;
    // REGISTERs (digest, then the binding written, through to Redis with `[cluster]`):
    // one SIPp client refreshing its binding `registers` times.
    let registers = (calls / 10).max(1);
    let cpu1 = cpu_seconds(pid)?;
    let reg_ok = run_registers(&d, &sip, registers)?;
    let reg_cpu = cpu_seconds(pid)? - cpu1;
    Ok(Cpu {
        calls: cpu,
        calls_ok: ok,
        registers,
        registers_ok: reg_ok,
        registers_cpu: reg_cpu,
    })
}

/// A release daemon with bench_proxy's configuration (plus `[cluster]` when `redis`), up
/// (joined the cluster, or its SIP port taken); its SIP address.
fn call_daemon(
    bin: &Path,
    d: &Path,
    name: &str,
    redis: Option<&Path>,
) -> anyhow::Result<(Guard, String)> {
    let mut config = crate::bench_proxy::CONFIG.to_string();
    if let Some(sock) = redis {
        config = config.replace("[auth]\n", "[auth]\nsecret = \"62656e63682d636c75737465722d7365637265742e2e2e2e2e2e2e2e2e2e2e2e\"\n");
        config.push_str(&format!(
            "[cluster]\nredis = \"redis+unix://{}\"\nnode = \"{name}\"\n",
            sock.display()
        ));
    }
    let cfg = d.join("sip-firewall.toml");
    std::fs::write(&cfg, config)?;
    let sip = format!("127.0.0.1:{}", crate::sipp::free_port()?);
    let metrics = format!("127.0.0.1:{}", crate::sipp::free_port()?);
    let daemon = Guard(
        crate::daemon::loopback(bin, d, &sip, &metrics)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?,
    );
    if redis.is_some() {
        wait_connected(&d.join("admin.sock"))?;
    } else {
        let t0 = Instant::now();
        while std::net::TcpStream::connect(&sip).is_err() {
            if t0.elapsed() > Duration::from_secs(20) {
                bail!("the daemon did not come up");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok((daemon, sip))
}

/// bob's SIPp UAS on `port`, listening.
fn start_uas(d: &Path, port: &str) -> anyhow::Result<Guard> {
    let uas = Guard(
        Command::new("sipp")
            .arg("-sf")
            .arg(root().join("tests/sipp/uas.xml"))
            .args(["-i", "127.0.0.1", "-p", port, "-nostdin"])
            .args(["-max_socket", "10000"])
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    // bob's UAS must be listening before the first call: wait until its port is taken.
    let t0 = Instant::now();
    while std::net::UdpSocket::bind(format!("127.0.0.1:{port}")).is_ok() {
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("the UAS did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(uas)
}

/// `calls` SIPp calls alice -> bob through `sip` at [`RATE`]/s; how many succeeded.
fn run_calls(d: &Path, sip: &str, calls: u32) -> anyhow::Result<u64> {
    let port = crate::sipp::free_port()?.to_string();
    let mut uac = Guard(
        Command::new("sipp")
            .arg(sip)
            .arg("-sf")
            .arg(root().join("tests/sipp/uac_bench.xml"))
            .args(["-set", "domain", "example.com", "-s", "bob"])
            .args(["-i", "127.0.0.1", "-p", &port, "-nostdin"])
            .args(["-r", &RATE.to_string(), "-m", &calls.to_string()])
            .args(["-l", &(RATE * 10).to_string(), "-max_socket", "10000"])
            .args(["-timeout", &(calls / RATE + 40).to_string()])
            .args(["-trace_stat", "-stf", "stat.csv"])
            .current_dir(d)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    // Its exit status says whether every call passed; the count comes from its statistics.
    let _ = uac.0.wait()?;
    let stat = std::fs::read_to_string(d.join("stat.csv")).unwrap_or_default();
    Ok(stat
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .split_first()
        .and_then(|(head, rows)| {
            let i = head.split(';').position(|h| h == "SuccessfulCall(C)")?;
            rows.last()?.split(';').nth(i)?.trim().parse::<u64>().ok()
        })
        .unwrap_or(0))
}

/// One SIPp client refreshing bob's binding `registers` times; whether all succeeded.
fn run_registers(d: &Path, sip: &str, registers: u32) -> anyhow::Result<bool> {
    let port = crate::sipp::free_port()?.to_string();
    Ok(Command::new("sipp")
        .arg(sip)
        .arg("-sf")
        .arg(root().join("tests/sipp/register.xml"))
        .args(["-set", "domain", "example.com", "-s", "bob"])
        .args(["-au", "bob", "-ap", "bench"])
        .args(["-m", &registers.to_string(), "-r", &RATE.to_string()])
        .args(["-i", "127.0.0.1", "-p", &port, "-nostdin"])
        .args(["-timeout", &(registers / RATE + 40).to_string()])
        .current_dir(d)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success())
}

/// What [`cpu_per_call`] measured.
struct Cpu {
    /// CPU seconds over the calls.
    calls: f64,
    calls_ok: u64,
    registers: u32,
    /// Whether every REGISTER succeeded.
    registers_ok: bool,
    registers_cpu: f64,
}
