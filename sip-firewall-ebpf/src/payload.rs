//! The payload check of the SIP ports, the in-kernel twin of
//! `sip_firewall_common::payload::classify` (a test runs both on the same payloads).
//!
//! Verifier note: the two scans of a request line are bounded loops over packet bytes. The
//! position where the first one stops is passed to the second through a per-CPU scratch slot
//! (`launder`), so that the verifier sees one state instead of one per stopping position;
//! without it the second loop is verified 65 times over.

use aya_ebpf::programs::XdpContext;
use sip_firewall_common::payload::{
    MAX_FIRST_LINE, MAX_METHOD_LEN, PayloadClass, REQUEST_SUFFIX, STATUS_PREFIX, STUN_HEADER_LEN,
    STUN_MAGIC, eq_ignore_case, is_line_byte, is_token_char,
};

use crate::{
    maps::SCRATCH,
    packet::{byte_at, ptr_at},
};

/// Classify the UDP payload of `len` bytes (from the UDP header) starting at `off`.
#[inline(always)]
pub fn classify(ctx: &XdpContext, off: usize, len: usize) -> PayloadClass {
    if (len == 2 || len == 4) && is_keepalive(ctx, off, len) {
        return PayloadClass::KeepAlive;
    }
    if len >= STUN_HEADER_LEN && is_stun(ctx, off) {
        return PayloadClass::Stun;
    }
    if len >= 12 && is_status_line(ctx, off) {
        return PayloadClass::Response;
    }
    if is_request_line(ctx, off, len) {
        return PayloadClass::Request;
    }
    PayloadClass::Malformed
}

#[inline(always)]
fn is_keepalive(ctx: &XdpContext, off: usize, len: usize) -> bool {
    let crlf = |at: usize| byte_at(ctx, at) == Some(b'\r') && byte_at(ctx, at + 1) == Some(b'\n');
    crlf(off) && (len == 2 || crlf(off + 2))
}

#[inline(always)]
fn is_stun(ctx: &XdpContext, off: usize) -> bool {
    let Some(p) = ptr_at(ctx, off, 8) else {
        return false;
    };
    let head = unsafe { core::ptr::read_unaligned(p as *const [u8; 8]) };
    head[0] & 0xC0 == 0 && [head[4], head[5], head[6], head[7]] == STUN_MAGIC
}

/// The 8 bytes at `off` equal `want`, ignoring ASCII case.
#[inline(always)]
fn eq8_ignore_case(ctx: &XdpContext, off: usize, want: &[u8; 8]) -> bool {
    let Some(p) = ptr_at(ctx, off, 8) else {
        return false;
    };
    let got = unsafe { core::ptr::read_unaligned(p as *const [u8; 8]) };
    got.iter()
        .zip(want.iter())
        .all(|(&g, &w)| eq_ignore_case(g, w))
}

#[inline(always)]
fn is_status_line(ctx: &XdpContext, off: usize) -> bool {
    if !eq8_ignore_case(ctx, off, STATUS_PREFIX) {
        return false;
    }
    let Some(p) = ptr_at(ctx, off + 8, 4) else {
        return false;
    };
    let code = unsafe { core::ptr::read_unaligned(p as *const [u8; 4]) };
    code[0].is_ascii_digit()
        && code[1].is_ascii_digit()
        && code[2].is_ascii_digit()
        && code[3] == b' '
}

/// Hide `v` from the verifier's value tracking (see the module comment).
#[inline(always)]
fn launder(v: usize) -> Option<usize> {
    let slot = SCRATCH.get_ptr_mut(0)?;
    // Volatile: LLVM must not forward the stored value to the load.
    unsafe {
        core::ptr::write_volatile(slot, v as u64);
        Some(core::ptr::read_volatile(slot) as usize)
    }
}

#[inline(always)]
fn is_request_line(ctx: &XdpContext, off: usize, len: usize) -> bool {
    // The method: 1..=MAX_METHOD_LEN token characters, then SP.
    let mut sp = 0;
    let mut found = false;
    for i in 0..=MAX_METHOD_LEN {
        if i >= len {
            return false;
        }
        let Some(b) = byte_at(ctx, off + i) else {
            return false;
        };
        if b == b' ' {
            sp = i;
            found = true;
            break;
        }
        if !is_token_char(b) {
            return false;
        }
    }
    if !found || sp == 0 {
        return false;
    }
    let Some(sp) = launder(sp) else {
        return false;
    };
    if sp == 0 || sp > MAX_METHOD_LEN {
        return false;
    }
    // The rest of the line up to CR: no control characters, found within the bound.
    let mut j = sp + 1;
    let mut cr = 0;
    found = false;
    for _ in 0..MAX_FIRST_LINE {
        if j >= MAX_FIRST_LINE || j >= len {
            return false;
        }
        let Some(b) = byte_at(ctx, off + j) else {
            return false;
        };
        if b == b'\r' {
            cr = j;
            found = true;
            break;
        }
        if !is_line_byte(b) {
            return false;
        }
        j += 1;
    }
    // At least one byte of Request-URI between the two SPs, then ` SIP/2.0` before the CR.
    if !found || cr < 10 || cr >= MAX_FIRST_LINE || cr < sp + 2 + REQUEST_SUFFIX.len() {
        return false;
    }
    eq8_ignore_case(ctx, off + cr - REQUEST_SUFFIX.len(), REQUEST_SUFFIX)
}
