//! Throw-away network namespaces for the integration tests (`tests/`) and the benchmarks
//! (`xtask bench flood`): commands run with `ip` and `nsenter` (`run`, `ip`, `ip_in`,
//! `exec`), a namespace deleted on drop (`Namespace`), veth links and static neighbours
//! (`veth`, `neigh`: no ARP or neighbour discovery while a test counts packets), work done on
//! a thread inside a namespace (`in_ns`), raw frames sent from one (`inject`), and the pair of
//! namespaces most tests use: a sender and the host behind the firewall joined by a veth
//! (`Pair`), with a third namespace on a second interface of the host when it is
//! dual-homed (`Side`).
//!
//! Only std and libc: `xtask` builds this crate before `cargo xtask setup` has installed
//! what the daemon needs to build. Addresses are the callers' (documentation ranges inside
//! their own namespaces): nothing here reaches another host.

mod inject;
mod pair;

use std::{fmt, process::Command};

pub use inject::inject;
pub use pair::{Pair, Side};

/// A command that could not run or failed: what it was and what it said.
#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl Error {
    /// An error saying `what` went wrong (with the OS error where there is one).
    pub fn new(what: impl Into<String>) -> Error {
        Error(what.into())
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// Run `cmd` with `args`: its stdout; an error with its stderr when it fails.
pub fn run(cmd: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| Error(format!("cannot run {cmd}: {e}")))?;
    if !out.status.success() {
        return Err(Error(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run `ip` with `args`.
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// Run `ip -n ns` with `args` (inside namespace `ns`).
pub fn ip_in(ns: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["-n", ns];
    full.extend_from_slice(args);
    ip(&full)
}

/// A command run in namespace `ns` (nsenter, not `ip netns exec`: no mount namespace of its
/// own, so bpffs pins and paths stay the host's).
pub fn exec(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/var/run/netns/{ns}")).arg(program);
    c
}

/// A network namespace with its loopback up, deleted (with every interface in it) on drop.
#[derive(Debug)]
pub struct Namespace(String);

impl Namespace {
    /// Make namespace `name`, deleting a stale one of that name first.
    pub fn new(name: impl Into<String>) -> Result<Namespace> {
        let ns = Namespace(name.into());
        let _ = ip(&["netns", "del", &ns.0]);
        ip(&["netns", "add", &ns.0])?;
        ip_in(&ns.0, &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for Namespace {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Namespace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.0]);
    }
}

/// One end of a veth link: the namespace it goes to, its name and, when set, its MAC.
pub struct End<'a> {
    pub ns: &'a str,
    pub name: &'a str,
    pub mac: Option<&'a str>,
}

/// A veth link from `a` to `b`, both ends up.
pub fn veth(a: End, b: End) -> Result<()> {
    let mut args = vec!["link", "add", a.name, "netns", a.ns];
    args.extend(a.mac.iter().flat_map(|m| ["address", m]));
    args.extend(["type", "veth", "peer", "name", b.name, "netns", b.ns]);
    args.extend(b.mac.iter().flat_map(|m| ["address", m]));
    ip(&args)?;
    ip_in(a.ns, &["link", "set", a.name, "up"])?;
    ip_in(b.ns, &["link", "set", b.name, "up"])?;
    Ok(())
}

/// A static neighbour in `ns`: `addr` is at `mac` on `dev` (no ARP or neighbour discovery).
pub fn neigh(ns: &str, addr: &str, mac: &str, dev: &str) -> Result<()> {
    ip_in(
        ns,
        &[
            "neigh",
            "replace",
            addr,
            "lladdr",
            mac,
            "dev",
            dev,
            "nud",
            "permanent",
        ],
    )
    .map(drop)
}

/// No router solicitations or MLD reports from `ifc` in `ns` while a test counts packets.
pub fn quiet_ipv6(ns: &str, ifc: &str) -> Result<()> {
    let sysctl = |setting: &str| run("ip", &["netns", "exec", ns, "sysctl", "-qw", setting]);
    sysctl(&format!("net.ipv6.conf.{ifc}.router_solicitations=0"))?;
    sysctl("net.ipv6.conf.all.force_mld_version=2").map(drop)
}

/// Run `f` on a new thread that lives in namespace `ns`: sockets it opens and interfaces it
/// names belong there. The calling thread's namespace is untouched.
pub fn in_ns<T, E>(
    ns: &str,
    f: impl FnOnce() -> std::result::Result<T, E> + Send + 'static,
) -> std::result::Result<T, E>
where
    T: Send + 'static,
    E: From<Error> + Send + 'static,
{
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).map_err(|e| Error(format!("open {path}: {e}")))?;
        use std::os::fd::AsRawFd;
        // SAFETY: a valid fd of a network namespace; affects only this thread.
        if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            let e = std::io::Error::last_os_error();
            return Err(Error(format!("setns {path}: {e}")).into());
        }
        f()
    })
    .join()
    .unwrap_or_else(|_| Err(Error(format!("thread in {ns} panicked")).into()))
}
