//! Running the real daemon inside a test namespace, and its CLI (with the bans it lists and
//! what `why` says of a source).

use std::{
    io::Read as _,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::netns::Pair;

/// The daemon binary next to the test binaries (built by `cargo xtask test`).
pub fn daemon_bin() -> PathBuf {
    // target/debug/deps/<test> -> target/debug/sip-firewall
    let exe = std::env::current_exe().expect("current exe");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("sip-firewall");
    assert!(
        bin.exists(),
        "{} missing: build it first (cargo build --bins)",
        bin.display()
    );
    bin
}

/// A directory removed on drop.
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let path = std::env::temp_dir().join(format!("sfw-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("temp dir");
        TempDir { path }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Where one daemon keeps its things: config, state, admin socket, pins.
pub struct DaemonDirs {
    pub dir: TempDir,
    pub pin_dir: PathBuf,
    /// The SIP listen address (default `0.0.0.0:5060`); empty: the config file's.
    pub listen: String,
    /// `--metrics-listen` (default `127.0.0.1:9464`); `None`: the config file's.
    pub metrics_listen: Option<String>,
}

impl DaemonDirs {
    pub fn new(tag: &str, config: &str) -> DaemonDirs {
        let dir = TempDir::new(tag);
        std::fs::write(dir.path.join("sip-firewall.toml"), config).expect("config");
        let name = dir
            .path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        DaemonDirs {
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/{name}")),
            dir,
            listen: "0.0.0.0:5060".to_string(),
            metrics_listen: Some("127.0.0.1:9464".to_string()),
        }
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path.join("admin.sock")
    }

    /// The command of `sip-firewall run` in namespace b with these dirs and `extra` arguments.
    pub fn command(&self, pair: &Pair, extra: &[&str]) -> Command {
        // nsenter, not `ip netns exec`: the latter gives the daemon a mount namespace of its
        // own, and the bpffs pins would die with it.
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/var/run/netns/{}", pair.ns_b))
            .arg(daemon_bin())
            .arg("run")
            .arg("--config")
            .arg(self.dir.path.join("sip-firewall.toml"))
            .args(
                Some(self.listen.as_str())
                    .filter(|l| !l.is_empty())
                    .into_iter()
                    .flat_map(|l| ["--sip-listen", l]),
            )
            .args(
                self.metrics_listen
                    .iter()
                    .flat_map(|m| ["--metrics-listen", m.as_str()]),
            )
            .arg("--state-dir")
            .arg(self.dir.path.join("state"))
            .arg("--admin-socket")
            .arg(self.socket())
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    /// Start the daemon and wait until its admin API answers.
    pub fn start(&self, pair: &Pair, extra: &[&str]) -> Child {
        self.spawn(&mut self.command(pair, extra))
            .unwrap_or_else(|e| panic!("the daemon {e}"))
    }

    /// Start `cmd` (this daemon's [`command`](Self::command), maybe changed): the child once
    /// its admin API answers (20 s at most), or what it said when it exited.
    pub fn spawn(&self, cmd: &mut Command) -> Result<Child, String> {
        let mut child = cmd.spawn().expect("spawn the daemon");
        let t0 = Instant::now();
        while !self.cli(&["status"]).status.success() {
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return Err(format!("exited ({status}): {err}"));
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "the daemon did not come up"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(child)
    }

    /// Run the CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(daemon_bin())
            .args(args)
            .arg("--socket")
            .arg(self.socket())
            .output()
            .expect("run the CLI")
    }

    /// The bans the daemon lists (`ban list --json`): (address, reason).
    pub fn bans(&self) -> Vec<(String, String)> {
        let o = self.cli(&["ban", "list", "--json"]);
        assert!(
            o.status.success(),
            "ban list: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("ban list JSON");
        v.as_array()
            .expect("a list of bans")
            .iter()
            .map(|b| {
                (
                    b["ip"].as_str().unwrap_or_default().to_string(),
                    b["reason"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    /// Wait up to `within` for a ban of `ip`; its reason.
    pub fn wait_ban(&self, ip: &str, within: Duration) -> Option<String> {
        let t0 = Instant::now();
        loop {
            if let Some((_, reason)) = self.bans().into_iter().find(|(a, _)| a == ip) {
                return Some(reason);
            }
            if t0.elapsed() > within {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `sip-firewall why SOURCE --json`: the daemon's findings on a source.
    pub fn why(&self, source: &str) -> serde_json::Value {
        let o = self.cli(&["why", source, "--json"]);
        assert!(
            o.status.success(),
            "why {source}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).expect("why JSON")
    }
}

impl Drop for DaemonDirs {
    fn drop(&mut self) {
        // Pins of a daemon that could not remove them (killed, refused to start after
        // pinning, or run without --detach): the name is this test's own.
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}

/// Stop with SIGTERM; the exit code and what it wrote on stderr.
pub fn stop(mut child: Child) -> (i32, String) {
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().expect("wait");
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status.code().unwrap_or(-1), err)
}

/// The daemon on loopback, without root (`--xdp-mode off`), killed when dropped.
pub struct Loopback {
    pub child: Child,
    pub sip: SocketAddr,
    pub metrics: SocketAddr,
    pub dir: TempDir,
    /// Held while the daemon runs, for tests that run one daemon at a time.
    pub turn: Option<std::sync::MutexGuard<'static, ()>>,
}

impl Drop for Loopback {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Loopback {
    /// Start `bin` on loopback with `config`, its own state and admin socket (tests run side
    /// by side), and wait (20 s at most) until it answers on SIP/TCP and `/metrics`.
    /// `rust_log` sets its log filter; `extra` arguments come last. Its SIP and metrics ports
    /// are free when picked, but a test running beside it may take one before the daemon
    /// binds it: a daemon that exits at once is started again on fresh ports (three tries).
    pub fn start(
        bin: impl AsRef<std::ffi::OsStr>,
        tag: &str,
        config: &str,
        rust_log: Option<&str>,
        extra: &[&str],
    ) -> Loopback {
        let mut last = None;
        for _ in 0..3 {
            match Loopback::try_start(bin.as_ref(), tag, config, rust_log, extra) {
                Ok(d) => return d,
                Err(status) => last = Some(status),
            }
        }
        panic!("sip-firewall exited early, three times: {last:?}");
    }

    /// One start: Err with its exit status when it exits before it answers.
    fn try_start(
        bin: &std::ffi::OsStr,
        tag: &str,
        config: &str,
        rust_log: Option<&str>,
        extra: &[&str],
    ) -> Result<Loopback, std::process::ExitStatus> {
        let dir = TempDir::new(tag);
        let cfg = dir.path.join("sip-firewall.toml");
        std::fs::write(&cfg, config).expect("config");
        let sip: SocketAddr = ([127, 0, 0, 1], crate::ports::free_port()).into();
        let metrics: SocketAddr = ([127, 0, 0, 1], crate::ports::free_port()).into();
        let mut cmd = Command::new(bin);
        cmd.args(["run", "--xdp-mode", "off", "--config"])
            .arg(&cfg)
            .args([
                "--sip-listen",
                &sip.to_string(),
                "--metrics-listen",
                &metrics.to_string(),
            ])
            .arg("--state-dir")
            .arg(dir.path.join("state"))
            .arg("--admin-socket")
            .arg(dir.path.join("admin.sock"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        if let Some(filter) = rust_log {
            cmd.env("RUST_LOG", filter);
        }
        let child = cmd.spawn().expect("spawn sip-firewall");
        let mut d = Loopback {
            child,
            sip,
            metrics,
            dir,
            turn: None,
        };
        let t0 = Instant::now();
        loop {
            if let Some(status) = d.child.try_wait().expect("try_wait") {
                return Err(status);
            }
            if crate::metrics::scrape_opt(d.metrics).is_some() && TcpStream::connect(d.sip).is_ok()
            {
                return Ok(d);
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "daemon did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
