//! The seal of inner Call-IDs shown to the outside: `sfwth-<hex>`, the inner Call-ID
//! sealed with AES-SIV (RFC 5297) under a key derived from `[auth] secret`
//! ([`Purpose::HiddenCallId`]). Deterministic: every message of a dialog, and the CANCEL
//! and ACK of an INVITE (RFC 3261 9.1, 17.1.1.3), carry the same text, made on any node
//! sharing the secret, before or after a reload, and across a roll of the secret (sealed
//! under the secret of the dialog's stamp). Which messages carry it is the core's
//! decision (the rule is in the parent module's doc).

use crate::auth::{
    digest::{hex, unhex},
    keys::{KeyRing, Purpose},
};

use super::{HIDDEN_PREFIX, siv::SivKeys};

/// Longest sealed Call-ID opened (hex digits): a bound on the work one message costs.
const MAX_SEALED_HEX: usize = 1024;

/// What the seal binds besides the Call-ID (one S2V component): its use.
const BOUND: &[u8] = b"call-id";

/// The seal of inner Call-IDs (see the module doc).
pub struct CallIdSeal {
    keys: SivKeys,
}

impl CallIdSeal {
    /// The seal under the ring's keys.
    pub fn new(ring: &KeyRing) -> CallIdSeal {
        CallIdSeal {
            keys: SivKeys::new(ring, Purpose::HiddenCallId),
        }
    }

    /// `sfwth-<seal>` standing for `call_id`, sealed under the ring's `secret` (0 the
    /// current, `i + 1` the `i`th previous: the one a dialog's stamp was sealed under, so
    /// that the dialog keeps one text across a roll; the current one when it is gone).
    /// None when it cannot be sealed.
    pub fn seal(&self, call_id: &str, secret: usize) -> Option<String> {
        let sealed = self.keys.seal(BOUND, call_id.as_bytes(), secret)?;
        Some(format!("{HIDDEN_PREFIX}{}", hex(&sealed)))
    }

    /// The inner Call-ID `text` stands for; None for any other text, a seal too long or
    /// one that opens under none of our keys (a forged `sfwth-` Call-ID is left as is).
    pub fn open(&self, text: &str) -> Option<String> {
        let sealed = text.trim().strip_prefix(HIDDEN_PREFIX)?;
        if sealed.len() > MAX_SEALED_HEX {
            return None;
        }
        self.keys.open(BOUND, &unhex(sealed)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(current: &str, previous: &[&str]) -> KeyRing {
        let previous: Vec<String> = previous.iter().map(|p| p.repeat(32)).collect();
        KeyRing::from_config(Some(&current.repeat(32)), &previous).unwrap()
    }

    /// A Call-ID naming its host goes out as one text that names nothing, the same each
    /// time and on every node of the secret, and comes back; after a roll the previous
    /// secret still opens it and, asked for, seals it the same.
    #[test]
    fn a_call_id_is_sealed_the_same_each_time_and_opens() {
        let seal = CallIdSeal::new(&ring("5a", &[]));
        let inner = "a84b4c76e66710@10.1.0.9";
        let shown = seal.seal(inner, 0).unwrap();
        assert!(
            shown.starts_with("sfwth-") && !shown.contains("10.1.0."),
            "{shown}"
        );
        assert_eq!(
            CallIdSeal::new(&ring("5a", &[])).seal(inner, 0),
            Some(shown.clone())
        );
        assert_eq!(seal.open(&shown).as_deref(), Some(inner));
        let rolled = CallIdSeal::new(&ring("6b", &["5a"]));
        assert_eq!(rolled.open(&shown).as_deref(), Some(inner));
        assert_ne!(rolled.seal(inner, 0), Some(shown.clone()));
        assert_eq!(rolled.seal(inner, 1), Some(shown.clone()));
        assert_eq!(seal.seal(inner, 1), Some(shown));
    }

    /// Forged, tampered, foreign and oversized seals open nothing: the message keeps the
    /// Call-ID it came with.
    #[test]
    fn a_forged_seal_opens_nothing() {
        let seal = CallIdSeal::new(&ring("5a", &[]));
        let shown = seal.seal("x@10.1.0.9", 0).unwrap();
        let i = HIDDEN_PREFIX.len();
        let flipped = if &shown[i..=i] == "0" { "1" } else { "0" };
        let tampered = format!("{}{flipped}{}", &shown[..i], &shown[i + 1..]);
        for forged in [
            tampered.as_str(),
            "sfwth-",
            "sfwth-zz",
            "sfwth-abc",
            "sfwth-00112233445566778899aabbccddeeff",
            "plain@10.1.0.9",
        ] {
            assert_eq!(seal.open(forged), None, "{forged}");
        }
        assert_eq!(CallIdSeal::new(&ring("6b", &[])).open(&shown), None);
        let long = format!("sfwth-{}", "ab".repeat(MAX_SEALED_HEX));
        assert_eq!(seal.open(&long), None);
    }
}
