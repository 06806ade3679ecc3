//! `cargo xtask bench soak`: a long run at a steady rate, watched. In namespaces of their own
//! (bench_flood/net.rs), our release daemon (XDP native on e0) relays `--calls` record-routed
//! UDP calls (INVITE/180/200/ACK/BYE, SIPp's `uac_bench.xml`) at `--rate` from ns C to bob
//! (SIPp's UAS) in ns S, while `--subscribers` users, each registered once before the calls,
//! re-register with digest from ns C (a SIPp REGISTER scenario over a CSV of users, each user
//! again every cycle: 300 s, or half the run when that is shorter). Every `--every` seconds it prints the daemon's RSS
//! (`VmRSS`), its open transactions, calls in progress and bindings (its `/metrics`), SIPp's
//! counts so far and the call setup time p50/p99 of the calls of that interval (SIPp's
//! response-time file). At the end: the RSS against its level after the first 10% of the
//! calls, the tables once the transactions have drained, and SIPp's counts beside the
//! daemon's counters. Figures are printed, never judged.
//!
//! One SIPp address stands for every caller and subscriber, so the per-source limits are
//! lifted (`bench_flood::edge::CONFIG_OPEN`'s); bob and alice register once for a day
//! (`[registrar] max_expires` raised to match); everything else is the default config.

mod probe;
mod register;

use std::{
    path::Path,
    time::{Duration, Instant},
};

use crate::{
    bench_flood::{
        Args, calls,
        edge::{Edge, Peer, Setup},
        net::{EDGE, Net, UAC},
    },
    bench_proxy::Guard,
    sipp::{ms, percentile},
};
use probe::{Metrics, Rtts, counts};
use register::{PARTY_EXPIRES, register_parties, register_subscribers, registrations};

/// The soak's parameters, defaults applied.
struct Plan {
    calls: u32,
    rate: u32,
    every: u64,
    subscribers: u32,
    /// Seconds in which every subscriber registers once.
    cycle: u32,
}

impl Plan {
    fn of(args: &Args) -> Plan {
        let calls = args.calls.unwrap_or(1_000_000);
        let rate = args.rate.unwrap_or(500).max(1);
        let run = (calls / rate).max(2);
        Plan {
            calls,
            rate,
            every: args.every.max(1),
            subscribers: args.subscribers.max(1),
            cycle: (run / 2).clamp(1, 300),
        }
    }

    fn seconds(&self) -> u32 {
        self.calls / self.rate
    }

    /// REGISTERs per second: every subscriber once per cycle.
    fn register_rate(&self) -> f64 {
        f64::from(self.subscribers) / f64::from(self.cycle)
    }
}

/// The daemon's config: the bench's open limits and every subscriber a user.
fn config(subscribers: u32) -> String {
    let mut users = String::from(
        "  { user = \"bob\", domain = \"example.com\", password = \"bench\" },\n  \
         { user = \"alice\", domain = \"example.com\", password = \"bench\" },\n",
    );
    for i in 0..subscribers {
        users.push_str(&format!(
            "  {{ user = \"u{i:05}\", domain = \"example.com\", password = \"bench\" }},\n"
        ));
    }
    let open = crate::bench_flood::edge::CONFIG_OPEN;
    let (head, tail) = open
        .split_once("users = [\n")
        .expect("CONFIG_OPEN lists users");
    let tail = &tail[tail.find("]\n").expect("users end")..];
    // bob's and alice's bindings must outlast the run (they register once, before it).
    format!("{head}users = [\n{users}{tail}[registrar]\nmax_expires = {PARTY_EXPIRES}\n")
}

pub fn run_bench(args: &Args) -> anyhow::Result<()> {
    let plan = Plan::of(args);
    crate::bench_flood::preflight(&[Peer::Ours])?;
    let bin = crate::bench_flood::release_daemon()?;
    let dir = std::env::temp_dir().join(format!("sfw-bench-soak-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    println!(
        "bench soak: {} calls at {}/s (~{} s), INVITE/180/200/ACK/BYE over UDP, record-routed, \
         SIPp UAC ns C -> our edge {EDGE}:5060 (ns E) -> SIPp UAS ns S; {} subscribers \
         re-registering with digest, each every {} s ({:.1} REGISTER exchanges/s); a line \
         every {} s; load avg {}",
        plan.calls,
        plan.rate,
        plan.seconds(),
        plan.subscribers,
        plan.cycle,
        plan.register_rate(),
        plan.every,
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let r = soak(&plan, &dir, &bin);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

/// The calls' SIPp, statistics every second and every setup time written.
fn caller(net: &Net, dir: &Path, plan: &Plan) -> anyhow::Result<Guard> {
    let work = dir.join("uac");
    std::fs::create_dir_all(&work)?;
    let child = calls::start(
        calls::sipp(net, &net.c, None)
            .arg(format!("{EDGE}:5060"))
            .arg("-sf")
            .arg(calls::scenario("uac_bench.xml"))
            .args(["-set", "domain", "example.com", "-s", "bob"])
            .args(["-i", UAC, "-p", "5070", "-nostdin"])
            .args(["-r", &plan.rate.to_string(), "-m", &plan.calls.to_string()])
            .args(["-l", &(plan.rate * 10).to_string()])
            .args(["-timeout", &(plan.seconds() + 120).to_string()])
            .args(["-recv_timeout", "10000"])
            .args(["-trace_stat", "-stf", "stat.csv", "-fd", "1"])
            .args(["-trace_rtt", "-rtt_freq", "1"]),
        &work,
        "starting the calls' SIPp",
    )?;
    Ok(Guard(child))
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

/// One line of the run: what the edge holds and what SIPp saw since the last line.
fn line(t: Duration, edge: &Edge, net: &Net, dir: &Path, setup: &[f64]) {
    let m = Metrics::scrape(net);
    let (_, ok, failed) = counts(&dir.join("uac/stat.csv"));
    let (_, reg_ok, reg_failed) = counts(&dir.join("reg/stat.csv"));
    println!(
        "t={:>5} s  RSS {:>10}  transactions {:>6}  calls active {:>4}  bindings {:>6}  \
         calls ok {:>8} failed {:>5}  registrations ok {:>7} failed {:>4}  \
         setup p50 {:>6} p99 {:>6} ({} calls)",
        t.as_secs(),
        mib(edge.rss_kib()),
        m.sum("sipfw_proxy_transactions_active"),
        m.sum("sipfw_calls_active"),
        m.sum("sipfw_registrar_bindings"),
        ok,
        failed,
        reg_ok,
        reg_failed,
        ms(percentile(setup, 0.50)),
        ms(percentile(setup, 0.99)),
        setup.len()
    );
}

/// RSS figures of the run, KiB.
struct Memory {
    at_tenth: Option<u64>,
    at_end: Option<u64>,
}

fn soak(plan: &Plan, dir: &Path, bin: &Path) -> anyhow::Result<()> {
    let net = Net::new("soak")?;
    let cfg = config(plan.subscribers);
    let setup = Setup {
        config: &cfg,
        kamailio_cfg: Default::default(),
        cpu: None,
    };
    let edge = Edge::start(Peer::Ours, &net, dir, bin, &setup)?;
    register_parties(&net, dir)?;
    register_subscribers(&net, dir, plan)?;
    let _uas = calls::uas(&net, dir, None)?;
    let cpu0 = edge.cpu();
    let reg = registrations(&net, dir, plan)?;
    let uac = caller(&net, dir, plan)?;
    let memory = watch(plan, dir, &net, &edge, uac)?;
    let mut reg = reg;
    let t0 = Instant::now();
    while reg.0.try_wait()?.is_none() && t0.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(reg);
    let cpu = edge.cpu() - cpu0;
    let drained = drain(&net, &edge);
    summary(plan, dir, &edge, &memory, drained, cpu);
    Ok(())
}

/// Lines every `plan.every` seconds until the calls' SIPp exits (or long past its time);
/// the RSS after the first tenth of the run and at its end.
fn watch(
    plan: &Plan,
    dir: &Path,
    net: &Net,
    edge: &Edge,
    mut uac: Guard,
) -> anyhow::Result<Memory> {
    let t0 = Instant::now();
    let tenth = Duration::from_secs_f64(f64::from(plan.seconds()) / 10.0);
    let limit = Duration::from_secs(u64::from(plan.seconds()) + 180);
    let mut next = Duration::from_secs(plan.every);
    let mut rtts = Rtts::new(dir.join("uac"));
    let mut at_tenth = None;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let t = t0.elapsed();
        if at_tenth.is_none() && t >= tenth {
            at_tenth = edge.rss_kib();
        }
        let done = uac.0.try_wait()?.is_some() || t > limit;
        if t >= next || done {
            line(t, edge, net, dir, &rtts.since_last());
            next += Duration::from_secs(plan.every);
        }
        if done {
            break;
        }
    }
    Ok(Memory {
        at_tenth,
        at_end: edge.rss_kib(),
    })
}

/// Until no transaction and no call is left (transactions outlive their final answer by up
/// to 32 s, RFC 6026) and the XDP program's copy of the transactions is swept empty too
/// (every `MAP_SWEEP_EVERY`), at most 90 s; the seconds waited and the last scrape.
fn drain(net: &Net, edge: &Edge) -> (Duration, Metrics) {
    let t0 = Instant::now();
    loop {
        let m = Metrics::scrape(net);
        let idle = !m.is_empty()
            && m.sum("sipfw_proxy_transactions_active") == 0.0
            && m.sum("sipfw_calls_active") == 0.0
            && kernel_transactions(&m) == 0.0;
        if idle || t0.elapsed() > Duration::from_secs(90) || edge.rss_kib().is_none() {
            return (t0.elapsed(), m);
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Entries of the XDP program's transaction map (`sipfw_map_entries{map="SIPFW_TXNS"}`).
fn kernel_transactions(m: &Metrics) -> f64 {
    m.series("sipfw_map_entries")
        .filter(|(labels, _)| labels.contains("\"SIPFW_TXNS\""))
        .map(|(_, v)| v)
        .sum()
}

fn summary(
    plan: &Plan,
    dir: &Path,
    edge: &Edge,
    memory: &Memory,
    (waited, m): (Duration, Metrics),
    cpu: f64,
) {
    let idle_rss = edge.rss_kib();
    println!();
    let ratio = match (memory.at_end, memory.at_tenth) {
        (Some(e), Some(t)) if t > 0 => format!("{:.3}", e as f64 / t as f64),
        _ => "-".into(),
    };
    println!(
        "memory: RSS after the first 10% of the calls {}, when the calls ended {}, idle {}; \
         end / 10% = {ratio} (the bound: 1.10)",
        mib(memory.at_tenth),
        mib(memory.at_end),
        mib(idle_rss)
    );
    println!(
        "tables {:.0} s after the calls ended: transactions {} (in the XDP map {}), calls \
         active {}, bindings {} (bindings last until they expire)",
        waited.as_secs_f64(),
        m.sum("sipfw_proxy_transactions_active"),
        kernel_transactions(&m),
        m.sum("sipfw_calls_active"),
        m.sum("sipfw_registrar_bindings")
    );
    let (made, ok, failed) = counts(&dir.join("uac/stat.csv"));
    let (reg_made, reg_ok, reg_failed) = counts(&dir.join("reg/stat.csv"));
    println!(
        "SIPp: calls placed {made} of {}, successful {ok}, failed {failed}; registrations \
         (401 then 200) started {reg_made}, successful {reg_ok}, failed {reg_failed}",
        plan.calls
    );
    println!(
        "edge CPU over the run: {cpu:.1} s ({:.3} ms per successful call, registrations in)",
        cpu * 1000.0 / ok.max(1) as f64
    );
    // What else the idle daemon holds: every non-zero gauge (counters, histograms and
    // fixed capacities left out), to read beside the RSS.
    println!("edge gauges when idle (non-zero):");
    for (series, v) in m.gauges() {
        println!("  {series} {v}");
    }
    println!("edge counters:");
    for name in [
        "sipfw_sip_requests_total",
        "sipfw_auth_total",
        "sipfw_calls_ended_total",
        "sipfw_proxy_forwarded_total",
        "sipfw_proxy_retransmissions_total",
        "sipfw_sip_rejections_total",
        "sipfw_sip_dropped_total",
        "sipfw_userspace_drops_total",
    ] {
        for (labels, v) in m.series(name).filter(|(_, v)| *v != 0.0) {
            println!("  {name}{labels} {v}");
        }
    }
}
