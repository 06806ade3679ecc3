//! Sentinel-managed primaries: the nodes given only a Sentinel find the primary through it
//! and follow a failover.

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use sip_firewall_tests::{
    cluster::{Node, redis_installed, start_all, wait_for_pong},
    daemon::TempDir,
    netns::ip_in,
    require_root,
};

use crate::setup::{Backbone, wait_for};

/// A Redis process (server or Sentinel) on TCP at 192.0.2.100 in the backbone namespace;
/// killed on drop.
struct TcpRedis {
    child: Child,
    ns: String,
    port: u16,
}

impl TcpRedis {
    const HOST: &'static str = "192.0.2.100";

    /// `redis-server` with `args` (a config file and `--sentinel`, or options).
    fn start(bb: &Backbone, port: u16, args: &[&str]) -> TcpRedis {
        let child = Command::new("ip")
            .args(["netns", "exec", bb.ns.name(), "redis-server"])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server");
        let r = TcpRedis {
            child,
            ns: bb.ns.name().to_string(),
            port,
        };
        wait_for_pong(&format!("redis on port {port}"), |args| r.cli(args));
        r
    }

    /// A data server; a replica of `primary` if given.
    fn server(bb: &Backbone, dir: &Path, port: u16, primary: Option<u16>) -> TcpRedis {
        let dir = dir.join(format!("r{port}"));
        std::fs::create_dir_all(&dir).expect("redis dir");
        let (p, d) = (port.to_string(), dir.display().to_string());
        let mut args = vec![
            "--bind",
            Self::HOST,
            "--port",
            &p,
            "--save",
            "",
            "--appendonly",
            "no",
            // A namespace of the test's own: no one else can reach it.
            "--protected-mode",
            "no",
            "--dir",
            &d,
        ];
        let of = primary.map(|p| p.to_string());
        if let Some(of) = &of {
            args.extend_from_slice(&["--replicaof", Self::HOST, of]);
        }
        TcpRedis::start(bb, port, &args)
    }

    fn cli(&self, args: &[&str]) -> String {
        Command::new("ip")
            // Bounded: a server that does not answer must not hang the test.
            .args(["netns", "exec", &self.ns, "timeout", "5", "redis-cli"])
            .args(["-h", Self::HOST])
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for TcpRedis {
    fn drop(&mut self) {
        // SAFETY: kill(2) of our own child (`ip netns exec` execs redis-server).
        unsafe { libc::kill(self.child.id() as i32, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// A primary (6379), its replica (6380) and a Sentinel
/// (26379) on the backbone; the nodes are given only the Sentinel
/// (`redis+sentinel://192.0.2.100:26379/sipfw/0`). They find the primary through it and
/// share a ban; after `SENTINEL FAILOVER` they follow the Sentinel to the new primary (the
/// replica), keep the ban (the replica had it), and a new ban still propagates.
#[test]
fn nodes_find_the_primary_through_sentinel_and_follow_a_failover() {
    let test = "nodes_find_the_primary_through_sentinel_and_follow_a_failover";
    if !require_root(test) || !redis_installed(test) {
        return;
    }
    let tmp = TempDir::new("cluster-sentinel");
    let bb = Backbone::new("cs");
    ip_in(&bb.ns, &["addr", "add", "192.0.2.100/24", "dev", "br0"]).expect("backbone address");
    let primary = TcpRedis::server(&bb, &tmp.path, 6379, None);
    let replica = TcpRedis::server(&bb, &tmp.path, 6380, Some(6379));
    let conf = tmp.path.join("sentinel.conf");
    std::fs::write(
        &conf,
        format!(
            "port 26379\nbind {h}\nprotected-mode no\ndir {d}\n\
             sentinel monitor sipfw {h} 6379 1\n\
             sentinel down-after-milliseconds sipfw 2000\n\
             sentinel failover-timeout sipfw 10000\n",
            h = TcpRedis::HOST,
            d = tmp.path.display()
        ),
    )
    .expect("sentinel.conf");
    let sentinel = TcpRedis::start(&bb, 26379, &[&conf.display().to_string(), "--sentinel"]);
    let master_port = || {
        sentinel
            .cli(&["SENTINEL", "get-master-addr-by-name", "sipfw"])
            .lines()
            .nth(1)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    wait_for(
        Duration::from_secs(20),
        || {
            replica
                .cli(&["INFO", "replication"])
                .contains("master_link_status:up")
                && sentinel
                    .cli(&["SENTINEL", "replicas", "sipfw"])
                    .contains("6380")
        },
        || {
            format!(
                "the Sentinel never saw the replica: {}",
                sentinel.cli(&["SENTINEL", "replicas", "sipfw"])
            )
        },
    );
    assert_eq!(master_port(), "6379");

    let config = |node: &str| {
        format!(
            "[sip]\ndomains = [\"example.com\"]\n[proxy]\nadvertise = \"198.51.100.2:5060\"\n\
             [auth]\nsecret = \"{}\"\n[cluster]\n\
             redis = \"redis+sentinel://{}:26379/sipfw/0\"\nnode = \"{node}\"\n",
            sip_firewall_tests::secret("shared-secret-sentinel"),
            TcpRedis::HOST
        )
    };
    let mut nodes = [
        Node::new("csna", &config("edge-a")),
        Node::new("csnb", &config("edge-b")),
    ];
    bb.join(&nodes[0], 11);
    bb.join(&nodes[1], 12);
    start_all(&mut nodes);
    let [a, b] = nodes;
    for n in [&a, &b] {
        let s = n.status();
        assert_eq!(
            s["cluster"]["redis"], "192.0.2.100:6379",
            "the primary: {s}"
        );
    }
    let ip = a.pair.a4.to_string();
    assert!(a.cli(&["ban", "add", &ip, "--for", "1h"]).status.success());
    assert!(
        b.wait_banned(&ip, true, Duration::from_secs(5)).is_some(),
        "B got A's ban through the primary the Sentinel named"
    );
    assert!(
        primary
            .cli(&["EXISTS", &format!("sipfw:ban:{ip}")])
            .contains('1')
    );

    // Failover: the replica becomes the primary; the nodes follow.
    assert!(
        sentinel
            .cli(&["SENTINEL", "FAILOVER", "sipfw"])
            .contains("OK")
    );
    wait_for(
        Duration::from_secs(30),
        || master_port() == "6380",
        || {
            format!(
                "no failover: {}",
                sentinel.cli(&["SENTINEL", "master", "sipfw"])
            )
        },
    );
    for (name, n) in [("A", &a), ("B", &b)] {
        wait_for(
            Duration::from_secs(30),
            || {
                let s = n.status();
                s["cluster"]["redis"] == "192.0.2.100:6380" && s["cluster"]["connected"] == true
            },
            || format!("{name} did not follow the failover: {}", n.status()),
        );
    }
    assert!(
        b.banned(&ip),
        "the ban from before the failover still holds on B"
    );
    assert!(a.banned(&ip), "and on A");
    let after = "192.0.2.66";
    assert!(
        b.cli(&["ban", "add", after, "--for", "1h"])
            .status
            .success()
    );
    assert!(
        a.wait_banned(after, true, Duration::from_secs(5)).is_some(),
        "a ban made after the failover propagates through the new primary"
    );
    assert!(
        replica
            .cli(&["EXISTS", &format!("sipfw:ban:{after}")])
            .contains('1')
    );
    // The nodes stop before Redis, and Redis before the backbone it listens on.
    drop((a, b));
    drop((sentinel, primary, replica));
    drop(bb);
}
