//! `cargo xtask bench proxy`: SIPp calls through the release daemon on loopback at rising
//! rates. A call is INVITE/100/180/200/ACK/BYE/200 from an outside caller to a registered
//! user (SIPp UAS), along the proxy's Record-Route. For each rate: calls attempted, the
//! success ratio, and the call setup time (INVITE sent to 200 received) at p50 and p99.
//! The result is the highest rate at which more than 99.9% of the calls succeed.
//!
//! Then, in the same run and at one rate, the daemon's CPU per call (its user plus system
//! time from `/proc`) with the caller over UDP and with the caller over TLS. SIPp
//! has no TLS: its TCP stream goes through `socat`, which holds one TLS connection to the
//! daemon, as a phone keeps one for its calls; the handshake is not part of a call's cost.
//!
//! Both SIPp instances and the daemon share the machine: the figures are a floor for the
//! proxy, not a measure of it alone.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    root,
    sipp::{Uac, free_port, ms, percentile, rtts, wait_listening},
};

/// Seconds of calls per rate step.
pub(crate) const STEP_SECONDS: u32 = 5;
/// Rates tried, in calls per second, until one fails.
pub(crate) const RATES: &[u32] = &[50, 100, 200, 400, 800, 1200, 1600, 2400, 3200];
/// The success ratio a rate must exceed.
pub(crate) const PASS: f64 = 0.999;

pub(crate) const CONFIG: &str = r#"
[sip]
domains = ["example.com"]
# One loopback caller stands for every caller: an INVITE's server transaction lives 32 s
# after its 2xx (RFC 6026), so the per-source cap (1000) would refuse calls above ~30/s.
max_transactions_per_source = 1000000
[auth]
algorithms = ["MD5"]
users = [{ user = "bob", domain = "example.com", password = "bench" }]
# One loopback source sends every call: the per-source flood limit and request rate would
# ban it, and they are not what this benchmark measures.
[xdp]
flood_rate = 0
pressure_budget = 0
[bans]
request_limit = 0
"#;

/// A child process killed when dropped.
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One step's outcome.
struct Step {
    rate: u32,
    attempted: u64,
    succeeded: u64,
    p50_ms: f64,
    p99_ms: f64,
}

impl Step {
    fn ratio(&self) -> f64 {
        if self.attempted == 0 {
            0.0
        } else {
            self.succeeded as f64 / self.attempted as f64
        }
    }
}

pub fn run_bench() -> anyhow::Result<()> {
    if Command::new("sipp").arg("-v").output().is_err() {
        bail!("sipp is not installed (cargo xtask setup installs sip-tester)");
    }
    crate::bench_flood::release_daemon()?;
    let dir = std::env::temp_dir().join(format!("sipfw-bench-proxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let d = start_daemon(&dir, None)?;
    let scenarios = root().join("tests/sipp");
    let _uas = register_and_answer(&dir, &scenarios, &d.sip)?;

    eprintln!(
        "bench proxy: {STEP_SECONDS} s of calls per rate, pass = more than 99.9% successful; \
         SIPp measures setup times in whole milliseconds"
    );
    println!(
        "{:>8} {:>10} {:>10} {:>9} {:>10} {:>10}",
        "calls/s", "attempted", "succeeded", "success", "setup p50", "setup p99"
    );
    let mut best: Option<Step> = None;
    for &rate in RATES {
        let step = step(&dir, &scenarios, &d.sip, rate)?;
        println!(
            "{:>8} {:>10} {:>10} {:>8.3}% {:>10} {:>10}",
            step.rate,
            step.attempted,
            step.succeeded,
            step.ratio() * 100.0,
            ms(step.p50_ms),
            ms(step.p99_ms)
        );
        if step.ratio() <= PASS {
            break;
        }
        best = Some(step);
    }
    transactions_drained(&d.metrics);
    cpu_per_call(&dir, &scenarios, &d, d.process.0.id())?;
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
    match best {
        Some(s) => println!(
            "highest rate with >99.9% successful calls: {} calls/s (call setup p50 {}, p99 {})",
            s.rate,
            ms(s.p50_ms),
            ms(s.p99_ms)
        ),
        None => println!("no rate reached 99.9% successful calls"),
    }
    Ok(())
}

/// The release daemon of the run and where it listens.
pub(crate) struct Daemon {
    pub(crate) process: Guard,
    pub(crate) sip: String,
    metrics: String,
    tls: String,
    /// Whether a certificate could be made (else no TLS listener).
    have_tls: bool,
}

/// Start the release daemon in `dir` (UDP/TCP, metrics, TLS when openssl makes a
/// certificate) and wait until it listens.
pub(crate) fn start_daemon(dir: &Path, workers: Option<usize>) -> anyhow::Result<Daemon> {
    let bin = crate::bench_flood::daemon_binary();
    let cfg = dir.join("sip-firewall.toml");
    // `[sip] workers` when given (`bench proxy-workers`); the config's default otherwise.
    let config = match workers {
        Some(n) => CONFIG.replacen("[sip]\n", &format!("[sip]\nworkers = {n}\n"), 1),
        None => CONFIG.to_string(),
    };
    std::fs::write(&cfg, &config)?;
    let sip = format!("127.0.0.1:{}", free_port()?);
    let metrics = format!("127.0.0.1:{}", free_port()?);
    let tls = format!("127.0.0.1:{}", free_port()?);
    let have_tls = test_certificate(dir).is_ok();
    if have_tls {
        std::fs::write(
            &cfg,
            format!(
                "{config}[tls]\nlisten = [\"{tls}\"]\ncertificate = \"{}\"\nprivate_key = \"{}\"\n",
                dir.join("cert.pem").display(),
                dir.join("key.pem").display()
            ),
        )?;
    }
    let process = Guard(
        crate::daemon::loopback(&bin, dir, &sip, &metrics)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?,
    );
    wait_listening(&sip, Duration::from_secs(20)).context("the daemon did not come up")?;
    Ok(Daemon {
        process,
        sip,
        metrics,
        tls,
        have_tls,
    })
}

/// Register bob through the daemon at `sip`, then answer his calls with a SIPp UAS on the
/// port he registered from (the returned guard).
pub(crate) fn register_and_answer(
    dir: &Path,
    scenarios: &Path,
    sip: &str,
) -> anyhow::Result<Guard> {
    let uas_port = free_port()?.to_string();
    let reg = Command::new("sipp")
        .arg(sip)
        .arg("-sf")
        .arg(scenarios.join("register.xml"))
        .args([
            "-set",
            "domain",
            "example.com",
            "-s",
            "bob",
            "-au",
            "bob",
            "-ap",
            "bench",
        ])
        .args([
            "-m",
            "1",
            "-i",
            "127.0.0.1",
            "-p",
            &uas_port,
            "-timeout",
            "10",
            "-nostdin",
        ])
        .current_dir(dir)
        .stdout(Stdio::null())
        .status()?;
    if !reg.success() {
        bail!("bob could not register: {reg}");
    }
    let uas = Guard(
        Command::new("sipp")
            .arg("-sf")
            .arg(scenarios.join("uas.xml"))
            .args(["-i", "127.0.0.1", "-p", &uas_port, "-nostdin"])
            .args(["-max_socket", "10000"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    std::thread::sleep(Duration::from_millis(500));
    Ok(uas)
}

/// Nothing may leak under load: every transaction ends within 64*T1 (32 s) of its last
/// message. Prints how many are alive once none is, or after 45 s.
fn transactions_drained(metrics: &str) {
    let t0 = Instant::now();
    let left = loop {
        let left = transactions(metrics);
        if left == Some(0) || t0.elapsed() > Duration::from_secs(45) {
            break left;
        }
        std::thread::sleep(Duration::from_secs(1));
    };
    match left {
        Some(n) => println!(
            "transactions alive {:.0} s after the last call: {n}",
            t0.elapsed().as_secs_f64()
        ),
        None => println!("transactions alive: metrics unreadable"),
    }
}

/// Calls per second and seconds of the CPU-per-call rows.
const CPU_RATE: u32 = 200;
const CPU_SECONDS: u32 = 10;

/// A self-signed certificate for the daemon's TLS listener (P-256, one day).
fn test_certificate(dir: &Path) -> anyhow::Result<()> {
    let ok = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success();
    if !ok {
        bail!("openssl could not make a certificate");
    }
    Ok(())
}

/// CPU seconds (user + system) process `pid` has used, all its threads (`utime` and `stime`
/// of `/proc/PID/stat`, in clock ticks; `schedstat` would be the main thread only).
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let hz: f64 = String::from_utf8(Command::new("getconf").arg("CLK_TCK").output()?.stdout)?
        .trim()
        .parse()
        .context("getconf CLK_TCK")?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name (which may hold spaces) follow its ')': utime and
    // stime, fields 14 and 15 of proc(5), are the 12th and 13th after it.
    let rest = stat.rsplit_once(')').context("/proc stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(f.get(i).context("/proc stat field")?.parse::<f64>()?)
    };
    Ok((ticks(11)? + ticks(12)?) / hz)
}

/// SIPp's TCP stream into one TLS connection to the daemon at `tls` (certificate not
/// verified: a self-signed one made for this run): socat, and the address it listens on.
fn tls_relay(tls: &str) -> anyhow::Result<(Guard, String)> {
    let port = free_port()?;
    let relay = format!("127.0.0.1:{port}");
    let socat = Guard(
        Command::new("socat")
            .arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork"))
            .arg(format!("OPENSSL:{tls},verify=0"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    wait_listening(&relay, Duration::from_secs(5)).context("socat did not listen")?;
    Ok((socat, relay))
}

/// The daemon's CPU per call with the caller over UDP, then over TLS, at the same rate.
fn cpu_per_call(dir: &Path, scenarios: &Path, d: &Daemon, pid: u32) -> anyhow::Result<()> {
    let calls = CPU_RATE * CPU_SECONDS;
    println!(
        "daemon CPU per call, {calls} calls at {CPU_RATE}/s each (caller over UDP or TLS, callee UDP):"
    );
    let run = |label: &str, target: &str, tcp: bool| -> anyhow::Result<Option<f64>> {
        let work = dir.join(format!("cpu-{label}"));
        let before = cpu_seconds(pid)?;
        let uac = Uac {
            target,
            work: &work,
            rate: CPU_RATE,
            calls,
            timeout_secs: CPU_SECONDS + 40,
            tcp,
            step: false,
        };
        let totals = uac.run(scenarios)?;
        let used = cpu_seconds(pid)? - before;
        let (attempted, ok) = totals.unwrap_or((u64::from(calls), 0));
        println!(
            "{label:>5}: {ok}/{attempted} calls succeeded, daemon CPU {used:.2} s, {:.3} ms per call",
            used * 1000.0 / ok.max(1) as f64
        );
        Ok((ok > 0).then(|| used / ok as f64))
    };
    let udp = run("UDP", &d.sip, false)?;
    if !d.have_tls {
        println!("  TLS: not measured (openssl could not make a certificate)");
        return Ok(());
    }
    if Command::new("socat").arg("-V").output().is_err() {
        println!("  TLS: not measured (socat is not installed: cargo xtask setup installs it)");
        return Ok(());
    }
    let (_socat, relay) = tls_relay(&d.tls)?;
    let tls_cost = run("TLS", &relay, true)?;
    if let (Some(u), Some(t)) = (udp, tls_cost) {
        println!("TLS/UDP daemon CPU per call: {:.2}x (same run)", t / u);
    }
    Ok(())
}

/// Server plus client transactions alive, from the daemon's metrics.
fn transactions(metrics: &str) -> Option<u64> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(metrics).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: b\r\nConnection: close\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let mut total = None;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("sipfw_proxy_transactions_active{") {
            let n: f64 = v.rsplit_once(' ')?.1.parse().ok()?;
            total = Some(total.unwrap_or(0) + n as u64);
        }
    }
    total
}

/// Run the caller at `rate` for STEP_SECONDS and collect its statistics.
fn step(dir: &Path, scenarios: &Path, sip: &str, rate: u32) -> anyhow::Result<Step> {
    let work = dir.join(format!("rate-{rate}"));
    let calls = rate * STEP_SECONDS;
    let uac = Uac {
        target: sip,
        work: &work,
        rate,
        calls,
        timeout_secs: STEP_SECONDS + 40,
        tcp: false,
        step: true,
    };
    let (attempted, succeeded) = uac.run(scenarios)?.context("reading SIPp statistics")?;
    let mut times = rtts(&work)?;
    times.sort_by(f64::total_cmp);
    Ok(Step {
        rate,
        attempted: attempted.max(u64::from(calls)),
        succeeded,
        p50_ms: percentile(&times, 0.50),
        p99_ms: percentile(&times, 0.99),
    })
}
