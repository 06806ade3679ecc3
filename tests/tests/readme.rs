//! The README's "first session" works as written: every command of its block runs, in
//! order, against a daemon started as the block says (`--iface eth0` becomes the test's
//! veth, in a namespace of its own), with the binary on PATH and the default paths
//! (/run/sip-firewall, /var/lib/sip-firewall, /etc/sip-firewall, /sys/fs/bpf/sip-firewall).
//! It changes those paths, so it runs only when none of them exists, and removes them after.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use sip_firewall_tests::{
    daemon::daemon_bin, netns::Pair, require_root, said, skip, skip::require_tool,
};

const PATHS: [&str; 4] = [
    "/run/sip-firewall",
    "/var/lib/sip-firewall",
    "/etc/sip-firewall",
    "/sys/fs/bpf/sip-firewall",
];

/// The commands of the README's first-session block, without comments.
fn session() -> Vec<String> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .unwrap();
    let start = readme
        .find("## Operating it: a first session")
        .expect("the first-session section");
    let block = readme[start..]
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("its sh block");
    block
        .lines()
        .map(|l| l.split(" # ").next().unwrap_or("").trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Stops the daemon the block started (also when an assertion fails) and removes what it
/// made under the default paths.
struct Cleanup(Option<std::process::Child>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            // SAFETY: kill(2) of our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let _ = child.wait();
        }
        for p in PATHS {
            let _ = std::fs::remove_dir_all(p);
        }
    }
}

#[test]
fn the_readme_first_session_works_as_written() {
    let test = "the_readme_first_session_works_as_written";
    if !require_root(test) {
        return;
    }
    if let Some(p) = PATHS.iter().find(|p| Path::new(p).exists()) {
        skip(
            test,
            &format!("{p} exists: not touching a real installation"),
        );
        return;
    }
    if !require_tool(test, "curl", "cargo xtask setup installs it") {
        return;
    }
    let cmds = session();
    assert!(cmds.len() >= 10, "{cmds:?}");
    let pair = Pair::new("readme").unwrap();
    let mut cleanup = Cleanup(None);
    // The binary on PATH, as `cargo xtask install` puts it there.
    let bin_dir = daemon_bin().parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let sh = |line: &str| {
        let mut c = Command::new("nsenter");
        c.arg(format!("--net=/var/run/netns/{}", pair.ns_b))
            .args(["sh", "-c", line])
            .env("PATH", &path)
            .stdin(Stdio::null());
        c
    };
    for line in &cmds {
        if line.starts_with("cargo xtask install") {
            // Building release here would take minutes: the debug binary is on PATH instead.
            continue;
        }
        if line.starts_with("sip-firewall top") {
            // Interactive: tests/tests/top.rs drives it under tmux.
            continue;
        }
        let line = line.replace("eth0", pair.if_b);
        if let Some(run) = line.strip_suffix('&') {
            let child = sh(&format!("exec {}", run.trim()))
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start the daemon");
            cleanup.0 = Some(child);
            let t0 = Instant::now();
            while !sh("sip-firewall status").output().unwrap().status.success() {
                assert!(
                    t0.elapsed() < Duration::from_secs(20),
                    "`{run}` did not come up"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            continue;
        }
        let out = sh(&line).output().expect("run");
        let reply = said(&out);
        eprintln!("$ {line}\n{reply}");
        assert!(out.status.success(), "`{line}` failed:\n{reply}");
        if line.contains("/metrics") {
            assert!(reply.contains("sipfw_xdp_packets_total{"), "{reply}");
        }
        if line.ends_with("ban list") {
            assert!(
                reply.contains("203.0.113.7") && reply.contains("svwar from a VPS"),
                "{reply}"
            );
        }
        if line.ends_with("status") {
            assert!(reply.contains("veth-b"), "{reply}");
        }
    }
    let mut daemon = cleanup.0.take().expect("the block starts the daemon");
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    let status = daemon.wait().unwrap();
    assert!(status.success(), "the daemon's exit: {status}");
    // Without --detach the program stays attached and pinned by design: remove the pins
    // (the namespace goes with the pair).
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/sip-firewall");
}
