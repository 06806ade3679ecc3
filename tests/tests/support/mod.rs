//! What the tests in namespaces share: the daemon's config and its start in namespace b
//! (one test at a time), SIPp and SIPVicious run inside namespace a, metrics snapshots and
//! ban lists.

#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::MutexGuard,
    time::{Duration, Instant},
};

// Not every test binary that includes this module uses all of them.
use sip_firewall_tests::{
    daemon::{DaemonDirs, sample, scrape},
    edge::Edge,
    netns::Pair,
};
#[allow(unused_imports)]
pub use sip_firewall_tests::{edge::xdp_args, one_at_a_time};

/// The password of bob, our subscriber under attack.
pub const BOB_PASSWORD: &str = "bob-secret-42";

/// Short timers (T1 50 ms): every transaction ends within seconds of its last message.
pub const SHORT_TIMERS: &str =
    "[timers]\nt1 = \"50ms\"\nt2 = \"400ms\"\nt4 = \"500ms\"\nd = \"1s\"\n";

/// The test domain and the daemon's address in namespace b: it listens on 0.0.0.0, so the
/// address that goes into our Via and Record-Route is said. Ends inside `[proxy]`.
pub const EDGE_AT_B: &str =
    "[sip]\ndomains = [\"example.com\"]\n[proxy]\nadvertise = \"198.51.100.2:5060\"\n";

/// The daemon's config in namespace b: the test domain and its two subscribers, short timers
/// (every transaction ends within seconds), `extra` appended (sections of its own).
pub fn config(extra: &str) -> String {
    format!(
        r#"{EDGE_AT_B}{SHORT_TIMERS}[auth]
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
    if !sipp_installed(test) {
        return None;
    }
    edge(test, tag, config, xdp)
}

/// REGISTER number `n` of bob from `from` with forged credentials (a nonce the edge never
/// issued, a response of zeros): a failed login, unauthenticated.
pub fn forged_register(from: SocketAddr, n: usize) -> String {
    format!(
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP {from};branch=z9hG4bK-forged-{n}\r\n\
         Max-Forwards: 70\r\nFrom: <sip:bob@example.com>;tag=f{n}\r\nTo: <sip:bob@example.com>\r\n\
         Call-ID: forged-{n}@x\r\nCSeq: {n} REGISTER\r\nContact: <sip:bob@{from}>\r\n\
         Authorization: Digest username=\"bob\", realm=\"example.com\", nonce=\"forged{n}\", \
         uri=\"sip:example.com\", response=\"00000000000000000000000000000000\", algorithm=MD5, \
         qop=auth, nc=00000001, cnonce=\"c{n}\"\r\nContent-Length: 0\r\n\r\n"
    )
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

/// `sip-firewall why SOURCE --json`: the daemon's findings on a source.
pub fn why(d: &DaemonDirs, source: &str) -> serde_json::Value {
    let o = d.cli(&["why", source, "--json"]);
    assert!(
        o.status.success(),
        "why {source}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).expect("why JSON")
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

// ---- SIPp ----

// Not every test binary that includes this module uses all of them.
#[allow(unused_imports)]
pub use sip_firewall_tests::sipp::{
    Host, Run, codes, in_netns, require as sipp_installed, wait_bounded,
};

/// bob registers (digest) from namespace a, his Contact at `port`.
pub fn register_bob(pair: &Pair, dir: &Path, port: u16) -> Run {
    Host::in_ns(pair, dir).register("bob", BOB_PASSWORD, port, &[])
}

/// alice calls bob through the proxy from `port`: `calls` calls at one per second.
pub fn alice_calls_bob(pair: &Pair, dir: &Path, port: u16, calls: usize) -> Run {
    Host::in_ns(pair, dir).call(
        "uac_call.xml",
        ("alice", "alice-secret"),
        "bob",
        port,
        &["-m", &calls.to_string(), "-r", "1"],
    )
}

// ---- SIPVicious ----

/// `svmap` from namespace a at the proxy's port, telling it our address (its default is the
/// host name's, meaningless in a namespace): its output.
pub fn svmap(pair: &Pair, bin: &std::path::Path, targets: &[String]) -> String {
    let child = in_netns(&pair.ns_a, bin)
        .args(["-p", "5060", "-x", &pair.a4.to_string(), "-t", "0.05"])
        .args(targets)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn svmap");
    let (out, killed) = wait_bounded(child, Duration::from_secs(30));
    assert!(!killed, "svmap did not end within 30 s");
    sip_firewall_tests::said(&out)
}

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

/// svcrack from namespace a (198.51.100.1) against bob at the edge, with `wrong_first` wrong
/// words, then bob's password, then a few more; --maximumtime 3: it gives up 3 s after the
/// last answer (then drains its socket for up to 10 s).
pub fn spawn_svcrack(
    pair: &Pair,
    bin: &std::path::Path,
    d: &DaemonDirs,
    wrong_first: usize,
) -> std::process::Child {
    let mut words: Vec<String> = (0..wrong_first).map(|i| format!("guess-{i}")).collect();
    words.push(BOB_PASSWORD.to_string());
    words.extend((0..3).map(|i| format!("later-{i}")));
    let list = d.dir.path.join("words.txt");
    std::fs::write(&list, words.join("\n") + "\n").unwrap();
    in_netns(&pair.ns_a, bin)
        .args(["-u", "bob", "--domain", "example.com", "-d"])
        .arg(&list)
        .args([
            "-x",
            &pair.a4.to_string(),
            "-p",
            "5060",
            "--maximumtime",
            "3",
        ])
        .arg(pair.b4.to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn svcrack")
}

/// What svcrack reply (stdout and stderr) once it ended, within 40 s.
pub fn svcrack_output(child: std::process::Child) -> String {
    let (out, killed) = wait_bounded(child, Duration::from_secs(40));
    let reply = sip_firewall_tests::said(&out);
    assert!(!killed, "svcrack did not end within 40 s:\n{reply}");
    reply
}

/// A SIPVicious tool (`svwar`, `svmap`...: the module of `sipvicious`) run by the
/// virtualenv's Python in namespace a with the User-Agent `user_agent` in place of its
/// built-in `friendly-scanner` (SIPVicious has no option for it; one line of its source
/// changes it, as an attacker does): the command, to which the tool's arguments are added.
/// None, after a loud skip, when the virtualenv is missing.
pub fn sipvicious_as(
    test: &str,
    pair: &Pair,
    tool: &str,
    user_agent: &str,
) -> Option<std::process::Command> {
    let python = sipvicious(test, "python3")?;
    // makeRequest's keyword default is the one place the User-Agent is written.
    let script = format!(
        "import sys\n\
         from sipvicious.libs import svhelper\n\
         d = list(svhelper.makeRequest.__defaults__)\n\
         d[d.index('friendly-scanner')] = {user_agent:?}\n\
         svhelper.makeRequest.__defaults__ = tuple(d)\n\
         from sipvicious.{tool} import main\n\
         sys.argv[0] = {tool:?}\n\
         sys.exit(main())\n"
    );
    let mut cmd = in_netns(&pair.ns_a, python);
    cmd.arg("-c").arg(script);
    Some(cmd)
}
