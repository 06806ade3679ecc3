//! `cargo xtask bench shards`: the proxy's calls/s with `[proxy] shards = 1` and 2, two
//! threads feeding it calls through its `Handler` with no sockets (sip-firewall's
//! `shards_bench` example; it prints its own figures and their ratio).

/// Build and run the benchmark in release mode.
pub fn run() -> anyhow::Result<()> {
    eprintln!("xtask: shards benchmark: 2 threads of calls into the proxy, shards = 1 and 2");
    crate::release_example("shards_bench")
}
