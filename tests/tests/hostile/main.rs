//! Issue 9 (hostile input), attacks from a namespace against the real daemon, one module per
//! topic; each line: attack — what the edge does now — test fn.
//!
//! - OPTIONS ping to the edge's own address, no `[sip] domains` (was 403 to an outsider and a
//!   forwarding loop to itself for an allow-listed peer) — 200 from the edge to both, nothing
//!   forwarded — `own_addresses::options_ping_to_the_edge_ip`

#[path = "../support/mod.rs"]
mod support;

mod own_addresses;
