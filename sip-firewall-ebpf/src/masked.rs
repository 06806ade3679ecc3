//! Reads of a payload copied into map memory: a buffer of `BYTES` bytes (a power of two)
//! followed by `STRIDE` more. Each position is masked to the buffer's size, so that a read
//! is in bounds for the verifier whatever it knows of the position, where reading the packet
//! at a variable offset needs a bounds check per byte that LLVM rewrites into forms the
//! verifier cannot use. The XDP program's scan buffer (`scan.rs`) and the steering
//! program's (`reuseport.rs`) are read through it.

use core::hint::black_box;

use sip_firewall_common::swar::WORD;

/// A copied payload: `BYTES` bytes (a power of two) then `STRIDE` (a power of two) more,
/// 8-byte aligned (in a map value).
#[derive(Clone, Copy)]
pub struct Masked<const BYTES: usize, const STRIDE: usize>(pub *const u8);

impl<const BYTES: usize, const STRIDE: usize> Masked<BYTES, STRIDE> {
    /// Byte `i` of the buffer, copied or stale: the caller bounds `i`. A caller whose `i`
    /// LLVM could prove bounded elsewhere, and then drop the mask the verifier needs, passes
    /// it through `black_box`.
    #[inline(always)]
    pub fn byte(self, i: u64) -> u8 {
        unsafe { *self.0.add(i as usize & (BYTES - 1)) }
    }

    /// The aligned word `w` (bytes `8w..8w + 8`), masked into the buffer: one load where
    /// eight byte loads would be needed (LLVM splits unaligned loads on BPF). Bytes at or
    /// after what was copied are stale: the caller bounds every position it derives.
    #[inline(always)]
    pub fn word(self, w: u64) -> u64 {
        let m = black_box(w) as usize & (BYTES / WORD as usize - 1);
        // `m` words fit in the buffer, which is 8-byte aligned.
        unsafe { *(self.0 as *const u64).add(m) }
    }

    /// The `STRIDE` bytes from `i`, for a stride's reads at constant offsets. The caller
    /// checks `i + k` against what was copied before it uses byte `k`.
    #[inline(always)]
    pub fn window(self, i: u64) -> Window<STRIDE> {
        // Opaque to LLVM, so that it cannot drop the mask on a bound it proved elsewhere and
        // hand the verifier a pointer offset it cannot bound.
        let m = black_box(i) as usize & (BYTES - 1);
        Window(unsafe { self.0.add(m) })
    }
}

/// `STRIDE` bytes of a buffer from a masked position (see [`Masked::window`]).
#[derive(Clone, Copy)]
pub struct Window<const STRIDE: usize>(*const u8);

impl<const STRIDE: usize> Window<STRIDE> {
    /// Byte `k < STRIDE` of the window: always inside the buffer.
    #[inline(always)]
    pub fn byte(self, k: u64) -> u8 {
        unsafe { *self.0.add(k as usize & (STRIDE - 1)) }
    }
}
