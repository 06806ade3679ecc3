//! A cluster of daemons for the tests: a real `redis-server` on a Unix socket in the test's
//! temp dir (no network at all; a Unix socket reaches every namespace) and nodes, each a
//! daemon in its own namespace pair. Installed by `cargo xtask setup` (Debian
//! `redis-server`).

use std::{
    net::{SocketAddr, UdpSocket},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::{
    daemon::{DaemonDirs, sample, scrape, stop},
    netns::{Pair, in_ns},
    skip,
};

pub fn out(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn err(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn json(o: &std::process::Output) -> serde_json::Value {
    assert!(o.status.success(), "{}", err(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", out(o)))
}

/// A redis-server on a Unix socket; killed on drop.
pub struct Redis {
    child: Option<Child>,
    pub sock: PathBuf,
    dir: PathBuf,
}

impl Redis {
    pub fn start(dir: &Path) -> Redis {
        let sock = dir.join("redis.sock");
        let mut r = Redis {
            child: None,
            sock,
            dir: dir.to_path_buf(),
        };
        r.spawn();
        r
    }

    pub fn spawn(&mut self) {
        let _ = std::fs::remove_file(&self.sock);
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", "", "--appendonly", "no"])
            .arg("--unixsocket")
            .arg(&self.sock)
            .args(["--unixsocketperm", "700"])
            .arg("--dir")
            .arg(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        self.child = Some(child);
        let t0 = Instant::now();
        while !self.cli(&["PING"]).contains("PONG") {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "redis did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) of our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGKILL) };
            let _ = c.wait();
        }
    }

    pub fn cli(&self, args: &[&str]) -> String {
        Command::new("redis-cli")
            .arg("-s")
            .arg(&self.sock)
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }

    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.sock.display())
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

pub fn redis_installed(test: &str) -> bool {
    let ok = Command::new("redis-server")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip(test, "redis-server missing: run `cargo xtask setup`");
    }
    ok
}

pub struct Node {
    pub pair: Pair,
    pub dirs: DaemonDirs,
    child: Option<Child>,
}

impl Node {
    pub fn new(tag: &str, config: &str) -> Node {
        let pair = Pair::new(tag).expect("namespaces");
        let dirs = DaemonDirs::new(tag, config);
        Node {
            pair,
            dirs,
            child: None,
        }
    }

    pub fn start(&mut self) {
        let p = &self.pair;
        self.child = Some(
            self.dirs
                .start(p, &["--iface", p.if_b, "--xdp-mode", "generic", "--detach"]),
        );
    }

    pub fn status(&self) -> serde_json::Value {
        json(&self.dirs.cli(&["status", "--json"]))
    }

    pub fn wait_connected(&self, want: bool) {
        let t0 = Instant::now();
        loop {
            let s = self.status();
            if s["cluster"]["connected"] == want {
                return;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "cluster connected != {want}: {s}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn banned(&self, ip: &str) -> bool {
        json(&self.dirs.cli(&["ban", "list", "--json"]))
            .as_array()
            .is_some_and(|a| a.iter().any(|b| b["ip"] == ip))
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

    pub fn xdp_banned(&self) -> f64 {
        let text = scrape(&self.pair.ns_b, "127.0.0.1:9464".parse().expect("addr"));
        sample(&text, "sipfw_xdp_packets_total{reason=\"banned\"}").unwrap_or(0.0)
    }

    pub fn metric(&self, series: &str) -> f64 {
        let text = scrape(&self.pair.ns_b, "127.0.0.1:9464".parse().expect("addr"));
        sample(&text, series).unwrap_or(0.0)
    }

    /// Send `n` datagrams from a to UDP 7000 in b (not a SIP port: a ban covers all
    /// traffic, and nothing of the daemon's sees them); how many arrived.
    pub fn send(&self, n: usize) -> usize {
        let rx = in_ns(&self.pair.ns_b, || Ok(UdpSocket::bind("0.0.0.0:7000")?)).expect("rx");
        rx.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let tx = in_ns(&self.pair.ns_a, || Ok(UdpSocket::bind("0.0.0.0:0")?)).expect("tx");
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

    /// Poll until `series` reaches `at_least`, at most `limit`; its last value.
    pub fn wait_metric(&self, series: &str, at_least: f64, limit: Duration) -> f64 {
        let t0 = Instant::now();
        loop {
            let v = self.metric(series);
            if v >= at_least || t0.elapsed() >= limit {
                return v;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the daemon answers an OPTIONS from the outsider in namespace a (three tries,
    /// 500 ms each): nothing comes back when XDP drops the source.
    pub fn answers_options(&self) -> bool {
        let tx = in_ns(&self.pair.ns_a, || Ok(UdpSocket::bind("0.0.0.0:0")?)).expect("tx");
        tx.set_read_timeout(Some(Duration::from_millis(500)))
            .expect("timeout");
        let to = SocketAddr::new(self.pair.b(false), 5060);
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

    /// The prefixes of `list` (`allow` or `deny`) as the daemon shows them.
    pub fn list(&self, list: &str) -> Vec<String> {
        json(&self.dirs.cli(&[list, "list", "--json"]))
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }

    pub fn stop(&mut self) -> String {
        self.child.take().map(|c| stop(c).1).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
