//! `cargo xtask bench flood [--peer kamailio]`: legitimate calls under flood.
//!
//! For each flood kind, fresh namespaces (bench_flood/net.rs: callers, edge, servers), the
//! edge started in the middle (our release daemon with XDP native on e0, or Kamailio with
//! deploy/kamailio/bench.cfg), bob registered from the servers' side, then SIPp places
//! `--calls` record-routed calls at `--rate` while trafgen floods e0 at its maximum on one
//! CPU. Printed per kind and edge: calls ok %, call setup time p50/p99, the edge's CPU
//! seconds (/proc/PID/stat, Kamailio's processes summed; and in nanoseconds' resolution from
//! every thread's schedstat, bench_flood/runtime.rs), the machine's CPU seconds minus
//! trafgen's own (/proc/stat, so that softirq and XDP work is in), the softirq share of the
//! machine's time, the flood's packets, and the packets that reached the victim address.
//! With `--peer kamailio` each kind runs against both edges back to back and a ratio row
//! (ours / Kamailio) follows. `--kinds idle` places no call at all: the edge's CPU over
//! `--seconds` of waiting, what its timers cost.
//!
//! `--pin` runs no flood: a rate ladder with each edge pinned to one core (bench_flood/pin.rs).
//!
//! Everything shares the machine (SIPp, trafgen, the edge, and whatever else runs): the
//! figures compare the two edges in the same conditions, they are no absolute measure.

pub(crate) mod calls;
pub(crate) mod edge;
pub(crate) mod load;
pub(crate) mod net;
mod pin;
mod runtime;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{cargo, root, run};
use edge::{Edge, Peer};
use load::{Flood, Kind};
use net::Net;

/// Options of `bench flood` (and of `bench soak`: `--calls`, `--rate`, `--every`,
/// `--subscribers`).
#[derive(clap::Args, Clone)]
pub struct Args {
    /// Compare with another edge in the same run (`kamailio`).
    #[arg(long, value_parser = ["kamailio"])]
    pub peer: Option<String>,
    /// Calls per kind and edge (flood: 1000); calls of `bench soak` (1,000,000).
    #[arg(long)]
    pub calls: Option<u32>,
    /// Calls per second (flood: 100; soak: 500).
    #[arg(long)]
    pub rate: Option<u32>,
    /// Flood kinds, comma-separated: none, one-source, spoofed, forged-replies, junk; `idle`
    /// (no calls either, for `--seconds`) on request.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "none,one-source,spoofed,forged-replies,junk"
    )]
    pub kinds: Vec<String>,
    /// Longest a kind's calls may take (SIPp's -timeout; the flood stops with them; 30); with
    /// `--pin`, the seconds of each rate step (15).
    #[arg(long)]
    pub seconds: Option<u32>,
    /// No flood: each edge pinned to CPU 0 and SIPp to CPU 1, calls at rising `--rates`,
    /// `--runs` times alternating the edges (with `--peer kamailio`).
    #[arg(long)]
    pub pin: bool,
    /// The rate ladder of `--pin`, calls per second.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "400,800,1200,1600,2000,2400"
    )]
    pub rates: Vec<u32>,
    /// Runs of the ladder per edge with `--pin` (medians over them).
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// `bench soak`: seconds between two printed lines.
    #[arg(long, default_value_t = 60)]
    pub every: u64,
    /// `bench soak`: subscribers re-registering during the run.
    #[arg(long, default_value_t = 10_000)]
    pub subscribers: u32,
}

/// `bench flood`'s calls, rate and time bound per kind, defaults applied.
struct Plan {
    calls: u32,
    rate: u32,
    seconds: u32,
}

impl Plan {
    fn of(args: &Args) -> Plan {
        Plan {
            calls: args.calls.unwrap_or(1000),
            rate: args.rate.unwrap_or(100),
            seconds: args.seconds.unwrap_or(30),
        }
    }
}

/// One kind against one edge.
struct Row {
    kind: Kind,
    peer: Peer,
    calls: calls::Calls,
    /// Seconds from the flood's start to the last call's end.
    seconds: f64,
    edge_cpu: f64,
    /// The edge's time on a CPU from schedstat (nanoseconds' resolution).
    edge_run: f64,
    /// The machine's busy CPU seconds minus trafgen's.
    host_cpu: f64,
    /// The machine's busy CPU seconds per second just before the edge started, times
    /// `seconds`: what the rest of the machine was doing anyway.
    background: f64,
    softirq: f64,
    /// trafgen's own CPU seconds.
    gen_cpu: f64,
    flood_packets: u64,
    reflected: u64,
    xdp: String,
}

/// Counters read before and after the calls.
struct Snapshot {
    at: Instant,
    edge_cpu: f64,
    edge_run: f64,
    busy: f64,
    softirq: f64,
    victim: u64,
    tx: u64,
}

impl Snapshot {
    fn take(net: &Net, edge: &Edge) -> anyhow::Result<Snapshot> {
        let (busy, softirq) = load::machine()?;
        Ok(Snapshot {
            at: Instant::now(),
            edge_cpu: edge.cpu(),
            edge_run: edge.run_time(),
            busy,
            softirq,
            victim: net.reflected()?,
            tx: net.c0_tx_packets()?,
        })
    }
}

/// The machine's busy CPU seconds per second over one second.
fn background_rate() -> anyhow::Result<f64> {
    let (b0, _) = load::machine()?;
    std::thread::sleep(Duration::from_secs(1));
    Ok(load::machine()?.0 - b0)
}

pub fn run_bench(args: &Args) -> anyhow::Result<()> {
    if args.pin {
        return pin::run_bench(args);
    }
    let plan = Plan::of(args);
    let kinds: Vec<Kind> = args
        .kinds
        .iter()
        .map(|k| Kind::parse(k.trim()))
        .collect::<anyhow::Result<_>>()?;
    let mut peers = vec![Peer::Ours];
    if args.peer.is_some() {
        peers.push(Peer::Kamailio);
    }
    preflight(&peers)?;
    let bin = release_daemon()?;
    let dir = std::env::temp_dir().join(format!("sfw-bench-flood-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    eprintln!(
        "bench flood: {} calls at {}/s per kind and edge (at most {} s), trafgen on 1 CPU",
        plan.calls, plan.rate, plan.seconds
    );
    let mut rows = Vec::new();
    for &kind in &kinds {
        for &peer in &peers {
            let work = dir.join(format!("{}-{}", kind.name(), peer.name()));
            std::fs::create_dir_all(&work)?;
            let row = one(kind, peer, &work, &bin, &plan)
                .with_context(|| format!("{} against {}", kind.name(), peer.name()))?;
            eprintln!("bench flood: {} / {}: done", kind.name(), peer.name());
            rows.push(row);
        }
    }
    print_table(&rows, &plan);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// The release daemon, built; or the binary `SIPFW_BENCH_DAEMON` names, as it is (to
/// compare two builds with the same command).
pub(crate) fn release_daemon() -> anyhow::Result<std::path::PathBuf> {
    match std::env::var_os("SIPFW_BENCH_DAEMON") {
        Some(bin) => eprintln!("bench: the daemon is {}", bin.to_string_lossy()),
        None => run(cargo().args(["build", "--release", "--package", "sip-firewall"]))?,
    }
    Ok(daemon_binary())
}

/// The daemon the benches run: `SIPFW_BENCH_DAEMON`, else the release build's.
pub(crate) fn daemon_binary() -> std::path::PathBuf {
    std::env::var_os("SIPFW_BENCH_DAEMON")
        .map_or_else(|| root().join("target/release/sip-firewall"), Into::into)
}

/// Root, SIPp, trafgen, nft, and Kamailio when asked for.
pub(crate) fn preflight(peers: &[Peer]) -> anyhow::Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { geteuid() } != 0 {
        bail!("bench flood needs root (network namespaces, XDP, trafgen)");
    }
    let mut tools = vec!["sipp", "trafgen", "nft", "nsenter", "ss"];
    if peers.contains(&Peer::Kamailio) {
        tools.push("kamailio");
    }
    for t in tools {
        let found = std::process::Command::new("sh")
            .args(["-c", &format!("command -v {t}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false);
        if !found {
            bail!("{t} is not installed (cargo xtask setup installs it)");
        }
    }
    Ok(())
}

unsafe extern "C" {
    fn geteuid() -> u32;
}

/// Run `kind` against `peer` in namespaces of its own.
fn one(kind: Kind, peer: Peer, dir: &Path, bin: &Path, args: &Plan) -> anyhow::Result<Row> {
    let net = Net::new(&format!("{}{}", &kind.name()[..2], &peer.name()[..1]))?;
    let background = background_rate()?;
    let edge = Edge::start(peer, &net, dir, bin, &edge::Setup::flood())?;
    let xdp = net.xdp_mode();
    calls::register(&net, dir)?;
    let _uas = calls::uas(&net, dir, None)?;
    let before = Snapshot::take(&net, &edge)?;
    // A bound on the flood: ~3 Mpps for the whole run, far above what one CPU sends here.
    let cap = u64::from(args.seconds + 5) * 3_000_000;
    let flood = Flood::start(&net, kind, dir, cap)?;
    if flood.is_some() {
        // The flood in full swing before the first call.
        std::thread::sleep(Duration::from_secs(1));
    }
    let calls = if kind == Kind::Idle {
        std::thread::sleep(Duration::from_secs(args.seconds.into()));
        calls::Calls::none()
    } else {
        calls::run(&net, dir, args.calls, args.rate, args.seconds, None)?
    };
    let gen_cpu = match flood {
        Some(f) => {
            let cost = f.stop()?;
            if cost.restarts > 0 {
                eprintln!(
                    "bench flood: {} / {}: trafgen restarted {} times (its send failed on a \
                     full veth ring)",
                    kind.name(),
                    peer.name(),
                    cost.restarts
                );
            }
            cost.cpu
        }
        None => 0.0,
    };
    let after = Snapshot::take(&net, &edge)?;
    drop(edge);
    let seconds = after.at.duration_since(before.at).as_secs_f64();
    let sent = after.tx - before.tx;
    Ok(Row {
        kind,
        peer,
        seconds,
        edge_cpu: after.edge_cpu - before.edge_cpu,
        edge_run: after.edge_run - before.edge_run,
        host_cpu: after.busy - before.busy - gen_cpu,
        background: background * seconds,
        softirq: after.softirq - before.softirq,
        gen_cpu,
        // c0 also carried the calls' own requests: a few per call.
        flood_packets: if matches!(kind, Kind::None | Kind::Idle) {
            0
        } else {
            sent
        },
        reflected: after.victim - before.victim,
        calls,
        xdp,
    })
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{v:.0} ms")
    }
}

fn print_table(rows: &[Row], args: &Plan) {
    println!();
    println!(
        "{} legitimate calls per kind at {}/s (INVITE/180/200/ACK/BYE, UDP, record-routed); \
         flood: trafgen --cpus 1 into the edge's e0",
        args.calls, args.rate
    );
    if let Some(r) = rows.iter().find(|r| r.peer == Peer::Ours) {
        println!("sip-firewall's XDP on e0 (veth): {}", r.xdp);
    }
    println!(
        "{:<15} {:<12} {:>8} {:>9} {:>9} {:>6} {:>8} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9}",
        "flood",
        "edge",
        "calls ok",
        "setup p50",
        "setup p99",
        "secs",
        "edge CPU",
        "edge run",
        "host-gen",
        "backgrnd",
        "softirq",
        "gen CPU",
        "flood pps",
        "reflected"
    );
    for r in rows {
        print_row(r);
        if r.peer == Peer::Kamailio
            && let Some(ours) = rows
                .iter()
                .find(|o| o.kind == r.kind && o.peer == Peer::Ours)
        {
            print_ratio(ours, r);
        }
    }
    println!(
        "CPU seconds over each run (secs: flood start to last call): edge = the proxy's \
         processes (/proc/PID/stat, in clock ticks; Kamailio's summed); edge run = the same in \
         nanoseconds' resolution (every thread's /proc/PID/task/TID/schedstat, read ten times \
         a second; for the idle kind, where ticks are too coarse); host-gen = the whole machine's busy \
         time (/proc/stat) minus trafgen's own; backgrnd = the machine's busy rate in the \
         second before the edge started, times secs (other work on a shared machine, inside \
         host-gen); softirq = the machine's softirq time (the stack and XDP; this kernel has \
         no IRQ time accounting, so softirq run in trafgen's context is also in trafgen's \
         time); gen CPU = trafgen's own. flood pps = frames c0 handed to the edge per second; reflected = packets \
         that reached the victim address."
    );
}

fn print_row(r: &Row) {
    let ok = if r.calls.attempted == 0 {
        "-".to_string()
    } else {
        format!(
            "{:.1}%",
            r.calls.ok as f64 * 100.0 / r.calls.attempted as f64
        )
    };
    let pps = r.flood_packets as f64 / r.seconds.max(0.001);
    println!(
        "{:<15} {:<12} {:>8} {:>9} {:>9} {:>6.1} {:>8.2} {:>9.4} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9.0} {:>9}",
        r.kind.name(),
        r.peer.name(),
        ok,
        ms(crate::sipp::percentile(&r.calls.setup_ms, 0.50)),
        ms(crate::sipp::percentile(&r.calls.setup_ms, 0.99)),
        r.seconds,
        r.edge_cpu,
        r.edge_run,
        r.host_cpu,
        r.background,
        r.softirq,
        r.gen_cpu,
        pps,
        r.reflected
    );
}

/// ours / Kamailio, for the CPU columns.
fn print_ratio(ours: &Row, kam: &Row) {
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}x", a / b)
        } else {
            "-".into()
        }
    };
    println!(
        "{:<15} {:<12} {:>8} {:>9} {:>9} {:>6} {:>8} {:>9} {:>8} {:>8} {:>8}",
        "",
        "ours/kam",
        "",
        "",
        "",
        "",
        ratio(ours.edge_cpu, kam.edge_cpu),
        ratio(ours.edge_run, kam.edge_run),
        ratio(ours.host_cpu, kam.host_cpu),
        "",
        ratio(ours.softirq, kam.softirq)
    );
}
