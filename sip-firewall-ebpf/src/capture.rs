//! The capture tap: copies of packets, with their verdict, to each running
//! `sip-firewall capture` whose filter takes them (`sip_firewall_common::capture`).
//!
//! With no capture running the tap costs one array lookup and one test of its word. While
//! one runs, the program hands the packet and its verdict to a second program,
//! `sip_firewall_capture`, by a tail call: that program is verified once on its own, so the
//! verdict paths of the first are not walked again through the filters. A capture's filter
//! (verdicts, source prefix, port, sampling) is applied there, in the kernel; the copy goes
//! through `bpf_perf_event_output` with the number of frame bytes in the upper
//! half of its flags, so the kernel copies them without a loop over the packet. A reader too
//! slow for its buffer loses copies (the kernel counts them for it), never this path's time.

use aya_ebpf::bindings::BPF_F_CURRENT_CPU;
use aya_ebpf::{
    helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns, bpf_perf_event_output},
    macros::{map, xdp},
    maps::{Array, PerCpuArray, PerfEventArray, ProgramArray},
    programs::XdpContext,
};
use sip_firewall_common::{
    capture::{CAPTURE_SLOTS, CaptureFilter, CaptureHeader},
    counters::Reason,
};

use crate::{
    action,
    packet::{be16_at, parse_ip},
};

#[map(name = "SIPFW_CAPTURE")]
pub static CAPTURE: Array<CaptureFilter> = Array::pinned(CAPTURE_SLOTS as u32, 0);

#[map(name = "SIPFW_CAPON")]
pub static CAPTURE_ON: Array<u32> = Array::pinned(1, 0);

/// Entry 0: `sip_firewall_capture`, set by the loader. Pinned: the pin keeps the entry when
/// the daemon that set it stops and leaves its program attached.
#[map(name = "SIPFW_CAPPROG")]
pub static CAPTURE_PROG: ProgramArray = ProgramArray::pinned(1, 0);

/// The verdict handed across the tail call (the same CPU runs both programs, unpreempted).
/// Pinned, like the program array: while a restarted daemon replaces the program, the old
/// one tail-calls the new tap, and both must read the verdict from the same place.
#[map(name = "SIPFW_CAPWHY")]
static CAPTURE_REASON: PerCpuArray<u32> = PerCpuArray::pinned(1, 0);

/// Per slot, per CPU: copies lost because the slot's buffer was full (a reader too slow).
#[map(name = "SIPFW_CAPLOST")]
pub static CAPTURE_LOST: PerCpuArray<u64> = PerCpuArray::pinned(CAPTURE_SLOTS as u32, 0);

#[map(name = "SIPFW_CAP0")]
pub static CAP0: PerfEventArray<CaptureHeader> = PerfEventArray::pinned(0);
#[map(name = "SIPFW_CAP1")]
pub static CAP1: PerfEventArray<CaptureHeader> = PerfEventArray::pinned(0);
#[map(name = "SIPFW_CAP2")]
pub static CAP2: PerfEventArray<CaptureHeader> = PerfEventArray::pinned(0);
#[map(name = "SIPFW_CAP3")]
pub static CAP3: PerfEventArray<CaptureHeader> = PerfEventArray::pinned(0);

/// What the filters look at of a packet, read once for every slot.
struct Seen {
    reason: Reason,
    len: u32,
    /// Source as key words; `None` for a packet that is not IP.
    src: Option<[u64; 2]>,
    /// Source and destination ports of UDP and TCP; (0, 0) otherwise.
    ports: (u16, u16),
}

/// Offer a packet with its verdict to the running captures: with none running, the test of
/// one word is the whole cost and this returns. Else it does not return: the tail call's
/// program copies the packet where filters take it and gives the same verdict.
#[inline(always)]
pub fn offer(ctx: &XdpContext, reason: Reason) {
    let Some(on) = CAPTURE_ON.get(0) else {
        return;
    };
    if *on == 0 {
        return;
    }
    if let Some(r) = CAPTURE_REASON.get_ptr_mut(0) {
        // Per-CPU slot: no other writer.
        unsafe { *r = reason as u32 };
        // On failure (no program in the slot) the caller goes on with the same verdict.
        unsafe { CAPTURE_PROG.tail_call(ctx, 0) };
    }
}

/// The tail of the XDP program while a capture runs: the packet, with the verdict the
/// program gave it, to each capture whose filter takes it; then that verdict.
#[xdp]
pub fn sip_firewall_capture(ctx: XdpContext) -> u32 {
    let reason = CAPTURE_REASON
        .get(0)
        .and_then(|r| Reason::from_index(*r))
        .unwrap_or(Reason::Passed);
    let on = CAPTURE_ON.get(0).map_or(0, |on| *on);
    let len = (ctx.data_end() - ctx.data()) as u32;
    let ip = parse_ip(&ctx);
    let ports = match &ip {
        Some(ip) if ip.has_ports => (
            be16_at(&ctx, ip.l4).unwrap_or(0),
            be16_at(&ctx, ip.l4 + 2).unwrap_or(0),
        ),
        _ => (0, 0),
    };
    let seen = Seen {
        reason,
        len,
        src: ip.map(|ip| ip.src),
        ports,
    };
    // One map per slot: the helper takes the map itself, not an index.
    if on & 1 != 0 {
        slot(&ctx, &seen, 0, &CAP0);
    }
    if on & 2 != 0 {
        slot(&ctx, &seen, 1, &CAP1);
    }
    if on & 4 != 0 {
        slot(&ctx, &seen, 2, &CAP2);
    }
    if on & 8 != 0 {
        slot(&ctx, &seen, 3, &CAP3);
    }
    action(reason)
}

/// Copy the packet to the capture of slot `i` if its filter takes it.
#[inline(always)]
fn slot(ctx: &XdpContext, seen: &Seen, i: u32, ring: &PerfEventArray<CaptureHeader>) {
    let Some(f) = CAPTURE.get(i) else {
        return;
    };
    if !f.wants(seen.reason) {
        return;
    }
    if !f.any_source() {
        match &seen.src {
            Some(src) if f.takes_source(src) => {}
            _ => return,
        }
    }
    if f.port != 0 && seen.ports.0 != f.port && seen.ports.1 != f.port {
        return;
    }
    if f.sample > 1 && unsafe { bpf_get_prandom_u32() } % f.sample != 0 {
        return;
    }
    let caplen = f.caplen(seen.len);
    let header = CaptureHeader {
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        ifindex: unsafe { (*ctx.ctx).ingress_ifindex },
        reason: seen.reason as u32,
        len: seen.len,
        caplen,
    };
    // The upper 32 bits of the flags: frame bytes the kernel appends after the header
    // (BPF_F_CTXLEN_MASK); it refuses a length past the frame's end at run time. Called
    // directly rather than through `PerfEventArray::output`, which drops the result: a full
    // buffer loses this copy, and the loss is counted for the reader.
    let flags = (u64::from(caplen) << 32) | u64::from(BPF_F_CURRENT_CPU);
    let rc = unsafe {
        bpf_perf_event_output(
            ctx.ctx.cast(),
            core::ptr::from_ref(ring).cast_mut().cast(),
            flags,
            core::ptr::from_ref(&header).cast_mut().cast(),
            core::mem::size_of::<CaptureHeader>() as u64,
        )
    };
    if rc != 0
        && let Some(lost) = CAPTURE_LOST.get_ptr_mut(i)
    {
        // Per-CPU slot: no other writer.
        unsafe { *lost += 1 };
    }
}
