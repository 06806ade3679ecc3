//! What the daemon's own integration tests use of the test-support library
//! (`sip-firewall-tests`, `tests/src`): a free loopback port, the daemon binary started on
//! loopback with its own state and admin socket (no root: `--xdp-mode off`), a metrics
//! scrape, the loud skip.

#![allow(dead_code, unused_imports)]

pub use sip_firewall_tests::{
    daemon::Loopback as Daemon, metrics::scrape_opt, ports::free_port, skip,
};

/// Start this package's daemon binary on loopback with `config` (see
/// [`sip_firewall_tests::daemon::Loopback::start`]).
pub fn start(tag: &str, config: &str, rust_log: Option<&str>) -> Daemon {
    Daemon::start(
        env!("CARGO_BIN_EXE_sip-firewall"),
        tag,
        config,
        rust_log,
        &[],
    )
}
