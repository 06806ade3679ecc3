//! `sip-firewall capture`: the packets the XDP program judged, by verdict, into a pcapng
//! file that tshark and Wireshark open as it is.
//!
//! **Decides**: which packets a capture takes (`--verdict`, `--source`, `--port`,
//! `--sample`: the filter the program applies in the kernel, `xdp::capture`), how many bytes
//! of each (`--snap`), when it stops (`--count`, `--duration`, SIGINT/SIGTERM). It runs in
//! the CLI's own process: it opens the daemon's pinned maps (`[xdp] pin_dir`, `--pin-dir`),
//! so packets never travel over the admin socket. Each packet's verdict is its block's
//! comment (`pcapng`). Copies the kernel could not hand over because this reader was slow
//! are counted and reported (`dropped by capture`); the XDP path never waits for a capture.
//!
//! | module | job |
//! | --- | --- |
//! | `pcapng` | the file: section, interfaces, packets with their verdict |
//!
//! **Config**: reads `[xdp] pin_dir` only. **Metrics**: none (a capture is a command).

pub mod pcapng;

use std::{
    collections::HashMap,
    io::{BufWriter, Write},
    path::PathBuf,
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use clap::Args;
use ipnet::IpNet;
use sip_firewall_common::{
    addr::to_words,
    capture::{CaptureFilter, CaptureHeader, SNAP_MAX},
    counters::Reason,
};

use crate::{
    admin::commands::parse_net,
    clock::mono_to_wall_offset_ns,
    xdp::{
        capture::{CaptureTap, dropping_verdicts},
        maps::net_key,
    },
};
use pcapng::{Interface, PcapNg};

/// Options of `capture`.
#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Verdicts to capture, comma-separated: passed, allowed, denied, banned, flood,
    /// oversize, malformed, stray_reply, pressure, throttled, connection; `drops` for
    /// every dropping one, `all` for every one (default: drops).
    #[arg(long, value_delimiter = ',', value_parser = parse_verdicts)]
    pub verdict: Vec<u32>,
    /// Only packets from this source address or prefix (192.0.2.0/24, 2001:db8::/32).
    #[arg(long, value_parser = parse_net)]
    pub source: Option<IpNet>,
    /// Only UDP and TCP packets from or to this port.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Bytes of each frame kept (the rest is counted in its length, not written).
    #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..=SNAP_MAX as i64))]
    pub snap: u32,
    /// Stop after this many packets.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,
    /// Stop after this long: 30s, 5m, 1h.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub duration: Option<Duration>,
    /// Keep one matching packet in N, chosen at random in the kernel: `1/N`.
    #[arg(long, value_parser = parse_sample)]
    pub sample: Option<u32>,
    /// The pcapng file to write; `-` writes to stdout (for `| tshark -r -`).
    #[arg(short = 'w', long = "write")]
    pub write: PathBuf,
    /// Pages of perf buffer per CPU (a power of two): what a burst can fill before copies
    /// are dropped by the capture.
    #[arg(long, default_value_t = 64, value_parser = parse_pages)]
    pub buffer_pages: usize,
    /// The daemon's bpffs pin directory (default: `[xdp] pin_dir` of the config).
    #[arg(long)]
    pub pin_dir: Option<PathBuf>,
    /// Config file to read the pin directory from.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// The verdict bits of one `--verdict` item.
fn parse_verdicts(s: &str) -> Result<u32, String> {
    match s {
        "all" => Ok(sip_firewall_common::capture::ALL_VERDICTS),
        "drops" => Ok(dropping_verdicts()),
        _ => Reason::ALL
            .iter()
            .find(|r| r.name() == s)
            .map(|r| 1 << *r as u32)
            .ok_or_else(|| {
                let names: Vec<&str> = Reason::ALL.iter().map(|r| r.name()).collect();
                format!(
                    "{s:?} is not a verdict: one of {}, drops, all",
                    names.join(", ")
                )
            }),
    }
}

/// `1/N` (N at least 1).
fn parse_sample(s: &str) -> Result<u32, String> {
    s.strip_prefix("1/")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("{s:?} is not a sampling rate like 1/100 (one packet in 100)"))
}

/// A power of two of pages, at most 4096 (16 MiB a CPU with 4 KiB pages).
fn parse_pages(s: &str) -> Result<usize, String> {
    s.parse::<usize>()
        .ok()
        .filter(|n| n.is_power_of_two() && *n <= 4096)
        .ok_or_else(|| format!("{s:?} is not a power of two of pages from 1 to 4096"))
}

/// The kernel filter of these options.
pub fn filter(args: &CaptureArgs) -> CaptureFilter {
    let verdicts = if args.verdict.is_empty() {
        parse_verdicts("drops").unwrap_or(0)
    } else {
        args.verdict.iter().fold(0, |m, v| m | v)
    };
    let (prefix, mask) = match &args.source {
        Some(net) => {
            let key = net_key(&net.trunc());
            let mask = prefix_mask(key.prefix_len());
            let data = to_words(&key.data());
            ([data[0] & mask[0], data[1] & mask[1]], mask)
        }
        None => ([0; 2], [0; 2]),
    };
    CaptureFilter {
        verdicts,
        port: args.port.unwrap_or(0),
        snap: args.snap,
        sample: args.sample.unwrap_or(1),
        prefix,
        mask,
        ..CaptureFilter::default()
    }
}

/// The key words of a mask of the first `bits` bits of a 16-byte key.
fn prefix_mask(bits: u32) -> [u64; 2] {
    let mut m = [0u8; 16];
    for (i, b) in m.iter_mut().enumerate() {
        let start = i as u32 * 8;
        if start + 8 <= bits {
            *b = 0xff;
        } else if start < bits {
            *b = 0xffu8 << (8 - (bits - start));
        }
    }
    to_words(&m)
}

/// Set by SIGINT and SIGTERM: the capture ends and the file is complete.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// What a capture saw.
#[derive(Debug, Default)]
pub struct Summary {
    pub captured: u64,
    pub dropped: u64,
}

/// The name of interface `ifindex` in this network namespace, else `ifindex N`.
fn interface(ifindex: u32) -> Interface {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes, as if_indextoname wants.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    let name = if p.is_null() {
        format!("ifindex {ifindex}")
    } else {
        // SAFETY: if_indextoname wrote a NUL-terminated name into `buf`.
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    };
    Interface { ifindex, name }
}

/// Run a capture until its count, its duration or a signal; what it saw.
pub fn run(args: &CaptureArgs, pin_dir: &std::path::Path) -> anyhow::Result<Summary> {
    let out: Box<dyn Write> = if args.write.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(&args.write)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", args.write.display()))?,
        )
    };
    let mut file = PcapNg::new(BufWriter::new(out), args.snap)?;
    let mut tap = CaptureTap::open(pin_dir, filter(args), args.buffer_pages)?;
    eprintln!(
        "sip-firewall: capturing (slot {}) into {}",
        tap.slot(),
        args.write.display()
    );
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    // The program's clock is CLOCK_MONOTONIC: the file's time is the wall clock.
    let offset = mono_to_wall_offset_ns();
    let mut names: HashMap<u32, Interface> = HashMap::new();
    let mut summary = Summary::default();
    let t0 = Instant::now();
    let mut failed = None;
    let limit = args.count.unwrap_or(u64::MAX);
    let mut running = true;
    while running {
        running = !STOP.load(Ordering::SeqCst)
            && summary.captured < limit
            && args.duration.is_none_or(|d| t0.elapsed() < d);
        // Stopping: one last pass without waiting takes what the buffers still hold.
        let wait = if running {
            Duration::from_millis(200)
        } else {
            Duration::ZERO
        };
        tap.poll(wait, |h: &CaptureHeader, data| {
            if summary.captured >= limit || failed.is_some() {
                return;
            }
            let iface = names
                .entry(h.ifindex)
                .or_insert_with(|| interface(h.ifindex));
            let at = Duration::from_nanos(h.ktime_ns.saturating_add(offset));
            let reason = Reason::from_index(h.reason).unwrap_or(Reason::Passed);
            match file.packet(iface, at, h.len, data, reason) {
                Ok(()) => summary.captured += 1,
                Err(e) => failed = Some(e),
            }
        })?;
        if let Some(e) = failed.take() {
            return Err(e.into());
        }
        file.flush()?;
    }
    summary.dropped = tap.lost()?;
    drop(tap);
    file.flush()?;
    Ok(summary)
}

/// `sip-firewall capture`: the pin directory from the options or the config, the capture,
/// and its summary on stderr (as tcpdump gives it).
pub fn command(args: &CaptureArgs) -> anyhow::Result<()> {
    let pin_dir = match &args.pin_dir {
        Some(d) => d.clone(),
        None => {
            crate::config::Config::load(args.config.as_deref())?
                .xdp
                .pin_dir
        }
    };
    let summary = run(args, &pin_dir)?;
    eprintln!(
        "{} packets captured\n{} packets dropped by capture",
        summary.captured, summary.dropped
    );
    Ok(())
}
