//! What every BPF object of this crate carries: a panic handler (the verifier proves no
//! panic path is reachable; `no_std` still needs one) and the license the kernel checks
//! before it allows GPL-only helpers.

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
