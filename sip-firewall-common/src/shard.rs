//! Which shard of the proxy holds a call: a hash of its Call-ID, the same in the kernel
//! (the `SO_REUSEPORT` program that picks a UDP socket) and in user space (which hands a
//! message to its shard). Every message of a dialog carries the same Call-ID (RFC 3261
//! 8.1.1.4, 12), so requests, responses, retransmissions, ACK, CANCEL and in-dialog
//! requests of one call meet on one shard whatever their source.
//!
//! The hash is FNV-1a (32 bit) over the first [`MAX_CALL_ID_HASHED`] bytes of the value,
//! without surrounding white space: the kernel folds bytes in as its bounded loop reads
//! them. It spreads calls; it is not a defence (an attacker who picks Call-IDs can put
//! their own calls on one shard, and only their own).

use crate::fnv::{OFFSET_32, step_32};

/// Bytes of a Call-ID value hashed; what follows does not change its shard.
pub const MAX_CALL_ID_HASHED: usize = 64;

/// Most shards (sockets in one `SO_REUSEPORT` group steered by Call-ID).
pub const MAX_SHARDS: u32 = 64;

/// The hash of a Call-ID value (white space around it is not part of it, RFC 3261 25.1).
///
/// ```
/// use sip_firewall_common::shard::call_id_hash;
/// assert_eq!(call_id_hash(b" a84b4c76e66710@pc33 "), call_id_hash(b"a84b4c76e66710@pc33"));
/// assert_ne!(call_id_hash(b"a84b4c76e66710@pc33"), call_id_hash(b"a84b4c76e66711@pc33"));
/// ```
pub const fn call_id_hash(value: &[u8]) -> u32 {
    let (mut start, mut end) = (0, value.len());
    while start < end && is_ws(value[start]) {
        start += 1;
    }
    while end > start && is_ws(value[end - 1]) {
        end -= 1;
    }
    let mut h = OFFSET_32;
    let mut i = start;
    while i < end && i - start < MAX_CALL_ID_HASHED {
        h = step_32(h, value[i]);
        i += 1;
    }
    h
}

/// The shard of a Call-ID among `shards` (at least one).
///
/// ```
/// use sip_firewall_common::shard::shard_of;
/// assert_eq!(shard_of(b"x@y", 1), 0);
/// assert!(shard_of(b"x@y", 4) < 4);
/// ```
pub const fn shard_of(call_id: &[u8], shards: u32) -> u32 {
    if shards <= 1 {
        return 0;
    }
    call_id_hash(call_id) % shards
}

/// Most white space bytes the kernel skips between a header's name and its colon.
pub const MAX_NAME_WSP: u64 = 4;

/// Space or horizontal tab: white space inside a header line (a line ends at CR or LF).
#[inline(always)]
pub const fn is_wsp(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// At `i`, the start of a header line named `Call-ID` or `i` (RFC 3261 7.3.3; any case),
/// then at most [`MAX_NAME_WSP`] spaces or tabs, then `:`: the index after the colon.
/// `at(k)` is byte `k`, `None` past what can be read. The kernel's test of a header line
/// (the `SO_REUSEPORT` program), here so that it is tested on the host.
///
/// ```
/// use sip_firewall_common::shard::call_id_value_at;
/// let at = |s: &'static [u8]| move |k: u64| s.get(k as usize).copied();
/// assert_eq!(call_id_value_at(at(b"Call-ID: x"), 0), Some(8));
/// assert_eq!(call_id_value_at(at(b"i :x"), 0), Some(3));
/// assert_eq!(call_id_value_at(at(b"Identity: x"), 0), None);
/// ```
#[inline(always)]
pub fn call_id_value_at(at: impl Fn(u64) -> Option<u8>, i: u64) -> Option<u64> {
    let mut k = i + 1;
    if !at(i)?.eq_ignore_ascii_case(&b'i') {
        for (n, want) in (0u64..).zip(*b"call-id") {
            if at(i + n)?.to_ascii_lowercase() != want {
                return None;
            }
        }
        k = i + 7;
    }
    for _ in 0..MAX_NAME_WSP {
        if !is_wsp(at(k)?) {
            break;
        }
        k += 1;
    }
    if at(k)? == b':' { Some(k + 1) } else { None }
}

const fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_id_header_names() {
        let at = |s: &'static [u8]| move |k: u64| s.get(k as usize).copied();
        for (line, value) in [
            (&b"Call-ID: a@b"[..], Some(8)),
            (b"call-id:a@b", Some(8)),
            (b"CALL-ID \t :a", Some(11)),
            (b"i: a@b", Some(2)),
            (b"I:a", Some(2)),
            (b"i \t:a", Some(4)),
            (b"Call-IDs: a", None),
            (b"Call_ID: a", None),
            (b"Call\rID: a", None),
            (b"Identity: a", None),
            (b"i", None),
            (b"Call-ID", None),
            (b"Call-ID     : a", None),
            (b"v: SIP/2.0/UDP", None),
        ] {
            assert_eq!(call_id_value_at(at(line), 0), value, "{line:?}");
        }
    }

    #[test]
    fn only_the_first_bytes_count() {
        let long = [b'a'; 200];
        assert_eq!(
            call_id_hash(&long[..MAX_CALL_ID_HASHED]),
            call_id_hash(&long)
        );
        assert_ne!(
            call_id_hash(&long[..MAX_CALL_ID_HASHED - 1]),
            call_id_hash(&long)
        );
    }

    #[test]
    fn fnv1a_reference_values() {
        // FNV-1a 32: "" and "a" (the published test vectors).
        assert_eq!(call_id_hash(b""), 0x811c_9dc5);
        assert_eq!(call_id_hash(b"a"), 0xe40c_292c);
    }

    #[test]
    fn calls_spread_over_shards() {
        let mut seen = [0u32; 4];
        let mut buf = *b"call-0000@host";
        for i in 0..400u32 {
            buf[5] = b'0' + (i / 100 % 10) as u8;
            buf[6] = b'0' + (i / 10 % 10) as u8;
            buf[7] = b'0' + (i % 10) as u8;
            seen[shard_of(&buf, 4) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 50), "{seen:?}");
    }
}
