//! `sip-firewall capture` of a test's daemon (`Capture`: run in the daemon's namespace,
//! killed if still running when the test ends), and the file read back with tshark.

use std::{
    io::{BufRead as _, BufReader},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    time::Duration,
};

use crate::{daemon::daemon_bin, edge::Edge, skip::require_tool};

/// A running capture and the file it writes.
pub struct Capture {
    child: Option<Child>,
    pub file: PathBuf,
    /// What it said on stderr after its first line.
    rest: mpsc::Receiver<String>,
}

impl Capture {
    /// `sip-firewall capture -w <dir>/<name> <args>` of `edge`'s program, in its namespace
    /// (so that interface names resolve as the daemon sees them). Returns once the capture
    /// holds its slot (its first line on stderr), so what is sent afterwards is seen.
    pub fn start(edge: &Edge, name: &str, args: &[&str]) -> Capture {
        Self::spawn(edge, name, false, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The same with `-w -`: the stream on its stdout goes into the file.
    pub fn start_to_stdout(edge: &Edge, name: &str, args: &[&str]) -> Capture {
        Self::spawn(edge, name, true, args).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Capture::start`], or what the capture said when it did not start.
    pub fn try_start(edge: &Edge, name: &str, args: &[&str]) -> Result<Capture, String> {
        Self::spawn(edge, name, false, args)
    }

    fn spawn(edge: &Edge, name: &str, to_stdout: bool, args: &[&str]) -> Result<Capture, String> {
        let file = edge.dir().join(name);
        let (write, stdout) = if to_stdout {
            let f = std::fs::File::create(&file).expect("the capture's file");
            (PathBuf::from("-"), Stdio::from(f))
        } else {
            (file.clone(), Stdio::null())
        };
        let mut child = Command::new("nsenter")
            .arg(format!("--net=/var/run/netns/{}", edge.pair.ns_b))
            .arg(daemon_bin())
            .arg("capture")
            .arg("--pin-dir")
            .arg(&edge.dirs.pin_dir)
            .arg("--admin-socket")
            .arg(edge.dirs.socket())
            .arg("-w")
            .arg(&write)
            .args(args)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the capture");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let cap = Capture {
            child: Some(child),
            file,
            rest: rx,
        };
        match cap.rest.recv_timeout(Duration::from_secs(20)) {
            Ok(line) if line.contains("capturing") => Ok(cap),
            Ok(line) => Err(format!("the capture did not start: {line}\n{}", cap.said())),
            Err(e) => Err(format!("the capture said nothing ({e})")),
        }
    }

    /// Send it `signal` (SIGSTOP makes a reader that reads nothing, SIGCONT wakes it).
    pub fn signal(&self, signal: i32) {
        let c = self.child.as_ref().expect("running");
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(c.id() as i32, signal) };
    }

    /// Everything it said on stderr since its first line.
    fn said(&self) -> String {
        self.rest.try_iter().collect::<Vec<_>>().join("\n")
    }

    /// Wait (at most `limit`, then SIGINT) until it exits: its status and what it said.
    pub fn wait(mut self, limit: Duration) -> (ExitStatus, String) {
        let mut child = self.child.take().expect("running");
        let t0 = std::time::Instant::now();
        while matches!(child.try_wait(), Ok(None)) && t0.elapsed() < limit {
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: kill(2) of our own child; SIGINT ends a capture with its file complete.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let status = child.wait().expect("wait for the capture");
        // The reader thread ends with the pipe.
        std::thread::sleep(Duration::from_millis(50));
        (status, self.said())
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether tshark is installed; when it is not, [`skip`] says so.
pub fn require_tshark(test: &str) -> bool {
    require_tool(test, "tshark", "`cargo xtask setup` installs it")
}

/// `tshark -r file [-Y filter] -T fields -e ...`: one row per packet, one column per field
/// (an empty string where the packet has none). Panics when tshark cannot read the file.
pub fn tshark_fields(file: &Path, filter: Option<&str>, fields: &[&str]) -> Vec<Vec<String>> {
    let mut cmd = Command::new("tshark");
    cmd.arg("-r")
        .arg(file)
        .args(["-T", "fields", "-E", "separator=|"]);
    if let Some(f) = filter {
        cmd.args(["-Y", f]);
    }
    for f in fields {
        cmd.args(["-e", f]);
    }
    let out = cmd.output().expect("run tshark");
    assert!(
        out.status.success(),
        "tshark -r {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split('|').map(str::to_string).collect())
        .collect()
}
