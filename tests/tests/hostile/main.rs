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

#[path = "../support/mod.rs"]
mod support;

mod aimed_bans;
mod nat_storm;
