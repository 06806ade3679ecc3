//! `cargo xtask bench flood --pin [--peer kamailio]`: how far one core of edge goes, without
//! a flood. Each edge (ours, then Kamailio) is started with CPU 0 as its only CPU (`taskset
//! -c`, as systemd's `CPUAffinity=` would: our daemon then sizes its workers, shards and
//! runtime to one CPU; Kamailio's children are as its config says), and every thread of its
//! processes is pinned there again once it runs (`taskset -a`); SIPp's caller and callee run
//! on CPU 1. In
//! fresh namespaces per edge and run (bench_flood/net.rs), SIPp places record-routed UDP
//! calls at each rate of `--rates` for `--seconds`; a rate passes when at least 99.9% of its
//! calls succeed. The ladder stops at the first rate that fails, unless a rate whose CPU per
//! call is reported (400, 1600) is still ahead. CPU per call is the edge's CPU seconds over
//! a step (`/proc/PID/stat`, all its processes) divided by the step's successful calls; 3 s
//! of calls at the first rate before the ladder are not counted.
//! `--runs` runs alternate the edges (ours, Kamailio, ours, ...); the medians over the runs
//! are compared as ours / Kamailio.
//!
//! One SIPp address stands for every caller, so the per-source limits are lifted on both
//! edges (ours: the flood, request and pressure limits; Kamailio: pike's density); the rest
//! of each edge's checks stays. With two cores SIPp's core may be the limit before the
//! edge's: the steps print SIPp's own setup times, and the machine's load is printed.

use std::{path::Path, time::Duration};

use anyhow::Context as _;

use super::{
    Args, calls,
    edge::{Edge, Peer, Setup},
    net::Net,
};
use crate::sipp::{ms, percentile};

/// The CPU the edge runs on.
const EDGE_CPU: u32 = 0;
/// The CPU of SIPp's caller and callee.
const SIPP_CPU: u32 = 1;
/// The rates whose CPU per call is compared.
const CPU_RATES: [u32; 2] = [400, 1600];
/// Seconds of calls before the ladder, not counted.
const WARM_UP: u32 = 3;
/// The success ratio a rate must reach.
const PASS: f64 = 0.999;

/// One rate step.
struct Step {
    rate: u32,
    attempted: u64,
    ok: u64,
    p50: f64,
    p99: f64,
    cpu: f64,
}

impl Step {
    fn passed(&self) -> bool {
        self.attempted > 0 && self.ok as f64 >= PASS * self.attempted as f64
    }

    /// The edge's CPU milliseconds per successful call.
    fn cpu_ms_per_call(&self) -> Option<f64> {
        (self.ok > 0).then(|| self.cpu * 1000.0 / self.ok as f64)
    }
}

/// One edge's ladder in one run.
struct Ladder {
    peer: Peer,
    run: u32,
    threads: usize,
    load: String,
    steps: Vec<Step>,
}

impl Ladder {
    /// The highest rate passed with every rate below it passed too (0: none).
    fn highest(&self) -> u32 {
        self.steps
            .iter()
            .take_while(|s| s.passed())
            .map(|s| s.rate)
            .last()
            .unwrap_or(0)
    }

    fn at(&self, rate: u32) -> Option<f64> {
        self.steps
            .iter()
            .find(|s| s.rate == rate)?
            .cpu_ms_per_call()
    }
}

pub fn run_bench(args: &Args) -> anyhow::Result<()> {
    let mut peers = vec![Peer::Ours];
    if args.peer.is_some() {
        peers.push(Peer::Kamailio);
    }
    super::preflight(&peers)?;
    let bin = super::release_daemon()?;
    let seconds = args.seconds.unwrap_or(15);
    let dir = std::env::temp_dir().join(format!("sfw-bench-pin-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    eprintln!(
        "bench flood --pin: rates {:?} calls/s, {seconds} s each, {} run(s) per edge",
        args.rates, args.runs
    );
    let r = runs(args, &peers, &dir, &bin, seconds);
    let _ = std::fs::remove_dir_all(&dir);
    let ladders = r?;
    print_raw(&ladders, seconds);
    print_summary(&ladders, &peers);
    Ok(())
}

/// `args.runs` runs, each edge's ladder in turn.
fn runs(
    args: &Args,
    peers: &[Peer],
    dir: &Path,
    bin: &Path,
    seconds: u32,
) -> anyhow::Result<Vec<Ladder>> {
    let mut ladders = Vec::new();
    for run in 1..=args.runs {
        for &peer in peers {
            let work = dir.join(format!("run{run}-{}", peer.name()));
            std::fs::create_dir_all(&work)?;
            let l = ladder(peer, run, &work, bin, &args.rates, seconds)
                .with_context(|| format!("run {run} against {}", peer.name()))?;
            eprintln!(
                "bench flood --pin: run {run} / {}: highest passing rate {}",
                peer.name(),
                l.highest()
            );
            ladders.push(l);
        }
    }
    Ok(ladders)
}

/// The machine's load averages (other work on a shared machine).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// `peer`'s ladder in namespaces of its own.
fn ladder(
    peer: Peer,
    run: u32,
    dir: &Path,
    bin: &Path,
    rates: &[u32],
    seconds: u32,
) -> anyhow::Result<Ladder> {
    let net = Net::new(&format!("p{run}{}", &peer.name()[..1]))?;
    let edge = Edge::start(peer, &net, dir, bin, &Setup::open(dir, EDGE_CPU)?)?;
    let threads = edge.pin(EDGE_CPU)?;
    calls::register(&net, dir)?;
    let _uas = calls::uas(&net, dir, Some(SIPP_CPU))?;
    // A few seconds of calls not counted: the first step would otherwise carry what the
    // edge does in its first seconds (its caches and tables filling, its first timers).
    let warm = rates.first().copied().unwrap_or(100);
    calls::run(
        &net,
        dir,
        warm * WARM_UP,
        warm,
        WARM_UP + 15,
        Some(SIPP_CPU),
    )?;
    let load = loadavg();
    let mut steps = Vec::new();
    for (i, &rate) in rates.iter().enumerate() {
        // The previous step's last answers and retransmissions settle first.
        std::thread::sleep(Duration::from_secs(2));
        let before = edge.cpu();
        let c = calls::run(
            &net,
            dir,
            rate * seconds,
            rate,
            seconds + 15,
            Some(SIPP_CPU),
        )?;
        let step = Step {
            rate,
            attempted: c.attempted,
            ok: c.ok,
            p50: percentile(&c.setup_ms, 0.50),
            p99: percentile(&c.setup_ms, 0.99),
            cpu: edge.cpu() - before,
        };
        eprintln!(
            "bench flood --pin: run {run} / {}: {rate}/s: {} of {} ok, edge {:.2} CPU-s",
            peer.name(),
            step.ok,
            step.attempted,
            step.cpu
        );
        let passed = step.passed();
        steps.push(step);
        let cpu_rate_ahead = rates[i + 1..].iter().any(|r| CPU_RATES.contains(r));
        if !passed && !cpu_rate_ahead {
            break;
        }
    }
    Ok(Ladder {
        peer,
        run,
        threads,
        load,
        steps,
    })
}

fn print_raw(ladders: &[Ladder], seconds: u32) {
    println!();
    println!(
        "bench flood --pin: calls INVITE/180/200/ACK/BYE over UDP, record-routed, SIPp UAC in ns C \
         -> edge 198.51.100.2:5060 in ns E -> SIPp UAS in ns S (veths; our XDP attached native \
         to e0); {seconds} s per rate step; edge started on CPU {EDGE_CPU} alone (taskset -c) and \
         every thread pinned there (taskset -a), SIPp caller and callee on CPU {SIPP_CPU}; per-source limits lifted on both edges"
    );
    println!(
        "{:>3} {:<12} {:>7} {:>7} {:>7} {:>8} {:>9} {:>9} {:>9} {:>11}  edge threads; load avg at start",
        "run",
        "edge",
        "rate/s",
        "calls",
        "ok",
        "ok %",
        "setup p50",
        "setup p99",
        "edge CPU",
        "CPU ms/call",
    );
    for l in ladders {
        for (i, s) in l.steps.iter().enumerate() {
            let note = if i == 0 {
                format!("{} threads; {}", l.threads, l.load)
            } else {
                String::new()
            };
            println!(
                "{:>3} {:<12} {:>7} {:>7} {:>7} {:>7.2}% {:>9} {:>9} {:>8.2}s {:>11}  {note}",
                l.run,
                l.peer.name(),
                s.rate,
                s.attempted,
                s.ok,
                s.ok as f64 * 100.0 / s.attempted.max(1) as f64,
                ms(s.p50),
                ms(s.p99),
                s.cpu,
                s.cpu_ms_per_call()
                    .map_or("-".into(), |v| format!("{v:.3}")),
            );
        }
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn list(v: &[f64], digits: usize) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.iter()
        .map(|x| format!("{x:.digits$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Medians per edge over the runs, and ours / Kamailio.
fn print_summary(ladders: &[Ladder], peers: &[Peer]) {
    println!();
    println!(
        "per edge, over the runs (raw values in run order; median): highest rate with >= 99.9% \
         of calls ok (every lower rate ok too); edge CPU ms per successful call"
    );
    let mut medians = Vec::new();
    for &peer in peers {
        let mine: Vec<&Ladder> = ladders.iter().filter(|l| l.peer == peer).collect();
        let highest: Vec<f64> = mine.iter().map(|l| f64::from(l.highest())).collect();
        println!(
            "{:<12} highest rate: {} calls/s; median {}",
            peer.name(),
            list(&highest, 0),
            median(highest.clone()).map_or("-".into(), |m| format!("{m:.0}"))
        );
        let mut per_rate = Vec::new();
        for rate in CPU_RATES {
            let v: Vec<f64> = mine.iter().filter_map(|l| l.at(rate)).collect();
            let m = median(v.clone());
            println!(
                "{:<12} CPU per call at {rate}/s: {} ms; median {}",
                peer.name(),
                list(&v, 3),
                m.map_or("-".into(), |m| format!("{m:.3} ms"))
            );
            per_rate.push(m);
        }
        medians.push((peer, median(highest), per_rate));
    }
    if let [(_, oh, ours), (_, kh, kam)] = medians.as_slice() {
        let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        println!("ours / kamailio, medians: highest rate {}", ratio(*oh, *kh));
        for (i, rate) in CPU_RATES.iter().enumerate() {
            println!(
                "ours / kamailio, medians: CPU per call at {rate}/s {}",
                ratio(ours[i], kam[i])
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(rate: u32, ok: u64) -> Step {
        Step {
            rate,
            attempted: 1000,
            ok,
            p50: 1.0,
            p99: 2.0,
            cpu: 0.5,
        }
    }

    #[test]
    fn highest_rate_needs_every_lower_rate_passed() {
        let l = Ladder {
            peer: Peer::Ours,
            run: 1,
            threads: 1,
            load: String::new(),
            steps: vec![step(400, 1000), step(800, 998), step(1600, 1000)],
        };
        assert_eq!(l.highest(), 400);
        assert_eq!(l.at(400), Some(0.5));
        assert_eq!(l.at(1200), None);
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![1.0, 2.0]), Some(1.5));
        assert_eq!(median(vec![]), None);
    }
}
