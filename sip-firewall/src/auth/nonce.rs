//! Nonces the server verifies without remembering them: a timestamp, a per-challenge unique
//! number, the boot and node that issued it, and two HMAC-SHA-256 tags under the nonce key
//! (`Purpose::Nonce` of `[auth] secret`): one of those fields and the realm, one of the same
//! and the client's address. A nonce cannot be forged, its age is known (stale=true once it
//! is too old), and it is good only from the address it was sent to (a subscriber could
//! REGISTER bindings from spoofed sources with a nonce of its own). Because the challenge
//! went to that address, credentials computed over the nonce prove that the sender receives
//! there: failures after it (wrong password, unknown user, URI mismatch, replay) are
//! evidence the source itself produced.
//!
//! Replay protection needs a little state: the highest nonce-count seen per nonce, kept only
//! for nonces that authenticated someone and only for their lifetime, in a bounded table of
//! this process. So a nonce is good only in the process that issued it: the boot id (random
//! at each start) and the node id (`[cluster] node`, 0 when standalone) it carries, under
//! its tags, must be ours. Another boot's or node's nonce, which every node sharing the
//! secret can verify but whose counts none of them holds, is answered with a fresh challenge
//! with stale=true (RFC 7616 3.4.5 / RFC 3261 22.4: the credentials may be right, the nonce
//! is not good here; the client retries without asking its user), never accepted.
//! When the count table is full, the counts of the oldest nonces are forgotten and every
//! nonce issued up to the newest of them becomes stale: no replay becomes possible, and no
//! valid client fails.
//!
//! Nonces made under a previous secret (`[auth] previous_secrets`) keep verifying; new ones
//! use the current key. Each verification under a previous key is counted.

use std::{collections::HashMap, net::IpAddr, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac as _};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of the timestamp (seconds since the epoch, good until 2106).
const TS_LEN: usize = 4;
/// Bytes of the unique part: two challenges in the same second must differ, or the
/// nonce-count of one client would look like a replay of another's.
const UNIQ_LEN: usize = 4;
/// Bytes of the boot id (64 random bits per start).
const BOOT_LEN: usize = 8;
/// Bytes of the node id.
const NODE_LEN: usize = 4;
/// Bytes of the tag over the head and the realm (tells "ours, for another client" from
/// "not ours").
const REALM_MAC_LEN: usize = 8;
/// Bytes of the tag that also covers the client's address (96 bits against forgery).
const CLIENT_MAC_LEN: usize = 12;
const HEAD_LEN: usize = TS_LEN + UNIQ_LEN + BOOT_LEN + NODE_LEN;
const RAW_LEN: usize = HEAD_LEN + REALM_MAC_LEN + CLIENT_MAC_LEN;
/// Characters of a nonce: its bytes in base64url without padding (RFC 4648 5), shorter
/// than hex, so that a challenge to an unverified source stays within twice what it sent.
const NONCE_LEN: usize = (RAW_LEN * 4).div_ceil(3);
/// Most nonces whose count is tracked at once: a bound on memory whatever happens.
const MAX_TRACKED: usize = 100_000;

/// What checking a nonce says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Ours, young enough, and issued to this client.
    Fresh,
    /// Ours but expired: re-challenge with stale=true.
    Stale,
    /// Ours, but issued to another address: re-challenge with stale=true, never accept.
    OtherClient,
    /// Made under our secret by an earlier start of this node (a restart): its counts are
    /// gone, so re-challenge with stale=true, never accept.
    OtherBoot,
    /// Made under our secret by another node: re-challenge with stale=true, never accept.
    OtherNode,
    /// Not ours (forged, other secret, or malformed).
    Invalid,
}

/// What recording a nonce-count says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Count {
    /// Higher than every count seen for that nonce.
    Accepted,
    /// Not higher: a replay (or malformed).
    Replay,
    /// The nonce's counts were forgotten when the table was full: re-challenge, stale=true.
    Stale,
}

/// Issues and checks nonces; tracks nonce-counts.
pub struct Nonces {
    /// The nonce keys, current first (new nonces), then the previous ones.
    keys: Zeroizing<Vec<[u8; 32]>>,
    /// This process's start, as written in its nonces.
    boot: [u8; BOOT_LEN],
    /// This node, as written in its nonces.
    node: [u8; NODE_LEN],
    lifetime: Duration,
    /// nonce -> (highest nc accepted, issue time in seconds).
    counts: HashMap<String, (u32, u64)>,
    /// Nonces issued at or before this second whose counts are not tracked are stale.
    forgotten_upto: Option<u64>,
    capacity: usize,
    /// Makes every nonce unique.
    issued: std::sync::atomic::AtomicU32,
    /// Nonces that verified under a previous key.
    previous_key: Option<prometheus::IntCounter>,
}

impl Nonces {
    /// A nonce authority with these keys (the current first, then previous ones still
    /// accepted) for the process started as `boot`; nonces older than `lifetime` are stale.
    pub fn new(keys: Vec<[u8; 32]>, lifetime: Duration, boot: u64) -> Nonces {
        Nonces::with_capacity(keys, lifetime, boot, MAX_TRACKED)
    }

    /// The same with at most `capacity` counts tracked.
    pub fn with_capacity(
        keys: Vec<[u8; 32]>,
        lifetime: Duration,
        boot: u64,
        capacity: usize,
    ) -> Nonces {
        Nonces {
            keys: Zeroizing::new(keys),
            boot: boot.to_be_bytes(),
            node: [0; NODE_LEN],
            lifetime,
            counts: HashMap::new(),
            forgotten_upto: None,
            capacity: capacity.max(1),
            issued: std::sync::atomic::AtomicU32::new(0),
            previous_key: None,
        }
    }

    /// Count each nonce that verifies under a previous key in `counter`.
    pub fn count_previous_key(&mut self, counter: prometheus::IntCounter) {
        self.previous_key = Some(counter);
    }

    /// This node's name (`[cluster] node`): its nonces carry it, and nonces of other nodes
    /// are stale here. Nonces this node issued before are stale from now on.
    pub fn set_node(&mut self, name: &str) {
        let h = Sha256::digest(name.as_bytes());
        self.node.copy_from_slice(&h[..NODE_LEN]);
    }

    /// The keys from now on (a new secret: the current first, the previous ones after it).
    pub fn set_keys(&mut self, keys: Vec<[u8; 32]>) {
        self.keys = Zeroizing::new(keys);
    }

    /// Nonces older than `lifetime` are stale from now on.
    pub fn set_lifetime(&mut self, lifetime: Duration) {
        self.lifetime = lifetime;
    }

    /// The HMAC of `head` for `realm` (and `client` when given) under `key`; None never
    /// happens (HMAC takes keys of any length) and verifies nothing.
    fn mac(key: &[u8; 32], head: &[u8], realm: &str, client: Option<IpAddr>) -> Option<HmacSha256> {
        let mut m = HmacSha256::new_from_slice(key).ok()?;
        m.update(head);
        m.update(b"|");
        m.update(realm.as_bytes());
        if let Some(ip) = client {
            m.update(b"|");
            // One spelling per address: IPv4-mapped IPv6 as IPv4.
            m.update(ip.to_canonical().to_string().as_bytes());
        }
        Some(m)
    }

    /// The first `len` bytes of a tag.
    fn tag(m: Option<HmacSha256>, len: usize) -> Vec<u8> {
        let mut t = m
            .map(|m| m.finalize().into_bytes().to_vec())
            .unwrap_or_default();
        t.truncate(len);
        t
    }

    /// Whether `tag` is the left part of the HMAC (compared in constant time).
    fn verifies(m: Option<HmacSha256>, tag: &[u8]) -> bool {
        m.is_some_and(|m| m.verify_truncated_left(tag).is_ok())
    }

    /// A new nonce for `realm`, sent to `client`, at time `now_secs` (seconds since the epoch).
    pub fn issue(&self, realm: &str, client: IpAddr, now_secs: u64) -> String {
        let n = self
            .issued
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut raw = Vec::with_capacity(RAW_LEN);
        // The timestamp is the low 32 bits of the epoch seconds.
        raw.extend_from_slice(&(now_secs as u32).to_be_bytes());
        raw.extend_from_slice(&n.to_be_bytes());
        raw.extend_from_slice(&self.boot);
        raw.extend_from_slice(&self.node);
        if let Some(key) = self.keys.first() {
            let realm_mac = Nonces::tag(Nonces::mac(key, &raw, realm, None), REALM_MAC_LEN);
            let client_mac =
                Nonces::tag(Nonces::mac(key, &raw, realm, Some(client)), CLIENT_MAC_LEN);
            raw.extend_from_slice(&realm_mac);
            raw.extend_from_slice(&client_mac);
        }
        // No key: a nonce nothing verifies (every answer to it gets a new challenge).
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// The bytes of a nonce of our format and spelling.
    fn decode(nonce: &str) -> Option<[u8; RAW_LEN]> {
        if nonce.len() != NONCE_LEN {
            return None;
        }
        // The decoder refuses non-zero trailing bits: one spelling per nonce, so that no
        // other spelling of a nonce is another entry of the count table (a replay taken for
        // a first use).
        URL_SAFE_NO_PAD.decode(nonce).ok()?.try_into().ok()
    }

    /// The issue time of a nonce of our format.
    fn issued_at(nonce: &str) -> Option<u64> {
        let raw = Nonces::decode(nonce)?;
        let ts: [u8; TS_LEN] = raw.get(..TS_LEN)?.try_into().ok()?;
        Some(u64::from(u32::from_be_bytes(ts)))
    }

    /// Check a nonce presented for `realm` by `client`.
    pub fn check(&self, nonce: &str, realm: &str, client: IpAddr, now_secs: u64) -> Verdict {
        let (Some(raw), Some(issued)) = (Nonces::decode(nonce), Nonces::issued_at(nonce)) else {
            return Verdict::Invalid;
        };
        let (head, macs) = raw.split_at(HEAD_LEN);
        let (realm_mac, client_mac) = macs.split_at(REALM_MAC_LEN);
        // Constant-time comparisons of the truncated tags (hmac's verify_truncated_left).
        let Some(i) = self
            .keys
            .iter()
            .position(|k| Nonces::verifies(Nonces::mac(k, head, realm, None), realm_mac))
        else {
            return Verdict::Invalid;
        };
        if i > 0
            && let Some(c) = &self.previous_key
        {
            c.inc();
        }
        let boot = &head[TS_LEN + UNIQ_LEN..TS_LEN + UNIQ_LEN + BOOT_LEN];
        let node = &head[TS_LEN + UNIQ_LEN + BOOT_LEN..];
        if node != self.node {
            return Verdict::OtherNode;
        }
        if boot != self.boot {
            return Verdict::OtherBoot;
        }
        let key = self.keys.get(i);
        if !key.is_some_and(|k| {
            Nonces::verifies(Nonces::mac(k, head, realm, Some(client)), client_mac)
        }) {
            return Verdict::OtherClient;
        }
        // The timestamp is the low 32 bits of the epoch seconds.
        let now = now_secs & u64::from(u32::MAX);
        // A nonce from the future (clock went back, or forged with a leaked secret) is stale.
        if issued > now || now - issued > self.lifetime.as_secs() {
            return Verdict::Stale;
        }
        Verdict::Fresh
    }

    /// Record nonce-count `nc` (hex) for a nonce whose credentials were right.
    pub fn accept_count(&mut self, nonce: &str, nc: &str, now_secs: u64) -> Count {
        let Ok(n) = u32::from_str_radix(nc, 16) else {
            return Count::Replay;
        };
        if nc.len() != 8 || n == 0 {
            return Count::Replay;
        }
        if let Some((last, _)) = self.counts.get_mut(nonce) {
            if n <= *last {
                return Count::Replay;
            }
            *last = n;
            return Count::Accepted;
        }
        let issued = Nonces::issued_at(nonce).unwrap_or(0);
        if self.forgotten_upto.is_some_and(|t| issued <= t) {
            // Its counts may have been forgotten: a replay cannot be told from a first use.
            return Count::Stale;
        }
        if self.counts.len() >= self.capacity {
            self.expire(now_secs);
            if self.counts.len() >= self.capacity {
                self.forget_oldest();
                if self.forgotten_upto.is_some_and(|t| issued <= t) {
                    return Count::Stale;
                }
            }
        }
        self.counts.insert(nonce.to_string(), (n, issued));
        Count::Accepted
    }

    /// Forget the counts of the oldest eighth of the table (by issue time), and make every
    /// nonce issued up to then stale.
    fn forget_oldest(&mut self) {
        let mut times: Vec<u64> = self.counts.values().map(|v| v.1).collect();
        let k = (times.len() / 8).min(times.len().saturating_sub(1));
        let newest = times.iter().copied().max().unwrap_or(0);
        let (_, &mut mut threshold, _) = times.select_nth_unstable(k);
        // Keep the newest second's nonces when older ones can go: they are the ones clients
        // are answering right now.
        if threshold >= newest && times.iter().any(|&t| t < newest) {
            threshold = newest - 1;
        }
        let before = self.counts.len();
        self.counts.retain(|_, v| v.1 > threshold);
        self.forgotten_upto = Some(self.forgotten_upto.map_or(threshold, |t| t.max(threshold)));
        for _ in self.counts.len()..before {
            crate::metrics::limit_hit("nonce_counts_evicted", None);
        }
    }

    /// Forget the counts of nonces that are stale anyway.
    pub fn expire(&mut self, now_secs: u64) {
        let life = self.lifetime.as_secs();
        let now = now_secs & u64::from(u32::MAX);
        self.counts
            .retain(|_, (_, issued)| now.saturating_sub(*issued) <= life + 1);
    }

    /// Nonces whose counts are tracked.
    pub fn tracked(&self) -> usize {
        self.counts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];
    const BOOT: u64 = 0x0123_4567_89ab_cdef;

    fn n() -> Nonces {
        Nonces::new(vec![KEY], Duration::from_secs(300), BOOT)
    }

    /// The nonce with bytes `at..` of its raw form replaced by `with`.
    fn tamper(nonce: &str, at: usize, with: &[u8]) -> String {
        let mut raw = Nonces::decode(nonce).expect("ours");
        raw[at..at + with.len()].copy_from_slice(with);
        URL_SAFE_NO_PAD.encode(raw)
    }

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 2));

    #[test]
    fn fresh_stale_invalid() {
        let a = n();
        let nonce = a.issue("example.com", A, 1000);
        assert_eq!(nonce.len(), NONCE_LEN);
        assert_ne!(
            nonce,
            a.issue("example.com", A, 1000),
            "unique in the same second"
        );
        assert_eq!(a.check(&nonce, "example.com", A, 1000), Verdict::Fresh);
        assert_eq!(a.check(&nonce, "example.com", A, 1300), Verdict::Fresh);
        assert_eq!(a.check(&nonce, "example.com", A, 1301), Verdict::Stale);
        assert_eq!(a.check(&nonce, "example.com", A, 999), Verdict::Stale);
        // Bound to the realm and the secret.
        assert_eq!(a.check(&nonce, "other.com", A, 1000), Verdict::Invalid);
        let b = Nonces::new(vec![[8; 32]], Duration::from_secs(300), BOOT);
        assert_eq!(b.check(&nonce, "example.com", A, 1000), Verdict::Invalid);
        // A tampered timestamp breaks the MAC.
        let ts = Nonces::decode(&nonce).expect("ours")[3];
        let t = tamper(&nonce, 3, &[ts ^ 1]);
        assert_eq!(a.check(&t, "example.com", A, 1000), Verdict::Invalid);
        assert_eq!(a.check("short", "example.com", A, 1000), Verdict::Invalid);
    }

    /// Our nonce in another spelling (trailing bits set in its last character, which a
    /// lax decoder would read as the same bytes) is not ours: it would be a second entry of
    /// the count table, a replay taken for a first use.
    #[test]
    fn only_our_spelling() {
        let a = n();
        let nonce = a.issue("example.com", A, 1000);
        assert_eq!(a.check(&nonce, "example.com", A, 1000), Verdict::Fresh);
        // 40 bytes in 54 characters: the last one carries 4 bits and 2 unused zero bits.
        let last = nonce.as_bytes()[NONCE_LEN - 1];
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let v = ALPHABET.iter().position(|&c| c == last).expect("base64url");
        assert_eq!(v & 3, 0, "canonical");
        let other = format!("{}{}", &nonce[..NONCE_LEN - 1], ALPHABET[v | 1] as char);
        assert_eq!(a.check(&other, "example.com", A, 1000), Verdict::Invalid);
        assert_eq!(
            a.check(&nonce.to_ascii_uppercase(), "example.com", A, 1000),
            Verdict::Invalid
        );
    }

    /// A nonce of an earlier start of this node (same secret, same node, another boot id)
    /// is stale, whatever its age and client; a forged boot id breaks the tag.
    #[test]
    fn other_boot() {
        let before = n();
        let nonce = before.issue("example.com", A, 1000);
        let after = Nonces::new(vec![KEY], Duration::from_secs(300), BOOT + 1);
        assert_eq!(
            after.check(&nonce, "example.com", A, 1000),
            Verdict::OtherBoot
        );
        assert_eq!(
            after.check(&nonce, "example.com", B, 1000),
            Verdict::OtherBoot
        );
        assert_eq!(before.check(&nonce, "example.com", A, 1000), Verdict::Fresh);
        // Rewriting the boot id to ours: no longer ours at all.
        let t = tamper(&nonce, TS_LEN + UNIQ_LEN, &after.boot);
        assert_eq!(after.check(&t, "example.com", A, 1000), Verdict::Invalid);
    }

    /// A nonce of another node sharing the secret is stale here, even with the same boot
    /// id; a node's own nonces stay good on it.
    #[test]
    fn other_node() {
        let mut a = n();
        a.set_node("edge-a");
        let mut b = n();
        b.set_node("edge-b");
        let nonce = a.issue("example.com", A, 1000);
        assert_eq!(b.check(&nonce, "example.com", A, 1000), Verdict::OtherNode);
        assert_eq!(a.check(&nonce, "example.com", A, 1000), Verdict::Fresh);
        // A standalone daemon's nonce on a node, and the other way round.
        let standalone = n();
        let lone = standalone.issue("example.com", A, 1000);
        assert_eq!(a.check(&lone, "example.com", A, 1000), Verdict::OtherNode);
        assert_eq!(
            standalone.check(&nonce, "example.com", A, 1000),
            Verdict::OtherNode
        );
    }

    /// Nonces made under a previous key verify (counted), new ones use the current key;
    /// a key dropped from the ring verifies nothing.
    #[test]
    fn previous_key() {
        let old = [1; 32];
        let new = [2; 32];
        let mut a = Nonces::new(vec![old], Duration::from_secs(300), BOOT);
        let made_before = a.issue("example.com", A, 1000);
        let counter = prometheus::IntCounter::new("t", "t").unwrap();
        a.count_previous_key(counter.clone());
        a.set_keys(vec![new, old]);
        let made_after = a.issue("example.com", A, 1000);
        assert_eq!(a.check(&made_after, "example.com", A, 1000), Verdict::Fresh);
        assert_eq!(counter.get(), 0, "the current key is not counted");
        assert_eq!(
            a.check(&made_before, "example.com", A, 1000),
            Verdict::Fresh
        );
        assert_eq!(counter.get(), 1);
        // Made under the new key only.
        let only_old = Nonces::new(vec![old], Duration::from_secs(300), BOOT);
        assert_eq!(
            only_old.check(&made_after, "example.com", A, 1000),
            Verdict::Invalid
        );
        a.set_keys(vec![new]);
        assert_eq!(
            a.check(&made_before, "example.com", A, 1000),
            Verdict::Invalid
        );
        assert_eq!(counter.get(), 1);
    }

    /// A nonce is good only from the address it was sent to; the same address
    /// written as IPv4-mapped IPv6 is the same client.
    #[test]
    fn bound_to_the_client_address() {
        let a = n();
        let nonce = a.issue("example.com", A, 1000);
        assert_eq!(
            a.check(&nonce, "example.com", B, 1000),
            Verdict::OtherClient
        );
        let mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        assert_eq!(a.check(&nonce, "example.com", mapped, 1000), Verdict::Fresh);
        // A forged client tag is still "other client", never accepted; a forged realm tag is
        // not ours at all.
        let last = Nonces::decode(&nonce).expect("ours")[RAW_LEN - 1];
        let t = tamper(&nonce, RAW_LEN - 1, &[last ^ 1]);
        assert_eq!(a.check(&t, "example.com", A, 1000), Verdict::OtherClient);
    }

    #[test]
    fn replay() {
        let mut a = n();
        let nonce = a.issue("r", A, 10);
        assert_eq!(a.accept_count(&nonce, "00000001", 10), Count::Accepted);
        assert_eq!(
            a.accept_count(&nonce, "00000001", 11),
            Count::Replay,
            "same nc is a replay"
        );
        assert_eq!(a.accept_count(&nonce, "00000003", 11), Count::Accepted);
        assert_eq!(
            a.accept_count(&nonce, "00000002", 11),
            Count::Replay,
            "lower nc is a replay"
        );
        assert_eq!(a.accept_count(&nonce, "zz", 11), Count::Replay);
        assert_eq!(a.tracked(), 1);
        a.expire(10 + 302);
        assert_eq!(a.tracked(), 0);
    }

    /// A subscriber filling the table must not make valid logins fail as "replays" (and
    /// get their user banned): the table stays bounded, the oldest counts are forgotten, the nonces they covered turn stale (a transparent re-challenge), replays of
    /// them stay refused, and fresh nonces keep working.
    #[test]
    fn full_table_fails_no_valid_client() {
        let mut a = Nonces::with_capacity(vec![KEY], Duration::from_secs(300), BOOT, 64);
        let victim = a.issue("r", B, 100);
        assert_eq!(a.accept_count(&victim, "00000001", 100), Count::Accepted);
        // The filler: one fresh nonce per login, each used once, 30 a second.
        for i in 0..300u64 {
            let t = 101 + i / 30;
            let x = a.issue("r", A, t);
            assert_eq!(a.accept_count(&x, "00000001", t), Count::Accepted, "{i}");
            assert!(a.tracked() <= 64);
        }
        // The victim's old nonce: forgotten, so stale (re-challenge), never a replay.
        assert_eq!(a.accept_count(&victim, "00000001", 111), Count::Stale);
        assert_eq!(a.accept_count(&victim, "00000002", 111), Count::Stale);
        // With a new nonce the victim logs in.
        let fresh = a.issue("r", B, 112);
        assert_eq!(a.accept_count(&fresh, "00000001", 112), Count::Accepted);
        assert_eq!(a.accept_count(&fresh, "00000002", 112), Count::Accepted);
        assert_eq!(a.accept_count(&fresh, "00000002", 112), Count::Replay);
    }
}
