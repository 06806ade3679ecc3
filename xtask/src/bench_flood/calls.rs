//! The legitimate calls: SIPp's UAS registers bob@example.com (digest) from ns S and
//! answers; SIPp's UAC in ns C calls bob through the edge (INVITE/180/200/ACK/BYE over UDP
//! along the Record-Route, `tests/sipp/uac_bench.xml`). Outcome and setup times come from
//! SIPp's statistics (`-trace_stat`) and response-time (`-trace_rtt`) files.

use std::{
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::net::{EDGE, Net, UAC, UAS, UAS_PORT};
use crate::sipp::{rtts, totals};

pub fn scenario(name: &str) -> PathBuf {
    crate::root().join("tests/sipp").join(name)
}

/// Register bob (the UAS's address) with the edge, then alice from the caller's address: the
/// legitimate parties are subscribers, so our edge knows both sources (registered contacts
/// pass the unknown-source budget); Kamailio registers them alike. A few tries, as
/// the edge may still be loading.
pub fn register(net: &Net, dir: &Path) -> anyhow::Result<()> {
    register_one(net, &net.s, "bob", UAS, UAS_PORT, dir)?;
    register_one(net, &net.c, "alice", UAC, CALLER_CONTACT_PORT, dir)
}

/// The port of alice's registered contact (the calls leave from SIPp's own port; the edge
/// knows a registered source by its address).
pub const CALLER_CONTACT_PORT: u16 = 5090;

fn register_one(
    net: &Net,
    ns: &str,
    user: &str,
    ip: &str,
    port: u16,
    dir: &Path,
) -> anyhow::Result<()> {
    for _ in 0..5 {
        let ok = net
            .exec(ns, "sipp")
            .arg(format!("{EDGE}:5060"))
            .arg("-sf")
            .arg(scenario("register.xml"))
            .args(["-set", "domain", "example.com", "-s", user])
            .args(["-au", user, "-ap", "bench", "-m", "1"])
            .args(["-i", ip, "-p", &port.to_string()])
            .args(["-timeout", "5", "-timeout_error", "-nostdin"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?
            .success();
        if ok {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    bail!("{user} could not register with the edge")
}

/// A running SIPp (the UAS), killed on drop.
pub struct Uas(Child);

impl Drop for Uas {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// SIPp in namespace `ns`, on CPU `cpu` when given (taskset: its affinity, which SIPp's
/// own threads inherit).
pub fn sipp(net: &Net, ns: &str, cpu: Option<u32>) -> std::process::Command {
    match cpu {
        Some(cpu) => {
            let mut c = net.exec(ns, "taskset");
            c.args(["-c", &cpu.to_string(), "sipp"]);
            c
        }
        None => net.exec(ns, "sipp"),
    }
}

/// Start `cmd` (a [`sipp`]) in `work`, where it writes its statistics, detached from the
/// terminal (`-nostdin`: it reads and prints nothing); `what` names it in the error.
pub fn start(
    cmd: &mut std::process::Command,
    work: &Path,
    what: &'static str,
) -> anyhow::Result<Child> {
    cmd.current_dir(work)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context(what)
}

/// The UAS, answering every call to bob.
pub fn uas(net: &Net, dir: &Path, cpu: Option<u32>) -> anyhow::Result<Uas> {
    let child = start(
        sipp(net, &net.s, cpu)
            .arg("-sf")
            .arg(scenario("uas.xml"))
            .args(["-i", UAS, "-p", &UAS_PORT.to_string(), "-nostdin"]),
        dir,
        "starting the SIPp UAS",
    )?;
    // SIPp binds at once; a short pause so that the first INVITE finds it.
    std::thread::sleep(Duration::from_millis(300));
    Ok(Uas(child))
}

/// The calls' outcome.
pub struct Calls {
    pub attempted: u64,
    pub ok: u64,
    /// Setup times (INVITE sent to 200 received), milliseconds, sorted.
    pub setup_ms: Vec<f64>,
}

impl Calls {
    /// No call placed.
    pub fn none() -> Calls {
        Calls {
            attempted: 0,
            ok: 0,
            setup_ms: Vec::new(),
        }
    }
}

/// `calls` calls at `rate`/s from ns C (SIPp on CPU `cpu` when given); SIPp gives up on
/// the run after `seconds` and on one call after 10 s without an answer.
pub fn run(
    net: &Net,
    dir: &Path,
    calls: u32,
    rate: u32,
    seconds: u32,
    cpu: Option<u32>,
) -> anyhow::Result<Calls> {
    let work = dir.join("uac");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let uac = start(
        sipp(net, &net.c, cpu)
            .arg(format!("{EDGE}:5060"))
            .arg("-sf")
            .arg(scenario("uac_bench.xml"))
            .args(["-set", "domain", "example.com", "-s", "bob"])
            .args(["-i", UAC, "-p", "5070", "-nostdin"])
            .args(["-r", &rate.to_string(), "-m", &calls.to_string()])
            .args(["-l", &(rate * 10).to_string()])
            .args(["-timeout", &seconds.to_string(), "-recv_timeout", "10000"])
            .args([
                "-trace_stat",
                "-stf",
                "stat.csv",
                "-trace_rtt",
                "-rtt_freq",
                "1",
            ]),
        &work,
        "running the SIPp UAC",
    )?;
    // SIPp's -timeout is checked by its own loop, which a starved machine slows: a hard
    // bound on top.
    let deadline = Instant::now() + Duration::from_secs(u64::from(seconds) + 15);
    let mut uac = Uas(uac);
    while uac.0.try_wait()?.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(uac);
    let stat = std::fs::read_to_string(work.join("stat.csv")).unwrap_or_default();
    let (attempted, ok) = totals(&stat).unwrap_or((0, 0));
    let mut setup_ms = rtts(&work)?;
    setup_ms.sort_by(f64::total_cmp);
    Ok(Calls {
        attempted: attempted.max(u64::from(calls)),
        ok,
        setup_ms,
    })
}
