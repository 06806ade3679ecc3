//! What the SIPp and SIPVicious scenarios share: the daemon's config for the namespaces,
//! SIPp and SIPVicious run inside namespace a, metrics snapshots and ban lists.

#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{Mutex, MutexGuard},
    time::{Duration, Instant},
};

use sip_firewall_tests::{
    daemon::{DaemonDirs, sample, scrape},
    netns::Pair,
    sipp::Sipp,
};

/// One scenario at a time in a test binary: SIPp and SIPVicious runs are timing-sensitive on
/// a small shared machine, and every test counts packets exactly.
pub fn one_at_a_time() -> MutexGuard<'static, ()> {
    static TURN: Mutex<()> = Mutex::new(());
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

/// The password of bob, our subscriber under attack.
pub const BOB_PASSWORD: &str = "bob-secret-42";

/// The daemon's config in namespace b: the test domain and its two subscribers, short timers
/// (every transaction ends within seconds), `extra` appended (sections of its own).
pub fn config(extra: &str) -> String {
    format!(
        r#"
[sip]
domains = ["example.com"]
[proxy]
# The daemon listens on 0.0.0.0: say which address goes into our Via and Record-Route.
advertise = "198.51.100.2:5060"
[timers]
t1 = "50ms"
t2 = "400ms"
t4 = "500ms"
d = "1s"
[auth]
# SIPp and SIPVicious answer only MD5 challenges, and only the first one offered.
algorithms = ["MD5", "SHA-256"]
users = [
  {{ user = "alice", domain = "example.com", password = "alice-secret" }},
  {{ user = "bob", domain = "example.com", password = "{BOB_PASSWORD}" }},
]
{extra}
"#
    )
}

/// `--xdp-mode` arguments: the program in generic mode on veth-b (removed when the daemon
/// stops), or no fast path at all.
pub fn mode_args(pair: &Pair, xdp: bool) -> Vec<&'static str> {
    if xdp {
        vec!["--iface", pair.if_b, "--xdp-mode", "generic", "--detach"]
    } else {
        vec!["--xdp-mode", "off"]
    }
}

/// The metrics of the daemon in namespace b.
pub struct Metrics(pub String);

impl Metrics {
    pub fn scrape(pair: &Pair) -> Metrics {
        Metrics(scrape(
            &pair.ns_b,
            "127.0.0.1:9464".parse().expect("metrics address"),
        ))
    }

    /// Scrape until `done` holds or `within` has passed: the last scrape either way, for the
    /// caller's exact assertions (instead of a fixed sleep before counting).
    pub fn poll(pair: &Pair, within: Duration, done: impl Fn(&Metrics) -> bool) -> Metrics {
        let t0 = Instant::now();
        loop {
            let m = Metrics::scrape(pair);
            if done(&m) || t0.elapsed() > within {
                return m;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Scrape until what `value` reads stops moving (equal in two scrapes 200 ms apart) or
    /// `within` has passed: for counts whose final value the test does not know beforehand.
    pub fn settled(pair: &Pair, within: Duration, value: impl Fn(&Metrics) -> f64) -> Metrics {
        let t0 = Instant::now();
        let mut last = Metrics::scrape(pair);
        loop {
            std::thread::sleep(Duration::from_millis(200));
            let m = Metrics::scrape(pair);
            if value(&m) == value(&last) || t0.elapsed() > within {
                return m;
            }
            last = m;
        }
    }

    /// One series, 0 when absent (not yet created).
    pub fn get(&self, series: &str) -> f64 {
        sample(&self.0, series).unwrap_or(0.0)
    }

    /// The sum of every series of metric `name` (all label values).
    pub fn sum(&self, name: &str) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                l.strip_prefix(name)
                    .is_some_and(|r| r.starts_with('{') || r.starts_with(' '))
            })
            .filter_map(|l| l.rsplit_once(' ')?.1.trim().parse::<f64>().ok())
            .sum()
    }

    pub fn xdp(&self, reason: &str) -> f64 {
        self.get(&format!("sipfw_xdp_packets_total{{reason=\"{reason}\"}}"))
    }

    pub fn userspace_drops(&self, reason: &str) -> f64 {
        self.get(&format!(
            "sipfw_userspace_drops_total{{reason=\"{reason}\"}}"
        ))
    }

    /// Every SIP message the daemon's message layer saw (requests and responses).
    pub fn messages_seen(&self) -> f64 {
        self.sum("sipfw_sip_requests_total") + self.sum("sipfw_sip_responses_total")
    }
}

/// The bans the daemon lists (`ban list --json`): (address, reason).
pub fn bans(d: &DaemonDirs) -> Vec<(String, String)> {
    let o = d.cli(&["ban", "list", "--json"]);
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
pub fn wait_ban(d: &DaemonDirs, ip: &str, within: Duration) -> Option<String> {
    let t0 = Instant::now();
    loop {
        if let Some((_, reason)) = bans(d).into_iter().find(|(a, _)| a == ip) {
            return Some(reason);
        }
        if t0.elapsed() > within {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A command run inside namespace `ns` (`ip netns exec`: tools that need no pinned maps).
pub fn in_netns(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).arg(program);
    c.stdin(Stdio::null());
    c
}

/// Wait for `child` at most `limit`, then kill it: its output, and whether it had to be killed.
pub fn wait_bounded(mut child: Child, limit: Duration) -> (Output, bool) {
    let t0 = Instant::now();
    let mut killed = false;
    while child.try_wait().expect("try_wait").is_none() {
        if t0.elapsed() > limit {
            let _ = child.kill();
            killed = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    (child.wait_with_output().expect("output"), killed)
}

// ---- SIPp ----

// Not every test binary that includes this module uses all of them.
#[allow(unused_imports)]
pub use sip_firewall_tests::sipp::{Run, codes};

pub fn sipp_installed(test: &str) -> bool {
    sip_firewall_tests::sipp::require(test)
}

/// SIPp scenario `name` in namespace a on 198.51.100.1:`port`, as a client of the proxy
/// when `uac`.
fn spec<'a>(pair: &Pair, dir: &'a Path, name: &'a str, port: u16, uac: bool) -> Sipp<'a> {
    Sipp {
        dir,
        name,
        local: pair.a4.into(),
        port,
        remote: uac.then(|| (pair.b4, 5060).into()),
        timeout_secs: 20,
    }
}

/// SIPp in namespace a on 198.51.100.1:`port`, as a client of the proxy when `uac`; its
/// message trace goes to `dir`/`name`-`port`.msg.
pub fn sipp_cmd(
    pair: &Pair,
    dir: &Path,
    name: &str,
    port: u16,
    uac: bool,
    args: &[&str],
) -> Command {
    let mut c = spec(pair, dir, name, port, uac).command(in_netns(&pair.ns_a, "sipp"), args);
    c.stdout(Stdio::piped()).stderr(Stdio::piped());
    c
}

pub fn finish(dir: &Path, name: &str, port: u16, out: Output) -> Run {
    Sipp {
        dir,
        name,
        local: [0, 0, 0, 0].into(),
        port,
        remote: None,
        timeout_secs: 0,
    }
    .finish(out)
}

pub fn sipp(pair: &Pair, dir: &Path, name: &str, port: u16, uac: bool, args: &[&str]) -> Run {
    let child = sipp_cmd(pair, dir, name, port, uac, args)
        .spawn()
        .expect("spawn sipp");
    let (out, _) = wait_bounded(child, Duration::from_secs(40));
    finish(dir, name, port, out)
}

/// bob registers (digest) from namespace a, his Contact at `port`.
pub fn register_bob(pair: &Pair, dir: &Path, port: u16) -> Run {
    sipp(
        pair,
        dir,
        "register.xml",
        port,
        true,
        &[
            "-set",
            "domain",
            "example.com",
            "-s",
            "bob",
            "-au",
            "bob",
            "-ap",
            BOB_PASSWORD,
            "-m",
            "1",
        ],
    )
}

/// alice calls bob through the proxy from `port`: `calls` calls at one per second.
pub fn alice_calls_bob(pair: &Pair, dir: &Path, port: u16, calls: usize) -> Run {
    sipp(
        pair,
        dir,
        "uac_call.xml",
        port,
        true,
        &[
            "-set",
            "domain",
            "example.com",
            "-s",
            "bob",
            "-au",
            "alice",
            "-ap",
            "alice-secret",
            // The digest covers the Request-URI, as the edge requires of an INVITE; SIPp's
            // default is the remote address.
            "-auth_uri",
            "bob@example.com",
            "-m",
            &calls.to_string(),
            "-r",
            "1",
        ],
    )
}

// ---- SIPVicious ----

/// Where `cargo xtask setup` puts the SIPVicious virtualenv: `target/sipvicious-venv`, or
/// `$SIPFW_SIPVICIOUS_VENV`.
pub fn sipvicious_venv() -> PathBuf {
    if let Some(v) = std::env::var_os("SIPFW_SIPVICIOUS_VENV") {
        return v.into();
    }
    // target/debug/deps/<test> -> target/sipvicious-venv
    let exe = std::env::current_exe().expect("current exe");
    exe.ancestors()
        .nth(3)
        .expect("target dir")
        .join("sipvicious-venv")
}

/// The path of a SIPVicious command (`sipvicious_svmap`...), or None after saying loudly why
/// `test` skips.
pub fn sipvicious(test: &str, command: &str) -> Option<PathBuf> {
    let bin = sipvicious_venv().join("bin").join(command);
    if bin.exists() {
        Some(bin)
    } else {
        sip_firewall_tests::skip(
            test,
            &format!(
                "{} missing: `cargo xtask setup` installs SIPVicious 0.3.8 into that \
                 virtualenv (or set SIPFW_SIPVICIOUS_VENV)",
                bin.display()
            ),
        );
        None
    }
}
