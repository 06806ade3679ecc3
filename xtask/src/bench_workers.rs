//! `cargo xtask bench proxy-workers`: the highest rate with more than 99.9%
//! successful calls with `[sip] workers = 1` and then 2, each on a fresh release daemon on
//! loopback: the calls of `bench proxy` (INVITE/100/180/200/ACK/BYE/200 to a registered
//! SIPp UAS), `STEP_SECONDS` per rate, rates rising until one fails; the daemon's CPU per
//! call at each rate. Workers share the proxy, whose call state is in shards by Call-ID
//! (`[proxy] shards`), so a response arriving on another worker's socket still finds its
//! transaction.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    bench_proxy::{
        Guard, PASS, RATES, STEP_SECONDS, cpu_seconds, register_and_answer, start_daemon,
    },
    cargo, root, run,
    sipp::{free_port, totals},
};

/// See the module doc.
pub fn run_workers() -> anyhow::Result<()> {
    if Command::new("sipp").arg("-v").output().is_err() {
        bail!("sipp is not installed (cargo xtask setup installs sip-tester)");
    }
    run(cargo().args(["build", "--release", "--package", "sip-firewall"]))?;
    let scenarios = root().join("tests/sipp");
    println!(
        "{:>8} {:>8} {:>10} {:>10} {:>9} {:>12}",
        "workers", "calls/s", "attempted", "succeeded", "success", "CPU ms/call"
    );
    let mut best = Vec::new();
    for workers in [1usize, 2] {
        let dir = std::env::temp_dir().join(format!(
            "sipfw-bench-workers-{}-{workers}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir)?;
        let daemon = start_daemon(&dir, Some(workers))?;
        let _uas = register_and_answer(&dir, &scenarios, &daemon.sip)?;
        best.push((
            workers,
            highest_rate(
                &dir,
                &scenarios,
                &daemon.sip,
                workers,
                daemon.process.0.id(),
            )?,
        ));
        drop(daemon);
        let _ = std::fs::remove_dir_all(&dir);
    }
    for (w, r) in best {
        match r {
            Some(r) => println!("workers = {w}: highest rate with >99.9% successful calls: {r}/s"),
            None => println!("workers = {w}: no rate reached 99.9% successful calls"),
        }
    }
    Ok(())
}

/// Rates rising until one fails; the last that passed.
fn highest_rate(
    dir: &Path,
    scenarios: &Path,
    sip: &str,
    workers: usize,
    pid: u32,
) -> anyhow::Result<Option<u32>> {
    let mut pass = None;
    for &rate in RATES {
        let before = cpu_seconds(pid)?;
        let (attempted, ok) = bounded_step(dir, scenarios, sip, rate)?;
        let cpu = cpu_seconds(pid)? - before;
        let ratio = ok as f64 / attempted.max(1) as f64;
        println!(
            "{workers:>8} {rate:>8} {attempted:>10} {ok:>10} {:>8.3}% {:>12.3}",
            ratio * 100.0,
            cpu * 1000.0 / ok.max(1) as f64
        );
        if ratio <= PASS {
            break;
        }
        pass = Some(rate);
    }
    Ok(pass)
}

/// One rate step of `run_workers`: SIPp stopped after STEP_SECONDS + 20 s whatever it
/// waits for (a call stuck at a high rate would otherwise hold it); returns calls attempted
/// and successful.
fn bounded_step(dir: &Path, scenarios: &Path, sip: &str, rate: u32) -> anyhow::Result<(u64, u64)> {
    let work = dir.join(format!("rate-{rate}"));
    std::fs::create_dir_all(&work)?;
    let calls = rate * STEP_SECONDS;
    let port = free_port()?.to_string();
    let mut uac = Guard(
        Command::new("sipp")
            .arg(sip)
            .arg("-sf")
            .arg(scenarios.join("uac_bench.xml"))
            .args(["-set", "domain", "example.com", "-s", "bob"])
            .args(["-i", "127.0.0.1", "-p", &port, "-nostdin"])
            .args(["-r", &rate.to_string(), "-m", &calls.to_string()])
            .args(["-l", &(rate * 10).to_string(), "-max_socket", "10000"])
            .args(["-trace_stat", "-fd", "1", "-stf", "stat.csv"])
            .current_dir(&work)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?,
    );
    let t0 = Instant::now();
    while uac.0.try_wait()?.is_none() {
        if t0.elapsed() > Duration::from_secs(u64::from(STEP_SECONDS) + 20) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // SIPp writes its statistics every second (-fd 1): a SIPp stopped here leaves its last
    // periodic line, and the calls still open count as failed.
    let _ = uac.0.kill();
    let _ = uac.0.wait();
    let stat = std::fs::read_to_string(work.join("stat.csv")).context("SIPp statistics")?;
    let (attempted, ok) = totals(&stat).context("reading SIPp statistics")?;
    Ok((attempted.max(u64::from(calls)), ok))
}
