//! Issue 9, hostile input: each attack tried from a namespace as an outsider would, against
//! the real daemon. One line per attack: attack — what the edge does now — test fn.
//!
//! - one UDP packet with `Digest username="\é"` — parsed as a quoted-pair, no panic, the daemon
//!   keeps answering — `crash::backslash_before_multibyte_character_does_not_stop_the_daemon`

#[path = "../support/mod.rs"]
mod support;

mod crash;
