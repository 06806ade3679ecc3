//! What the XDP program and the daemon must agree on, byte for byte.
//!
//! Everything here is `no_std`, has a fixed `#[repr(C)]` layout and is used by both
//! `sip-firewall-ebpf` (in the kernel) and `sip-firewall` (in user space). Changing a layout
//! here changes it on both sides at once; the tests in this crate pin the sizes.
#![no_std]

pub mod addr;
pub mod branch;
pub mod capture;
pub mod counters;
pub mod fnv;
pub mod gcra;
pub mod maps;
pub mod payload;
pub mod shard;
pub mod swar;
pub mod wire;

pub use addr::IpKey;
pub use counters::{Counter, Reason};
pub use maps::{BanEvent, BanReason, BanScope, BanValue, XdpConfig};
