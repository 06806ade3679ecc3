//! The one test-support library of the workspace, used by `tests/tests/`, by
//! `sip-firewall/tests/` (a dev-dependency) and by the benchmarks: a root check that skips
//! loudly (`skip`), `sip-firewall capture` and tshark (`capture`), the daemon started in a
//! namespace or on loopback and its CLI (`daemon`), one daemon of a test in a namespace pair
//! of its own and what tests ask of it (`edge`), the test domain example.com and its
//! subscribers as that daemon's config says (`domain`), a threat feed served over HTTPS
//! (`feed`), throw-away network namespaces joined by a veth pair (`netns`, the
//! `sip-firewall-netns` crate), a `redis-server` and the nodes of a cluster (`cluster`), SIPp
//! (`sipp`), SIPVicious (`sipvicious`), scrapes of `/metrics` (`metrics`), free loopback
//! ports (`ports`), crafted frames for `BPF_PROG_TEST_RUN` (`frames`), a HEPv3 collector and
//! decoder (`hep`) and the SIP client, over UDP, TCP, TLS and WebSocket (`ua`).

pub mod capture;
pub mod cluster;
pub mod daemon;
pub mod domain;
pub mod edge;
pub mod feed;
pub mod frames;
pub mod hep;
pub mod metrics;
pub mod netns;
pub mod ports;
pub mod sipp;
pub mod sipvicious;
pub mod skip;
pub mod ua;

pub use skip::skip;

/// A valid `[auth] secret` (256 bits, 64 hex digits) named by `label`: the same label gives
/// the same secret, so tests read which nodes share one.
pub fn secret(label: &str) -> String {
    let bytes: Vec<u8> = label
        .bytes()
        .chain(std::iter::repeat(b'.'))
        .take(32)
        .collect();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// What a command wrote, stdout then stderr.
pub fn said(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run `cmd` to its end: whether it exited 0, and what it said (stdout, then stderr).
pub fn run_said(cmd: &mut std::process::Command) -> (bool, String) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    (out.status.success(), said(&out))
}

/// One scenario at a time in a test binary: SIPp and SIPVicious runs are timing-sensitive on
/// a small shared machine, and most tests count packets exactly.
pub fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());
    TURN.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether the tests that load BPF programs and make namespaces can run; when they cannot,
/// [`skip`] says so (and fails under `CI=true`).
pub fn require_root(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        true
    } else {
        skip(
            test,
            "needs root (BPF and network namespaces); run `sudo cargo xtask test`",
        );
        false
    }
}
