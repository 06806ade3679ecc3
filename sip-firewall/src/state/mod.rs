//! State that survives restarts: bans, allow and deny lists, in an embedded database
//! (redb) in the state directory. Every change is committed (fsync) before the caller is
//! told it is done, so a SIGKILL loses nothing that was acknowledged.

mod store;

pub use store::{BanRecord, List, StateError, Store};
