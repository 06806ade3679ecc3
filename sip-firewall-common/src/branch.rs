//! The key of a client transaction: a hash of the `branch` parameter of the Via the proxy
//! put on the request, which every response carries back in its topmost Via (RFC 3261
//! 17.1.3). The proxy writes the key into the transactions map; the XDP program computes it
//! from a response and drops the response when the key is absent (a stray reply).
//!
//! The hash is FNV-1a (64 bit) on words: the value cut in 8-byte pieces (little-endian, the
//! last one zero-padded), one step per piece, then its length: the XDP program reads the
//! value eight bytes at a time, as it finds its end, with nothing to buffer. It only has to
//! tell our own branches (we choose them, random after `z9hG4bK`) from others; it is not a
//! defence against an attacker who can read our branches.

use crate::fnv::{OFFSET_64, step_64};

/// Longest branch value hashed; a longer one is not ours (ours are 32 bytes or so).
pub const MAX_BRANCH_LEN: usize = 128;

/// Bytes of the response the XDP program scans for the topmost Via, at most (the configured
/// bound is at most this and at least 1500).
pub const MAX_VIA_SCAN: usize = 2048;

/// Bytes of the topmost Via's value searched for its `branch` parameter; a Via whose
/// branch comes later is left to user space.
pub const MAX_VIA_PARAMS: usize = 512;

/// The last step: the value's length, so that values that differ only by trailing zero
/// bytes differ.
#[inline(always)]
pub const fn finish(hash: u64, len: u64) -> u64 {
    step_64(hash, len)
}

/// The key of a branch value.
///
/// ```
/// use sip_firewall_common::branch::branch_key;
/// assert_eq!(branch_key(b"z9hG4bK776asdhds"), branch_key(b"z9hG4bK776asdhds"));
/// assert_ne!(branch_key(b"z9hG4bK776asdhds"), branch_key(b"z9hG4bK776asdhdt"));
/// ```
pub const fn branch_key(branch: &[u8]) -> u64 {
    let mut h = OFFSET_64;
    let mut i = 0;
    while i < branch.len() {
        let mut w = 0u64;
        let mut k = 0;
        while k < 8 && i + k < branch.len() {
            w |= (branch[i + k] as u64) << (8 * k);
            k += 1;
        }
        h = step_64(h, w);
        i += 8;
    }
    finish(h, branch.len() as u64)
}

/// The hash of a peer: its address ([`crate::IpKey`], IPv4-mapped) and port. FNV-1a's step
/// on the two words of the key ([`crate::addr::to_words`]) and the port: three multiplies,
/// where a step per byte was eighteen in a chain (~25 ns of every response in XDP). Each
/// step is a bijection of its input, so two peers that differ in one word or the port never
/// share a hash.
pub const fn peer_hash(peer: &crate::IpKey, port: u16) -> u64 {
    peer_hash_words(&crate::addr::to_words(peer), port)
}

/// [`peer_hash`] of a key held as words (what the XDP program has).
#[inline(always)]
pub const fn peer_hash_words(peer: &crate::addr::KeyWords, port: u16) -> u64 {
    let h = step_64(OFFSET_64, peer[0]);
    let h = step_64(h, peer[1]);
    step_64(h, port as u64)
}

/// The key of a client transaction bound to its peer: the branch key XOR the hash of the
/// address and port the request went to. A response for an open branch from anywhere else
/// misses it: the XDP program drops it as a stray. Peers allowed to answer from
/// another address get the plain [`branch_key`] instead. (XOR: the program hashes the
/// source once, apart from the Via scan.)
pub const fn peer_key(branch_key: u64, peer: &crate::IpKey, port: u16) -> u64 {
    branch_key ^ peer_hash(peer, port)
}

/// Whether `b` ends a branch value (parameter, value and header separators, whitespace).
#[inline(always)]
pub const fn ends_branch(b: u8) -> bool {
    matches!(b, b';' | b',' | b' ' | b'\t' | b'\r' | b'\n' | b'?' | b'>')
}

/// [`ends_branch`] on the eight bytes of a little-endian word: the high bit of each byte
/// that ends a branch value (`crate::swar` masks). `?` and `>` differ in their low bit only.
#[inline(always)]
pub const fn ends_branch_mask(x: u64) -> u64 {
    use crate::swar::{eq_mask, splat};
    eq_mask(x, b';')
        | eq_mask(x, b',')
        | eq_mask(x, b' ')
        | eq_mask(x, b'\t')
        | eq_mask(x, b'\r')
        | eq_mask(x, b'\n')
        | eq_mask(x | splat(1), b'?')
}

/// Whitespace allowed around `:`, `;` and `=` (SWS of RFC 3261).
#[inline(always)]
pub const fn is_sws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Where the topmost Via's branch lies in a response, the reference for the XDP scan: the
/// first header line named `Via` or `v` (any case, whitespace before the colon) within the
/// first `bound` bytes, its first value (up to `,` or the line's end), and in it the
/// parameter `branch` (any case, whitespace around `;` and `=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopBranch {
    /// The branch value's key.
    Key(u64),
    /// The topmost Via has no branch: no transaction of ours can match.
    Missing,
    /// No Via (or branch) found within the bound: user space decides.
    Beyond,
}

/// Up to this many SWS bytes are skipped at each place they may appear (the XDP program
/// unrolls these skips).
pub const MAX_SWS: usize = 3;

fn skip_sws(p: &[u8], mut i: usize) -> usize {
    let mut n = 0;
    while n < MAX_SWS && i < p.len() && is_sws(p[i]) {
        i += 1;
        n += 1;
    }
    i
}

/// Find the topmost Via's branch of response `p`, reading at most `bound` bytes.
pub fn top_branch(p: &[u8], bound: usize) -> TopBranch {
    let p = if p.len() > bound { &p[..bound] } else { p };
    // The value of the first Via header: just after its colon.
    let mut start = None;
    let mut i = 0;
    while i < p.len() {
        if p[i] == b'\n'
            && let Some(v) = via_value_at(p, i + 1)
        {
            start = Some(v);
            break;
        }
        i += 1;
    }
    let Some(mut j) = start else {
        return TopBranch::Beyond;
    };
    // Its parameters, up to the end of the first value.
    let params_end = j + MAX_VIA_PARAMS;
    while j < p.len() {
        if j >= params_end {
            return TopBranch::Beyond;
        }
        match p[j] {
            b'\r' | b'\n' | b',' => return TopBranch::Missing,
            b';' => {
                if let Some(v) = branch_value_at(p, j + 1) {
                    let mut k = v;
                    while k < p.len() && k - v < MAX_BRANCH_LEN {
                        if ends_branch(p[k]) {
                            return TopBranch::Key(branch_key(&p[v..k]));
                        }
                        k += 1;
                    }
                    return TopBranch::Beyond;
                }
            }
            _ => {}
        }
        j += 1;
    }
    TopBranch::Beyond
}

/// If a header line starting at `i` is `Via` or `v` then SWS and `:`, the index after `:`.
fn via_value_at(p: &[u8], i: usize) -> Option<usize> {
    let lower = |k: usize| p.get(k).map(|b| b.to_ascii_lowercase());
    if lower(i)? != b'v' {
        return None;
    }
    let mut k = i + 1;
    if lower(k) == Some(b'i') && lower(k + 1) == Some(b'a') {
        k += 2;
    }
    k = skip_sws(p, k);
    (p.get(k) == Some(&b':')).then_some(k + 1)
}

/// If the parameter starting at `i` (after `;`) is SWS `branch` SWS `=` SWS, the index of
/// its value.
fn branch_value_at(p: &[u8], i: usize) -> Option<usize> {
    let k = skip_sws(p, i);
    let name = p.get(k..k + 6)?;
    if !name.eq_ignore_ascii_case(b"branch") {
        return None;
    }
    let k = skip_sws(p, k + 6);
    if p.get(k) != Some(&b'=') {
        return None;
    }
    Some(skip_sws(p, k + 1))
}

#[cfg(test)]
mod tests {

    #[test]
    fn peer_keys_bind_address_and_port() {
        let k = branch_key(b"z9hG4bK-1");
        let a = crate::addr::v4_key([192, 0, 2, 1]);
        let b = crate::addr::v4_key([192, 0, 2, 2]);
        assert_eq!(peer_key(k, &a, 5060), peer_key(k, &a, 5060));
        assert_ne!(peer_key(k, &a, 5060), peer_key(k, &a, 5061));
        assert_ne!(peer_key(k, &a, 5060), peer_key(k, &b, 5060));
        assert_ne!(peer_key(k, &a, 5060), k);
        assert_eq!(peer_key(k, &a, 5060) ^ peer_hash(&a, 5060), k);
    }

    use super::*;

    #[test]
    fn end_mask_equals_the_bytewise_test() {
        for b in 0..=255u8 {
            for pos in 0..8 {
                let mut w = [b'a'; 8];
                w[pos] = b;
                let want = if ends_branch(b) {
                    0x80u64 << (8 * pos)
                } else {
                    0
                };
                assert_eq!(
                    ends_branch_mask(u64::from_le_bytes(w)),
                    want,
                    "{b:#x} at {pos}"
                );
            }
        }
    }

    #[test]
    fn keys_of_words() {
        // Every length around the word boundaries, and trailing zero bytes, differ.
        let long = b"z9hG4bK0123456789abcdef0123456789";
        let mut keys = [0u64; 34];
        for (n, k) in keys.iter_mut().enumerate() {
            *k = branch_key(&long[..n]);
        }
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_ne!(branch_key(b"ab"), branch_key(b"ab\0"));
        assert_ne!(branch_key(b"abcdefgh"), branch_key(b"abcdefgh\0"));
    }

    const R: &[u8] = b"SIP/2.0 200 OK\r\n";

    fn resp(headers: &str) -> [u8; 512] {
        let mut out = [0u8; 512];
        out[..R.len()].copy_from_slice(R);
        out[R.len()..R.len() + headers.len()].copy_from_slice(headers.as_bytes());
        out
    }

    fn top(headers: &str) -> TopBranch {
        let r = resp(headers);
        top_branch(&r[..R.len() + headers.len()], 1500)
    }

    #[test]
    fn finds_the_topmost_branch_in_every_spelling() {
        let k = TopBranch::Key(branch_key(b"z9hG4bKabc"));
        assert_eq!(
            top("Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKabc\r\n\r\n"),
            k
        );
        assert_eq!(top("v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKabc\r\n\r\n"), k);
        assert_eq!(
            top("VIA : SIP/2.0/UDP 192.0.2.1 ; BRANCH = z9hG4bKabc ;rport\r\n\r\n"),
            k
        );
        assert_eq!(top("V\t:SIP/2.0/UDP h;rport;branch=z9hG4bKabc\r\n\r\n"), k);
        assert_eq!(
            top(
                "From: <sip:a@b>\r\nVia: SIP/2.0/UDP h;branch=z9hG4bKabc, SIP/2.0/UDP g;branch=other\r\nVia: SIP/2.0/UDP x;branch=third\r\n\r\n"
            ),
            k
        );
        assert_eq!(
            top("Via: SIP/2.0/UDP h;branch=z9hG4bKabc,SIP/2.0/UDP g;branch=x\r\n"),
            k
        );
    }

    #[test]
    fn missing_and_beyond() {
        assert_eq!(top("Via: SIP/2.0/UDP h;rport\r\n\r\n"), TopBranch::Missing);
        assert_eq!(
            top("Via: SIP/2.0/UDP h, SIP/2.0/UDP g;branch=x\r\n"),
            TopBranch::Missing
        );
        assert_eq!(top("From: <sip:a@b>\r\n\r\n"), TopBranch::Beyond);
        assert_eq!(top("Vias: SIP/2.0/UDP h;branch=x\r\n"), TopBranch::Beyond);
        assert_eq!(top("Via: SIP/2.0/UDP h;branches=x\r\n"), TopBranch::Missing);
        // Cut at the bound in the middle of the value: not decided here.
        let r = resp("Via: SIP/2.0/UDP h;branch=z9hG4bKabc\r\n");
        let end = R.len() + "Via: SIP/2.0/UDP h;branch=z9hG4bKabc".len();
        assert_eq!(top_branch(&r[..end + 2], end - 1), TopBranch::Beyond);
        assert_eq!(
            top_branch(&r[..end + 2], end + 1),
            TopBranch::Key(branch_key(b"z9hG4bKabc"))
        );
    }
}
