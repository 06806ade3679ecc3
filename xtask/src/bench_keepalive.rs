//! `cargo xtask bench keepalive`: the CPU the proxy spends on NAT keep-alives of 100,000
//! registered contacts in one 30 s interval (sip-firewall's `keepalive_bench` example: the
//! proxy core on a fake clock, measured with getrusage; it prints its own figures).

/// Build and run the benchmark in release mode.
pub fn run() -> anyhow::Result<()> {
    eprintln!("xtask: keepalive benchmark: 100,000 contacts behind NAT, pinged every 30 s");
    crate::release_example("keepalive_bench")
}
