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
            check_user(u, domains).map_err(|e| invalid("auth.users", e))?;
        }
        Ok(())
    }
}

/// Whether a subscriber may be ours, from the config file or from another node of the
/// cluster alike: a user name, a domain of ours (`[sip] domains`), a password or well-formed
/// hashes, and identities that are sip:, sips: or tel: URIs, a sip: or sips: one in one of
/// our domains (the edge asserts them in P-Asserted-Identity, RFC 3325: a user must not
/// speak for another domain). The error names the user and what is wrong.
pub fn check_user(u: &UserEntry, domains: &[String]) -> Result<(), String> {
    let ours = |d: &str| domains.iter().any(|o| o.eq_ignore_ascii_case(d));
    let who = format!("user {}@{}", u.user, u.domain);
    if u.user.is_empty() || u.user.contains([':', '@', ' ']) {
        return Err(format!("bad user name {:?}", u.user));
    }
    if !ours(&u.domain) {
        return Err(format!("{who}: the domain is not in sip.domains"));
    }
    if u.password.is_none() && u.ha1.is_none() && u.ha1_sha256.is_none() {
        return Err(format!("{who}: needs password, ha1 or ha1_sha256"));
    }
    for i in &u.identities {
        use sip_firewall_sip::uri::{Host, Uri, parse};
        let in_domain = match parse(i) {
            _ if i.contains(['<', '>', ',', ' ', '"', '\r', '\n']) => None,
            Ok(Uri::Tel(_)) => Some(true),
            Ok(Uri::Sip(s)) => {
                Some(matches!(s.host, Host::Domain(d) if ours(d.trim_end_matches('.'))))
            }
            _ => None,
        };
        match in_domain {
            None => {
                return Err(format!(
                    "{who}: identity {i:?} must be a sip:, sips: or tel: URI"
                ));
            }
            Some(false) => {
                return Err(format!(
                    "{who}: identity {i:?} is not in one of sip.domains (a user asserts \
                     identities of our domains only)"
                ));
            }
            Some(true) => {}
        }
    }
    for (h, len) in [(&u.ha1, 32), (&u.ha1_sha256, 64)] {
        if let Some(h) = h
            && (h.len() != len || !h.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(format!("{who}: a hash must be {len} hex digits"));
        }
    }
    Ok(())
}

#[cfg(test)]
impl UserEntry {
    /// `user@example.com` with an MD5 HA1 and `identities`: the user the tests of `[auth]`
    /// and of the cluster's user records check.
    pub(crate) fn example(user: &str, identities: &[&str]) -> UserEntry {
        UserEntry {
            user: user.into(),
            domain: "example.com".into(),
            password: None,
            ha1: Some("0123456789abcdef0123456789abcdef".into()),
            ha1_sha256: None,
            identities: identities.iter().map(|s| s.to_string()).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn user(identities: &[&str]) -> UserEntry {
        UserEntry::example("bob", identities)
    }

    #[test]
    fn identities_lie_within_our_domains() {
        let ours = ["example.com".to_string()];
        for ok in [
            &[][..],
            &["tel:+15551234"],
            &["sip:+15551234@example.com", "sips:bob@EXAMPLE.com"],
        ] {
            assert_eq!(check_user(&user(ok), &ours), Ok(()), "{ok:?}");
        }
        for (bad, says) in [
            ("sip:ceo@bank.example", "not in one of sip.domains"),
            ("sip:bob@192.0.2.1", "not in one of sip.domains"),
            (
                "mailto:bob@example.com",
                "must be a sip:, sips: or tel: URI",
            ),
            ("<sip:bob@example.com>", "must be a sip:, sips: or tel: URI"),
            ("sip:", "must be a sip:, sips: or tel: URI"),
        ] {
            let e = check_user(&user(&[bad]), &ours).unwrap_err();
            assert!(
                e.contains("bob@example.com") && e.contains(says),
                "{bad}: {e}"
            );
        }
        let mut foreign = user(&[]);
        foreign.domain = "other.example".into();
        assert!(
            check_user(&foreign, &ours)
                .unwrap_err()
                .contains("sip.domains")
        );
        let mut weak = user(&[]);
        weak.ha1 = Some("abc".into());
        assert!(
            check_user(&weak, &ours)
                .unwrap_err()
                .contains("32 hex digits")
        );
    }

    /// The config file takes the same rule.
    #[test]
    fn the_config_path_applies_the_identity_rule() {
        let a = AuthConfig {
            users: vec![user(&["sip:ceo@bank.example"])],
            ..AuthConfig::default()
        };
        let e = a.validate(&["example.com".into()]).unwrap_err();
        assert_eq!(e.key, "auth.users");
        assert!(e.message.contains("bank.example"), "{}", e.message);
    }

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
