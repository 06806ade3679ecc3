//! The flow token of the Path entry the edge adds to a REGISTER it relays to the operator's
//! registrar (RFC 3327 4, RFC 5626 5.2): it names the flow the phone registered on (its
//! transport and the address the edge reaches it at), sealed with AES-SIV (RFC 5297) under
//! a key of `[auth] secret` (`Purpose::FlowToken`), so that nobody can write a token that
//! names another phone's flow, and the edge keeps no table from token to flow.
//!
//! The registrar routes requests to the phone through that Path: their top Route is our
//! entry with the token, which [`FlowKeys::open`] turns back into the flow. Whether the
//! flow is still registered, and whether the request may use it at all (only from the
//! registrar or an allow-listed host), is the proxy core's decision.

use sip_firewall_sip::headers::HeaderName;

use super::{
    super::msg::SipMsg,
    paths,
    stamp::{
        HEAD, PARTY, SIV_TAG, StampKey, param_of, party_bytes, party_of, unhex_exact, with_head,
    },
};
use crate::{
    auth::keys::{KeyRing, Purpose},
    seams::Destination,
};

/// The URI parameter of our Path entry that carries the flow token (RFC 5626 5.2 leaves
/// its encoding to the proxy).
pub const FLOW_PARAM: &str = "sfwf";
/// Bytes of a token: head (key id, issue time), SIV tag, the sealed flow (80 hex digits).
const TOKEN_BYTES: usize = HEAD + SIV_TAG + PARTY;
/// What the associated data of a token says besides its head: that it is a flow token
/// (its key is of its own purpose too).
const LABEL: &[u8] = b"flow";

/// The ciphers of flow tokens: the current secret's, which seals, and the previous secrets',
/// which still open (a roll of `[auth] secret` keeps registrations reachable).
pub struct FlowKeys {
    current: StampKey,
    previous: Vec<StampKey>,
}

/// A token that opened: the flow, when it was sealed (unix seconds).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OpenedFlow {
    pub flow: Destination,
    pub issued: u64,
}

impl FlowKeys {
    /// The flow-token keys of a key ring (HKDF, `Purpose::FlowToken`).
    pub fn new(ring: &KeyRing) -> FlowKeys {
        let (current, previous) = StampKey::ring(ring, Purpose::FlowToken);
        FlowKeys { current, previous }
    }

    /// The token of `flow`, sealed at `issued` (unix seconds) under the current secret.
    /// Deterministic (AES-SIV): a retransmitted REGISTER carries the same Path.
    pub fn seal(&self, issued: u64, flow: Destination) -> String {
        self.current
            .seal_hex(issued, &[LABEL], &mut party_bytes(&flow))
    }

    /// The flow a token names, when one of our secrets sealed it (tampered with, made up or
    /// of an unknown secret: None). Only the keys of the token's key id are tried. Its age
    /// is the caller's to judge.
    pub fn open(&self, token: &str) -> Option<OpenedFlow> {
        let raw: [u8; TOKEN_BYTES] = unhex_exact(token, TOKEN_BYTES)?.try_into().ok()?;
        let (head, rest) = raw.split_at(HEAD);
        let (tag, sealed) = rest.split_at(SIV_TAG);
        let tag = aes_siv::Tag::from_slice(tag);
        let keys = std::iter::once(&self.current)
            .chain(self.previous.iter())
            .filter(|k| Some(&k.id) == head.first());
        for k in keys {
            let Some(mut c) = k.cipher() else { continue };
            let mut data: [u8; PARTY] = sealed.try_into().ok()?;
            // Tag compared in constant time by the crate (RFC 5297 2.7).
            if c.decrypt_in_place_detached(with_head(&[LABEL], head), &mut data, tag)
                .is_ok()
            {
                let issued = u64::from(u32::from_be_bytes(head.get(1..)?.try_into().ok()?));
                return Some(OpenedFlow {
                    flow: party_of(&data)?,
                    issued,
                });
            }
        }
        None
    }
}

/// Our Path entry for a flow (RFC 3327 4: `lr`, so the registrar loose-routes through us;
/// RFC 5626 5.2: `ob`, the flow token in a parameter of the URI, which the registrar
/// hands back untouched in the Route of requests to the phone).
pub fn path_entry(hostport: &str, token: &str) -> String {
    format!("<sip:{hostport};lr;ob;{FLOW_PARAM}={token}>")
}

/// `msg` (a REGISTER) with its top Path entry, when it is ours (it has a flow token),
/// naming `hostport`: our side toward the registrar it goes to, which routes back to it
/// (RFC 3327 4.3: a URI the registrar reaches us at).
pub fn path_toward(msg: &mut SipMsg, hostport: &str) {
    let mut entries = paths(msg);
    let Some(first) = entries.first_mut() else {
        return;
    };
    let Some(token) = flow_token_of(first) else {
        return;
    };
    *first = path_entry(hostport, &token);
    msg.replace_all(HeaderName::Other("Path"), entries);
}

/// The flow token of a `<uri>;params` Route entry.
pub fn flow_token_of(entry: &str) -> Option<String> {
    param_of(entry, FLOW_PARAM)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::keys::KeyRing;
    use sip_firewall_sip::Transport;

    fn ring(secret: &str, previous: &[String]) -> KeyRing {
        KeyRing::from_config(Some(secret), previous).expect("ring")
    }

    const S1: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const S2: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    fn flow(addr: &str, transport: Transport) -> Destination {
        Destination {
            addr: addr.parse().expect("addr"),
            transport,
        }
    }

    #[test]
    fn a_token_opens_to_its_flow_only_under_our_secret() {
        let keys = FlowKeys::new(&ring(S1, &[]));
        let f = flow("198.51.100.7:40312", Transport::Stream);
        let t = keys.seal(1_700_000_000, f);
        assert_eq!(t.len(), 2 * TOKEN_BYTES);
        assert_eq!(
            keys.open(&t),
            Some(OpenedFlow {
                flow: f,
                issued: 1_700_000_000
            })
        );
        // The flow is not in clear.
        assert!(!t.contains(&crate::auth::digest::hex(&[198, 51, 100, 7])));
        // Another secret's keys open nothing.
        assert_eq!(FlowKeys::new(&ring(S2, &[])).open(&t), None);
        // Every single changed digit is refused: nobody steers the token to another flow.
        for i in 0..t.len() {
            let mut b = t.clone().into_bytes();
            b[i] = if b[i] == b'0' { b'1' } else { b'0' };
            let forged = String::from_utf8(b).expect("hex");
            assert_eq!(keys.open(&forged), None, "digit {i}");
        }
        for junk in ["", "zz", &t[..t.len() - 2], &format!("{t}00")] {
            assert_eq!(keys.open(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn tokens_of_a_previous_secret_still_open() {
        let old = FlowKeys::new(&ring(S1, &[]));
        let f = flow("[2001:db8::7]:5060", Transport::Datagram);
        let t = old.seal(5, f);
        let rolled = FlowKeys::new(&ring(S2, &[S1.to_string()]));
        assert_eq!(rolled.open(&t).map(|o| o.flow), Some(f));
    }

    #[test]
    fn the_path_entry_carries_the_token() {
        let e = path_entry("192.0.2.1:5060", "abc");
        assert_eq!(e, "<sip:192.0.2.1:5060;lr;ob;sfwf=abc>");
        assert_eq!(flow_token_of(&e).as_deref(), Some("abc"));
        assert_eq!(flow_token_of("<sip:192.0.2.1;lr>"), None);
    }

    /// Our entry on top names the side given, the token kept; a Path without ours on top
    /// is left alone.
    #[test]
    fn our_path_entry_names_the_side_toward_the_registrar() {
        let mut m = SipMsg::request("REGISTER", "sip:example.com");
        let path = HeaderName::Other("Path");
        m.push(path, path_entry("10.1.0.1:5060", "abc"));
        m.push(path, "<sip:10.1.0.5;lr>".into());
        path_toward(&mut m, "192.0.2.1:5060");
        let shown: Vec<&str> = m.all(path).collect();
        assert_eq!(
            shown,
            [
                path_entry("192.0.2.1:5060", "abc").as_str(),
                "<sip:10.1.0.5;lr>"
            ]
        );
        let mut theirs = SipMsg::request("REGISTER", "sip:example.com");
        theirs.push(path, "<sip:10.1.0.5;lr>".into());
        path_toward(&mut theirs, "192.0.2.1:5060");
        assert_eq!(theirs.all(path).collect::<Vec<_>>(), ["<sip:10.1.0.5;lr>"]);
    }
}
