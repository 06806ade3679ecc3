//! Helper programs for `cargo xtask bench xdp`, never attached by the daemon.
//!
//! `bench_redirect` feeds a veth the way a NIC feeds its driver: run with
//! `BPF_PROG_TEST_RUN` live frames, it redirects each frame as an `xdp_frame` to
//! `TARGET_IFINDEX`, whose peer then runs its own XDP program on it in native mode.
//! `bench_pass` is the do-nothing program the nftables and socket runs put on the receiving
//! veth, so that they receive the same `xdp_frame`s (a veth takes them only with a program);
//! `bench_drop` drops everything, the baseline for what injection alone costs.
#![no_std]
#![no_main]

mod program;

use aya_ebpf::{bindings::xdp_action, helpers::bpf_redirect, macros::xdp, programs::XdpContext};

/// Set by the loader (`EbpfLoader::set_global`).
#[unsafe(no_mangle)]
static TARGET_IFINDEX: u32 = 0;

#[xdp]
pub fn bench_redirect(_ctx: XdpContext) -> u32 {
    let ifindex = unsafe { core::ptr::read_volatile(&TARGET_IFINDEX) };
    unsafe { bpf_redirect(ifindex, 0) as u32 }
}

#[xdp]
pub fn bench_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

/// The cheapest possible drop: the baseline that measures what injection itself costs.
#[xdp]
pub fn bench_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}
