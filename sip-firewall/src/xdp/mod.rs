//! The XDP fast path as user space sees it: loading and attaching the program, its maps, and
//! the bans it reports.
//!
//! **Decides**: nothing itself (the program in `sip-firewall-ebpf` decides, in the order the
//! README gives); this unit loads it (native, generic or not at all: `[xdp] mode`, a kernel
//! that refuses it falls back to user space), writes its settings and lists, takes over pinned
//! maps and links of a previous daemon so bans never lapse, and reads the ban events the
//! program emits.
//!
//! | module | job |
//! | --- | --- |
//! | `config` | `[xdp]` (`XdpSection`, `XdpMode`, `BanScopeConfig`): defaults, checks, the kernel's `XdpConfig` |
//! | `program` | load, attach (with fallback), detach, the embedded object |
//! | `maps` | typed access to every map (lists, bans, learned bans, known, transactions, counters); `maps::janitor` the sweep |
//! | `pin` | bpffs pins: take over, or start clean |
//! | `events` | the ring buffer of bans the program made |
//! | `capture` | a capture's slot of the capture maps, and the copies it reads |
//!
//! **Config**: `[xdp]`. **Metrics** (registered in `metrics::xdp`): `sipfw_xdp_packets_total{reason}`,
//! `sipfw_xdp_bytes_total{reason}`, `sipfw_xdp_attached`, `sipfw_map_entries{map}`,
//! `sipfw_map_capacity{map}`.

pub mod capture;
pub mod config;
pub mod events;
pub mod maps;
pub mod pin;
pub mod program;

pub use maps::XdpMaps;
pub use program::{FastPath, XdpError};
