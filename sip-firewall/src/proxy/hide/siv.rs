//! The keys of one kind of seal (AES-SIV, RFC 5297, deterministic): the current secret's,
//! which seals, then the previous secrets' (`[auth] previous_secrets`), which still open
//! what the outside was shown before a roll.

use aes_siv::{KeyInit as _, siv::Aes256Siv};

use crate::auth::keys::{KeyRing, Purpose};

/// A ring's keys for one purpose (see the module doc).
pub struct SivKeys {
    keys: Vec<[u8; 64]>,
}

impl SivKeys {
    pub fn new(ring: &KeyRing, purpose: Purpose) -> SivKeys {
        SivKeys {
            keys: ring.derive_all::<64>(purpose),
        }
    }

    /// `data` sealed for its use `bound` under the ring's `secret` (0 the current, `i + 1`
    /// the `i`th previous; the current one when there is no such secret).
    pub fn seal(&self, bound: &[u8], data: &[u8], secret: usize) -> Option<Vec<u8>> {
        let key = self.keys.get(secret).or(self.keys.first())?;
        let mut c = Aes256Siv::new_from_slice(key).ok()?;
        c.encrypt([bound], data).ok()
    }

    /// The text `raw` seals for `bound` under any of the keys; None when it opens under
    /// none (a forgery, another use, a secret no longer kept) or is not text.
    pub fn open(&self, bound: &[u8], raw: &[u8]) -> Option<String> {
        self.keys.iter().find_map(|k| {
            let mut c = Aes256Siv::new_from_slice(k).ok()?;
            String::from_utf8(c.decrypt([bound], raw).ok()?).ok()
        })
    }
}
