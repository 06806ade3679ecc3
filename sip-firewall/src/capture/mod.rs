//! `sip-firewall capture`: the packets the XDP program judged, by verdict, and (`--layer
//! gate`) the messages the user-space gate refused and the message layer answered itself,
//! into one pcapng file that tshark and Wireshark open as it is.
//!
//! **Decides**: which layers a capture reads (`--layer xdp|gate|all`), which packets it
//! takes (`--verdict` for XDP; `--source`, `--port`, `--sample` for both: the filter the
//! program applies in the kernel, `xdp::capture`, and the daemon before copying,
//! `crate::tap`), how many bytes of each (`--snap`), when it stops (`--count`,
//! `--duration`, SIGINT/SIGTERM). The XDP layer runs in the CLI's own process: it opens the
//! daemon's pinned maps (`[xdp] pin_dir`, `--pin-dir`), so packets never travel over the
//! admin socket. The gate layer is streamed by the daemon over its admin socket
//! (`[admin] socket`, `--admin-socket`) and needs no pinned map. Each packet's verdict or
//! gate reason is its block's comment (`pcapng`). Copies that could not be handed over
//! because this reader was slow are counted and reported (`dropped by capture`); neither
//! the XDP path nor the message path ever waits for a capture.
//!
//! | module | job |
//! | --- | --- |
//! | `pcapng` | the file: section, interfaces, packets with their verdict |
//! | `gate` | the gate layer: the daemon's stream of refused and answered messages |
//! | `frame` | the IP and UDP headers made up around a gate layer message |
//!
//! **Config**: reads `[xdp] pin_dir` and `[admin] socket` only. **Metrics**: none (a
//! capture is a command; the daemon counts `sipfw_capture_dropped_total`).

pub mod frame;
pub mod gate;
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

/// Where a capture takes packets from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Layer {
    /// What the XDP program judged (the pinned maps).
    Xdp,
    /// What the user-space gate refused and the message layer answered itself (the daemon,
    /// over its admin socket).
    Gate,
    /// Both, in one file.
    All,
}

/// Options of `capture`.
#[derive(Debug, Args)]
pub struct CaptureArgs {
    /// Layers to capture, comma-separated: xdp (the packets the XDP program judged), gate
    /// (what the user-space gate refused and the message layer answered itself), all.
    #[arg(long, value_delimiter = ',', default_value = "xdp")]
    pub layer: Vec<Layer>,
    /// XDP verdicts to capture, comma-separated: passed, allowed, denied, banned, flood,
    /// oversize, malformed, stray_reply, pressure, throttled, connection; `drops` for
    /// every dropping one, `all` for every one (default: drops). The gate layer takes
    /// every refusal of the gate and every local answer of 300 to 699.
    #[arg(long, value_delimiter = ',', value_parser = parse_verdicts)]
    pub verdict: Vec<u32>,
    /// Only packets from this source address or prefix (192.0.2.0/24, 2001:db8::/32); at
    /// the gate layer, the answers to it too.
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
    /// The daemon's admin socket, for the gate layer (default: `[admin] socket` of the
    /// config).
    #[arg(long)]
    pub admin_socket: Option<PathBuf>,
    /// Config file to read the pin directory and the admin socket from.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

impl CaptureArgs {
    /// Whether the capture reads `layer` (`all` reads both).
    pub fn wants(&self, layer: Layer) -> bool {
        self.layer.iter().any(|l| *l == layer || *l == Layer::All)
    }
}

/// The daemon's filter of these options, for the gate layer.
pub fn tap_filter(args: &CaptureArgs) -> crate::tap::TapFilter {
    crate::tap::TapFilter {
        source: args.source.map(|n| n.trunc()),
        port: args.port,
        sample: args.sample.unwrap_or(1),
        snap: args.snap,
        count: args.count,
        duration_ms: args
            .duration
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
    }
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
    Interface {
        ifindex,
        name,
        linktype: pcap_file::DataLink::ETHERNET,
    }
}

/// Where a capture's packets come from: the XDP program's tap, the daemon's gate stream.
pub struct Sources {
    pub xdp: Option<CaptureTap>,
    pub gate: Option<gate::GateFeed>,
}

/// The file being written, and what it took so far.
struct Sink {
    file: PcapNg<BufWriter<Box<dyn Write>>>,
    names: HashMap<u32, Interface>,
    gate: Interface,
    /// The XDP program's clock (CLOCK_MONOTONIC) to the wall clock.
    offset: u64,
    captured: u64,
    limit: u64,
    failed: Option<pcapng::PcapNgError>,
    /// What this round took from either layer, written oldest first at its end.
    round: Vec<Taken>,
}

/// A packet taken, not written yet.
struct Taken {
    at: Duration,
    /// The interface index of an XDP packet; `None`: the gate's.
    ifindex: Option<u32>,
    len: u32,
    data: Vec<u8>,
    comment: String,
}

impl Sink {
    fn full(&self) -> bool {
        self.captured + self.round.len() as u64 >= self.limit || self.failed.is_some()
    }

    fn xdp(&mut self, h: &CaptureHeader, data: &[u8]) {
        if self.full() {
            return;
        }
        self.names
            .entry(h.ifindex)
            .or_insert_with(|| interface(h.ifindex));
        let reason = Reason::from_index(h.reason).unwrap_or(Reason::Passed);
        self.round.push(Taken {
            at: Duration::from_nanos(h.ktime_ns.saturating_add(self.offset)),
            ifindex: Some(h.ifindex),
            len: h.len,
            data: data.to_vec(),
            comment: pcapng::comment(reason),
        });
    }

    fn gate(&mut self, r: crate::tap::record::TapRecord) {
        if self.full() {
            return;
        }
        let (mut frame, wire) = frame::udp_frame(r.src, r.dst, &r.data, r.len);
        frame.truncate(self.file.snap() as usize);
        self.round.push(Taken {
            at: Duration::from_nanos(r.unix_ns),
            ifindex: None,
            len: wire,
            data: frame,
            comment: r.comment(),
        });
    }

    /// Write what this round took in time order: the two layers' packets interleaved as
    /// they happened, each CPU's XDP copies among the others'.
    fn write_round(&mut self) {
        let mut round = std::mem::take(&mut self.round);
        round.sort_by_key(|t| t.at);
        for t in round {
            let iface = match t.ifindex.and_then(|i| self.names.get(&i)) {
                Some(i) => i,
                None => &self.gate,
            };
            match self.file.packet(iface, t.at, (t.len, &t.data), t.comment) {
                Ok(()) => self.captured += 1,
                Err(e) => {
                    self.failed = Some(e);
                    return;
                }
            }
        }
    }
}

/// The file of `-w`: a file, or stdout for `-`.
fn output(args: &CaptureArgs) -> anyhow::Result<Box<dyn Write>> {
    Ok(if args.write.as_os_str() == "-" {
        Box::new(std::io::stdout().lock())
    } else {
        Box::new(
            std::fs::File::create(&args.write)
                .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", args.write.display()))?,
        )
    })
}

/// Run a capture until its count, its duration or a signal (or the daemon ending a gate
/// only capture); what it saw.
pub fn run(args: &CaptureArgs, mut sources: Sources) -> anyhow::Result<Summary> {
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    // The program's clock is CLOCK_MONOTONIC: the file's time is the wall clock.
    let mut sink = Sink {
        file: PcapNg::new(BufWriter::new(output(args)?), args.snap)?,
        names: HashMap::new(),
        gate: pcapng::gate_interface(),
        offset: mono_to_wall_offset_ns(),
        captured: 0,
        limit: args.count.unwrap_or(u64::MAX),
        failed: None,
        round: Vec::new(),
    };
    let t0 = Instant::now();
    let mut running = true;
    while running {
        running = !STOP.load(Ordering::SeqCst)
            && !sink.full()
            && args.duration.is_none_or(|d| t0.elapsed() < d)
            && sources
                .gate
                .as_ref()
                .is_none_or(|g| !g.ended || sources.xdp.is_some());
        // Stopping: one last pass without waiting takes what the buffers still hold.
        let wait = match (running, sources.gate.is_some()) {
            (false, _) => Duration::ZERO,
            (true, true) => Duration::from_millis(50),
            (true, false) => Duration::from_millis(200),
        };
        if let Some(tap) = &mut sources.xdp {
            tap.poll(wait, |h: &CaptureHeader, data| sink.xdp(h, data))?;
        }
        if let Some(g) = &mut sources.gate {
            let mut wait = if sources.xdp.is_some() {
                Duration::ZERO
            } else {
                wait
            };
            while let Some(r) = g.next(wait) {
                sink.gate(r);
                wait = Duration::ZERO;
            }
            if !running {
                g.stop(|r| sink.gate(r));
            }
        }
        sink.write_round();
        if let Some(e) = sink.failed.take() {
            return Err(e.into());
        }
        sink.file.flush()?;
    }
    let dropped = match &sources.xdp {
        Some(tap) => tap.lost()?,
        None => 0,
    } + sources.gate.as_ref().map_or(0, |g| g.dropped);
    drop(sources);
    sink.file.flush()?;
    Ok(Summary {
        captured: sink.captured,
        dropped,
    })
}

/// `sip-firewall capture`: the pin directory and the admin socket from the options or the
/// config, the layers asked for, the capture, and its summary on stderr (as tcpdump gives
/// it).
pub fn command(args: &CaptureArgs) -> anyhow::Result<()> {
    let config = match (&args.pin_dir, &args.admin_socket) {
        (Some(_), Some(_)) => None,
        _ => Some(crate::config::Config::load(args.config.as_deref())?),
    };
    let mut sources = Sources {
        xdp: None,
        gate: None,
    };
    let mut said = Vec::new();
    if args.wants(Layer::Gate) {
        let socket = match (&args.admin_socket, &config) {
            (Some(s), _) => s.clone(),
            (None, Some(c)) => c.admin.socket.clone(),
            (None, None) => anyhow::bail!("no admin socket"),
        };
        sources.gate = Some(gate::GateFeed::open(&socket, tap_filter(args))?);
        said.push(format!("gate via {}", socket.display()));
    }
    if args.wants(Layer::Xdp) {
        let pin_dir = match (&args.pin_dir, &config) {
            (Some(d), _) => d.clone(),
            (None, Some(c)) => c.xdp.pin_dir.clone(),
            (None, None) => anyhow::bail!("no pin directory"),
        };
        let tap = CaptureTap::open(&pin_dir, filter(args), args.buffer_pages)?;
        said.push(format!("xdp slot {}", tap.slot()));
        sources.xdp = Some(tap);
    }
    eprintln!(
        "sip-firewall: capturing ({}) into {}",
        said.join(", "),
        args.write.display()
    );
    let summary = run(args, sources)?;
    eprintln!(
        "{} packets captured\n{} packets dropped by capture",
        summary.captured, summary.dropped
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    use super::*;
    use crate::cli::{Cli, Command};

    fn args(extra: &[&str]) -> CaptureArgs {
        let argv = [&["sip-firewall", "capture", "-w", "x.pcapng"], extra].concat();
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Capture(a) => a,
            _ => panic!("not capture"),
        }
    }

    #[test]
    fn layers_and_the_daemons_filter() {
        let xdp = args(&[]);
        assert!(xdp.wants(Layer::Xdp) && !xdp.wants(Layer::Gate));
        let both = args(&["--layer", "gate,xdp"]);
        assert!(both.wants(Layer::Xdp) && both.wants(Layer::Gate));
        let all = args(&["--layer", "all"]);
        assert!(all.wants(Layer::Xdp) && all.wants(Layer::Gate));
        let gate = args(&[
            "--layer",
            "gate",
            "--source",
            "192.0.2.77/24",
            "--port",
            "5070",
            "--sample",
            "1/10",
            "--snap",
            "300",
            "--count",
            "7",
            "--duration",
            "2s",
        ]);
        assert!(!gate.wants(Layer::Xdp) && gate.wants(Layer::Gate));
        let f = tap_filter(&gate);
        assert_eq!(f.source, Some("192.0.2.0/24".parse().unwrap()));
        assert_eq!((f.port, f.sample, f.snap), (Some(5070), 10, 300));
        assert_eq!((f.count, f.duration_ms), (Some(7), Some(2000)));
        assert!(
            Cli::try_parse_from(["sip-firewall", "capture", "-w", "x", "--layer", "tcp"]).is_err()
        );
    }
}
