//! The payload bytes the SIP checks read, copied (`bpf_xdp_load_bytes`) into a per-CPU
//! buffer: an index masked to the buffer's size is always in bounds for the verifier, where
//! reading the packet at a variable offset needs a bounds check per byte that LLVM rewrites
//! into forms the verifier cannot use.

use core::ffi::c_void;

use aya_ebpf::{helpers::bpf_xdp_load_bytes, macros::map, maps::PerCpuArray, programs::XdpContext};
use sip_firewall_common::{branch::MAX_VIA_SCAN, swar::WORD};

/// Bytes each `bpf_loop` callback of the byte-wise scans (the method) may look at,
/// unrolled: a call costs more than many bytes' tests (on this machine a callback call was
/// ~20 ns), and the verifier checks a callback body once.
pub const STRIDE: u64 = 32;

/// Bytes the scans may look at (a power of two).
pub const SCAN_BYTES: usize = MAX_VIA_SCAN;

/// Size of the buffer: a stride read from any masked position stays inside it.
pub const BUF_BYTES: usize = SCAN_BYTES + STRIDE as usize;

/// Where a response's first bytes are copied for the stray-reply scan (see `stray.rs`).
#[map(name = "SIPFW_SCANBUF")]
pub static SCAN_BUFFER: PerCpuArray<[u8; BUF_BYTES]> = PerCpuArray::with_max_entries(1, 0);

/// Copy up to `want` bytes of the packet from `off` into the buffer; how many were copied
/// (fewer when the packet ends first).
#[inline(always)]
pub fn copy(xdp: &XdpContext, off: usize, want: usize) -> Option<usize> {
    let buf = SCAN_BUFFER.get_ptr_mut(0)?;
    let in_packet = (xdp.data_end() - xdp.data()).checked_sub(off)?;
    let mut n = if want < in_packet { want } else { in_packet };
    if n > SCAN_BYTES {
        n = SCAN_BYTES;
    }
    if n == 0 {
        return Some(0);
    }
    let rc = unsafe { bpf_xdp_load_bytes(xdp.ctx, off as u32, buf as *mut c_void, n as u32) };
    if rc != 0 {
        return None;
    }
    Some(n)
}

/// The buffer, looked up once by each function that reads it (a lookup per byte would
/// multiply the verifier's work).
#[derive(Clone, Copy)]
pub struct Buf(*const u8);

impl Buf {
    #[inline(always)]
    pub fn get() -> Option<Buf> {
        SCAN_BUFFER.get_ptr(0).map(|p| Buf(p as *const u8))
    }

    /// Byte `i`, when `i < end` (what was copied, or a tighter bound).
    #[inline(always)]
    pub fn at(self, i: u64, end: u64) -> Option<u8> {
        if i >= end {
            return None;
        }
        Some(unsafe { *self.0.add((i as usize) & (SCAN_BYTES - 1)) })
    }

    /// The aligned word `w` (bytes `8w..8w + 8`), masked into the buffer: one load where
    /// eight byte loads would be needed (LLVM splits unaligned loads on BPF). Bytes at or
    /// after what was copied are stale: the caller bounds every position it derives.
    #[inline(always)]
    pub fn word(self, w: u64) -> u64 {
        let m = core::hint::black_box(w) & (SCAN_BYTES as u64 / WORD - 1);
        // The buffer is a map value: 8-byte aligned, and `m` words fit in it.
        unsafe { *(self.0 as *const u64).add(m as usize) }
    }

    /// The eight bytes from `i` as a little-endian word, from the two aligned words they
    /// span (bytes past what was copied are stale: the caller bounds what it uses).
    #[inline(always)]
    pub fn bytes8(self, i: u64) -> u64 {
        let w = i / WORD;
        let shift = (i % WORD) * 8;
        let lo = self.word(w);
        let hi = self.word(w + 1);
        // `hi << (64 - shift)` in two steps: 0 when `shift` is 0 (a shift by 64 is not one).
        (lo >> shift) | ((hi << 1) << (63 - shift))
    }

    /// The [`STRIDE`] bytes from `i`, for a stride's reads at constant offsets. The caller
    /// checks `i + k` against what was copied before it uses byte `k`.
    #[inline(always)]
    pub fn window(self, i: u64) -> Window {
        // Opaque to LLVM, so that it cannot drop the mask on a bound it proved elsewhere and
        // hand the verifier a pointer offset it cannot bound.
        let m = core::hint::black_box(i) & (SCAN_BYTES as u64 - 1);
        Window(unsafe { self.0.add(m as usize) })
    }
}

/// [`STRIDE`] bytes of the buffer from a masked position (see [`Buf::window`]).
#[derive(Clone, Copy)]
pub struct Window(*const u8);

impl Window {
    /// Byte `k < STRIDE` of the window: always inside the buffer.
    #[inline(always)]
    pub fn byte(self, k: u64) -> u8 {
        unsafe { *self.0.add((k & (STRIDE - 1)) as usize) }
    }
}
