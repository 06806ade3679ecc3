//! Set-up steps: each checks first, installs only what is missing, and says which.

use std::process::Command;

use anyhow::Context as _;

use crate::run;

/// Whether `cmd` runs and exits 0 (its output discarded).
pub(crate) fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn output(cmd: &mut Command) -> String {
    cmd.output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// The BPF version of bpf-linker that uses rustc's own LLVM (works with this project's
/// nightly; newer ones need a system LLVM).
const BPF_LINKER: &str = "bpf-linker@0.10.4";

/// The nightly toolchain (minimal profile).
pub(crate) fn nightly() -> anyhow::Result<()> {
    if succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        eprintln!("setup: nightly toolchain: present");
        return Ok(());
    }
    eprintln!("setup: nightly toolchain: installing");
    run(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))
}

/// What building the XDP program needs: a nightly toolchain with rust-src, and bpf-linker.
pub fn build_tools() -> anyhow::Result<()> {
    nightly()?;
    let installed = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]));
    if installed.lines().any(|l| l.starts_with("rust-src")) {
        eprintln!("setup: rust-src for nightly: present");
    } else {
        eprintln!("setup: rust-src for nightly: installing");
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    if succeeds(Command::new("bpf-linker").arg("--version")) {
        eprintln!("setup: bpf-linker: present");
    } else {
        eprintln!("setup: bpf-linker: installing {BPF_LINKER} (a few minutes, once)");
        run(Command::new("cargo").args(["install", BPF_LINKER, "--locked"]))
            .context("installing bpf-linker")?;
    }
    Ok(())
}

/// Debian packages the tests and benchmarks drive, by the command that proves each.
const PACKAGES: &[(&str, &str)] = &[
    ("ip", "iproute2"),
    ("nft", "nftables"),
    ("sipp", "sip-tester"),
    ("trafgen", "netsniff-ng"),
    // Packaging and operations tests (tests/tests/packaging.rs, prometheus.rs, top.rs).
    ("man", "man-db"),
    ("lintian", "lintian"),
    ("promtool", "prometheus"),
    ("systemd-analyze", "systemd"),
    ("tmux", "tmux"),
    ("curl", "curl"),
    // The cluster tests (tests/tests/cluster.rs) start their own Redis on a Unix socket.
    ("redis-server", "redis-server"),
    // RFC 3263 tests: a real DNS server with NAPTR and SRV records (sip-firewall/tests/dns_rfc3263.rs).
    ("dnsmasq", "dnsmasq-base"),
    // `bench proxy`'s TLS row: SIPp has no TLS; socat carries its TCP stream over TLS.
    ("socat", "socat"),
    ("openssl", "openssl"),
    // `capture` tests read the pcapng files the firewall writes (tests/tests/capture.rs).
    ("tshark", "tshark"),
    // The HEP export's test: sngrep as a HEPv3 collector (tests/tests/hep.rs).
    ("sngrep", "sngrep"),
];

/// What the tests need besides the build: namespace tools, nftables, SIPp, SIPVicious.
pub fn test_tools() -> anyhow::Result<()> {
    packages()?;
    if let Err(e) = packaging_tools() {
        eprintln!("setup: cargo-deb not installed ({e:#}): the .deb test will skip");
    }
    // Without network (PyPI) the rest of the tests still run: the SIPVicious ones skip loudly.
    if let Err(e) = sipvicious() {
        eprintln!("setup: SIPVicious not installed ({e:#}): the SIPVicious tests will skip");
    }
    Ok(())
}

/// The Debian packages of [`PACKAGES`] that are missing, installed with apt-get when root.
fn packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(cmd, _)| !succeeds(Command::new("sh").args(["-c", &format!("command -v {cmd}")])))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        let names: Vec<&str> = PACKAGES.iter().map(|(_, pkg)| *pkg).collect();
        eprintln!("setup: test tools ({}): present", names.join(", "));
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        eprintln!(
            "setup: missing {} and not root: install them with apt-get, or the tests that need them skip",
            missing.join(", ")
        );
        return Ok(());
    }
    eprintln!("setup: installing {}", missing.join(", "));
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

/// Kamailio 5.6 (Debian's package), the peer of `bench flood --peer kamailio`, which runs
/// its own instance with deploy/kamailio/bench.cfg. Not a test tool: the package starts a
/// service on port 5060 where systemd runs, which would take the port from the tests, so
/// after installing it that service is stopped and disabled. Idempotent.
pub fn kamailio() -> anyhow::Result<()> {
    if succeeds(Command::new("sh").args(["-c", "command -v kamailio"])) {
        eprintln!("setup: kamailio: present");
        return Ok(());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc_geteuid() } != 0 {
        eprintln!("setup: kamailio missing and not root: apt-get install kamailio");
        return Ok(());
    }
    eprintln!("setup: installing kamailio");
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "-q", "--no-install-recommends", "kamailio"])
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    if succeeds(Command::new("systemctl").args(["disable", "--now", "kamailio"])) {
        eprintln!("setup: kamailio's service stopped and disabled (the bench runs its own)");
    }
    Ok(())
}

/// The cargo-deb release `cargo xtask dist` builds the package with.
const CARGO_DEB: &str = "cargo-deb@3.8.0";

/// cargo-deb, for `cargo xtask dist` (and the packaging test): installed once from crates.io.
pub fn packaging_tools() -> anyhow::Result<()> {
    if succeeds(Command::new("cargo").args(["deb", "--version"])) {
        eprintln!("setup: cargo-deb: present");
        return Ok(());
    }
    eprintln!("setup: cargo-deb: installing {CARGO_DEB} (a few minutes, once)");
    run(Command::new("cargo").args(["install", CARGO_DEB, "--locked"]))
        .context("installing cargo-deb")
}

/// The SIPVicious release the attack tests (tests/tests/sipvicious.rs) run.
const SIPVICIOUS: &str = "sipvicious==0.3.8";

/// SIPVicious in a virtualenv of its own, `sipvicious-venv` in the target directory, where the
/// tests look for `bin/sipvicious_svmap` and `bin/sipvicious_svcrack` (they skip loudly
/// without them). Idempotent: nothing happens when that version is already there.
pub fn sipvicious() -> anyhow::Result<()> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| crate::root().join("target"), std::path::PathBuf::from);
    let venv = target.join("sipvicious-venv");
    let pip = venv.join("bin/pip");
    let installed = output(Command::new(&pip).args(["show", "sipvicious"]));
    let version = SIPVICIOUS.split("==").nth(1).unwrap_or_default();
    if installed
        .lines()
        .any(|l| l.trim() == format!("Version: {version}"))
        && venv.join("bin/sipvicious_svcrack").exists()
    {
        eprintln!("setup: SIPVicious {version} in {}: present", venv.display());
        return Ok(());
    }
    if !succeeds(Command::new("python3").args(["-m", "venv", "--help"])) {
        eprintln!(
            "setup: python3 with the venv module missing: the SIPVicious tests will skip \
             (apt-get install python3-venv)"
        );
        return Ok(());
    }
    if !pip.exists() {
        eprintln!(
            "setup: SIPVicious: making the virtualenv {}",
            venv.display()
        );
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    }
    eprintln!(
        "setup: SIPVicious: installing {SIPVICIOUS} into {}",
        venv.display()
    );
    run(Command::new(&pip).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        SIPVICIOUS,
    ]))
    .context("installing SIPVicious (PyPI) into its virtualenv")
}

unsafe extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}
