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

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            directory: PathBuf::from("/var/lib/sip-firewall"),
        }
    }
}
