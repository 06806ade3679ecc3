//! The payload bytes the SIP checks read, copied (`bpf_xdp_load_bytes`) into a per-CPU
//! buffer, read at masked positions (`masked.rs`).

use core::ffi::c_void;

use aya_ebpf::{helpers::bpf_xdp_load_bytes, macros::map, maps::PerCpuArray, programs::XdpContext};
use sip_firewall_common::{branch::MAX_VIA_SCAN, swar::WORD};

use crate::masked::Masked;

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
pub type Buf = Masked<SCAN_BYTES, { STRIDE as usize }>;

impl Buf {
    #[inline(always)]
    pub fn get() -> Option<Buf> {
        SCAN_BUFFER.get_ptr(0).map(|p| Masked(p as *const u8))
    }

    /// Byte `i`, when `i < end` (what was copied, or a tighter bound).
    #[inline(always)]
    pub fn at(self, i: u64, end: u64) -> Option<u8> {
        if i >= end {
            return None;
        }
        Some(self.byte(i))
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
}
