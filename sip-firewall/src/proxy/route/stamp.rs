//! The stamps we put in Route entries: the dialog stamp of our Record-Route (its parties,
//! sealed under our key, RFC 3261 16.6 step 4) and the cluster hop seal of a Path route
//! (RFC 3327, issue 13), each authenticated with HMAC-SHA256.

use std::net::{IpAddr, SocketAddr};

use sip_firewall_sip::{
    Transport,
    uri::{self, Uri},
};

use super::entry_uri;
use crate::seams::Destination;

/// The URI parameter of our Record-Route that binds it to its dialog.
pub const STAMP_PARAM: &str = "sfw";

/// HMAC-SHA256 of `parts` (each length-prefixed, so that no two lists collide) under
/// `key`.
pub fn mac(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    use hmac::{Hmac, Mac as _};
    let Ok(mut m) = Hmac::<sha2::Sha256>::new_from_slice(key) else {
        // HMAC takes keys of any length: unreachable, and harmless (all zero).
        return [0; 32];
    };
    for p in parts {
        m.update(&(p.len() as u64).to_le_bytes());
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// Bytes of the stamp's authentication tag (96 bits).
const STAMP_TAG: usize = 12;
/// Bytes of one sealed party: transport, IPv6 (IPv4-mapped) address, port.
const PARTY: usize = 19;

fn party_bytes(d: &Destination) -> [u8; PARTY] {
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

fn party_of(b: &[u8]) -> Option<Destination> {
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

/// The keystream that hides the parties: as long as both, from the tag (a synthetic IV).
fn keystream(key: &[u8], tag: &[u8]) -> [u8; 2 * PARTY] {
    let a = mac(key, &[b"dialog-stream", tag, b"0"]);
    let b = mac(key, &[b"dialog-stream", tag, b"1"]);
    let mut out = [0u8; 2 * PARTY];
    out[..32].copy_from_slice(&a);
    out[32..].copy_from_slice(&b[..2 * PARTY - 32]);
    out
}

fn stamp_tag(key: &[u8], call_id: &str, from_tag: &str, parties: &[u8]) -> [u8; 32] {
    mac(
        key,
        &[b"dialog", call_id.as_bytes(), from_tag.as_bytes(), parties],
    )
}

/// The stamp of a dialog, sealed in our Record-Route: it binds the Call-ID, the caller's
/// From-tag and the two parties as the edge reaches them (`caller`: where the dialog-creating
/// request came from; `callee`: where it went), authenticated (HMAC-SHA256, 96 bits) and
/// encrypted (the parties' addresses are not shown to each other) under the proxy's key, a
/// deterministic authenticated encryption (SIV: the tag is the IV). Only the parties of
/// this very dialog get anything relayed with it, and only toward each other.
///
/// The To-tag is not bound: it does not exist yet when the dialog-creating request is
/// record-routed, and a forked request gets one per branch; the parties' addresses are what
/// keeps a replayed stamp from being used by or toward anybody else.
pub fn seal_dialog(
    key: &[u8],
    call_id: &str,
    from_tag: &str,
    caller: Destination,
    callee: Destination,
) -> String {
    let mut data = [0u8; 2 * PARTY];
    data[..PARTY].copy_from_slice(&party_bytes(&caller));
    data[PARTY..].copy_from_slice(&party_bytes(&callee));
    let tag = stamp_tag(key, call_id, from_tag, &data);
    let ks = keystream(key, &tag[..STAMP_TAG]);
    for (d, k) in data.iter_mut().zip(ks) {
        *d ^= k;
    }
    let mut out = crate::auth::digest::hex(&tag[..STAMP_TAG]);
    out.push_str(&crate::auth::digest::hex(&data));
    out
}

/// The parties (caller, callee) of a stamp, when it is one of ours for this Call-ID and one
/// of `tags` (the From-tag of the dialog-creating request: From or To of an in-dialog
/// request, depending on who sends it).
pub fn open_dialog(
    key: &[u8],
    call_id: &str,
    tags: &[&str],
    stamp: &str,
) -> Option<(Destination, Destination)> {
    let raw = unhex(stamp)?;
    if raw.len() != STAMP_TAG + 2 * PARTY {
        return None;
    }
    let (tag, sealed) = raw.split_at(STAMP_TAG);
    let ks = keystream(key, tag);
    let data: Vec<u8> = sealed.iter().zip(ks).map(|(c, k)| c ^ k).collect();
    let ok = tags.iter().any(|t| {
        let want = stamp_tag(key, call_id, t, &data);
        // Constant time: no early exit on the first differing byte.
        want[..STAMP_TAG]
            .iter()
            .zip(tag)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    });
    if !ok {
        return None;
    }
    Some((party_of(&data[..PARTY])?, party_of(&data[PARTY..])?))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 2 * (STAMP_TAG + 2 * PARTY) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The Route parameter of a request one cluster node sends another through the Path of a
/// registration (RFC 3327; issue 13).
pub const CLUSTER_PARAM: &str = "sfwc";
/// How far the time of a cluster hop's seal may be from ours (clock skew between nodes and
/// the time in flight); older seals are refused, so a copied one is good for this long only,
/// and only for the same Call-ID and Request-URI.
pub const CLUSTER_HOP_WINDOW: u64 = 60;
/// Bytes of a cluster hop's tag (128 bits).
const HOP_TAG: usize = 16;
/// The longest AOR a cluster hop carries.
const HOP_MAX_AOR: usize = 512;

fn hop_tag(key: &[u8], unix: u64, aor: &str, call_id: &str, ruri: &str) -> [u8; 32] {
    mac(
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
    let tag = hop_tag(key, unix, aor, call_id, ruri);
    format!(
        "{unix}.{}.{}",
        crate::auth::digest::hex(aor.as_bytes()),
        crate::auth::digest::hex(&tag[..HOP_TAG])
    )
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
    let hexbytes = |s: &str| -> Option<Vec<u8>> {
        if !s.len().is_multiple_of(2) {
            return None;
        }
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
            .collect()
    };
    let aor = String::from_utf8(hexbytes(aor_hex)?).ok()?;
    let tag = hexbytes(tag_hex)?;
    let want = hop_tag(key, unix, &aor, call_id, ruri);
    let diff = want[..HOP_TAG]
        .iter()
        .zip(&tag)
        .fold(0u8, |acc, (a, b)| acc | (a ^ b));
    (diff == 0).then_some(aor)
}

/// The cluster hop parameter of a `<uri>;params` Route entry.
pub fn cluster_hop_of(entry: &str) -> Option<String> {
    match uri::parse(entry_uri(entry)?) {
        Ok(Uri::Sip(u)) => u.param(CLUSTER_PARAM).map(str::to_string),
        _ => None,
    }
}

/// The stamp parameter of a `<uri>;params` Route entry.
pub fn stamp_of(entry: &str) -> Option<String> {
    match uri::parse(entry_uri(entry)?) {
        Ok(Uri::Sip(u)) => u.param(STAMP_PARAM).map(str::to_string),
        _ => None,
    }
}
