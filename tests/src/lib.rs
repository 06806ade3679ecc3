//! The one test-support library of the workspace, used by `tests/tests/`, by
//! `sip-firewall/tests/` (a dev-dependency) and by the benchmarks: a root check that skips
//! loudly (`skip`), the daemon started in a namespace or on loopback and its CLI (`daemon`),
//! throw-away network namespaces joined by a veth pair (`netns`), a `redis-server` and the
//! nodes of a cluster (`cluster`), SIPp (`sipp`), scrapes of
//! `/metrics` (`metrics`), free loopback ports (`ports`), crafted frames for
//! `BPF_PROG_TEST_RUN` (`frames`) and a SIP client (`sipclient`).

pub mod cluster;
pub mod daemon;
pub mod frames;
pub mod metrics;
pub mod netns;
pub mod ports;
pub mod sipclient;
pub mod sipp;
pub mod skip;

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
