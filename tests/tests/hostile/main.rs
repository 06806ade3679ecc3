//! Issue 9, "Hostile input": each attack from a namespace against the real daemon, and what
//! the edge does now. One module per topic.
//!
//! - scanner User-Agent spoofed from a registered subscriber's address — refused (counted
//!   in `sipfw_ban_refused_total`), the subscriber stays reachable; an unknown scanner is
//!   still banned — `aimed_bans::unproven_evidence_does_not_ban_a_subscriber`
//! - forged Authorization (bad nonce) five times from a subscriber's address — not counted
//!   toward an auth-failure ban — `aimed_bans::unproven_evidence_does_not_ban_a_subscriber`
//! - NAT storm: 300 phones behind one registered address re-register at 150/s — all
//!   register, nothing banned (known tier, throttled not banned) —
//!   `nat_storm::nat_storm_registers_every_phone`
//! - ban map exhaustion: 280,000 frames from rotating addresses of one /64 and 200 spoofed
//!   IPv4 floods — one learned ban per prefix in an LRU map, `ban add` and an auth-failure
//!   ban still work, `sipfw_map_entries` shows the fill — `ban_exhaustion::ban_map_cannot_be_exhausted`

#[path = "../support/mod.rs"]
mod support;

mod aimed_bans;
mod ban_exhaustion;
mod nat_storm;
