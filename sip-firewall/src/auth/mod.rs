//! Digest authentication of our domains' users (RFC 3261 22, RFC 7616, RFC 8760): challenges
//! with stateless nonces, verification of credentials, nonce-count replay protection.
//!
//! **Decides**: whether credentials prove a user ([`Outcome`]): right, wrong password, unknown
//! user, stale or foreign nonce, replayed nonce-count, a digest `uri` that is not the
//! Request-URI; a nonce is bound to the address it was issued to and to the process (boot and
//! node) that issued it (used elsewhere: `stale=true`, never a failure). The nonce-count
//! table is bounded and forgets its oldest entries (their nonces become stale) rather than
//! failing valid clients. An unknown user costs the same hashing as a known one.
//!
//! | module | job |
//! | --- | --- |
//! | `config` | `[auth]` (`AuthConfig`, `UserEntry`): defaults and checks |
//! | `digest` | MD5 and SHA-256 responses, Authorization parsing |
//! | `keys` | the master secret and the working keys derived from it (HKDF), rotation |
//! | `nonce` | HMAC nonces and the nonce-count table |
//! | `users` | the subscriber table (HA1s) |
//!
//! **Config**: `[auth]`. **Metrics**: counted by the proxy as `sipfw_auth_total{result}` and
//! `sipfw_auth_previous_key_total{what="nonce"}`; the nonce table's bound in
//! `sipfw_limits_refused_total{what}`.

pub mod config;
pub mod digest;
pub mod keys;
pub mod nonce;
pub mod users;

use std::net::IpAddr;

use digest::{Algorithm, Credentials};
use nonce::{Count, Nonces, Verdict};
use users::Users;

/// What verifying a request's credentials says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Right credentials for this user.
    Authenticated { user: String },
    /// No usable credentials: challenge. `failure` names why credentials that were given
    /// were refused (counted, and reported as an authentication failure).
    Challenge { failure: Option<&'static str> },
    /// The nonce is not good here (expired, issued to another address, another boot or
    /// node, its count forgotten): a new challenge with stale=true, which the client answers
    /// without asking its user (RFC 7616 3.4.5). Never a failure: the credentials may be
    /// right. `reason`: `stale`, `other_boot`, `other_node`.
    Stale { reason: &'static str },
    /// The digest does not cover this request: its `uri` is not the Request-URI (400,
    /// RFC 7616 3.4.6).
    BadRequest { reason: &'static str },
    /// Right or wrong, these credentials may not be used for this request (403).
    Forbidden { reason: &'static str },
}

/// One request as authentication sees it.
pub struct Request<'a> {
    pub method: &'a str,
    /// The Request-URI: the digest `uri` must be it (RFC 7616 3.4.6, RFC 3261 22.4 item 3),
    /// byte for byte (the digest covers that string); a REGISTER may also name a URI
    /// `uri_also_ok` accepts.
    pub uri: &'a str,
    /// Other digest URIs a REGISTER may carry: the registrar's own address (SIPp puts the
    /// next hop's address there), which names the same registrar as its Request-URI does.
    /// Any other request routes by its Request-URI, which its digest must cover.
    pub uri_also_ok: &'a dyn Fn(&str) -> bool,
    /// The realm (our domain) challenged for.
    pub realm: &'a str,
    /// Users the authenticated identity must equal (From user; To user too for REGISTER).
    pub must_be: &'a [&'a str],
    /// The address the request came from: the nonce must have been issued to it.
    pub client: IpAddr,
}

/// The authenticator: subscribers, offered algorithms, nonces.
pub struct Authenticator {
    users: Users,
    algorithms: Vec<Algorithm>,
    nonces: Nonces,
}

impl Authenticator {
    pub fn new(users: Users, algorithms: Vec<Algorithm>, nonces: Nonces) -> Authenticator {
        Authenticator {
            users,
            algorithms,
            nonces,
        }
    }

    /// The subscribers.
    pub fn users(&self) -> &Users {
        &self.users
    }

    /// The subscribers, to change at run time (`sip-firewall user add`).
    pub fn users_mut(&mut self) -> &mut Users {
        &mut self.users
    }

    /// The algorithms offered from the next challenge on (a reload); nonces already issued
    /// stay good for their lifetime.
    pub fn set_algorithms(&mut self, algorithms: Vec<Algorithm>) {
        self.algorithms = algorithms;
    }

    /// How long a nonce is good, for every nonce checked from now on (a reload).
    pub fn set_nonce_lifetime(&mut self, lifetime: std::time::Duration) {
        self.nonces.set_lifetime(lifetime);
    }

    /// Challenge header values, one per offered algorithm, in order of preference, with a
    /// nonce good only from `client`.
    pub fn challenges(
        &self,
        realm: &str,
        stale: bool,
        now_secs: u64,
        client: IpAddr,
    ) -> Vec<String> {
        let nonce = self.nonces.issue(realm, client, now_secs);
        self.algorithms
            .iter()
            .map(|&a| digest::challenge(realm, &nonce, a, stale))
            .collect()
    }

    /// Verify the credentials in `values` (the Authorization or Proxy-Authorization values).
    pub fn verify(&mut self, values: &[&str], req: &Request<'_>, now_secs: u64) -> Outcome {
        let challenge = |failure| Outcome::Challenge { failure };
        let stale = |reason| Outcome::Stale { reason };
        let c = match ours(values, req.realm) {
            Ok(Some(c)) => c,
            Ok(None) => return challenge(None),
            Err(()) => return challenge(Some("malformed")),
        };
        if req.must_be.iter().any(|u| *u != c.username) {
            return Outcome::Forbidden {
                reason: "identity_mismatch",
            };
        }
        // Absent means MD5 (RFC 7616); one we do not offer is refused.
        let alg = match c.algorithm.as_deref() {
            None => Some(Algorithm::Md5),
            Some(a) => Algorithm::parse(a),
        };
        let Some(alg) = alg.filter(|a| self.algorithms.contains(a)) else {
            return challenge(Some("algorithm"));
        };
        let (Some("auth"), Some(nc), Some(cnonce)) =
            (c.qop.as_deref(), c.nc.as_deref(), c.cnonce.as_deref())
        else {
            // Without qop=auth there is no nonce-count, hence no replay protection.
            return challenge(Some("qop"));
        };
        match self.nonces.check(&c.nonce, req.realm, req.client, now_secs) {
            Verdict::Fresh => {}
            // Expired, or issued to another address: a spoofed source proves nothing.
            Verdict::Stale | Verdict::OtherClient => return stale("stale"),
            // Another process's nonce (a restart, another node sharing the secret): its
            // counts are not here, so a first use cannot be told from a replay.
            Verdict::OtherBoot => return stale("other_boot"),
            Verdict::OtherNode => return stale("other_node"),
            Verdict::Invalid => return challenge(Some("bad_nonce")),
        }
        if !covers(&c.uri, req) {
            // RFC 7616 3.4.6: "the server SHOULD return a 400 Bad Request error".
            return Outcome::BadRequest {
                reason: "uri_mismatch",
            };
        }
        // An unknown user (or one without an HA1 for this algorithm) costs the same hashing
        // and comparison as a known one, against a dummy HA1 of the same algorithm: the time
        // taken says nothing of which user names exist.
        let known = self
            .users
            .get(&c.username, req.realm)
            .and_then(|s| s.ha1(alg));
        let ha1 = known.unwrap_or_else(|| dummy_ha1(alg));
        let want = digest::response_auth(alg, ha1, &c.nonce, nc, cnonce, req.method, &c.uri);
        let right = eq_ignore_case_ct(want.as_bytes(), c.response.as_bytes());
        if known.is_none() {
            return challenge(Some("unknown_user"));
        }
        if !right {
            return challenge(Some("wrong_password"));
        }
        match self.nonces.accept_count(&c.nonce, nc, now_secs) {
            Count::Accepted => {}
            Count::Replay => return challenge(Some("replay")),
            // The count table was full and forgot this nonce: a new one, no failure.
            Count::Stale => return stale("stale"),
        }
        Outcome::Authenticated { user: c.username }
    }

    /// Forget nonce-counts of nonces that are stale anyway.
    pub fn expire(&mut self, now_secs: u64) {
        self.nonces.expire(now_secs);
    }

    /// This node's name (`[cluster] node`), carried by its nonces.
    pub fn set_node(&mut self, name: &str) {
        self.nonces.set_node(name);
    }
}

/// Whether the digest `uri` is the request's: the Request-URI byte for byte, surrounding
/// white space aside (RFC 7616 3.4.6; RFC 3261 22.4 item 3, digest-uri = Request-URI).
/// Compared as strings, not as URIs under RFC 3261 19.1.4: the response hashes this very
/// string, clients copy their Request-URI into it, and 19.1.4 equality ignores parameters
/// present in one URI only (`transport`, for one), so two "equal" URIs may route apart.
/// A REGISTER may also name the registrar's own address (`uri_also_ok`): it does not route,
/// and that address names the same registrar as its Request-URI.
fn covers(digest_uri: &str, req: &Request<'_>) -> bool {
    let u = digest_uri.trim();
    u == req.uri.trim() || (req.method.eq_ignore_ascii_case("REGISTER") && (req.uri_also_ok)(u))
}

/// An HA1 no password gives (not hex), as long as a real one of `alg`.
fn dummy_ha1(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::Md5 => "--------------------------------",
        Algorithm::Sha256 => "----------------------------------------------------------------",
    }
}

/// Equal as ASCII, case aside, in constant time (the lengths aside).
fn eq_ignore_case_ct(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    bool::from(a.to_ascii_lowercase().ct_eq(&b.to_ascii_lowercase()))
}

/// Our credentials among the Authorization values: the first for our realm. Credentials
/// for other realms belong to other hops (RFC 3261 22.3); other schemes are not ours; a
/// malformed digest is an error.
fn ours(values: &[&str], realm: &str) -> Result<Option<Credentials>, ()> {
    for v in values {
        match Credentials::parse(v) {
            Ok(c) if c.realm.eq_ignore_ascii_case(realm) => return Ok(Some(c)),
            Ok(_) | Err(digest::CredentialsError::Scheme) => {}
            Err(_) => return Err(()),
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::config::UserEntry;
    use std::time::Duration;

    fn auth() -> Authenticator {
        let users = Users::from_config(&[UserEntry {
            user: "alice".into(),
            domain: "example.com".into(),
            password: Some("pw".into()),
            ha1: None,
            ha1_sha256: None,
            identities: Vec::new(),
        }]);
        Authenticator::new(
            users,
            vec![Algorithm::Sha256, Algorithm::Md5],
            Nonces::new(vec![[9; 32]], Duration::from_secs(60), 1),
        )
    }

    fn nonce_of(ch: &str) -> String {
        let i = ch.find("nonce=\"").unwrap() + 7;
        ch[i..].split('"').next().unwrap().to_string()
    }

    /// The nonce of a first challenge from `a` to [`REQ`]'s client.
    fn nonce(a: &Authenticator) -> String {
        nonce_of(&a.challenges("example.com", false, 100, REQ.client)[0])
    }

    /// A fresh challenge counted as a `failure`.
    fn refused(failure: &'static str) -> Outcome {
        Outcome::Challenge {
            failure: Some(failure),
        }
    }

    /// The refusal of credentials over another URI than the request's.
    fn uri_mismatch() -> Outcome {
        Outcome::BadRequest {
            reason: "uri_mismatch",
        }
    }

    fn creds(alg: Algorithm, user: &str, pw: &str, nonce: &str, nc: &str) -> String {
        creds_for(alg, user, pw, nonce, nc, "REGISTER", "sip:example.com")
    }

    fn creds_for(
        alg: Algorithm,
        user: &str,
        pw: &str,
        nonce: &str,
        nc: &str,
        method: &str,
        uri: &str,
    ) -> String {
        let ha1 = alg.ha1(user, "example.com", pw);
        let r = digest::response_auth(alg, &ha1, nonce, nc, "cn", method, uri);
        format!(
            "Digest username=\"{user}\", realm=\"example.com\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{r}\", algorithm={}, qop=auth, nc={nc}, cnonce=\"cn\"",
            alg.as_str()
        )
    }

    fn never(_: &str) -> bool {
        false
    }

    const REQ: Request<'static> = Request {
        method: "REGISTER",
        uri: "sip:example.com",
        uri_also_ok: &never,
        realm: "example.com",
        must_be: &["alice"],
        client: IpAddr::V4(std::net::Ipv4Addr::new(192, 0, 2, 1)),
    };

    #[test]
    fn full_exchange() {
        let mut a = auth();
        assert_eq!(
            a.verify(&[], &REQ, 100),
            Outcome::Challenge { failure: None }
        );
        let ch = a.challenges("example.com", false, 100, REQ.client);
        assert_eq!(ch.len(), 2);
        assert!(ch[0].contains("SHA-256") && ch[1].contains("MD5"));
        let n = nonce_of(&ch[0]);
        for alg in [Algorithm::Sha256, Algorithm::Md5] {
            let nc = if alg == Algorithm::Sha256 {
                "00000001"
            } else {
                "00000002"
            };
            let good = creds(alg, "alice", "pw", &n, nc);
            assert_eq!(
                a.verify(&[&good], &REQ, 101),
                Outcome::Authenticated {
                    user: "alice".into()
                }
            );
            // The very same header again: a replay.
            assert_eq!(a.verify(&[&good], &REQ, 101), refused("replay"));
        }
        let bad = creds(Algorithm::Md5, "alice", "wrong", &n, "00000009");
        assert_eq!(a.verify(&[&bad], &REQ, 101), refused("wrong_password"));
        let good = creds(Algorithm::Md5, "alice", "pw", &n, "00000010");
        assert_eq!(
            a.verify(&[&good], &REQ, 200),
            Outcome::Stale { reason: "stale" }
        );
        let mallory = Request {
            must_be: &["bob"],
            ..REQ
        };
        assert_eq!(
            a.verify(&[&good], &mallory, 101),
            Outcome::Forbidden {
                reason: "identity_mismatch"
            }
        );
        let elsewhere = Request {
            uri: "sip:other.example.com",
            ..REQ
        };
        let good = creds(Algorithm::Md5, "alice", "pw", &n, "00000011");
        assert_eq!(a.verify(&[&good], &elsewhere, 101), uri_mismatch());
        let forged = creds(
            Algorithm::Md5,
            "alice",
            "pw",
            "0000006400000001001122334455667788990011223344556677889900aabbccddeeff",
            "00000001",
        );
        assert_eq!(a.verify(&[&forged], &REQ, 101), refused("bad_nonce"));
    }

    /// Credentials over a nonce issued to another address (a subscriber
    /// registering from a spoofed source with its own nonce) are challenged again with
    /// stale=true, never accepted, and not counted as a failure.
    #[test]
    fn nonce_from_another_address_is_stale() {
        let mut a = auth();
        let n = nonce(&a);
        let good = creds(Algorithm::Sha256, "alice", "pw", &n, "00000001");
        let spoofed = Request {
            client: IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 9)),
            ..REQ
        };
        for _ in 0..2 {
            assert_eq!(
                a.verify(&[&good], &spoofed, 101),
                Outcome::Stale { reason: "stale" }
            );
        }
        // From the address it was sent to, the same credentials are good.
        assert_eq!(
            a.verify(&[&good], &REQ, 101),
            Outcome::Authenticated {
                user: "alice".into()
            }
        );
    }

    #[test]
    fn other_realms_ignored() {
        let mut a = auth();
        let other = "Digest username=\"alice\", realm=\"elsewhere\", nonce=\"x\", uri=\"sip:example.com\", response=\"0\"";
        assert_eq!(
            a.verify(&[other], &REQ, 1),
            Outcome::Challenge { failure: None }
        );
    }

    /// An authenticator like [`auth`] with these nonce keys and boot id.
    fn auth_with(keys: Vec<[u8; 32]>, boot: u64) -> Authenticator {
        let mut a = auth();
        a.nonces = Nonces::new(keys, Duration::from_secs(60), boot);
        a
    }

    /// Credentials accepted by the process that issued their nonce are refused by its next
    /// start and by another node with the same secret: a fresh challenge with stale=true
    /// (never accepted, never a failure toward a ban).
    #[test]
    fn a_nonce_of_another_boot_or_node_is_stale() {
        let mut first = auth_with(vec![[9; 32]], 1);
        let n = nonce(&first);
        let good = creds(Algorithm::Sha256, "alice", "pw", &n, "00000001");
        assert!(matches!(
            first.verify(&[&good], &REQ, 101),
            Outcome::Authenticated { .. }
        ));
        // Restarted with the same secret: another boot id.
        let mut restarted = auth_with(vec![[9; 32]], 2);
        assert_eq!(
            restarted.verify(&[&good], &REQ, 101),
            Outcome::Stale {
                reason: "other_boot"
            }
        );
        // Another node of the cluster (a node name of its own).
        let mut node_a = auth_with(vec![[9; 32]], 3);
        node_a.set_node("edge-a");
        let mut node_b = auth_with(vec![[9; 32]], 3);
        node_b.set_node("edge-b");
        let n = nonce(&node_a);
        let good = creds(Algorithm::Sha256, "alice", "pw", &n, "00000001");
        assert_eq!(
            node_b.verify(&[&good], &REQ, 101),
            Outcome::Stale {
                reason: "other_node"
            }
        );
        assert!(matches!(
            node_a.verify(&[&good], &REQ, 101),
            Outcome::Authenticated { .. }
        ));
    }

    /// A nonce made under the previous secret authenticates while the ring still holds it;
    /// new challenges carry nonces of the current key.
    #[test]
    fn a_nonce_of_the_previous_key_still_verifies() {
        let (old, new) = ([1; 32], [2; 32]);
        let before = auth_with(vec![old], 7);
        let n = nonce(&before);
        let mut rolled = auth_with(vec![new, old], 7);
        let good = creds(Algorithm::Sha256, "alice", "pw", &n, "00000001");
        assert!(matches!(
            rolled.verify(&[&good], &REQ, 101),
            Outcome::Authenticated { .. }
        ));
        let fresh = nonce(&rolled);
        let mut old_only = auth_with(vec![old], 7);
        let good = creds(Algorithm::Sha256, "alice", "pw", &fresh, "00000001");
        assert_eq!(old_only.verify(&[&good], &REQ, 101), refused("bad_nonce"));
    }

    /// An INVITE's digest must cover its Request-URI: credentials over the edge's own URI
    /// are refused (400) for it, and still good for a REGISTER.
    #[test]
    fn the_digest_uri_of_a_routed_request_is_its_request_uri() {
        let mut a = auth();
        let edge = "sip:192.0.2.10:5060";
        let names_us = |u: &str| u == edge;
        let number = "sip:+4930123456@trunk.example";
        let invite = Request {
            method: "INVITE",
            uri: number,
            uri_also_ok: &names_us,
            ..REQ
        };
        let n = nonce(&a);
        let alice_over = |nc: &str, method: &str, uri: &str| {
            creds_for(Algorithm::Sha256, "alice", "pw", &n, nc, method, uri)
        };
        let over_edge = alice_over("00000001", "INVITE", edge);
        assert_eq!(a.verify(&[&over_edge], &invite, 101), uri_mismatch());
        let over_number = alice_over("00000002", "INVITE", number);
        assert!(matches!(
            a.verify(&[&over_number], &invite, 101),
            Outcome::Authenticated { .. }
        ));
        let register = Request {
            uri_also_ok: &names_us,
            ..REQ
        };
        let reg = alice_over("00000003", "REGISTER", edge);
        assert!(matches!(
            a.verify(&[&reg], &register, 101),
            Outcome::Authenticated { .. }
        ));
    }

    /// An unknown user name costs the same hash computations as a known one with a wrong
    /// password (no user-name timing oracle): the work is counted, not timed.
    #[test]
    fn an_unknown_user_costs_the_same_hashing() {
        for alg in [Algorithm::Sha256, Algorithm::Md5] {
            let mut a = auth();
            let n = nonce(&a);
            let mut work = |user: &'static str, pw: &str, nc: &str| {
                let c = creds(alg, user, pw, &n, nc);
                let req = Request {
                    must_be: &[user],
                    ..REQ
                };
                digest::HASHES.with(|h| h.set(0));
                let outcome = a.verify(&[&c], &req, 101);
                (outcome, digest::HASHES.with(|h| h.get()))
            };
            let (unknown, unknown_work) = work("mallory", "pw", "00000001");
            let (wrong, wrong_work) = work("alice", "guess", "00000002");
            assert_eq!(unknown, refused("unknown_user"));
            assert_eq!(wrong, refused("wrong_password"));
            assert!(wrong_work > 0);
            assert_eq!(unknown_work, wrong_work, "{alg:?}");
        }
    }
}
