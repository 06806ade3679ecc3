//! `[registrar]`: its defaults and checks; `config::Config` holds it as `registrar`.

use serde::Deserialize;

use crate::section::{Invalid, invalid};

/// `[registrar]`: bindings of addresses of record (RFC 3261 10.3).
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrarConfig {
    /// Shortest registration accepted; shorter ones get 423 with Min-Expires (seconds).
    pub min_expires: u32,
    /// Longest registration granted; longer ones are cut to this (seconds).
    pub max_expires: u32,
    /// Registration length when the request names none (seconds).
    pub default_expires: u32,
    /// Most contacts bound to one address of record.
    pub max_contacts: usize,
}

impl Default for RegistrarConfig {
    fn default() -> Self {
        RegistrarConfig {
            min_expires: 60,
            max_expires: 3600,
            default_expires: 3600,
            // Few: each contact is a branch of every call to the address of record.
            max_contacts: 5,
        }
    }
}

impl RegistrarConfig {
    /// Check `[registrar]`.
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.min_expires == 0 {
            return Err(invalid("registrar.min_expires", "must be at least 1"));
        }
        if self.max_expires < self.min_expires {
            return Err(invalid(
                "registrar.max_expires",
                "must be at least registrar.min_expires",
            ));
        }
        if !(self.min_expires..=self.max_expires).contains(&self.default_expires) {
            return Err(invalid(
                "registrar.default_expires",
                "must lie between min_expires and max_expires",
            ));
        }
        if self.max_contacts == 0 {
            return Err(invalid("registrar.max_contacts", "must be at least 1"));
        }
        Ok(())
    }
}
