//! SIPp for the tests: whether it is installed (a loud skip when not), the scenarios of
//! `tests/sipp/`, the command every run shares (its scenario, local address, timeout and
//! message trace), where a test's runs go (`Host`: on loopback, or in namespace a of a pair)
//! with the registrations and calls the tests make (bob's registration and alice's calls to
//! him from namespace a among them), and the outcome of a run.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::{domain::BOB_PASSWORD, netns::Pair};

/// The domain of every test config's subscribers.
pub const DOMAIN: &str = "example.com";

/// What a test that needs SIPp says when it is missing.
pub const MISSING: &str = "sipp not installed (`cargo xtask setup` installs sip-tester)";

/// Whether `sipp` runs.
pub fn installed() -> bool {
    Command::new("sipp")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Whether the test can run SIPp; when not, it is skipped loudly (and fails under `CI=true`).
pub fn require(test: &str) -> bool {
    let ok = installed();
    if !ok {
        crate::skip(test, MISSING);
    }
    ok
}

/// A scenario file of `tests/sipp/`.
pub fn scenario(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("sipp")
        .join(name)
}

/// One SIPp run: scenario `name` on `local`:`port`, toward `remote` when it is a client, its
/// message trace in `dir`/`name`-`port`.msg.
pub struct Sipp<'a> {
    pub dir: &'a Path,
    pub name: &'a str,
    pub local: IpAddr,
    pub port: u16,
    pub remote: Option<SocketAddr>,
    /// `-timeout` in seconds: the run fails (`-timeout_error`) after it.
    pub timeout_secs: u32,
}

impl Sipp<'_> {
    /// The command: `program` is `sipp` itself (`Command::new("sipp")`) or a prefix that
    /// runs it (`ip netns exec NS sipp`); `args` come last.
    pub fn command(&self, mut program: Command, args: &[&str]) -> Command {
        if let Some(r) = self.remote {
            program.arg(r.to_string());
        }
        program
            .arg("-sf")
            .arg(scenario(self.name))
            .args(["-i", &self.local.to_string(), "-p", &self.port.to_string()])
            .args([
                "-timeout",
                &self.timeout_secs.to_string(),
                "-timeout_error",
                "-nostdin",
            ])
            .arg("-trace_msg")
            .arg("-message_file")
            .arg(self.trace_file())
            .args(args)
            .current_dir(self.dir)
            .stdin(Stdio::null());
        program
    }

    /// Where the message trace goes.
    pub fn trace_file(&self) -> PathBuf {
        self.dir.join(format!("{}-{}.msg", self.name, self.port))
    }

    /// The outcome of the finished run.
    pub fn finish(&self, out: Output) -> Run {
        Run {
            ok: out.status.success(),
            trace: std::fs::read_to_string(self.trace_file()).unwrap_or_default(),
            output: format!(
                "{}\n{}",
                String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .rev()
                    .take(15)
                    .collect::<Vec<_>>()
                    .join("\n"),
                String::from_utf8_lossy(&out.stderr)
            ),
        }
    }
}

/// One finished SIPp run: whether it passed, its message trace, the end of its output.
pub struct Run {
    pub ok: bool,
    pub trace: String,
    pub output: String,
}

impl Run {
    /// Fail the test unless the run succeeded: `what` failed, with SIPp's output and its
    /// message trace.
    #[track_caller]
    pub fn assert_ok(&self, what: &str) {
        assert!(self.ok, "{what}: {}\n{}", self.output, self.trace);
    }
}

/// Where a test's SIPp runs go: the address SIPp binds, the proxy its clients talk to, the
/// namespace it runs in (none: this host), the directory of its message traces, and the
/// `-timeout` of each run.
#[derive(Clone)]
pub struct Host {
    pub dir: PathBuf,
    pub local: IpAddr,
    pub proxy: SocketAddr,
    pub ns: Option<String>,
    pub timeout_secs: u32,
}

impl Host {
    /// SIPp on 127.0.0.1, a client of the daemon at `proxy`.
    pub fn loopback(dir: &Path, proxy: SocketAddr) -> Host {
        Host {
            dir: dir.to_path_buf(),
            local: [127, 0, 0, 1].into(),
            proxy,
            ns: None,
            timeout_secs: 30,
        }
    }

    /// SIPp in namespace a of `pair` on 198.51.100.1, a client of the daemon in namespace b.
    pub fn in_ns(pair: &Pair, dir: &Path) -> Host {
        Host {
            dir: dir.to_path_buf(),
            local: pair.a4.into(),
            proxy: (pair.b4, 5060).into(),
            ns: Some(pair.ns_a.clone()),
            timeout_secs: 20,
        }
    }

    /// Scenario `name` on `port`, a client of the proxy when `uac`.
    pub fn spec<'a>(&'a self, name: &'a str, port: u16, uac: bool) -> Sipp<'a> {
        Sipp {
            dir: &self.dir,
            name,
            local: self.local,
            port,
            remote: uac.then_some(self.proxy),
            timeout_secs: self.timeout_secs,
        }
    }

    /// The command of scenario `name` on `port` with `args`, its output piped.
    pub fn command(&self, name: &str, port: u16, uac: bool, args: &[&str]) -> Command {
        let program = match &self.ns {
            Some(ns) => in_netns(ns, "sipp"),
            None => Command::new("sipp"),
        };
        let mut c = self.spec(name, port, uac).command(program, args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    }

    /// Run scenario `name` on `port` to its end.
    pub fn run(&self, name: &str, port: u16, uac: bool, args: &[&str]) -> Run {
        let child = self
            .command(name, port, uac, args)
            .spawn()
            .expect("spawn sipp");
        self.wait(name, port, child)
    }

    /// Wait for the run of `name` on `port` started as `child` (its `-timeout` and 20 s more
    /// at most): its outcome.
    fn wait(&self, name: &str, port: u16, child: Child) -> Run {
        let limit = Duration::from_secs(u64::from(self.timeout_secs) + 20);
        let (out, _) = wait_bounded(child, limit);
        self.finish(name, port, out)
    }

    /// The outcome of the run of `name` on `port` that ended with `out`.
    pub fn finish(&self, name: &str, port: u16, out: Output) -> Run {
        self.spec(name, port, false).finish(out)
    }

    /// Start scenario `name` as a server on `port` with `args` (a UAS waiting for calls),
    /// and wait until it listens.
    pub fn uas(&self, name: &str, port: u16, args: &[&str]) -> Uas {
        let child = self
            .command(name, port, false, args)
            .spawn()
            .expect("spawn the UAS");
        self.wait_bound(port);
        Uas {
            host: self.clone(),
            name: name.to_string(),
            port,
            child,
        }
    }

    /// Poll until `port` is bound (UDP, or TCP for `-t t1`) where SIPp runs: a UAS ready for
    /// its call.
    pub fn wait_bound(&self, port: u16) {
        let t0 = Instant::now();
        loop {
            let mut ss = match &self.ns {
                Some(ns) => in_netns(ns, "ss"),
                None => Command::new("ss"),
            };
            let o = ss.arg("-Hlnut").output().expect("ss");
            if String::from_utf8_lossy(&o.stdout).contains(&format!(":{port} ")) {
                return;
            }
            assert!(t0.elapsed() < Duration::from_secs(10), "UAS never bound");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `user` registers with `password` (digest) from `port`, its Contact there; `extra`
    /// arguments last (`-t t1`: over TCP).
    pub fn register(&self, user: &str, password: &str, port: u16, extra: &[&str]) -> Run {
        self.registration("register.xml", user, password, port, extra)
    }

    /// The same with registration scenario `name` (`register_wrong.xml`: a password that
    /// must not work).
    pub fn registration(
        &self,
        name: &str,
        user: &str,
        password: &str,
        port: u16,
        extra: &[&str],
    ) -> Run {
        let mut args = vec![
            "-set", "domain", DOMAIN, "-s", user, "-au", user, "-ap", password, "-m", "1",
        ];
        args.extend_from_slice(extra);
        self.run(name, port, true, &args)
    }

    /// `caller` (user, password) calls `callee` with `scenario` from `port`, `extra`
    /// arguments last (`-m`: how many calls).
    pub fn call(
        &self,
        scenario: &str,
        caller: (&str, &str),
        callee: &str,
        port: u16,
        extra: &[&str],
    ) -> Run {
        let auth_uri = format!("{callee}@{DOMAIN}");
        let mut args = vec![
            "-set",
            "domain",
            DOMAIN,
            "-s",
            callee,
            "-au",
            caller.0,
            "-ap",
            caller.1,
            // The digest covers the Request-URI (sip:[service]@[$domain]), as the edge
            // requires of every request but REGISTER; SIPp's default is the remote address.
            "-auth_uri",
            &auth_uri,
        ];
        args.extend_from_slice(extra);
        self.run(scenario, port, true, &args)
    }
}

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

/// A SIPp server started by [`Host::uas`], running until its calls are done.
pub struct Uas {
    host: Host,
    name: String,
    port: u16,
    child: Child,
}

impl Uas {
    /// Wait for its end (its `-timeout` and 20 s more at most): its outcome, and whether it
    /// had to be killed.
    pub fn wait(self) -> (Run, bool) {
        let limit = Duration::from_secs(u64::from(self.host.timeout_secs) + 20);
        let (out, killed) = wait_bounded(self.child, limit);
        (self.host.finish(&self.name, self.port, out), killed)
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

/// Status codes of the responses in a SIPp message trace, in order.
pub fn codes(trace: &str) -> Vec<u16> {
    trace
        .lines()
        .filter_map(|l| l.strip_prefix("SIP/2.0 "))
        .filter_map(|r| r.get(..3)?.parse().ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_in_order_and_command_arguments() {
        let trace =
            "SIP/2.0 401 Unauthorized\r\n...\r\nREGISTER sip:x SIP/2.0\r\nSIP/2.0 200 OK\r\n";
        assert_eq!(codes(trace), vec![401, 200]);
        let dir = Path::new("/tmp");
        let s = Sipp {
            dir,
            name: "register.xml",
            local: "127.0.0.1".parse().unwrap(),
            port: 5070,
            remote: Some("127.0.0.1:5060".parse().unwrap()),
            timeout_secs: 30,
        };
        let c = s.command(Command::new("sipp"), &["-m", "1"]);
        let args: Vec<String> = c
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(args[0], "127.0.0.1:5060");
        assert!(args.ends_with(&["-m".to_string(), "1".to_string()]));
        assert!(args.contains(&"/tmp/register.xml-5070.msg".to_string()));
        assert!(scenario("register.xml").exists());
    }
}
