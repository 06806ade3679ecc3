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

/// Our daemon's config for the bench: the defaults, but for what lets one legitimate caller
/// place its calls (the same limits go to Kamailio's pike in bench.cfg): the caller's
/// ~3 requests per call stay under the per-source flood limit, its transactions (alive 32 s
/// after their final answer, RFC 6026) under the per-source cap, and its request count under
/// the user-space request limit. Callee and caller register with digest (MD5, like
/// Kamailio's auth module).
pub const CONFIG: &str = r#"
[sip]
domains = ["example.com"]
max_transactions_per_source = 1000000
[auth]
algorithms = ["MD5"]
users = [
  { user = "bob", domain = "example.com", password = "bench" },
  { user = "alice", domain = "example.com", password = "bench" },
]
[xdp]
flood_rate = 1000
flood_burst = 2000
[bans]
request_limit = 20000
"#;

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
    pub fn start(peer: Peer, net: &Net, dir: &Path, bin: &Path) -> anyhow::Result<Edge> {
        let log = std::fs::File::create(dir.join(format!("{}.log", peer.name())))?;
        let (child, pin_dir) = match peer {
            Peer::Ours => {
                let cfg = dir.join("sip-firewall.toml");
                std::fs::write(&cfg, CONFIG)?;
                let pins = PathBuf::from(format!(
                    "/sys/fs/bpf/{}",
                    dir.file_name().context("dir")?.to_string_lossy()
                ));
                let child = crate::daemon::run_in(net.exec(&net.e, &bin.to_string_lossy()), dir)
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
            Peer::Kamailio => (kamailio(net, dir, log)?, None),
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
fn kamailio(net: &Net, dir: &Path, log: std::fs::File) -> anyhow::Result<Child> {
    let cfg = crate::root().join("deploy/kamailio/bench.cfg");
    let run = dir.join("kamailio-run");
    std::fs::create_dir_all(&run)?;
    net.exec(&net.e, "kamailio")
        .args(["-DD", "-E", "-f"])
        .arg(&cfg)
        .args(["-l", &format!("udp:{EDGE}:5060")])
        .arg("-Y")
        .arg(&run)
        .args(["-m", "256", "-M", "16"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("starting kamailio (apt-get install kamailio; cargo xtask setup does)")
}
