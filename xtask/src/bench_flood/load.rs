//! The flood (trafgen on one CPU, raw frames from ns C to the edge's e0) and the CPU
//! accounting of the run (`/proc/stat`, `/proc/PID/stat`).

use std::{
    path::Path,
    process::{Child, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::net::{EDGE, FLOODER, MAC_C0, MAC_E0, Net, VICTIM};

/// What floods the edge while the calls run.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// No flood: the baseline.
    None,
    /// No flood and no calls: what the edge costs waiting (its timers and ticks) for
    /// `--seconds`, bob registered.
    Idle,
    /// OPTIONS requests from one source address.
    OneSource,
    /// OPTIONS requests, each from a random source in 10/8.
    Spoofed,
    /// 200 OK responses from random sources whose Via list sends them on to the victim.
    ForgedReplies,
    /// Random bytes (not SIP) to port 5060 from random sources.
    Junk,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::None,
        Kind::Idle,
        Kind::OneSource,
        Kind::Spoofed,
        Kind::ForgedReplies,
        Kind::Junk,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::None => "none",
            Kind::Idle => "idle",
            Kind::OneSource => "one-source",
            Kind::Spoofed => "spoofed",
            Kind::ForgedReplies => "forged-replies",
            Kind::Junk => "junk",
        }
    }

    pub fn parse(s: &str) -> anyhow::Result<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .with_context(|| {
                format!(
                    "unknown flood kind {s:?} (none, idle, one-source, spoofed, forged-replies, junk)"
                )
            })
    }
}

/// Per-packet counters in the payload: trafgen's one-byte runtime counters over ranges of
/// coprime lengths (26, 25, 23, 21, 19, 17), so the Via branch and Call-ID repeat only
/// after ~10^8 packets: each request is a new transaction, never a retransmission.
const COUNTER: &str = "dinc('a','z',1), dinc('a','y',1), dinc('a','w',1), \
                       dinc('A','U',1), dinc('A','S',1), dinc('A','Q',1)";

/// A SIP message as trafgen payload: each line a string, then CR LF as bytes (trafgen's
/// `\x` escapes only work in strings made of them alone); `@` marks the counter.
fn sip(lines: &[&str]) -> String {
    let mut out = String::new();
    for l in lines.iter().chain(std::iter::once(&"")) {
        for (i, part) in l.split('@').enumerate() {
            if i > 0 {
                out.push_str(COUNTER);
                out.push_str(", ");
            }
            if !part.is_empty() {
                out.push_str(&format!("{part:?}, "));
            }
        }
        out.push_str("0x0d, 0x0a, ");
    }
    out.trim_end_matches(", ").to_string()
}

/// trafgen's packet description for `kind` (None for no flood).
pub fn trafgen_config(kind: Kind) -> Option<String> {
    let random = "sa=10.0.0.1, sa[1]=drnd(), sa[2]=drnd(), sa[3]=drnd()";
    let one = format!("sa={FLOODER}");
    let options = sip(&[
        "OPTIONS sip:example.com SIP/2.0",
        "Via: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bK-@",
        "From: <sip:flood@other.example.org>;tag=@",
        "To: <sip:example.com>",
        "Call-ID: @",
        "CSeq: 1 OPTIONS",
        "Max-Forwards: 70",
        "Content-Length: 0",
    ]);
    let (source, payload) = match kind {
        Kind::None | Kind::Idle => return None,
        Kind::OneSource => (one.as_str(), options),
        Kind::Spoofed => (random, options),
        Kind::ForgedReplies => (
            random,
            sip(&[
                "SIP/2.0 200 OK",
                &format!("Via: SIP/2.0/UDP {EDGE}:5060;branch=z9hG4bK-@"),
                &format!("Via: SIP/2.0/UDP {VICTIM}:5060;branch=z9hG4bK-v"),
                "From: <sip:alice@example.com>;tag=a1",
                "To: <sip:bob@example.com>;tag=@",
                "Call-ID: @",
                "CSeq: 1 INVITE",
                "Content-Length: 0",
            ]),
        ),
        Kind::Junk => (random, "drnd(160)".to_string()),
    };
    Some(format!(
        "{{\n eth(da={MAC_E0}, sa={MAC_C0}, type=0x0800),\n \
         ipv4({source}, da={EDGE}, ttl=64),\n \
         udp(sp=5060, dp=5060, csum=0),\n {payload}\n}}\n"
    ))
}

/// A running flood: trafgen, restarted whenever it stops before the calls end. trafgen
/// gives up on its first failed send ("Flushing TX_RING failed: Resource temporarily
/// unavailable"), which is what a veth answers when XDP on its peer is slower than the
/// sender and its ring is full: the flood is at the edge's limit, so it goes on.
pub struct Flood {
    stop: Arc<AtomicBool>,
    worker: std::thread::JoinHandle<anyhow::Result<(f64, u32)>>,
}

/// What the flood cost and how often trafgen was restarted.
pub struct FloodCost {
    pub cpu: f64,
    pub restarts: u32,
}

impl Flood {
    /// trafgen in ns C on c0, one CPU (`--cpus 1`: one worker pinned to CPU 0), at most
    /// `max_packets` per start; no change to the host's socket memory sysctls or IRQ
    /// affinities.
    pub fn start(
        net: &Net,
        kind: Kind,
        dir: &Path,
        max_packets: u64,
    ) -> anyhow::Result<Option<Flood>> {
        let Some(conf) = trafgen_config(kind) else {
            return Ok(None);
        };
        let file = dir.join(format!("{}.trafgen", kind.name()));
        std::fs::write(&file, conf)?;
        let mut cmd = net.exec(&net.c, "trafgen");
        cmd.args([
            "--dev",
            "c0",
            "--cpus",
            "1",
            "--no-sock-mem",
            "--notouch-irq",
        ])
        .arg("--conf")
        .arg(&file)
        .args(["--num", &max_packets.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
        let first = cmd.spawn().context("starting trafgen")?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let worker = std::thread::spawn(move || supervise(cmd, first, &flag));
        Ok(Some(Flood { stop, worker }))
    }

    /// Stop it; trafgen's CPU over all its starts.
    pub fn stop(self) -> anyhow::Result<FloodCost> {
        self.stop.store(true, Ordering::SeqCst);
        let (cpu, restarts) = self
            .worker
            .join()
            .map_err(|_| anyhow::anyhow!("the trafgen supervisor panicked"))??;
        Ok(FloodCost { cpu, restarts })
    }
}

/// Keep trafgen running until `stop`; its CPU summed over every start: a process that
/// ended is read as a zombie (its own time plus its reaped worker's, cutime/cstime) before
/// it is reaped; the last one is read (with its live worker) just before it is killed.
fn supervise(
    mut cmd: std::process::Command,
    mut child: Child,
    stop: &AtomicBool,
) -> anyhow::Result<(f64, u32)> {
    let mut cpu = 0.0;
    let mut restarts = 0;
    loop {
        let pid = child.id();
        if stop.load(Ordering::SeqCst) {
            // Its CPU read first, then SIGKILL to it and its worker: a worker blocked on a
            // full ring does not answer SIGINT promptly, and the flood must end with the
            // calls.
            cpu += tree_cpu(pid);
            for p in tree(pid) {
                signal(p, 9);
            }
            child.wait()?;
            return Ok((cpu, restarts));
        }
        if stat_fields(pid).and_then(|f| f.first().cloned()).as_deref() == Some("Z") {
            cpu += zombie_cpu(pid);
            child.wait()?;
            restarts += 1;
            child = cmd.spawn().context("restarting trafgen")?;
            continue;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A zombie's CPU: its own and its reaped children's (fields 14 to 17 of proc(5)).
fn zombie_cpu(pid: u32) -> f64 {
    let Some(f) = stat_fields(pid) else {
        return 0.0;
    };
    (11..=14)
        .filter_map(|i| f.get(i)?.parse::<f64>().ok())
        .sum::<f64>()
        / hz()
}

/// Send signal `sig` to process `pid` (one of ours).
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) has no memory preconditions; the callers pass their own children.
    unsafe { kill(pid as i32, sig) };
}

unsafe extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
}

/// Clock ticks per second (`getconf CLK_TCK`).
pub fn hz() -> f64 {
    static HZ: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok()?.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// Fields of `/proc/PID/stat` after the command name (which may hold spaces): index 0 is
/// the state (field 3 of proc(5)).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// CPU seconds of process `pid`, all its threads: utime + stime (fields 14, 15 of proc(5)).
pub fn process_cpu(pid: u32) -> anyhow::Result<f64> {
    let f = stat_fields(pid).with_context(|| format!("/proc/{pid}/stat"))?;
    let tick = |i: usize| -> anyhow::Result<f64> {
        Ok(f.get(i).context("/proc stat field")?.parse::<f64>()?)
    };
    Ok((tick(11)? + tick(12)?) / hz())
}

/// The parent of process `pid`, while it lives.
pub fn parent(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// `pid` and every process under it (Kamailio forks its workers), from the parent links
/// of `/proc/*/stat`.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut parent = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(pp) = self::parent(p) {
                parent.push((p, pp));
            }
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let cur = out[i];
        out.extend(parent.iter().filter(|(_, pp)| *pp == cur).map(|(p, _)| *p));
        i += 1;
    }
    out
}

/// CPU seconds of `pid` and its descendants (those alive now).
pub fn tree_cpu(pid: u32) -> f64 {
    tree(pid)
        .into_iter()
        .filter_map(|p| process_cpu(p).ok())
        .sum()
}

/// The machine's CPU time so far from the first line of `/proc/stat`, in seconds: busy
/// (everything but idle and iowait) and softirq.
pub fn machine() -> anyhow::Result<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("/proc/stat")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    if v.len() < 7 {
        bail!("/proc/stat: {line}");
    }
    // user nice system idle iowait irq softirq steal ...; guest time is inside user.
    let total: f64 = v.iter().take(8).sum();
    let busy = total - v[3] - v[4];
    Ok((busy / hz(), v[6] / hz()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_trafgen_configs() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.name()).unwrap(), k);
        }
        assert!(Kind::parse("syn").is_err());
        assert!(trafgen_config(Kind::None).is_none());
        assert!(trafgen_config(Kind::Idle).is_none());
        let spoofed = trafgen_config(Kind::Spoofed).unwrap();
        assert!(spoofed.contains("sa[3]=drnd()"));
        assert!(spoofed.contains("\"OPTIONS sip:example.com SIP/2.0\", 0x0d, 0x0a"));
        assert!(spoofed.contains("branch=z9hG4bK-\", dinc('a','z',1)"));
        let one = trafgen_config(Kind::OneSource).unwrap();
        assert!(one.contains(&format!("sa={FLOODER}")) && !one.contains("drnd"));
        let forged = trafgen_config(Kind::ForgedReplies).unwrap();
        assert!(forged.contains(&format!("Via: SIP/2.0/UDP {VICTIM}:5060")));
        assert!(trafgen_config(Kind::Junk).unwrap().contains("drnd(160)"));
    }
}
