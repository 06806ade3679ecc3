//! Source addresses as map keys.
//!
//! IPv4 and IPv6 share one key space: an IPv4 address is stored IPv4-mapped
//! (`::ffff:a.b.c.d`), so every map (ban, flood, allow and deny tries) needs one
//! lookup whatever the family, and an IPv4 prefix of length `n` is a trie prefix of
//! length `96 + n`.

/// A 16-byte source address: IPv6 as is, IPv4 as `::ffff:a.b.c.d`.
pub type IpKey = [u8; 16];

/// Bits of an IPv4 prefix are stored after this many bits of the mapped prefix.
pub const V4_MAPPED_PREFIX_BITS: u32 = 96;

/// IPv4-mapped key of an IPv4 address given in network byte order.
#[inline(always)]
pub const fn v4_key(octets: [u8; 4]) -> IpKey {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3],
    ]
}

/// The flood-limit group of a source: IPv4 by address, IPv6 by its /64 (one subscriber
/// usually owns a whole /64, and rotating inside it must not reset the limit).
#[inline(always)]
pub const fn flood_group(key: IpKey) -> IpKey {
    if is_v4_mapped(&key) {
        key
    } else {
        [
            key[0], key[1], key[2], key[3], key[4], key[5], key[6], key[7], 0, 0, 0, 0, 0, 0, 0, 0,
        ]
    }
}

/// The prefix of `key` that bans and flood state are kept per: the first `v4_bits` of an
/// IPv4 address (0..=32) or `v6_bits` of an IPv6 one (0..=128), the rest zero. One /64 of
/// rotating addresses is then one entry, not one per address.
#[inline(always)]
pub const fn prefix_key(key: IpKey, v4_bits: u32, v6_bits: u32) -> IpKey {
    let bits = if is_v4_mapped(&key) {
        // The mapped prefix (::ffff:0:0/96) is always kept.
        V4_MAPPED_PREFIX_BITS + if v4_bits > 32 { 32 } else { v4_bits }
    } else if v6_bits > 128 {
        128
    } else {
        v6_bits
    };
    let mut out = key;
    let mut i = 0;
    while i < 16 {
        let start = (i * 8) as u32;
        if start >= bits {
            out[i] = 0;
        } else if start + 8 > bits {
            out[i] = key[i] & (0xffu8 << (8 - (bits - start)));
        }
        i += 1;
    }
    out
}

/// Whether the key holds an IPv4 address.
#[inline(always)]
pub const fn is_v4_mapped(key: &IpKey) -> bool {
    key[0] == 0
        && key[1] == 0
        && key[2] == 0
        && key[3] == 0
        && key[4] == 0
        && key[5] == 0
        && key[6] == 0
        && key[7] == 0
        && key[8] == 0
        && key[9] == 0
        && key[10] == 0xff
        && key[11] == 0xff
}

/// An [`IpKey`] as two native-endian words, its bytes unchanged in memory (so a pointer to
/// it is a pointer to the key, 8-aligned): the XDP program compares and masks the 16 bytes
/// in two operations each, where byte by byte it spent hundreds of instructions a packet.
pub type KeyWords = [u64; 2];

/// The words of a key.
#[inline(always)]
pub const fn to_words(k: &IpKey) -> KeyWords {
    [
        u64::from_ne_bytes([k[0], k[1], k[2], k[3], k[4], k[5], k[6], k[7]]),
        u64::from_ne_bytes([k[8], k[9], k[10], k[11], k[12], k[13], k[14], k[15]]),
    ]
}

/// The key of words.
#[inline(always)]
pub const fn from_words(w: KeyWords) -> IpKey {
    let (a, b) = (w[0].to_ne_bytes(), w[1].to_ne_bytes());
    [
        a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], b[0], b[1], b[2], b[3], b[4], b[5], b[6],
        b[7],
    ]
}

/// Bytes 8..12 of the second word: `0, 0, 0xff, 0xff` in a mapped IPv4 key.
const W1_V4_MASK: u64 = u64::from_ne_bytes([0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0]);
const W1_V4_PREFIX: u64 = u64::from_ne_bytes([0, 0, 0xff, 0xff, 0, 0, 0, 0]);

/// The words of the IPv4-mapped key of `octets` (network byte order).
#[inline(always)]
pub const fn v4_words(octets: [u8; 4]) -> KeyWords {
    [
        0,
        u64::from_ne_bytes([0, 0, 0xff, 0xff, octets[0], octets[1], octets[2], octets[3]]),
    ]
}

/// [`is_v4_mapped`] on words.
#[inline(always)]
pub const fn words_v4_mapped(w: &KeyWords) -> bool {
    w[0] == 0 && w[1] & W1_V4_MASK == W1_V4_PREFIX
}

/// [`flood_group`] on words.
#[inline(always)]
pub const fn flood_group_words(w: KeyWords) -> KeyWords {
    if words_v4_mapped(&w) { w } else { [w[0], 0] }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Call `f` on keys that stress every byte the word forms look at.
    fn for_sample_keys(mut f: impl FnMut(IpKey)) {
        for k in [
            v4_key([192, 0, 2, 7]),
            v4_key([0, 0, 0, 0]),
            v4_key([255, 255, 255, 255]),
            [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 9, 9, 9, 9, 9, 9, 9, 9],
            [0; 16],
            [0xff; 16],
        ] {
            f(k);
        }
        // One byte off a mapped key, at each position.
        for i in 0..16 {
            for b in [0u8, 1, 0xfe, 0xff] {
                let mut k = v4_key([10, 1, 2, 3]);
                k[i] = b;
                f(k);
            }
        }
    }

    #[test]
    fn word_forms_agree_with_the_byte_forms() {
        for_sample_keys(|k| {
            let w = to_words(&k);
            assert_eq!(from_words(w), k);
            assert_eq!(words_v4_mapped(&w), is_v4_mapped(&k), "{k:?}");
            assert_eq!(from_words(flood_group_words(w)), flood_group(k), "{k:?}");
        });
        assert_eq!(from_words(v4_words([192, 0, 2, 7])), v4_key([192, 0, 2, 7]));
    }

    #[test]
    fn v4_keys_are_mapped() {
        let k = v4_key([192, 0, 2, 7]);
        assert!(is_v4_mapped(&k));
        assert_eq!(&k[12..], &[192, 0, 2, 7]);
        assert_eq!(flood_group(k), k);
    }

    #[test]
    fn prefixes() {
        let v4 = v4_key([192, 0, 2, 77]);
        assert_eq!(prefix_key(v4, 32, 64), v4);
        assert_eq!(prefix_key(v4, 24, 64), v4_key([192, 0, 2, 0]));
        assert_eq!(prefix_key(v4, 20, 64), v4_key([192, 0, 0, 0]));
        assert_eq!(prefix_key(v4, 99, 64), v4);
        let v6 = [
            0x20, 0x01, 0x0d, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
        ];
        assert_eq!(prefix_key(v6, 32, 64), flood_group(v6));
        assert_eq!(prefix_key(v6, 32, 128), v6);
        assert_eq!(
            prefix_key(v6, 32, 60),
            [0x20, 0x01, 0x0d, 0xb8, 1, 2, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(prefix_key(v6, 32, 0), [0; 16]);
    }

    #[test]
    fn v6_groups_by_64() {
        let mut k = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 1, 9, 9, 9, 9, 9, 9, 9, 9];
        assert!(!is_v4_mapped(&k));
        let g = flood_group(k);
        assert_eq!(&g[..8], &k[..8]);
        assert_eq!(&g[8..], &[0; 8]);
        k[15] = 1;
        assert_eq!(flood_group(k), g);
    }
}
