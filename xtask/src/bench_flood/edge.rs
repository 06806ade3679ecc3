//! The edge under test in ns E: our release daemon with XDP attached to e0 in native mode
//! (as `sip-firewall run` does by default on a real NIC), or Kamailio with
//! deploy/kamailio/bench.cfg. Both listen on 198.51.100.2:5060 only.

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{
    load,
    net::{EDGE, Net},
    runtime::RunTime,
};

/// What both configs of our daemon share: the domain, a transactions cap one caller cannot
/// reach (its transactions live 32 s after their final answer, RFC 6026), and the callee and
/// caller, who register with digest (MD5, like Kamailio's auth module).
macro_rules! config_head {
    () => {
        r#"
[sip]
domains = ["example.com"]
max_transactions_per_source = 1000000
[auth]
algorithms = ["MD5"]
users = [
  { user = "bob", domain = "example.com", password = "bench" },
  { user = "alice", domain = "example.com", password = "bench" },
]
"#
    };
}

/// Our daemon's config for the bench: the defaults, but for what lets one legitimate caller
/// place its calls (the same limits go to Kamailio's pike in bench.cfg): the caller's
/// ~3 requests per call stay under the per-source flood limit and its request count under
/// the user-space request limit.
pub const CONFIG: &str = concat!(
    config_head!(),
    r#"[xdp]
flood_rate = 1000
flood_burst = 2000
[bans]
request_limit = 20000
"#
);

/// The bench config with the per-source limits lifted on our side (`bench flood --pin`):
/// one SIPp address stands for every caller, and at 2000 calls/s its ~3 requests per call
/// are over any per-source flood, request or pressure limit. Kamailio's pike is lifted alike
/// ([`kamailio_open_cfg`]).
pub const CONFIG_OPEN: &str = concat!(
    config_head!(),
    r#"[xdp]
flood_rate = 0
known_flood_rate = 0
pressure_budget = 0
[bans]
request_limit = 0
known_request_limit = 0
"#
);

/// What each edge runs with: our daemon's config text, Kamailio's config file, and the CPU
/// the edge is started on, if any.
pub struct Setup<'a> {
    pub config: &'a str,
    pub kamailio_cfg: PathBuf,
    /// Started with its affinity set to this CPU alone (`taskset -c`, as systemd's
    /// `CPUAffinity=` does), so that what sizes itself by the CPUs it may use (our workers,
    /// shards and runtime threads) sees one.
    pub cpu: Option<u32>,
}

impl Setup<'static> {
    /// `bench flood`'s: per-source limits that let the one legitimate caller through.
    pub fn flood() -> Setup<'static> {
        Setup {
            config: CONFIG,
            kamailio_cfg: crate::root().join("deploy/kamailio/bench.cfg"),
            cpu: None,
        }
    }

    /// Per-source limits lifted on both edges; Kamailio's config copied into `dir`; each
    /// edge started on `cpu`.
    pub fn open(dir: &Path, cpu: u32) -> anyhow::Result<Setup<'static>> {
        Ok(Setup {
            config: CONFIG_OPEN,
            kamailio_cfg: kamailio_open_cfg(dir)?,
            cpu: Some(cpu),
        })
    }
}

/// deploy/kamailio/bench.cfg with pike's per-source density raised out of reach, written
/// to `dir`: the rest of its REQINIT (sanity, scanner drop, htable) stays.
fn kamailio_open_cfg(dir: &Path) -> anyhow::Result<PathBuf> {
    let cfg = std::fs::read_to_string(crate::root().join("deploy/kamailio/bench.cfg"))?;
    let from = r#"modparam("pike", "reqs_density_per_unit", 2000)"#;
    if !cfg.contains(from) {
        bail!("deploy/kamailio/bench.cfg no longer sets pike's density as {from}");
    }
    let out = dir.join("kamailio-open.cfg");
    std::fs::write(
        &out,
        cfg.replace(
            from,
            r#"modparam("pike", "reqs_density_per_unit", 100000000)"#,
        ),
    )?;
    Ok(out)
}

/// Which edge.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    Ours,
    Kamailio,
}

impl Peer {
    pub fn name(self) -> &'static str {
        match self {
            Peer::Ours => "sip-firewall",
            Peer::Kamailio => "kamailio",
        }
    }
}

/// A running edge, stopped on drop.
pub struct Edge {
    child: Child,
    pub peer: Peer,
    pin_dir: Option<PathBuf>,
    runtime: RunTime,
}

impl Edge {
    /// Start `peer` in ns E with its files in `dir`.
    pub fn start(
        peer: Peer,
        net: &Net,
        dir: &Path,
        bin: &Path,
        setup: &Setup,
    ) -> anyhow::Result<Edge> {
        let log = std::fs::File::create(dir.join(format!("{}.log", peer.name())))?;
        let (child, pin_dir) = match peer {
            Peer::Ours => {
                let cfg = dir.join("sip-firewall.toml");
                std::fs::write(&cfg, setup.config)?;
                let pins = PathBuf::from(format!(
                    "/sys/fs/bpf/{}",
                    dir.file_name().context("dir")?.to_string_lossy()
                ));
                let child = crate::daemon::run_in(launch(net, setup.cpu, bin.as_os_str()), dir)
                    .args(["--sip-listen", &format!("{EDGE}:5060")])
                    .args(["--metrics-listen", "127.0.0.1:9464"])
                    .args(["--iface", "e0", "--xdp-mode", "native", "--detach"])
                    .arg("--pin-dir")
                    .arg(&pins)
                    .stderr(log)
                    .spawn()
                    .context("starting sip-firewall")?;
                (child, Some(pins))
            }
            Peer::Kamailio => (kamailio(net, dir, setup, log)?, None),
        };
        let edge = Edge {
            runtime: RunTime::watch(child.id()),
            child,
            peer,
            pin_dir,
        };
        edge.wait_listening(net)?;
        Ok(edge)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU seconds of the edge so far: the daemon's threads, or Kamailio's processes.
    pub fn cpu(&self) -> f64 {
        load::tree_cpu(self.pid())
    }

    /// Seconds on a CPU so far, in nanoseconds' resolution (schedstat, see `runtime`).
    pub fn run_time(&self) -> f64 {
        self.runtime.seconds()
    }

    /// Pin every thread of the edge's processes (Kamailio's forked workers too) to `cpu`;
    /// the threads pinned.
    pub fn pin(&self, cpu: u32) -> anyhow::Result<usize> {
        let mut threads = 0;
        for p in load::tree(self.pid()) {
            crate::run(
                std::process::Command::new("taskset")
                    .args(["-a", "-p", "-c", &cpu.to_string(), &p.to_string()])
                    .stdout(Stdio::null()),
            )?;
            threads += std::fs::read_dir(format!("/proc/{p}/task"))
                .map(|d| d.count())
                .unwrap_or(0);
        }
        Ok(threads)
    }

    /// Resident memory of the edge's main process (`VmRSS`), KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Until the edge's UDP socket is bound in ns E (20 s at most).
    fn wait_listening(&self, net: &Net) -> anyhow::Result<()> {
        let t0 = Instant::now();
        loop {
            let out = net
                .exec(&net.e, "ss")
                .args(["-Huln", "src", &format!("{EDGE}:5060")])
                .output()?;
            if !String::from_utf8_lossy(&out.stdout).trim().is_empty() {
                return Ok(());
            }
            if t0.elapsed() > Duration::from_secs(20) {
                bail!("{} did not listen on {EDGE}:5060", self.peer.name());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        // Kamailio's workers, which outlive a main process that had to be killed.
        let pid = self.child.id();
        let workers: Vec<u32> = load::tree(pid).into_iter().skip(1).collect();
        // SIGTERM first: our daemon detaches XDP and removes its pins (--detach).
        load::signal(pid, 15);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for w in workers {
            // Only a worker left behind (now init's child), not a process that took its id.
            if load::parent(w) == Some(1) {
                load::signal(w, 9);
            }
        }
        if let Some(p) = &self.pin_dir {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

/// Kamailio in the foreground (-DD: its main process stays our child and forks the
/// workers), logging to stderr (-E), with the repository's bench config.
fn kamailio(net: &Net, dir: &Path, setup: &Setup, log: std::fs::File) -> anyhow::Result<Child> {
    let run = dir.join("kamailio-run");
    std::fs::create_dir_all(&run)?;
    launch(net, setup.cpu, "kamailio".as_ref())
        .args(["-DD", "-E", "-f"])
        .arg(&setup.kamailio_cfg)
        .args(["-l", &format!("udp:{EDGE}:5060")])
        .arg("-Y")
        .arg(&run)
        .args(["-m", "256", "-M", "16"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting kamailio (apt-get install kamailio; cargo xtask setup does)")
}

/// `program` in ns E, on `cpu` alone when given. Both `nsenter` and `taskset` exec what they
/// run, so the child's PID is the edge's.
fn launch(net: &Net, cpu: Option<u32>, program: &std::ffi::OsStr) -> std::process::Command {
    match cpu {
        Some(cpu) => {
            let mut c = net.exec(&net.e, "taskset");
            c.args(["-c", &cpu.to_string()]).arg(program);
            c
        }
        None => net.exec(&net.e, program.to_string_lossy().as_ref()),
    }
}
