//! Subscribers: user, domain and the HA1 hashes digest verification needs. Passwords from
//! the config are hashed at start-up and not kept.

use std::collections::HashMap;

use super::digest::Algorithm;
use crate::auth::config::UserEntry;

/// The stored secrets of one subscriber.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Secrets {
    /// HA1 for MD5, lower-case hex.
    pub md5: Option<String>,
    /// HA1 for SHA-256, lower-case hex.
    pub sha256: Option<String>,
}

impl Secrets {
    /// The HA1 for `alg`, when we have it.
    pub fn ha1(&self, alg: Algorithm) -> Option<&str> {
        match alg {
            Algorithm::Md5 => self.md5.as_deref(),
            Algorithm::Sha256 => self.sha256.as_deref(),
        }
    }
}

/// Subscribers by (user, lower-case domain). The realm of a domain is the domain itself.
#[derive(Clone, Debug, Default)]
pub struct Users {
    by_id: HashMap<(String, String), Secrets>,
}

impl Users {
    /// From the `[auth] users` entries.
    pub fn from_config(entries: &[UserEntry]) -> Users {
        let mut users = Users::default();
        for e in entries {
            users.insert(e);
        }
        users
    }

    /// Add (or replace) a subscriber.
    pub fn insert(&mut self, e: &UserEntry) {
        let domain = e.domain.to_ascii_lowercase();
        let s = Secrets {
            md5: e.ha1.as_ref().map(|h| h.to_ascii_lowercase()).or_else(|| {
                e.password
                    .as_ref()
                    .map(|p| Algorithm::Md5.ha1(&e.user, &domain, p))
            }),
            sha256: e
                .ha1_sha256
                .as_ref()
                .map(|h| h.to_ascii_lowercase())
                .or_else(|| {
                    e.password
                        .as_ref()
                        .map(|p| Algorithm::Sha256.ha1(&e.user, &domain, p))
                }),
        };
        self.by_id.insert((e.user.clone(), domain), s);
    }

    /// Remove a subscriber; whether there was one.
    pub fn remove(&mut self, user: &str, domain: &str) -> bool {
        self.by_id
            .remove(&(user.to_string(), domain.to_ascii_lowercase()))
            .is_some()
    }

    /// Every subscriber as (user, domain), sorted.
    pub fn ids(&self) -> Vec<(String, String)> {
        let mut v: Vec<_> = self.by_id.keys().cloned().collect();
        v.sort();
        v
    }

    /// A subscriber as stored: hashes only, never a password.
    pub fn entry(&self, user: &str, domain: &str) -> Option<UserEntry> {
        let s = self.get(user, domain)?;
        Some(UserEntry {
            user: user.to_string(),
            domain: domain.to_ascii_lowercase(),
            password: None,
            ha1: s.md5.clone(),
            ha1_sha256: s.sha256.clone(),
            identities: Vec::new(),
        })
    }

    /// The secrets of user@domain.
    pub fn get(&self, user: &str, domain: &str) -> Option<&Secrets> {
        self.by_id
            .get(&(user.to_string(), domain.to_ascii_lowercase()))
    }

    /// Whether user@domain is a subscriber.
    pub fn exists(&self, user: &str, domain: &str) -> bool {
        self.get(user, domain).is_some()
    }
}

/// The TOML line `sip-firewall user add` prints: hashes, never the password itself.
pub fn config_line(user: &str, domain: &str, password: Option<&str>, ha1: Option<&str>) -> String {
    let domain_l = domain.to_ascii_lowercase();
    match (password, ha1) {
        (Some(p), _) => format!(
            "users = [{{ user = \"{user}\", domain = \"{domain_l}\", ha1 = \"{}\", ha1_sha256 = \"{}\" }}]",
            Algorithm::Md5.ha1(user, &domain_l, p),
            Algorithm::Sha256.ha1(user, &domain_l, p)
        ),
        (None, Some(h)) if h.len() == 64 => format!(
            "users = [{{ user = \"{user}\", domain = \"{domain_l}\", ha1_sha256 = \"{}\" }}]",
            h.to_ascii_lowercase()
        ),
        (None, Some(h)) => format!(
            "users = [{{ user = \"{user}\", domain = \"{domain_l}\", ha1 = \"{}\" }}]",
            h.to_ascii_lowercase()
        ),
        (None, None) => format!("users = [{{ user = \"{user}\", domain = \"{domain_l}\" }}]"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_password_and_hash() {
        let u = Users::from_config(&[
            UserEntry {
                user: "alice".into(),
                domain: "Example.com".into(),
                password: Some("secret".into()),
                ha1: None,
                ha1_sha256: None,
                identities: Vec::new(),
            },
            UserEntry {
                user: "bob".into(),
                domain: "example.com".into(),
                password: None,
                ha1: Some("0123456789ABCDEF0123456789abcdef".into()),
                ha1_sha256: None,
                identities: Vec::new(),
            },
        ]);
        let a = u.get("alice", "EXAMPLE.COM").unwrap();
        assert_eq!(
            a.md5.as_deref(),
            Some(
                Algorithm::Md5
                    .ha1("alice", "example.com", "secret")
                    .as_str()
            )
        );
        assert!(a.sha256.is_some());
        let b = u.get("bob", "example.com").unwrap();
        assert_eq!(
            b.ha1(Algorithm::Md5),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(b.ha1(Algorithm::Sha256), None);
        assert!(
            !u.exists("Alice", "example.com"),
            "user names are case-sensitive"
        );
    }

    #[test]
    fn line_parses_back() {
        let line = config_line("carol", "example.com", Some("pw"), None);
        assert!(!line.contains("pw\""), "{line}");
        let text = format!("[sip]\ndomains = [\"example.com\"]\n[auth]\n{line}\n");
        let c = crate::config::Config::from_toml(&text, std::path::Path::new("t")).unwrap();
        let u = Users::from_config(&c.auth.users);
        assert_eq!(
            u.get("carol", "example.com").and_then(|s| s.md5.clone()),
            Some(Algorithm::Md5.ha1("carol", "example.com", "pw"))
        );
    }
}
