//! `[auth]`: digest authentication of our domains' users, with its defaults and its checks.

use std::time::Duration;

use serde::Deserialize;

use super::keys::{KeyError, Secret};
use crate::section::{Invalid, duration, invalid};

/// A key error's text without its leading key name (the config error names the key itself).
fn strip(e: KeyError) -> String {
    let t = e.to_string();
    match t.split_once(": ") {
        Some((_, rest)) => rest.to_string(),
        None => t,
    }
}

/// `[auth]`: digest authentication of our domains' users.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Digest algorithms offered, in order of preference ("SHA-256", "MD5").
    pub algorithms: Vec<String>,
    /// How long a nonce is good for; older ones are answered with stale=true.
    #[serde(deserialize_with = "duration")]
    pub nonce_lifetime: Duration,
    /// The master secret (at least 256 bits, hex or base64; `sip-firewall secret generate`)
    /// from which the keys of nonces, dialog stamps and the cluster are derived; random at
    /// each start when absent, so what a previous run sealed is refused.
    pub secret: Option<String>,
    /// Earlier secrets: what they sealed (nonces, dialog stamps) still verifies, new ones use
    /// `secret`. Roll a secret by moving it here on every node, then removing it once the
    /// longest dialog it stamped is over.
    pub previous_secrets: Vec<String>,
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
            previous_secrets: Vec::new(),
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
        if let Some(s) = &self.secret {
            Secret::parse("auth.secret", s).map_err(|e| invalid("auth.secret", strip(e)))?;
        }
        if !self.previous_secrets.is_empty() && self.secret.is_none() {
            return Err(invalid(
                "auth.previous_secrets",
                "needs auth.secret: the previous secrets only verify, the current one seals",
            ));
        }
        for p in &self.previous_secrets {
            Secret::parse("auth.previous_secrets", p)
                .map_err(|e| invalid("auth.previous_secrets", strip(e)))?;
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

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn load(auth: &str) -> Result<Config, String> {
        Config::from_toml(
            &format!("[sip]\ndomains = [\"example.com\"]\n[auth]\n{auth}\n"),
            std::path::Path::new("t.toml"),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn a_weak_secret_is_refused_naming_the_key_and_how_to_make_one() {
        for weak in [
            "secret = \"x\"",
            "secret = \"\"",
            "secret = \"correct horse battery\"",
        ] {
            let e = load(weak).expect_err(weak);
            assert!(e.contains("auth.secret"), "{e}");
            assert!(e.contains("sip-firewall secret generate"), "{e}");
            assert!(e.contains("openssl rand -hex 32"), "{e}");
        }
        let good = "ab".repeat(32);
        assert!(load(&format!("secret = \"{good}\"")).is_ok());
    }

    #[test]
    fn previous_secrets_are_checked_and_need_a_current_one() {
        let good = "ab".repeat(32);
        let old = "cd".repeat(32);
        assert!(
            load(&format!(
                "secret = \"{good}\"\nprevious_secrets = [\"{old}\"]"
            ))
            .is_ok()
        );
        let e = load(&format!(
            "secret = \"{good}\"\nprevious_secrets = [\"short\"]"
        ))
        .unwrap_err();
        assert!(e.contains("auth.previous_secrets"), "{e}");
        let e = load(&format!("previous_secrets = [\"{old}\"]")).unwrap_err();
        assert!(e.contains("needs auth.secret"), "{e}");
    }
}
