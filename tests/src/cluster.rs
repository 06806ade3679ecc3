//! A cluster of daemons for the tests: a real `redis-server` on a Unix socket in the test's
//! temp dir (no network at all; a Unix socket reaches every namespace) and nodes, each a
//! daemon in its own namespace pair. Installed by `cargo xtask setup` (Debian
//! `redis-server`).

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::MutexGuard,
    time::{Duration, Instant},
};

use crate::{
    daemon::TempDir,
    edge::{Edge, xdp_args},
    one_at_a_time, sipp,
    skip::require_tool,
};

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
        wait_for_pong("redis", |args| self.cli(args));
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

    /// The URL logging in as `user` with password `pw`.
    pub fn url_as(&self, user: &str, pw: &str) -> String {
        format!("{}?user={user}&pass={pw}", self.url())
    }

    /// A user `user` with password `pw` and every right: nodes logged in as it can be cut
    /// off alone ([`Redis::cut`]).
    pub fn add_user(&self, user: &str, pw: &str) {
        let pw = format!(">{pw}");
        let set = self.cli(&["ACL", "SETUSER", user, "on", &pw, "~*", "&*", "+@all"]);
        assert!(set.contains("OK"), "{set}");
    }

    /// `config` (a node's, with [`Redis::url`]) logging in as a user of the node's own,
    /// `node` (added now): [`Redis::cut`] of `node` then cuts that node off alone.
    pub fn own_user(&self, node: &str, config: &str) -> String {
        let pw = format!("pw-{node}");
        self.add_user(node, &pw);
        config.replace(&self.url(), &self.url_as(node, &pw))
    }

    /// Cut the nodes logged in as `user` off (`on` false: the user disabled and its
    /// connections killed; Redis and the other nodes carry on), or let them back.
    pub fn cut(&self, user: &str, on: bool) {
        let state = if on { "on" } else { "off" };
        assert!(self.cli(&["ACL", "SETUSER", user, state]).contains("OK"));
        if !on {
            self.cli(&["CLIENT", "KILL", "USER", user]);
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The cluster of one test: its temp dir and the Redis there, and its nodes.
pub struct Cluster {
    pub tmp: TempDir,
    pub redis: Redis,
    /// The test binary's turn, held by a cluster that runs SIPp ([`Cluster::with_sipp`]).
    _turn: Option<MutexGuard<'static, ()>>,
}

impl Cluster {
    /// A Redis in a temp dir named after `tag`; None (after a loud skip) when `test` cannot
    /// run: not root, or no redis-server.
    pub fn new(test: &str, tag: &str) -> Option<Cluster> {
        if !crate::require_root(test) || !redis_installed(test) {
            return None;
        }
        let tmp = TempDir::new(tag);
        let redis = Redis::start(&tmp.path);
        Some(Cluster {
            tmp,
            redis,
            _turn: None,
        })
    }

    /// [`Cluster::new`] for a test that runs SIPp: None, after a loud skip, when SIPp is
    /// not installed either. It holds the test binary's turn while it lives (SIPp runs are
    /// timing-sensitive).
    pub fn with_sipp(test: &str, tag: &str) -> Option<Cluster> {
        if !sipp::require(test) {
            return None;
        }
        let cl = Cluster::new(test, tag)?;
        Some(Cluster {
            _turn: Some(one_at_a_time()),
            ..cl
        })
    }

    /// Nodes in namespaces tagged `tags`, named `edge-a`, `edge-b`..., each with the config
    /// `config` makes of its name; not started.
    pub fn nodes<const N: usize>(
        &self,
        tags: [&str; N],
        config: impl Fn(&str) -> String,
    ) -> [Node; N] {
        let mut name = 'a';
        tags.map(|tag| {
            let node = format!("edge-{name}");
            name = char::from(name as u8 + 1);
            Node::new(tag, &config(&node))
        })
    }

    /// The same, started and connected to Redis.
    pub fn started<const N: usize>(
        &self,
        tags: [&str; N],
        config: impl Fn(&str) -> String,
    ) -> [Node; N] {
        let mut nodes = self.nodes(tags, config);
        start_all(&mut nodes);
        nodes
    }
}

/// Start every node, then wait until each is connected to Redis.
pub fn start_all(nodes: &mut [Node]) {
    for n in nodes.iter_mut() {
        n.start();
    }
    for n in nodes.iter() {
        n.wait_connected(true);
    }
}

/// Poll a Redis process with `PING` (through `cli`) until it answers `PONG`, at most 10 s;
/// `what` names it when it does not.
pub fn wait_for_pong(what: &str, cli: impl Fn(&[&str]) -> String) {
    let t0 = Instant::now();
    while !cli(&["PING"]).contains("PONG") {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{what} did not come up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn redis_installed(test: &str) -> bool {
    require_tool(test, "redis-server", "`cargo xtask setup` installs it")
}

/// A node of a cluster: a daemon in its own namespaces with XDP on veth-b (generic mode).
pub struct Node(Edge);

impl std::ops::Deref for Node {
    type Target = Edge;

    fn deref(&self) -> &Edge {
        &self.0
    }
}

impl std::ops::DerefMut for Node {
    fn deref_mut(&mut self) -> &mut Edge {
        &mut self.0
    }
}

impl Node {
    pub fn new(tag: &str, config: &str) -> Node {
        Node(Edge::new(tag, config))
    }

    pub fn start(&mut self) {
        self.0.run(xdp_args(true));
    }

    /// Stop it: what it wrote on stderr.
    pub fn stop(&mut self) -> String {
        self.0.stop().1
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

    pub fn xdp_banned(&self) -> f64 {
        self.metric("sipfw_xdp_packets_total{reason=\"banned\"}")
    }
}
