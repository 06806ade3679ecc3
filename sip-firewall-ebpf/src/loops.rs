//! The `bpf_loop` plumbing of the payload scans (`payload.rs`, `stray.rs`, and the steering
//! program's `reuseport.rs`): a callback is checked once by the verifier whatever the number
//! of iterations, where an open-coded loop is unrolled into states per iteration.

use core::ffi::c_void;

use aya_ebpf::helpers::bpf_loop;

/// bpf_loop: 0 goes on, 1 stops.
pub const NEXT: i64 = 0;
pub const STOP: i64 = 1;

/// A scan's `outcome` while its callback is still looking, and once it found what it looks
/// for (a scan numbers its other outcomes from 2).
pub const LOOKING: u64 = 0;
pub const FOUND: u64 = 1;

/// Run `callback` up to `times` times over `scan`: a state on the stack (what `bpf_loop`
/// hands on), or null for callbacks that look their state up in a map themselves.
#[inline(always)]
pub fn run<T>(times: usize, callback: extern "C" fn(u64, *mut c_void) -> i64, scan: *mut T) {
    unsafe {
        bpf_loop(
            times as u32,
            callback as *mut c_void,
            scan as *mut c_void,
            0,
        )
    };
}
