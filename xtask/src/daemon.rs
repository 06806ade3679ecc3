//! Our daemon as the benchmarks start it: `sip-firewall run` with its config file, state
//! and admin socket in one directory, logging errors only.

use std::{
    path::Path,
    process::{Command, Stdio},
};

/// `cmd` (the daemon's binary, or a command that runs it in a namespace) as `sip-firewall
/// run` on `dir`/sip-firewall.toml, its state and admin socket in `dir`.
pub(crate) fn run_in(mut cmd: Command, dir: &Path) -> Command {
    cmd.arg("run")
        .arg("--config")
        .arg(dir.join("sip-firewall.toml"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--admin-socket")
        .arg(dir.join("admin.sock"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::null());
    cmd
}

/// `bin` on loopback without XDP: SIP at `sip`, metrics at `metrics`.
pub(crate) fn loopback(bin: &Path, dir: &Path, sip: &str, metrics: &str) -> Command {
    let mut c = run_in(Command::new(bin), dir);
    c.args(["--xdp-mode", "off", "--sip-listen", sip])
        .args(["--metrics-listen", metrics]);
    c
}
