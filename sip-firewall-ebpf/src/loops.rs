//! The `bpf_loop` plumbing of the payload scans (`payload.rs`, `stray.rs`): a callback is
//! checked once by the verifier whatever the number of iterations, where an open-coded loop
//! is unrolled into states per iteration; `launder` hides a value from the verifier's value
//! tracking so the states of different values converge.

use core::ffi::c_void;

use aya_ebpf::helpers::bpf_loop;

use crate::maps::SCRATCH;

/// bpf_loop: 0 goes on, 1 stops.
pub const NEXT: i64 = 0;
pub const STOP: i64 = 1;

/// Run `callback` up to `times` times over `scan`.
#[inline(always)]
pub fn run<T>(times: usize, callback: extern "C" fn(u64, *mut c_void) -> i64, scan: &mut T) {
    unsafe {
        bpf_loop(
            times as u32,
            callback as *mut c_void,
            scan as *mut T as *mut c_void,
            0,
        )
    };
}

/// Hide `v` from the verifier's value tracking: distinct values reaching the same code make
/// distinct states, each verified again; a value reloaded from map memory is one unknown.
#[inline(always)]
pub fn launder(v: usize) -> Option<usize> {
    let slot = SCRATCH.get_ptr_mut(0)?;
    // Volatile: LLVM must not forward the stored value to the load.
    unsafe {
        core::ptr::write_volatile(slot, v as u64);
        Some(core::ptr::read_volatile(slot) as usize)
    }
}
