//! The edge's keys: one master secret (`[auth] secret`) from which every working key is
//! derived with HKDF-SHA256 (RFC 5869), each purpose under its own label, so that no key
//! serves two purposes and the master secret itself is never a working key.
//!
//! A configured secret must carry at least 256 bits ([`MIN_SECRET_BYTES`]), written as hex
//! or base64: everything the edge seals (nonces, dialog stamps, cluster hop seals, the
//! cluster's records) can be checked offline against a guess, so a short or typed secret
//! would let an outsider forge them. `sip-firewall secret generate` (or `openssl rand -hex
//! 32`) makes one.
//!
//! `[auth] previous_secrets` keeps what earlier secrets made verifying while new nonces and
//! stamps use the current one: a secret is rolled node by node without dropping a dialog.
//! Each secret has a one-byte id, derived from it, that stamps carry so that a verifier
//! tries the right key first.
//!
//! ```
//! use sip_firewall::auth::keys::{KeyRing, Purpose, Secret};
//!
//! let old = Secret::parse("auth.previous_secrets", &"11".repeat(32)).unwrap();
//! let new = Secret::parse("auth.secret", &"22".repeat(32)).unwrap();
//! let ring = KeyRing::new(new.clone(), vec![old.clone()]);
//! let nonce_key: [u8; 32] = ring.current().derive(Purpose::Nonce);
//! assert_ne!(nonce_key, ring.current().derive::<32>(Purpose::DialogStamp));
//! assert_eq!(ring.by_id(old.id()).next().map(Secret::id), Some(old.id()));
//! assert!(Secret::parse("auth.secret", "hunter2").is_err());
//! ```

use std::fmt;

use base64::Engine as _;
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

/// The fewest bytes a configured secret must decode to (256 bits).
pub const MIN_SECRET_BYTES: usize = 32;
/// The most: a longer value is more likely a file pasted by mistake than a key.
const MAX_SECRET_BYTES: usize = 1024;
/// HKDF's salt (RFC 5869 3.1): fixed, names the scheme's version.
const SALT: &[u8] = b"sip-firewall key schedule v1";

/// What a working key is for; each is derived under its own HKDF label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// The tags of digest nonces.
    Nonce,
    /// The dialog stamp in our Record-Route.
    DialogStamp,
    /// The seal of a cluster hop (a Path route between nodes).
    ClusterHop,
    /// Loop detection tags and branch ids in our Via.
    LoopTag,
    /// The fingerprint nodes compare in Redis to know they share a secret.
    ClusterFingerprint,
    /// The MACs of the cluster's events and records in Redis.
    ClusterMessage,
    /// Flow tokens of the Path entries the edge adds to relayed registrations.
    FlowToken,
    /// The seal of inner Contacts shown to the outside (topology hiding).
    HiddenContact,
    /// The seal of inner Call-IDs shown to the outside (topology hiding).
    HiddenCallId,
    /// The seal of inner Path entries shown to a registrar outside (topology hiding).
    HiddenPath,
    /// The secret's own id (not a key).
    KeyId,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::Nonce => b"nonce",
            Purpose::DialogStamp => b"dialog stamp",
            Purpose::ClusterHop => b"cluster hop",
            Purpose::LoopTag => b"loop tag",
            Purpose::ClusterFingerprint => b"cluster fingerprint",
            Purpose::ClusterMessage => b"cluster message",
            Purpose::FlowToken => b"flow token",
            Purpose::HiddenContact => b"hidden contact",
            Purpose::HiddenCallId => b"hidden call-id",
            Purpose::HiddenPath => b"hidden path",
            Purpose::KeyId => b"key id",
        }
    }
}

/// Why a secret was refused.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{key}: not hex or base64; make a secret with `sip-firewall secret generate` (or \
         `openssl rand -hex 32`)"
    )]
    Encoding { key: String },
    #[error(
        "{key}: {bits} bits, at least 256 are needed (64 hex digits or 44 base64 \
         characters); make one with `sip-firewall secret generate` (or `openssl rand -hex 32`)"
    )]
    Weak { key: String, bits: usize },
    #[error("{key}: {bytes} bytes decoded, at most {MAX_SECRET_BYTES} are taken")]
    TooLong { key: String, bytes: usize },
    #[error("no randomness from the operating system: {0}")]
    Random(String),
}

/// A master secret: at least 256 bits, never shown (its `Debug` prints its id only).
#[derive(Clone)]
pub struct Secret {
    bytes: Zeroizing<Vec<u8>>,
    id: u8,
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret(id {})", self.id)
    }
}

impl Secret {
    /// A secret from its text (hex, else base64 standard or URL-safe, padded or not); `key`
    /// names the setting in errors.
    pub fn parse(key: &str, text: &str) -> Result<Secret, KeyError> {
        let text = text.trim();
        let bytes = decode(text).ok_or_else(|| KeyError::Encoding { key: key.into() })?;
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(KeyError::Weak {
                key: key.into(),
                bits: bytes.len() * 8,
            });
        }
        if bytes.len() > MAX_SECRET_BYTES {
            return Err(KeyError::TooLong {
                key: key.into(),
                bytes: bytes.len(),
            });
        }
        Ok(Secret::from_bytes(bytes))
    }

    /// A random secret of 256 bits (an edge without `[auth] secret`: what it seals is
    /// refused after a restart).
    pub fn random() -> Result<Secret, KeyError> {
        let mut b = Zeroizing::new(vec![0u8; MIN_SECRET_BYTES]);
        getrandom::getrandom(&mut b).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(Secret::from_bytes(b))
    }

    fn from_bytes(bytes: Zeroizing<Vec<u8>>) -> Secret {
        let mut s = Secret { bytes, id: 0 };
        s.id = s.derive::<1>(Purpose::KeyId)[0];
        s
    }

    /// The secret's id, carried by what it seals (collisions are possible: a verifier tries
    /// every secret with the id).
    pub fn id(&self) -> u8 {
        self.id
    }

    /// The working key for `purpose`, `N` bytes (HKDF-Expand, RFC 5869 2.3; `N` at most
    /// 8160).
    pub fn derive<const N: usize>(&self, purpose: Purpose) -> [u8; N] {
        let hk = Hkdf::<Sha256>::new(Some(SALT), &self.bytes);
        let mut out = [0u8; N];
        // Only a length over 255 hash lengths fails, which no caller asks for.
        if hk.expand(purpose.label(), &mut out).is_err() {
            debug_assert!(false, "HKDF output of {N} bytes");
        }
        out
    }
}

/// Hex when every character is a hex digit (and their number even), else base64.
fn decode(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    if text.is_empty() {
        return Some(Zeroizing::new(Vec::new()));
    }
    if let Some(v) = super::digest::unhex(text) {
        return Some(Zeroizing::new(v));
    }
    use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
    [STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|e| e.decode(text).ok())
        .map(Zeroizing::new)
}

/// The current secret and the previous ones still accepted.
#[derive(Clone, Debug)]
pub struct KeyRing {
    current: Secret,
    previous: Vec<Secret>,
    configured: bool,
}

impl KeyRing {
    /// A ring of configured secrets.
    pub fn new(current: Secret, previous: Vec<Secret>) -> KeyRing {
        KeyRing {
            current,
            previous,
            configured: true,
        }
    }

    /// From `[auth] secret` and `previous_secrets`; a random current secret when none is set.
    pub fn from_config(secret: Option<&str>, previous: &[String]) -> Result<KeyRing, KeyError> {
        let previous = previous
            .iter()
            .map(|p| Secret::parse("auth.previous_secrets", p))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(match secret {
            Some(s) => KeyRing::new(Secret::parse("auth.secret", s)?, previous),
            None => KeyRing {
                current: Secret::random()?,
                previous,
                configured: false,
            },
        })
    }

    /// The secret new nonces and stamps are made under.
    pub fn current(&self) -> &Secret {
        &self.current
    }

    /// The earlier secrets, still accepted for verification.
    pub fn previous(&self) -> &[Secret] {
        &self.previous
    }

    /// Whether the current secret was configured (else random at start).
    pub fn configured(&self) -> bool {
        self.configured
    }

    /// Every secret with this id, the current first.
    pub fn by_id(&self, id: u8) -> impl Iterator<Item = &Secret> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .filter(move |s| s.id == id)
    }

    /// The working keys for `purpose`: the current one first, then the previous ones.
    pub fn derive_all<const N: usize>(&self, purpose: Purpose) -> Vec<[u8; N]> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .map(|s| s.derive(purpose))
            .collect()
    }
}

/// A new secret for `[auth] secret`: 256 random bits as 64 hex digits.
pub fn generate() -> Result<String, KeyError> {
    let s = Secret::random()?;
    Ok(super::digest::hex(&s.bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_and_malformed_secrets_are_refused_with_the_key_and_the_remedy() {
        for weak in ["", "x", "hunter2", &"ab".repeat(31), "c2VjcmV0"] {
            let e = Secret::parse("auth.secret", weak).unwrap_err().to_string();
            assert!(e.starts_with("auth.secret: "), "{e}");
            assert!(e.contains("sip-firewall secret generate"), "{e}");
        }
        let e = Secret::parse("auth.secret", "not base64 at all!").unwrap_err();
        assert!(matches!(e, KeyError::Encoding { .. }), "{e}");
    }

    #[test]
    fn hex_and_base64_of_the_same_bytes_are_the_same_secret() {
        let bytes: Vec<u8> = (0u8..32).collect();
        let hex = crate::auth::digest::hex(&bytes);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
        let a = Secret::parse("k", &hex).unwrap();
        let b = Secret::parse("k", &b64).unwrap();
        assert_eq!(
            a.derive::<32>(Purpose::Nonce),
            b.derive::<32>(Purpose::Nonce)
        );
        assert_eq!(a.id(), b.id());
    }

    #[test]
    fn each_purpose_has_its_own_key_and_none_is_the_master() {
        let s = Secret::parse("k", &"5a".repeat(32)).unwrap();
        let all = [
            Purpose::Nonce,
            Purpose::DialogStamp,
            Purpose::ClusterHop,
            Purpose::LoopTag,
            Purpose::ClusterFingerprint,
            Purpose::ClusterMessage,
            Purpose::FlowToken,
            Purpose::HiddenContact,
            Purpose::HiddenCallId,
        ]
        .map(|p| s.derive::<32>(p));
        for (i, a) in all.iter().enumerate() {
            assert_ne!(&a[..], &s.bytes[..]);
            for b in &all[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn the_ring_finds_previous_secrets_by_id_and_generated_ones_parse() {
        let old = Secret::parse("k", &generate().unwrap()).unwrap();
        let new = Secret::parse("k", &generate().unwrap()).unwrap();
        let ring = KeyRing::new(new.clone(), vec![old.clone()]);
        assert!(
            ring.by_id(old.id())
                .any(|s| s.derive::<32>(Purpose::Nonce) == old.derive::<32>(Purpose::Nonce))
        );
        assert_eq!(ring.derive_all::<32>(Purpose::Nonce).len(), 2);
        assert!(!format!("{new:?}").contains(&generate().unwrap()[..8]));
        let unset = KeyRing::from_config(None, &[]).unwrap();
        assert!(!unset.configured());
        assert!(KeyRing::from_config(Some("short"), &[]).is_err());
        assert!(KeyRing::from_config(Some(&"11".repeat(32)), &["x".into()]).is_err());
    }
}
