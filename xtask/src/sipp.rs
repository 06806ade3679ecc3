//! SIPp for the benchmarks: the caller of `uac_bench.xml` with its rate, count and
//! transport ([`Uac`], one builder for every run), waiting for a listener
//! ([`wait_listening`]), and reading what SIPp measured (`stat.csv`, `*_rtt.csv`).

use std::{
    net::{TcpListener, UdpSocket},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::bail;

/// A port free on loopback for both TCP and UDP.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    for _ in 0..100 {
        let t = TcpListener::bind("127.0.0.1:0")?;
        let port = t.local_addr()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port")
}

/// Until something accepts TCP connections at `addr`, at most `deadline`.
pub(crate) fn wait_listening(addr: &str, deadline: Duration) -> anyhow::Result<()> {
    let t0 = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        if t0.elapsed() > deadline {
            bail!("nothing listens on {addr} after {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// One run of the benchmark's caller (`uac_bench.xml`, calls to bob): `calls` calls at
/// `rate` per second toward `target`, its statistics (`stat.csv`) in `work`.
pub(crate) struct Uac<'a> {
    pub target: &'a str,
    pub work: &'a Path,
    pub rate: u32,
    pub calls: u32,
    /// `-timeout` in seconds.
    pub timeout_secs: u32,
    /// Over TCP (one connection: `-t t1`) instead of UDP.
    pub tcp: bool,
    /// The rate steps: a wide call limit and socket count, and the call setup times
    /// (`-trace_rtt`).
    pub step: bool,
}

impl Uac<'_> {
    /// The SIPp command of this run, from a free local port.
    pub(crate) fn command(&self, scenarios: &Path) -> anyhow::Result<Command> {
        let port = free_port()?.to_string();
        let mut c = Command::new("sipp");
        c.arg(self.target)
            .arg("-sf")
            .arg(scenarios.join("uac_bench.xml"))
            .args(["-set", "domain", "example.com", "-s", "bob"])
            .args(["-i", "127.0.0.1", "-p", &port, "-nostdin"])
            .args(["-r", &self.rate.to_string(), "-m", &self.calls.to_string()])
            .args(["-timeout", &self.timeout_secs.to_string()])
            .args(["-trace_stat", "-stf", "stat.csv"]);
        if self.step {
            c.args(["-l", &(self.rate * 10).to_string(), "-max_socket", "10000"])
                .args(["-trace_rtt", "-rtt_freq", "1"]);
        }
        if self.tcp {
            c.args(["-t", "t1"]);
        }
        c.current_dir(self.work)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        Ok(c)
    }

    /// Run it to the end; (calls attempted, calls successful) from its statistics.
    pub(crate) fn run(&self, scenarios: &Path) -> anyhow::Result<Option<(u64, u64)>> {
        std::fs::create_dir_all(self.work)?;
        // Its exit status says only whether every call succeeded: the statistics tell.
        let _ = self.command(scenarios)?.status()?;
        let stat = std::fs::read_to_string(self.work.join("stat.csv")).unwrap_or_default();
        Ok(totals(&stat))
    }
}

/// Calls created and calls successful, from the last line of SIPp's statistics file.
pub(crate) fn totals(csv: &str) -> Option<(u64, u64)> {
    let lines: Vec<&str> = csv.lines().filter(|l| !l.trim().is_empty()).collect();
    let header: Vec<&str> = lines.first()?.split(';').collect();
    let last: Vec<&str> = lines.get(1..)?.last()?.split(';').collect();
    let col = |name: &str| -> Option<u64> {
        let i = header.iter().position(|h| *h == name)?;
        last.get(i)?.trim().parse().ok()
    };
    Some((col("OutgoingCall(C)")?, col("SuccessfulCall(C)")?))
}

/// Call setup times (response time 1) in milliseconds, from SIPp's `*_rtt.csv`.
pub(crate) fn rtts(work: &Path) -> anyhow::Result<Vec<f64>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(work)? {
        let p: PathBuf = e?.path();
        if !p.to_string_lossy().ends_with("_rtt.csv") {
            continue;
        }
        for line in std::fs::read_to_string(&p)?.lines().skip(1) {
            // date_ms;response_time_ms;rtd_no
            if let Some(v) = line.split(';').nth(1).and_then(|v| v.trim().parse().ok()) {
                out.push(v);
            }
        }
    }
    Ok(out)
}

/// A SIPp time: whole milliseconds, so 0 means under one.
pub(crate) fn ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v < 1.0 {
        "<1 ms".into()
    } else {
        format!("{v:.0} ms")
    }
}

pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// One builder for both runs: the rate steps add the call limit and setup times, the
    /// CPU run over TLS goes over one TCP connection; both count calls in `stat.csv`.
    #[test]
    fn one_uac_builder_for_steps_and_cpu_runs() {
        let work = Path::new("/tmp");
        let mut uac = Uac {
            target: "127.0.0.1:5060",
            work,
            rate: 200,
            calls: 1000,
            timeout_secs: 45,
            tcp: false,
            step: true,
        };
        let step = args(&uac.command(Path::new("/s")).unwrap());
        assert_eq!(step[0], "127.0.0.1:5060");
        for a in ["-trace_rtt", "-trace_stat", "2000", "/s/uac_bench.xml"] {
            assert!(step.iter().any(|x| x == a), "{a} in {step:?}");
        }
        assert!(!step.iter().any(|x| x == "-t"));
        uac.step = false;
        uac.tcp = true;
        let cpu = args(&uac.command(Path::new("/s")).unwrap());
        assert!(cpu.ends_with(&["-t".to_string(), "t1".to_string()]));
        assert!(!cpu.iter().any(|x| x == "-trace_rtt"));
        assert!(cpu.iter().any(|x| x == "stat.csv"));
    }

    #[test]
    fn wait_listening_gives_up_at_its_deadline() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        wait_listening(&addr, Duration::from_secs(1)).unwrap();
        drop(l);
        assert!(wait_listening(&addr, Duration::from_millis(100)).is_err());
    }

    #[test]
    fn sipp_statistics_and_percentiles() {
        let csv = "StartTime;OutgoingCall(C);SuccessfulCall(C)\nx;10;9\ny;20;19\n";
        assert_eq!(totals(csv), Some((20, 19)));
        assert_eq!(totals("StartTime\n"), None);
        let v = [1.0, 2.0, 3.0, 4.0, 100.0];
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert_eq!(percentile(&v, 0.99), 100.0);
        assert!(percentile(&[], 0.5).is_nan());
    }
}
