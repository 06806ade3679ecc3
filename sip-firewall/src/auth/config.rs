//! `[auth]`: digest authentication of our domains' users, with its defaults and its checks.

use std::time::Duration;

use serde::Deserialize;

use crate::section::{Invalid, duration, invalid};

/// `[auth]`: digest authentication of our domains' users.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Digest algorithms offered, in order of preference ("SHA-256", "MD5").
    pub algorithms: Vec<String>,
    /// How long a nonce is good for; older ones are answered with stale=true.
    #[serde(deserialize_with = "duration")]
    pub nonce_lifetime: Duration,
    /// Secret that signs nonces (hex or any text); random at each start when absent, so
    /// nonces of a previous run are refused.
    pub secret: Option<String>,
    /// Subscribers: `{ user = "alice", domain = "example.com", password = "..." }` or with
    /// `ha1` (MD5) and/or `ha1_sha256` instead of the password.
    pub users: Vec<UserEntry>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            algorithms: vec!["SHA-256".into(), "MD5".into()],
            nonce_lifetime: Duration::from_secs(300),
            secret: None,
            users: Vec::new(),
        }
    }
}

/// One subscriber.
#[derive(Clone, Debug, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UserEntry {
    pub user: String,
    pub domain: String,
    pub password: Option<String>,
    /// MD5(user:realm:password), hex.
    pub ha1: Option<String>,
    /// SHA-256(user:realm:password), hex.
    pub ha1_sha256: Option<String>,
    /// Identities the user may assert besides `sip:user@domain` (RFC 3325: the edge puts the
    /// one a request prefers in P-Asserted-Identity when it is listed here), e.g.
    /// `"sip:+15551234@example.com"` or `"tel:+15551234"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<String>,
}

impl AuthConfig {
    /// Check `[auth]`; every user's domain must be one of ours (`[sip] domains`).
    pub fn validate(&self, domains: &[String]) -> Result<(), Invalid> {
        if self.algorithms.is_empty() {
            return Err(invalid("auth.algorithms", "needs at least one algorithm"));
        }
        for a in &self.algorithms {
            if super::digest::Algorithm::parse(a).is_none() {
                return Err(invalid(
                    "auth.algorithms",
                    format!("unknown algorithm {a:?} (SHA-256 or MD5)"),
                ));
            }
        }
        if self.nonce_lifetime < Duration::from_secs(1) {
            return Err(invalid("auth.nonce_lifetime", "must be at least 1s"));
        }
        for u in &self.users {
            if u.user.is_empty() || u.user.contains([':', '@', ' ']) {
                return Err(invalid("auth.users", format!("bad user name {:?}", u.user)));
            }
            if !domains.iter().any(|d| d.eq_ignore_ascii_case(&u.domain)) {
                return Err(invalid(
                    "auth.users",
                    format!(
                        "user {}@{}: the domain is not in sip.domains",
                        u.user, u.domain
                    ),
                ));
            }
            if u.password.is_none() && u.ha1.is_none() && u.ha1_sha256.is_none() {
                return Err(invalid(
                    "auth.users",
                    format!(
                        "user {}@{}: needs password, ha1 or ha1_sha256",
                        u.user, u.domain
                    ),
                ));
            }
            if let Some(i) = u.identities.iter().find(|i| {
                !(i.starts_with("sip:") || i.starts_with("sips:") || i.starts_with("tel:"))
                    || i.contains(['<', '>', ',', ' ', '"', '\r', '\n'])
            }) {
                return Err(invalid(
                    "auth.users",
                    format!(
                        "user {}@{}: identity {i:?} must be a sip:, sips: or tel: URI",
                        u.user, u.domain
                    ),
                ));
            }
            for (h, len) in [(&u.ha1, 32), (&u.ha1_sha256, 64)] {
                if let Some(h) = h
                    && (h.len() != len || !h.bytes().all(|b| b.is_ascii_hexdigit()))
                {
                    return Err(invalid(
                        "auth.users",
                        format!(
                            "user {}@{}: a hash must be {len} hex digits",
                            u.user, u.domain
                        ),
                    ));
                }
            }
        }
        Ok(())
    }
}
