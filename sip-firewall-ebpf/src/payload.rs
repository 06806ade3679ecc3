//! The payload check of the SIP ports, the in-kernel twin of
//! `sip_firewall_common::payload::classify` (a test runs both on the same payloads).
//!
//! It reads the payload from the scan buffer (`scan.rs`). The method is a short open-coded
//! loop; the rest of the request line, up to 1024 bytes, is a `bpf_loop` callback, which the
//! verifier checks once instead of once per iteration.

use core::ffi::c_void;

use sip_firewall_common::payload::{
    MAX_FIRST_LINE, MAX_METHOD_LEN, PayloadClass, REQUEST_SUFFIX, STATUS_PREFIX, STUN_HEADER_LEN,
    STUN_MAGIC, eq_ignore_case, is_line_byte, is_token_char,
};

use crate::{
    loops::{NEXT, STOP, launder, run},
    scan::{Buf, STRIDE},
};

/// Classify the UDP payload of `len` bytes (from the UDP header) of which the first `copied`
/// are in the scan buffer.
#[inline(always)]
pub fn classify(copied: usize, len: usize) -> PayloadClass {
    let end = (if copied < len { copied } else { len }) as u64;
    let Some(b) = Buf::get() else {
        return PayloadClass::Malformed;
    };
    if (len == 2 || len == 4) && is_keepalive(b, len, end) {
        return PayloadClass::KeepAlive;
    }
    if len >= STUN_HEADER_LEN && is_stun(b, end) {
        return PayloadClass::Stun;
    }
    if len >= 12 && is_status_line(b, end) {
        return PayloadClass::Response;
    }
    if is_request_line(b, end) {
        return PayloadClass::Request;
    }
    PayloadClass::Malformed
}

#[inline(always)]
fn is_keepalive(b: Buf, len: usize, end: u64) -> bool {
    let crlf = |i: u64| b.at(i, end) == Some(b'\r') && b.at(i + 1, end) == Some(b'\n');
    crlf(0) && (len == 2 || crlf(2))
}

#[inline(always)]
fn is_stun(b: Buf, end: u64) -> bool {
    let Some(b0) = b.at(0, end) else {
        return false;
    };
    b0 & 0xC0 == 0
        && b.at(4, end) == Some(STUN_MAGIC[0])
        && b.at(5, end) == Some(STUN_MAGIC[1])
        && b.at(6, end) == Some(STUN_MAGIC[2])
        && b.at(7, end) == Some(STUN_MAGIC[3])
}

/// The 8 bytes at `i` equal `want`, ignoring ASCII case.
#[inline(always)]
fn eq8_ignore_case(b: Buf, i: u64, end: u64, want: &[u8; 8]) -> bool {
    let mut k = 0u64;
    for &w in want {
        match b.at(i + k, end) {
            Some(g) if eq_ignore_case(g, w) => {}
            _ => return false,
        }
        k += 1;
    }
    true
}

#[inline(always)]
fn is_status_line(b: Buf, end: u64) -> bool {
    let digit = |i: u64| b.at(i, end).is_some_and(|c| c.is_ascii_digit());
    eq8_ignore_case(b, 0, end, STATUS_PREFIX)
        && digit(8)
        && digit(9)
        && digit(10)
        && b.at(11, end) == Some(b' ')
}

/// A scan of the request line, for `find_method_end` and `find_cr`.
#[repr(C)]
struct Line {
    end: u64,
    start: u64,
    /// Where the scan stopped on what it looked for (the method's SP, the line's CR).
    cr: u64,
    /// 1: found; 2: a byte that has no place there came first.
    outcome: u64,
}

/// At `start + STRIDE * n` and the bytes after: the CR that ends the line, or a byte that
/// has no place in it.
extern "C" fn find_cr(n: u64, ctx: *mut c_void) -> i64 {
    let l = unsafe { &mut *(ctx as *mut Line) };
    let Some(buf) = Buf::get() else {
        return STOP;
    };
    let first = l.start + n * STRIDE;
    for k in 0..STRIDE {
        let j = first + k;
        if j >= MAX_FIRST_LINE as u64 {
            return STOP;
        }
        let Some(b) = buf.at(j, l.end) else {
            return STOP;
        };
        if b == b'\r' {
            l.cr = j;
            l.outcome = 1;
            return STOP;
        }
        if !is_line_byte(b) {
            l.outcome = 2;
            return STOP;
        }
    }
    NEXT
}

#[inline(always)]
fn is_request_line(buf: Buf, end: u64) -> bool {
    // The method: 1..=MAX_METHOD_LEN token characters, then SP.
    let mut method = Line {
        end,
        start: 0,
        cr: 0,
        outcome: 0,
    };
    run(MAX_METHOD_LEN + 1, find_method_end, &mut method);
    if method.outcome != 1 || method.cr == 0 {
        return false;
    }
    let Some(sp) = launder(method.cr as usize) else {
        return false;
    };
    let sp = sp as u64;
    // The rest of the line up to CR: no control characters, found within the bound.
    let mut line = Line {
        end,
        start: sp + 1,
        cr: 0,
        outcome: 0,
    };
    run(MAX_FIRST_LINE / STRIDE as usize + 1, find_cr, &mut line);
    if line.outcome != 1 {
        return false;
    }
    let cr = line.cr;
    // At least one byte of Request-URI between the two SPs, then ` SIP/2.0` before the CR.
    let suffix = REQUEST_SUFFIX.len() as u64;
    if cr < sp + 2 + suffix {
        return false;
    }
    eq8_ignore_case(buf, cr - suffix, end, REQUEST_SUFFIX)
}

/// At `n`: the SP that ends the method (its index in `cr`), or a byte no token has.
extern "C" fn find_method_end(n: u64, ctx: *mut c_void) -> i64 {
    let l = unsafe { &mut *(ctx as *mut Line) };
    let Some(buf) = Buf::get() else {
        return STOP;
    };
    let Some(b) = buf.at(n, l.end) else {
        return STOP;
    };
    if b == b' ' {
        l.cr = n;
        l.outcome = 1;
        return STOP;
    }
    if !is_token_char(b) {
        l.outcome = 2;
        return STOP;
    }
    NEXT
}
