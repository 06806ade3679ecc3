//! `[[feeds]]`: the threat feeds the edge takes deny entries from.

use std::{path::PathBuf, time::Duration};

use serde::Deserialize;

use crate::section::{Invalid, invalid};

/// The most entries one feed may put in force (the deny trie holds
/// `sip_firewall_common::maps::LIST_ENTRIES` with the deny list).
pub const MAX_ENTRIES: usize = 60_000;

/// What a feed's document is.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FeedFormat {
    /// APIBan's JSON (`{"ipaddress": ["192.0.2.1", ...], "ID": "..."}`): additive, each
    /// address lives until `expire_after` after the last load that listed it.
    Apiban,
    /// One address or prefix a line (`#` and `;` start comments): the whole list, so an
    /// entry a good load no longer lists is removed at once.
    Cidr,
}

/// One `[[feeds]]` table.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// The feed's name in metrics and in `sip-firewall feeds` (default: its URL).
    #[serde(default)]
    pub name: Option<String>,
    /// `file:///path` or `https://host[:port]/path`.
    pub url: String,
    pub format: FeedFormat,
    /// How often the feed is fetched again.
    #[serde(
        default = "default_refresh",
        deserialize_with = "crate::section::duration"
    )]
    pub refresh: Duration,
    /// How long an entry stays in force after the last good load that listed it (also
    /// while the feed cannot be fetched).
    #[serde(
        default = "default_expire_after",
        deserialize_with = "crate::section::duration"
    )]
    pub expire_after: Duration,
    /// The most entries taken from this feed; beyond, refused and counted.
    #[serde(default = "default_max_entries")]
    pub max_entries: usize,
    /// PEM CA certificates the HTTPS server must chain to (default: the web's roots).
    #[serde(default)]
    pub ca: Option<PathBuf>,
}

fn default_refresh() -> Duration {
    Duration::from_secs(15 * 60)
}

fn default_expire_after() -> Duration {
    Duration::from_secs(24 * 3600)
}

fn default_max_entries() -> usize {
    50_000
}

impl FeedConfig {
    /// The name it is reported under.
    pub fn name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.url)
    }

    /// The checks the types do not make.
    pub fn validate(&self) -> Result<(), Invalid> {
        if !(self.url.starts_with("file:///") || self.url.starts_with("https://")) {
            return Err(invalid(
                "feeds.url",
                format!(
                    "{:?}: give file:///path or https://host/path (plain http is refused: a \
                     feed decides what is dropped)",
                    self.url
                ),
            ));
        }
        if self.refresh < Duration::from_secs(1) {
            return Err(invalid(
                "feeds.refresh",
                "must be at least 1s (e.g. \"15m\")",
            ));
        }
        if self.expire_after.is_zero() {
            return Err(invalid(
                "feeds.expire_after",
                "must be more than 0 (e.g. \"24h\"): feed entries always expire",
            ));
        }
        if self.max_entries == 0 || self.max_entries > MAX_ENTRIES {
            return Err(invalid(
                "feeds.max_entries",
                format!("must be between 1 and {MAX_ENTRIES}"),
            ));
        }
        if self.ca.is_some() && !self.url.starts_with("https://") {
            return Err(invalid("feeds.ca", "is for https:// feeds only"));
        }
        Ok(())
    }
}

/// Every feed valid, and no two under one name.
pub fn validate(feeds: &[FeedConfig]) -> Result<(), Invalid> {
    for (i, f) in feeds.iter().enumerate() {
        f.validate()?;
        if feeds.iter().take(i).any(|g| g.name() == f.name()) {
            return Err(invalid(
                "feeds.name",
                format!("{:?} names two feeds: give each its own name", f.name()),
            ));
        }
    }
    Ok(())
}
