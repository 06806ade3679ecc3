//! The stamps we put in Route entries: the dialog stamp of our Record-Route (its parties,
//! sealed with AES-SIV, RFC 5297, under a key of our secret; RFC 3261 16.6 step 4) and the
//! cluster hop seal of a Path route (RFC 3327, HMAC-SHA256).

use std::net::{IpAddr, SocketAddr};

use aes_siv::{KeyInit as _, siv::Aes256Siv};
use hmac::{Hmac, Mac as _};
use sip_firewall_sip::{
    Transport,
    uri::{self, Uri},
};
use zeroize::Zeroizing;

use super::entry_uri;
use crate::{
    auth::{
        digest::hex,
        keys::{KeyRing, Purpose, Secret},
    },
    seams::Destination,
};

/// The URI parameter of our Record-Route that binds it to its dialog.
pub const STAMP_PARAM: &str = "sfw";

/// HMAC-SHA256 of `parts` (each length-prefixed, so that no two lists collide) under
/// `key`.
pub fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    match hmac_of(key, parts) {
        Some(m) => m.finalize().into_bytes().into(),
        // HMAC takes keys of any length: unreachable, and harmless (all zero).
        None => [0; 32],
    }
}

/// The HMAC-SHA256 state of [`mac`], before finalising (to verify a tag in constant time).
fn hmac_of(key: &[u8], parts: &[&[u8]]) -> Option<Hmac<sha2::Sha256>> {
    let mut m = <Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(key).ok()?;
    for p in parts {
        m.update(&(p.len() as u64).to_le_bytes());
        m.update(p);
    }
    Some(m)
}

/// Bytes of a stamp's head, in clear and authenticated: the id of the secret that sealed
/// it, and when (unix seconds, 32 bits).
pub(super) const HEAD: usize = 5;
/// Bytes of the synthetic IV, AES-SIV's authentication tag (RFC 5297 2.6: 128 bits).
pub(super) const SIV_TAG: usize = 16;
/// Bytes of one sealed party: transport, IPv6 (IPv4-mapped) address, port.
pub(super) const PARTY: usize = 19;
/// Bytes of a whole stamp (written in hex: 118 characters).
const STAMP_BYTES: usize = HEAD + SIV_TAG + 2 * PARTY;

pub(super) fn party_bytes(d: &Destination) -> [u8; PARTY] {
    let mut out = [0u8; PARTY];
    out[0] = match d.transport {
        Transport::Datagram => 0,
        Transport::Stream => 1,
        Transport::Tls => 2,
        Transport::Ws => 3,
        Transport::Wss => 4,
    };
    let ip = match d.addr.ip() {
        IpAddr::V4(v) => v.to_ipv6_mapped(),
        IpAddr::V6(v) => v,
    };
    out[1..17].copy_from_slice(&ip.octets());
    out[17..].copy_from_slice(&d.addr.port().to_be_bytes());
    out
}

pub(super) fn party_of(b: &[u8]) -> Option<Destination> {
    let transport = match b.first()? {
        0 => Transport::Datagram,
        1 => Transport::Stream,
        2 => Transport::Tls,
        3 => Transport::Ws,
        4 => Transport::Wss,
        _ => return None,
    };
    let ip: [u8; 16] = b.get(1..17)?.try_into().ok()?;
    let port: [u8; 2] = b.get(17..19)?.try_into().ok()?;
    Some(Destination {
        addr: SocketAddr::new(
            std::net::Ipv6Addr::from(ip).to_canonical(),
            u16::from_be_bytes(port),
        ),
        transport,
    })
}

/// The ciphers of dialog stamps: the current secret's, which seals, and the previous
/// secrets' (`[auth] previous_secrets`), which still open, each under its secret's id.
pub struct StampKeys {
    current: StampKey,
    previous: Vec<StampKey>,
}

/// One secret's AES-SIV key of one purpose (dialog stamps, flow tokens), under the
/// secret's id.
pub(super) struct StampKey {
    pub(super) id: u8,
    /// AES-256-SIV takes two AES-256 keys (RFC 5297 2.2: one for S2V, one for CTR).
    key: Zeroizing<[u8; 64]>,
}

impl StampKey {
    /// The keys of `purpose` of a key ring: the current secret's (which seals), the previous
    /// secrets' (which still open).
    pub(super) fn ring(ring: &KeyRing, purpose: Purpose) -> (StampKey, Vec<StampKey>) {
        let previous = ring
            .previous()
            .iter()
            .map(|s| Self::of(s, purpose))
            .collect();
        (Self::of(ring.current(), purpose), previous)
    }

    fn of(secret: &Secret, purpose: Purpose) -> StampKey {
        StampKey {
            id: secret.id(),
            key: Zeroizing::new(secret.derive::<64>(purpose)),
        }
    }

    /// The head of what this key seals at `issued` (unix seconds): its id and the time, in
    /// clear and authenticated (32 bits of unix seconds last until 2106).
    pub(super) fn head(&self, issued: u64) -> [u8; HEAD] {
        let mut head = [0u8; HEAD];
        head[0] = self.id;
        head[1..].copy_from_slice(&u32::try_from(issued).unwrap_or(u32::MAX).to_be_bytes());
        head
    }

    /// `data` sealed at `issued` under this key, in hex: head, SIV tag, ciphertext. The
    /// associated data (RFC 5297: one S2V component each) are `bound`, then the head's key
    /// id and issue time ([`with_head`]). Should the cipher fail (unreachable: a 64-byte
    /// key, a few components), zeros of the same length, which open nowhere: never `data`
    /// in clear.
    pub(super) fn seal_hex(&self, issued: u64, bound: &[&[u8]], data: &mut [u8]) -> String {
        let head = self.head(issued);
        let bytes = HEAD + SIV_TAG + data.len();
        let sealed = self.cipher().and_then(|mut c| {
            c.encrypt_in_place_detached(with_head(bound, &head), data)
                .ok()
        });
        let Some(tag) = sealed else {
            return "0".repeat(2 * bytes);
        };
        let mut out = String::with_capacity(2 * bytes);
        out.push_str(&hex(&head));
        out.push_str(&hex(&tag));
        out.push_str(&hex(data));
        out
    }

    pub(super) fn cipher(&self) -> Option<Aes256Siv> {
        Aes256Siv::new_from_slice(&self.key[..]).ok()
    }
}

/// A stamp that opened: the dialog's parties, when it was sealed (unix seconds), and
/// whether a previous secret sealed it: which one of the ring (`secret`: 0 the current,
/// `i + 1` the `i`th previous), whose keys seal what else the dialog shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Opened {
    pub caller: Destination,
    pub callee: Destination,
    pub issued: u64,
    pub previous: bool,
    pub secret: usize,
}

/// What a stamp binds besides its parties (RFC 5297 associated data, one S2V component
/// each): the Call-ID, the caller's From-tag, the key id and the issue time.
fn bound<'a>(call_id: &'a str, from_tag: &'a str, head: &'a [u8]) -> Vec<&'a [u8]> {
    with_head(&[call_id.as_bytes(), from_tag.as_bytes()], head)
}

/// Associated data `bound`, then a sealed value's key id and issue time (its `head`).
pub(super) fn with_head<'a>(bound: &[&'a [u8]], head: &'a [u8]) -> Vec<&'a [u8]> {
    let mut ad = bound.to_vec();
    ad.push(head.get(..1).unwrap_or_default());
    ad.push(head.get(1..).unwrap_or_default());
    ad
}

impl StampKeys {
    /// The stamp keys of a key ring (HKDF, `Purpose::DialogStamp`).
    pub fn new(ring: &KeyRing) -> StampKeys {
        let (current, previous) = StampKey::ring(ring, Purpose::DialogStamp);
        StampKeys { current, previous }
    }

    /// The stamp of a dialog, sealed in our Record-Route at `issued` (unix seconds): it
    /// binds the Call-ID, the caller's From-tag and the two parties as the edge reaches
    /// them (`caller`: where the dialog-creating request came from; `callee`: where it
    /// went), authenticated and encrypted with AES-SIV (RFC 5297: deterministic, so a
    /// retransmitted request gets the same stamp; the parties' addresses are not shown to
    /// each other), under the current secret, whose id and the issue time it carries in
    /// clear and authenticated. Only the parties of this very dialog get anything relayed
    /// with it, and only toward each other, for as long as `[proxy] stamp_lifetime`.
    ///
    /// The To-tag is not bound: it does not exist yet when the dialog-creating request is
    /// record-routed, and a forked request gets one per branch; the parties' addresses are
    /// what keeps a replayed stamp from being used by or toward anybody else.
    pub fn seal(
        &self,
        issued: u64,
        call_id: &str,
        from_tag: &str,
        caller: Destination,
        callee: Destination,
    ) -> String {
        let mut data = [0u8; 2 * PARTY];
        data[..PARTY].copy_from_slice(&party_bytes(&caller));
        data[PARTY..].copy_from_slice(&party_bytes(&callee));
        self.current.seal_hex(
            issued,
            &[call_id.as_bytes(), from_tag.as_bytes()],
            &mut data,
        )
    }

    /// The stamp opened, when it is one of ours for this Call-ID and one of `tags` (the
    /// From-tag of the dialog-creating request: From or To of an in-dialog request,
    /// depending on who sends it). Only the keys of the stamp's key id are tried: a stamp
    /// of an unknown id costs no cryptography. Its age is the caller's to judge.
    pub fn open(&self, call_id: &str, tags: &[&str], stamp: &str) -> Option<Opened> {
        let raw: [u8; STAMP_BYTES] = unhex_exact(stamp, STAMP_BYTES)?.try_into().ok()?;
        #[cfg(test)]
        counters::OPENED.with(|n| n.set(n.get() + 1));
        let (head, rest) = raw.split_at(HEAD);
        let head: [u8; HEAD] = head.try_into().ok()?;
        let (tag, sealed) = rest.split_at(SIV_TAG);
        let tag = aes_siv::Tag::from_slice(tag);
        let keys = std::iter::once(&self.current)
            .chain(&self.previous)
            .enumerate()
            .filter(|(_, k)| k.id == head[0]);
        for (secret, k) in keys {
            let previous = secret > 0;
            let Some(mut c) = k.cipher() else { continue };
            for (i, t) in tags.iter().enumerate() {
                if tags[..i].contains(t) {
                    continue;
                }
                #[cfg(test)]
                counters::DECRYPTED.with(|n| n.set(n.get() + 1));
                let mut data: [u8; 2 * PARTY] = sealed.try_into().ok()?;
                // Tag compared in constant time by the crate (RFC 5297 2.7).
                if c.decrypt_in_place_detached(bound(call_id, t, &head), &mut data, tag)
                    .is_ok()
                {
                    let issued = u64::from(u32::from_be_bytes(head[1..].try_into().ok()?));
                    return Some(Opened {
                        caller: party_of(&data[..PARTY])?,
                        callee: party_of(&data[PARTY..])?,
                        issued,
                        previous,
                        secret,
                    });
                }
            }
        }
        None
    }
}

/// Test-only counts of the work spent on stamps in this thread: stamps that reached the
/// cipher, and AES-SIV decryptions tried.
#[cfg(test)]
pub mod counters {
    use std::cell::Cell;

    thread_local! {
        pub static OPENED: Cell<usize> = const { Cell::new(0) };
        pub static DECRYPTED: Cell<usize> = const { Cell::new(0) };
    }

    /// (stamps opened, decryptions) since the last call, reset.
    pub fn take() -> (usize, usize) {
        (
            OPENED.with(|n| n.replace(0)),
            DECRYPTED.with(|n| n.replace(0)),
        )
    }
}

/// `s` decoded, when it is hex of exactly `bytes` bytes.
pub(super) fn unhex_exact(s: &str, bytes: usize) -> Option<Vec<u8>> {
    if s.len() != 2 * bytes {
        return None;
    }
    crate::auth::digest::unhex(s)
}

/// The Route parameter of a request one cluster node sends another through the Path of a
/// registration (RFC 3327).
pub const CLUSTER_PARAM: &str = "sfwc";
/// How far the time of a cluster hop's seal may be from ours (clock skew between nodes and
/// the time in flight); older seals are refused, so a copied one is good for this long only,
/// and only for the same Call-ID and Request-URI.
pub const CLUSTER_HOP_WINDOW: u64 = 60;
/// Bytes of a cluster hop's tag (128 bits).
const HOP_TAG: usize = 16;
/// The longest AOR a cluster hop carries.
const HOP_MAX_AOR: usize = 512;

fn hop_mac(
    key: &[u8],
    unix: u64,
    aor: &str,
    call_id: &str,
    ruri: &str,
) -> Option<Hmac<sha2::Sha256>> {
    hmac_of(
        key,
        &[
            b"cluster-hop",
            &unix.to_le_bytes(),
            aor.as_bytes(),
            call_id.as_bytes(),
            ruri.as_bytes(),
        ],
    )
}

/// The seal a node puts on the Path Route of a request it sends to the node holding the
/// flow of `aor`'s contact `ruri`: only a node with the cluster's key (from the shared
/// `[auth] secret`) makes one, so the holding node relays to its flow for cluster nodes
/// only, never for an outsider who writes the same Route (no open relay).
pub fn seal_cluster_hop(key: &[u8], unix: u64, aor: &str, call_id: &str, ruri: &str) -> String {
    let tag: [u8; 32] = hop_mac(key, unix, aor, call_id, ruri)
        .map_or([0; 32], |m| m.finalize().into_bytes().into());
    format!("{unix}.{}.{}", hex(aor.as_bytes()), hex(&tag[..HOP_TAG]))
}

/// The AOR of a cluster hop's seal, when it is valid for this request now.
pub fn open_cluster_hop(
    key: &[u8],
    now_unix: u64,
    seal: &str,
    call_id: &str,
    ruri: &str,
) -> Option<String> {
    let mut it = seal.split('.');
    let unix: u64 = it.next()?.parse().ok()?;
    let aor_hex = it.next()?;
    let tag_hex = it.next()?;
    if it.next().is_some()
        || aor_hex.len() > 2 * HOP_MAX_AOR
        || tag_hex.len() != 2 * HOP_TAG
        || unix.abs_diff(now_unix) > CLUSTER_HOP_WINDOW
    {
        return None;
    }
    let aor = String::from_utf8(crate::auth::digest::unhex(aor_hex)?).ok()?;
    let tag = crate::auth::digest::unhex(tag_hex)?;
    // Constant time (the crate's compare of the leftmost HOP_TAG bytes).
    hop_mac(key, unix, &aor, call_id, ruri)?
        .verify_truncated_left(&tag)
        .ok()
        .map(|()| aor)
}

/// The URI parameter `name` of a `<uri>;params` Route entry.
pub(super) fn param_of(entry: &str, name: &str) -> Option<String> {
    match uri::parse(entry_uri(entry)?) {
        Ok(Uri::Sip(u)) => u.param(name).map(str::to_string),
        _ => None,
    }
}

/// The cluster hop parameter of a `<uri>;params` Route entry.
pub fn cluster_hop_of(entry: &str) -> Option<String> {
    param_of(entry, CLUSTER_PARAM)
}

/// The stamp parameter of a `<uri>;params` Route entry.
pub fn stamp_of(entry: &str) -> Option<String> {
    param_of(entry, STAMP_PARAM)
}

#[cfg(test)]
#[path = "stamp_tests.rs"]
mod tests;
