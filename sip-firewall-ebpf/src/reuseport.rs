//! The `SO_REUSEPORT` program of the UDP listeners: each datagram goes to the worker socket
//! of its Call-ID's shard (`sip_firewall_common::shard`), so every message of one call,
//! whatever its source, lands on one socket. Attached by the daemon (`server/steer.rs`) to
//! each listen address's group, with that group's own socket array.
//!
//! An object of its own (a second binary of this crate): the daemon loads it once per
//! listen address, and loading the XDP object for it would create every XDP map again.
//!
//! Where the data begins: at the UDP header. For a UDP lookup the kernel runs the program
//! on the skb as `udp_rcv` sees it, `skb->data` at the transport header (a reuseport program
//! of the socket-filter type gets the header pulled first; an `sk_reuseport` one does not).
//! The program checks it: the header's length field must equal the context's `len` (UDP
//! header and payload), else it does not steer. Found by trying: with the check, the loopback
//! test (`server/steer.rs`) is steered; with the header read 8 bytes further on (as if the
//! data began at the payload) nothing is.
//! The datagram is copied with `bpf_skb_load_bytes` (which the kernel maps to
//! `sk_reuseport_load_bytes`), so a payload in paged fragments reads the same.
//!
//! The scan, over the first [`SCAN_BYTES`] bytes of the payload, in two `bpf_loop`s (the
//! verifier checks a callback once whatever the number of calls): find a line feed followed
//! by a `Call-ID` or `i` header name (eight bytes per test with `swar`), stopping at the
//! empty line that ends the headers; then fold the value into the FNV hash, after the white
//! space that follows the colon, up to its line's end or [`MAX_CALL_ID_HASHED`] bytes. The
//! hash kept is the one at the last byte that is not white space, which trims the value as
//! `call_id_hash` does. No Call-ID (a keep-alive, STUN, a header past the scanned bytes), a
//! folded value, or a socket that cannot be selected: the program selects nothing and the
//! kernel's own hash of the addresses picks the socket.
#![no_std]
#![no_main]

mod loops;
mod masked;
mod program;

use core::{ffi::c_void, hint::black_box, ptr::null_mut};

use aya_ebpf::{
    EbpfContext,
    bindings::sk_action::SK_PASS,
    helpers::bpf_skb_load_bytes,
    macros::{map, sk_reuseport},
    maps::{Array, PerCpuArray, ReusePortSockArray},
    programs::SkReuseportContext,
};
use sip_firewall_common::{
    fnv::{OFFSET_32, step_32},
    shard::{MAX_CALL_ID_HASHED, MAX_SHARDS, call_id_value_at, is_wsp},
    swar::{WORD, eq_mask, first_flag, from_byte},
};

use crate::{
    loops::{FOUND, LOOKING, NEXT, STOP, run},
    masked::Masked,
};

const IPPROTO_UDP: u32 = 17;
const UDP_HLEN: u64 = 8;

/// Payload bytes scanned for the Call-ID (a power of two: an index masked to it is in
/// bounds for the verifier). A Call-ID usually comes within a request's first kilobyte.
pub const SCAN_BYTES: usize = 2048;

/// The shortest datagram scanned: a SIP message shorter than
/// `ACK sip:a SIP/2.0\r\ni:x\r\n\r\n` (26 bytes) has no room for a Call-ID.
const MIN_MESSAGE: u64 = 24;

/// Bytes the hashing callback looks at per call, unrolled (a call costs more than a
/// byte's test).
const STRIDE: u64 = 32;

/// Words the header scan looks at per line (a header line usually ends within them).
const SCAN_WORDS: u64 = 8;

/// Header lines the header callback looks at per call (a call costs more than a line's
/// tests: the Call-ID after Via, From, To is usually found in the first call).
const LINES_PER_CALL: u64 = 4;

/// The state of one datagram's scan and its copied payload, in a per-CPU map value: the
/// callbacks read their position from map memory, an unknown to the verifier, so that the
/// states of successive calls converge at once.
#[repr(C)]
pub struct Scan {
    /// The next byte to look at.
    pos: u64,
    /// Bytes copied.
    end: u64,
    /// 1 when the payload goes on past what was copied.
    more: u64,
    /// `LOOKING`, or `FOUND` (the header at `pos`, then the value hashed into `kept`).
    outcome: u64,
    /// The value's hash over every byte folded in so far.
    hash: u64,
    /// The hash at the last byte that is not white space: the trimmed value's.
    kept: u64,
    /// Value bytes folded in (at most `MAX_CALL_ID_HASHED`).
    hashed: u64,
    /// The payload; a stride read from any masked position stays inside.
    buf: [u8; SCAN_BYTES + STRIDE as usize],
}

/// The group's sockets: index i is worker i's (filled by the daemon).
#[map(name = "STEER_SOCKETS")]
static SOCKETS: ReusePortSockArray = ReusePortSockArray::with_max_entries(MAX_SHARDS, 0);

/// Entry 0: the number of sockets in `SOCKETS` (0: do not steer).
#[map(name = "STEER_CONFIG")]
static CONFIG: Array<u32> = Array::with_max_entries(1, 0);

#[map(name = "STEER_SCAN")]
static SCAN: PerCpuArray<Scan> = PerCpuArray::with_max_entries(1, 0);

#[sk_reuseport]
pub fn steer_call_id(ctx: SkReuseportContext) -> u32 {
    if ctx.ip_protocol() != IPPROTO_UDP {
        return SK_PASS;
    }
    let n = match CONFIG.get(0) {
        Some(&n) if n > 1 && n <= MAX_SHARDS => n,
        _ => return SK_PASS,
    };
    if let Some(hash) = call_id_hash(&ctx) {
        // A failed selection (an index whose socket is gone) leaves the choice to the
        // kernel's hash.
        let _ = SOCKETS.select_reuseport(&ctx, hash % n);
    }
    SK_PASS
}

/// The hash of the datagram's Call-ID (as `call_id_hash` computes it), when it is found
/// within the scanned bytes.
#[inline(always)]
fn call_id_hash(ctx: &SkReuseportContext) -> Option<u32> {
    let len = ctx.len() as u64;
    let mut udp = [0u8; UDP_HLEN as usize];
    let rc = unsafe {
        bpf_skb_load_bytes(
            ctx.as_ptr(),
            0,
            udp.as_mut_ptr() as *mut c_void,
            UDP_HLEN as u32,
        )
    };
    // Not a UDP header where one is expected: the data does not begin where this program
    // reads it, so it does not steer rather than hash the wrong bytes.
    if rc != 0 || u64::from(u16::from_be_bytes([udp[4], udp[5]])) != len {
        return None;
    }
    let payload = len.checked_sub(UDP_HLEN)?;
    // Too short to hold a start line and a Call-ID: a keep-alive, a STUN request.
    if payload < MIN_MESSAGE {
        return None;
    }
    let s = unsafe { &mut *SCAN.get_ptr_mut(0)? };
    let mut n = payload;
    if n > SCAN_BYTES as u64 {
        n = SCAN_BYTES as u64;
    }
    if n == 0 {
        return None;
    }
    let rc = unsafe {
        bpf_skb_load_bytes(
            ctx.as_ptr(),
            UDP_HLEN as u32,
            s.buf.as_mut_ptr() as *mut c_void,
            n as u32,
        )
    };
    if rc != 0 {
        return None;
    }
    s.pos = 0;
    s.end = n;
    s.more = u64::from(payload > n);
    s.outcome = LOOKING;
    // Each call looks the scan up itself.
    run(SCAN_BYTES, find_header, null_mut::<Scan>());
    if s.outcome != FOUND {
        return None;
    }
    s.outcome = LOOKING;
    s.hash = u64::from(OFFSET_32);
    s.kept = u64::from(OFFSET_32);
    s.hashed = 0;
    run(
        SCAN_BYTES / STRIDE as usize + 1,
        hash_value,
        null_mut::<Scan>(),
    );
    if s.outcome == FOUND {
        Some(s.kept as u32)
    } else {
        None
    }
}

/// The scan, looked up once per call.
#[inline(always)]
fn scan<'a>() -> Option<&'a mut Scan> {
    SCAN.get_ptr_mut(0).map(|p| unsafe { &mut *p })
}

impl Scan {
    /// The copied payload (8-byte aligned: it follows seven u64s in a map value).
    #[inline(always)]
    fn bytes(&self) -> Masked<SCAN_BYTES, { STRIDE as usize }> {
        Masked(self.buf.as_ptr())
    }

    /// Byte `i`, when it was copied.
    #[inline(always)]
    fn at(&self, i: u64) -> Option<u8> {
        if i >= self.end {
            return None;
        }
        // Opaque to LLVM, so that it keeps the mask the verifier needs.
        Some(self.bytes().byte(black_box(i)))
    }
}

/// Scan 1: up to [`LINES_PER_CALL`] line feeds, after each whether the line after it is
/// the end of the headers (the scan stops, nothing found) or a Call-ID header (found: `pos`
/// is after its colon).
extern "C" fn find_header(_: u64, _: *mut c_void) -> i64 {
    let Some(s) = scan() else {
        return STOP;
    };
    for _ in 0..LINES_PER_CALL {
        if let Some(ret) = next_line(s) {
            return ret;
        }
    }
    NEXT
}

/// From `pos`, the next line feed within [`SCAN_WORDS`] words and the line after it: what
/// the call returns when it is decided, `None` to go on from the new `pos`.
#[inline(always)]
fn next_line(s: &mut Scan) -> Option<i64> {
    let (pos, end) = (s.pos, s.end);
    if pos >= end {
        return Some(STOP);
    }
    let mut w = pos / WORD;
    // Bytes before the start in its word are not looked at.
    let mut flags = eq_mask(s.bytes().word(w), b'\n') & from_byte(pos);
    for _ in 0..SCAN_WORDS {
        if flags != 0 || (w + 1) * WORD >= end {
            break;
        }
        w += 1;
        flags = eq_mask(s.bytes().word(w), b'\n');
    }
    if flags == 0 {
        s.pos = (w + 1) * WORD;
        return None;
    }
    let lf = w * WORD + first_flag(flags);
    match s.at(lf + 1) {
        // Past what was copied, or the empty line: no Call-ID header to find.
        None | Some(b'\r') | Some(b'\n') => return Some(STOP),
        Some(_) => {}
    }
    if let Some(v) = call_id_value_at(|k| s.at(k), lf + 1) {
        s.pos = v;
        s.outcome = FOUND;
        return Some(STOP);
    }
    s.pos = lf + 1;
    None
}

/// Scan 2, from `pos` in the value: up to [`STRIDE`] bytes folded into the hash, white
/// space after the colon skipped, until the line ends or the value's first
/// `MAX_CALL_ID_HASHED` bytes are in and the value goes on (a non-white byte follows: the
/// trimmed value is longer, the 64 bytes count whole).
extern "C" fn hash_value(_: u64, _: *mut c_void) -> i64 {
    let Some(s) = scan() else {
        return STOP;
    };
    let mut k = s.pos;
    let (mut h, mut kept, mut hashed) = (s.hash as u32, s.kept as u32, s.hashed);
    let window = s.bytes().window(k);
    for n in 0..STRIDE {
        if k >= s.end {
            // The payload's end ends the value; the copy's end leaves it undecided.
            if s.more == 0 {
                s.kept = u64::from(kept);
                s.outcome = FOUND;
            }
            return STOP;
        }
        let b = window.byte(n);
        if b == b'\r' || b == b'\n' {
            if !continues(s, k, b) {
                s.kept = u64::from(kept);
                s.outcome = FOUND;
            }
            return STOP;
        }
        if hashed == MAX_CALL_ID_HASHED as u64 {
            if !is_wsp(b) {
                s.kept = u64::from(h);
                s.outcome = FOUND;
                return STOP;
            }
        } else if !is_wsp(b) {
            h = step_32(h, b);
            kept = h;
            hashed += 1;
        } else if hashed != 0 {
            h = step_32(h, b);
            hashed += 1;
        }
        k += 1;
    }
    s.pos = k;
    s.hash = u64::from(h);
    s.kept = u64::from(kept);
    s.hashed = hashed;
    NEXT
}

/// Whether the header line ending at `k` (a CR or LF, `b`) goes on in the next line (it is
/// folded, RFC 3261 7.3.1), or cannot be told from the copied bytes: the value is then not
/// hashed.
#[inline(always)]
fn continues(s: &Scan, k: u64, b: u8) -> bool {
    let next = if b == b'\r' && s.at(k + 1) == Some(b'\n') {
        k + 2
    } else {
        k + 1
    };
    match s.at(next) {
        Some(c) => is_wsp(c),
        None => s.more != 0,
    }
}
