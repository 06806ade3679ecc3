//! `cargo xtask bench xdp`: the drop-cost benchmark (`tests/src/bin/bench_xdp/`), built in
//! release mode and run as root.

use crate::{cargo, run};

pub fn run_bench() -> anyhow::Result<()> {
    run(cargo().args([
        "run",
        "--release",
        "--package",
        "sip-firewall-tests",
        "--bin",
        "bench-xdp",
    ]))
}
