//! State that survives restarts: bans, allow and deny lists, users and fraud suspensions, in an
//! embedded database (redb) in the state directory. Every change is committed (fsync) before
//! the caller is told it is done, so a SIGKILL loses nothing that was acknowledged.
//!
//! **Decides**: nothing. **Config**: `[state]` ([`StateConfig`]: the directory). **Metrics**: none.

mod store;

use std::path::PathBuf;

use serde::Deserialize;

pub use store::{BanRecord, List, StateError, Store};

/// `[state]`: where bans, lists and users are kept across restarts.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StateConfig {
    /// Directory of the state database.
    pub directory: PathBuf,
}

/// A state directory for a test: under the system's temporary one, named by `tag` and this
/// process so that tests running at once never share one, emptied (not created: [`Store::open`]
/// does).
#[cfg(test)]
pub(crate) fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("sfw-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            directory: PathBuf::from("/var/lib/sip-firewall"),
        }
    }
}
