//! Byte tests on eight bytes at once ("SIMD within a register"), for the XDP program's
//! payload scans: one aligned 8-byte load and a dozen ALU operations replace eight byte
//! loads and eight branches. Here so that they are tested against the byte-wise definitions.
//!
//! A word is read little-endian: byte 0 (lowest address) is its least significant byte, and
//! a mask has the high bit (`0x80`) of each matching byte set.

/// Bytes of one word.
pub const WORD: u64 = 8;

/// Every byte of a word set to `b`.
#[inline(always)]
pub const fn splat(b: u8) -> u64 {
    (b as u64) * 0x0101_0101_0101_0101
}

const LOW7: u64 = splat(0x7f);
const HIGH: u64 = splat(0x80);

/// The high bit of each byte of `x` that equals `b`, and no other bit. Exact per byte: no
/// borrow crosses a byte, unlike the classic `(x - 0x01..) & !x` test.
#[inline(always)]
pub const fn eq_mask(x: u64, b: u8) -> u64 {
    let y = x ^ splat(b);
    !(((y & LOW7).wrapping_add(LOW7)) | y) & HIGH
}

/// The high bit of each byte of `x` below `n` (`1 <= n <= 0x80`), exact per byte.
#[inline(always)]
pub const fn lt_mask(x: u64, n: u8) -> u64 {
    !(((x & LOW7).wrapping_add(splat(0x80 - n))) | x) & HIGH
}

/// The high bit of each byte of `x` that is an upper-case ASCII letter, exact per byte.
#[inline(always)]
pub const fn upper_mask(x: u64) -> u64 {
    lt_mask(x, b'Z' + 1) & !lt_mask(x, b'A') & HIGH
}

/// The high bits of the bytes below byte `n` (0..=8) of a word.
#[inline(always)]
pub const fn below(n: u64) -> u64 {
    if n >= WORD {
        HIGH
    } else {
        ((1u64 << (n * 8)) - 1) & HIGH
    }
}

/// The index (0..8) of the first byte whose flag is set in `m` (`m != 0`, only high bits).
/// BPF has no count-trailing-zeros: the lowest flag is isolated and a multiply puts its byte
/// number in the top byte.
#[inline(always)]
pub const fn first_flag(m: u64) -> u64 {
    let lowest = m & m.wrapping_neg();
    (lowest >> 7).wrapping_mul(0x0001_0203_0405_0607) >> 56
}

/// All ones but the flags of the first `skip % 8` bytes: a scan that starts inside a word
/// ignores what comes before its start.
#[inline(always)]
pub const fn from_byte(skip: u64) -> u64 {
    !0u64 << ((skip & (WORD - 1)) * 8)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The mask a byte-wise test gives.
    fn by_bytes(w: [u8; 8], f: impl Fn(u8) -> bool) -> u64 {
        w.iter()
            .enumerate()
            .filter(|(_, b)| f(**b))
            .map(|(i, _)| 0x80u64 << (8 * i))
            .sum()
    }

    /// Words that stress the borrow and carry between bytes: every byte value next to
    /// the values around the tested one.
    fn words() -> impl Iterator<Item = [u8; 8]> {
        const EDGES: [u8; 13] = [
            0, 1, 0x0a, 0x0b, 0x0d, 0x1f, 0x20, 0x3b, 0x7e, 0x7f, 0x80, 0x8a, 0xff,
        ];
        (0..=255u8).flat_map(|a| EDGES.map(|e| [e, a, e, a, 0x0a, a, 0, a]))
    }

    #[test]
    fn masks_equal_the_bytewise_tests() {
        for w in words() {
            let x = u64::from_le_bytes(w);
            for b in [b'\n', b'\r', b';', b',', 0x7f, 0] {
                assert_eq!(eq_mask(x, b), by_bytes(w, |c| c == b), "{w:?} == {b}");
            }
            for n in [1u8, 0x20, 0x7f, 0x80] {
                assert_eq!(lt_mask(x, n), by_bytes(w, |c| c < n), "{w:?} < {n}");
            }
            assert_eq!(
                upper_mask(x),
                by_bytes(w, |c| c.is_ascii_uppercase()),
                "{w:?} upper"
            );
        }
    }

    #[test]
    fn first_flag_is_the_lowest_byte() {
        for i in 0..8u64 {
            let m = 0x80u64 << (8 * i);
            assert_eq!(first_flag(m), i);
            // Later flags do not change it.
            assert_eq!(first_flag(m | 0x8000_0000_0000_0000), i);
        }
        assert_eq!(below(0), 0);
        assert_eq!(below(3), 0x80_8080);
        assert_eq!(below(8), HIGH);
        assert_eq!(from_byte(0), !0);
        assert_eq!(from_byte(3) & 0x80_8080, 0);
        assert_eq!(from_byte(3) & 0x8000_0000, 0x8000_0000);
    }
}
