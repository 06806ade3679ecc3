//! `cargo xtask bench xdp`: what it costs to drop a banned source's packets, by (a) our XDP
//! program, (b) an nftables netdev-ingress rule, (c) a user-space socket that reads and
//! discards; same veth pair, same sender, one run. Prints rates, CPU per packet and ratios.
//!
//! The sender is the NIC-like one where the kernel allows it (`inject.rs`: live frames of
//! `BPF_PROG_TEST_RUN`), else trafgen, and the report says which.
//! CPU ns/packet is all CPUs' busy time (/proc/stat) over the packets injected: it includes
//! the injection itself, the same for the three.

use std::{
    io::Write as _,
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

mod inject;

use anyhow::Context as _;
use aya::programs::{TestRun, TestRunOptions, Xdp, XdpMode};
use inject::Injector;
use sip_firewall::xdp::{FastPath, program::BENCH_OBJECT};
use sip_firewall_common::{BanReason, BanScope, Reason, XdpConfig};
use sip_firewall_tests::{
    frames::{self, Shape},
    netns::{Pair, in_ns, run},
    require_root,
};

const RUN_FOR: Duration = Duration::from_secs(2);
/// Rounds of the four runs, interleaved; each figure is the median of its rounds.
const ROUNDS: usize = 3;

/// CPU time spent so far on this run's work, in ns: every CPU's kernel time (system, irq and
/// softirq from /proc/stat: injection, veth, XDP, nftables, the socket layer all run there)
/// plus this process's own user time (the socket reader). Other processes' user time (a
/// compiler running beside the benchmark) is left out.
fn busy_ns() -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let kernel = f[2] + f[5] + f[6];
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    // SAFETY: a valid out-pointer.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let own_user = ru.ru_utime.tv_sec as u64 * 1_000_000_000 + ru.ru_utime.tv_usec as u64 * 1000;
    Ok(kernel * 1_000_000_000 / hz + own_user)
}

/// A helper program on `veth-b`: `bench_pass` (a veth takes redirected frames only with a
/// program) or `bench_drop`.
fn attach_bench(pair: &Pair, name: &'static str) -> anyhow::Result<aya::Ebpf> {
    let ifc = pair.if_b;
    in_ns(&pair.ns_b, move || {
        let mut ebpf = aya::Ebpf::load(BENCH_OBJECT)?;
        let prog: &mut Xdp = ebpf
            .program_mut(name)
            .context("bench program")?
            .try_into()?;
        prog.load()?;
        prog.attach(ifc, XdpMode::Driver)?;
        Ok(ebpf)
    })
}

/// One round: baseline, XDP, nftables, socket; the program's own costs.
struct Round {
    runs: [Outcome; 4],
    live_ns: f64,
    banned_ns: f64,
    full_ns: f64,
}

struct Outcome {
    name: &'static str,
    injected: u64,
    dropped: u64,
    cpu_ns: u64,
}

impl Outcome {
    fn pps(&self) -> f64 {
        self.dropped as f64 / RUN_FOR.as_secs_f64()
    }
    fn ns_per_packet(&self) -> f64 {
        self.cpu_ns as f64 / self.injected as f64
    }
}

/// What one method does with the frames `sent` sends, and what that costs.
struct Run<'a> {
    sent: Injector,
    pair: &'a Pair,
    frame: &'a [u8],
}

fn measure(
    name: &'static str,
    run: &Run<'_>,
    dropped: impl FnOnce() -> anyhow::Result<u64>,
) -> anyhow::Result<Outcome> {
    let cpu0 = busy_ns()?;
    let injected = run.sent.inject(run.pair, run.frame, RUN_FOR)?;
    // Let NAPI and the socket reader finish what is queued.
    std::thread::sleep(Duration::from_millis(200));
    let cpu_ns = busy_ns()? - cpu0;
    Ok(Outcome {
        name,
        injected,
        dropped: dropped()?,
        cpu_ns,
    })
}

/// What injection alone costs: the cheapest drop on veth-b.
fn baseline_run(sent: Injector, frame: &[u8]) -> anyhow::Result<Outcome> {
    let pair = Pair::new("b0")?;
    let ebpf = attach_bench(&pair, "bench_drop")?;
    let prog: &Xdp = ebpf
        .program("bench_drop")
        .context("bench_drop")?
        .try_into()?;
    let before = prog.info()?.run_count();
    with_bpf_stats(|| {
        measure(
            "(0) baseline: bare XDP_DROP",
            &Run {
                sent,
                pair: &pair,
                frame,
            },
            || Ok(prog.info()?.run_count() - before),
        )
    })
}

/// The bench's fast-path settings: payloads up to 16 KiB, every ban in force, and a flood
/// limit of `rate` packets a second with bursts of `burst` (a source over it banned for
/// 60 s).
fn bench_config(rate: u32, burst: u32) -> XdpConfig {
    XdpConfig {
        max_payload: 16384,
        ban_scope: BanScope::All as u32,
        ..Default::default()
    }
    .with_flood(rate, burst, 60_000_000_000)
}

/// Run `f` with the kernel's per-program run-time statistics on.
fn with_bpf_stats<T>(f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    const KNOB: &str = "/proc/sys/kernel/bpf_stats_enabled";
    let old = std::fs::read_to_string(KNOB).unwrap_or_else(|_| "0".into());
    std::fs::write(KNOB, "1")?;
    let r = f();
    let _ = std::fs::write(KNOB, old.trim());
    r
}

fn xdp_run(
    sent: Injector,
    frame: &[u8],
    src: std::net::IpAddr,
) -> anyhow::Result<(Outcome, f64, f64, f64)> {
    let pair = Pair::new("bx")?;
    let ifc = pair.if_b;
    let mut fp = in_ns(&pair.ns_b, move || {
        let mut fp = FastPath::load()?;
        fp.maps.set_config(&bench_config(1000, 2000))?;
        fp.maps.set_sip_ports(&[5060])?;
        fp.attach(ifc, sip_firewall::xdp::config::XdpMode::Native)?;
        Ok(fp)
    })?;
    fp.maps.ban(src, u64::MAX, BanReason::Manual as u32)?;
    let before = fp.maps.counters()?[Reason::Banned as usize].packets;
    let info0 = fp.program().info()?;
    let out = with_bpf_stats(|| {
        measure(
            "(a) XDP ban, native",
            &Run {
                sent,
                pair: &pair,
                frame,
            },
            || Ok(fp.maps.counters()?[Reason::Banned as usize].packets - before),
        )
    })?;
    let info1 = fp.program().info()?;
    let runs = info1.run_count() - info0.run_count();
    let live_ns = (info1.run_time() - info0.run_time()).as_nanos() as f64 / runs.max(1) as f64;
    // The program's own cost, from the kernel's timing of BPF_PROG_TEST_RUN.
    let own = |fp: &FastPath, frame: &[u8]| -> anyhow::Result<f64> {
        let r = fp.program().test_run(TestRunOptions {
            data_in: Some(frame),
            repeat: 1_000_000,
            ..Default::default()
        })?;
        Ok(r.duration.as_nanos() as f64)
    };
    let banned_ns = own(&fp, frame)?;
    fp.maps.unban(src)?;
    // Through every check: a flood limit so generous that a million runs stay under it.
    fp.maps
        .set_config(&bench_config(1_000_000_000, 1_000_000_000))?;
    let full_ns = own(&fp, frame)?;
    anyhow::ensure!(
        fp.maps.bans().is_empty(),
        "the full-path run must not trip the flood limit"
    );
    Ok((out, live_ns, banned_ns, full_ns))
}

fn nft_run(sent: Injector, frame: &[u8]) -> anyhow::Result<Outcome> {
    let pair = Pair::new("bn")?;
    let _pass = attach_bench(&pair, "bench_pass")?;
    let rules = format!(
        "table netdev sfwbench {{\n chain ingress {{\n  type filter hook ingress device \"{}\" priority -500;\n  ip saddr {} counter drop\n }}\n}}\n",
        pair.if_b, pair.a4
    );
    let file = std::env::temp_dir().join(format!("sfwbench-{}.nft", std::process::id()));
    std::fs::write(&file, rules)?;
    let loaded = run(
        "ip",
        &[
            "netns",
            "exec",
            &pair.ns_b,
            "nft",
            "-f",
            &file.to_string_lossy(),
        ],
    );
    let _ = std::fs::remove_file(&file);
    loaded?;
    let ns = pair.ns_b.clone();
    measure(
        "(b) nftables netdev ingress",
        &Run {
            sent,
            pair: &pair,
            frame,
        },
        move || {
            let out = std::process::Command::new("ip")
                .args([
                    "netns", "exec", &ns, "nft", "list", "table", "netdev", "sfwbench",
                ])
                .output()?;
            let text = String::from_utf8_lossy(&out.stdout);
            let n = text
                .split("packets ")
                .nth(1)
                .and_then(|s| s.split_whitespace().next())
                .and_then(|s| s.parse().ok())
                .context("nft counter")?;
            Ok(n)
        },
    )
}

fn socket_run(sent: Injector, frame: &[u8]) -> anyhow::Result<Outcome> {
    let pair = Pair::new("bs")?;
    let _pass = attach_bench(&pair, "bench_pass")?;
    let sock = in_ns(&pair.ns_b, || {
        Ok(UdpSocket::bind(SocketAddr::from(([0, 0, 0, 0], 5060)))?)
    })?;
    sock.set_read_timeout(Some(Duration::from_millis(100)))?;
    let got = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (got, stop) = (got.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if sock.recv(&mut buf).is_ok() {
                    got.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let out = measure(
        "(c) socket read+discard",
        &Run {
            sent,
            pair: &pair,
            frame,
        },
        || Ok(got.load(Ordering::Relaxed)),
    )?;
    stop.store(true, Ordering::Relaxed);
    let _ = reader.join();
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    if !require_root("bench xdp") {
        return Ok(());
    }
    let pair_probe = Pair::new("bp")?;
    let src = pair_probe.a(false);
    let dst = pair_probe.b(false);
    drop(pair_probe);
    // A frame addressed to veth-b's MAC, from the banned source, to the SIP port.
    let mut frame = frames::udp(
        src,
        dst,
        5060,
        &frames::sip_request("OPTIONS", 1),
        &Shape::default(),
    );
    frames::set_pair_macs(&mut frame);
    frames::set_ipv4_checksum(&mut frame);

    eprintln!(
        "bench xdp: {ROUNDS} rounds of 4 runs of {} s, frames of {} bytes",
        RUN_FOR.as_secs(),
        frame.len()
    );
    let sent = Injector::probe(&frame)?;
    let rounds = run_rounds(sent, &frame, src)?;
    print_medians(sent, &rounds)
}

/// ROUNDS interleaved rounds of the four runs (baseline, XDP, nftables, socket).
fn run_rounds(sent: Injector, frame: &[u8], src: std::net::IpAddr) -> anyhow::Result<Vec<Round>> {
    let mut rounds = Vec::new();
    for round in 0..ROUNDS {
        eprintln!("bench xdp: round {}", round + 1);
        let base = baseline_run(sent, frame)?;
        let (xdp, live_ns, banned_ns, full_ns) = xdp_run(sent, frame, src)?;
        let nft = nft_run(sent, frame)?;
        let sock = socket_run(sent, frame)?;
        rounds.push(Round {
            runs: [base, xdp, nft, sock],
            live_ns,
            banned_ns,
            full_ns,
        });
    }
    Ok(rounds)
}

/// For each method, the round whose CPU cost is the median; medians of the other figures.
fn print_medians(sent: Injector, rounds: &[Round]) -> anyhow::Result<()> {
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let pick = |i: usize| -> &Outcome {
        let costs: Vec<f64> = rounds.iter().map(|r| r.runs[i].ns_per_packet()).collect();
        let m = median(costs.clone());
        let at = costs.iter().position(|c| *c == m).unwrap_or(0);
        &rounds[at].runs[i]
    };
    let live_ns = median(rounds.iter().map(|r| r.live_ns).collect());
    let banned_ns = median(rounds.iter().map(|r| r.banned_ns).collect());
    let full_ns = median(rounds.iter().map(|r| r.full_ns).collect());
    print_table(sent, [pick(0), pick(1), pick(2), pick(3)])?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "program's own cost on the live path (kernel bpf_stats run_time/run_cnt during (a)): {live_ns:.1} ns/pkt"
    )?;
    writeln!(
        out,
        "program's own cost (BPF_PROG_TEST_RUN, 1e6 runs, kernel timing, harness included): banned source {banned_ns:.1} ns/pkt; valid SIP request through every check {full_ns:.1} ns/pkt"
    )?;
    Ok(())
}

/// The table of the four methods (baseline, XDP, nftables, socket) and their ratios.
fn print_table(sent: Injector, [base, xdp, nft, sock]: [&Outcome; 4]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "XDP drop benchmark: veth pair in two namespaces; {}",
        sent.describe()
    )?;
    writeln!(
        out,
        "figures: the median of {ROUNDS} interleaved rounds; CPU = all CPUs' kernel time + this process's user time"
    )?;
    writeln!(
        out,
        "{:<30} {:>12} {:>12} {:>14} {:>22}",
        "method", "injected", "dropped", "dropped/s", "CPU ns/pkt"
    )?;
    for o in [base, xdp, nft, sock] {
        writeln!(
            out,
            "{:<30} {:>12} {:>12} {:>14.0} {:>22.1}",
            o.name,
            o.injected,
            o.dropped,
            o.pps(),
            o.ns_per_packet()
        )?;
    }
    // What dropping costs on top of getting the frame there.
    let extra = |o: &Outcome| (o.ns_per_packet() - base.ns_per_packet()).max(1.0);
    writeln!(
        out,
        "receive-side CPU ns/pkt (minus the baseline): XDP {:.1}, nftables {:.1}, socket {:.1}",
        extra(xdp),
        extra(nft),
        extra(sock)
    )?;
    writeln!(
        out,
        "ratios (receive-side CPU per packet): nftables/XDP = {:.2}, socket/XDP = {:.2}; XDP costs {:.0}% of nftables and {:.0}% of the socket",
        extra(nft) / extra(xdp),
        extra(sock) / extra(xdp),
        100.0 * extra(xdp) / extra(nft),
        100.0 * extra(xdp) / extra(sock)
    )?;
    writeln!(
        out,
        "ratios (total CPU per packet, injection included): nftables/XDP = {:.2}, socket/XDP = {:.2}; XDP costs {:.0}% of nftables and {:.0}% of the socket",
        nft.ns_per_packet() / xdp.ns_per_packet(),
        sock.ns_per_packet() / xdp.ns_per_packet(),
        100.0 * xdp.ns_per_packet() / nft.ns_per_packet(),
        100.0 * xdp.ns_per_packet() / sock.ns_per_packet()
    )?;
    writeln!(
        out,
        "ratios (drop rate): XDP/nftables = {:.2}, XDP/socket = {:.2}",
        xdp.pps() / nft.pps().max(1.0),
        xdp.pps() / sock.pps().max(1.0)
    )?;
    Ok(())
}
