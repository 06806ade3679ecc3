//! Who registers during the soak: bob and alice once for the whole run, every subscriber
//! once before the calls, then the subscribers again and again (the churn), all with the
//! same digest REGISTER scenario.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use super::Plan;
use crate::{
    bench_flood::{
        calls,
        net::{EDGE, Net, UAC, UAS, UAS_PORT},
    },
    bench_proxy::Guard,
};

/// The REGISTER scenario: `[field0]` of the CSV is the user, `[field1]` its credentials
/// (SIPp expands an `[authentication ...]` keyword read from a field; one nested in the
/// scenario's own keyword would not parse).
const REGISTER_XML: &str = r#"<?xml version="1.0" encoding="ISO-8859-1" ?>
<!DOCTYPE scenario SYSTEM "sipp.dtd">
<scenario name="soak register">
  <send retrans="500">
    <![CDATA[
      REGISTER sip:example.com SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[field0]@example.com>;tag=[pid]SIPpTag[call_number]
      To: <sip:[field0]@example.com>
      Call-ID: [call_id]
      CSeq: 1 REGISTER
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      Max-Forwards: 70
      Expires: EXPIRES
      Content-Length: 0

    ]]>
  </send>
  <recv response="401" auth="true"/>
  <send retrans="500">
    <![CDATA[
      REGISTER sip:example.com SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
      From: <sip:[field0]@example.com>;tag=[pid]SIPpTag[call_number]
      To: <sip:[field0]@example.com>
      Call-ID: [call_id]
      CSeq: 2 REGISTER
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      [field1]
      Max-Forwards: 70
      Expires: EXPIRES
      Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
</scenario>
"#;

/// The REGISTER SIPp's port in ns C (the calls leave from 5070, alice's contact is 5090).
const REGISTER_PORT: u16 = 5072;

/// How long bob's and alice's registrations last (a day): the soak registers them once.
pub(super) const PARTY_EXPIRES: u32 = 86_400;

/// Register bob (the UAS's address) and alice (the caller's) for the whole run with the
/// churn's scenario, before the UAS binds bob's port; a few tries, as the edge may still be
/// loading.
pub(super) fn register_parties(net: &Net, dir: &Path) -> anyhow::Result<()> {
    let parties = [
        (&net.s, "bob", UAS, UAS_PORT),
        (&net.c, "alice", UAC, calls::CALLER_CONTACT_PORT),
    ];
    for (ns, user, ip, port) in parties {
        let work = dir.join(user);
        std::fs::create_dir_all(&work)?;
        std::fs::write(
            work.join("register.xml"),
            REGISTER_XML.replace("EXPIRES", &PARTY_EXPIRES.to_string()),
        )?;
        std::fs::write(
            work.join("user.csv"),
            format!("SEQUENTIAL\n{user};[authentication username={user} password=bench];\n"),
        )?;
        let mut ok = false;
        for _ in 0..5 {
            ok = calls::sipp(net, ns, None)
                .arg(format!("{EDGE}:5060"))
                .args(["-sf", "register.xml", "-inf", "user.csv", "-m", "1"])
                .args(["-i", ip, "-p", &port.to_string()])
                .args(["-timeout", "5", "-timeout_error", "-nostdin"])
                .current_dir(&work)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()?
                .success();
            if ok {
                break;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        anyhow::ensure!(ok, "{user} could not register with the edge");
    }
    Ok(())
}

/// Every subscriber registered once before the calls (at [`FILL_RATE`]), with the churn's
/// scenario and CSV: the run then measures re-registrations against a full location table,
/// and its memory after the first tenth is the level of a full table.
pub(super) fn register_subscribers(net: &Net, dir: &Path, plan: &Plan) -> anyhow::Result<()> {
    let work = registration_files(dir, plan)?;
    let t0 = Instant::now();
    let ok = calls::sipp(net, &net.c, None)
        .arg(format!("{EDGE}:5060"))
        .args(["-sf", "register.xml", "-inf", "users.csv", "-nostdin"])
        .args(["-i", UAC, "-p", &REGISTER_PORT.to_string()])
        .args([
            "-r",
            &FILL_RATE.to_string(),
            "-m",
            &plan.subscribers.to_string(),
        ])
        .args([
            "-recv_timeout",
            "10000",
            "-timeout",
            "600",
            "-timeout_error",
        ])
        .current_dir(&work)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()?
        .success();
    anyhow::ensure!(
        ok,
        "registering the {} subscribers before the calls failed (SIPp's files in {})",
        plan.subscribers,
        work.display()
    );
    println!(
        "{} subscribers registered before the calls in {:.0} s",
        plan.subscribers,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// REGISTERs per second while the subscribers register before the calls.
const FILL_RATE: u32 = 500;

/// The churn's scenario and its CSV, written to `dir`/reg (that folder).
fn registration_files(dir: &Path, plan: &Plan) -> anyhow::Result<PathBuf> {
    let work = dir.join("reg");
    std::fs::create_dir_all(&work)?;
    // Refreshed every cycle: a binding lasts two cycles and a minute, so it never lapses.
    let expires = (plan.cycle * 2 + 60).min(3600);
    std::fs::write(
        work.join("register.xml"),
        REGISTER_XML.replace("EXPIRES", &expires.to_string()),
    )?;
    let mut csv = String::from("SEQUENTIAL\n");
    for i in 0..plan.subscribers {
        csv.push_str(&format!(
            "u{i:05};[authentication username=u{i:05} password=bench];\n"
        ));
    }
    std::fs::write(work.join("users.csv"), csv)?;
    Ok(work)
}

/// The REGISTER SIPp of the churn: as many registrations as the calls' time holds, so that
/// both end together and SIPp's counts are final.
pub(super) fn registrations(net: &Net, dir: &Path, plan: &Plan) -> anyhow::Result<Guard> {
    let work = registration_files(dir, plan)?;
    let child = calls::start(
        calls::sipp(net, &net.c, None)
            .arg(format!("{EDGE}:5060"))
            .args(["-sf", "register.xml", "-inf", "users.csv"])
            .args(["-i", UAC, "-p", &REGISTER_PORT.to_string(), "-nostdin"])
            // A rate in thousandths: SIPp takes whole calls per period (-rp, ms).
            .args(["-r", &format!("{:.0}", plan.register_rate() * 1000.0)])
            .args(["-rp", "1000000", "-recv_timeout", "10000"])
            .args([
                "-m",
                &format!("{:.0}", plan.register_rate() * f64::from(plan.seconds())),
            ])
            .args(["-trace_stat", "-stf", "stat.csv", "-fd", "1"]),
        &work,
        "starting the REGISTER SIPp",
    )?;
    Ok(Guard(child))
}
