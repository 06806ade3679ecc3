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
/// rotating addresses is then one entry, not one per address (issue 9).
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

#[cfg(test)]
mod tests {
    use super::*;

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
