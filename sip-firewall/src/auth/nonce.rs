//! Nonces the server verifies without remembering them: a timestamp, a per-challenge unique
//! number, and an HMAC-SHA-256 of both under a secret, so a nonce cannot be forged and its age is known (stale=true once
//! it is too old). Replay protection needs a little state: the highest nonce-count seen
//! per nonce, kept only for nonces that authenticated someone and only for their lifetime.

use std::{collections::HashMap, time::Duration};

use hmac::{Hmac, Mac as _};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Hex digits of the timestamp part.
const TS_LEN: usize = 16;
/// Hex digits of the unique part: two challenges in the same second must differ, or the
/// nonce-count of one client would look like a replay of another's.
const UNIQ_LEN: usize = 16;
/// Hex digits of the MAC part (128 bits are plenty against forgery).
const MAC_LEN: usize = 32;
/// Most nonces whose count is tracked at once: a bound on memory whatever happens.
const MAX_TRACKED: usize = 100_000;

/// What checking a nonce says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Ours and young enough.
    Fresh,
    /// Ours but expired: re-challenge with stale=true.
    Stale,
    /// Not ours (forged, other secret, or malformed).
    Invalid,
}

/// Issues and checks nonces; tracks nonce-counts.
pub struct Nonces {
    secret: Vec<u8>,
    lifetime: Duration,
    /// nonce -> (highest nc accepted, issue time in seconds).
    counts: HashMap<String, (u32, u64)>,
    /// Makes every nonce unique.
    issued: std::sync::atomic::AtomicU64,
}

impl Nonces {
    /// A nonce authority with this secret; nonces older than `lifetime` are stale.
    pub fn new(secret: Vec<u8>, lifetime: Duration) -> Nonces {
        Nonces {
            secret,
            lifetime,
            counts: HashMap::new(),
            issued: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn mac(&self, ts: &str, realm: &str) -> String {
        // new_from_slice accepts keys of any length for HMAC.
        let mut m = match HmacSha256::new_from_slice(&self.secret) {
            Ok(m) => m,
            Err(_) => return String::new(),
        };
        m.update(ts.as_bytes());
        m.update(b"|");
        m.update(realm.as_bytes());
        let tag = m.finalize().into_bytes();
        let mut h = super::digest::hex(&tag);
        h.truncate(MAC_LEN);
        h
    }

    /// A new nonce for `realm` at time `now_secs` (seconds on any monotonic-enough clock).
    pub fn issue(&self, realm: &str, now_secs: u64) -> String {
        let n = self
            .issued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let head = format!("{now_secs:016x}{n:016x}");
        let mac = self.mac(&head, realm);
        format!("{head}{mac}")
    }

    /// Check a nonce presented for `realm`.
    pub fn check(&self, nonce: &str, realm: &str, now_secs: u64) -> Verdict {
        if nonce.len() != TS_LEN + UNIQ_LEN + MAC_LEN || !nonce.is_ascii() {
            return Verdict::Invalid;
        }
        let (head, mac) = nonce.split_at(TS_LEN + UNIQ_LEN);
        let Ok(issued) = u64::from_str_radix(&head[..TS_LEN], 16) else {
            return Verdict::Invalid;
        };
        if !constant_time_eq(mac.as_bytes(), self.mac(head, realm).as_bytes()) {
            return Verdict::Invalid;
        }
        // A nonce from the future (clock went back, or forged with a leaked secret) is stale.
        if issued > now_secs || now_secs - issued > self.lifetime.as_secs() {
            return Verdict::Stale;
        }
        Verdict::Fresh
    }

    /// Record nonce-count `nc` (hex) for a nonce whose credentials were right: true when it
    /// is higher than every count seen before for that nonce, false for a replay.
    pub fn accept_count(&mut self, nonce: &str, nc: &str, now_secs: u64) -> bool {
        let Ok(n) = u32::from_str_radix(nc, 16) else {
            return false;
        };
        if nc.len() != 8 || n == 0 {
            return false;
        }
        if let Some((last, _)) = self.counts.get_mut(nonce) {
            if n <= *last {
                return false;
            }
            *last = n;
            return true;
        }
        if self.counts.len() >= MAX_TRACKED {
            self.expire(now_secs);
            if self.counts.len() >= MAX_TRACKED {
                // Refuse rather than forget a count: a forgotten one would allow a replay.
                return false;
            }
        }
        self.counts.insert(nonce.to_string(), (n, now_secs));
        true
    }

    /// Forget the counts of nonces that are stale anyway.
    pub fn expire(&mut self, now_secs: u64) {
        let life = self.lifetime.as_secs();
        self.counts
            .retain(|_, (_, first)| now_secs.saturating_sub(*first) <= life + 1);
    }

    /// Nonces whose counts are tracked.
    pub fn tracked(&self) -> usize {
        self.counts.len()
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n() -> Nonces {
        Nonces::new(b"secret".to_vec(), Duration::from_secs(300))
    }

    #[test]
    fn fresh_stale_invalid() {
        let a = n();
        let nonce = a.issue("example.com", 1000);
        assert_ne!(
            nonce,
            a.issue("example.com", 1000),
            "unique in the same second"
        );
        assert_eq!(a.check(&nonce, "example.com", 1000), Verdict::Fresh);
        assert_eq!(a.check(&nonce, "example.com", 1300), Verdict::Fresh);
        assert_eq!(a.check(&nonce, "example.com", 1301), Verdict::Stale);
        assert_eq!(a.check(&nonce, "example.com", 999), Verdict::Stale);
        // Bound to the realm and the secret.
        assert_eq!(a.check(&nonce, "other.com", 1000), Verdict::Invalid);
        let b = Nonces::new(b"other".to_vec(), Duration::from_secs(300));
        assert_eq!(b.check(&nonce, "example.com", 1000), Verdict::Invalid);
        // A tampered timestamp breaks the MAC.
        let mut t = nonce.clone();
        t.replace_range(15..16, if &nonce[15..16] == "0" { "1" } else { "0" });
        assert_eq!(a.check(&t, "example.com", 1000), Verdict::Invalid);
        assert_eq!(a.check("short", "example.com", 1000), Verdict::Invalid);
    }

    #[test]
    fn replay() {
        let mut a = n();
        let nonce = a.issue("r", 10);
        assert!(a.accept_count(&nonce, "00000001", 10));
        assert!(
            !a.accept_count(&nonce, "00000001", 11),
            "same nc is a replay"
        );
        assert!(a.accept_count(&nonce, "00000003", 11));
        assert!(
            !a.accept_count(&nonce, "00000002", 11),
            "lower nc is a replay"
        );
        assert!(!a.accept_count(&nonce, "zz", 11));
        assert_eq!(a.tracked(), 1);
        a.expire(10 + 302);
        assert_eq!(a.tracked(), 0);
    }
}
