//! The payload check of the SIP ports, the in-kernel twin of
//! `sip_firewall_common::payload::classify` (a test runs both on the same payloads).
//!
//! It reads the payload from the scan buffer (`scan.rs`). The method and the rest of the
//! request line (up to 1024 bytes) are each a `bpf_loop` callback, which the verifier checks
//! once instead of once per iteration; each call looks at many bytes (the method 16, the
//! line 64, eight at a time with the tests of `sip_firewall_common::swar`), as a call costs
//! more than the tests.

use core::ffi::c_void;

use sip_firewall_common::{
    payload::{
        MAX_FIRST_LINE, MAX_METHOD_LEN, PayloadClass, REQUEST_SUFFIX, STATUS_PREFIX,
        STUN_BINDING_REQUEST, STUN_HEADER_LEN, STUN_MAGIC, STUN_MAX_ATTRIBUTES,
        eq8_ignore_case_word, is_token_char,
    },
    swar::{WORD, below, eq_mask, first_flag, lt_mask, upper_mask},
};

use crate::{
    loops::{FOUND, LOOKING, NEXT, STOP, run},
    maps::launder,
    scan::Buf,
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
    if len >= STUN_HEADER_LEN
        && len <= STUN_HEADER_LEN + STUN_MAX_ATTRIBUTES
        && is_stun_binding_request(b, len, end)
    {
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

/// A STUN Binding request (RFC 5389 6) of `len` bytes, `20 <= len <= 20 + 64` (the caller
/// bounds it): its type, the magic cookie, and an attribute length that is a multiple of 4
/// and exactly the rest of the payload. Every byte read is bounds-checked (`Buf::at`).
#[inline(always)]
fn is_stun_binding_request(b: Buf, len: usize, end: u64) -> bool {
    let (Some(hi), Some(lo)) = (b.at(2, end), b.at(3, end)) else {
        return false;
    };
    let attributes = ((hi as usize) << 8) | lo as usize;
    b.at(0, end) == Some(STUN_BINDING_REQUEST[0])
        && b.at(1, end) == Some(STUN_BINDING_REQUEST[1])
        && b.at(4, end) == Some(STUN_MAGIC[0])
        && b.at(5, end) == Some(STUN_MAGIC[1])
        && b.at(6, end) == Some(STUN_MAGIC[2])
        && b.at(7, end) == Some(STUN_MAGIC[3])
        && attributes & 3 == 0
        && attributes + STUN_HEADER_LEN == len
}

#[inline(always)]
fn is_status_line(b: Buf, end: u64) -> bool {
    let digit = |i: u64| b.at(i, end).is_some_and(|c| c.is_ascii_digit());
    // `SIP/2.0 ` in one comparison of the first word (all of it copied).
    end >= WORD
        && eq8_ignore_case_word(b.word(0), STATUS_PREFIX)
        && digit(8)
        && digit(9)
        && digit(10)
        && b.at(11, end) == Some(b' ')
}

/// The method of a request line when it is upper-case letters ending within the first two
/// words (every method of RFC 3261 and its extensions): the index of its SP, found with two
/// word tests instead of a scan byte by byte. `None`: not that simple, the scan decides
/// (upper-case letters are token characters: where this finds the SP, the scan finds it
/// too).
#[inline(always)]
fn upper_method_end(buf: Buf, end: u64) -> Option<u64> {
    let x0 = buf.word(0);
    let sp0 = eq_mask(x0, b' ');
    let n = if sp0 != 0 {
        let n = first_flag(sp0);
        if upper_mask(x0) & below(n) != below(n) {
            return None;
        }
        n
    } else {
        if upper_mask(x0) != below(WORD) {
            return None;
        }
        let x1 = buf.word(1);
        let sp1 = eq_mask(x1, b' ');
        if sp1 == 0 {
            return None;
        }
        let n = first_flag(sp1);
        if upper_mask(x1) & below(n) != below(n) {
            return None;
        }
        WORD + n
    };
    // At least one letter, and the SP among the bytes copied (so are the letters).
    if n == 0 || n >= end {
        return None;
    }
    Some(n)
}

/// Bytes of the method each `find_method_end` call looks at.
const METHOD_STRIDE: u64 = 16;
/// Words of the request line each `find_line_end` call looks at (64 bytes: most request
/// lines end within one call).
const LINE_WORDS: u64 = 8;

/// `Line::outcome` past `LOOKING` and `FOUND`: a byte that has no place there came first.
const BAD: u64 = 2;

/// A scan of the request line, for `find_method_end` and `find_line_end`. Built with
/// distinct field values: LLVM turns equal stores into a `memset` call, a BPF subprogram
/// that copies a byte per instruction.
#[repr(C)]
struct Line {
    end: u64,
    /// Where the scan stopped on what it looked for (the method's SP, the line's CR).
    at: u64,
    outcome: u64,
}

/// Bytes `16n..16n + 16`: the SP that ends the method (its index in `at`), or a byte no
/// token has.
extern "C" fn find_method_end(n: u64, ctx: *mut c_void) -> i64 {
    let l = unsafe { &mut *(ctx as *mut Line) };
    let Some(buf) = Buf::get() else {
        return STOP;
    };
    let first = n * METHOD_STRIDE;
    let w = buf.window(first);
    for k in 0..METHOD_STRIDE {
        let j = first + k;
        if j > MAX_METHOD_LEN as u64 || j >= l.end {
            return STOP;
        }
        let b = w.byte(k);
        if b == b' ' {
            l.at = j;
            l.outcome = FOUND;
            return STOP;
        }
        if !is_token_char(b) {
            l.outcome = BAD;
            return STOP;
        }
    }
    NEXT
}

/// Words `8n..8n + 8` of the line: the first byte that is a CR or no line byte (a control
/// character). The method and its SP before it are line bytes, so the scan starts at 0 and
/// finds the same byte as one that starts after the SP.
extern "C" fn find_line_end(n: u64, ctx: *mut c_void) -> i64 {
    let l = unsafe { &mut *(ctx as *mut Line) };
    let Some(buf) = Buf::get() else {
        return STOP;
    };
    let bound = if l.end < MAX_FIRST_LINE as u64 {
        l.end
    } else {
        MAX_FIRST_LINE as u64
    };
    let mut w = n * LINE_WORDS;
    let mut flags = 0;
    for _ in 0..LINE_WORDS {
        if w * WORD >= bound {
            return STOP;
        }
        let x = buf.word(w);
        // CR is below 0x20: one test finds it and every other control character.
        flags = lt_mask(x, 0x20) | eq_mask(x, 0x7f);
        if flags != 0 {
            break;
        }
        w += 1;
    }
    if flags == 0 {
        return NEXT;
    }
    let j = w * WORD + first_flag(flags);
    // Past the bound (a stale byte of the buffer, or the line is too long): no CR within it.
    if j < bound && buf.at(j, l.end) == Some(b'\r') {
        l.at = j;
        l.outcome = FOUND;
    } else {
        l.outcome = BAD;
    }
    STOP
}

#[inline(always)]
fn is_request_line(buf: Buf, end: u64) -> bool {
    // The method: 1..=MAX_METHOD_LEN token characters, then SP.
    let method_end = match upper_method_end(buf, end) {
        Some(sp) => sp,
        None => {
            let mut method = Line {
                end,
                at: u64::MAX,
                outcome: LOOKING,
            };
            run(
                MAX_METHOD_LEN / METHOD_STRIDE as usize + 1,
                find_method_end,
                &mut method,
            );
            if method.outcome != FOUND || method.at == 0 {
                return false;
            }
            method.at
        }
    };
    let Some(sp) = launder(method_end as usize) else {
        return false;
    };
    let sp = sp as u64;
    // The rest of the line up to CR: no control characters, found within the bound.
    let mut line = Line {
        end,
        at: u64::MAX,
        outcome: LOOKING,
    };
    run(
        MAX_FIRST_LINE / (LINE_WORDS * WORD) as usize + 1,
        find_line_end,
        &mut line,
    );
    if line.outcome != FOUND {
        return false;
    }
    let cr = line.at;
    // At least one byte of Request-URI between the two SPs, then ` SIP/2.0` before the CR.
    let suffix = REQUEST_SUFFIX.len() as u64;
    if cr < sp + 2 + suffix {
        return false;
    }
    // The eight bytes before the CR, which was found among the bytes copied.
    eq8_ignore_case_word(buf.bytes8(cr - suffix), REQUEST_SUFFIX)
}
