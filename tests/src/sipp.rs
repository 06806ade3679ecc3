//! SIPp for the tests: whether it is installed (a loud skip when not), the scenarios of
//! `tests/sipp/`, the command every run shares (its scenario, local address, timeout and
//! message trace), and the outcome of a run.

use std::{
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

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
