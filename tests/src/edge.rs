//! One daemon of a test in namespace b of a pair of its own (`Edge`): the namespaces, its
//! directories, the process, and what tests ask of it from outside (its CLI, its metrics,
//! its bans and lists, whether it answers or drops a source). When the test ends, passing or
//! failing, the daemon is killed if still running, then the namespaces and directories go.
//! A test's daemon started while the test binary's turn is held (`Turn`, from [`edge()`]).

use std::{
    net::{SocketAddr, UdpSocket},
    path::Path,
    process::{Child, Output},
    sync::MutexGuard,
    time::{Duration, Instant},
};

use crate::{
    daemon::{DaemonDirs, stop},
    metrics::Metrics,
    netns::{Pair, in_ns},
    one_at_a_time, sipp,
    ua::storm::{StormResult, register_storm},
};

/// `--xdp-mode` arguments: the program in generic mode on veth-b (removed when the daemon
/// stops), or no fast path at all.
pub fn xdp_args(xdp: bool) -> &'static [&'static str] {
    if xdp {
        &["--iface", "veth-b", "--xdp-mode", "generic", "--detach"]
    } else {
        &["--xdp-mode", "off"]
    }
}

/// A daemon in namespace b of its own pair, its clients in namespace a.
pub struct Edge {
    pub pair: Pair,
    pub dirs: DaemonDirs,
    child: Option<Child>,
}

impl Edge {
    /// The namespaces and directories of a daemon with `config`, not started yet.
    pub fn new(tag: &str, config: &str) -> Edge {
        Edge {
            pair: Pair::new(tag).expect("namespaces"),
            dirs: DaemonDirs::new(tag, config),
            child: None,
        }
    }

    /// The same, started with `args`; None, after a loud skip, when `test` cannot run as
    /// this user (not root).
    pub fn root(test: &str, tag: &str, config: &str, args: &[&str]) -> Option<Edge> {
        crate::require_root(test).then(|| Edge::start(tag, config, args))
    }

    /// The same, started with `args` (e.g. [`xdp_args`]).
    pub fn start(tag: &str, config: &str, args: &[&str]) -> Edge {
        let mut e = Edge::new(tag, config);
        e.run(args);
        e
    }

    /// Start the daemon (again) with `args`; wait until its admin API answers.
    pub fn run(&mut self, args: &[&str]) {
        assert!(self.child.is_none(), "the daemon is already running");
        self.child = Some(self.dirs.start(&self.pair, args));
    }

    /// Stop the daemon with SIGTERM: its exit code and what it wrote on stderr (-1 and
    /// nothing when it was not running).
    pub fn stop(&mut self) -> (i32, String) {
        self.child.take().map_or((-1, String::new()), stop)
    }

    /// [`Edge::stop`], which must exit 0: what the daemon wrote on stderr.
    #[track_caller]
    pub fn stop_clean(&mut self) -> String {
        let (code, err) = self.stop();
        assert_eq!(code, 0, "{err}");
        err
    }

    /// Kill the daemon with SIGKILL (what a crash leaves behind: its program and pins).
    pub fn kill(&mut self) {
        let mut c = self.child.take().expect("the daemon is running");
        c.kill().expect("kill the daemon");
        c.wait().expect("wait for the daemon");
    }

    /// The running daemon's process id (for signals).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the daemon is running").id()
    }

    /// The running daemon's process.
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("the daemon is running")
    }

    /// Its directory: config file, state, SIPp traces of the test.
    pub fn dir(&self) -> &Path {
        &self.dirs.dir.path
    }

    /// Rewrite its config file (for a reload or the next start).
    pub fn write_config(&self, config: &str) {
        std::fs::write(self.dir().join("sip-firewall.toml"), config).expect("config");
    }

    /// Run its CLI.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.dirs.cli(args)
    }

    /// Its SIP address on UDP and TCP, as namespace a reaches it.
    pub fn sip(&self) -> SocketAddr {
        SocketAddr::new(self.pair.b(false), 5060)
    }

    /// `status --json`.
    pub fn status(&self) -> serde_json::Value {
        json(&self.cli(&["status", "--json"]))
    }

    /// One series of its metrics, 0 when absent.
    pub fn metric(&self, series: &str) -> f64 {
        Metrics::scrape(&self.pair).get(series)
    }

    /// Poll until `series` reaches `at_least`, at most `limit`; its last value.
    pub fn wait_metric(&self, series: &str, at_least: f64, limit: Duration) -> f64 {
        Metrics::poll(&self.pair, limit, |m| m.get(series) >= at_least).get(series)
    }

    /// `user add` of `user@example.com` with `password`, which must succeed: its output.
    pub fn add_user(&self, user: &str, password: &str) -> Output {
        let o = self.cli(&[
            "user",
            "add",
            user,
            "--domain",
            "example.com",
            "--password",
            password,
        ]);
        assert!(o.status.success(), "{}", err(&o));
        o
    }

    /// The users `user list` shows.
    pub fn users(&self) -> Vec<String> {
        json(&self.cli(&["user", "list", "--json"]))
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|u| u["user"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `users` (user, password) of example.com register from namespace a (198.51.100.1), each
    /// phone from its own socket, `rate` phones a second, for `deadline` at most.
    pub fn register_storm(
        &self,
        users: Vec<(String, String)>,
        rate: u32,
        deadline: Duration,
    ) -> StormResult {
        let (a4, server) = (self.pair.a(false), self.sip());
        in_ns(&self.pair.ns_a, move || {
            register_storm(a4, server, "example.com", &users, rate, deadline)
        })
        .expect("registrations from namespace a")
    }

    /// Whether `ip` is in `ban list`.
    pub fn banned(&self, ip: &str) -> bool {
        self.dirs.bans().iter().any(|(a, _)| a == ip)
    }

    /// Poll until `ip`'s ban state is `want`, at most `limit`; how long it took.
    pub fn wait_banned(&self, ip: &str, want: bool, limit: Duration) -> Option<Duration> {
        let t0 = Instant::now();
        loop {
            if self.banned(ip) == want {
                return Some(t0.elapsed());
            }
            if t0.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The prefixes of `list` (`allow` or `deny`) as the daemon shows them.
    pub fn list(&self, list: &str) -> Vec<String> {
        json(&self.cli(&[list, "list", "--json"]))
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Send `n` datagrams from a to UDP 7000 in b (not a SIP port: a ban covers all
    /// traffic, and nothing of the daemon's sees them); how many arrived.
    pub fn send(&self, n: usize) -> usize {
        self.send_from(std::net::Ipv4Addr::UNSPECIFIED.into(), n)
    }

    /// [`Edge::send`] from the address `from` of namespace a.
    pub fn send_from(&self, from: std::net::IpAddr, n: usize) -> usize {
        let rx = in_ns(&self.pair.ns_b, || Ok(UdpSocket::bind("0.0.0.0:7000")?)).expect("rx");
        rx.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let tx = in_ns(&self.pair.ns_a, move || Ok(UdpSocket::bind((from, 0))?)).expect("tx");
        for _ in 0..n {
            tx.send_to(b"ping", SocketAddr::new(self.pair.b(false), 7000))
                .expect("send");
        }
        let mut buf = [0u8; 64];
        let mut got = 0;
        while rx.recv(&mut buf).is_ok() {
            got += 1;
        }
        got
    }

    /// Whether the daemon answers an OPTIONS from the outsider in namespace a (three tries,
    /// 500 ms each): nothing comes back when XDP drops the source.
    pub fn answers_options(&self) -> bool {
        let tx = in_ns(&self.pair.ns_a, || Ok(UdpSocket::bind("0.0.0.0:0")?)).expect("tx");
        tx.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let to = self.sip();
        let mut buf = [0u8; 4096];
        (0..3).any(|i| {
            let options = format!(
                "OPTIONS sip:{to} SIP/2.0\r\nVia: SIP/2.0/UDP {}:5062;branch=z9hG4bK-opt{i}\r\n\
                 Max-Forwards: 70\r\nFrom: <sip:probe@example.net>;tag=1\r\nTo: <sip:{to}>\r\n\
                 Call-ID: opt{i}@test\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n",
                self.pair.a4
            );
            tx.send_to(options.as_bytes(), to).expect("send");
            tx.recv(&mut buf)
                .is_ok_and(|n| buf[..n].starts_with(b"SIP/2.0 "))
        })
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        // Stopped before the namespaces and directories (and pins) go: a failed test leaves
        // no daemon behind. SIGTERM first (the daemon detaches its program and removes its
        // pins), SIGKILL after 10 s.
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) of our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let t0 = Instant::now();
            while matches!(c.try_wait(), Ok(None)) && t0.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A test's daemon in namespace b of its own pair (`config`, XDP in generic mode on veth-b
/// or off), started while the test binary's turn is held.
pub struct Turn {
    pub edge: Edge,
    _turn: MutexGuard<'static, ()>,
}

impl std::ops::Deref for Turn {
    type Target = Edge;

    fn deref(&self) -> &Edge {
        &self.edge
    }
}

impl std::ops::DerefMut for Turn {
    fn deref_mut(&mut self) -> &mut Edge {
        &mut self.edge
    }
}

/// Start `test`'s daemon (namespaces tagged `tag`) with `config`, XDP on or off; None,
/// after a loud skip, when not root.
pub fn edge(test: &str, tag: &str, config: &str, xdp: bool) -> Option<Turn> {
    let turn = one_at_a_time();
    Some(Turn {
        edge: Edge::root(test, tag, config, xdp_args(xdp))?,
        _turn: turn,
    })
}

/// [`edge`] for a test that also runs SIPp: None, after a loud skip, when SIPp is not
/// installed or the test cannot run as root.
pub fn sipp_edge(test: &str, tag: &str, config: &str, xdp: bool) -> Option<Turn> {
    if !sipp::require(test) {
        return None;
    }
    edge(test, tag, config, xdp)
}

/// What a CLI command wrote on stdout.
pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// What a CLI command wrote on stderr.
pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The stdout of a CLI command that must succeed, as JSON.
pub fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", err(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", out(o)))
}
