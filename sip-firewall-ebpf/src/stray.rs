//! Stray replies: the kernel twin of `sip_firewall_common::branch::top_branch` (a test runs
//! both on the same responses and requires the same key).
//!
//! The response's first bytes are in the scan buffer (`scan.rs`), scanned there by
//! `bpf_loop` callbacks: the verifier checks a callback once, whatever the number of
//! iterations, where an open-coded loop over 1500 bytes would be unrolled into more pending
//! states than it accepts.
//!
//! Three scans, each a callback that looks at many bytes per call (a call per byte cost
//! more than the byte's test: 948 ns for a 200 OK; 8 bytes per call, 443 ns): find the first
//! `Via`/`v` header line and find `;branch=` in its first value, eight bytes per test with
//! `sip_firewall_common::swar` and up to 64 per call; fold the value into the hash a word
//! at a time as its end is found, up to 64 bytes per call.

use core::ffi::c_void;

use sip_firewall_common::{
    branch::{
        MAX_BRANCH_LEN, MAX_SWS, MAX_VIA_PARAMS, MAX_VIA_SCAN, TopBranch, ends_branch_mask, finish,
        is_sws,
    },
    fnv::{OFFSET_64, step_64},
    swar::{WORD, eq_mask, first_flag, from_byte},
};

use crate::{
    loops::{FOUND, LOOKING, NEXT, STOP, run},
    maps::{SCAN_POS, launder},
    scan::Buf,
};

/// State shared between `top_branch` and its callbacks (on the program's stack).
#[repr(C)]
struct Scan {
    /// Bytes copied into the buffer.
    end: u64,
    /// Where a scan found what it looked for (where it goes on is in `SCAN_POS`).
    pos: u64,
    /// Where the current scan must stop undecided (its bound, at most `end`: `Beyond`).
    limit: u64,
    /// `LOOKING`, `FOUND` (at `pos`), or `MISSING` (decided `Missing`).
    outcome: u64,
    hash: u64,
}

/// `Scan::outcome` past `LOOKING` and `FOUND`.
const MISSING: u64 = 2;

impl Scan {
    /// What the scan looked for is at `pos`: it stops there.
    #[inline(always)]
    fn found(&mut self, pos: u64) -> i64 {
        self.pos = pos;
        self.outcome = FOUND;
        STOP
    }
}

#[inline(always)]
fn skip_sws(b: Buf, mut i: u64, end: u64) -> u64 {
    for _ in 0..MAX_SWS {
        match b.at(i, end) {
            Some(b) if is_sws(b) => i += 1,
            _ => break,
        }
    }
    i
}

#[inline(always)]
fn lower(b: u8) -> u8 {
    b | 0x20
}

/// A header line at `i` named `Via` or `v` (any case, SWS before `:`): the index after `:`.
#[inline(always)]
fn via_value_at(b: Buf, i: u64, end: u64) -> Option<u64> {
    if lower(b.at(i, end)?) != b'v' {
        return None;
    }
    let mut k = i + 1;
    if b.at(k, end).map(lower) == Some(b'i') && b.at(k + 1, end).map(lower) == Some(b'a') {
        k += 2;
    }
    k = skip_sws(b, k, end);
    if b.at(k, end)? == b':' {
        Some(k + 1)
    } else {
        None
    }
}

/// After `;` at `i`: SWS `branch` SWS `=` SWS, the index of the value.
#[inline(always)]
fn branch_value_at(b: Buf, i: u64, end: u64) -> Option<u64> {
    let mut k = skip_sws(b, i, end);
    // The six letters in one comparison, each with its case bit set (as `lower` does).
    const NAME: u64 = u64::from_le_bytes(*b"branch\0\0");
    const SIX: u64 = 0xffff_ffff_ffff;
    if k + 6 > end || (b.bytes8(k) | 0x2020_2020_2020) & SIX != NAME {
        return None;
    }
    k = skip_sws(b, k + 6, end);
    if b.at(k, end)? != b'=' {
        return None;
    }
    Some(skip_sws(b, k + 1, end))
}

/// Words each call of scans 1 and 2 looks at (64 bytes: a header line, or the part of a
/// Via value before its branch, usually ends within one call).
const SCAN_WORDS: u64 = 8;

/// From the position in `SCAN_POS`, up to [`SCAN_WORDS`] words, bounded by `s.limit`: the
/// first byte flagged by `mask`, or `None` (the position where the next call goes on is
/// then in `SCAN_POS`, or the bound is reached: `s.outcome` stays `LOOKING`).
#[inline(always)]
fn next_flagged(buf: Buf, at: *mut u64, s: &Scan, mask: impl Fn(u64) -> u64) -> Option<u64> {
    let pos = unsafe { *at };
    let mut w = pos / WORD;
    // Bytes before the start in its word are not looked at.
    let mut flags = mask(buf.word(w)) & from_byte(pos);
    for _ in 0..SCAN_WORDS {
        if flags != 0 || w * WORD >= s.limit {
            break;
        }
        w += 1;
        flags = mask(buf.word(w));
    }
    if flags == 0 {
        unsafe { *at = w * WORD };
        return None;
    }
    Some(w * WORD + first_flag(flags))
}

/// The first steps of a call of scans 1 and 2: the scan, the buffer, where the scan goes
/// on (in `SCAN_POS`), and from there the next byte `mask` flags within the bound. Else
/// what the call returns at once: `NEXT` when its words held nothing flagged, `STOP` at the
/// bound.
#[inline(always)]
fn next_stop<'s>(
    ctx: *mut c_void,
    mask: impl Fn(u64) -> u64,
) -> Result<(&'s mut Scan, Buf, *mut u64, u64), i64> {
    let s = unsafe { &mut *(ctx as *mut Scan) };
    let buf = Buf::get().ok_or(STOP)?;
    let at = SCAN_POS.get_ptr_mut(0).ok_or(STOP)?;
    let Some(j) = next_flagged(buf, at, s, mask) else {
        return Err(if unsafe { *at } >= s.limit {
            STOP
        } else {
            NEXT
        });
    };
    if j >= s.limit {
        return Err(STOP);
    }
    Ok((s, buf, at, j))
}

/// Scan 1: a line feed followed by a Via header name. Each call finds the next line feed
/// (eight bytes per test) and checks the header name after it; the next call goes on after
/// it.
extern "C" fn find_via(_n: u64, ctx: *mut c_void) -> i64 {
    let (s, buf, at, lf) = match next_stop(ctx, |x| eq_mask(x, b'\n')) {
        Ok(found) => found,
        Err(ret) => return ret,
    };
    if let Some(v) = via_value_at(buf, lf + 1, s.end) {
        return s.found(v);
    }
    unsafe { *at = lf + 1 };
    NEXT
}

/// Scan 2, in the Via's value: `;branch=`, or the value's end. Each call finds the next `;`
/// or end of the value (eight bytes per test) and checks the parameter's name after a `;`.
extern "C" fn find_branch(_n: u64, ctx: *mut c_void) -> i64 {
    let stops = |x| eq_mask(x, b';') | eq_mask(x, b'\r') | eq_mask(x, b'\n') | eq_mask(x, b',');
    let (s, buf, at, j) = match next_stop(ctx, stops) {
        Ok(found) => found,
        Err(ret) => return ret,
    };
    if buf.at(j, s.end) != Some(b';') {
        // CR, LF or `,`: the first value ends without a branch.
        s.outcome = MISSING;
        return STOP;
    }
    if let Some(v) = branch_value_at(buf, j + 1, s.end) {
        return s.found(v);
    }
    unsafe { *at = j + 1 };
    NEXT
}

/// Words each call of scan 3 looks at (64 bytes: half of the longest branch hashed).
const HASH_WORDS: u64 = 8;

/// Scan 3, from the position in `SCAN_POS` in the branch value (which starts at `s.pos`):
/// the eight bytes there, the first of them that ends the value (eight per test), and the
/// value's bytes among them folded into the hash, up to [`HASH_WORDS`] words per call, until
/// the value's end.
extern "C" fn hash_branch(_n: u64, ctx: *mut c_void) -> i64 {
    let s = unsafe { &mut *(ctx as *mut Scan) };
    let Some(buf) = Buf::get() else {
        return STOP;
    };
    let Some(at) = SCAN_POS.get_ptr_mut(0) else {
        return STOP;
    };
    let mut k = unsafe { *at };
    let mut h = s.hash;
    for _ in 0..HASH_WORDS {
        // The value must end before the bound and what was copied: else undecided.
        if k >= s.limit || k >= s.end {
            return STOP;
        }
        // Bytes past what was copied are stale: an end found there is past the bound.
        let x = buf.bytes8(k);
        let flags = ends_branch_mask(x);
        if flags != 0 {
            let n = first_flag(flags);
            let j = k + n;
            if j >= s.limit || j >= s.end {
                return STOP;
            }
            if n != 0 {
                h = step_64(h, x & ((1u64 << (n * 8)) - 1));
            }
            s.hash = finish(h, j - s.pos);
            s.outcome = FOUND;
            return STOP;
        }
        h = step_64(h, x);
        k += WORD;
    }
    s.hash = h;
    unsafe { *at = k };
    NEXT
}

/// The topmost Via's branch of the response in the scan buffer, of which `copied` bytes are
/// there, within the first `bound` bytes.
#[inline(always)]
pub fn top_branch(copied: usize, bound: usize) -> TopBranch {
    let end = if copied < bound { copied } else { bound };
    let Some(at) = SCAN_POS.get_ptr_mut(0) else {
        return TopBranch::Beyond;
    };
    unsafe { *at = 0 };
    let mut s = Scan {
        end: end as u64,
        pos: 0,
        limit: end as u64,
        outcome: LOOKING,
        hash: OFFSET_64,
    };
    // Every call but the last moves at least one byte: the bound is never the limit.
    run(MAX_VIA_SCAN, find_via, &mut s);
    if s.outcome != FOUND {
        return TopBranch::Beyond;
    }
    // One unknown position, not one state per way of spelling the header name.
    let Some(pos) = launder(s.pos as usize) else {
        return TopBranch::Beyond;
    };
    unsafe { *at = pos as u64 };
    s.limit = pos as u64 + MAX_VIA_PARAMS as u64;
    if s.limit > s.end {
        s.limit = s.end;
    }
    s.outcome = LOOKING;
    run(MAX_VIA_PARAMS, find_branch, &mut s);
    match s.outcome {
        FOUND => {}
        MISSING => return TopBranch::Missing,
        _ => return TopBranch::Beyond,
    }
    let Some(pos) = launder(s.pos as usize) else {
        return TopBranch::Beyond;
    };
    unsafe { *at = pos as u64 };
    s.limit = pos as u64 + MAX_BRANCH_LEN as u64;
    s.outcome = LOOKING;
    run(
        MAX_BRANCH_LEN / (HASH_WORDS * WORD) as usize + 1,
        hash_branch,
        &mut s,
    );
    if s.outcome == FOUND {
        TopBranch::Key(s.hash)
    } else {
        TopBranch::Beyond
    }
}
