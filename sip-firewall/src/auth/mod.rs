//! Digest authentication of our domains' users (RFC 3261 22, RFC 7616, RFC 8760): challenges
//! with stateless nonces, verification of credentials, nonce-count replay protection.
//!
//! **Decides**: whether credentials prove a user ([`Outcome`]): right, wrong password, unknown
//! user, stale or foreign nonce, replayed nonce-count; a nonce is bound to the address it was
//! issued to (used from elsewhere: `stale=true`). The nonce-count table is bounded and forgets
//! its oldest entries (their nonces become stale) rather than failing valid clients.
//!
//! | module | job |
//! | --- | --- |
//! | `config` | `[auth]` (`AuthConfig`, `UserEntry`): defaults and checks |
//! | `digest` | MD5 and SHA-256 responses, Authorization parsing |
//! | `keys` | the master secret and the working keys derived from it (HKDF), rotation |
//! | `nonce` | HMAC nonces and the nonce-count table |
//! | `users` | the subscriber table (HA1s) |
//!
//! **Config**: `[auth]`. **Metrics**: counted by the proxy as `sipfw_auth_total{result}`; the
//! nonce table's bound in `sipfw_limits_refused_total{what}`.

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
    /// were refused (counted and reported); `stale` asks the client to retry with a new nonce
    /// without asking its user again.
    Challenge {
        stale: bool,
        failure: Option<&'static str>,
    },
    /// Right or wrong, these credentials may not be used for this request (403).
    Forbidden { reason: &'static str },
}

/// One request as authentication sees it.
pub struct Request<'a> {
    pub method: &'a str,
    /// The Request-URI: the digest `uri` must be it (RFC 7616 3.4.6), or a URI
    /// `uri_also_ok` accepts.
    pub uri: &'a str,
    /// Other digest URIs accepted: the proxy's own address (SIPp, and some phones, put
    /// the next hop's URI there). Replays are still refused by the nonce-count.
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
        let challenge = |failure| Outcome::Challenge {
            stale: false,
            failure,
        };
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
            // Issued to another address (RFC 7616 3.3 stale semantics: the credentials may
            // be right, the nonce is not good here): challenged again, never accepted, and
            // not counted as a failure, since a spoofed source proves nothing.
            Verdict::Stale | Verdict::OtherClient => {
                return Outcome::Challenge {
                    stale: true,
                    failure: None,
                };
            }
            Verdict::Invalid => return challenge(Some("bad_nonce")),
        }
        if c.uri != req.uri && !(req.uri_also_ok)(&c.uri) {
            return challenge(Some("uri_mismatch"));
        }
        let Some(ha1) = self
            .users
            .get(&c.username, req.realm)
            .and_then(|s| s.ha1(alg))
        else {
            return challenge(Some("unknown_user"));
        };
        let want = digest::response_auth(alg, ha1, &c.nonce, nc, cnonce, req.method, &c.uri);
        if !eq_ignore_case_ct(want.as_bytes(), c.response.as_bytes()) {
            return challenge(Some("wrong_password"));
        }
        match self.nonces.accept_count(&c.nonce, nc, now_secs) {
            Count::Accepted => {}
            Count::Replay => return challenge(Some("replay")),
            // The count table was full and forgot this nonce: a new one, no failure.
            Count::Stale => {
                return Outcome::Challenge {
                    stale: true,
                    failure: None,
                };
            }
        }
        Outcome::Authenticated { user: c.username }
    }

    /// Forget nonce-counts of nonces that are stale anyway.
    pub fn expire(&mut self, now_secs: u64) {
        self.nonces.expire(now_secs);
    }
}

fn eq_ignore_case_ct(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).fold(0u8, |acc, (x, y)| {
            acc | (x.to_ascii_lowercase() ^ y.to_ascii_lowercase())
        }) == 0
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
    use crate::proxy::config::UserEntry;
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
            Nonces::new(b"k".to_vec(), Duration::from_secs(60)),
        )
    }

    fn nonce_of(ch: &str) -> String {
        let i = ch.find("nonce=\"").unwrap() + 7;
        ch[i..].split('"').next().unwrap().to_string()
    }

    fn creds(alg: Algorithm, user: &str, pw: &str, nonce: &str, nc: &str) -> String {
        let ha1 = alg.ha1(user, "example.com", pw);
        let r = digest::response_auth(alg, &ha1, nonce, nc, "cn", "REGISTER", "sip:example.com");
        format!(
            "Digest username=\"{user}\", realm=\"example.com\", nonce=\"{nonce}\", uri=\"sip:example.com\", response=\"{r}\", algorithm={}, qop=auth, nc={nc}, cnonce=\"cn\"",
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
            Outcome::Challenge {
                stale: false,
                failure: None
            }
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
            assert_eq!(
                a.verify(&[&good], &REQ, 101),
                Outcome::Challenge {
                    stale: false,
                    failure: Some("replay")
                }
            );
        }
        let bad = creds(Algorithm::Md5, "alice", "wrong", &n, "00000009");
        assert_eq!(
            a.verify(&[&bad], &REQ, 101),
            Outcome::Challenge {
                stale: false,
                failure: Some("wrong_password")
            }
        );
        let good = creds(Algorithm::Md5, "alice", "pw", &n, "00000010");
        assert_eq!(
            a.verify(&[&good], &REQ, 200),
            Outcome::Challenge {
                stale: true,
                failure: None
            }
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
        assert_eq!(
            a.verify(&[&good], &elsewhere, 101),
            Outcome::Challenge {
                stale: false,
                failure: Some("uri_mismatch")
            }
        );
        let forged = creds(
            Algorithm::Md5,
            "alice",
            "pw",
            "0000006400000001001122334455667788990011223344556677889900aabbccddeeff",
            "00000001",
        );
        assert_eq!(
            a.verify(&[&forged], &REQ, 101),
            Outcome::Challenge {
                stale: false,
                failure: Some("bad_nonce")
            }
        );
    }

    /// Issue 10: credentials over a nonce issued to another address (a subscriber
    /// registering from a spoofed source with its own nonce) are challenged again with
    /// stale=true, never accepted, and not counted as a failure.
    #[test]
    fn nonce_from_another_address_is_stale() {
        let mut a = auth();
        let ch = a.challenges("example.com", false, 100, REQ.client);
        let n = nonce_of(&ch[0]);
        let good = creds(Algorithm::Sha256, "alice", "pw", &n, "00000001");
        let spoofed = Request {
            client: IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 9)),
            ..REQ
        };
        for _ in 0..2 {
            assert_eq!(
                a.verify(&[&good], &spoofed, 101),
                Outcome::Challenge {
                    stale: true,
                    failure: None
                }
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
            Outcome::Challenge {
                stale: false,
                failure: None
            }
        );
    }
}
