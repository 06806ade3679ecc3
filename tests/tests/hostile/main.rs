//! Issue 9, hostile input: each attack tried from a namespace as an outsider would, against
//! the real daemon. One line per attack: attack — what the edge does now — test fn.
//!
//! - one UDP packet with `Digest username="\é"` — parsed as a quoted-pair, no panic, the daemon
//!   keeps answering — `crash::backslash_before_multibyte_character_does_not_stop_the_daemon`
//! - copies of a request from other source ports (reflection of the stored answer) — dropped
//!   and counted, 0 bytes sent — `amplification::amplification_factors`
//! - Timer G resends toward an unverified UDP source; fat first answers — no resend; first
//!   answer to a minimal request at most 2x its size — `amplification::amplification_factors`
//! - one source opening 200 TCP connections and holding them with CRLF pings — 32 kept
//!   (`[sip] max_tcp_per_source`), 168 closed at accept and counted, pings pass the gate,
//!   another host still served — `tcp_slots::one_source_cannot_hold_every_tcp_slot`

#[path = "../support/mod.rs"]
mod support;

mod amplification;
mod crash;
mod killer;
mod tcp_slots;
