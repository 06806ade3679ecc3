//! Helpers shared by the integration tests: a root check that skips loudly, crafted frames
//! for `BPF_PROG_TEST_RUN`, and throw-away network namespaces joined by a veth pair.

pub mod daemon;
pub mod frames;
pub mod netns;
pub mod sipclient;
pub mod skip;

pub use skip::skip;

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
