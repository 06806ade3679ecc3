//! FNV-1a, the hash behind the keys the XDP program and the daemon both compute: 64 bit,
//! one step per 8-byte word, for transaction keys ([`crate::branch`]); 32 bit, one step per
//! byte, for the shard of a Call-ID ([`crate::shard`]). A step XORs its input into the hash,
//! then multiplies by the prime: a bijection of the input, cheap in the kernel.

/// FNV-1a (64 bit) offset basis.
pub const OFFSET_64: u64 = 0xcbf2_9ce4_8422_2325;
/// FNV-1a (64 bit) prime.
pub const PRIME_64: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a (32 bit) offset basis.
pub const OFFSET_32: u32 = 0x811c_9dc5;
/// FNV-1a (32 bit) prime.
pub const PRIME_32: u32 = 0x0100_0193;

/// Fold `input` (a byte, or a word of up to 8 bytes) into a 64-bit hash.
#[inline(always)]
pub const fn step_64(hash: u64, input: u64) -> u64 {
    (hash ^ input).wrapping_mul(PRIME_64)
}

/// Fold one byte into a 32-bit hash.
#[inline(always)]
pub const fn step_32(hash: u32, b: u8) -> u32 {
    (hash ^ b as u32).wrapping_mul(PRIME_32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_test_vectors() {
        // FNV-1a of "a", 64 and 32 bit (the published test vectors).
        assert_eq!(step_64(OFFSET_64, u64::from(b'a')), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(step_32(OFFSET_32, b'a'), 0xe40c_292c);
    }
}
